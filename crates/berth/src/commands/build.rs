//! `build` and `builder prune`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use berth_build::{BuildOptions, Builder};
use berth_engine::Engine;
use berth_types::Reference;
use clap::Args;

use crate::commands::build_cache::CacheOption;
use crate::commands::container::ExitError;

/// The build's options from the flags; the scratch directory a tar
/// context on stdin was unpacked into (kept alive by the caller).
fn options(
    engine: &Engine,
    a: &BuildArgs,
) -> anyhow::Result<(BuildOptions, Option<tempfile::TempDir>)> {
    let platforms = platforms_of(a.platform.as_deref())?;
    if a.push && a.tag.is_empty() {
        bail!("--push needs a name to push: -t REGISTRY/NAME[:TAG]");
    }
    let tags = a
        .tag
        .iter()
        .map(|t| Reference::parse(t).map(|r| r.with_default_tag()))
        .collect::<Result<Vec<_>, _>>()?;
    // A tar context on stdin is unpacked (safely) into scratch space first.
    let (context, dockerfile, dockerfile_content, scratch) = context_of(engine, a)?;
    let opts = BuildOptions {
        context,
        dockerfile,
        dockerfile_content,
        tags,
        build_args: kv(&a.build_arg, "build-arg")?,
        target: a.target.clone(),
        no_cache: a.no_cache,
        labels: kv(&a.label, "label")?,
        network: a.network.clone(),
        source_date_epoch: std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.parse().ok()),
        quiet: a.quiet || a.progress == "quiet",
        pull: a.pull,
        provided: provided(&a.secret, &a.ssh)?,
        platforms,
        compression: berth_store::compress::LayerCompression::parse(&a.compression_format)
            .map_err(anyhow::Error::msg)?,
    };
    Ok((opts, scratch))
}

// `build`.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name and optionally a tag (`name:tag`).
    #[arg(short, long)]
    pub tag: Vec<String>,
    /// Name of the Dockerfile (`-` reads it from stdin).
    #[arg(short, long)]
    pub file: Option<String>,
    /// Set build-time variables.
    #[arg(long)]
    pub build_arg: Vec<String>,
    /// Set the target build stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Push the image (every tag; a multi-platform index whole) when the
    /// build succeeds, as `buildx build --push`.
    #[arg(long)]
    pub push: bool,
    /// Compress new layers with gzip (the default, which every client reads)
    /// or zstd (smaller on most layers, faster to unpack; read by containerd 1.5+, podman, docker 23+).
    #[arg(long = "compression-format", default_value = "gzip")]
    pub compression_format: String,
    /// Export the build cache: `type=registry,ref=<name>[,mode=max]` or
    /// `type=local,dest=<dir>` (BuildKit's cache format).
    #[arg(long = "cache-to")]
    pub cache_to: Vec<String>,
    /// Import a build cache: `type=registry,ref=<name>`, `type=local,src=<dir>`,
    /// or a bare image reference.
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Do not use cache when building the image.
    #[arg(long)]
    pub no_cache: bool,
    /// Always attempt to pull a newer version of the base images.
    #[arg(long)]
    pub pull: bool,
    /// Networking mode for the RUN instructions (`default`, `host`, `none`).
    #[arg(long, default_value = "default")]
    pub network: String,
    /// Set target platform(s) for build: `linux/arm64`, or a comma list for one multi-platform image (foreign ones run under emulation).
    #[arg(long)]
    pub platform: Option<String>,
    /// Set metadata for an image.
    #[arg(long)]
    pub label: Vec<String>,
    /// Write the image ID to the file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Output destination (BuildKit's form: `type=local,dest=DIR`,
    /// `type=tar,dest=FILE`, `type=docker|oci,dest=FILE`; a bare path is
    /// local, `-` a tar on stdout).
    #[arg(short, long, value_name = "OUTPUT")]
    pub output: Vec<String>,
    /// Secret to expose to the build (`id=mysecret[,src=/local/secret]` or `id=X,env=VAR`).
    #[arg(long)]
    pub secret: Vec<String>,
    /// SSH agent socket to expose to the build (`default|<id>[=<socket>]`).
    #[arg(long)]
    pub ssh: Vec<String>,
    /// Set type of progress output (`auto`, `plain`, `tty`, `rawjson`, `quiet`).
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Suppress the build output and print image ID on success.
    #[arg(short, long)]
    pub quiet: bool,
    /// Check the Dockerfile (parse errors and build-check warnings) without building.
    #[arg(long, conflicts_with = "print")]
    pub check: bool,
    /// Print what the parser understood (directives, stages, instructions, warnings) as JSON, without building.
    #[arg(long)]
    pub print: bool,
    /// Build context: a directory, or `-` for a tar archive on stdin.
    pub context: String,
}

fn kv(list: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for a in list {
        match a.split_once('=') {
            Some((k, v)) => {
                m.insert(k.to_string(), v.to_string());
            }
            None => {
                // `--build-arg NAME` takes the value from the environment, as docker does.
                if what == "build-arg" {
                    if let Ok(v) = std::env::var(a) {
                        m.insert(a.clone(), v);
                    }
                } else {
                    m.insert(a.clone(), String::new());
                }
            }
        }
    }
    Ok(m)
}

/// `--secret` and `--ssh`, checked before the build starts.
fn provided(
    secrets: &[String],
    ssh: &[String],
) -> anyhow::Result<berth_build::run_mount::Provided> {
    use berth_build::run_mount::{SecretSource, parse_ssh};
    let mut p = berth_build::run_mount::Provided::default();
    for s in secrets {
        let (id, src) = SecretSource::parse(s).map_err(anyhow::Error::msg)?;
        if let SecretSource::File(f) = &src
            && !f.is_file()
        {
            bail!("--secret {s}: {}: no such file", f.display());
        }
        p.secrets.insert(id, src);
    }
    for s in ssh {
        let (id, sock) = parse_ssh(s).map_err(anyhow::Error::msg)?;
        p.ssh.insert(id, sock);
    }
    Ok(p)
}

/// The `--cache-from` caches, read before the build starts: one that is
/// not there yet (a first CI run) is said and skipped, as BuildKit does.
fn cache_sources(
    from: &[String],
    config_dir: Option<&std::path::Path>,
) -> anyhow::Result<Vec<std::sync::Arc<berth_build::cache_share::Remote>>> {
    let mut out = Vec::new();
    for c in from {
        let opt = CacheOption::parse(c, false, config_dir)?;
        let what = opt.transport.describe();
        match berth_build::cache_share::Remote::load(opt.transport) {
            Ok(Some(r)) => out.push(std::sync::Arc::new(r)),
            Ok(None) => eprintln!("berth: --cache-from {c}: no cache at {what} yet"),
            Err(e) => eprintln!("berth: --cache-from {c}: {e} (building without it)"),
        }
    }
    Ok(out)
}

/// Writes the cache the build used and made to each `--cache-to`; the
/// lines that say so (printed once the progress view is done).
fn export_cache(
    b: &Builder<'_>,
    store: &berth_store::Store,
    to: &[CacheOption],
) -> anyhow::Result<Vec<String>> {
    let mut said = Vec::new();
    for c in to {
        let (records, stages) = b.cache_records(c.max);
        let what = c.transport.describe();
        let written =
            berth_build::cache_share::write(store, c.transport.as_ref(), &records, &stages);
        match written {
            Ok(d) => said.push(format!(
                "exporting cache to {what}: {} steps, manifest {d}",
                records.len()
            )),
            Err(e) if c.ignore_error => said.push(format!("berth: exporting cache to {what}: {e}")),
            Err(e) => {
                return Err(ExitError {
                    code: 1,
                    msg: format!("ERROR: failed to export cache to {what}: {e}"),
                }
                .into());
            }
        }
    }
    Ok(said)
}

/// `--platform`: a comma-separated list of `os/arch[/variant]`, each once.
fn platforms_of(arg: Option<&str>) -> anyhow::Result<Vec<berth_types::Platform>> {
    let mut out: Vec<berth_types::Platform> = Vec::new();
    for p in arg.unwrap_or("").split(',').map(str::trim) {
        if p.is_empty() {
            continue;
        }
        let parsed = berth_types::Platform::parse(p).map_err(anyhow::Error::msg)?;
        if out.contains(&parsed) {
            bail!("--platform {p}: named twice");
        }
        out.push(parsed);
    }
    Ok(out)
}

/// `build`.
pub fn build(
    engine: &Engine,
    a: BuildArgs,
    config_dir: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let (opts, _scratch) = options(engine, &a)?;
    let quiet = opts.quiet;
    if a.check || a.print {
        let read_err = |e: berth_build::BuildError| ExitError {
            code: 1,
            msg: format!("ERROR: {e}"),
        };
        let name = opts.dockerfile_name();
        let src = opts.dockerfile_source().map_err(read_err)?;
        return if a.check {
            check(&name, &src)
        } else {
            let df = berth_dockerfile::instructions::parse(&src, &name).map_err(|e| ExitError {
                code: 1,
                msg: format!("ERROR: {e}"),
            })?;
            println!("{}", serde_json::to_string_pretty(&df.to_json())?);
            Ok(())
        };
    }
    let outputs = a
        .output
        .iter()
        .map(|o| super::build_output::Output::parse(o))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if opts.platforms.len() > 1 && !outputs.is_empty() {
        anyhow::bail!(
            "--output with several platforms is not supported: build one platform per --output, or push the multi-platform image and export it from the registry"
        );
    }
    if outputs.iter().filter(|o| o.to_stdout()).count() > 1 {
        anyhow::bail!("only one --output may write to stdout");
    }
    let mode = if quiet {
        crate::output::buildview::Mode::Quiet
    } else {
        crate::output::buildview::Mode::parse(&a.progress)?
    };
    let out = crate::output::buildview::writer(mode);
    let store = &engine.store;
    let fetch = move |base: &str, always: bool, platform: Option<&str>| -> Result<(), String> {
        let policy = if always { "always" } else { "missing" };
        crate::commands::distribution::ensure(store, config_dir, base, policy, platform)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    };
    let download = |url: &str| -> Result<(Vec<u8>, Option<i64>), String> {
        // ADD <url>: up to 4 GiB, mtime from Last-Modified as docker sets it.
        let (body, modified) = berth_registry::client::download(url, 4 << 30)?;
        let mtime = modified
            .and_then(|m| jiff::fmt::rfc2822::parse(&m).ok())
            .map(|z| z.timestamp().as_second());
        Ok((body, mtime))
    };
    let cache_to = a
        .cache_to
        .iter()
        .map(|c| CacheOption::parse(c, true, config_dir))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cache_from = cache_sources(&a.cache_from, config_dir)?;
    let mut b = Builder::new(&engine.store, engine.root(), out)?
        .with_cache_from(cache_from)
        .with_fetcher(Box::new(fetch))
        .with_downloader(Box::new(download))
        .with_platform_check(std::sync::Arc::new(|arch: &str| {
            if let Some(said) = berth_engine::emulation::ensure(arch)? {
                eprintln!("berth: {said}");
            }
            Ok(())
        }));
    let built = b.build(&opts);
    let exported = match &built {
        Ok(_) => export_cache(&b, &engine.store, &cache_to),
        Err(_) => Ok(Vec::new()),
    };
    // The progress view's last draw comes before anything printed below.
    drop(b);
    for line in exported? {
        if !quiet {
            eprintln!("{line}");
        }
    }
    match built {
        Ok(img) => {
            if let Some(p) = &a.iidfile {
                std::fs::write(p, img.id.to_string())
                    .with_context(|| format!("write {}", p.display()))?;
            }
            for o in &outputs {
                o.write(engine, &img.id.to_string(), &a.tag)?;
            }
            if a.push {
                crate::commands::distribution::push_built(&engine.store, config_dir, &a.tag)?;
            }
            // A tar on stdout is all stdout carries.
            // A multi-platform image is known by its index's digest.
            if quiet && !outputs.iter().any(|o| o.to_stdout()) {
                match &img.index {
                    Some(ix) => println!("{}", ix.digest),
                    None => println!("{}", img.id),
                }
            }
            Ok(())
        }
        Err(e) => {
            let code = e.exit_code();
            Err(ExitError {
                code: code.clamp(1, 255) as u8,
                msg: format!("ERROR: {e}"),
            }
            .into())
        }
    }
}

/// Where the build reads from: the context directory (a tar on stdin
/// unpacked into scratch space, kept alive by the returned guard; a plain
/// Dockerfile on stdin means an empty context, as docker has it), and the
/// Dockerfile (`-f`, `-f -` from stdin, or the context's).
type Sources = (
    PathBuf,
    Option<PathBuf>,
    Option<String>,
    Option<tempfile::TempDir>,
);

fn context_of(engine: &Engine, a: &BuildArgs) -> anyhow::Result<Sources> {
    let mut scratch: Option<tempfile::TempDir> = None;
    let mut dockerfile_content = None;
    let context = if a.context == "-" {
        let dir = tempfile::Builder::new()
            .prefix("context-")
            .tempdir_in(engine.root())?;
        let mut data = Vec::new();
        std::io::stdin().read_to_end(&mut data)?;
        if is_archive(&data) {
            let (_, plain) = berth_store::archive::decompress(&data[..])?;
            berth_store::archive::apply::apply(dir.path(), plain, &Default::default())
                .context("reading the build context from stdin")?;
        } else {
            // docker: what is not an archive is a Dockerfile, with an
            // empty context.
            dockerfile_content = Some(String::from_utf8_lossy(&data).into_owned());
        }
        let p = dir.path().to_path_buf();
        scratch = Some(dir);
        p
    } else {
        PathBuf::from(&a.context)
    };
    if !context.is_dir() {
        bail!("unable to prepare context: path {:?} not found", a.context);
    }
    let dockerfile = match a.file.as_deref() {
        _ if dockerfile_content.is_some() => None,
        Some("-") => {
            let mut s = String::new();
            if a.context != "-" {
                std::io::stdin().read_to_string(&mut s)?;
            }
            dockerfile_content = Some(s);
            None
        }
        Some(f) => Some(PathBuf::from(f)),
        None => None,
    };
    Ok((context, dockerfile, dockerfile_content, scratch))
}

/// The lines around `line..=end` with `>>>` on the ones meant, as docker
/// prints a finding.
fn snippet(src: &str, line: usize, end: usize) -> String {
    let lines: Vec<&str> = src.lines().collect();
    let from = line.saturating_sub(2).max(1);
    let to = (end + 2).min(lines.len().max(1));
    let mut out = String::from("--------------------\n");
    for n in from..=to {
        let text = lines.get(n - 1).copied().unwrap_or("");
        let mark = if (line..=end).contains(&n) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!(" {n:>3} | {mark} {text}\n"));
    }
    out.push_str("--------------------\n");
    out
}

/// `build --check`: parse and lint only. Exits 1 on a parse error, or on any
/// finding when the Dockerfile says `# check=error=true`; 0 otherwise.
fn check(name: &str, src: &str) -> anyhow::Result<()> {
    use berth_dockerfile::instructions::{self, lint};
    let df = match instructions::parse(src, name) {
        Ok(df) => df,
        Err(e) => {
            print!("{}", snippet(src, e.line, e.end_line));
            return Err(ExitError {
                code: 1,
                msg: format!("ERROR: {e}"),
            }
            .into());
        }
    };
    if let Some((line, msg)) = bad_base(&df) {
        print!("{}", snippet(src, line, line));
        return Err(ExitError {
            code: 1,
            msg: format!("ERROR: {name}:{line}: {msg}"),
        }
        .into());
    }
    for w in &df.warnings {
        println!("WARNING: {} - {}", w.rule, lint::rule_url(w.rule));
        println!("{}", w.msg);
        println!("{name}:{}", w.line);
        print!("{}", snippet(src, w.line, w.line));
        println!();
    }
    match df.warnings.len() {
        0 => println!("Check complete, no warnings found."),
        1 => println!("Check complete, 1 warning has been found!"),
        n => println!("Check complete, {n} warnings have been found!"),
    }
    if let Some(msg) = df.lint_violation() {
        return Err(ExitError {
            code: 1,
            msg: format!("ERROR: {msg}"),
        }
        .into());
    }
    Ok(())
}

/// BuildKit's check of each FROM: the base, its ARGs expanded with their
/// defaults, is an earlier stage, `scratch`, or an image reference; not
/// blank. The first bad one: (line, message).
fn bad_base(df: &berth_dockerfile::instructions::Dockerfile) -> Option<(usize, String)> {
    use berth_dockerfile::instructions::Instruction;
    let mut env: Vec<String> = Vec::new();
    for a in &df.meta_args {
        if let Instruction::Arg(decls) = &a.inst {
            for d in decls {
                if let Some(v) = &d.default {
                    env.push(format!("{}={v}", d.name));
                }
            }
        }
    }
    let lex = berth_dockerfile::shell::Lex::new(df.escape);
    for (i, stage) in df.stages.iter().enumerate() {
        let line = stage.from.node.start_line;
        let base = lex
            .process_word(&stage.base, &berth_dockerfile::shell::env_lookup(&env))
            .unwrap_or_else(|_| stage.base.clone());
        if base.trim().is_empty() {
            return Some((
                line,
                format!("base name ({}) should not be blank", stage.base),
            ));
        }
        let earlier = df.stages[..i].iter().any(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&base))
        });
        if base == "scratch" || earlier {
            continue;
        }
        // A base made by ARGs whose defaults do not make a reference is
        // InvalidDefaultArgInFrom's warning (a build may pass the ARG).
        if stage.base.contains('$') {
            continue;
        }
        if let Err(e) = Reference::parse(&base) {
            return Some((
                line,
                format!("failed to parse stage name \"{base}\": invalid reference format: {e}"),
            ));
        }
    }
    None
}

// `builder prune`.
#[derive(Args, Debug)]
pub struct BuilderPruneArgs {
    /// Remove all build cache (there is one kind).
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

/// Drops every build cache entry and its gc roots (the caller collects).
pub fn clear_cache(engine: &Engine) -> anyhow::Result<usize> {
    let cache = berth_build::cache::Cache::open(&engine.root().join("buildcache"))?;
    let n = cache.clear()?;
    engine.store.set_roots("buildcache", &[])?;
    Ok(n)
}

/// `builder prune`: drops the layer cache and collects what only it kept.
pub fn prune(engine: &Engine, a: BuilderPruneArgs) -> anyhow::Result<()> {
    if !a.force
        && !crate::commands::image::confirm("WARNING! This will remove all dangling build cache.")
    {
        return Ok(());
    }
    let report = berth_build::prune(&engine.store, engine.root())?;
    println!("Deleted build cache objects: {}", report.objects);
    println!(
        "Total reclaimed space: {}",
        crate::output::human_size(report.bytes_freed)
    );
    Ok(())
}

/// Whether a build context read from stdin is an archive (gzip, bzip2, xz
/// or zstd compressed, or a tar by its header), as docker tells a context
/// from a Dockerfile.
fn is_archive(data: &[u8]) -> bool {
    const MAGIC: [&[u8]; 4] = [
        &[0x1f, 0x8b],
        b"BZh",
        &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
        &[0x28, 0xb5, 0x2f, 0xfd],
    ];
    MAGIC.iter().any(|m| data.starts_with(m)) || data.get(257..262).is_some_and(|u| u == b"ustar")
}

#[cfg(test)]
mod stdin_tests {
    #[test]
    fn a_dockerfile_is_not_an_archive() {
        assert!(!super::is_archive(b"FROM busybox\nRUN true\n"));
        assert!(super::is_archive(&[0x1f, 0x8b, 8, 0]));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(super::is_archive(&tar));
    }
}

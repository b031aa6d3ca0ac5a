//! Image commands: `images`, `tag`, `rmi`, `history`, `image inspect`, `import`,
//! `save`, `load`, `image prune`. Thin: parsing and printing around berth-store.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use berth_store::Store;
use berth_store::image::archive::ArchiveFormat;
use berth_store::image::import::ImportOptions;
use berth_store::image::{Image, RemoveEvent};
use berth_types::{ImageConfig, Platform, Reference};
use clap::Args;
use serde_json::{Value, json};

use crate::output::{Format, Table, created_at, ellipsis, human_size, print_items, since};

// `images` / `image ls`.
#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only images of this repository (and tag).
    pub reference: Option<String>,
    /// Show all images (intermediate ones too).
    #[arg(short, long)]
    pub all: bool,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Only show image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter: `dangling=true|false`, `reference=PATTERN`.
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// `table`, `json`, or a Go template.
    #[arg(long)]
    pub format: Option<String>,
}

pub use berth_engine::docs::image_size;

fn short_id(img: &Image, no_trunc: bool) -> String {
    if no_trunc {
        img.id.to_string()
    } else {
        img.id.short().to_string()
    }
}

/// `*` and `?` glob on strings (docker's reference filter uses path.Match).
fn glob(pattern: &str, s: &str) -> bool {
    fn m(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && m(p, &s[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => m(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &s[1..]),
            _ => false,
        }
    }
    m(pattern.as_bytes(), s.as_bytes())
}

pub fn images(store: &Store, a: ImagesArgs) -> anyhow::Result<()> {
    Format::parse(a.format.as_deref())?;
    let mut dangling: Option<bool> = None;
    let mut refs: Vec<String> = a.reference.iter().cloned().collect();
    for f in &a.filter {
        match f.split_once('=') {
            Some(("dangling", v)) => dangling = Some(v == "true" || v == "1"),
            Some(("reference", v)) => refs.push(v.to_string()),
            _ => bail!("invalid filter '{f}'"),
        }
    }
    let mut items = Vec::new();
    for img in store.images()? {
        let size = human_size(image_size(store, &img));
        let mut rows: Vec<(String, String, Option<&Reference>)> = img
            .names
            .iter()
            .map(|n| {
                (
                    n.familiar_name(),
                    n.tag().unwrap_or("<none>").to_string(),
                    Some(n),
                )
            })
            .collect();
        if rows.is_empty() {
            rows.push(("<none>".into(), "<none>".into(), None));
        }
        for (repo, tag, name) in rows {
            let is_dangling = name.is_none();
            if dangling.is_some_and(|d| d != is_dangling) {
                continue;
            }
            if !refs.is_empty() {
                let Some(n) = name else { continue };
                let ok = refs.iter().any(|r| {
                    let full = n.familiar();
                    glob(r, &full)
                        || glob(r, &n.familiar_name())
                        || Reference::parse(r).is_ok_and(|p| {
                            p.name() == n.name() && p.tag().is_none_or(|t| Some(t) == n.tag())
                        })
                });
                if !ok {
                    continue;
                }
            }
            let digest = img
                .repo_digests
                .iter()
                .find(|d| name.is_none_or(|n| d.name() == n.name()))
                .and_then(|d| d.digest())
                .map(|d| d.to_string())
                .unwrap_or_else(|| "<none>".into());
            items.push(image_row(
                &repo,
                &tag,
                &digest,
                &short_id(&img, a.no_trunc),
                img.config.created.as_deref(),
                &size,
            ));
        }
    }
    print_images(&a, &items)
}

/// One row of `images` (docker's `--format` fields), from the store or
/// from a service's answer.
pub fn image_row(
    repo: &str,
    tag: &str,
    digest: &str,
    id: &str,
    created: Option<&str>,
    size: &str,
) -> Value {
    json!({
        "Containers": "N/A",
        "CreatedAt": created_at(created),
        "CreatedSince": since(created),
        "Digest": digest,
        "ID": id,
        "Repository": repo,
        "SharedSize": "N/A",
        "Size": size,
        "Tag": tag,
        "UniqueSize": "N/A",
        "VirtualSize": size,
    })
}

/// `images`' output from its rows (from the store, or from a service's
/// `GET /images/json` with `-H`).
pub fn print_images(a: &ImagesArgs, items: &[Value]) -> anyhow::Result<()> {
    let format = Format::parse(a.format.as_deref())?;
    if a.quiet {
        crate::output::print_ids(items);
        return Ok(());
    }
    print_items(&format, items, |items| {
        let mut headers = vec!["REPOSITORY", "TAG"];
        if a.digests {
            headers.push("DIGEST");
        }
        headers.extend(["IMAGE ID", "CREATED", "SIZE"]);
        let mut t = Table::new(&headers);
        for i in items {
            let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
            let mut row = vec![s("Repository"), s("Tag")];
            if a.digests {
                row.push(s("Digest"));
            }
            row.extend([s("ID"), s("CreatedSince"), s("Size")]);
            t.row(row);
        }
        t
    })
}

// `tag SOURCE TARGET`.
#[derive(Args, Debug)]
pub struct TagArgs {
    /// Source image.
    pub source: String,
    /// New name.
    pub target: String,
}

pub fn tag(store: &Store, a: TagArgs) -> anyhow::Result<()> {
    let target = Reference::parse(&a.target)?;
    let img = store.resolve(&a.source)?;
    store.tag(&img, &target)?;
    Ok(())
}

// `rmi` / `image rm`.
#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Images to remove.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Force removal.
    #[arg(short, long)]
    pub force: bool,
    /// Do not delete untagged parents (accepted; berth has no parent images).
    #[arg(long)]
    pub no_prune: bool,
}

pub fn rmi(engine: &berth_engine::Engine, a: RmiArgs) -> anyhow::Result<()> {
    let mut failed = false;
    for i in &a.images {
        match engine.remove_image(i, a.force) {
            Ok(events) => print_remove_events(&events, "Untagged", "Deleted"),
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

fn print_remove_events(events: &[RemoveEvent], untagged: &str, deleted: &str) {
    for e in events {
        match e {
            RemoveEvent::Untagged(n) => println!("{untagged}: {n}"),
            RemoveEvent::Deleted(d) => println!("{deleted}: {d}"),
        }
    }
}

// `history`.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The image.
    pub image: String,
    /// Print sizes and dates in human readable format.
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// `table`, `json`, or a Go template.
    #[arg(long)]
    pub format: Option<String>,
}

pub fn history(store: &Store, a: HistoryArgs) -> anyhow::Result<()> {
    let img = store.resolve(&a.image)?;
    let format = Format::parse(a.format.as_deref())?;
    let all = store.images()?;
    let chains = berth_types::chain_ids(&img.config.rootfs.diff_ids);
    let mut layer_i = 0usize;
    let mut rows = Vec::new();
    let n = img.config.history.len();
    for (i, h) in img.config.history.iter().enumerate() {
        let size = if h.empty_layer {
            0
        } else {
            let s = chains
                .get(layer_i)
                .and_then(|c| store.snapshots.layer(c).ok().flatten())
                .map(|m| m.size)
                .unwrap_or(0);
            layer_i += 1;
            s
        };
        // The id of a local image whose history is exactly this prefix (the
        // top row is the image itself), else <missing>, as docker shows.
        let id = if i + 1 == n {
            Some(img.id.clone())
        } else {
            all.iter()
                .find(|o| {
                    o.config.history.len() == i + 1
                        && o.config.history[..] == img.config.history[..=i]
                        && o.config.rootfs.diff_ids[..]
                            == img.config.rootfs.diff_ids
                                [..layer_i.min(img.config.rootfs.diff_ids.len())]
                })
                .map(|o| o.id.clone())
        };
        let id_s = match (&id, a.no_trunc) {
            (Some(d), true) => d.to_string(),
            (Some(d), false) => d.short().to_string(),
            (None, _) => "<missing>".to_string(),
        };
        let created_by = h.created_by.clone().unwrap_or_default().replace('\t', " ");
        rows.push(json!({
            "Comment": h.comment.clone().unwrap_or_default(),
            "CreatedAt": h.created.clone().unwrap_or_default(),
            "CreatedBy": if a.no_trunc { created_by.clone() } else { ellipsis(&created_by, 45) },
            "CreatedSince": since(h.created.as_deref()),
            "ID": id_s,
            "Size": if a.human { human_size(size) } else { size.to_string() },
        }));
    }
    if rows.is_empty() {
        // An image without history still has its layers.
        rows.push(json!({"Comment":"","CreatedAt":"","CreatedBy":"","CreatedSince":since(img.config.created.as_deref()),"ID":img.id.short(),"Size":human_size(image_size(store, &img))}));
    }
    rows.reverse();
    if a.quiet {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    print_items(&format, &rows, |rows| {
        let mut t = Table::new(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]);
        for r in rows {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            t.row(vec![
                s("ID"),
                s("CreatedSince"),
                s("CreatedBy"),
                s("Size"),
                s("Comment"),
            ]);
        }
        t
    })
}

// `image inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Images.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Go template.
    #[arg(short, long)]
    pub format: Option<String>,
}

pub use berth_engine::docs::image_inspect as inspect_json;

/// Prints inspect results as docker does: a JSON array, or one template line each.
pub fn print_inspect(values: Vec<Value>, format: Option<&str>) -> anyhow::Result<()> {
    match format {
        None | Some("") | Some("json") => {
            // docker indents inspect output with four spaces.
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            serde::Serialize::serialize(&values, &mut ser)?;
            println!("{}", String::from_utf8_lossy(&buf));
        }
        Some(f) => {
            let t = crate::output::template::Template::parse(f)?;
            for v in &values {
                println!("{}", t.render(v)?);
            }
        }
    }
    Ok(())
}

pub fn inspect(store: &Store, a: InspectArgs) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for i in &a.images {
        match store.resolve(i) {
            Ok(img) => out.push(inspect_json(store, &img)),
            Err(berth_store::StoreError::ImageNotFound(_)) => missing.push(i.clone()),
            Err(e) => return Err(e.into()),
        }
    }
    if !out.is_empty() || a.format.is_none() {
        print_inspect(out, a.format.as_deref())?;
    }
    if !missing.is_empty() {
        for m in &missing {
            eprintln!("Error: No such image: {m}");
        }
        std::process::exit(1);
    }
    Ok(())
}

// `import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A rootfs tarball (plain, gzip or zstd), or `-` for stdin.
    pub file: String,
    /// The name to give the image.
    pub reference: Option<String>,
    /// Apply a Dockerfile instruction to the image config (`CMD ["sh"]`, `ENV K=V`).
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Commit message for the imported image.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Platform of the image (`linux/amd64`).
    #[arg(long)]
    pub platform: Option<String>,
}

pub fn import(store: &Store, a: ImportArgs) -> anyhow::Result<()> {
    let name = a.reference.as_deref().map(Reference::parse).transpose()?;
    let mut config = ImageConfig::new_for_host();
    if let Some(p) = &a.platform {
        let p = Platform::parse(p).map_err(anyhow::Error::msg)?;
        config.architecture = p.architecture;
        config.os = p.os;
        config.variant = p.variant;
    }
    for c in &a.change {
        crate::changes::apply_change(&mut config, c)?;
    }
    let (input, size): (Box<dyn Read>, Option<u64>) = if a.file == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        if a.file.starts_with("http://") || a.file.starts_with("https://") {
            bail!(
                "importing from a URL is not supported yet: download {} first and import the file",
                a.file
            );
        }
        let f = std::fs::File::open(&a.file).with_context(|| format!("open {}", a.file))?;
        let size = f.metadata().ok().map(|m| m.len());
        (Box::new(f), size)
    };
    let bar = crate::output::progress::byte_bar("Importing", size, false);
    let input: Box<dyn Read> = match &bar {
        Some(b) => Box::new(b.wrap_read(input)),
        None => input,
    };
    let comment = a
        .message
        .clone()
        .unwrap_or_else(|| format!("Imported from {}", a.file));
    let img = store
        .import(
            input,
            ImportOptions {
                name,
                config,
                comment,
                created: jiff::Timestamp::now().to_string(),
            },
        )
        .with_context(|| format!("importing {}", a.file))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    println!("{}", img.id);
    Ok(())
}

// `save`.
#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Images to save.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write to a file instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// `docker-archive` (default) or `oci-archive`.
    #[arg(long, default_value = "docker-archive")]
    pub format: String,
}

/// Writes `path` whole or not at all: `write` fills a temporary file beside
/// it, which is flushed, synced, made readable like any file the user
/// creates (tempfile makes 0600) and renamed over `path`; on any error
/// nothing is left. `save -o` and `build -o type=tar` write this way.
pub fn write_whole(
    path: &std::path::Path,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("create a temporary file in {}", dir.display()))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        write(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(path)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

pub fn save(store: &Store, a: SaveArgs) -> anyhow::Result<()> {
    let format = match a.format.as_str() {
        "docker-archive" | "docker" => ArchiveFormat::Docker,
        "oci-archive" | "oci" => ArchiveFormat::Oci,
        other => bail!("unknown archive format {other:?}: use docker-archive or oci-archive"),
    };
    // A lease, as for builds: a prune beside the save waits for it rather
    // than deleting blobs it is about to write out.
    let _lease = store.write_lock()?;
    let sel = store.save_selection(&a.images)?;
    match &a.output {
        Some(path) => write_whole(path, |w| {
            match crate::output::progress::byte_bar("Saving", None, false) {
                Some(b) => {
                    store.save(&sel, format, b.wrap_write(w))?.flush()?;
                    b.finish_and_clear();
                }
                None => store.save(&sel, format, w)?.flush()?,
            }
            Ok(())
        })?,
        None => {
            if std::io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            match crate::output::progress::byte_bar("Saving", None, false) {
                Some(b) => {
                    store.save(&sel, format, b.wrap_write(out))?.flush()?;
                    b.finish_and_clear();
                }
                None => store.save(&sel, format, out)?.flush()?,
            }
        }
    }
    Ok(())
}

// `load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from a file instead of stdin.
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Suppress the load progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn load(store: &Store, a: LoadArgs) -> anyhow::Result<()> {
    let (input, size): (Box<dyn Read>, Option<u64>) = match &a.input {
        Some(p) => {
            let f = std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?;
            let size = f.metadata().ok().map(|m| m.len());
            (Box::new(f), size)
        }
        None => {
            if std::io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty");
            }
            (Box::new(std::io::stdin().lock()), None)
        }
    };
    // docker: -q silences progress only; what was loaded is still printed.
    let bar = crate::output::progress::byte_bar("Loading", size, a.quiet);
    let input: Box<dyn Read> = match &bar {
        Some(b) => Box::new(b.wrap_read(input)),
        None => input,
    };
    let loaded = store.load(input)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    for l in loaded {
        if l.names.is_empty() {
            println!("Loaded image ID: {}", l.id);
        }
        for n in l.names {
            println!("Loaded image: {}", n.familiar());
        }
    }
    Ok(())
}

// `image prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

/// Asks docker's y/N question on the terminal.
pub fn confirm(warning: &str) -> bool {
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes" | "Yes")
}

pub fn prune(store: &Store, a: PruneArgs) -> anyhow::Result<()> {
    let warning = if a.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !a.force && !confirm(warning) {
        return Ok(());
    }
    let (events, freed) = prune_images(store, a.all)?;
    if !events.is_empty() {
        println!("Deleted Images:");
        print_remove_events(&events, "untagged", "deleted");
        println!();
    }
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(())
}

/// Removes dangling (or, with `all`, all unused) images; returns what happened
/// and the bytes freed.
pub fn prune_images(store: &Store, all: bool) -> anyhow::Result<(Vec<RemoveEvent>, u64)> {
    Ok(store.prune_images(all)?)
}

//! `login`, `logout`, `pull`, `push`, and the implicit pull of `run`/`build`.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use anyhow::{anyhow, bail};
use berth_registry::client::config::{AuthConfig, CredentialStore, server_key};
use berth_registry::client::pull::{PullOptions, Pulled};
use berth_registry::client::{self, Credentials, Options, Registry};
use berth_store::Store;
use berth_types::Reference;
use berth_types::image::Platform;
use clap::Args;

use crate::output::progress::for_terminal;

// Flags every registry command shares.
#[derive(Args, Debug, Clone)]
pub struct TlsArgs {
    /// Require HTTPS and verify certificates (false also allows plain HTTP).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: bool,
}

// `login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Username.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password or access token.
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Registry (default: docker.io).
    pub server: Option<String>,
}

// `logout`.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry (default: docker.io).
    pub server: Option<String>,
}

// `pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Download all tagged images in the repository.
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Suppress verbose output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Set platform if server is multi-platform capable (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
    /// Pull every platform of a multi-platform image (the index is kept
    /// whole, so a push elsewhere gives the same digest).
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Parallel layer downloads.
    #[arg(long, default_value_t = 3)]
    pub max_concurrent_downloads: usize,
    /// NAME[:TAG|@DIGEST]
    pub name: String,
}

// `push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Push all tags of the repository.
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Suppress verbose output.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Parallel layer uploads.
    #[arg(long, default_value_t = 5)]
    pub max_concurrent_uploads: usize,
    /// Upload blobs in chunks of this many bytes (default: one request per blob).
    #[arg(long)]
    pub chunk_size: Option<u64>,
    /// NAME[:TAG]
    pub name: String,
}

/// Registry domain named on the command line (`docker.io` when none).
fn domain_of(server: Option<&str>) -> String {
    match server {
        None => "docker.io".into(),
        Some(s) => {
            let s = s
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let host = s.split('/').next().unwrap_or(s);
            match host {
                "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
                h => h.to_string(),
            }
        }
    }
}

/// Connects to `domain` with the saved credentials.
pub fn connect(config_dir: Option<&Path>, domain: &str, opts: Options) -> anyhow::Result<Registry> {
    let creds = AuthConfig::locate(config_dir)
        .get(domain)
        .map_err(|e| anyhow!("{e}"))?;
    Registry::connect(domain, creds, opts).map_err(anyhow::Error::from)
}

pub fn login(config_dir: Option<&Path>, a: LoginArgs) -> anyhow::Result<()> {
    let domain = domain_of(a.server.as_deref());
    let cfg = AuthConfig::locate(config_dir);
    if a.password.is_some() && a.password_stdin {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    let username = match a.username {
        Some(u) => u,
        None if a.password_stdin => bail!("Must provide --username with --password-stdin"),
        None => {
            if let (Ok(Some(saved)), None) = (cfg.get(&domain), &a.password) {
                // docker reuses saved credentials when none are given.
                check(&domain, &saved, &a.tls)?;
                println!("Login Succeeded");
                return Ok(());
            }
            prompt(&format!("Username ({}): ", server_key(&domain)), true)?
        }
    };
    if a.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let secret = match a.password {
        Some(p) => p,
        None if a.password_stdin => {
            let mut s = String::new();
            std::io::stdin().lock().read_line(&mut s)?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        None => prompt("Password: ", false)?,
    };
    if username.is_empty() {
        bail!("Error: Non-null Username Required");
    }
    if secret.is_empty() {
        bail!("Error: Password Required");
    }
    let creds = Credentials { username, secret };
    check(&domain, &creds, &a.tls)?;
    match cfg.store(&domain, &creds).map_err(|e| anyhow!("{e}"))? {
        CredentialStore::File => {
            eprintln!(
                "WARNING! Your password will be stored unencrypted in {}.\nConfigure a credential helper to remove this warning.",
                cfg.path.display()
            );
        }
        CredentialStore::Helper(_) => {}
    }
    println!("Login Succeeded");
    Ok(())
}

fn check(domain: &str, creds: &Credentials, tls: &TlsArgs) -> anyhow::Result<()> {
    let opts = Options {
        tls_verify: tls.tls_verify,
        ..Options::default()
    };
    let reg = Registry::connect(domain, Some(creds.clone()), opts).map_err(|e| anyhow!("{e}"))?;
    reg.check_login().map_err(|e| anyhow!("{e}"))
}

fn prompt(label: &str, echo: bool) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("Cannot perform an interactive login from a non TTY device");
    }
    eprint!("{label}");
    let stdin = std::io::stdin();
    let mut line = String::new();
    if echo {
        stdin.lock().read_line(&mut line)?;
    } else {
        let old = rustix::termios::tcgetattr(&stdin)?;
        let mut t = old.clone();
        t.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &t)?;
        let r = stdin.lock().read_line(&mut line);
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &old)?;
        eprintln!();
        r?;
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub fn logout(config_dir: Option<&Path>, a: LogoutArgs) -> anyhow::Result<()> {
    let domain = domain_of(a.server.as_deref());
    let cfg = AuthConfig::locate(config_dir);
    if cfg.erase(&domain).map_err(|e| anyhow!("{e}"))? {
        println!("Removing login credentials for {}", server_key(&domain));
    } else {
        println!("Not logged in to {}", server_key(&domain));
    }
    Ok(())
}

/// Pulls one reference, printing docker's lines; returns what was pulled.
pub fn pull_one(
    store: &Store,
    config_dir: Option<&Path>,
    r: &Reference,
    platform: &Platform,
    opts: Options,
    quiet: bool,
    to_stderr: bool,
) -> anyhow::Result<Pulled> {
    let reg = connect(config_dir, r.domain(), opts)?;
    let progress = for_terminal(quiet, to_stderr);
    let pulled = client::pull::pull(
        store,
        &reg,
        r,
        &PullOptions {
            platform: platform.clone(),
        },
        progress.as_ref(),
    )
    .map_err(anyhow::Error::from)?;
    drop(progress);
    if !quiet {
        let shown = if r.digest().is_some() {
            r.familiar()
        } else {
            r.clone().with_default_tag().familiar()
        };
        let status = if pulled.downloaded {
            format!("Status: Downloaded newer image for {shown}")
        } else {
            format!("Status: Image is up to date for {shown}")
        };
        if to_stderr {
            eprintln!("Digest: {}\n{status}", pulled.digest);
        } else {
            println!("Digest: {}\n{status}", pulled.digest);
        }
    }
    Ok(pulled)
}

fn platform_of(p: Option<&str>) -> anyhow::Result<Platform> {
    match p {
        Some(s) => Platform::parse(s).map_err(|e| anyhow!("{e}")),
        None => Ok(Platform::host()),
    }
}

pub fn pull(store: &Store, config_dir: Option<&Path>, a: PullArgs) -> anyhow::Result<()> {
    let r = Reference::parse(&a.name).map_err(|e| anyhow!("invalid reference format: {e}"))?;
    let platform = platform_of(a.platform.as_deref())?;
    let opts = Options {
        tls_verify: a.tls.tls_verify,
        max_concurrent: a.max_concurrent_downloads.max(1),
        ..Options::default()
    };
    if a.all_tags {
        if r.tag().is_some() || r.digest().is_some() {
            bail!("tag can't be used with --all-tags/-a");
        }
        let reg = connect(config_dir, r.domain(), opts.clone())?;
        let tags = list_tags(&reg, r.path())?;
        if !a.quiet {
            println!("Pulling all tags of {}", r.familiar_name());
        }
        for t in tags {
            let tr = r.with_tag(&t).map_err(|e| anyhow!("{e}"))?;
            pull_one(
                store,
                config_dir,
                &tr,
                &platform,
                opts.clone(),
                a.quiet,
                false,
            )?;
        }
        println!("{}", r.name());
        return Ok(());
    }
    if r.tag().is_none() && r.digest().is_none() && !a.quiet {
        println!("Using default tag: latest");
    }
    let r = r.with_default_tag();
    let platforms = if a.all_platforms {
        index_platforms(&connect(config_dir, r.domain(), opts.clone())?, &r)?
    } else {
        Vec::new()
    };
    if platforms.is_empty() {
        pull_one(
            store,
            config_dir,
            &r,
            &platform,
            opts.clone(),
            a.quiet,
            false,
        )?;
    }
    for p in &platforms {
        if !a.quiet {
            println!("{p}:");
        }
        pull_one(store, config_dir, &r, p, opts.clone(), a.quiet, false)?;
    }
    println!("{r}");
    Ok(())
}

/// The platforms of the index `r` names (none when it names one image).
fn index_platforms(reg: &Registry, r: &Reference) -> anyhow::Result<Vec<Platform>> {
    let scopes = vec![client::scope(r.path(), "pull")];
    let reference = match (r.digest(), r.tag()) {
        (Some(d), _) => d.to_string(),
        (None, t) => t.unwrap_or("latest").to_string(),
    };
    let (bytes, ct, _) = reg
        .manifest(r.path(), &reference, &scopes)
        .map_err(|e| anyhow!("{}", client::pull::access_denied(r, &e)))?;
    Ok(
        match berth_types::AnyManifest::parse(&bytes, Some(&ct)).map_err(|e| anyhow!("{e}"))? {
            berth_types::AnyManifest::Index(ix) => ix
                .manifests
                .iter()
                .filter(|d| berth_types::image::media_types::is_manifest(&d.media_type))
                .filter_map(|d| d.platform.clone())
                .collect(),
            berth_types::AnyManifest::Image(_) => Vec::new(),
        },
    )
}

fn list_tags(reg: &Registry, repo: &str) -> anyhow::Result<Vec<String>> {
    let scopes = vec![client::scope(repo, "pull")];
    let mut url = reg.url(&format!("{repo}/tags/list"));
    let mut out = Vec::new();
    loop {
        let mut r = reg.get(&url, &scopes, &[]).map_err(|e| anyhow!("{e}"))?;
        if r.status() != 200 {
            return Err(anyhow!(
                "{}",
                client::response_error(&mut r, &format!("listing tags of {repo}"))
            ));
        }
        let next = r
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(|l| l.split(';').next())
            .map(|l| {
                l.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            });
        let v: serde_json::Value = serde_json::from_slice(
            &r.body_mut()
                .with_config()
                .limit(16 << 20)
                .read_to_vec()
                .map_err(|e| anyhow!("{e}"))?,
        )?;
        out.extend(
            v["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_string)),
        );
        match next {
            Some(n) => url = reg.location(&n),
            None => break,
        }
    }
    Ok(out)
}

pub fn push(store: &Store, config_dir: Option<&Path>, a: PushArgs) -> anyhow::Result<()> {
    let r = Reference::parse(&a.name).map_err(|e| anyhow!("invalid reference format: {e}"))?;
    if r.digest().is_some() {
        bail!("cannot push a digest reference");
    }
    let opts = Options {
        tls_verify: a.tls.tls_verify,
        max_concurrent: a.max_concurrent_uploads.max(1),
        chunk_size: a.chunk_size,
        ..Options::default()
    };
    let targets: Vec<Reference> = if a.all_tags {
        let mut v: Vec<Reference> = store
            .images()?
            .into_iter()
            .flat_map(|i| i.names)
            .filter(|n| n.name() == r.name())
            .collect();
        v.sort();
        v
    } else {
        if r.tag().is_none() {
            println!("Using default tag: latest");
        }
        vec![r.clone().with_default_tag()]
    };
    if targets.is_empty() {
        bail!(
            "An image does not exist locally with the tag: {}",
            r.familiar_name()
        );
    }
    let reg = connect(config_dir, r.domain(), opts)?;
    // A lease: a prune beside the push waits rather than deleting the blobs
    // it is sending.
    let _lease = store.write_lock()?;
    for t in targets {
        let image = store.resolve(&t.to_string()).map_err(|_| {
            anyhow!(
                "An image does not exist locally with the tag: {}",
                t.familiar()
            )
        })?;
        let progress = for_terminal(a.quiet, false);
        let pushed = client::push::push(store, &reg, &image, &t, progress.as_ref())
            .map_err(|e| anyhow!("{e}"))?;
        drop(progress);
        if a.quiet {
            println!("{}", t.familiar());
        } else {
            println!(
                "{}: digest: {} size: {}",
                pushed.tag, pushed.digest, pushed.size
            );
        }
    }
    Ok(())
}

/// `build --push`: each of the build's names pushed, said on stderr (stdout
/// keeps what `build` prints).
pub fn push_built(store: &Store, config_dir: Option<&Path>, tags: &[String]) -> anyhow::Result<()> {
    let _lease = store.write_lock()?;
    for t in tags {
        let r = Reference::parse(t)
            .map_err(|e| anyhow!("invalid reference format: {e}"))?
            .with_default_tag();
        let reg = connect(config_dir, r.domain(), Options::default())?;
        let image = store.resolve(&r.to_string())?;
        let pushed = client::push::push(store, &reg, &image, &r, &client::Quiet)
            .map_err(|e| anyhow!("pushing {}: {e}", r.familiar()))?;
        eprintln!("pushed {}@{}", r.familiar(), pushed.digest);
    }
    Ok(())
}

/// The implicit pull of `run`/`create`/`build`: `missing` pulls when the image
/// is absent, `always` every time, `never` not at all.
pub fn ensure(
    store: &Store,
    config_dir: Option<&Path>,
    image: &str,
    policy: &str,
    platform: Option<&str>,
) -> anyhow::Result<bool> {
    // A multi-platform image without the platform asked for is missing.
    let present = match platform {
        Some(p) => store
            .resolve_platform(image, &platform_of(Some(p))?)
            .is_ok(),
        None => store.resolve(image).is_ok(),
    };
    match policy {
        "never" => return Ok(present),
        "missing" if present => return Ok(true),
        "always" | "missing" => {}
        p => {
            bail!("invalid pull option: {p:?}: must be one of \"always\", \"missing\" or \"never\"")
        }
    }
    let Ok(r) = Reference::parse(image) else {
        return Ok(present);
    };
    let r = r.with_default_tag();
    if !present {
        eprintln!("Unable to find image '{}' locally", r.familiar());
    }
    let platform = platform_of(platform)?;
    let pulled = pull_one(
        store,
        config_dir,
        &r,
        &platform,
        Options::default(),
        false,
        true,
    );
    if let Err(e) = pulled {
        // Offline: two facts, what is missing and what could not be reached.
        let transport = e.chain().any(|c| {
            c.downcast_ref::<berth_registry::client::Error>()
                .is_some_and(|x| x.kind == berth_registry::client::ErrorKind::Transport)
        });
        if transport && !present {
            bail!(
                "{}: the image is not in the store, and its registry {} could not be reached: {e:#}",
                r.familiar(),
                r.domain()
            );
        }
        return Err(e);
    }
    Ok(true)
}

// `search`.
#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    /// Filter output based on conditions provided (`stars=N`, `is-official=true`, `is-automated=true`).
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Pretty-print search using a Go template.
    #[arg(long)]
    pub format: Option<String>,
    /// Max number of search results.
    #[arg(long, default_value_t = 25)]
    pub limit: usize,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// `TERM`, or `REGISTRY/TERM` for a registry other than Docker Hub.
    pub term: String,
}

/// `search`: docker's `/v1/search` of Docker Hub's index, or of the
/// registry named before the term (`localhost:5000/busy`), with docker's
/// table (NAME, DESCRIPTION, STARS, OFFICIAL, AUTOMATED), filters and
/// `--format` fields.
pub fn search(config_dir: Option<&Path>, a: SearchArgs) -> anyhow::Result<()> {
    let (domain, term) = match a.term.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            (host.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), a.term.clone()),
    };
    let mut stars = 0u64;
    let mut official = None;
    let mut automated = None;
    for f in &a.filter {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("bad format of filter (expected name=value): {f}"))?;
        let flag = || -> anyhow::Result<bool> {
            v.parse()
                .map_err(|_| anyhow!("invalid filter '{k}={v}': true or false"))
        };
        match k {
            "stars" => {
                stars = v
                    .parse()
                    .map_err(|_| anyhow!("invalid filter 'stars={v}': a number"))?
            }
            "is-official" => official = Some(flag()?),
            "is-automated" => automated = Some(flag()?),
            _ => bail!("invalid filter '{k}'"),
        }
    }
    let reg = connect(config_dir, &domain, Options::default())?;
    let found = reg
        .search(&term, a.limit.clamp(1, 100))
        .map_err(anyhow::Error::from)?;
    let items: Vec<serde_json::Value> = found
        .into_iter()
        .filter(|r| r.star_count >= stars)
        .filter(|r| official.is_none_or(|o| r.is_official == o))
        .filter(|r| automated.is_none_or(|o| r.is_automated == o))
        .map(|r| {
            let description = if a.no_trunc {
                r.description.clone()
            } else {
                crate::output::ellipsis(&r.description, 45)
            };
            serde_json::json!({
                "Name": r.name,
                "Description": description,
                "StarCount": r.star_count.to_string(),
                "IsOfficial": if r.is_official { "[OK]" } else { "" },
                "IsAutomated": if r.is_automated { "[OK]" } else { "" },
            })
        })
        .collect();
    let format = crate::output::Format::parse(a.format.as_deref())?;
    crate::output::print_items(&format, &items, |items| {
        let mut t =
            crate::output::Table::new(&["NAME", "DESCRIPTION", "STARS", "OFFICIAL", "AUTOMATED"]);
        for i in items {
            t.row(
                [
                    "Name",
                    "Description",
                    "StarCount",
                    "IsOfficial",
                    "IsAutomated",
                ]
                .iter()
                .map(|k| i[*k].as_str().unwrap_or_default().to_string())
                .collect(),
            );
        }
        t
    })
}

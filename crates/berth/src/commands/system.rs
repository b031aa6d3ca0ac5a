//! `system df`, `system check`, `system prune`, `system service`,
//! `system restore`, and `version`, `info` and `events`.

use berth_engine::Engine;
use clap::Args;

use crate::output::{Table, human_size};

// `system restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Print nothing for containers that came back.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Starts again what a reboot stopped, by each container's restart policy
/// (what dockerd does at boot; `contrib/systemd/berth-restore.service` runs
/// it). Prints each container started (and removed, for `--rm` ones).
pub fn restore(engine: &Engine, a: RestoreArgs) -> anyhow::Result<()> {
    use berth_engine::restore::Restored;
    let mut failed = 0;
    for r in engine.restore()? {
        match r {
            Restored::Started(c) if !a.quiet => println!("started {}", c.name),
            Restored::Removed(c) if !a.quiet => println!("removed {}", c.name),
            Restored::Failed(c, e) => {
                failed += 1;
                eprintln!("Error: restarting {}: {e}", c.name);
            }
            _ => {}
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} container(s) could not be restarted");
    }
    Ok(())
}

// `system check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Remove what is broken (and re-unpack layers from intact blobs).
    #[arg(long)]
    pub repair: bool,
}

pub fn check(engine: &Engine, a: CheckArgs) -> anyhow::Result<()> {
    engine.settle_removals();
    // What killed builds left (their step containers, snapshots, scratch):
    // untidy, not inconsistent; removed with --repair.
    for l in berth_build::leftovers::collect(&engine.store, engine.root(), !a.repair) {
        if a.repair {
            println!("repaired: removed {l}");
        } else {
            println!("note: {l}");
        }
    }
    let r = engine.store.check(a.repair)?;
    for p in &r.problems {
        let sev = if p.is_error() { "error" } else { "note" };
        println!("{sev}: {p}");
    }
    for rep in &r.repairs {
        println!("repaired: {rep}");
    }
    let errors = r.problems.iter().filter(|p| p.is_error()).count();
    println!(
        "checked {} blobs, {} images, {} layers: {}",
        r.blobs_checked,
        r.images_checked,
        r.layers_checked,
        match (errors, a.repair) {
            (0, _) => "the store is consistent".to_string(),
            (n, true) => format!("{n} problems repaired"),
            (n, false) => format!("{n} problems found (run `berth system check --repair`)"),
        }
    );
    if errors > 0 && !a.repair {
        std::process::exit(1);
    }
    Ok(())
}

// `system df`.
#[derive(Args, Debug)]
pub struct DfArgs {
    /// Show detailed information on space usage.
    #[arg(short, long)]
    pub verbose: bool,
    /// `table`, `json` or a Go template (`{{.Type}}`, `{{.TotalCount}}`,
    /// `{{.Active}}`, `{{.Size}}`, `{{.Reclaimable}}`).
    #[arg(long)]
    pub format: Option<String>,
}

/// `system df`: the engine's accounting (`berth_engine::df`), printed as
/// docker prints it; the build cache's own layers from the builder's cache.
pub fn df(engine: &Engine, a: DfArgs) -> anyhow::Result<()> {
    let du = engine.disk_usage()?;
    let cache = berth_build::cache::Cache::open(&engine.root().join("buildcache"))?;
    let bsize = du.layers_outside(engine, cache.chain_ids());
    let rows = df_rows(&du, cache.len(), bsize);
    let format = crate::output::Format::parse(a.format.as_deref())?;
    if !a.verbose {
        return crate::output::print_items(&format, &rows, |rows| {
            let mut t = Table::new(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
            for r in rows {
                t.row(
                    ["Type", "TotalCount", "Active", "Size", "Reclaimable"]
                        .iter()
                        .map(|k| r[*k].as_str().unwrap_or_default().to_string())
                        .collect(),
                );
            }
            t
        });
    }
    df_verbose(&du, bsize)
}

/// `system df`'s four rows (docker's Type, TotalCount, Active, Size,
/// Reclaimable).
fn df_rows(
    du: &berth_engine::df::DiskUsage,
    cache_records: usize,
    bsize: u64,
) -> Vec<serde_json::Value> {
    let pct = |r: u64, t: u64| {
        (r * 100)
            .checked_div(t)
            .map(|p| format!(" ({p}%)"))
            .unwrap_or_default()
    };
    let row = |typ: &str, total: usize, active: usize, size: u64, reclaim: u64, with_pct: bool| {
        serde_json::json!({
            "Type": typ,
            "TotalCount": total.to_string(),
            "Active": active.to_string(),
            "Size": crate::output::human_size4(size),
            "Reclaimable": if with_pct {
                format!("{}{}", crate::output::human_size4(reclaim), pct(reclaim, size))
            } else {
                crate::output::human_size4(reclaim)
            },
        })
    };
    let live = |c: &&berth_engine::df::ContainerUsage| {
        berth_engine::df::DiskUsage::is_active(&c.container)
    };
    let csize: u64 = du.containers.iter().map(|c| c.size_rw).sum();
    let creclaim: u64 = du
        .containers
        .iter()
        .filter(|c| !live(c))
        .map(|c| c.size_rw)
        .sum();
    let vsize: u64 = du.volumes.iter().map(|v| v.size).sum();
    let vreclaim: u64 = du
        .volumes
        .iter()
        .filter(|v| v.links == 0)
        .map(|v| v.size)
        .sum();
    vec![
        row(
            "Images",
            du.images.len(),
            du.images_active(),
            du.layers_size,
            du.layers_reclaimable,
            true,
        ),
        row(
            "Containers",
            du.containers.len(),
            du.containers.iter().filter(live).count(),
            csize,
            creclaim,
            true,
        ),
        row(
            "Local Volumes",
            du.volumes.len(),
            du.volumes.iter().filter(|v| v.links > 0).count(),
            vsize,
            vreclaim,
            true,
        ),
        // All of the build cache is reclaimable by `builder prune`, as
        // with BuildKit.
        row("Build Cache", cache_records, 0, bsize, bsize, false),
    ]
}

/// docker's `system df -v`: one section per kind.
fn df_verbose(du: &berth_engine::df::DiskUsage, bsize: u64) -> anyhow::Result<()> {
    println!("Images space usage:\n");
    let mut t = Table::new(&[
        "REPOSITORY",
        "TAG",
        "IMAGE ID",
        "CREATED",
        "SIZE",
        "SHARED SIZE",
        "UNIQUE SIZE",
        "CONTAINERS",
    ]);
    for i in &du.images {
        let img = &i.image;
        let created = crate::output::since(img.config.created.as_deref());
        let cells = |repo: String, tag: String| {
            vec![
                repo,
                tag,
                img.id.short().to_string(),
                created.clone(),
                human_size(i.size),
                human_size(i.shared),
                human_size(i.size.saturating_sub(i.shared)),
                i.containers.to_string(),
            ]
        };
        if img.names.is_empty() {
            t.row(cells("<none>".into(), "<none>".into()));
        }
        for n in &img.names {
            t.row(cells(n.familiar_name(), n.tag().unwrap_or("<none>").into()));
        }
    }
    t.print()?;
    println!("\nContainers space usage:\n");
    let mut t = Table::new(&[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "LOCAL VOLUMES",
        "SIZE",
        "CREATED",
        "STATUS",
        "NAMES",
    ]);
    for u in &du.containers {
        let c = &u.container;
        let mut cmd = c.path.clone();
        for a in &c.args {
            cmd.push(' ');
            cmd.push_str(a);
        }
        let vols_of = c.mounts.iter().filter(|m| m.typ == "volume").count();
        t.row(vec![
            c.id[..12].to_string(),
            c.config.image.clone(),
            format!("\"{}\"", crate::output::ellipsis(&cmd, 20)),
            vols_of.to_string(),
            human_size(u.size_rw),
            crate::output::since(Some(&c.created)),
            c.status_text(),
            c.name.clone(),
        ]);
    }
    t.print()?;
    println!("\nLocal Volumes space usage:\n");
    let mut t = Table::new(&["VOLUME NAME", "LINKS", "SIZE"]);
    for v in &du.volumes {
        t.row(vec![
            v.volume.name.clone(),
            v.links.to_string(),
            human_size(v.size),
        ]);
    }
    t.print()?;
    println!("\nBuild cache usage: {}\n", human_size(bsize));
    Ok(())
}

// `system prune`.
#[derive(Args, Debug)]
pub struct SystemPruneArgs {
    /// Remove all unused images not just dangling ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Prune anonymous volumes.
    #[arg(long)]
    pub volumes: bool,
}

/// `system prune`: stopped containers, unused networks, dangling (or all
/// unused) images, and with `--volumes` unused anonymous volumes.
pub fn prune(engine: &Engine, a: SystemPruneArgs) -> anyhow::Result<()> {
    if !a.force {
        let mut w = String::from(
            "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n",
        );
        if a.volumes {
            w.push_str("  - all anonymous volumes not used by at least one container\n");
        }
        w.push_str(if a.all {
            "  - all images without at least one container associated to them\n"
        } else {
            "  - all dangling images\n"
        });
        w.push_str(if a.all {
            "  - all build cache\n"
        } else {
            "  - unused build cache\n"
        });
        if !crate::commands::image::confirm(&w) {
            return Ok(());
        }
    }
    let before = berth_fs::du(engine.root());
    crate::output::print_deleted("Containers", &engine.prune()?);
    berth_build::leftovers::collect(&engine.store, engine.root(), false);
    crate::output::print_deleted("Networks", &engine.network_prune()?);
    if a.volumes {
        crate::output::print_deleted("Volumes", &engine.volume_prune(false)?);
    }
    let (events, _) = crate::commands::image::prune_images(&engine.store, a.all)?;
    if !events.is_empty() {
        println!("Deleted Images:");
        for e in &events {
            match e {
                berth_store::image::RemoveEvent::Untagged(n) => println!("untagged: {n}"),
                berth_store::image::RemoveEvent::Deleted(d) => println!("deleted: {d}"),
            }
        }
        println!();
    }
    if a.all {
        // Docker's `system prune -a` empties the build cache too; without
        // `-a` the cache stays (its layers are what makes the next build fast).
        let n = crate::commands::build::clear_cache(engine)?;
        if n > 0 {
            println!("Deleted build cache objects: {n}\n");
        }
    }
    engine.store.gc()?;
    let after = berth_fs::du(engine.root());
    println!(
        "Total reclaimed space: {}",
        human_size(before.saturating_sub(after))
    );
    Ok(())
}

// `system service`.
#[derive(Args, Debug)]
pub struct ServiceArgs {
    /// Where to listen: unix:///path, tcp://127.0.0.1:PORT (loopback only), fd:// (systemd).
    #[arg(short = 'H', long, default_value = "unix:///run/berth.sock")]
    pub host: String,
    /// Exit after this many seconds without a request (0: never; default 5
    /// when started by socket activation, else 0).
    #[arg(short, long)]
    pub time: Option<u64>,
    /// The socket as a positional argument (podman's spelling: `fd://` for
    /// the one systemd passes).
    pub uri: Option<String>,
}

/// `system service`: the Engine API on a socket; containers keep running
/// when it exits.
pub fn service(
    root: &std::path::Path,
    config_dir: Option<&std::path::Path>,
    a: ServiceArgs,
) -> anyhow::Result<()> {
    let activated = std::env::var("LISTEN_PID").is_ok_and(|p| p == std::process::id().to_string());
    let secs = a.time.unwrap_or(if activated { 5 } else { 0 });
    let opts = berth_api::Options {
        host: a.uri.unwrap_or(a.host),
        idle: (secs > 0).then(|| std::time::Duration::from_secs(secs)),
        root: root.to_path_buf(),
        exe: std::env::current_exe()?,
        config_dir: config_dir.map(std::path::Path::to_path_buf),
    };
    berth_api::serve(opts).map_err(|e| anyhow::anyhow!("{e}"))
}

// `version`.
#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Format the output using a Go template, or `json`.
    #[arg(short, long)]
    pub format: Option<String>,
}

/// docker's `version`: a client and a server part. berth has no daemon;
/// the engine the server part describes runs in each command (and behind
/// `berth system service`).
pub fn version(a: VersionArgs) -> anyhow::Result<()> {
    print_version(&a, berth_api::system::version_doc())
}

/// `version`'s output, with `server` the service's `GET /version` document
/// (this process's own engine without `-H`).
pub fn print_version(a: &VersionArgs, server: serde_json::Value) -> anyhow::Result<()> {
    let p = berth_types::Platform::host();
    let client = serde_json::json!({
        "Platform": {"Name": "berth"},
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": berth_api::API_VERSION,
        "DefaultAPIVersion": berth_api::API_VERSION,
        "Os": p.os,
        "Arch": p.architecture,
        "Context": "default",
        "Experimental": false,
    });
    let doc = serde_json::json!({"Client": client, "Server": server});
    match a.format.as_deref() {
        Some("json") => println!("{doc}"),
        Some(f) => println!(
            "{}",
            crate::output::template::Template::parse(f)?.render(&doc)?
        ),
        None => {
            let v = |d: &serde_json::Value, k: &str| d[k].as_str().unwrap_or("").to_string();
            println!("Client:");
            println!(" Version:           {}", v(&client, "Version"));
            println!(" API version:       {}", v(&client, "ApiVersion"));
            println!(
                " OS/Arch:           {}/{}",
                v(&client, "Os"),
                v(&client, "Arch")
            );
            println!(" Context:           default");
            println!();
            println!("Server: berth");
            println!(" Engine:");
            println!("  Version:          {}", v(&server, "Version"));
            println!(
                "  API version:      {} (minimum version {})",
                v(&server, "ApiVersion"),
                v(&server, "MinAPIVersion")
            );
            println!(
                "  OS/Arch:          {}/{}",
                v(&server, "Os"),
                v(&server, "Arch")
            );
            println!("  Kernel Version:   {}", v(&server, "KernelVersion"));
        }
    }
    Ok(())
}

// `info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Format the output using a Go template, or `json`.
    #[arg(short, long)]
    pub format: Option<String>,
}

/// docker's `info`, from the same document as `GET /info`.
pub fn info(engine: &Engine, a: InfoArgs) -> anyhow::Result<()> {
    let doc = berth_api::system::info_doc(engine).map_err(|e| anyhow::anyhow!(e.message))?;
    print_info(&a, &doc)
}

/// `info`'s output from a `GET /info` document.
pub fn print_info(a: &InfoArgs, doc: &serde_json::Value) -> anyhow::Result<()> {
    match a.format.as_deref() {
        Some("json") => {
            println!("{doc}");
            return Ok(());
        }
        Some(f) => {
            println!(
                "{}",
                crate::output::template::Template::parse(f)?.render(doc)?
            );
            return Ok(());
        }
        None => {}
    }
    let s = |k: &str| match &doc[k] {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let list = |k: &str, sub: &str| -> String {
        doc[k][sub]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    println!("Client:");
    println!(" Context:    default");
    println!(" Debug Mode: false");
    println!();
    println!("Server:");
    println!(" Containers: {}", s("Containers"));
    println!("  Running: {}", s("ContainersRunning"));
    println!("  Paused: {}", s("ContainersPaused"));
    println!("  Stopped: {}", s("ContainersStopped"));
    println!(" Images: {}", s("Images"));
    println!(" Server Version: {}", s("ServerVersion"));
    println!(" Storage Driver: {}", s("Driver"));
    println!(" Logging Driver: {}", s("LoggingDriver"));
    println!(" Cgroup Driver: {}", s("CgroupDriver"));
    println!(" Cgroup Version: {}", s("CgroupVersion"));
    println!(" Plugins:");
    println!("  Volume: {}", list("Plugins", "Volume"));
    println!("  Network: {}", list("Plugins", "Network"));
    println!("  Log: {}", list("Plugins", "Log"));
    println!(" Security Options:");
    println!("  seccomp");
    println!("   Profile: builtin");
    if doc["BerthRootless"].is_object() {
        let r = &doc["BerthRootless"];
        println!("  rootless");
        println!("   ID map: {}", r["IDMap"].as_str().unwrap_or("?"));
        println!("   Network: {}", r["Network"].as_str().unwrap_or("?"));
        println!("   Cgroups: {}", r["Cgroups"].as_str().unwrap_or("?"));
    }
    println!(" Kernel Version: {}", s("KernelVersion"));
    println!(" Operating System: {}", s("OperatingSystem"));
    println!(" OSType: {}", s("OSType"));
    println!(" Architecture: {}", s("Architecture"));
    println!(" CPUs: {}", s("NCPU"));
    println!(
        " Total Memory: {}",
        bytes_size(doc["MemTotal"].as_u64().unwrap_or(0))
    );
    println!(" Name: {}", s("Name"));
    println!(" ID: {}", s("ID"));
    println!(" Docker Root Dir: {}", s("DockerRootDir"));
    println!(" Debug Mode: false");
    println!(" Experimental: false");
    println!(" Insecure Registries:");
    for r in doc["RegistryConfig"]["InsecureRegistryCIDRs"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!("  {}", r.as_str().unwrap_or(""));
    }
    println!(" Live Restore Enabled: {}", s("LiveRestoreEnabled"));
    println!(" CDI spec directories:");
    for d in doc["CDISpecDirs"].as_array().into_iter().flatten() {
        println!("  {}", d.as_str().unwrap_or(""));
    }
    let devices = doc["DiscoveredDevices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !devices.is_empty() {
        println!(" Discovered Devices:");
        for d in devices {
            println!(
                "  {}: {}",
                d["Source"].as_str().unwrap_or(""),
                d["ID"].as_str().unwrap_or("")
            );
        }
    }
    for w in doc["Warnings"].as_array().into_iter().flatten() {
        eprintln!("{}", w.as_str().unwrap_or_default());
    }
    Ok(())
}

// `events`.
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Show all events created since timestamp (or relative: `10m`).
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this timestamp (or relative).
    #[arg(long)]
    pub until: Option<String>,
    /// Filter output based on conditions provided (`type=container`, `event=start`, …).
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Format the output using a Go template, or `json`.
    #[arg(long)]
    pub format: Option<String>,
}

/// docker's `events`: what happened (from `--since`), then what happens,
/// until `--until` or Ctrl-C. Each line as docker prints it:
/// `TIME TYPE ACTION ID (attr=value, …)`.
pub fn events(engine: &Engine, a: EventsArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let when = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<i128>> {
        v.as_deref()
            .map(|s| {
                berth_engine::logs::parse_since(s)
                    .map(|t| t.as_nanosecond())
                    .ok_or_else(|| anyhow::anyhow!("invalid value for \"--{flag}\": {s:?}"))
            })
            .transpose()
    };
    let since = when("since", &a.since)?;
    let until = when("until", &a.until)?;
    let filters = berth_engine::events::EventFilters::from_flags(&a.filter)?;
    let template = match a.format.as_deref() {
        None | Some("") | Some("json") => None,
        Some(f) => Some(crate::output::template::Template::parse(f)?),
    };
    let json = a.format.as_deref() == Some("json");
    let mut out = std::io::stdout().lock();
    let mut failed: Option<anyhow::Error> = None;
    engine.follow_events(since, until, &filters, &mut |ev| {
        let Some(ev) = ev else {
            return out.flush().is_ok();
        };
        let line = if json {
            ev.to_json().to_string()
        } else if let Some(t) = &template {
            match t.render(&ev.to_json()) {
                Ok(l) => l,
                Err(e) => {
                    failed = Some(e.into());
                    return false;
                }
            }
        } else {
            let attrs: Vec<String> = ev
                .actor
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!(
                "{} {} {} {} ({})",
                rfc3339_nano_fixed(ev.time_nano),
                ev.typ,
                ev.action,
                ev.actor.id,
                attrs.join(", ")
            )
        };
        writeln!(out, "{line}").is_ok()
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Go's `RFC3339NanoFixed` in the local zone (`2006-01-02T15:04:05.000000000Z07:00`),
/// as docker prints event times.
fn rfc3339_nano_fixed(nanos: i128) -> String {
    let ts = jiff::Timestamp::from_nanosecond(nanos).unwrap_or_default();
    let off = jiff::tz::TimeZone::system().to_offset(ts);
    let dt = off.to_datetime(ts);
    let zone = if off.seconds() == 0 {
        "Z".to_string()
    } else {
        let s = off.seconds();
        let sign = if s < 0 { '-' } else { '+' };
        format!("{sign}{:02}:{:02}", s.abs() / 3600, s.abs() / 60 % 60)
    };
    format!(
        "{}.{:09}{zone}",
        dt.strftime("%Y-%m-%dT%H:%M:%S"),
        dt.subsec_nanosecond()
    )
}

/// go-units `BytesSize`: binary units, two decimals (`23.47GiB`).
fn bytes_size(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{}{}", format!("{v:.2}").trim_end_matches(".00"), units[i])
}

// `system emulators`.
#[derive(clap::Args, Debug)]
pub struct EmulatorsArgs {
    /// Register the emulators of these architectures (`arm64`, `all`).
    #[arg(long, value_delimiter = ',')]
    pub install: Vec<String>,
    /// Remove the handlers of these architectures (`all`).
    #[arg(long, value_delimiter = ',')]
    pub uninstall: Vec<String>,
}

/// `system emulators`: the binfmt_misc handlers of QEMU's emulators that
/// let this machine run other machines' images (`berth_engine::emulation`).
pub fn emulators(a: EmulatorsArgs) -> anyhow::Result<()> {
    use berth_engine::emulation;
    let expand = |list: &[String]| -> Vec<String> {
        if list.iter().any(|x| x == "all") {
            emulation::list()
                .into_iter()
                .filter(|e| e.available)
                .map(|e| e.arch)
                .collect()
        } else {
            list.to_vec()
        }
    };
    for arch in expand(&a.install) {
        match emulation::ensure(&arch).map_err(|e| anyhow::anyhow!(e))? {
            Some(said) => eprintln!("{said}"),
            None => eprintln!("{arch}: already registered"),
        }
    }
    for arch in expand(&a.uninstall) {
        emulation::remove(&arch).map_err(|e| anyhow::anyhow!(e))?;
        eprintln!("{arch}: removed");
    }
    let mut t = crate::output::Table::new(&["ARCH", "EMULATOR", "STATUS"]);
    for e in emulation::list() {
        let status = match (e.registered, e.available) {
            (true, _) => "registered",
            (false, true) => "installed (registered when first needed)",
            (false, false) => "not installed (apt-get install qemu-user-static)",
        };
        let q = emulation::qemu_name(&e.arch).unwrap_or("-");
        t.row(vec![
            e.arch.clone(),
            format!("qemu-{q}"),
            status.to_string(),
        ]);
    }
    t.print()?;
    Ok(())
}

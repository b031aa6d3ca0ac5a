//! Container commands: `run`, `create`, `start`, `ps`, `stop`, `kill`, `restart`,
//! `rm`, `logs`, `exec`, `wait`, `top`, `stats`, `pause`, `unpause`, `diff`,
//! `commit`, `export`, `rename`, `port`, `container prune`, `volume …`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use anyhow::{Context, anyhow, bail};
use berth_engine::container::{HostConfig, RestartPolicy, Ulimit};
use berth_engine::run::CreateRequest;
use berth_engine::{Container, Engine, EngineError, Status};
use berth_types::Reference;
use berth_types::image::HealthConfig;
use clap::Args;
use serde_json::{Value, json};

use crate::output::{Format, Table, created_at, ellipsis, human_size, print_items, since};

mod create;
mod device_flags;
mod io;
mod volume;

pub use create::*;
pub use io::*;
pub use volume::*;

/// An error that ends the process with a docker exit code.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct ExitError {
    /// The exit code.
    pub code: u8,
    /// What to print.
    pub msg: String,
}

pub(crate) fn exit_err(code: i32, msg: impl Into<String>) -> anyhow::Error {
    ExitError {
        code: code.clamp(0, 255) as u8,
        msg: msg.into(),
    }
    .into()
}

// `ps`.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    pub all: bool,
    /// Only display container IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Show the latest created container.
    #[arg(short, long)]
    pub latest: bool,
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long = "last", default_value_t = -1, allow_hyphen_values = true)]
    pub last: i64,
    /// Display total file sizes.
    #[arg(short, long)]
    pub size: bool,
    /// Filter output (`status=`, `name=`, `id=`, `label=`, `ancestor=`).
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// `table`, `json` or a Go template.
    #[arg(long)]
    pub format: Option<String>,
}

fn ps_item(engine: &Engine, c: &Container, no_trunc: bool) -> Value {
    let mut cmd = c.path.clone();
    for a in &c.args {
        cmd.push(' ');
        cmd.push_str(a);
    }
    let command = if no_trunc {
        format!("\"{cmd}\"")
    } else {
        format!("\"{}\"", ellipsis(&cmd, 20))
    };
    let image = c.config.image.clone();
    let _ = engine;
    json!({
        "Command": command,
        "CreatedAt": created_at(Some(&c.created)),
        "ID": if no_trunc { c.id.clone() } else { c.short_id().to_string() },
        "Image": image,
        "Labels": c.config.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "LocalVolumes": c.mounts.iter().filter(|m| m.typ == "volume").count().to_string(),
        "Mounts": c.mounts.iter().map(|m| if m.name.is_empty() { m.source.clone() } else { m.name.clone() }).collect::<Vec<_>>().join(","),
        "Names": c.name,
        "Networks": c.host_config.network_mode,
        "Ports": ports_column(c),
        "RunningFor": since(Some(&c.created)),
        "Size": "",
        "State": c.state.status.as_str(),
        "Status": c.status_text(),
    })
}

/// `ps`.
pub fn ps(engine: &Engine, a: PsArgs) -> anyhow::Result<()> {
    Format::parse(a.format.as_deref())?;
    let filters = berth_engine::list::Filters::from_flags(&a.filter)?;
    let mut list = engine.list(a.all || a.latest || a.last >= 0, &filters)?;
    if a.latest {
        list.truncate(1);
    }
    if a.last >= 0 {
        list.truncate(a.last as usize);
    }
    let items: Vec<Value> = list
        .iter()
        .map(|c| {
            let mut i = ps_item(engine, c, a.no_trunc);
            if a.size {
                // docker: "2B (virtual 1.98MB)".
                let (rw, virt) = berth_engine::docs::container_sizes(engine, c);
                i["Size"] = Value::String(format!(
                    "{} (virtual {})",
                    crate::output::human_size(rw),
                    crate::output::human_size(virt)
                ));
            }
            i
        })
        .collect();
    print_ps(&a, &items)
}

/// `ps`'s output from its rows (made from the engine's containers, or from
/// a service's `GET /containers/json` with `-H`).
pub fn print_ps(a: &PsArgs, items: &[Value]) -> anyhow::Result<()> {
    let format = Format::parse(a.format.as_deref())?;
    if a.quiet {
        crate::output::print_ids(items);
        return Ok(());
    }
    print_items(&format, items, |items| {
        let mut head = vec![
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ];
        if a.size {
            head.push("SIZE");
        }
        let mut t = Table::new(&head);
        for i in items {
            let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
            let mut row = vec![
                s("ID"),
                s("Image"),
                s("Command"),
                s("RunningFor"),
                s("Status"),
                s("Ports"),
                s("Names"),
            ];
            if a.size {
                row.push(s("Size"));
            }
            t.row(row);
        }
        t
    })
}

// `stop` / `restart`.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container.
    #[arg(short, long)]
    pub time: Option<i64>,
    /// Signal to send to the container.
    #[arg(short, long)]
    pub signal: Option<String>,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

fn each(
    containers: &[String],
    mut f: impl FnMut(&str) -> Result<(), EngineError>,
) -> anyhow::Result<()> {
    let mut failed = false;
    for q in containers {
        match f(q) {
            Ok(()) => println!("{q}"),
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(exit_err(1, String::new()));
    }
    Ok(())
}

/// `stop`.
pub fn stop(engine: &Engine, a: StopArgs) -> anyhow::Result<()> {
    each(&a.containers, |q| {
        if let Some(s) = &a.signal {
            let sig = berth_runtime::parse_signal(s)
                .ok_or_else(|| EngineError::Invalid(format!("Invalid signal: {s}")))?;
            engine.kill(q, sig)?;
            return Ok(());
        }
        engine.stop(q, a.time).map(drop)
    })
}

/// `restart`.
pub fn restart(engine: &Engine, a: StopArgs) -> anyhow::Result<()> {
    each(&a.containers, |q| {
        engine.stop(q, a.time)?;
        engine.start_detached(q)
    })
}

// `kill`.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container.
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `kill`.
pub fn kill(engine: &Engine, a: KillArgs) -> anyhow::Result<()> {
    let sig = berth_runtime::parse_signal(&a.signal)
        .ok_or_else(|| exit_err(1, format!("Invalid signal: {}", a.signal)))?;
    each(&a.containers, |q| engine.kill(q, sig).map(drop))
}

// `rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container.
    #[arg(short, long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container.
    #[arg(short, long)]
    pub volumes: bool,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `rm`.
pub fn rm(engine: &Engine, a: RmArgs) -> anyhow::Result<()> {
    each(&a.containers, |q| {
        engine.remove(q, a.force, a.volumes).map(drop)
    })
}

// `wait`.
#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `wait`.
pub fn wait(engine: &Engine, a: WaitArgs) -> anyhow::Result<()> {
    for q in &a.containers {
        let c = engine.wait(q).map_err(|e| exit_err(1, e.to_string()))?;
        println!("{}", c.state.exit_code);
    }
    Ok(())
}

// `pause` / `unpause`.
#[derive(Args, Debug)]
pub struct ContainersArgs {
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `pause`.
pub fn pause(engine: &Engine, a: ContainersArgs) -> anyhow::Result<()> {
    each(&a.containers, |q| engine.pause(q))
}

/// `unpause`.
pub fn unpause(engine: &Engine, a: ContainersArgs) -> anyhow::Result<()> {
    each(&a.containers, |q| engine.unpause(q))
}

// `update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Memory limit (`64m`, `1g`).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Memory plus swap limit; -1 for unlimited swap.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long)]
    pub cpu_shares: Option<i64>,
    /// CPUs in which to allow execution (`0-3`, `0,1`).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Tune the container pids limit (-1 for unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Restart policy to apply when a container exits.
    #[arg(long)]
    pub restart: Option<String>,
    /// The containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `update`: docker's flags; each container's name is printed once
/// updated, errors as the daemon's (exit 1).
pub fn update(engine: &Engine, a: UpdateArgs) -> anyhow::Result<()> {
    let size = |v: &Option<String>| -> anyhow::Result<Option<i64>> {
        match v.as_deref() {
            None => Ok(None),
            Some("-1") => Ok(Some(-1)),
            Some(v) => parse_bytes(v).map(Some),
        }
    };
    let u = berth_engine::update::Update {
        memory: size(&a.memory)?,
        memory_swap: size(&a.memory_swap)?,
        nano_cpus: a.cpus.map(|c| (c * 1e9) as i64),
        cpu_shares: a.cpu_shares,
        cpuset_cpus: a.cpuset_cpus.clone(),
        pids_limit: a.pids_limit,
        restart_policy: a.restart.as_deref().map(parse_restart).transpose()?,
    };
    if u == berth_engine::update::Update::default() {
        bail!("you must provide one or more flags when using this command");
    }
    each(&a.containers, |q| engine.update(q, &u).map(|_| ()))
}

// `diff`.
#[derive(Args, Debug)]
pub struct OneArgs {
    /// The container.
    pub container: String,
}

/// `diff`.
pub fn diff(engine: &Engine, a: OneArgs) -> anyhow::Result<()> {
    for (k, p) in engine.diff(&a.container)? {
        println!("{k} {p}");
    }
    Ok(())
}

// `export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT.
    #[arg(short, long)]
    pub output: Option<std::path::PathBuf>,
    /// The container.
    pub container: String,
}

/// `export`.
pub fn export(engine: &Engine, a: ExportArgs) -> anyhow::Result<()> {
    match &a.output {
        Some(p) => {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            engine.export(
                &a.container,
                &mut std::io::BufWriter::new(tmp.as_file_mut()),
            )?;
            tmp.as_file().sync_all()?;
            std::fs::set_permissions(
                tmp.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )?;
            tmp.persist(p)?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            engine.export(&a.container, &mut out)?;
            out.flush()?;
        }
    }
    Ok(())
}

// `commit`.
#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author.
    #[arg(short, long, default_value = "")]
    pub author: String,
    /// Commit message.
    #[arg(short, long, default_value = "")]
    pub message: String,
    /// Apply Dockerfile instruction to the created image.
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Pause container during commit.
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub pause: bool,
    /// The container.
    pub container: String,
    /// REPOSITORY[:TAG].
    pub reference: Option<String>,
}

/// `commit`.
pub fn commit(engine: &Engine, a: CommitArgs) -> anyhow::Result<()> {
    let mut cfg = engine.commit_config(&a.container)?;
    for ch in &a.change {
        crate::changes::apply_change(&mut cfg, ch)?;
    }
    let name = a.reference.as_deref().map(Reference::parse).transpose()?;
    let img = engine.commit(
        &a.container,
        name.as_ref(),
        &a.message,
        &a.author,
        &[cfg],
        a.pause,
    )?;
    println!("{}", img.id);
    Ok(())
}

// `rename`.
#[derive(Args, Debug)]
pub struct RenameArgs {
    /// The container.
    pub container: String,
    /// The new name.
    pub new_name: String,
}

/// `rename`.
pub fn rename(engine: &Engine, a: RenameArgs) -> anyhow::Result<()> {
    engine
        .rename(&a.container, &a.new_name)
        .map_err(|e| exit_err(1, e.to_string()))
}

// `port`.
#[derive(Args, Debug)]
pub struct PortArgs {
    /// The container.
    pub container: String,
    /// Only this port (`80` or `80/udp`).
    pub port: Option<String>,
}

/// `port`: the published ports of a running container, as
/// `80/tcp -> 0.0.0.0:8080`, or the host addresses of one port.
pub fn port(engine: &Engine, a: PortArgs) -> anyhow::Result<()> {
    let c = engine
        .find(&a.container)
        .map_err(|e| exit_err(1, e.to_string()))?;
    let ports = &c.network_settings.ports;
    match &a.port {
        None => {
            for (k, binds) in ports {
                for b in binds {
                    println!("{k} -> {}:{}", b.host_ip, b.host_port);
                }
            }
        }
        Some(p) => {
            let key = if p.contains('/') {
                p.clone()
            } else {
                format!("{p}/tcp")
            };
            match ports.get(&key) {
                Some(binds) if !binds.is_empty() => {
                    for b in binds {
                        println!("{}:{}", b.host_ip, b.host_port);
                    }
                }
                _ => {
                    return Err(exit_err(
                        1,
                        format!("Error: No public port '{key}' published for {}", c.name),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// docker ps's PORTS column: `0.0.0.0:8080->80/tcp, 53/udp`.
pub fn ports_column(c: &berth_engine::Container) -> String {
    let mut out = Vec::new();
    for (k, binds) in &c.network_settings.ports {
        if binds.is_empty() {
            out.push(k.clone());
        }
        for b in binds {
            out.push(format!("{}:{}->{k}", b.host_ip, b.host_port));
        }
    }
    if out.is_empty() {
        for k in c.config.exposed_ports.keys() {
            out.push(k.clone());
        }
    }
    out.join(", ")
}

// `container prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

/// `container prune`.
pub fn prune(engine: &Engine, a: PruneArgs) -> anyhow::Result<()> {
    if !a.force
        && !crate::commands::image::confirm("WARNING! This will remove all stopped containers.")
    {
        return Ok(());
    }
    let before = berth_fs::du(&engine.root().join("snapshots"));
    crate::output::print_deleted("Containers", &engine.prune()?);
    let after = berth_fs::du(&engine.root().join("snapshots"));
    println!(
        "Total reclaimed space: {}",
        human_size(before.saturating_sub(after))
    );
    Ok(())
}

// `cp`.
#[derive(Args, Debug)]
pub struct CpArgs {
    /// Always follow a symlink given as the source.
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// `CONTAINER:SRC_PATH` or a local path.
    pub src: String,
    /// `CONTAINER:DEST_PATH` or a local path.
    pub dest: String,
}

fn split_container_path(s: &str) -> Option<(&str, &str)> {
    // A local path may contain ':' only after a '/' (docker's rule).
    let (c, p) = s.split_once(':')?;
    (!c.is_empty() && !c.contains('/')).then_some((c, p))
}

/// `cp`.
pub fn cp(engine: &Engine, a: CpArgs) -> anyhow::Result<()> {
    let daemon = |e: EngineError| exit_err(1, e.to_string());
    match (split_container_path(&a.src), split_container_path(&a.dest)) {
        // docker: `-` is a tar stream on stdout or stdin.
        (Some((c, p)), None) if a.dest == "-" => {
            let (_, tar) = engine.archive_get(c, p, a.follow_link).map_err(daemon)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&tar)?;
            out.flush()?;
            Ok(())
        }
        (None, Some((c, p))) if a.src == "-" => engine
            .archive_put(c, p, std::io::stdin().lock())
            .map_err(daemon),
        (Some((c, p)), None) => engine
            .cp_from(c, p, std::path::Path::new(&a.dest), a.follow_link)
            .map_err(|e| exit_err(1, e.to_string())),
        (None, Some((c, p))) => engine
            .cp_into(std::path::Path::new(&a.src), c, p)
            .map_err(|e| exit_err(1, e.to_string())),
        (Some(_), Some(_)) => Err(exit_err(1, "copying between containers is not supported")),
        (None, None) => Err(exit_err(1, "must specify at least one container source")),
    }
}

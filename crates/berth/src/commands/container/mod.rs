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

mod io;
mod volume;

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

/// Options shared by `run` and `create`.
#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Print help (`-h` is `--hostname`, as in docker).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Assign a name.
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long)]
    pub env_file: Vec<String>,
    /// Bind mount a volume (`/host:/ctr[:ro]`, `name:/ctr`, `/ctr`).
    #[arg(short, long)]
    pub volume: Vec<String>,
    /// Attach a filesystem mount (`type=bind,source=…,target=…`).
    #[arg(long)]
    pub mount: Vec<String>,
    /// Mount a tmpfs (`/path[:opts]`).
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Username or UID (`name|uid[:group|gid]`).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container host name.
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Keep STDIN open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Connect a container to a network (`bridge`, `host`, `none`,
    /// `container:NAME`, or a network from `network create`).
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    /// Publish a container's port(s) to the host (`[ip:][hostPort:]port[/proto]`).
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// IPv4 address (e.g., 172.30.100.104).
    #[arg(long)]
    pub ip: Option<String>,
    /// Add network-scoped alias for the container.
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
    /// Expose a port or a range of ports.
    #[arg(long)]
    pub expose: Vec<String>,
    /// Memory limit (`64m`, `1g`).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Memory plus swap limit; -1 for unlimited swap.
    #[arg(long)]
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
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Write the container ID to the file.
    #[arg(long, value_name = "FILE")]
    pub cidfile: Option<std::path::PathBuf>,
    /// Mount the container's root filesystem as read only.
    #[arg(long)]
    pub read_only: bool,
    /// Add Linux capabilities.
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container.
    #[arg(long)]
    pub privileged: bool,
    /// Security options (`no-new-privileges`, `seccomp=unconfined|profile.json`).
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    pub init: bool,
    /// Ulimit options (`nofile=1024:2048`).
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Restart policy (`no`, `always`, `unless-stopped`, `on-failure[:N]`).
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Set meta data on a container.
    #[arg(short, long)]
    pub label: Vec<String>,
    /// Signal to stop the container.
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container.
    #[arg(long)]
    pub stop_timeout: Option<i64>,
    /// Command to run to check health.
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h).
    #[arg(long, allow_hyphen_values = true)]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h).
    #[arg(long, allow_hyphen_values = true)]
    pub health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(long, allow_negative_numbers = true)]
    pub health_retries: Option<i64>,
    /// Start period for the container to initialize before counting retries (ms|s|m|h).
    #[arg(long, allow_hyphen_values = true)]
    pub health_start_period: Option<String>,
    /// Time between running the check during the start period (ms|s|m|h).
    #[arg(long, allow_hyphen_values = true)]
    pub health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long)]
    pub no_healthcheck: bool,
    /// Add a custom host-to-IP mapping (`host:ip`).
    #[arg(long)]
    pub add_host: Vec<String>,
    /// Set custom DNS servers.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Pull image before running (`always`, `missing`, `never`).
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Automatically remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// The image.
    pub image: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run container in background and print container ID.
    #[arg(short, long)]
    pub detach: bool,
    /// Attach to STDIN, STDOUT or STDERR (all of them when none is named).
    #[arg(short, long = "attach")]
    pub attach: Vec<String>,
    #[command(flatten)]
    pub c: CreateArgs,
}

/// docker's `RAMInBytes`: `64m`, `1g`, `512k`, `1024`, `2GB`.
pub fn parse_bytes(s: &str) -> anyhow::Result<i64> {
    berth_types::units::ram_in_bytes(s).map_err(anyhow::Error::msg)
}

fn parse_ulimit(s: &str) -> anyhow::Result<Ulimit> {
    let (name, vals) = s
        .split_once('=')
        .with_context(|| format!("invalid ulimit argument: {s}"))?;
    let (soft, hard) = match vals.split_once(':') {
        Some((a, b)) => (a.parse()?, b.parse()?),
        None => {
            let v = vals.parse()?;
            (v, v)
        }
    };
    if soft > hard {
        bail!("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}");
    }
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

fn env_file_entries(path: &str) -> anyhow::Result<Vec<String>> {
    let data = std::fs::read_to_string(path).with_context(|| format!("open {path}"))?;
    Ok(data
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// Turns the flags into a create request.
/// The `--health-*` flags as docker's CLI turns them into a config.
fn healthcheck(a: &CreateArgs) -> anyhow::Result<Option<HealthConfig>> {
    let dur = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<i64>> {
        let Some(v) = v else { return Ok(None) };
        let ns = berth_dockerfile::instructions::parse_duration(v).ok_or_else(|| {
            anyhow!("invalid argument {v:?} for \"--{flag}\" flag: time: invalid duration {v:?}")
        })?;
        if ns < 0 {
            bail!("--{flag} cannot be negative");
        }
        Ok(Some(ns))
    };
    let h = HealthConfig {
        test: None,
        interval: dur("health-interval", &a.health_interval)?,
        timeout: dur("health-timeout", &a.health_timeout)?,
        start_period: dur("health-start-period", &a.health_start_period)?,
        start_interval: dur("health-start-interval", &a.health_start_interval)?,
        retries: a.health_retries,
    };
    if a.health_retries.is_some_and(|r| r < 0) {
        bail!("--health-retries cannot be negative");
    }
    let any = a.health_cmd.is_some() || h != HealthConfig::default();
    if a.no_healthcheck {
        if any {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        return Ok(Some(HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        }));
    }
    if !any {
        return Ok(None);
    }
    Ok(Some(HealthConfig {
        test: a
            .health_cmd
            .as_ref()
            .filter(|c| !c.is_empty())
            .map(|c| vec!["CMD-SHELL".to_string(), c.clone()]),
        ..h
    }))
}

/// `--restart`: `no`, `always`, `unless-stopped`, `on-failure[:N]`.
fn parse_restart(s: &str) -> anyhow::Result<RestartPolicy> {
    Ok(match s.split_once(':') {
        Some(("on-failure", n)) => RestartPolicy {
            name: "on-failure".into(),
            max_retries: n.parse().context("invalid restart policy count")?,
        },
        None if matches!(s, "no" | "always" | "unless-stopped" | "on-failure") => RestartPolicy {
            name: s.to_string(),
            max_retries: 0,
        },
        _ => bail!("invalid restart policy '{s}'"),
    })
}

pub fn request(a: &CreateArgs) -> anyhow::Result<CreateRequest> {
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(env_file_entries(f)?);
    }
    env.extend(a.env.iter().cloned());
    let restart = parse_restart(&a.restart)?;
    if restart.name != "no" && a.rm {
        bail!("Conflicting options: --restart and --rm");
    }
    let mut labels = BTreeMap::new();
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let memory = a
        .memory
        .as_deref()
        .map(parse_bytes)
        .transpose()?
        .unwrap_or(0);
    let memory_swap = match a.memory_swap.as_deref() {
        Some("-1") => -1,
        Some(s) => parse_bytes(s)?,
        None => 0,
    };
    if memory > 0 && memory < 6 * 1024 * 1024 {
        bail!("Minimum memory limit allowed is 6MB");
    }
    if memory_swap > 0 && memory_swap < memory {
        bail!("Minimum memoryswap limit should be larger than memory limit, see usage");
    }
    let mut port_bindings: std::collections::BTreeMap<
        String,
        Vec<berth_engine::network::PortBinding>,
    > = Default::default();
    for p in &a.publish {
        for (k, b) in berth_engine::network::parse_publish(p)
            .map_err(|e| exit_err(125, format!("{e}\nSee 'berth run --help'.")))?
        {
            port_bindings.entry(k).or_default().push(b);
        }
    }
    if a.network.as_deref() == Some("host") && (!port_bindings.is_empty() || a.publish_all) {
        // docker's words, and like docker the ports are ignored.
        eprintln!("WARNING: Published ports are discarded when using host network mode");
        port_bindings.clear();
    }
    Ok(CreateRequest {
        image: a.image.clone(),
        name: a.name.clone(),
        cmd: a.command.clone(),
        entrypoint: a.entrypoint.clone().map(|e| vec![e]),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        tty: a.tty,
        interactive: a.interactive,
        volumes: a.volume.clone(),
        mounts: a.mount.clone(),
        tmpfs: a.tmpfs.clone(),
        labels,
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
        healthcheck: healthcheck(a)?,
        host: HostConfig {
            network_mode: a.network.clone().unwrap_or_default(),
            restart_policy: restart,
            auto_remove: a.rm,
            cap_add: a.cap_add.clone(),
            cap_drop: a.cap_drop.clone(),
            privileged: a.privileged,
            readonly_rootfs: a.read_only,
            security_opt: a.security_opt.clone(),
            init: a.init,
            memory,
            memory_swap,
            nano_cpus: match a.cpus {
                None => 0,
                Some(c) => {
                    // docker's range: 0.01 up to the CPUs this machine has.
                    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                    if !(0.01..=n as f64).contains(&c) {
                        bail!(
                            "Range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available"
                        );
                    }
                    (c * 1e9) as i64
                }
            },
            cpu_shares: a.cpu_shares.unwrap_or(0),
            cpuset_cpus: a.cpuset_cpus.clone().unwrap_or_default(),
            pids_limit: a.pids_limit,
            ulimits: a
                .ulimit
                .iter()
                .map(|u| parse_ulimit(u))
                .collect::<anyhow::Result<_>>()?,
            extra_hosts: a.add_host.clone(),
            dns: a.dns.clone(),
            port_bindings,
            publish_all_ports: a.publish_all,
            ..Default::default()
        },
        ip: a.ip.clone(),
        network_aliases: a.network_alias.clone(),
        expose: a.expose.clone(),
    })
}

/// Makes sure the image is in the store (docker's "Unable to find image" path).
fn ensure_image(
    engine: &Engine,
    image: &str,
    pull: &str,
    config_dir: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let normalized = Reference::parse(image)
        .map(|r| r.with_default_tag().familiar())
        .unwrap_or(image.to_string());
    match crate::commands::distribution::ensure(&engine.store, config_dir, image, pull, None) {
        Ok(true) => Ok(()),
        Ok(false) => Err(exit_err(125, format!("No such image: {normalized}"))),
        Err(e) => Err(exit_err(125, format!("{e:#}"))),
    }
}

fn engine_err(e: EngineError) -> anyhow::Error {
    let code = e.run_exit_code();
    exit_err(code, e.to_string())
}

/// `create`.
pub fn create(
    engine: &Engine,
    a: CreateArgs,
    config_dir: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    ensure_image(engine, &a.image, &a.pull, config_dir)?;
    let req = request(&a).map_err(|e| exit_err(125, e.to_string()))?;
    let cid = CidFile::claim(a.cidfile.as_deref())?;
    let c = engine.create(&req).map_err(engine_err)?;
    cid.write(&c.id)?;
    println!("{}", c.id);
    Ok(())
}

/// `--cidfile`: claimed (created, exclusively) before the container is,
/// as docker does, so two runs cannot share one; removed again if the
/// create fails.
struct CidFile(Option<(std::path::PathBuf, std::fs::File)>);

impl CidFile {
    fn claim(p: Option<&std::path::Path>) -> anyhow::Result<CidFile> {
        let Some(p) = p else { return Ok(CidFile(None)) };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p)
        {
            Ok(f) => Ok(CidFile(Some((p.to_path_buf(), f)))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exit_err(
                125,
                format!(
                    "Container ID file found, make sure the other container isn't running or delete {}",
                    p.display()
                ),
            )),
            Err(e) => Err(exit_err(
                125,
                format!(
                    "failed to create the container ID file: {}: {e}",
                    p.display()
                ),
            )),
        }
    }

    fn write(mut self, id: &str) -> anyhow::Result<()> {
        if let Some((p, mut f)) = self.0.take() {
            f.write_all(id.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| exit_err(125, format!("write {}: {e}", p.display())))?;
        }
        Ok(())
    }
}

impl Drop for CidFile {
    fn drop(&mut self) {
        if let Some((p, _)) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `run`.
pub fn run(
    engine: &Engine,
    a: RunArgs,
    config_dir: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if !a.attach.is_empty() && a.detach {
        return Err(exit_err(125, "Conflicting options: -a and -d"));
    }
    for s in &a.attach {
        if !matches!(
            s.to_ascii_lowercase().as_str(),
            "stdin" | "stdout" | "stderr"
        ) {
            return Err(exit_err(
                125,
                format!(
                    "invalid argument \"{s}\" for \"-a, --attach\" flag: valid streams are STDIN, STDOUT and STDERR"
                ),
            ));
        }
    }
    ensure_image(engine, &a.c.image, &a.c.pull, config_dir)?;
    let req = request(&a.c).map_err(|e| exit_err(125, e.to_string()))?;
    if a.c.tty && !a.detach && !std::io::stdin().is_terminal() && a.c.interactive {
        return Err(exit_err(1, "the input device is not a TTY"));
    }
    let cid = CidFile::claim(a.c.cidfile.as_deref())?;
    let c = engine.create(&req).map_err(engine_err)?;
    cid.write(&c.id)?;
    if a.detach {
        if let Err(e) = engine.start_detached(&c.id) {
            let code = e.run_exit_code();
            if a.c.rm {
                let _ = engine.remove(&c.id, true, true);
            }
            return Err(exit_err(code, e.to_string()));
        }
        println!("{}", c.id);
        return Ok(());
    }
    // `-a`: only the streams named are shown (stdin only if named).
    let mut streams = (true, true, a.c.interactive);
    if !a.attach.is_empty() {
        streams = (false, false, false);
        for s in &a.attach {
            match s.to_ascii_lowercase().as_str() {
                "stdout" => streams.0 = true,
                "stderr" => streams.1 = true,
                "stdin" => streams.2 = a.c.interactive,
                _ => unreachable!("checked before the container was made"),
            }
        }
    }
    let hide = |fd: i32, show: bool| -> Option<i32> {
        if show {
            return None;
        }
        // SAFETY: fd `fd` of this process swapped for /dev/null and kept
        // to be put back once the container is done.
        unsafe {
            let saved = libc::dup(fd);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            libc::dup2(null, fd);
            libc::close(null);
            Some(saved)
        }
    };
    let saved = [(1, hide(1, streams.0)), (2, hide(2, streams.1))];
    let started = engine.start_attached(&c.id, streams.2);
    for (fd, s) in saved {
        if let Some(s) = s {
            // SAFETY: putting back the descriptor saved above.
            unsafe {
                libc::dup2(s, fd);
                libc::close(s);
            }
        }
    }
    match started {
        Ok(code) => {
            if code != 0 {
                return Err(exit_err(code, String::new()));
            }
            Ok(())
        }
        Err(e) => {
            let code = e.run_exit_code();
            if a.c.rm {
                let _ = engine.remove(&c.id, true, true);
            }
            Err(exit_err(code, e.to_string()))
        }
    }
}

/// `start`.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals.
    #[arg(short, long)]
    pub attach: bool,
    /// Attach container's STDIN.
    #[arg(short, long)]
    pub interactive: bool,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `start`.
pub fn start(engine: &Engine, a: StartArgs) -> anyhow::Result<()> {
    let mut failed = false;
    for q in &a.containers {
        if a.attach || a.interactive {
            let code = engine
                .start_attached(q, a.interactive)
                .map_err(engine_err)?;
            if code != 0 {
                return Err(exit_err(code, String::new()));
            }
            continue;
        }
        match engine.start_detached(q) {
            Ok(()) => println!("{q}"),
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(exit_err(1, "Error: failed to start containers"));
    }
    Ok(())
}

/// `ps`.
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
        for i in items {
            println!("{}", i["ID"].as_str().unwrap_or_default());
        }
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

/// `stop` / `restart`.
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

/// `kill`.
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

/// `rm`.
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

/// `wait`.
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

/// `pause` / `unpause`.
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

/// `update`.
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

/// `diff`.
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

/// `export`.
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

/// `commit`.
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

/// `rename`.
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

/// `port`.
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

/// `container prune`.
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
    let before = berth_store::fsutil::du(&engine.root().join("snapshots"));
    crate::output::print_deleted("Containers", &engine.prune()?);
    let after = berth_store::fsutil::du(&engine.root().join("snapshots"));
    println!(
        "Total reclaimed space: {}",
        human_size(before.saturating_sub(after))
    );
    Ok(())
}

/// `cp`.
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

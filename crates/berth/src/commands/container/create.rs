//! `run`, `create` and `start`: docker's flags parsed into the engine's
//! create request (sizes, ulimits, env files, healthchecks, restart
//! policies), the image pulled when missing, `--cidfile`, and the attached
//! or detached start with docker's exit codes.

use super::*;

// Options shared by `run` and `create`.
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
    /// Add a host device (`/dev/x[:/dev/y][:rwm]`) or a CDI device
    /// (`vendor.com/class=name`).
    #[arg(long)]
    pub device: Vec<String>,
    /// GPU devices to add (`all`, a count, or `"device=0,1"`), through CDI.
    #[arg(long)]
    pub gpus: Option<String>,
    /// Set custom DNS servers.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Pull image before running (`always`, `missing`, `never`).
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Set platform if server is multi-platform capable (`linux/arm64`):
    /// what a pull selects, and what the local image must be.
    #[arg(long)]
    pub platform: Option<String>,
    /// Automatically remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// The image.
    pub image: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

// `run`.
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
pub(super) fn parse_restart(s: &str) -> anyhow::Result<RestartPolicy> {
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

/// `--cpus` as nano-CPUs, in docker's range: 0.01 up to the CPUs this
/// machine has.
fn nano_cpus(cpus: Option<f64>) -> anyhow::Result<i64> {
    let Some(c) = cpus else { return Ok(0) };
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !(0.01..=n as f64).contains(&c) {
        bail!("Range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available");
    }
    Ok((c * 1e9) as i64)
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
    let (host_devices, mut device_requests) = super::device_flags::devices(&a.device)?;
    if let Some(g) = &a.gpus {
        device_requests.push(super::device_flags::gpus(g)?);
    }
    Ok(CreateRequest {
        image: a.image.clone(),
        platform: a
            .platform
            .as_deref()
            .map(berth_types::Platform::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
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
            nano_cpus: nano_cpus(a.cpus)?,
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
            devices: host_devices,
            device_requests,
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
    platform: Option<&str>,
    config_dir: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let normalized = Reference::parse(image)
        .map(|r| r.with_default_tag().familiar())
        .unwrap_or(image.to_string());
    match crate::commands::distribution::ensure(&engine.store, config_dir, image, pull, platform) {
        Ok(true) => {}
        Ok(false) => return Err(exit_err(125, format!("No such image: {normalized}"))),
        Err(e) => return Err(exit_err(125, format!("{e:#}"))),
    }
    // docker's check: the image found must be of the platform asked for.
    let found = platform
        .map(berth_types::Platform::parse)
        .transpose()
        .map_err(|e| exit_err(125, e))?
        .map(|p| engine.store.resolve_platform(image, &p));
    if let (Some(want), Some(Ok(img))) = (platform, found) {
        let c = &img.config;
        let actual = match c.variant.as_deref() {
            Some(v) => format!("{}/{}/{v}", c.os, c.architecture),
            None => format!("{}/{}", c.os, c.architecture),
        };
        let w: Vec<&str> = want.split('/').collect();
        let a: Vec<&str> = actual.split('/').collect();
        let same =
            w.len() >= 2 && w[0] == a[0] && w[1] == a[1] && (w.len() < 3 || a.get(2) == w.get(2));
        if !same {
            return Err(exit_err(
                125,
                format!(
                    "image with reference {normalized} was found but does not match the specified platform: wanted {want}, actual: {actual}"
                ),
            ));
        }
    }
    Ok(())
}

pub(super) fn engine_err(e: EngineError) -> anyhow::Error {
    let code = e.run_exit_code();
    exit_err(code, e.to_string())
}

/// `create`.
pub fn create(
    engine: &Engine,
    a: CreateArgs,
    config_dir: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    ensure_image(engine, &a.image, &a.pull, a.platform.as_deref(), config_dir)?;
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
    ensure_image(
        engine,
        &a.c.image,
        &a.c.pull,
        a.c.platform.as_deref(),
        config_dir,
    )?;
    let req = request(&a.c).map_err(|e| exit_err(125, e.to_string()))?;
    if a.c.tty && !a.detach && !std::io::stdin().is_terminal() && a.c.interactive {
        return Err(exit_err(1, "the input device is not a TTY"));
    }
    let cid = CidFile::claim(a.c.cidfile.as_deref())?;
    let c = engine.create(&req).map_err(engine_err)?;
    berth_runtime::trace::mark("engine: container created (record, snapshot)");
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

// `start`.
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

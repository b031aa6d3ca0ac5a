//! What comes out of a container: `logs`, `attach`, `exec`, `top`, `stats`.

use super::*;

// `logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs (`all`).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show logs since timestamp or relative (`10m`).
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or relative.
    #[arg(long)]
    pub until: Option<String>,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show extra details provided to logs.
    #[arg(long)]
    pub details: bool,
    /// The container.
    pub container: String,
}

/// `logs`.
pub fn logs(engine: &Engine, a: LogsArgs) -> anyhow::Result<()> {
    let c = engine.find(&a.container)?;
    let path = engine.log_path(&c.id);
    let opts = berth_engine::logs::ReadOptions {
        tail: if a.tail == "all" {
            None
        } else {
            Some(a.tail.parse().context("invalid --tail")?)
        },
        since: a
            .since
            .as_deref()
            .map(|s| {
                berth_engine::logs::parse_since(s).with_context(|| format!("invalid --since {s}"))
            })
            .transpose()?,
        until: a
            .until
            .as_deref()
            .map(|s| {
                berth_engine::logs::parse_since(s).with_context(|| format!("invalid --until {s}"))
            })
            .transpose()?,
        timestamps: a.timestamps,
        details: a.details,
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let offset = berth_engine::logs::read(&path, &opts, &mut out, &mut err)?;
    if a.follow {
        let id = c.id.clone();
        let follow_opts = berth_engine::logs::ReadOptions { tail: None, ..opts };
        berth_engine::logs::follow(&path, offset, &follow_opts, &mut out, &mut err, &|| {
            engine
                .find(&id)
                .map(|c| {
                    !matches!(
                        c.state.status,
                        Status::Running | Status::Paused | Status::Restarting
                    )
                })
                .unwrap_or(true)
        })?;
    }
    Ok(())
}

// `attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach STDIN.
    #[arg(long)]
    pub no_stdin: bool,
    /// Proxy all received signals to the process (non-TTY mode only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub sig_proxy: bool,
    /// The container.
    pub container: String,
}

/// `attach`: the running container's output from now on, as its monitor
/// records it, until it stops; then its exit code, as docker's attach
/// exits. SIGINT, SIGTERM, SIGHUP and SIGQUIT go to the container (docker's
/// `--sig-proxy`, not for a terminal container). Our stdin goes to a
/// container made with `-i` through its monitor (`berth_engine::input`);
/// with a terminal, in raw mode, and docker's detach keys (ctrl-p ctrl-q)
/// leave the container running.
pub fn attach(engine: &Engine, a: AttachArgs) -> anyhow::Result<()> {
    let daemon = |e: EngineError| exit_err(1, e.to_string());
    let c = engine.find(&a.container).map_err(daemon)?;
    if !matches!(c.state.status, Status::Running | Status::Paused) {
        return Err(exit_err(
            1,
            "You cannot attach to a stopped container, start it first",
        ));
    }
    let path = engine.log_path(&c.id);
    let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if a.sig_proxy && !c.config.tty {
        // Blocked here, taken by a thread that sends each to the container.
        // SAFETY: sigset calls on a local set; the mask is this thread's,
        // inherited by the thread spawned below.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        };
        let (root, id) = (engine.root().to_path_buf(), c.id.clone());
        std::thread::spawn(move || {
            loop {
                let mut sig = 0;
                // SAFETY: sigwait on the set blocked above.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    return;
                }
                if let Ok(e) = Engine::open(&root) {
                    let _ = e.kill(&id, sig);
                }
            }
        });
    }
    let _raw = if c.config.open_stdin && !a.no_stdin {
        forward_input(engine, &c)
    } else {
        None
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let opts = berth_engine::logs::ReadOptions::default();
    let id = c.id.clone();
    berth_engine::logs::follow(&path, offset, &opts, &mut out, &mut err, &|| {
        engine
            .find(&id)
            .map(|c| {
                !matches!(
                    c.state.status,
                    Status::Running | Status::Paused | Status::Restarting
                )
            })
            .unwrap_or(true)
    })?;
    let code = engine.find(&id).map(|c| c.state.exit_code).unwrap_or(0);
    if code != 0 {
        return Err(exit_err(code, String::new()));
    }
    Ok(())
}

/// Copies our stdin to the container's input from a thread (a terminal in
/// raw mode for a tty container; the guard restores it).
fn forward_input(engine: &Engine, c: &berth_engine::Container) -> Option<RawGuard> {
    let mut sock = berth_engine::input::connect(&engine.dir(&c.id)).ok()?;
    let (mut input, guard) = terminal_input(c.config.tty);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut input, &mut sock);
    });
    Some(guard)
}

/// Our stdin for an attached container: with a tty and a terminal, raw
/// (until the guard drops) and watched for docker's detach keys.
pub(crate) fn terminal_input(tty: bool) -> (DetachKeys, RawGuard) {
    let raw = tty && std::io::stdin().is_terminal();
    // SAFETY: tcgetattr into a local; the copy restores the terminal on detach.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        (raw && libc::tcgetattr(0, &mut t) == 0).then_some(t)
    };
    let guard = RawGuard(raw.then(|| berth_runtime::wait::RawMode::enter(0)));
    (
        DetachKeys {
            saved,
            ctrl_p: false,
        },
        guard,
    )
}

/// Stdin, watched (on a raw terminal) for ctrl-p ctrl-q, docker's default
/// detach keys: they leave the container running and exit 0.
pub(crate) struct DetachKeys {
    saved: Option<libc::termios>,
    ctrl_p: bool,
}

impl std::io::Read for DetachKeys {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::io::stdin().read(buf)?;
        if let Some(t) = &self.saved {
            for b in &buf[..n] {
                if self.ctrl_p && *b == 0x11 {
                    // Written and exited past std's stdio locks, which the
                    // main thread may hold while it copies the output.
                    // SAFETY: the saved termios back, a write to fd 2, _exit.
                    unsafe {
                        libc::tcsetattr(0, libc::TCSANOW, t);
                        let m = b"\nread escape sequence\n";
                        libc::write(2, m.as_ptr().cast(), m.len());
                        libc::_exit(0)
                    };
                }
                self.ctrl_p = *b == 0x10;
            }
        }
        Ok(n)
    }
}

/// Keeps the terminal raw while attached.
pub(crate) struct RawGuard(#[allow(dead_code)] Option<berth_runtime::wait::RawMode>);

// `exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Detached mode: run command in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Set environment variables.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Keep STDIN open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Username or UID.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Give extended privileges to the command.
    #[arg(long)]
    pub privileged: bool,
    /// The container.
    pub container: String,
    /// The command.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

/// `exec`.
pub fn exec(engine: &Engine, a: ExecArgs) -> anyhow::Result<()> {
    let r = berth_engine::ops::ExecRequest {
        cmd: a.command,
        env: a.env,
        user: a.user,
        workdir: a.workdir,
        tty: a.tty,
        interactive: a.interactive,
        detach: a.detach,
        privileged: a.privileged,
    };
    let code = engine.exec(&a.container, &r).map_err(|e| match e {
        EngineError::NotFound(_) | EngineError::Conflict(_) => exit_err(1, e.to_string()),
        e => engine_err(e),
    })?;
    if code != 0 {
        return Err(exit_err(code, String::new()));
    }
    Ok(())
}

// `top`.
#[derive(Args, Debug)]
pub struct TopArgs {
    /// The container.
    pub container: String,
    /// `ps` options (`-o pid,comm`, `aux`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_options: Vec<String>,
}

/// `top`.
pub fn top(engine: &Engine, a: TopArgs) -> anyhow::Result<()> {
    let (titles, rows) = engine.top_with(&a.container, &a.ps_options)?;
    let mut t = Table::new(&titles.iter().map(String::as_str).collect::<Vec<_>>());
    for r in rows {
        t.row(r);
    }
    t.print()?;
    Ok(())
}

// `stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Disable streaming stats and only pull the first result.
    #[arg(long)]
    pub no_stream: bool,
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    pub all: bool,
    /// `table`, `json` or a Go template.
    #[arg(long)]
    pub format: Option<String>,
    /// Containers (default: all running).
    pub containers: Vec<String>,
}

/// `stats`.
pub fn stats(engine: &Engine, a: StatsArgs) -> anyhow::Result<()> {
    let format = Format::parse(a.format.as_deref())?;
    loop {
        let ids: Vec<String> = if a.containers.is_empty() {
            engine
                .containers()?
                .into_iter()
                .filter(|c| a.all || c.state.status == Status::Running)
                .map(|c| c.id)
                .collect()
        } else {
            a.containers.clone()
        };
        let first: Vec<(String, u64)> = ids
            .iter()
            .map(|q| {
                (
                    q.clone(),
                    engine.stats(q).map(|(_, s)| s.cpu_usage_ns).unwrap_or(0),
                )
            })
            .collect();
        let t0 = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let elapsed = t0.elapsed().as_nanos() as f64;
        let mut items = Vec::new();
        for (q, cpu0) in first {
            let (c, s) = engine.stats(&q)?;
            let cpu = (s.cpu_usage_ns.saturating_sub(cpu0)) as f64 / elapsed * 100.0;
            let limit = if s.memory_limit == 0 {
                total_memory()
            } else {
                s.memory_limit
            };
            let used = s.memory_usage.saturating_sub(s.memory_cache);
            let (rx, tx) = net_io(c.state.pid);
            items.push(json!({
                "Container": c.short_id(),
                "ID": c.short_id(),
                "Name": c.name,
                "CPUPerc": format!("{cpu:.2}%"),
                "MemUsage": format!("{} / {}", iec(used), iec(limit)),
                "MemPerc": format!("{:.2}%", used as f64 / limit.max(1) as f64 * 100.0),
                "NetIO": format!("{} / {}", human_size(rx), human_size(tx)),
                "BlockIO": format!("{} / {}", human_size(s.io_read_bytes), human_size(s.io_write_bytes)),
                "PIDs": s.pids_current.to_string(),
            }));
        }
        if !a.no_stream {
            // docker: each refresh clears the screen and draws from the top.
            print!("\x1b[2J\x1b[H");
        }
        print_items(&format, &items, |items| {
            let mut t = Table::new(&[
                "CONTAINER ID",
                "NAME",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "NET I/O",
                "BLOCK I/O",
                "PIDS",
            ]);
            for i in items {
                let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
                t.row(vec![
                    s("ID"),
                    s("Name"),
                    s("CPUPerc"),
                    s("MemUsage"),
                    s("MemPerc"),
                    s("NetIO"),
                    s("BlockIO"),
                    s("PIDs"),
                ]);
            }
            t
        })?;
        if a.no_stream {
            return Ok(());
        }
    }
}

/// Bytes received and sent by a container's interfaces (all but `lo`),
/// from `/proc/<pid>/net/dev` of its process (its network namespace).
pub(super) fn net_io(pid: i32) -> (u64, u64) {
    if pid <= 0 {
        return (0, 0);
    }
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/dev")) else {
        return (0, 0);
    };
    let mut rx = 0u64;
    let mut tx = 0u64;
    for l in text.lines().skip(2) {
        let Some((iface, rest)) = l.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        rx += f.first().copied().unwrap_or(0);
        tx += f.get(8).copied().unwrap_or(0);
    }
    (rx, tx)
}

pub(super) fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Binary units as docker's stats shows them (`1.5MiB`).
pub(super) fn iec(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", U[i]).replace(".000", "")
    }
}

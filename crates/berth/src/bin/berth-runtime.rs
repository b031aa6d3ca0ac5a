//! `berth-runtime`: runc's command line over the berth-runtime library, so
//! podman (`--runtime`), containerd (`--runc-binary`) and people who know runc can
//! use it. Errors go to stderr and, with `--log`, to the log file in runc's
//! format (`--log-format json` is what containerd and conmon read).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use berth_runtime::{CreateOptions, ExecOptions, Runtime, wait};
use clap::{Parser, Subcommand};
use oci_spec::runtime::Process;

/// An OCI runtime with runc's command line.
#[derive(Parser, Debug)]
#[command(name = "berth-runtime", version, disable_help_subcommand = true)]
struct Cli {
    /// Where container state lives.
    #[arg(long, global = true, default_value = "/run/berth-runtime")]
    root: PathBuf,
    /// Write errors (and debug messages) to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// `text` or `json`.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    /// Accepted for compatibility: debug logging.
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted: cgroupsPath in systemd's `slice:prefix:name` form is mapped to a
    /// cgroupfs path; systemd itself is not contacted.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility (`auto`, `true`, `false`; bare for `spec`).
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// Container id.
    id: String,
    /// The bundle directory.
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Unix socket that receives the terminal master.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Write the init's pid here.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    #[arg(long)]
    no_pivot: bool,
    /// Accepted for compatibility.
    #[arg(long)]
    no_new_keyring: bool,
    /// Pass this many extra descriptors (from 3) to the process.
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum Cmd {
    /// Create a container (its process waits for `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Create and start a container, and wait for it unless detached.
    Run {
        #[command(flatten)]
        c: CreateArgs,
        /// Do not wait for the container.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print the container's state as JSON.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal to the container.
    Kill {
        /// Container id.
        id: String,
        /// Signal name or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
        /// Signal every process in the container.
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a container.
    Delete {
        /// Container id.
        id: String,
        /// Kill it first if it runs.
        #[arg(short, long)]
        force: bool,
    },
    /// Run a new process in a running container.
    Exec {
        /// Container id.
        id: String,
        /// The command (when --process is not given).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
        /// A process.json.
        #[arg(short, long)]
        process: Option<PathBuf>,
        /// Allocate a terminal.
        #[arg(short, long)]
        tty: bool,
        /// Do not wait for the process.
        #[arg(short, long)]
        detach: bool,
        /// Unix socket that receives the terminal master.
        #[arg(long)]
        console_socket: Option<PathBuf>,
        /// Write the process's pid here.
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// Working directory.
        #[arg(long)]
        cwd: Option<String>,
        /// Environment variables.
        #[arg(short, long)]
        env: Vec<String>,
        /// uid[:gid].
        #[arg(short, long)]
        user: Option<String>,
        /// Extra groups.
        #[arg(short = 'g', long)]
        additional_gids: Vec<u32>,
        /// Set no_new_privs.
        #[arg(long)]
        no_new_privs: bool,
        /// Accepted for compatibility.
        #[arg(long)]
        preserve_fds: Option<u32>,
    },
    /// List the processes of a container.
    Ps {
        /// Container id.
        id: String,
        /// `table` or `json`.
        #[arg(short, long, default_value = "table")]
        format: String,
    },
    /// List containers.
    #[command(alias = "ls")]
    List {
        /// `table` or `json`.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// Only ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Freeze a container.
    Pause {
        /// Container id.
        id: String,
    },
    /// Thaw a container.
    Resume {
        /// Container id.
        id: String,
    },
    /// Update a container's resource limits (runc's flags; `-r -` reads
    /// the OCI resources JSON from stdin, as containerd sends it).
    Update {
        /// Container id.
        id: String,
        /// A file with the OCI `linux.resources` JSON (`-`: stdin).
        #[arg(short, long)]
        resources: Option<PathBuf>,
        /// Memory limit (`64m`).
        #[arg(long)]
        memory: Option<String>,
        /// Memory plus swap (`-1`: unlimited).
        #[arg(long, allow_hyphen_values = true)]
        memory_swap: Option<String>,
        /// Memory soft limit.
        #[arg(long)]
        memory_reservation: Option<String>,
        /// CPU shares.
        #[arg(long)]
        cpu_shares: Option<u64>,
        /// CFS period (µs).
        #[arg(long)]
        cpu_period: Option<u64>,
        /// CFS quota (µs; `-1`: none).
        #[arg(long, allow_hyphen_values = true)]
        cpu_quota: Option<i64>,
        /// CPUs to run on (`0-1`).
        #[arg(long)]
        cpuset_cpus: Option<String>,
        /// Memory nodes to use.
        #[arg(long)]
        cpuset_mems: Option<String>,
        /// Most processes (`-1`: unlimited).
        #[arg(long, allow_hyphen_values = true)]
        pids_limit: Option<i64>,
    },
    /// Container events; with --stats one stats event.
    Events {
        /// Container id.
        id: String,
        /// Print one stats event and exit.
        #[arg(long)]
        stats: bool,
        /// Interval between stats events (`5s`).
        #[arg(long, default_value = "5s")]
        interval: String,
    },
    /// Write a default config.json.
    Spec {
        /// Where to write it.
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// What this runtime supports, as JSON.
    Features,
    /// Checkpointing needs CRIU, which berth-runtime does not drive.
    Checkpoint {
        /// Container id.
        id: String,
    },
}

fn log_error(cli_log: &Option<PathBuf>, format: &str, msg: &str) {
    if let Some(p) = cli_log
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
    {
        let time = jiff::Timestamp::now().to_string();
        let line = if format == "json" {
            serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
        } else {
            format!("time=\"{time}\" level=error msg={msg:?}")
        };
        let _ = writeln!(f, "{line}");
    }
}

/// systemd's `slice:prefix:name` → a cgroupfs path under the slice.
fn map_systemd_path(spec_path: &Path) -> anyhow::Result<()> {
    let cfg = spec_path.join("config.json");
    let data = std::fs::read(&cfg).with_context(|| format!("read {}", cfg.display()))?;
    let mut v: serde_json::Value =
        serde_json::from_slice(&data).with_context(|| format!("parse {}", cfg.display()))?;
    if let Some(p) = v
        .pointer("/linux/cgroupsPath")
        .and_then(|p| p.as_str())
        .map(str::to_string)
    {
        let parts: Vec<&str> = p.split(':').collect();
        if parts.len() == 3 {
            let slice = if parts[0].is_empty() {
                "system.slice"
            } else {
                parts[0]
            };
            let mapped = format!("/{slice}/{}-{}.scope", parts[1], parts[2]);
            v["linux"]["cgroupsPath"] = serde_json::json!(mapped);
            std::fs::write(&cfg, serde_json::to_vec_pretty(&v)?)?;
        }
    }
    Ok(())
}

fn console_pair(tty: bool) -> anyhow::Result<(Option<OwnedFd>, Option<OwnedFd>)> {
    if !tty {
        return Ok((None, None));
    }
    let (a, b) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    Ok((Some(a), Some(b)))
}

/// Runs one runc command. Long on purpose: one arm per runc verb, each a
/// few lines of flag handling over the runtime library.
fn run(cli: Cli) -> anyhow::Result<i32> {
    let rt = Runtime::new(&cli.root);
    match cli.cmd {
        Cmd::Create(c) => {
            if cli.systemd_cgroup {
                map_systemd_path(&c.bundle)?;
            }
            rt.create(&c.id, &c.bundle, &opts(&c))?;
        }
        Cmd::Start { id } => rt.start(&id)?,
        Cmd::Run { c, detach, keep } => {
            if cli.systemd_cgroup {
                map_systemd_path(&c.bundle)?;
            }
            let spec = berth_runtime::spec::load(&c.bundle)?;
            let tty = spec
                .process()
                .as_ref()
                .and_then(|p| p.terminal())
                .unwrap_or(false)
                && c.console_socket.is_none();
            let (ours, theirs) = console_pair(tty)?;
            if !detach {
                wait::block_signals();
            }
            let pid = rt.create_with_console(&c.id, &c.bundle, &opts(&c), theirs)?;
            let master = match &ours {
                Some(s) => Some(berth_runtime::tty::recv_fd(s)?),
                None => None,
            };
            rt.start(&c.id)?;
            if detach {
                return Ok(0);
            }
            let code = wait::wait_forwarding(pid, master);
            if !keep {
                rt.delete(&c.id, true)?;
            }
            return Ok(code);
        }
        Cmd::State { id } => {
            let s = rt.state(&id)?;
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
        Cmd::Kill { id, signal, all } => {
            let sig = berth_runtime::parse_signal(&signal)
                .with_context(|| format!("invalid signal {signal:?}"))?;
            rt.kill(&id, sig, all)?;
        }
        Cmd::Delete { id, force } => rt.delete(&id, force)?,
        Cmd::Exec {
            id,
            command,
            process,
            tty,
            detach,
            console_socket,
            pid_file,
            cwd,
            env,
            user,
            additional_gids,
            no_new_privs,
            preserve_fds: _,
        } => {
            let p = exec_process(
                &rt,
                &id,
                ExecFlags {
                    command,
                    process: process.as_deref(),
                    tty,
                    cwd,
                    env,
                    user,
                    gids: additional_gids,
                    nnp: no_new_privs,
                },
            )?;
            let internal_tty = p.terminal() == Some(true) && console_socket.is_none();
            let (ours, theirs) = console_pair(internal_tty)?;
            if !detach {
                wait::block_signals();
            }
            let o = ExecOptions {
                console_socket: None,
                pid_file,
            };
            let theirs = match (&console_socket, theirs) {
                (Some(path), _) => Some(berth_runtime::tty::connect(path)?),
                (None, t) => t,
            };
            let r = rt.exec_with_console(&id, &p, &o, theirs)?;
            let master = match &ours {
                Some(s) => Some(berth_runtime::tty::recv_fd(s)?),
                None => None,
            };
            if detach {
                return Ok(0);
            }
            return Ok(wait::wait_forwarding(r.pid, master));
        }
        Cmd::Ps { id, format } => {
            let pids = rt.ps(&id)?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids)?);
            } else {
                println!("PID      CMD");
                for p in pids {
                    let cmd = berth_runtime::cmdline(p);
                    println!("{p:<8} {cmd}");
                }
            }
        }
        Cmd::List { format, quiet } => {
            let list = rt.list()?;
            if quiet {
                for c in &list {
                    println!("{}", c.id);
                }
            } else if format == "json" {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                let mut tw = tabwriter::TabWriter::new(std::io::stdout()).padding(1);
                writeln!(tw, "ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER")?;
                for c in &list {
                    writeln!(
                        tw,
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        c.id,
                        c.pid,
                        c.status.as_str(),
                        c.bundle.display(),
                        c.created,
                        c.owner
                    )?;
                }
                tw.flush()?;
            }
        }
        Cmd::Update {
            id,
            resources,
            memory,
            memory_swap,
            memory_reservation,
            cpu_shares,
            cpu_period,
            cpu_quota,
            cpuset_cpus,
            cpuset_mems,
            pids_limit,
        } => {
            let mut r: serde_json::Value = match &resources {
                Some(p) => {
                    let text = if p == Path::new("-") {
                        let mut t = String::new();
                        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)?;
                        t
                    } else {
                        std::fs::read_to_string(p)
                            .with_context(|| format!("read {}", p.display()))?
                    };
                    serde_json::from_str(&text)
                        .with_context(|| format!("parse resources {}", p.display()))?
                }
                None => serde_json::json!({}),
            };
            let size = |v: &str| -> anyhow::Result<i64> {
                if v == "-1" {
                    return Ok(-1);
                }
                berth_types::units::ram_in_bytes(v).map_err(anyhow::Error::msg)
            };
            if let Some(v) = &memory {
                r["memory"]["limit"] = size(v)?.into();
            }
            if let Some(v) = &memory_swap {
                r["memory"]["swap"] = size(v)?.into();
            }
            if let Some(v) = &memory_reservation {
                r["memory"]["reservation"] = size(v)?.into();
            }
            if let Some(v) = cpu_shares {
                r["cpu"]["shares"] = v.into();
            }
            if let Some(v) = cpu_period {
                r["cpu"]["period"] = v.into();
            }
            if let Some(v) = cpu_quota {
                r["cpu"]["quota"] = v.into();
            }
            if let Some(v) = &cpuset_cpus {
                r["cpu"]["cpus"] = v.clone().into();
            }
            if let Some(v) = &cpuset_mems {
                r["cpu"]["mems"] = v.clone().into();
            }
            if let Some(v) = pids_limit {
                r["pids"]["limit"] = v.into();
            }
            let res: oci_spec::runtime::LinuxResources =
                serde_json::from_value(r).context("resources")?;
            rt.update(&id, &res)?;
        }
        Cmd::Pause { id } => rt.pause(&id)?,
        Cmd::Resume { id } => rt.resume(&id)?,
        Cmd::Events {
            id,
            stats,
            interval,
        } => {
            let secs: u64 = interval.trim_end_matches('s').parse().unwrap_or(5);
            loop {
                let s = rt.stats(&id)?;
                let ev = serde_json::json!({
                    "type": "stats",
                    "id": id,
                    "data": {
                        "cpu": {"usage": {"total": s.cpu_usage_ns}},
                        "memory": {"usage": {"usage": s.memory_usage, "limit": s.memory_limit, "max": s.memory_max_usage}, "cache": s.memory_cache},
                        "pids": {"current": s.pids_current, "limit": s.pids_limit},
                        "blkio": {"read": s.io_read_bytes, "write": s.io_write_bytes},
                    }
                });
                println!("{ev}");
                if stats {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_secs(secs.max(1)));
                if rt.state(&id)?.status == berth_runtime::Status::Stopped {
                    break;
                }
            }
        }
        Cmd::Spec { bundle } => {
            let p = bundle.join("config.json");
            if p.exists() {
                bail!("File {} exists. Remove it first", p.display());
            }
            let mut spec = oci_spec::runtime::Spec::default();
            spec.set_hostname(Some("berth".into()));
            std::fs::write(&p, serde_json::to_vec_pretty(&spec)?)
                .with_context(|| format!("write {}", p.display()))?;
        }
        Cmd::Features => {
            let f = serde_json::json!({
                "ociVersionMin": "1.0.0",
                "ociVersionMax": "1.2.0",
                "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
                "mountOptions": ["ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync", "async", "remount", "bind", "rbind", "private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable", "noatime", "relatime", "strictatime"],
                "linux": {
                    "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
                    "capabilities": caps::all().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                    "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
                    "seccomp": {"enabled": true, "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"], "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"]},
                    "apparmor": {"enabled": true},
                    "selinux": {"enabled": true}
                },
                "annotations": {"io.github.berth.version": env!("CARGO_PKG_VERSION")}
            });
            println!("{}", serde_json::to_string_pretty(&f)?);
        }
        Cmd::Checkpoint { id } => {
            bail!("checkpoint {id}: not supported: berth-runtime does not drive CRIU")
        }
    }
    Ok(0)
}

fn opts(c: &CreateArgs) -> CreateOptions {
    CreateOptions {
        console_socket: c.console_socket.clone(),
        pid_file: c.pid_file.clone(),
        no_pivot: c.no_pivot,
        preserve_fds: c.preserve_fds,
        ..Default::default()
    }
}

/// `exec`'s flags that make its process (runc's names).
struct ExecFlags<'a> {
    command: Vec<String>,
    process: Option<&'a Path>,
    tty: bool,
    cwd: Option<String>,
    env: Vec<String>,
    user: Option<String>,
    gids: Vec<u32>,
    nnp: bool,
}

/// The process `exec` runs: `--process`'s document as given, or the
/// container's own process with the flags laid over it (as runc does).
fn exec_process(rt: &Runtime, id: &str, f: ExecFlags<'_>) -> anyhow::Result<Process> {
    let ExecFlags {
        command,
        process,
        tty,
        cwd,
        env,
        user,
        gids,
        nnp,
    } = f;
    if let Some(p) = process {
        let data = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
        return serde_json::from_slice(&data).with_context(|| format!("parse {}", p.display()));
    }
    if command.is_empty() {
        bail!("exec: a command or --process is required");
    }
    // Defaults come from the container's own process, as runc does it.
    let st = rt.state(id)?;
    let spec = berth_runtime::spec::load(&st.bundle)?;
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(command));
    p.set_terminal(Some(tty));
    if let Some(c) = cwd {
        p.set_cwd(PathBuf::from(c));
    }
    let mut e = p.env().clone().unwrap_or_default();
    for kv in env {
        let k = kv.split('=').next().unwrap_or("").to_string();
        e.retain(|x| x.split('=').next() != Some(k.as_str()));
        e.push(kv);
    }
    p.set_env(Some(e));
    if let Some(u) = user {
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a.parse()?, b.parse()?),
            None => (u.parse()?, 0),
        };
        let mut usr = p.user().clone();
        usr.set_uid(uid);
        usr.set_gid(gid);
        p.set_user(usr);
    }
    if !gids.is_empty() {
        let mut usr = p.user().clone();
        usr.set_additional_gids(Some(gids));
        p.set_user(usr);
    }
    if nnp {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

fn main() -> ExitCode {
    // SAFETY: restoring SIGPIPE's default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let log = cli.log.clone();
    let fmt = cli.log_format.clone();
    match run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            let msg = format!("{e:#}");
            log_error(&log, &fmt, &msg);
            eprintln!("berth-runtime: {msg}");
            ExitCode::FAILURE
        }
    }
}

//! Running containers (their records are made in `create.rs`): the launch
//! through the runtime library with the overlay mounted inside the
//! container, and the two ways of watching it — attached (this process
//! proxies stdio, logs it, forwards signals and waits) and detached (a
//! forked monitor does the same without a terminal, applies the restart
//! policy, and serves a `-i` container's input).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use berth_runtime::CreateOptions;
use berth_runtime::rootfs::RootfsMount;
use berth_runtime::wait::Stdio as Io;
use berth_types::Reference;

use crate::container::{self, Container, HostConfig, Status};
use crate::logs;
use crate::spec;
use crate::{Engine, EngineError, Result, now};

/// What `create` / `run` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// The image as the user wrote it.
    pub image: String,
    /// `--platform`: which platform of a multi-platform image (the host's,
    /// else the first the store has, when unset).
    pub platform: Option<berth_types::Platform>,
    /// `--name`.
    pub name: Option<String>,
    /// Arguments after the image (replace CMD).
    pub cmd: Vec<String>,
    /// `--entrypoint` (replaces ENTRYPOINT; an empty one clears it).
    pub entrypoint: Option<Vec<String>>,
    /// `-e` and `--env-file` entries, in order.
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `-h`.
    pub hostname: Option<String>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub interactive: bool,
    /// `-v`.
    pub volumes: Vec<String>,
    /// `--mount`.
    pub mounts: Vec<String>,
    /// `--tmpfs`.
    pub tmpfs: Vec<String>,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
    /// `--stop-signal`.
    pub stop_signal: Option<String>,
    /// `--stop-timeout`.
    pub stop_timeout: Option<i64>,
    /// Host settings.
    pub host: HostConfig,
    /// `--ip`.
    pub ip: Option<String>,
    /// `--network-alias`.
    pub network_aliases: Vec<String>,
    /// `--expose` (`80`, `53/udp`, `8000-8002`).
    pub expose: Vec<String>,
    /// `--health-*` / `--no-healthcheck` (laid over the image's HEALTHCHECK).
    pub healthcheck: Option<berth_types::image::HealthConfig>,
}

/// The first restart backoff (docker's).
pub const INITIAL_DELAY_MS: u64 = 100;

/// Where a container's exit code is written (by its monitor or watcher)
/// before anything else is done about the exit.
fn exit_file(dir: &Path) -> std::path::PathBuf {
    dir.join("exit")
}

/// The exit code a monitor recorded, if any.
pub fn read_exit_file(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(exit_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub(crate) fn write_file(p: &Path, data: &str) -> Result<()> {
    std::fs::write(p, data).map_err(|e| EngineError::io("write", p, e))
}

impl Engine {
    /// Writes config.json and creates + starts the container in the runtime;
    /// returns its pid. `stdio` are descriptors for the process's 0/1/2.
    fn launch(
        &self,
        c: &mut Container,
        stdio: Option<[i32; 3]>,
        console: Option<OwnedFd>,
    ) -> Result<i32> {
        let dir = self.dir(&c.id);
        let image_id: berth_types::Digest = c
            .image_id
            .parse()
            .map_err(|_| EngineError::Corrupt(format!("image id {}", c.image_id)))?;
        let image = self.store.resolve(&image_id.to_string())?;
        berth_runtime::trace::mark("engine: image resolved");
        let arch = image.config.architecture.as_str();
        if !arch.is_empty() {
            match crate::emulation::ensure(arch) {
                Ok(Some(said)) => eprintln!("berth: {said}"),
                Ok(None) => {}
                Err(e) => {
                    return Err(EngineError::Invalid(format!(
                        "image {} is for linux/{arch} and this machine is linux/{}: {e}",
                        c.config.image,
                        crate::emulation::host_arch()
                    )));
                }
            }
        }
        let top = image.top_chain();
        let read = |p: &str| {
            top.as_ref()
                .and_then(|t| self.store.snapshots.read_file(t, p))
        };
        let user = berth_types::user::resolve(
            &c.config.user,
            read("/etc/passwd").as_deref(),
            read("/etc/group").as_deref(),
        )
        .map_err(EngineError::Invalid)?;
        let join_netns = match c.host_config.network_mode.strip_prefix("container:") {
            Some(other) => {
                let o = self.find(other)?;
                if o.state.status != Status::Running || o.state.pid <= 0 {
                    return Err(EngineError::Conflict(format!(
                        "cannot join network of a non running container: {}",
                        o.short_id()
                    )));
                }
                Some(format!("/proc/{}/ns/net", o.state.pid))
            }
            // A rootless container's network namespace is made and wired
            // by pasta first; the container joins it.
            None if c.host_config.network_mode == crate::network::pasta::MODE => {
                Some(self.pasta_prepare(c, None, true)?.display().to_string())
            }
            None if crate::rootless::active() && !c.network_settings.networks.is_empty() => {
                Some(self.rootless_netns_prepare(c)?.display().to_string())
            }
            None => None,
        };
        berth_runtime::trace::mark("engine: user and network resolved");
        let made = self.create_prepared(c, &dir, &user, join_netns.as_deref(), stdio, console);
        berth_runtime::trace::mark("runtime: created (init ready)");
        let made_netns =
            join_netns.is_some() && !c.host_config.network_mode.starts_with("container:");
        if made.is_err() && made_netns {
            self.network_detach(c);
        }
        let pid = made?;
        // The network is ready before the process runs (runc's createRuntime
        // hook point): on failure the created container is torn down.
        if let Err(e) = self.network_attach(c, pid) {
            let _ = self.runtime.delete(&c.id, true);
            return Err(e);
        }
        berth_runtime::trace::mark("engine: network attached");
        if let Err(e) = self.runtime.start(&c.id) {
            self.network_detach(c);
            return Err(e.into());
        }
        berth_runtime::trace::mark("runtime: started");
        c.state.status = Status::Running;
        c.state.pid = pid;
        c.state.pid_start = berth_runtime::state::proc_stat(pid)
            .map(|(_, s)| s)
            .unwrap_or(0);
        c.state.started_at = now();
        c.state.finished_at = "0001-01-01T00:00:00Z".into();
        c.state.error.clear();
        // docker: a running container has no exit code yet.
        c.state.exit_code = 0;
        c.state.oom_killed = false;
        self.container_event(c, "start", &[]);
        Ok(pid)
    }

    /// Writes the container's spec (joining `join_netns` when set) and
    /// has the runtime create it; its init's pid.
    fn create_prepared(
        &self,
        c: &Container,
        dir: &std::path::Path,
        user: &berth_types::user::User,
        join_netns: Option<&str>,
        stdio: Option<[i32; 3]>,
        console: Option<OwnedFd>,
    ) -> Result<i32> {
        let s = spec::generate(&spec::Input {
            join_netns,
            c,
            user,
            rootfs: "rootfs",
            files: spec::Files {
                hosts: &dir.join("hosts").display().to_string(),
                hostname: &dir.join("hostname").display().to_string(),
                resolv: &dir.join("resolv.conf").display().to_string(),
            },
            cgroup_v2: berth_runtime::cgroup_layout() == berth_runtime::CgroupLayout::V2,
        })?;
        // Compact: read by the runtime, not by people (`inspect` shows the
        // container; `berth-runtime spec` writes an indented one to edit).
        write_file(
            &dir.join("config.json"),
            &serde_json::to_string(&s).expect("spec serialises"),
        )?;
        berth_runtime::trace::mark("engine: spec written");
        let rootfs_mounts = self
            .rootfs_mounts(&c.id, dir)?
            .into_iter()
            .map(|m| RootfsMount {
                typ: m.typ,
                source: m.source,
                options: m.options,
            })
            .collect();
        // A leftover runtime record from an earlier run of this container.
        let _ = self.runtime.delete(&c.id, true);
        let _ = std::fs::remove_file(exit_file(dir));
        let opts = CreateOptions {
            rootfs_mounts,
            reaper: c.host_config.init,
            stdio,
            ..Default::default()
        };
        Ok(self
            .runtime
            .create_with_console(&c.id, dir, &opts, console)?)
    }

    /// The container's root filesystem mounts for the runtime: a
    /// fuse-overlayfs snapshot is mounted first on `merged` in the
    /// container's directory (see [`berth_store::snapshot::runtime_mounts`];
    /// [`release_merged`] unmounts it when the container stops).
    fn rootfs_mounts(&self, id: &str, dir: &Path) -> Result<Vec<berth_store::snapshot::Mount>> {
        let mounts = self.store.snapshots.mounts(id)?;
        let merged = dir.join(MERGED);
        berth_store::snapshot::runtime_mounts(mounts, &merged)
            .map(|(m, _)| m)
            .map_err(|e| EngineError::io("mount", &merged, e))
    }

    /// Records an exit and releases the runtime record.
    fn record_exit(&self, c: &mut Container, code: i32) -> Result<()> {
        let oom = self.runtime.oom_killed(&c.id).unwrap_or(false);
        let _ = std::fs::write(exit_file(&self.dir(&c.id)), code.to_string());
        let _ = self.runtime.delete(&c.id, true);
        let _l = container::lock(&self.dir(&c.id))?;
        let mut fresh = container::load(&self.dir(&c.id))?;
        fresh.state.status = Status::Exited;
        fresh.state.exit_code = code;
        fresh.state.pid = 0;
        fresh.state.monitor_pid = 0;
        fresh.state.oom_killed = oom;
        fresh.state.finished_at = now();
        fresh.state.restart_count = c.state.restart_count;
        self.network_detach(&mut fresh);
        release_merged(&self.dir(&c.id));
        container::save(&self.dir(&c.id), &fresh)?;
        self.container_event(&fresh, "die", &[("exitCode", code.to_string())]);
        *c = fresh;
        Ok(())
    }

    fn save_state(&self, c: &Container) -> Result<()> {
        let _l = container::lock(&self.dir(&c.id))?;
        let mut fresh = container::load(&self.dir(&c.id))?;
        fresh.state = c.state.clone();
        fresh.network_settings = c.network_settings.clone();
        container::save(&self.dir(&c.id), &fresh)
    }

    /// Starts a container and stays attached: stdio proxied (and logged), signals
    /// forwarded. Returns the container's exit code.
    pub fn start_attached(&self, id: &str, stdin: bool) -> Result<i32> {
        let r = self.start_attached_inner(id, stdin);
        self.gone_is_not_found(id, r)
    }

    /// A start that failed because the container was removed meanwhile (a
    /// prune beside `run`, which docker has too) says so, as docker does,
    /// rather than naming whichever of its files went first.
    fn gone_is_not_found<T>(&self, q: &str, r: Result<T>) -> Result<T> {
        match r {
            Err(e) if !matches!(e, EngineError::NotFound(_)) && self.find(q).is_err() => {
                Err(EngineError::NotFound(q.to_string()))
            }
            r => r,
        }
    }

    fn start_attached_inner(&self, id: &str, stdin: bool) -> Result<i32> {
        let mut c = self.find(id)?;
        if c.state.status == Status::Running || c.state.status == Status::Paused {
            return Err(EngineError::Conflict(format!(
                "container {} is already running",
                c.short_id()
            )));
        }
        let log = open_logs(&self.log_path(&c.id));
        berth_runtime::wait::block_signals();
        let (pid, io) = if c.config.tty {
            let (ours, theirs) = socketpair()?;
            let pid = self.launch(&mut c, None, Some(theirs))?;
            let master = berth_runtime::tty::recv_fd(&ours)?;
            (pid, Io::Tty { master, stdin })
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let (in_r, in_w) = if stdin {
                let (r, w) = pipe()?;
                (Some(r), Some(w))
            } else {
                (None, None)
            };
            let devnull = std::fs::File::open("/dev/null")
                .map_err(|e| EngineError::io("open", Path::new("/dev/null"), e))?;
            let in_fd = in_r.as_ref().map_or(devnull.as_raw_fd(), |r| r.as_raw_fd());
            let pid = self.launch(
                &mut c,
                Some([in_fd, out_w.as_raw_fd(), err_w.as_raw_fd()]),
                None,
            )?;
            drop((out_w, err_w, in_r, devnull));
            (
                pid,
                Io::Pipes {
                    out: out_r,
                    err: err_r,
                    input: in_w,
                },
            )
        };
        self.save_state(&c)?;
        let prober = self.health_start(&c);
        let code = io_loop(pid, io, log, true, &mut || {});
        berth_runtime::trace::mark("engine: process exited, output drained");
        self.health_stop(&c, prober);
        // Removed meanwhile (an `rm -f` beside the run): the exit code is
        // still the run's answer, and --rm's removal is done.
        let dir = self.dir(&c.id);
        let gone = |r: Result<()>| match r {
            Err(_) if !dir.exists() => Ok(()),
            r => r,
        };
        if c.host_config.auto_remove {
            self.remember_exit(&c.id, code);
            gone(self.remove_exited(c, code))?;
            berth_runtime::trace::mark("engine: removed (--rm)");
        } else {
            gone(self.record_exit(&mut c, code))?;
            berth_runtime::trace::mark("engine: exit recorded, runtime state deleted");
        }
        Ok(code)
    }

    /// `run --rm`'s removal once the container's process has exited with
    /// `code`. Whatever anyone can see is done before this returns: the
    /// record is gone (its name free, `ps -a` without it), its network
    /// released, its writable layer out of the store (its image no longer
    /// in use), the `die` and `destroy` events written. The rest, which
    /// nobody sees (the runtime's record and cgroups, the files of the
    /// container and of its layer), is deleted by a child forked for it,
    /// so that the command's answer does not wait on the deletion; both are
    /// named for that child, and a prune finishes them if it dies first.
    /// Call only from a single-threaded process that exits soon after (the
    /// CLI, the API's attach helper): the child is reparented then.
    fn remove_exited(&self, mut c: Container, code: i32) -> Result<()> {
        let dir = self.dir(&c.id);
        // fuse-overlayfs serves the container's root from its directory
        // (rootless): unmounted before its layer goes.
        release_merged(&dir);
        let (go_r, go_w) = pipe()?;
        // SAFETY: fork from a single-threaded process; the child only
        // deletes files (see `finish_in_background`) and exits.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return self.remove(&c.id, true, false).map(drop);
        }
        if child == 0 {
            drop(go_w);
            self.finish_in_background(&c.id, go_r);
        }
        drop(go_r);
        let child = child as u32;
        // Claimed under its lock, as `rm` does (a concurrent rm or prune
        // finds no such container), named for the child that deletes it.
        let tomb = self
            .root()
            .join("containers")
            .join(berth_fs::unique_name_for(".removing-", child));
        {
            let _l = container::lock(&dir)?;
            std::fs::rename(&dir, &tomb).map_err(|e| EngineError::io("rename", &dir, e))?;
        }
        self.network_detach(&mut c);
        self.remove_anonymous_volumes(&c);
        let layer = match self.store.snapshots.detach_active(&c.id, child) {
            Ok(p) => Some(p),
            Err(berth_store::snapshot::SnapshotError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        self.container_event(&c, "die", &[("exitCode", code.to_string())]);
        self.container_event(&c, "destroy", &[]);
        // The child's go: what to delete, one path a line. Were this process
        // to die before, the child reads nothing and leaves both to a prune.
        let mut go = format!("{}\n", tomb.display());
        if let Some(l) = &layer {
            go.push_str(&format!("{}\n", l.display()));
        }
        let _ = std::io::Write::write_all(&mut std::fs::File::from(go_w), go.as_bytes());
        Ok(())
    }

    /// The child of [`Engine::remove_exited`]: off the terminal and every
    /// descriptor but `go` (a lock file's descriptor kept open here would
    /// keep the lock held), it waits for the paths to delete and deletes
    /// them with the runtime's record; it never returns.
    fn finish_in_background(&self, id: &str, go: OwnedFd) -> ! {
        // SAFETY: plain syscalls on this process's own descriptors.
        unsafe {
            libc::setsid();
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            let g = go.as_raw_fd() as libc::c_uint;
            libc::syscall(libc::SYS_close_range, 3, g - 1, 0);
            libc::syscall(libc::SYS_close_range, g + 1, libc::c_uint::MAX, 0);
        }
        let mut paths = String::new();
        let _ = std::io::Read::read_to_string(&mut std::fs::File::from(go), &mut paths);
        let mut lines = paths.lines();
        if let Some(tomb) = lines.next() {
            let _ = self.runtime.delete_moved(id, true, Path::new(tomb));
            if let Some(layer) = lines.next() {
                let _ = self.store.snapshots.purge(Path::new(layer));
            }
            let _ = std::fs::remove_dir_all(tomb);
        }
        // SAFETY: the child ends here, without running the parent's exit
        // handlers or flushing its buffers.
        unsafe { libc::_exit(0) }
    }

    /// Starts a container under a detached monitor; returns once it runs (or
    /// failed to start, with the error).
    pub fn start_detached(&self, id: &str) -> Result<()> {
        let r = self.start_detached_inner(id);
        self.gone_is_not_found(id, r)
    }

    fn start_detached_inner(&self, id: &str) -> Result<()> {
        let c = self.find(id)?;
        if c.state.status == Status::Running || c.state.status == Status::Paused {
            return Ok(()); // docker start of a running container is a no-op
        }
        let watched = self.watch_exe.is_some() && watchable(&c);
        let r = spawn_detached("monitor", |w| {
            if let Some(exe) = self.monitor_exe.as_ref().filter(|_| !watched) {
                // A monitor that stays: a fresh image, so that only what it
                // touches from here on stays resident. On failure, fall back
                // to monitoring from this fork. (One that becomes the
                // watcher once the container runs leaves this image then.)
                let _ = rustix::io::fcntl_setfd(&w, rustix::io::FdFlags::empty());
                let err = std::os::unix::process::CommandExt::exec(
                    std::process::Command::new(exe)
                        .arg("--root")
                        .arg(self.root())
                        .arg("__monitor")
                        .arg(&c.id)
                        .arg(w.as_raw_fd().to_string()),
                );
                let _ = err;
            }
            self.run_monitor(&c.id, w)
        })?;
        read_report(r, "the container's monitor")
    }

    /// The entry of a detached container's monitor, forked by the starting
    /// command or re-executed from [`Engine::monitor_exe`]: `ready` is the
    /// pipe the starting command waits on.
    pub fn run_monitor(&self, id: &str, ready: OwnedFd) -> i32 {
        // SAFETY: detach from the terminal: stdio to /dev/null.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        // Close-on-exec: no process the monitor starts (the container, a
        // health probe, pasta) may hold the start report open.
        let _ = rustix::io::fcntl_setfd(&ready, rustix::io::FdFlags::CLOEXEC);
        self.monitor(id, Some(std::fs::File::from(ready)), INITIAL_DELAY_MS)
    }

    /// The entry of a monitor that the watcher (see [`Engine::watch_exe`])
    /// executed again once the container exited with `code`: records the
    /// exit and applies the restart policy (`delay_ms`: the next backoff).
    pub fn resume_monitor(&self, id: &str, code: i32, delay_ms: u64) -> i32 {
        match self.after_exit(id, code, delay_ms) {
            Some(delay_ms) => self.monitor(id, None, delay_ms),
            None => 0,
        }
    }

    /// The monitor of a detached container: launches it with its output going
    /// to the log, waits, records the exit, restarts by policy. Reports the first
    /// start through `ready`. When nothing but the output and the exit needs
    /// watching (no health check, no `-i` input to serve), the waiting is
    /// handed to the small watcher program by exec, so what stays beside a
    /// running container is as small as conmon; it executes this berth again
    /// when the container exits ([`Engine::resume_monitor`]).
    fn monitor(&self, id: &str, mut ready: Option<std::fs::File>, mut delay_ms: u64) -> i32 {
        loop {
            let mut c = match self.find(id) {
                Ok(c) => c,
                Err(_) => return 1,
            };
            let log = open_logs(&self.log_path(&c.id));
            berth_runtime::wait::block_signals();
            let launched = self.launch_detached(&mut c);
            let (pid, io, input) = match launched {
                Ok(x) => x,
                Err(e) => {
                    if let Some(r) = ready.take() {
                        report_failure(r.into(), &e);
                    }
                    c.state.status = Status::Exited;
                    c.state.error = e.to_string();
                    c.state.exit_code = e.run_exit_code();
                    // As docker: a start that failed finished then (the
                    // STATUS column says "Exited (127) 5 seconds ago").
                    c.state.finished_at = now();
                    let _ = self.save_state(&c);
                    return 1;
                }
            };
            c.state.monitor_pid = std::process::id() as i32;
            let _ = self.save_state(&c);
            // Listening before the start is reported, so an `attach` right
            // after `run -di` reaches the input. Before any thread of ours
            // starts (the prober's): a fork.
            let server =
                input.and_then(|fd| crate::input::Server::spawn(&self.dir(&c.id), fd).ok());
            if let Some(mut r) = ready.take() {
                let _ = std::io::Write::write_all(&mut r, b"ok");
            }
            // Returns only when the watcher could not be executed (the
            // log's descriptors close at the exec: the watcher opens its own).
            let io = if watchable(&c) {
                self.exec_watcher(&c.id, pid, io, delay_ms)
            } else {
                io
            };
            // The monitor lives as long as the container: give back the heap
            // the launch used (image and store records, the spec, seccomp).
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim only returns free memory to the kernel.
            unsafe {
                libc::malloc_trim(0);
            }
            let prober = self.health_start(&c);
            let code = io_loop(pid, io, log, false, &mut || {});
            drop(server);
            self.health_stop(&c, prober);
            match self.after_exit(id, code, delay_ms) {
                Some(next) => delay_ms = next,
                None => return 0,
            }
        }
    }

    /// Hands a launched container's waiting to the watcher program (same
    /// process, so the container stays our child): its output descriptors
    /// open across the exec, and the command line that brings this berth
    /// back with the exit code. Returns the output only if the exec failed.
    fn exec_watcher(&self, id: &str, pid: i32, io: Io, delay_ms: u64) -> Io {
        let (Some(watcher), Some(berth)) = (&self.watch_exe, &self.monitor_exe) else {
            return io;
        };
        let mut cmd = std::process::Command::new(watcher);
        cmd.arg(pid.to_string())
            .arg(self.log_path(id))
            .arg(exit_file(&self.dir(id)));
        let fds: Vec<&OwnedFd> = match &io {
            Io::Tty { master, .. } => {
                cmd.arg("tty").arg(master.as_raw_fd().to_string());
                vec![master]
            }
            Io::Pipes { out, err, .. } => {
                cmd.arg("pipes")
                    .arg(out.as_raw_fd().to_string())
                    .arg(err.as_raw_fd().to_string());
                vec![out, err]
            }
            Io::Inherited => return io,
        };
        cmd.arg("--")
            .arg(berth)
            .arg("--root")
            .arg(self.root())
            .arg("__monitor")
            .arg(id)
            .arg("--delay")
            .arg(delay_ms.to_string())
            .arg("--exited");
        for fd in &fds {
            let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty());
        }
        let _ = std::os::unix::process::CommandExt::exec(&mut cmd);
        for fd in &fds {
            let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
        }
        io
    }

    /// What a monitor does once the container exited with `code`: records
    /// it, then either ends (removing an `--rm` container) or, when the
    /// restart policy wants another run, waits out docker's backoff
    /// (doubling from 100 ms, reset after 10 s of running) and returns the
    /// delay for the run after that.
    fn after_exit(&self, id: &str, code: i32, delay_ms: u64) -> Option<u64> {
        let mut c = self.find(id).ok()?;
        let ran_long = c
            .state
            .started_at
            .parse::<jiff::Timestamp>()
            .ok()
            .and_then(|t| jiff::Timestamp::now().since(t).ok())
            .and_then(|d| d.total(jiff::Unit::Second).ok())
            .is_some_and(|s| s >= 10.0);
        self.record_exit(&mut c, code).ok()?;
        if !restart_wanted(&c, code) {
            if c.host_config.auto_remove {
                self.remember_exit(&c.id, code);
                let _ = self.remove(&c.id, true, true);
            }
            return None;
        }
        let delay_ms = if ran_long { INITIAL_DELAY_MS } else { delay_ms };
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _l = container::lock(&self.dir(&c.id));
        let mut fresh = container::load(&self.dir(&c.id)).ok()?;
        if fresh.state.stopped_by_user {
            return None;
        }
        fresh.state.restart_count += 1;
        fresh.state.status = Status::Restarting;
        // Alive, so that nobody takes a restarting container with no
        // process for one whose monitor died (see `Engine::refresh`).
        fresh.state.monitor_pid = std::process::id() as i32;
        let _ = container::save(&self.dir(&c.id), &fresh);
        Some((delay_ms * 2).min(60_000))
    }

    /// The monitor's start of the container: its output to pipes the
    /// monitor logs (or a terminal's master), and for `-i` the input the
    /// input server will feed (a pipe, or the master again).
    fn launch_detached(&self, c: &mut Container) -> Result<(i32, Io, Option<OwnedFd>)> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        if c.config.tty {
            let (ours, theirs) = socketpair()?;
            let pid = self.launch(c, None, Some(theirs))?;
            let master = berth_runtime::tty::recv_fd(&ours)?;
            let input = c
                .config
                .open_stdin
                .then(|| master.try_clone().ok())
                .flatten();
            return Ok((
                pid,
                Io::Tty {
                    master,
                    stdin: false,
                },
                input,
            ));
        }
        // `-i`: a pipe the input server feeds; else our /dev/null.
        let (in_r, in_w) = if c.config.open_stdin {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        let in_fd = in_r.as_ref().map_or(0, |r| r.as_raw_fd());
        let pid = self.launch(c, Some([in_fd, out_w.as_raw_fd(), err_w.as_raw_fd()]), None)?;
        drop((out_w, err_w, in_r));
        Ok((
            pid,
            Io::Pipes {
                out: out_r,
                err: err_r,
                input: None,
            },
            in_w,
        ))
    }
}

/// Whether nothing but a container's output and exit needs watching while it
/// runs (no health check to probe, no `-i` input to serve), so that the
/// small watcher can do it.
fn watchable(c: &Container) -> bool {
    !c.config.open_stdin && !crate::health::active(c.config.healthcheck.as_ref())
}

/// Whether the restart policy starts the container again after it exited
/// with `code` (never after a stop the user asked for).
fn restart_wanted(c: &Container, code: i32) -> bool {
    let p = &c.host_config.restart_policy;
    !c.state.stopped_by_user
        && match p.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => {
                code != 0 && (p.max_retries == 0 || c.state.restart_count < p.max_retries)
            }
            _ => false,
        }
}

/// Runs `body` in a process of its own that outlives the caller: forked,
/// in a new session, forked again so init (or the nearest subreaper) adopts
/// it, and exiting with `body`'s code. `body` gets the write end of a pipe
/// whose read end is returned, for it to report back on. Call only from a
/// single-threaded process (the CLI or a monitor). `what` names it in errors.
pub(crate) fn spawn_detached(what: &str, body: impl FnOnce(OwnedFd) -> i32) -> Result<OwnedFd> {
    let (r, w) = pipe()?;
    // SAFETY: fork from a single-threaded process; the child only forks
    // again and runs `body`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(EngineError::io(
            "fork",
            Path::new(what),
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        drop(r);
        // SAFETY: setsid + second fork so it is not the caller's child.
        unsafe {
            libc::setsid();
            if libc::fork() != 0 {
                libc::_exit(0);
            }
        }
        let code = body(w);
        // SAFETY: the detached process ends here.
        unsafe { libc::_exit(code) }
    }
    drop(w);
    let mut st = 0;
    // SAFETY: reap the intermediate child.
    unsafe {
        libc::waitpid(pid, &mut st, 0);
    }
    Ok(r)
}

/// What a detached process tells the command that spawned it (see
/// [`spawn_detached`]) when it could not do its job: the error and its
/// exit code, which [`read_report`] turns back into the error.
pub(crate) fn report_failure(w: OwnedFd, e: &EngineError) {
    // For a missing or unrunnable program, its name (the error's words are
    // made again from it).
    let (kind, program) = match e {
        EngineError::Runtime(berth_runtime::RuntimeError::ExecNotFound(p)) => {
            ("notfound", p.clone())
        }
        EngineError::Runtime(berth_runtime::RuntimeError::ExecPermission(p)) => {
            ("permission", p.clone())
        }
        EngineError::Runtime(berth_runtime::RuntimeError::Cwd(p)) => ("cwd", p.clone()),
        _ => ("other", e.to_string()),
    };
    let msg = serde_json::json!({"code": e.run_exit_code(), "kind": kind, "msg": program});
    let _ = std::io::Write::write_all(&mut std::fs::File::from(w), msg.to_string().as_bytes());
}

/// Reads what a detached process reported: `ok`, or the error it sent
/// with [`report_failure`] (`who` names it when it said nothing).
pub(crate) fn read_report(r: OwnedFd, who: &str) -> Result<()> {
    let mut msg = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut msg)
        .map_err(|e| EngineError::io("read", Path::new(who), e))?;
    let msg = String::from_utf8_lossy(&msg);
    if msg.starts_with("ok") {
        return Ok(());
    }
    let e: serde_json::Value = serde_json::from_str(msg.trim())
        .unwrap_or(serde_json::json!({"code": 125, "msg": msg.trim()}));
    let text = e["msg"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{who} failed"));
    Err(match e["kind"].as_str() {
        Some("notfound") => EngineError::Runtime(berth_runtime::RuntimeError::ExecNotFound(text)),
        Some("permission") => {
            EngineError::Runtime(berth_runtime::RuntimeError::ExecPermission(text))
        }
        Some("cwd") => EngineError::Runtime(berth_runtime::RuntimeError::Cwd(text)),
        _ => EngineError::Invalid(text),
    })
}

/// A pipe (read, write), close-on-exec.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| EngineError::io("pipe", Path::new("stdio"), e.into()))
}

fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| EngineError::io("socketpair", Path::new("console"), e.into()))
}

/// The container's json-file log writers (stdout, stderr), opened before
/// its process starts: whoever follows the log once the start returned
/// finds the file there and every line in it.
fn open_logs(log_path: &Path) -> (Option<logs::Writer>, Option<logs::Writer>) {
    (
        logs::Writer::open(log_path, "stdout").ok(),
        logs::Writer::open(log_path, "stderr").ok(),
    )
}

/// The watcher's work (the `berth-monitor` program): waits for `pid`, a
/// child of this process, appending its output to the json-file log at
/// `log_path`, and returns its docker-style exit code. `settled` runs
/// once, just before the first wait.
pub fn watch(pid: i32, io: Io, log_path: &Path, settled: &mut dyn FnMut()) -> i32 {
    io_loop(pid, io, open_logs(log_path), false, settled)
}

/// Waits for the container, logging its output (and showing it when attached).
fn io_loop(
    pid: i32,
    io: Io,
    (mut out_log, mut err_log): (Option<logs::Writer>, Option<logs::Writer>),
    attached: bool,
    settled: &mut dyn FnMut(),
) -> i32 {
    let code = berth_runtime::wait::proxy_settled(
        pid,
        io,
        attached,
        &mut |is_err, data| {
            let l = if is_err { &mut err_log } else { &mut out_log };
            if let Some(l) = l {
                l.feed(data);
            }
        },
        settled,
    );
    for l in [&mut out_log, &mut err_log].into_iter().flatten() {
        l.flush_partial();
    }
    code
}

/// The network of containers that name none: `BERTH_DEFAULT_NETWORK` if
/// set (`none` keeps a test suite off the host's network), else `bridge`.
pub fn default_network() -> String {
    std::env::var("BERTH_DEFAULT_NETWORK")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| crate::network::DEFAULT.to_string())
}

/// Parses `IMAGE` for `run`: a missing tag means `latest`.
pub fn normalize_image(s: &str) -> Result<String> {
    Ok(Reference::parse(s)
        .map_err(|e| EngineError::Invalid(e.to_string()))?
        .with_default_tag()
        .to_string())
}

/// Where a container's fuse-overlayfs root is mounted, in its directory.
const MERGED: &str = "merged";

/// Unmounts a container directory's fuse-overlayfs root, if any (its server
/// exits with it).
pub(crate) fn release_merged(dir: &Path) {
    berth_store::snapshot::unmount_all(&dir.join(MERGED));
}

//! The other container verbs: stop, kill, restart, rm, wait, exec, pause,
//! unpause, rename, top, stats, diff, export, commit, prune, and docker's
//! inspect JSON.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use berth_store::archive::diff::{Change, WriteOptions, write_layer};
use berth_types::{Descriptor, History, ImageConfig, Reference, media_types};
use serde_json::{Value, json};

use crate::container::{self, Container, Status};
use crate::{Engine, EngineError, Result, now};

/// What `exec` runs.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ExecRequest {
    /// argv.
    pub cmd: Vec<String>,
    /// `-e`.
    pub env: Vec<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub interactive: bool,
    /// `-d`.
    pub detach: bool,
    /// `--privileged`.
    pub privileged: bool,
}

impl Engine {
    /// `kill`: a signal to the container's process.
    pub fn kill(&self, q: &str, signal: i32) -> Result<Container> {
        let c = self.find(q)?;
        if !matches!(
            c.state.status,
            Status::Running | Status::Paused | Status::Restarting
        ) {
            return Err(EngineError::Conflict(format!(
                "Cannot kill container: {}: container {} is not running",
                q, c.id
            )));
        }
        self.mark_stopped_by_user(&c.id)?;
        self.runtime.kill(&c.id, signal, false)?;
        self.container_event(&c, "kill", &[("signal", signal.to_string())]);
        if signal == libc::SIGKILL {
            // docker's kill of SIGKILL returns once the container is dead:
            // `kill x && rm x` and `kill x && start x` must work.
            return self.wait(&c.id);
        }
        if signal == libc::SIGKILL && c.state.status == Status::Paused {
            let _ = self.runtime.kill(&c.id, libc::SIGKILL, true);
        }
        Ok(c)
    }

    fn mark_stopped_by_user(&self, id: &str) -> Result<()> {
        let _l = container::lock(&self.dir(id))?;
        let mut c = container::load(&self.dir(id))?;
        c.state.stopped_by_user = true;
        container::save(&self.dir(id), &c)
    }

    /// `stop`: the stop signal, then SIGKILL after `timeout` seconds.
    pub fn stop(&self, q: &str, timeout: Option<i64>) -> Result<Container> {
        let c = self.find(q)?;
        if !matches!(
            c.state.status,
            Status::Running | Status::Paused | Status::Restarting
        ) {
            return Ok(c);
        }
        self.mark_stopped_by_user(&c.id)?;
        let sig = c
            .config
            .stop_signal
            .as_deref()
            .and_then(berth_runtime::parse_signal)
            .unwrap_or(libc::SIGTERM);
        let timeout = timeout.or(c.config.stop_timeout).unwrap_or(10);
        if c.state.status == Status::Paused {
            let _ = self.runtime.resume(&c.id);
        }
        let _ = self.runtime.kill(&c.id, sig, false);
        self.container_event(&c, "kill", &[("signal", sig.to_string())]);
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_secs(timeout.max(0) as u64);
        loop {
            let now_c = self.find(&c.id)?;
            if !matches!(
                now_c.state.status,
                Status::Running | Status::Paused | Status::Restarting
            ) {
                self.container_event(&now_c, "stop", &[]);
                return Ok(now_c);
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.runtime.kill(&c.id, libc::SIGKILL, true);
                let done = self.wait(&c.id)?;
                self.container_event(&done, "stop", &[]);
                return Ok(done);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `wait`: blocks until the container is not running; returns it.
    pub fn wait(&self, q: &str) -> Result<Container> {
        let id = self.find(q)?.id;
        loop {
            let c = self.find(&id)?;
            if !matches!(
                c.state.status,
                Status::Running | Status::Paused | Status::Restarting
            ) {
                return Ok(c);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `rm`: removes a stopped container (running ones with `force`).
    pub fn remove(&self, q: &str, force: bool, volumes: bool) -> Result<String> {
        let c = self.find(q)?;
        if matches!(
            c.state.status,
            Status::Running | Status::Paused | Status::Restarting
        ) {
            if !force {
                return Err(running_conflict(&c.name));
            }
            self.mark_stopped_by_user(&c.id)?;
            let _ = self.runtime.kill(&c.id, libc::SIGKILL, true);
            // dockerd's `rm -f` of a running container: kill, die, destroy.
            self.container_event(&c, "kill", &[("signal", libc::SIGKILL.to_string())]);
            match self.wait(&c.id) {
                // An --rm container: its monitor removed it once it died,
                // which is what was asked (docker's `rm -f` succeeds too).
                Err(EngineError::NotFound(_)) => return Ok(c.id),
                r => {
                    r?;
                }
            }
        }
        // Claim it under its lock: whoever renames the directory away removes
        // it; a concurrent rm, prune or start then finds no such container
        // instead of half a one.
        let dir = self.dir(&c.id);
        let gone = || EngineError::NotFound(q.to_string());
        // Named by this process (its pid), so a prune can tell an abandoned
        // claim from one in progress; the container's id is in its record.
        let tomb = self
            .root()
            .join("containers")
            .join(berth_store::fsutil::unique_name(".removing-"));
        {
            let _l = match container::lock(&dir) {
                Ok(l) => l,
                Err(_) if !dir.exists() => return Err(gone()),
                Err(e) => return Err(e),
            };
            // The record as it is now (`find` above already corrected a
            // crashed one; refresh would take this lock again).
            let now = container::load(&dir).map_err(|_| gone())?;
            if matches!(
                now.state.status,
                Status::Running | Status::Paused | Status::Restarting
            ) {
                // Started since it was looked at.
                return Err(running_conflict(&c.name));
            }
            std::fs::rename(&dir, &tomb).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => gone(),
                _ => EngineError::io("rename", &dir, e),
            })?;
        }
        self.finish_removal(c, &tomb, volumes)
    }

    /// The rest of a removal once the container's directory is `tomb`: its
    /// runtime record, snapshot, network endpoints (and anonymous volumes),
    /// then the directory.
    fn finish_removal(&self, c: Container, tomb: &Path, volumes: bool) -> Result<String> {
        let _ = self.runtime.delete(&c.id, true);
        match self.store.snapshots.remove_active(&c.id) {
            Ok(()) | Err(berth_store::snapshot::SnapshotError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if volumes {
            for m in &c.mounts {
                if m.typ == "volume" && m.name.len() == 64 {
                    let _ = self.volume_remove(&m.name, true);
                }
            }
        }
        let mut c = c;
        self.network_detach(&mut c);
        std::fs::remove_dir_all(tomb).map_err(|e| EngineError::io("remove", tomb, e))?;
        self.container_event(&c, "destroy", &[]);
        Ok(c.id)
    }

    /// Finishes removals whose `rm` died after claiming the container (its
    /// `.removing-<pid>-…` directory is left, and the pid is gone).
    fn finish_abandoned_removals(&self) {
        let dir = self.root().join("containers");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(".removing-") || berth_store::fsutil::owner_alive(&name) {
                continue;
            }
            match container::load(&e.path()) {
                Ok(c) => {
                    let _ = self.finish_removal(c, &e.path(), false);
                }
                Err(_) => {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// `pause`.
    pub fn pause(&self, q: &str) -> Result<()> {
        let c = self.find(q)?;
        if c.state.status != Status::Running {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        self.runtime.pause(&c.id)?;
        self.container_event(&c, "pause", &[]);
        Ok(())
    }

    /// `unpause`.
    pub fn unpause(&self, q: &str) -> Result<()> {
        let c = self.find(q)?;
        if c.state.status != Status::Paused {
            return Err(EngineError::Conflict(format!(
                "Container {} is not paused",
                c.id
            )));
        }
        self.runtime.resume(&c.id)?;
        self.container_event(&c, "unpause", &[]);
        Ok(())
    }

    /// `rename`.
    pub fn rename(&self, q: &str, new: &str) -> Result<()> {
        let c = self.find(q)?;
        let new = new.trim_start_matches('/');
        if !container::valid_name(new) {
            return Err(EngineError::Invalid(format!(
                "Invalid container name ({new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        let _names = container::lock(&self.root().join("containers"))?;
        if let Ok(other) = self.find(new)
            && other.name == new
        {
            return Err(EngineError::NameInUse {
                name: new.to_string(),
                id: other.id,
            });
        }
        let _l = container::lock(&self.dir(&c.id))?;
        let mut fresh = container::load(&self.dir(&c.id))?;
        fresh.name = new.to_string();
        container::save(&self.dir(&c.id), &fresh)?;
        self.container_event(&fresh, "rename", &[("oldName", format!("/{}", c.name))]);
        Ok(())
    }

    /// `top`: the container's processes as `ps -ef` columns.
    pub fn top(&self, q: &str) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        self.top_with(q, &[])
    }

    /// `top CONTAINER [ps OPTIONS]`: with options, the host's `ps` runs
    /// with them and its rows are kept for the container's processes (by
    /// the PID column), as dockerd does; without, docker's default columns.
    pub fn top_with(&self, q: &str, ps_args: &[String]) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        let c = self.find(q)?;
        if c.state.status != Status::Running && c.state.status != Status::Paused {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        let pids = self.runtime.ps(&c.id)?;
        if !ps_args.is_empty() {
            return ps_rows(ps_args, &pids);
        }
        let titles = vec!["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
            .into_iter()
            .map(String::from)
            .collect();
        let mut rows = Vec::new();
        for p in pids {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let rest = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim().to_string())
                .unwrap_or_default();
            let f: Vec<&str> = rest.split(' ').collect();
            let ppid = f.get(1).copied().unwrap_or("0").to_string();
            let ticks: u64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
                + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            let secs = ticks / 100;
            let uid = std::fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Uid:"))
                        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
                })
                .unwrap_or_default();
            let cmd = berth_runtime::cmdline(p);
            rows.push(vec![
                if uid == "0" { "root".into() } else { uid },
                p.to_string(),
                ppid,
                "0".into(),
                "-".into(),
                "?".into(),
                format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
                cmd,
            ]);
        }
        Ok((titles, rows))
    }

    /// `stats`: cgroup usage of a running container.
    pub fn stats(&self, q: &str) -> Result<(Container, berth_runtime::Stats)> {
        let c = self.find(q)?;
        let s = if matches!(c.state.status, Status::Running | Status::Paused) {
            self.runtime.stats(&c.id)?
        } else {
            Default::default()
        };
        Ok((c, s))
    }

    /// The process an exec runs: the container's own (its env, user,
    /// working directory, capabilities), with the request's changes.
    pub(crate) fn exec_process(
        &self,
        c: &Container,
        r: &ExecRequest,
    ) -> Result<oci_spec::runtime::Process> {
        let dir = self.dir(&c.id);
        let spec: Value = serde_json::from_slice(
            &std::fs::read(dir.join("config.json"))
                .map_err(|e| EngineError::io("read", &dir.join("config.json"), e))?,
        )
        .map_err(|e| EngineError::Corrupt(e.to_string()))?;
        let mut p = spec["process"].clone();
        p["args"] = json!(r.cmd);
        p["terminal"] = json!(r.tty);
        let mut env: Vec<String> = serde_json::from_value(p["env"].clone()).unwrap_or_default();
        if r.tty {
            crate::spec::env_set(&mut env, "TERM=xterm");
        }
        for e in &r.env {
            crate::spec::env_set(&mut env, e);
        }
        p["env"] = json!(env);
        if let Some(w) = &r.workdir {
            p["cwd"] = json!(w);
        }
        if let Some(u) = &r.user {
            let image = self.store.resolve(&c.image_id)?;
            let top = image.top_chain();
            let read = |f: &str| {
                top.as_ref()
                    .and_then(|t| self.store.snapshots.read_file(t, f))
            };
            let usr = berth_types::user::resolve(
                u,
                read("/etc/passwd").as_deref(),
                read("/etc/group").as_deref(),
            )
            .map_err(EngineError::Invalid)?;
            p["user"] =
                json!({"uid": usr.uid, "gid": usr.gid, "additionalGids": usr.additional_gids});
            if !env.iter().any(|e| e.starts_with("HOME=")) || r.user.is_some() {
                crate::spec::env_set(&mut env, &format!("HOME={}", usr.home));
                p["env"] = json!(env);
            }
        }
        if r.privileged {
            let all = berth_runtime::capabilities::available();
            p["capabilities"] = json!({"bounding": all, "effective": all, "permitted": all});
        }
        serde_json::from_value(p).map_err(|e| EngineError::Invalid(format!("exec process: {e}")))
    }

    /// `exec`: runs a process in a running container; returns its exit code
    /// (0 at once when detached).
    pub fn exec(&self, q: &str, r: &ExecRequest) -> Result<i32> {
        let c = self.find(q)?;
        if c.state.status == Status::Paused {
            return Err(EngineError::Conflict(format!(
                "Container {} is paused, unpause the container before exec",
                c.id
            )));
        }
        if c.state.status != Status::Running {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        let process = self.exec_process(&c, r)?;
        if r.detach {
            return self.exec_detached(&c.id, &process, r.tty);
        }
        berth_runtime::wait::block_signals();
        let (ours, theirs) = if r.tty {
            let (a, b) = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::STREAM,
                rustix::net::SocketFlags::CLOEXEC,
                None,
            )
            .map_err(|e| EngineError::io("socketpair", Path::new("console"), e.into()))?;
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        // Without -i the process gets no stdin, as docker gives it.
        let devnull = std::fs::File::open("/dev/null")
            .map_err(|e| EngineError::io("open", Path::new("/dev/null"), e))?;
        let saved_stdin = if !r.interactive && !r.tty {
            // SAFETY: swap our stdin for /dev/null around the fork, then restore.
            let saved = unsafe { libc::dup(0) };
            unsafe { libc::dup2(devnull.as_raw_fd(), 0) };
            Some(saved)
        } else {
            None
        };
        let res = self.runtime.exec_with_console(
            &c.id,
            &process,
            &berth_runtime::ExecOptions::default(),
            theirs,
        );
        if let Some(saved) = saved_stdin {
            // SAFETY: restoring our stdin.
            unsafe {
                libc::dup2(saved, 0);
                libc::close(saved);
            }
        }
        let res = res?;
        let io = match ours {
            Some(s) => berth_runtime::wait::Stdio::Tty {
                master: berth_runtime::tty::recv_fd(&s)?,
                stdin: r.interactive,
            },
            None => berth_runtime::wait::Stdio::Inherited,
        };
        Ok(berth_runtime::wait::proxy(
            res.pid,
            io,
            true,
            &mut |_, _| {},
        ))
    }

    /// `exec -d`: the process is started by a waiter of its own that stays
    /// to reap it, as docker's shim does, so a detached exec leaves no
    /// zombie whoever the host's init is. Its output goes nowhere (docker
    /// keeps none either). Returns once the process runs, or with the
    /// error that stopped it (exit code 126 or 127 as docker's).
    fn exec_detached(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        tty: bool,
    ) -> Result<i32> {
        let r = crate::run::spawn_detached("exec", |w| {
            // SAFETY: the waiter's stdio (which the process inherits) is /dev/null.
            unsafe {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                for fd in 0..3 {
                    libc::dup2(null, fd);
                }
                if null > 2 {
                    libc::close(null);
                }
            }
            let (ours, theirs) = if tty {
                match rustix::net::socketpair(
                    rustix::net::AddressFamily::UNIX,
                    rustix::net::SocketType::STREAM,
                    rustix::net::SocketFlags::CLOEXEC,
                    None,
                ) {
                    Ok((a, b)) => (Some(a), Some(b)),
                    Err(e) => {
                        let e = EngineError::io("socketpair", Path::new("console"), e.into());
                        crate::run::report_failure(w, &e);
                        return 1;
                    }
                }
            } else {
                (None, None)
            };
            let res = self.runtime.exec_with_console(
                id,
                process,
                &berth_runtime::ExecOptions::default(),
                theirs,
            );
            let res = match res {
                Ok(res) => res,
                Err(e) => {
                    crate::run::report_failure(w, &e.into());
                    return 1;
                }
            };
            // A terminal's output is read (and dropped) so the process
            // never blocks on a full one.
            let io = match ours.map(|s| berth_runtime::tty::recv_fd(&s)) {
                Some(Ok(master)) => berth_runtime::wait::Stdio::Tty {
                    master,
                    stdin: false,
                },
                _ => berth_runtime::wait::Stdio::Inherited,
            };
            let _ = rustix::io::write(&w, b"ok");
            drop(w);
            berth_runtime::wait::proxy(res.pid, io, false, &mut |_, _| {});
            0
        })?;
        crate::run::read_report(r, "the exec's waiter")?;
        Ok(0)
    }

    /// The container's changes as docker shows and commits them: without the
    /// mount points the runtime made where the image had none (docker keeps
    /// those in an init layer under the container's own).
    fn visible_changes(&self, id: &str) -> Result<Vec<Change>> {
        Ok(self
            .store
            .snapshots
            .changes_hiding(id, berth_runtime::defaults::MOUNT_POINTS)?)
    }

    /// `diff`: changes of the container's filesystem (`A`, `C`, `D` as docker prints them).
    pub fn diff(&self, q: &str) -> Result<Vec<(char, String)>> {
        let c = self.find(q)?;
        let image = self.store.resolve(&c.image_id)?;
        let top = image.top_chain();
        let mut out = Vec::new();
        for ch in self.visible_changes(&c.id)? {
            match ch {
                Change::Upsert(p) => {
                    let p = String::from_utf8_lossy(&p).into_owned();
                    let existed = top
                        .as_ref()
                        .is_some_and(|t| self.store.snapshots.find_below(t, &p).is_some());
                    out.push((if existed { 'C' } else { 'A' }, format!("/{p}")));
                }
                Change::Delete(p) => out.push(('D', format!("/{}", String::from_utf8_lossy(&p)))),
                Change::Opaque(_) => {}
            }
        }
        Ok(out)
    }

    /// `export`: the container's full filesystem as a tar stream.
    pub fn export(&self, q: &str, w: &mut dyn Write) -> Result<()> {
        let c = self.find(q)?;
        let image = self.store.resolve(&c.image_id)?;
        // Flatten: every layer, then the container's changes, applied in a temp dir.
        let tmp = tempdir_in(&self.root().join("containers"))?;
        let flat = tmp.join("fs");
        std::fs::create_dir_all(&flat).map_err(|e| EngineError::io("mkdir", &flat, e))?;
        for l in &image.manifest.layers {
            let r = self.store.content.open(&l.digest)?;
            let (_, plain) = berth_store::archive::decompress(r)
                .map_err(|e| EngineError::io("read", Path::new("layer"), e))?;
            berth_store::archive::apply::apply(&flat, plain, &Default::default())?;
        }
        let changes = self.store.snapshots.changes(&c.id)?;
        let layer = write_layer(
            &self.store.snapshots.upper_dir(&c.id),
            &changes,
            Vec::new(),
            &WriteOptions::default(),
        )?;
        berth_store::archive::apply::apply(&flat, &layer[..], &Default::default())?;
        let all = berth_store::archive::diff::changes_all(&flat)?;
        write_layer(&flat, &all, w, &WriteOptions::default())?;
        let _ = std::fs::remove_dir_all(&tmp);
        Ok(())
    }

    /// The image config a commit starts from: the image's, with the
    /// container's own run settings (env, cmd, entrypoint, workdir, user)
    /// in place of the image's, as docker commits them.
    pub fn commit_config(&self, q: &str) -> Result<ImageConfig> {
        let c = self.find(q)?;
        let image = self.store.resolve(&c.image_id)?;
        let mut cfg = image.config.clone();
        let cc = cfg.config_mut();
        cc.env = Some(c.config.env.clone());
        cc.cmd = c.config.cmd.clone();
        cc.entrypoint = c.config.entrypoint.clone();
        if !c.config.working_dir.is_empty() {
            cc.working_dir = Some(c.config.working_dir.clone());
        }
        if !c.config.user.is_empty() {
            cc.user = Some(c.config.user.clone());
        }
        Ok(cfg)
    }

    /// `commit`: the container's changes as a new layer on its image.
    pub fn commit(
        &self,
        q: &str,
        name: Option<&Reference>,
        message: &str,
        author: &str,
        changes: &[ImageConfig],
        pause: bool,
    ) -> Result<berth_store::image::Image> {
        let c = self.find(q)?;
        // docker pauses a running container while it commits, unless told not to.
        let paused = pause && c.state.status == Status::Running;
        if paused {
            let _ = self.runtime.pause(&c.id);
        }
        let result = (|| {
            let _w = self.store.write_lock()?;
            let image = self.store.resolve(&c.image_id)?;
            let ch = self.visible_changes(&c.id)?;
            let tar = write_layer(
                &self.store.snapshots.upper_dir(&c.id),
                &ch,
                Vec::new(),
                &WriteOptions::default(),
            )?;
            let diff_id = berth_types::Digest::sha256_of(&tar);
            let mut gz = berth_store::pgzip::ParGzEncoder::new(
                self.store.content.writer()?,
                berth_store::image::import::gzip_level(),
            )
            .map_err(|e| EngineError::io("compress", Path::new("layer"), e))?;
            gz.write_all(&tar)
                .map_err(|e| EngineError::io("compress", Path::new("layer"), e))?;
            let blob_w = gz
                .finish()
                .map_err(|e| EngineError::io("compress", Path::new("layer"), e))?;
            let size = blob_w.len();
            let blob = blob_w
                .commit(None, None)
                .map_err(berth_store::StoreError::from)?;
            // Keep the new layer unpacked too.
            let (_, plain) = berth_store::archive::decompress(&tar[..])
                .map_err(|e| EngineError::io("read", Path::new("layer"), e))?;
            let top = image.top_chain();
            let ex = self.store.snapshots.extract(top.as_ref(), plain)?;
            let chain = self.store.snapshots.commit_extracted(ex, Some(&diff_id))?;
            self.store.snapshots.vouch(&chain, &blob)?;
            let mut cfg = changes
                .last()
                .cloned()
                .unwrap_or_else(|| image.config.clone());
            cfg.created = Some(now());
            cfg.rootfs.diff_ids.push(diff_id);
            if !author.is_empty() {
                cfg.author = Some(author.to_string());
            }
            cfg.history.push(History {
                created: cfg.created.clone(),
                author: (!author.is_empty()).then(|| author.to_string()),
                created_by: Some(format!("{} {}", c.path, c.args.join(" "))),
                comment: (!message.is_empty()).then(|| message.to_string()),
                empty_layer: false,
            });
            let mut layers = image.manifest.layers.clone();
            layers.push(Descriptor::new(media_types::OCI_LAYER_GZIP, blob, size));
            Ok(self.store.put_image(&cfg, layers, name)?)
        })();
        if paused {
            let _ = self.runtime.resume(&c.id);
        }
        if let Ok(img) = &result {
            let mut extra = vec![("comment", message.to_string())];
            extra.push(("imageID", img.id.to_string()));
            if let Some(n) = name {
                extra.push(("imageRef", n.familiar()));
            }
            self.container_event(&c, "commit", &extra);
        }
        result
    }

    /// Keeps the exit code of an `--rm` container about to be removed, for
    /// a waiter that sees it only once it is gone (`wait --condition
    /// removed`, the Engine API's `run --rm`); kept a few minutes.
    pub fn remember_exit(&self, id: &str, code: i32) {
        let dir = self.root().join("containers");
        let _ = std::fs::write(dir.join(format!(".exit-{id}")), code.to_string());
        // Forget old ones.
        let now = std::time::SystemTime::now();
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(".exit-")
                && e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d.as_secs() > 300))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// The exit code an `--rm` container had, once it is gone.
    pub fn exit_of_removed(&self, id: &str) -> Option<i32> {
        let p = self.root().join("containers").join(format!(".exit-{id}"));
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    }

    /// `container prune`: removes every stopped container; returns their ids.
    /// One that was started or removed meanwhile is left to its new fate, as
    /// docker's prune does.
    pub fn prune(&self) -> Result<Vec<String>> {
        self.finish_abandoned_removals();
        let mut out = Vec::new();
        for c in self.containers()? {
            // A created container whose creator still runs is being started
            // (`run` between its create and start), and a `run --rm` whose
            // process still runs removes its container itself: neither is
            // prunable.
            if (c.state.status == Status::Created || c.host_config.auto_remove)
                && c.state.creator_alive()
            {
                continue;
            }
            if matches!(
                c.state.status,
                Status::Exited | Status::Created | Status::Dead
            ) {
                match self.remove(&c.id, false, false) {
                    Ok(id) => out.push(id),
                    Err(EngineError::NotFound(_) | EngineError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    /// docker's `ContainerJSON`.
    pub fn inspect_json(&self, c: &Container) -> Value {
        let mut state = serde_json::to_value(&c.state).unwrap_or(Value::Null);
        if let Some(o) = state.as_object_mut() {
            o.remove("PidStart");
            o.remove("MonitorPid");
            o.remove("StoppedByUser");
            o.remove("Creator");
            o.insert(
                "Running".into(),
                json!(matches!(c.state.status, Status::Running | Status::Paused)),
            );
            o.insert("Paused".into(), json!(c.state.status == Status::Paused));
            o.insert(
                "Restarting".into(),
                json!(c.state.status == Status::Restarting),
            );
            o.insert("Dead".into(), json!(c.state.status == Status::Dead));
            // dockerd: no Health before the first start.
            if let Some(h) = &c.state.health {
                o.insert("Health".into(), json!(h));
            }
        }
        let ns = &c.network_settings;
        let first = ns.primary().map(|(_, e)| e);
        let networks = if ns.networks.is_empty() {
            json!({c.host_config.network_mode.clone(): {}})
        } else {
            serde_json::to_value(&ns.networks).unwrap_or_default()
        };
        let mut host_config = serde_json::to_value(&c.host_config).unwrap_or_default();
        // The log driver every berth container has (SDKs read it).
        host_config["LogConfig"] = json!({"Type": "json-file", "Config": {}});
        let network_settings = json!({
            "Networks": networks,
            "Ports": ns.ports,
            "IPAddress": first.map(|e| e.ip_address.clone()).unwrap_or_default(),
            "IPPrefixLen": first.map(|e| e.ip_prefix_len).unwrap_or_default(),
            "Gateway": first.map(|e| e.gateway.clone()).unwrap_or_default(),
            "MacAddress": first.map(|e| e.mac_address.clone()).unwrap_or_default(),
        });
        json!({
            "Id": c.id,
            "Created": c.created,
            "Path": c.path,
            "Args": c.args,
            "State": state,
            "Image": c.image_id,
            "ResolvConfPath": self.dir(&c.id).join("resolv.conf"),
            "HostnamePath": self.dir(&c.id).join("hostname"),
            "HostsPath": self.dir(&c.id).join("hosts"),
            "LogPath": self.dir(&c.id).join(format!("{}-json.log", c.id)),
            "Name": format!("/{}", c.name),
            "RestartCount": c.state.restart_count,
            "Driver": self.store.snapshots.driver().name(),
            "Platform": "linux",
            "HostConfig": host_config,
            "Mounts": mounts_doc(c),
            "AppArmorProfile": "",
            "ExecIDs": null,
            "MountLabel": "",
            "ProcessLabel": "",
            "Config": c.config,
            "GraphDriver": {"Name": self.store.snapshots.driver().name(), "Data": {"UpperDir": self.store.snapshots.upper_dir(&c.id)}},
            "NetworkSettings": network_settings,
        })
    }
}

/// docker's `Mounts` of a container: its binds and volumes (not the
/// `--tmpfs` mounts, which docker lists only in `HostConfig.Tmpfs`), with
/// Mode, RW, Propagation and a volume's Driver, by destination.
fn mounts_doc(c: &Container) -> Value {
    let mut ms: Vec<&container::MountPoint> = c
        .mounts
        .iter()
        .filter(|m| !(m.typ == "tmpfs" && c.host_config.tmpfs.contains_key(&m.destination)))
        .collect();
    ms.sort_by(|a, b| a.destination.cmp(&b.destination));
    Value::Array(
        ms.into_iter()
            .map(|m| {
                let mode = m
                    .options
                    .iter()
                    .filter(|o| !o.starts_with("size=") && !o.starts_with("mode="))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",");
                match m.typ.as_str() {
                    "volume" => {
                        let anonymous = m.name.len() == 64
                            && m.name.bytes().all(|b| b.is_ascii_hexdigit());
                        json!({
                            "Type": "volume",
                            "Name": m.name,
                            "Source": m.source,
                            "Destination": m.destination,
                            "Driver": "local",
                            "Mode": if mode.is_empty() && !anonymous { "z".to_string() } else { mode },
                            "RW": m.rw,
                            "Propagation": "",
                        })
                    }
                    "bind" => json!({
                        "Type": "bind",
                        "Source": m.source,
                        "Destination": m.destination,
                        "Mode": if mode.is_empty() && !m.rw { "ro".to_string() } else { mode },
                        "RW": m.rw,
                        "Propagation": "rprivate",
                    }),
                    _ => json!({
                        "Type": m.typ,
                        "Source": m.source,
                        "Destination": m.destination,
                        "Mode": "",
                        "RW": m.rw,
                        "Propagation": "",
                    }),
                }
            })
            .collect(),
    )
}

fn tempdir_in(parent: &Path) -> Result<std::path::PathBuf> {
    let p = parent.join(format!(
        ".export-{}-{}",
        std::process::id(),
        container::new_id()
    ));
    std::fs::create_dir_all(&p).map_err(|e| EngineError::io("mkdir", &p, e))?;
    Ok(p)
}

/// A filesystem root to copy from or into: `/proc/<pid>/root` of a running
/// container, or its snapshot mounted in this process's private mount namespace.
struct CpRoot {
    path: std::path::PathBuf,
    mounted: bool,
}

impl CpRoot {
    /// The root as a libpathrs root (opened through /proc/<pid>/root's magic link).
    fn open(&self) -> Result<pathrs::Root> {
        let fd = rustix::fs::open(
            &self.path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| EngineError::io("open", &self.path, e.into()))?;
        Ok(pathrs::Root::from_fd(fd))
    }

    /// The root as a tree to read from, every path resolved inside it.
    fn tree(&self) -> Result<berth_store::inroot::InRoot> {
        berth_store::inroot::InRoot::open(&self.path)
            .map_err(|e| EngineError::io("open", &self.path, e))
    }
}

impl Drop for CpRoot {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

impl Engine {
    fn cp_root(&self, c: &Container) -> Result<CpRoot> {
        if matches!(c.state.status, Status::Running | Status::Paused) && c.state.pid > 0 {
            return Ok(CpRoot {
                path: format!("/proc/{}/root", c.state.pid).into(),
                mounted: false,
            });
        }
        // SAFETY: unshare and a propagation change in the single-threaded CLI.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
            {
                return Err(EngineError::io(
                    "unshare",
                    Path::new("mount namespace"),
                    std::io::Error::last_os_error(),
                ));
            }
        }
        let mnt = self.dir(&c.id).join(format!(".cp{}", std::process::id()));
        std::fs::create_dir_all(&mnt).map_err(|e| EngineError::io("mkdir", &mnt, e))?;
        let m = self.store.snapshots.mounts(&c.id)?;
        let m = m
            .first()
            .ok_or_else(|| EngineError::Corrupt("snapshot without mounts".into()))?;
        let opts = m.options.join(",");
        let (typ, flags, data) = if m.typ == "bind" {
            (None, libc::MS_BIND | libc::MS_REC, String::new())
        } else {
            (Some(m.typ.as_str()), 0, opts)
        };
        berth_runtime::rootfs::mount::sys_mount(
            Some(&m.source),
            &mnt.display().to_string(),
            typ,
            flags,
            Some(&data),
        )
        .map_err(|e| EngineError::io("mount", &mnt, e))?;
        Ok(CpRoot {
            path: mnt,
            mounted: true,
        })
    }

    /// A path of a container as a tar (its top entry named by the path's
    /// base name, as docker's archive endpoint gives it) and its stat.
    /// Everything is resolved inside the container's root (a symlink
    /// pointing out of it leads back inside, never to the host) and read
    /// through handles, so a running container that swaps a file for a link
    /// meanwhile cannot make us read a host file. The last component is
    /// followed only with `follow` (`cp -L`), as docker does.
    pub fn archive_get(&self, q: &str, src: &str, follow: bool) -> Result<(PathStat, Vec<u8>)> {
        self.archive_get_as(q, src, follow, None)
    }

    fn archive_get_as(
        &self,
        q: &str,
        src: &str,
        follow: bool,
        name: Option<&str>,
    ) -> Result<(PathStat, Vec<u8>)> {
        use berth_store::archive::diff::Mapped;
        let c = self.find(q)?;
        let root = self.cp_root(&c)?;
        let tree = std::sync::Arc::new(root.tree()?);
        let (real, stat) = path_stat(&tree, src, follow).map_err(|_| {
            EngineError::PathNotFound(format!("Could not find the file {src} in container {q}"))
        })?;
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| stat.name.clone());
        // An empty name: the directory's contents, without itself.
        let contents = name.is_empty() && stat.is_dir();
        let mut items = Vec::new();
        if !contents {
            items.push(Mapped::InRoot {
                root: tree.clone(),
                rel: real.as_bytes().to_vec(),
                name: name.as_bytes().to_vec(),
            });
        }
        if stat.is_dir() {
            let strip = if real.is_empty() { 0 } else { real.len() + 1 };
            tree.walk(&real, &mut |child, st| {
                let rest = &child[strip..];
                items.push(Mapped::InRoot {
                    root: tree.clone(),
                    rel: child.as_bytes().to_vec(),
                    name: if contents {
                        rest.as_bytes().to_vec()
                    } else {
                        format!("{name}/{rest}").into_bytes()
                    },
                });
                Ok(berth_store::inroot::is_dir(st))
            })
            .map_err(|e| EngineError::io("readdir", Path::new(src), e))?;
        }
        let tar = berth_store::archive::diff::write_mapped(
            &items,
            &Default::default(),
            Vec::new(),
            &WriteOptions::default(),
        )?;
        Ok((stat, tar))
    }

    /// The stat of a path of a container (docker's
    /// `X-Docker-Container-Path-Stat`).
    pub fn archive_stat(&self, q: &str, src: &str) -> Result<PathStat> {
        let c = self.find(q)?;
        let root = self.cp_root(&c)?;
        let tree = root.tree()?;
        path_stat(&tree, src, false).map(|(_, st)| st).map_err(|_| {
            EngineError::PathNotFound(format!("Could not find the file {src} in container {q}"))
        })
    }

    /// Extracts a tar into directory `dir` of a container (docker's
    /// `PUT /containers/{id}/archive`): resolved inside its root, nothing
    /// of another type replaced, `.wh.` names written as files.
    pub fn archive_put(&self, q: &str, dir: &str, tar: impl std::io::Read) -> Result<()> {
        let c = self.find(q)?;
        let root = self.cp_root(&c)?;
        let r = root.open()?;
        let h = r.resolve(dir).map_err(|_| {
            EngineError::PathNotFound(format!("Could not find the file {dir} in container {q}"))
        })?;
        let fd: std::os::fd::OwnedFd = h.into();
        let target = std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        if !target.is_dir() {
            return Err(EngineError::Invalid(format!(
                "extraction point is not a directory: {dir}"
            )));
        }
        berth_store::archive::apply::apply(&target, tar, &cp_apply_options())?;
        Ok(())
    }

    /// `cp CONTAINER:SRC DEST`: [`Engine::archive_get`] written onto the
    /// host, by docker's rules: into an existing directory the source keeps
    /// its name (`SRC/.` copies the directory's contents), a `DEST/` that
    /// does not exist is an error, and so is a missing parent. Nothing on
    /// the host is removed: a directory where a file would go (or the
    /// reverse) is docker's "cannot overwrite" error, and files named
    /// `.wh.*` are copied as files.
    pub fn cp_from(&self, q: &str, src: &str, dest: &Path, follow: bool) -> Result<()> {
        let contents = src.ends_with("/.") || src == ".";
        let base = Path::new(src)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        let dest_s = dest.to_string_lossy();
        let (out_dir, name) = if dest.is_dir() {
            (
                dest.to_path_buf(),
                if contents { String::new() } else { base },
            )
        } else {
            if dest_s.ends_with('/') {
                return Err(EngineError::Invalid(format!(
                    "destination directory {dest_s:?} must exist"
                )));
            }
            let parent = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            if !parent.is_dir() {
                return Err(EngineError::Invalid(format!(
                    "destination directory {:?} must exist",
                    parent.display().to_string()
                )));
            }
            (
                parent,
                dest.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or(base),
            )
        };
        let (stat, tar) =
            self.archive_get_as(q, src, follow, Some(&name))
                .map_err(|e| match e {
                    EngineError::PathNotFound(m) => EngineError::Invalid(m),
                    e => e,
                })?;
        if !name.is_empty() {
            let target = out_dir.join(&name);
            if let Ok(m) = std::fs::symlink_metadata(&target)
                && m.is_dir() != stat.is_dir()
            {
                return Err(EngineError::Invalid(if m.is_dir() {
                    format!(
                        "cannot overwrite directory {:?} with non-directory {src:?}",
                        target.display().to_string()
                    )
                } else {
                    format!(
                        "cannot overwrite non-directory {:?} with directory {src:?}",
                        target.display().to_string()
                    )
                }));
            }
        }
        berth_store::archive::apply::apply(&out_dir, &tar[..], &cp_apply_options())?;
        Ok(())
    }

    /// `cp SRC CONTAINER:DEST`, written inside the container's root, by
    /// docker's rules (see [`Engine::cp_from`]): the destination's parent
    /// must exist, `DEST/` must be an existing directory, a directory
    /// cannot replace a file.
    pub fn cp_into(&self, src: &Path, q: &str, dest: &str) -> Result<()> {
        let c = self.find(q)?;
        let md = std::fs::symlink_metadata(src).map_err(|e| EngineError::io("stat", src, e))?;
        let src_s = src.to_string_lossy();
        let contents = md.is_dir() && (src_s.ends_with("/.") || src_s == ".");
        let root = self.cp_root(&c)?;
        let r = root.open()?;
        let base = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "src".into());
        let existing_dir = r.resolve(dest).ok().map(|h| {
            let fd: std::os::fd::OwnedFd = h.into();
            std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map(|m| m.is_dir())
                .unwrap_or(false)
        });
        let not_found =
            |p: &str| EngineError::Invalid(format!("Could not find the file {p} in container {q}"));
        let (dir, name) = match existing_dir {
            Some(true) => (
                dest.to_string(),
                if contents { String::new() } else { base },
            ),
            Some(false) if md.is_dir() => {
                return Err(EngineError::Invalid(format!(
                    "cannot overwrite non-directory {dest:?} with directory {src_s:?}"
                )));
            }
            None if dest.ends_with('/') => {
                return Err(EngineError::Invalid(format!(
                    "destination directory {dest:?} must exist in container {q}"
                )));
            }
            _ => {
                let p = Path::new(dest);
                (
                    p.parent()
                        .map(|x| x.display().to_string())
                        .filter(|x| !x.is_empty())
                        .unwrap_or_else(|| "/".into()),
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or(base),
                )
            }
        };
        let h = r.resolve(&dir).map_err(|_| not_found(&dir))?;
        let fd: std::os::fd::OwnedFd = h.into();
        let target = std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        if !target.is_dir() {
            return Err(not_found(&dir));
        }
        let mut items = Vec::new();
        if name.is_empty() {
            collect_contents(src, &mut items)?;
        } else {
            items.push(berth_store::archive::diff::Mapped::Path {
                src: src.to_path_buf(),
                name: name.as_bytes().to_vec(),
            });
            if md.is_dir() {
                collect(src, &name, &mut items)?;
            }
        }
        let tar = berth_store::archive::diff::write_mapped(
            &items,
            &Default::default(),
            Vec::new(),
            &WriteOptions::default(),
        )?;
        berth_store::archive::apply::apply(&target, &tar[..], &cp_apply_options())?;
        Ok(())
    }
}

/// docker's `container.PathStat`: what `HEAD /containers/{id}/archive`
/// says of a path (mode in Go's `os.FileMode` bits).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PathStat {
    /// Base name.
    pub name: String,
    /// Size in bytes.
    pub size: i64,
    /// Permission bits with Go's type bits (dir 1<<31, symlink 1<<27…).
    pub mode: u32,
    /// RFC 3339 modification time.
    pub mtime: String,
    /// A symlink's target.
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

impl PathStat {
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & (1 << 31) != 0
    }
}

/// Resolves `src` in `tree` (its last component followed with `follow`)
/// and stats it.
fn path_stat(
    tree: &berth_store::inroot::InRoot,
    src: &str,
    follow: bool,
) -> std::io::Result<(String, PathStat)> {
    use berth_store::inroot;
    let real = if follow {
        tree.resolve(src)?
    } else {
        tree.resolve_parent(src)?
    };
    let st = tree.lstat(&real)?;
    let mut mode = st.st_mode & 0o777;
    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
    mode |= match ft {
        rustix::fs::FileType::Directory => 1 << 31,
        rustix::fs::FileType::Symlink => 1 << 27,
        rustix::fs::FileType::BlockDevice => 1 << 26,
        rustix::fs::FileType::CharacterDevice => (1 << 26) | (1 << 21),
        rustix::fs::FileType::Fifo => 1 << 25,
        rustix::fs::FileType::Socket => 1 << 24,
        _ => 0,
    };
    if st.st_mode & 0o4000 != 0 {
        mode |= 1 << 23;
    }
    if st.st_mode & 0o2000 != 0 {
        mode |= 1 << 22;
    }
    if st.st_mode & 0o1000 != 0 {
        mode |= 1 << 20;
    }
    let link_target = if inroot::is_symlink(&st) {
        tree.read_link(&real)
            .map(|t| t.display().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let name = Path::new(src.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into());
    let mtime = jiff::Timestamp::from_second(st.st_mtime)
        .map(|t| t.to_string())
        .unwrap_or_default();
    Ok((
        real,
        PathStat {
            name,
            size: st.st_size,
            mode,
            mtime,
            link_target,
        },
    ))
}

/// How `cp` writes: `.wh.` names are files, and nothing of another type
/// already there is replaced (docker refuses those copies).
fn cp_apply_options() -> berth_store::archive::apply::ApplyOptions {
    berth_store::archive::apply::ApplyOptions {
        whiteouts: berth_store::archive::apply::Whiteouts::Literal,
        keep_types: true,
        ..Default::default()
    }
}

/// The entries under `dir`, named relative to it (`cp DIR/. …`).
fn collect_contents(dir: &Path, out: &mut Vec<berth_store::archive::diff::Mapped>) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| EngineError::io("readdir", dir, e))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let name = n.to_string_lossy().into_owned();
        out.push(berth_store::archive::diff::Mapped::Path {
            src: p.clone(),
            name: name.as_bytes().to_vec(),
        });
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            collect(&p, &name, out)?;
        }
    }
    Ok(())
}

fn collect(
    dir: &Path,
    name: &str,
    out: &mut Vec<berth_store::archive::diff::Mapped>,
) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| EngineError::io("readdir", dir, e))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let child = format!("{name}/{}", n.to_string_lossy());
        out.push(berth_store::archive::diff::Mapped::Path {
            src: p.clone(),
            name: child.as_bytes().to_vec(),
        });
        if std::fs::symlink_metadata(&p)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            collect(&p, &child, out)?;
        }
    }
    Ok(())
}

/// Runs the host's `ps` with `args` and keeps the rows of `pids`: the
/// header's PID column finds them, and the last column keeps its spaces
/// (dockerd's parsePSOutput).
fn ps_rows(args: &[String], pids: &[i32]) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let out = std::process::Command::new("ps")
        .args(args)
        .output()
        .map_err(|e| EngineError::Invalid(format!("Error running ps: {e}")))?;
    if !out.status.success() {
        return Err(EngineError::Invalid(format!(
            "Error running ps: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pid_col = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| EngineError::Invalid("Couldn't find PID field in ps output".into()))?;
    let mut rows = Vec::new();
    for l in lines {
        let fields: Vec<&str> = l.split_whitespace().collect();
        if fields.len() < titles.len() {
            continue;
        }
        let Ok(pid) = fields[pid_col].parse::<i32>() else {
            continue;
        };
        if !pids.contains(&pid) {
            continue;
        }
        let mut row: Vec<String> = fields[..titles.len() - 1]
            .iter()
            .map(|f| f.to_string())
            .collect();
        row.push(fields[titles.len() - 1..].join(" "));
        rows.push(row);
    }
    Ok((titles, rows))
}

/// docker's refusal to remove a running container without `--force`.
fn running_conflict(name: &str) -> EngineError {
    EngineError::Conflict(format!(
        "cannot remove container \"/{name}\": container is running: stop the container before removing or force remove"
    ))
}

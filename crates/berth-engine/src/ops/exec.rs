//! `exec`: a process in a running container, attached, with a terminal,
//! or detached under a waiter that reaps it.

use super::*;

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
    pub(crate) fn exec_detached(
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
}

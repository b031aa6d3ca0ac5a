//! `exec`: a new process in a running container: into its cgroup, through its
//! namespaces (a second fork enters its pid namespace), with the container's
//! seccomp profile unless the process brings its own settings.

use std::path::PathBuf;

use oci_spec::runtime::Process;

use super::Runtime;
use crate::error::{Result, RuntimeError, SysContext};
use crate::process::channel::{self, ToChild, ToParent};
use crate::process::init::exec_child;
use crate::process::{Forked, clone_process};

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Unix socket to send the terminal master to.
    pub console_socket: Option<PathBuf>,
    /// Where to write the process's pid.
    pub pid_file: Option<PathBuf>,
}

/// A started exec'd process.
#[derive(Debug, Clone, Copy)]
pub struct ExecResult {
    /// Its host pid (a child of the caller, which is made a subreaper).
    pub pid: i32,
}

impl Runtime {
    /// Starts `process` in container `id`.
    pub fn exec(&self, id: &str, process: &Process, opts: &ExecOptions) -> Result<ExecResult> {
        let console = match &opts.console_socket {
            Some(p) => Some(crate::tty::connect(p)?),
            None => None,
        };
        self.exec_with_console(id, process, opts, console)
    }

    /// [`Runtime::exec`] with an already connected console socket.
    pub fn exec_with_console(
        &self,
        id: &str,
        process: &Process,
        opts: &ExecOptions,
        console: Option<std::os::fd::OwnedFd>,
    ) -> Result<ExecResult> {
        let st = self.load(id)?;
        if !self.status(&st).can_exec() {
            return Err(RuntimeError::State(
                "cannot exec in a stopped container".into(),
            ));
        }
        let spec = crate::spec::load(&st.bundle)?;
        let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        let cg = if st.cgroup_path.is_empty() {
            None
        } else {
            Some(self.cgroup(&st)?)
        };
        let (parent, child) = channel::pair()?;
        // The exec'd process is a grandchild: become its reaper.
        // SAFETY: prctl with constant arguments.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        let mid = match clone_process(0).sys("fork", format!("exec in {id}"))? {
            Forked::Child => {
                drop(parent);
                exec_child(st.pid, process, seccomp.as_ref(), console, child);
            }
            Forked::Parent(p) => p,
        };
        drop(child);
        drop(console);
        let reap_mid = || {
            // SAFETY: waitpid on our child.
            unsafe {
                libc::waitpid(mid, std::ptr::null_mut(), 0);
            }
        };
        if let Some(Err(e)) = cg.as_ref().map(|cg| cg.add_pid(mid)) {
            // SAFETY: kill our child.
            unsafe {
                libc::kill(mid, libc::SIGKILL);
            }
            reap_mid();
            return Err(e.into());
        }
        let mut pid = None;
        let r = self.exec_handshake(id, &spec, &st, &parent, &mut pid, &reap_mid);
        if let Err(e) = r {
            // Whatever was started is killed and reaped: an exec that failed
            // leaves no zombie in the container's pid namespace (its init
            // could not finish exiting while one is there).
            match pid {
                // SAFETY: our child (we are its subreaper and reaped `mid`).
                Some(p) => unsafe {
                    libc::kill(p, libc::SIGKILL);
                    libc::waitpid(p, std::ptr::null_mut(), 0);
                },
                // SAFETY: our child.
                None => unsafe {
                    libc::kill(mid, libc::SIGKILL);
                    libc::waitpid(mid, std::ptr::null_mut(), 0);
                },
            }
            return Err(e);
        }
        let pid = pid.ok_or_else(|| RuntimeError::Init("exec: no pid reported".into()))?;
        if let Some(pf) = &opts.pid_file {
            super::create::write_pid_file(pf, pid)?;
        }
        Ok(ExecResult { pid })
    }

    /// The exec's messages: the pid (from the intermediate process, which
    /// is then reaped), the seccomp listener if any, and Ready.
    fn exec_handshake(
        &self,
        id: &str,
        spec: &oci_spec::runtime::Spec,
        st: &crate::state::ContainerState,
        parent: &channel::Channel,
        pid: &mut Option<i32>,
        reap_mid: &dyn Fn(),
    ) -> Result<()> {
        parent.send(&ToChild::Go)?;
        // The intermediate process reports the pid and the process reports
        // Ready on one channel, from two processes: Ready may come first (a
        // process that runs at once), so both are awaited.
        let mut ready = false;
        loop {
            let (msg, fd) = match parent.recv_with_fd::<ToParent>()? {
                Some((m, fd)) => (Some(m), fd),
                None => (None, None),
            };
            match msg {
                Some(ToParent::Pid(p)) => {
                    reap_mid();
                    *pid = Some(p);
                    if ready {
                        break;
                    }
                }
                Some(ToParent::SeccompListener) => {
                    let state = super::create::hook_state(spec, id, "running", st.pid, &st.bundle);
                    super::create::hand_to_agent(spec, fd, pid.unwrap_or(st.pid), &state)?;
                    parent.send(&ToChild::SeccompDone)?;
                }
                Some(ToParent::Ready) => {
                    ready = true;
                    if pid.is_some() {
                        break;
                    }
                }
                Some(ToParent::Error(e)) => return Err(e.into()),
                Some(other) => {
                    return Err(RuntimeError::Init(format!(
                        "unexpected message from exec: {other:?}"
                    )));
                }
                None => {
                    return Err(RuntimeError::Init(
                        "the exec'd process exited before it was ready".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

//! `start`: releases the init parked on the exec fifo, then runs poststart hooks.

use rustix::event::{PollFd, PollFlags, poll};
use rustix::fs::{Mode, OFlags};

use super::Runtime;
use crate::error::{Result, RuntimeError, SysContext};
use crate::state::Status;

impl Runtime {
    /// Starts a created container.
    pub fn start(&self, id: &str) -> Result<()> {
        let _lock = self.lock(id)?;
        let mut st = self.load(id)?;
        match self.status(&st) {
            Status::Created => {}
            Status::Stopped => {
                return Err(RuntimeError::State(
                    "cannot start a container that has stopped".into(),
                ));
            }
            _ => {
                return Err(RuntimeError::State(
                    "cannot start an already running container".into(),
                ));
            }
        }
        let fifo = self.dir(id).join("exec.fifo");
        let f = rustix::fs::open(
            &fifo,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .sys("open", fifo.display())?;
        // Wait for init's byte, noticing if init dies instead.
        loop {
            let mut fds = [PollFd::new(&f, PollFlags::IN)];
            let timeout = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            match poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e).sys("poll", fifo.display()),
            }
            let mut b = [0u8; 1];
            match rustix::io::read(&f, &mut b) {
                Ok(1) => break,
                Ok(_) | Err(rustix::io::Errno::AGAIN) => {
                    if !st.alive() {
                        return Err(RuntimeError::State(
                            "cannot start: the container's init exited".into(),
                        ));
                    }
                }
                Err(e) => return Err(e).sys("read", fifo.display()),
            }
        }
        std::fs::remove_file(&fifo).sys("remove", fifo.display())?;
        st.started = true;
        st.save(&self.dir(id))?;
        crate::hooks::run_late(
            "poststart",
            oci_spec::runtime::Hooks::poststart,
            &st.bundle,
            id,
            "running",
            st.pid,
        );
        Ok(())
    }
}

//! Waiting on a container process from the foreground, as `runc run` and
//! `berth run` do: signals the caller receives are forwarded to the process, a
//! terminal is proxied between the caller's tty (put in raw mode) and the
//! container's pty master with window-size changes passed on, and the exit
//! status comes back docker-style (`128 + signal` when killed).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::event::{PollFd, PollFlags, poll};

/// Signals forwarded to the container process.
const FORWARDED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
];

/// Blocks the forwarded signals and SIGCHLD in this process (call before
/// forking the container so none is lost; children unblock before exec).
pub fn block_signals() {
    // SAFETY: sigprocmask with a set built from constants.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
            libc::sigaddset(&mut set, *s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// docker's exit code for a wait status.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

struct RawMode {
    fd: i32,
    saved: Option<libc::termios>,
}

impl RawMode {
    fn enter(fd: i32) -> RawMode {
        // SAFETY: termios calls on a descriptor we were given.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::isatty(fd) == 0 || libc::tcgetattr(fd, &mut t) != 0 {
                return RawMode { fd, saved: None };
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
            RawMode {
                fd,
                saved: Some(saved),
            }
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = self.saved {
            // SAFETY: restoring the saved termios.
            unsafe {
                libc::tcsetattr(self.fd, libc::TCSANOW, &t);
            }
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => continue,
            Err(_) => return false,
        }
    }
    true
}

/// Waits for `pid` (a child of this process), forwarding signals and proxying
/// `master` when given; returns the docker-style exit code. Signals must have
/// been blocked with [`block_signals`] before `pid` was created.
pub fn wait_forwarding(pid: i32, master: Option<OwnedFd>) -> i32 {
    // SAFETY: signalfd over the signals block_signals blocked.
    let sfd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
            libc::sigaddset(&mut set, *s);
        }
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC)
    };
    // SAFETY: signalfd returned a new descriptor (or -1, checked below).
    let sfd: Option<OwnedFd> =
        (sfd >= 0).then(|| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sfd) });
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let stdout = unsafe { BorrowedFd::borrow_raw(1) };
    let _raw = master.as_ref().map(|_| RawMode::enter(0));
    if let Some(m) = &master {
        crate::tty::copy_winsize(stdin, m);
    }
    let mut stdin_open = master.is_some();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // Reap first: the exit may already have happened.
        let mut st = 0;
        // SAFETY: waitpid on our child without blocking.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            // Drain what the terminal still holds.
            if let Some(m) = &master {
                while let Ok(n) = rustix::io::read(m, &mut buf) {
                    if n == 0 || !write_all(stdout, &buf[..n]) {
                        break;
                    }
                }
            }
            return exit_code(st);
        }
        if r < 0 {
            return 255;
        }
        let mut fds: Vec<PollFd> = Vec::new();
        if let Some(s) = &sfd {
            fds.push(PollFd::new(s, PollFlags::IN));
        }
        if let Some(m) = &master {
            fds.push(PollFd::new(m, PollFlags::IN));
            if stdin_open {
                fds.push(PollFd::new(&stdin, PollFlags::IN));
            }
        }
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        let _ = poll(&mut fds, Some(&timeout));
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        let mut i = 0;
        if let Some(s) = &sfd {
            if ready[i] {
                let mut info = [0u8; 128];
                if let Ok(n) = rustix::io::read(s, &mut info)
                    && n >= 4
                {
                    let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32;
                    if signo == libc::SIGWINCH {
                        if let Some(m) = &master {
                            crate::tty::copy_winsize(stdin, m);
                        }
                    } else if signo != libc::SIGCHLD {
                        // SAFETY: forwarding a signal to our container process.
                        unsafe {
                            libc::kill(pid, signo);
                        }
                    }
                }
            }
            i += 1;
        }
        if let Some(m) = &master {
            if ready[i] {
                match rustix::io::read(m, &mut buf) {
                    Ok(n) if n > 0 => {
                        write_all(stdout, &buf[..n]);
                    }
                    _ => {}
                }
            }
            i += 1;
            if stdin_open && ready.get(i).copied().unwrap_or(false) {
                match rustix::io::read(stdin, &mut buf) {
                    Ok(n) if n > 0 => {
                        write_all(m.as_fd(), &buf[..n]);
                    }
                    _ => stdin_open = false,
                }
            }
        }
        let _ = stdout.as_raw_fd();
    }
}

//! Waiting on a container process from the foreground, as `runc run` and
//! `berth run` do: signals the caller receives are forwarded to the process, a
//! terminal is proxied between the caller's tty (put in raw mode) and the
//! container's pty master with window-size changes passed on, and the exit
//! status comes back docker-style (`128 + signal` when killed).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

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

/// Puts a terminal in raw mode until dropped (for attached `-t` sessions).
pub struct RawMode {
    fd: i32,
    saved: Option<libc::termios>,
}

impl RawMode {
    /// Raw mode on `fd` when it is a terminal; a no-op otherwise.
    pub fn enter(fd: i32) -> RawMode {
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

/// How a waited-on process's stdio reaches the waiter.
pub enum Stdio {
    /// The process shares our stdio: nothing to copy.
    Inherited,
    /// A terminal: the pty master.
    Tty {
        /// The master.
        master: OwnedFd,
        /// Copy our stdin into it.
        stdin: bool,
    },
    /// Pipes.
    Pipes {
        /// The process's stdout (read end).
        out: OwnedFd,
        /// Its stderr (read end).
        err: OwnedFd,
        /// Its stdin (write end), when ours is forwarded.
        input: Option<OwnedFd>,
    },
}

/// Waits for `pid` (a child, or a grandchild with us as subreaper): copies its
/// output to `on_output` (and to our stdout/stderr when `attached`), our stdin
/// to it when asked, forwards the signals [`block_signals`] blocked, and returns
/// the docker-style exit code once it exited and its output is drained. A
/// subreaper reaps its other children meanwhile (the orphans it inherits):
/// call it as one only where no other thread waits for a child.
pub fn proxy(pid: i32, io: Stdio, attached: bool, on_output: &mut dyn FnMut(bool, &[u8])) -> i32 {
    // SAFETY: a signalfd over the signals block_signals blocked.
    let sfd: Option<OwnedFd> = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
            libc::sigaddset(&mut set, *s);
        }
        // Non-blocking: a thread of ours that does not block these signals
        // may take one between our poll and our read.
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        (fd >= 0).then(|| <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd))
    };
    // SAFETY: the standard descriptors outlive this function.
    let (stdin, stdout, stderr) = unsafe {
        (
            BorrowedFd::borrow_raw(0),
            BorrowedFd::borrow_raw(1),
            BorrowedFd::borrow_raw(2),
        )
    };
    let (master, out, err, mut input, want_stdin) = match io {
        Stdio::Inherited => (None, None, None, None, false),
        Stdio::Tty { master, stdin } => (Some(master), None, None, None, stdin),
        Stdio::Pipes { out, err, input } => {
            let w = input.is_some();
            (None, Some(out), Some(err), input, w)
        }
    };
    let _raw = (master.is_some() && attached).then(|| RawMode::enter(0));
    if let Some(m) = &master
        && attached
    {
        crate::tty::copy_winsize(stdin, m);
    }
    let reap_all = is_subreaper();
    let mut out_open = master.is_some() || out.is_some();
    let mut err_open = err.is_some();
    let mut stdin_open = want_stdin && attached;
    let mut buf = vec![0u8; 64 * 1024];
    let mut exit: Option<i32> = None;
    loop {
        // A subreaper reaps every child that exited, not only `pid`: it
        // inherits the orphans of the processes it started (an exec'd
        // process whose parent died), and a container's init cannot finish
        // exiting while a process of its namespace is our unreaped zombie.
        while exit.is_none() {
            let mut st = 0;
            // SAFETY: waitpid without blocking.
            let r =
                unsafe { libc::waitpid(if reap_all { -1 } else { pid }, &mut st, libc::WNOHANG) };
            if r == pid {
                exit = Some(exit_code(st));
            } else if r < 0 {
                exit = Some(255);
            } else if r == 0 {
                break;
            }
        }
        if exit.is_some() && !out_open && !err_open {
            break;
        }
        let outfd = master
            .as_ref()
            .map(|m| m.as_fd())
            .or(out.as_ref().map(|o| o.as_fd()));
        let mut fds: Vec<PollFd> = Vec::new();
        let mut kinds = Vec::new();
        if out_open && let Some(o) = &outfd {
            fds.push(PollFd::new(o, PollFlags::IN));
            kinds.push(0);
        }
        if err_open && let Some(e) = &err {
            fds.push(PollFd::new(e, PollFlags::IN));
            kinds.push(1);
        }
        if let Some(s) = &sfd {
            fds.push(PollFd::new(s, PollFlags::IN));
            kinds.push(2);
        }
        if stdin_open && exit.is_none() {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
            kinds.push(3);
        }
        let ns = if exit.is_some() {
            20_000_000
        } else {
            200_000_000
        };
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: ns,
        };
        let n = poll(&mut fds, Some(&timeout)).unwrap_or(0);
        if n == 0 && exit.is_some() {
            break;
        }
        let ready: Vec<(i32, bool)> = fds
            .iter()
            .zip(&kinds)
            .map(|(f, k)| (*k, !f.revents().is_empty()))
            .collect();
        for (kind, is_ready) in ready {
            if !is_ready {
                continue;
            }
            match kind {
                0 | 1 => {
                    let fd = if kind == 0 {
                        outfd.expect("polled")
                    } else {
                        err.as_ref().expect("polled").as_fd()
                    };
                    match rustix::io::read(fd, &mut buf) {
                        Ok(n) if n > 0 => {
                            on_output(kind == 1, &buf[..n]);
                            if attached {
                                write_all(if kind == 0 { stdout } else { stderr }, &buf[..n]);
                            }
                        }
                        _ => {
                            if kind == 0 {
                                out_open = false;
                            } else {
                                err_open = false;
                            }
                        }
                    }
                }
                2 => {
                    let mut info = [0u8; 128];
                    if let Ok(n) = rustix::io::read(sfd.as_ref().expect("polled"), &mut info)
                        && n >= 4
                    {
                        let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32;
                        if signo == libc::SIGWINCH {
                            if let Some(m) = &master {
                                crate::tty::copy_winsize(stdin, m);
                            }
                        } else if signo != libc::SIGCHLD && exit.is_none() {
                            // SAFETY: forwarding a signal to the process we wait for.
                            unsafe {
                                libc::kill(pid, signo);
                            }
                        }
                    }
                }
                _ => match rustix::io::read(stdin, &mut buf) {
                    Ok(n) if n > 0 => {
                        let target = master
                            .as_ref()
                            .map(|m| m.as_fd())
                            .or(input.as_ref().map(|i| i.as_fd()));
                        if let Some(t) = target {
                            write_all(t, &buf[..n]);
                        }
                    }
                    _ => {
                        stdin_open = false;
                        // Our EOF closes the process's stdin (pipes).
                        input = None;
                    }
                },
            }
        }
    }
    exit.unwrap_or(255)
}

/// Whether this process is a child subreaper (`PR_SET_CHILD_SUBREAPER`).
pub fn is_subreaper() -> bool {
    let mut v: libc::c_int = 0;
    // SAFETY: prctl writes one int.
    unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut v as *mut libc::c_int) == 0 && v != 0 }
}

/// Waits for `pid` with our stdio inherited or a terminal proxied; see [`proxy`].
pub fn wait_forwarding(pid: i32, master: Option<OwnedFd>) -> i32 {
    let io = match master {
        Some(master) => Stdio::Tty {
            master,
            stdin: true,
        },
        None => Stdio::Inherited,
    };
    proxy(pid, io, true, &mut |_, _| {})
}

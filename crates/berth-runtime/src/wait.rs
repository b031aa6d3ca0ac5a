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
    proxy_settled(pid, io, attached, on_output, &mut || {})
}

/// [`proxy`], calling `settled` once, when everything is set up and the
/// first wait is about to begin (a detached container's watcher trims its
/// memory there).
pub fn proxy_settled(
    pid: i32,
    io: Stdio,
    attached: bool,
    on_output: &mut dyn FnMut(bool, &[u8]),
    settled: &mut dyn FnMut(),
) -> i32 {
    let (master, out, err, input, want_stdin) = match io {
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
        crate::tty::copy_winsize(std_fd(0), m);
    }
    let mut p = Proxy {
        pid,
        attached,
        reap_all: is_subreaper(),
        sfd: forwarded_signals(),
        out_open: master.is_some() || out.is_some(),
        err_open: err.is_some(),
        stdin_open: want_stdin && attached,
        master,
        out,
        err,
        input,
        exit: None,
        buf: vec![0u8; 64 * 1024],
        on_output,
    };
    let mut settled = Some(settled);
    loop {
        p.reap();
        if p.exit.is_some() && !p.out_open && !p.err_open {
            break;
        }
        if let Some(f) = settled.take() {
            f();
        }
        let Some(ready) = p.poll() else {
            break;
        };
        for source in ready {
            match source {
                Source::Out => p.copy_output(false),
                Source::Err => p.copy_output(true),
                Source::Signal => p.forward_signal(),
                Source::Stdin => p.copy_input(),
            }
        }
    }
    p.exit.unwrap_or(255)
}

/// One of our standard descriptors.
fn std_fd(n: i32) -> BorrowedFd<'static> {
    // SAFETY: the standard descriptors stay open for the process's life.
    unsafe { BorrowedFd::borrow_raw(n) }
}

/// A signalfd over the signals [`block_signals`] blocked, and SIGCHLD.
fn forwarded_signals() -> Option<OwnedFd> {
    // SAFETY: sigset calls on a zeroed set, and signalfd with it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
            libc::sigaddset(&mut set, *s);
        }
        // Non-blocking: a thread of ours that does not block these signals
        // may take one between our poll and our read.
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        (fd >= 0).then(|| <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd))
    }
}

/// What [`Proxy::poll`] found readable.
#[derive(Clone, Copy)]
enum Source {
    Out,
    Err,
    Signal,
    Stdin,
}

/// [`proxy`]'s state: the process, its streams and which are still open.
struct Proxy<'a> {
    pid: i32,
    attached: bool,
    reap_all: bool,
    sfd: Option<OwnedFd>,
    master: Option<OwnedFd>,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    input: Option<OwnedFd>,
    out_open: bool,
    err_open: bool,
    stdin_open: bool,
    exit: Option<i32>,
    buf: Vec<u8>,
    on_output: &'a mut dyn FnMut(bool, &[u8]),
}

impl Proxy<'_> {
    /// Reaps without blocking. A subreaper reaps every child that exited,
    /// not only `pid`: it inherits the orphans of the processes it started
    /// (an exec'd process whose parent died), and a container's init cannot
    /// finish exiting while a process of its namespace is our unreaped zombie.
    fn reap(&mut self) {
        let target = if self.reap_all { -1 } else { self.pid };
        while self.exit.is_none() {
            let mut st = 0;
            // SAFETY: waitpid without blocking.
            let r = unsafe { libc::waitpid(target, &mut st, libc::WNOHANG) };
            if r == self.pid {
                self.exit = Some(exit_code(st));
            } else if r < 0 {
                self.exit = Some(255);
            } else if r == 0 {
                break;
            }
        }
    }

    /// The process's stdout: the terminal's master, or the pipe.
    fn out_fd(&self) -> Option<BorrowedFd<'_>> {
        self.master
            .as_ref()
            .or(self.out.as_ref())
            .map(|f| f.as_fd())
    }

    /// Waits for something to read (briefly once the process has exited, to
    /// drain its output); `None` when nothing came after the exit.
    fn poll(&self) -> Option<Vec<Source>> {
        let mut fds: Vec<PollFd> = Vec::new();
        let mut kinds = Vec::new();
        if self.out_open
            && let Some(o) = self.out_fd()
        {
            fds.push(PollFd::from_borrowed_fd(o, PollFlags::IN));
            kinds.push(Source::Out);
        }
        if self.err_open
            && let Some(e) = &self.err
        {
            fds.push(PollFd::new(e, PollFlags::IN));
            kinds.push(Source::Err);
        }
        if let Some(s) = &self.sfd {
            fds.push(PollFd::new(s, PollFlags::IN));
            kinds.push(Source::Signal);
        }
        if self.stdin_open && self.exit.is_none() {
            fds.push(PollFd::from_borrowed_fd(std_fd(0), PollFlags::IN));
            kinds.push(Source::Stdin);
        }
        // The process's exit wakes us through the signalfd (SIGCHLD) or its
        // streams' end, so the timeout is only a safety net (a SIGCHLD taken
        // by a thread that does not block it): long, so that an idle
        // monitor does not wake five times a second (conmon does not).
        let ms: i64 = match (self.exit.is_some(), self.sfd.is_some()) {
            (true, _) => 20,
            (false, true) => 5000,
            (false, false) => 200,
        };
        let timeout = rustix::event::Timespec {
            tv_sec: ms / 1000,
            tv_nsec: (ms % 1000) * 1_000_000,
        };
        let n = poll(&mut fds, Some(&timeout)).unwrap_or(0);
        if n == 0 && self.exit.is_some() {
            return None;
        }
        Some(
            fds.iter()
                .zip(kinds)
                .filter(|(f, _)| !f.revents().is_empty())
                .map(|(_, k)| k)
                .collect(),
        )
    }

    /// Copies what the process wrote to the callback (and to ours when
    /// attached); end of file closes the stream.
    fn copy_output(&mut self, is_err: bool) {
        let fd = if is_err {
            self.err.as_ref()
        } else {
            self.master.as_ref().or(self.out.as_ref())
        };
        let Some(fd) = fd else { return };
        match rustix::io::read(fd, &mut self.buf) {
            Ok(n) if n > 0 => {
                (self.on_output)(is_err, &self.buf[..n]);
                if self.attached {
                    write_all(std_fd(if is_err { 2 } else { 1 }), &self.buf[..n]);
                }
            }
            _ if is_err => self.err_open = false,
            _ => self.out_open = false,
        }
    }

    /// A signal for us: the window size follows ours, the others go to the
    /// process while it runs.
    fn forward_signal(&mut self) {
        let mut info = [0u8; 128];
        let Some(sfd) = &self.sfd else { return };
        let Ok(n) = rustix::io::read(sfd, &mut info) else {
            return;
        };
        if n < 4 {
            return;
        }
        let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32;
        if signo == libc::SIGWINCH {
            if let Some(m) = &self.master {
                crate::tty::copy_winsize(std_fd(0), m);
            }
        } else if signo != libc::SIGCHLD && self.exit.is_none() {
            // SAFETY: forwarding a signal to the process we wait for.
            unsafe {
                libc::kill(self.pid, signo);
            }
        }
    }

    /// Our input to the process's; our end of file closes its stdin (pipes).
    fn copy_input(&mut self) {
        match rustix::io::read(std_fd(0), &mut self.buf) {
            Ok(n) if n > 0 => {
                let target = self
                    .master
                    .as_ref()
                    .or(self.input.as_ref())
                    .map(|f| f.as_fd());
                if let Some(t) = target {
                    write_all(t, &self.buf[..n]);
                }
            }
            _ => {
                self.stdin_open = false;
                self.input = None;
            }
        }
    }
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

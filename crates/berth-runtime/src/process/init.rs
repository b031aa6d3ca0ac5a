//! The child side: a container's init (namespaces joined, hostname, rootfs,
//! pivot_root, terminal, credentials, seccomp, then waiting on the exec fifo
//! until `start`) and an `exec`'d process (namespaces of a running container
//! joined, then the same last steps). Every failure goes back to the runtime as
//! a message; nothing here returns.

use std::convert::Infallible;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use rustix::fs::{Mode, OFlags};

use super::channel::{Channel, InitError, ToChild, ToParent};
use super::{fail, prepare_exec, reset_signals, set_rlimits, set_user};
use crate::capabilities;
use crate::error::RuntimeError;
use crate::namespaces::{self, Plan};
use crate::rootfs::{self, RootfsContext};
use crate::seccomp;
use crate::sys::{Linux, Syscalls};

/// What the container's init needs.
pub struct InitArgs<'a> {
    /// The spec.
    pub spec: &'a Spec,
    /// The rootfs (host path).
    pub rootfs: &'a Path,
    /// Namespaces to create and join.
    pub plan: &'a Plan,
    /// The exec fifo (host path).
    pub fifo: &'a Path,
    /// The console socket, connected, when the process has a terminal.
    pub console: Option<OwnedFd>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// The container's cgroup directories.
    pub cgroup_paths: Vec<(String, PathBuf)>,
    /// Descriptors 3..3+n stay open for the process.
    pub preserve_fds: u32,
    /// The state JSON handed to in-container hooks.
    pub state: serde_json::Value,
    /// Mounted on the rootfs first.
    pub rootfs_mounts: &'a [crate::rootfs::RootfsMount],
    /// Stay as a reaping PID 1.
    pub reaper: bool,
    /// When set, the init moves itself into the cgroup (the runtime did not).
    pub cgroup_join: Option<&'a berth_cgroups::SelfJoin>,
}

fn other(e: RuntimeError) -> InitError {
    match e {
        RuntimeError::ExecNotFound(p) => InitError::NotFound(p),
        RuntimeError::ExecPermission(p) => InitError::Permission(p),
        RuntimeError::Cwd(p) => InitError::Cwd(p),
        e => InitError::Other(e.to_string()),
    }
}

/// Forks once more and lets the intermediate process exit after telling the
/// parent the child's pid: a joined pid namespace only applies to children,
/// so the child is the one that runs in it (the runtime, as subreaper,
/// adopts it). `what` names the step in an error.
fn fork_past_intermediate(chan: &Channel, what: &str) -> Result<(), InitError> {
    match super::clone_process(0).map_err(|e| InitError::Other(format!("{what}: {e}")))? {
        super::Forked::Parent(pid) => {
            chan.send(&ToParent::Pid(pid)).map_err(other)?;
            // SAFETY: the intermediate process is done; the runtime is its subreaper.
            unsafe { libc::_exit(0) }
        }
        super::Forked::Child => Ok(()),
    }
}

fn wait_go(chan: &Channel) -> Result<(), InitError> {
    match chan.recv::<ToChild>().map_err(other)? {
        Some(ToChild::Go) => Ok(()),
        other => Err(InitError::Other(format!(
            "runtime sent {other:?} instead of Go"
        ))),
    }
}

/// Hands the seccomp notify listener to the runtime, which passes it on to the
/// agent, and waits until it has.
fn hand_listener(chan: &Channel, listener: Option<OwnedFd>) -> Result<(), InitError> {
    let Some(fd) = listener else {
        return Ok(());
    };
    chan.send_with_fd(&ToParent::SeccompListener, &fd)
        .map_err(other)?;
    drop(fd);
    match chan.recv::<ToChild>().map_err(other)? {
        Some(ToChild::SeccompDone) => Ok(()),
        other_msg => Err(InitError::Other(format!(
            "runtime sent {other_msg:?} instead of SeccompDone"
        ))),
    }
}

/// Runs the container's init. Never returns.
pub fn container_init(a: InitArgs, chan: Channel) -> ! {
    match run(a, &chan) {
        Ok(never) => match never {},
        Err(e) => {
            let _ = chan.send(&ToParent::Error(e));
            // SAFETY: leaving the child without running the parent's destructors.
            unsafe { libc::_exit(1) }
        }
    }
}

fn run(a: InitArgs, chan: &Channel) -> Result<Infallible, InitError> {
    let sys = &Linux;
    wait_go(chan)?;
    if let Some(j) = a.cgroup_join {
        // Still single-threaded, before anything is forked or allocated much.
        j.join()
            .map_err(|e| InitError::Other(format!("join the container's cgroup: {e}")))?;
    }
    let spec = a.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| InitError::Other("process: missing".into()))?;
    crate::trace::mark("init: go");
    enter_namespaces(sys, &a, chan)?;
    set_identity(&a)?;
    let fifo = make_root(sys, &a, chan)?;
    crate::trace::mark("init: root made (mounts, devices, pivot_root)");
    open_console(process, a.console)?;
    if let Some(score) = process.oom_score_adj() {
        super::set_oom_score_adj(score)?;
    }
    let filters = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => seccomp::compile(s).map_err(other)?,
        None => seccomp::Filters::default(),
    };
    let (exec, listener) = finish_process(process, &filters)?;
    crate::trace::mark("init: process set up (rlimits, user, caps, seccomp)");
    hand_listener(chan, listener)?;
    super::cloexec_from(3 + a.preserve_fds);
    chan.send(&ToParent::Ready).map_err(other)?;
    // Block until `start` opens the fifo for reading.
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let w = rustix::fs::open(
        path.as_str(),
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| InitError::Other(format!("open exec fifo: {e}")))?;
    rustix::io::write(&w, b"0").map_err(|e| InitError::Other(format!("write exec fifo: {e}")))?;
    drop(w);
    drop(fifo);
    if let Some(h) = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.start_container().as_ref())
    {
        crate::hooks::run("startContainer", h, &a.state).map_err(other)?;
    }
    let late = !filters.install_early(process.no_new_privileges() == Some(true));
    if a.reaper {
        reap_as_init(&exec, late, &filters);
    }
    if late {
        seccomp::install(&filters).map_err(other)?;
    }
    crate::trace::mark("init: exec");
    let e = super::execve(&exec);
    // The runtime has gone by now: say it where the user will see it.
    eprintln!("berth-runtime: {}", RuntimeError::from(e));
    // SAFETY: leaving the failed child.
    unsafe { libc::_exit(127) }
}

/// Joins and makes the namespaces in their order: root of a new user
/// namespace first, then a joined user namespace, the others but mount, a
/// new cgroup namespace (now that the runtime has moved us into the
/// container's cgroup), the fork into a joined pid namespace, and last a
/// joined mount namespace.
fn enter_namespaces(sys: &dyn Syscalls, a: &InitArgs, chan: &Channel) -> Result<(), InitError> {
    if a.plan.user {
        // Become root of the new user namespace (the mappings are written).
        sys.setresgid(0)
            .map_err(fail("setresgid(0) in the user namespace"))?;
        sys.setresuid(0)
            .map_err(fail("setresuid(0) in the user namespace"))?;
    }
    let join = |pick: &dyn Fn(LinuxNamespaceType) -> bool| -> Result<(), InitError> {
        for (t, path) in a.plan.join.iter().filter(|(t, _)| pick(*t)) {
            namespaces::join(sys, *t, path).map_err(other)?;
        }
        Ok(())
    };
    join(&|t| t == LinuxNamespaceType::User)?;
    join(&|t| t != LinuxNamespaceType::User && t != LinuxNamespaceType::Mount)?;
    if a.plan.new_cgroup {
        sys.unshare(libc::CLONE_NEWCGROUP)
            .map_err(fail("unshare(CLONE_NEWCGROUP)"))?;
    }
    if a.plan.join_pid {
        // A joined pid namespace applies to children: the next fork is init.
        fork_past_intermediate(chan, "fork into the pid namespace")?;
    }
    join(&|t| t == LinuxNamespaceType::Mount)
}

/// A session of its own, `lo` up in a new network namespace, and the
/// hostname and domain name in a UTS namespace of its own.
fn set_identity(a: &InitArgs) -> Result<(), InitError> {
    // SAFETY: setsid in the fresh process; it is not a group leader.
    unsafe {
        libc::setsid();
    }
    if a.plan.new_flags & libc::CLONE_NEWNET != 0 {
        loopback_up().map_err(|e| InitError::Other(format!("bring up lo: {e}")))?;
    }
    if has_ns(a.spec, LinuxNamespaceType::Uts) {
        if let Some(h) = a.spec.hostname() {
            rustix::system::sethostname(h.as_bytes())
                .map_err(|e| InitError::Other(format!("sethostname {h:?}: {e}")))?;
        }
        if let Some(d) = a.spec.domainname() {
            rustix::system::setdomainname(d.as_bytes())
                .map_err(|e| InitError::Other(format!("setdomainname {d:?}: {e}")))?;
        }
    }
    Ok(())
}

fn has_ns(spec: &Spec, t: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == t))
}

/// The container's root: its mounts, the createRuntime/createContainer hooks
/// (the runtime's, then ours, both before pivot_root), the change of root,
/// sysctls, masked and read-only paths, and the working directory docker
/// creates when missing. Returns the exec fifo, held by an O_PATH
/// descriptor across the change of root (it lives on the host).
fn make_root(sys: &dyn Syscalls, a: &InitArgs, chan: &Channel) -> Result<OwnedFd, InitError> {
    let spec = a.spec;
    rootfs::prepare(
        sys,
        spec,
        &RootfsContext {
            rootfs_mounts: a.rootfs_mounts,
            rootfs: a.rootfs,
            userns: a.plan.user || namespaces::in_user_namespace(),
            cgroupns: has_ns(spec, LinuxNamespaceType::Cgroup),
            cgroup_paths: &a.cgroup_paths,
            host_mount_ns: !a.plan.mount,
        },
    )
    .map_err(other)?;
    chan.send(&ToParent::RunCreateHooks).map_err(other)?;
    match chan.recv::<ToChild>().map_err(other)? {
        Some(ToChild::HooksDone) => {}
        other_msg => {
            return Err(InitError::Other(format!(
                "runtime sent {other_msg:?} instead of HooksDone"
            )));
        }
    }
    if let Some(h) = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.create_container().as_ref())
    {
        crate::hooks::run("createContainer", h, &a.state).map_err(other)?;
    }
    let fifo = rustix::fs::open(a.fifo, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| InitError::Other(format!("open {}: {e}", a.fifo.display())))?;
    let how = if !a.plan.mount {
        rootfs::RootChange::Chroot
    } else if a.no_pivot {
        rootfs::RootChange::MoveAndChroot
    } else {
        rootfs::RootChange::Pivot
    };
    rootfs::pivot(sys, a.rootfs, how).map_err(other)?;
    if let Some(sysctl) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        for (k, v) in sysctl {
            let p = format!("/proc/sys/{}", k.replace('.', "/"));
            std::fs::write(&p, v).map_err(|e| InitError::Other(format!("write {p}: {e}")))?;
        }
    }
    rootfs::finish(sys, spec).map_err(other)?;
    if let Some(process) = spec.process()
        && !process.cwd().exists()
    {
        std::fs::create_dir_all(process.cwd())
            .map_err(|e| InitError::Other(format!("mkdir {}: {e}", process.cwd().display())))?;
    }
    Ok(fifo)
}

/// With `process.terminal`: a new pty whose master goes to the console
/// socket. The socket is closed either way.
fn open_console(process: &Process, console: Option<OwnedFd>) -> Result<(), InitError> {
    if process.terminal() == Some(true) {
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        let master = crate::tty::setup_in_container(size).map_err(other)?;
        let sock = console.as_ref().ok_or_else(|| {
            InitError::Other("process.terminal is set but no console socket was given".into())
        })?;
        crate::tty::send_fd(sock, &master, "/dev/pts/ptmx").map_err(other)?;
    }
    Ok(())
}

/// A new network namespace starts with `lo` down; containers expect it up.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: an ioctl on a datagram socket with a zeroed, NUL-terminated ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        let r = if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr)
        } else {
            -1
        };
        let e = std::io::Error::last_os_error();
        libc::close(s);
        if r != 0 { Err(e) } else { Ok(()) }
    }
}

/// `--init`: stay as PID 1, run the process as a child, forward every signal to
/// it, reap whatever exits, and exit with the process's status. Never returns.
fn reap_as_init(exec: &super::Exec, late_seccomp: bool, filters: &seccomp::Filters) -> ! {
    // SAFETY: signal mask and fork in a single-threaded process; the child only
    // resets its mask and execs.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        let child = libc::fork();
        if child == 0 {
            reset_signals();
            if late_seccomp && seccomp::install(filters).is_err() {
                libc::_exit(127);
            }
            let e = super::execve(exec);
            eprintln!("berth-runtime: {}", RuntimeError::from(e));
            libc::_exit(127);
        }
        // The reaper never execs, so close-on-exec does not close what it
        // inherited (a starting client's readiness pipe among them, which
        // then never saw its end): it keeps only its stdio.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&all, &mut info);
            if sig == libc::SIGCHLD {
                loop {
                    let mut st = 0;
                    let p = libc::waitpid(-1, &mut st, libc::WNOHANG);
                    if p <= 0 {
                        break;
                    }
                    if p == child {
                        libc::_exit(crate::wait::exit_code(st));
                    }
                }
            } else if sig > 0 {
                libc::kill(child, sig);
            }
        }
    }
}

/// rlimits, cwd, no_new_privs, seccomp (here when [`seccomp::Filters::install_early`]
/// says so; then it returns the notify listener, if any), bounding set, user,
/// capabilities, signals, and the executable resolved as the final user.
pub fn finish_process(
    process: &Process,
    filters: &seccomp::Filters,
) -> Result<(super::Exec, Option<OwnedFd>), InitError> {
    set_rlimits(process)?;
    // Before no_new_privs and the user change, as runc: the profile and
    // label take effect at execve.
    crate::lsm::apply_exec(&crate::lsm::Asked::of_process(process)).map_err(other)?;
    // Both may need privileges (CAP_SYS_NICE, CAP_SYS_ADMIN) the user drops below.
    super::set_scheduler(process)?;
    super::set_io_priority(process)?;
    std::env::set_current_dir(process.cwd()).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => InitError::Cwd(process.cwd().display().to_string()),
        _ => InitError::Other(format!("chdir {}: {e}", process.cwd().display())),
    })?;
    let nnp = process.no_new_privileges() == Some(true);
    if nnp {
        // SAFETY: prctl with constant arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(InitError::Other(format!(
                "prctl(PR_SET_NO_NEW_PRIVS): {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    let caps = process.capabilities().as_ref();
    capabilities::drop_bounding(&Linux, caps).map_err(other)?;
    let listener = if filters.install_early(nnp) {
        seccomp::install(filters).map_err(other)?
    } else {
        None
    };
    set_user(&Linux, process)?;
    capabilities::apply(&Linux, caps).map_err(other)?;
    reset_signals();
    Ok((prepare_exec(process)?, listener))
}

/// The `exec`'d process (already in the container's cgroup): joins the
/// namespaces of `pid`, forks into its pid namespace and runs. Never returns.
pub fn exec_child(
    pid: i32,
    process: &Process,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
    console: Option<OwnedFd>,
    chan: Channel,
) -> ! {
    let r = (|| -> Result<Infallible, InitError> {
        wait_go(&chan)?;
        // The container's root, held before its mount namespace is joined:
        // setns puts us at the namespace's root, which is the container's
        // only when its init pivoted from there — not when the runtime ran
        // chrooted (its root a mount below the namespace's), where an exec
        // would otherwise land in the host's root.
        let root = rustix::fs::open(
            format!("/proc/{pid}/root"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| InitError::Other(format!("open /proc/{pid}/root: {e}")))?;
        let own = |n: &str| std::fs::read_link(format!("/proc/self/ns/{n}")).ok();
        let theirs = |n: &str| std::fs::read_link(format!("/proc/{pid}/ns/{n}")).ok();
        for t in namespaces::ORDER {
            let n = namespaces::proc_name(t);
            if theirs(n).is_some() && theirs(n) != own(n) {
                namespaces::join(&Linux, t, Path::new(&format!("/proc/{pid}/ns/{n}")))
                    .map_err(other)?;
            }
        }
        rustix::process::fchdir(&root)
            .and_then(|()| rustix::process::chroot("."))
            .map_err(|e| InitError::Other(format!("entering the container's root: {e}")))?;
        drop(root);
        std::env::set_current_dir("/").map_err(|e| InitError::Other(format!("chdir /: {e}")))?;
        fork_past_intermediate(&chan, "fork into the container")?;
        // SAFETY: setsid in the new process.
        unsafe {
            libc::setsid();
        }
        open_console(process, console)?;
        let filters = match seccomp {
            Some(s) => crate::seccomp::compile(s).map_err(other)?,
            None => crate::seccomp::Filters::default(),
        };
        let (exec, listener) = finish_process(process, &filters)?;
        hand_listener(&chan, listener)?;
        super::cloexec_from(3);
        if !filters.install_early(process.no_new_privileges() == Some(true)) {
            crate::seccomp::install(&filters).map_err(other)?;
        }
        // The channel is close-on-exec: the runtime sees it close when exec succeeds.
        chan.send(&ToParent::Ready).map_err(other)?;
        let e = super::execve(&exec);
        eprintln!("berth-runtime: {}", RuntimeError::from(e));
        // SAFETY: leaving the failed child.
        unsafe { libc::_exit(127) }
    })();
    let Err(e) = r;
    let _ = chan.send(&ToParent::Error(e));
    // SAFETY: leaving the child.
    unsafe { libc::_exit(1) }
}

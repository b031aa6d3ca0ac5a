//! Process creation and the last steps before exec, shared by a container's
//! init and by `exec`: clone3 (falling back to clone) from a single-threaded
//! caller, rlimits within the hard limits the caller has, oom_score_adj, user and
//! groups, capabilities, no_new_privs, seccomp, executable lookup, and execve.

pub mod channel;
pub mod init;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{PosixRlimitType, Process};

use crate::sys::Syscalls;
use channel::InitError;

/// The result of [`clone_process`].
pub enum Forked {
    /// In the child.
    Child,
    /// In the parent, with the child's pid.
    Parent(i32),
}

/// Whether this process runs one thread, what [`clone_process`] needs.
/// Where this process's own `/proc` is not in view (a process that joined
/// a container's mount namespace sees the container's), it cannot tell and
/// answers yes: such callers are fresh single-threaded children.
pub fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").map_or(true, |d| d.count() == 1)
}

/// Forks with `flags` (CLONE_NEW*), via clone3 or clone. Refused when the
/// process runs other threads: the child continues on a copy of the
/// caller's stack and runs arbitrary code, and a bare clone (no atfork
/// handlers) would copy any lock another thread holds — the allocator's
/// among them — held for ever. Callers with threads go through the
/// `berth-runtime` binary instead.
pub fn clone_process(flags: libc::c_int) -> std::io::Result<Forked> {
    if !single_threaded() {
        return Err(std::io::Error::other(
            "other threads run in this process: a bare clone could copy their locks held (run through the berth-runtime binary)",
        ));
    }
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    let args = CloneArgs {
        flags: flags as u32 as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without a new stack behaves like fork; the process is
    // single-threaded (checked above), so the child may run arbitrary code.
    let mut r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        // SAFETY: raw clone with a null stack, same semantics as above.
        r = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
    }
    match r {
        r if r < 0 => Err(std::io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

/// What execve needs, resolved before the process is reported ready.
pub struct Exec {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn cstr(s: &str) -> Result<CString, InitError> {
    CString::new(s).map_err(|_| InitError::Other(format!("{s:?} contains a NUL byte")))
}

fn executable(p: &Path) -> Result<(), InitError> {
    let shown = p.display().to_string();
    let md = std::fs::metadata(p).map_err(|_| InitError::NotFound(shown.clone()))?;
    if md.is_dir() {
        return Err(InitError::Permission(shown));
    }
    let c =
        CString::new(p.as_os_str().as_bytes()).map_err(|_| InitError::NotFound(shown.clone()))?;
    // SAFETY: access(2) on a valid path, with the process's final credentials.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
        return Err(InitError::Permission(shown));
    }
    Ok(())
}

/// Resolves the executable the way Go's exec.LookPath (and so runc) does.
pub fn prepare_exec(p: &Process) -> Result<Exec, InitError> {
    let args = p.args().clone().unwrap_or_default();
    let Some(arg0) = args.first() else {
        return Err(InitError::Other("process.args is empty".into()));
    };
    let env = p.env().clone().unwrap_or_default();
    let path = if arg0.contains('/') {
        executable(Path::new(arg0))?;
        PathBuf::from(arg0)
    } else {
        let search = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        let mut found = None;
        let mut denied = None;
        for dir in search.split(':') {
            let cand = Path::new(if dir.is_empty() { "." } else { dir }).join(arg0);
            match executable(&cand) {
                Ok(()) => {
                    found = Some(cand);
                    break;
                }
                Err(InitError::Permission(_)) if cand.exists() => denied = Some(cand),
                Err(_) => {}
            }
        }
        match (found, denied) {
            (Some(f), _) => f,
            (None, Some(_)) | (None, None) => return Err(InitError::NotFound(arg0.clone())),
        }
    };
    Ok(Exec {
        path: CString::new(path.as_os_str().as_bytes())
            .map_err(|_| InitError::NotFound(arg0.clone()))?,
        argv: args.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
        envp: env.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
    })
}

/// execve; returns only on failure.
pub fn execve(e: &Exec) -> InitError {
    let argv: Vec<*const libc::c_char> = e
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = e
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SAFETY: NULL-terminated arrays of valid C strings.
    unsafe {
        libc::execve(e.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    let err = std::io::Error::last_os_error();
    let p = e.path.to_string_lossy().into_owned();
    match err.raw_os_error() {
        Some(libc::ENOENT) => InitError::NotFound(p),
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::ENOEXEC) => InitError::Permission(p),
        _ => InitError::Other(format!("exec {p}: {err}")),
    }
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// `process.scheduler`: sched_setattr(2) for the process (and what it forks).
pub fn set_scheduler(p: &Process) -> Result<(), InitError> {
    use oci_spec::runtime::{LinuxSchedulerFlag as F, LinuxSchedulerPolicy as P};
    let Some(sc) = p.scheduler() else {
        return Ok(());
    };
    let policy = match sc.policy() {
        P::SchedOther => 0,
        P::SchedFifo => 1,
        P::SchedRr => 2,
        P::SchedBatch => 3,
        P::SchedIso => 4,
        P::SchedIdle => 5,
        P::SchedDeadline => 6,
    };
    let mut flags = 0u64;
    for f in sc.flags().iter().flatten() {
        flags |= match f {
            F::SchedResetOnFork => 0x01,
            F::SchedFlagReclaim => 0x02,
            F::SchedFlagDLOverrun => 0x04,
            F::SchedFlagKeepPolicy => 0x08,
            F::SchedFlagKeepParams => 0x10,
            F::SchedFlagUtilClampMin => 0x20,
            F::SchedFlagUtilClampMax => 0x40,
        };
    }
    /// The kernel's struct sched_attr (SCHED_ATTR_SIZE_VER1).
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
        util_min: u32,
        util_max: u32,
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        flags,
        nice: sc.nice().unwrap_or(0),
        priority: sc.priority().unwrap_or(0) as u32,
        runtime: sc.runtime().unwrap_or(0),
        deadline: sc.deadline().unwrap_or(0),
        period: sc.period().unwrap_or(0),
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: sched_setattr on ourselves with a struct of the size we pass.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r != 0 {
        return Err(InitError::Other(format!(
            "process.scheduler: sched_setattr({:?}): {}",
            sc.policy(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// `process.ioPriority`: ioprio_set(2) for the process.
pub fn set_io_priority(p: &Process) -> Result<(), InitError> {
    use oci_spec::runtime::IOPriorityClass as C;
    let Some(io) = p.io_priority() else {
        return Ok(());
    };
    let class: i64 = match io.class() {
        C::IoprioClassRt => 1,
        C::IoprioClassBe => 2,
        C::IoprioClassIdle => 3,
    };
    if !(0..=7).contains(&io.priority()) {
        return Err(InitError::Other(format!(
            "process.ioPriority.priority {}: must be 0 to 7",
            io.priority()
        )));
    }
    const IOPRIO_WHO_PROCESS: i64 = 1;
    // SAFETY: ioprio_set with integer arguments.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            (class << 13) | io.priority(),
        )
    };
    if r != 0 {
        return Err(InitError::Other(format!(
            "process.ioPriority: ioprio_set({:?}, {}): {}",
            io.class(),
            io.priority(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Sets the process's OOM score adjustment. Lowering it below the lowest
/// value a privileged process set needs CAP_SYS_RESOURCE (EACCES without):
/// then the current, higher score is kept instead of failing, as rlimits are
/// clamped. Kubernetes asks for -998 for every pod sandbox, and a root
/// without CAP_SYS_RESOURCE (containers, CI runners, this project's own
/// machines) is common: runc fails every pod there.
pub fn set_oom_score_adj(score: i32) -> Result<(), InitError> {
    const PATH: &str = "/proc/self/oom_score_adj";
    match std::fs::write(PATH, score.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
            let current: Option<i32> = std::fs::read_to_string(PATH)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            match current {
                Some(c) if score < c => Ok(()),
                _ => Err(InitError::Other(format!("write {PATH}: {e}"))),
            }
        }
        Err(e) => Err(InitError::Other(format!("write {PATH}: {e}"))),
    }
}

/// Sets rlimits. Without CAP_SYS_RESOURCE a hard limit cannot be raised above
/// the current one: such limits are clamped to it instead of failing (podman
/// fails here; docker users expect the container to start).
pub fn set_rlimits(p: &Process) -> Result<(), InitError> {
    for r in p.rlimits().iter().flatten() {
        let res = rlimit_resource(r.typ());
        let want = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: setrlimit/getrlimit with valid structs.
        unsafe {
            if libc::setrlimit(res, &want) == 0 {
                continue;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EPERM) {
                return Err(InitError::Other(format!("setrlimit {:?}: {err}", r.typ())));
            }
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(res, &mut cur);
            let clamped = libc::rlimit {
                rlim_max: want.rlim_max.min(cur.rlim_max),
                rlim_cur: want.rlim_cur.min(cur.rlim_max),
            };
            if libc::setrlimit(res, &clamped) != 0 {
                return Err(InitError::Other(format!(
                    "setrlimit {:?}: {}",
                    r.typ(),
                    std::io::Error::last_os_error()
                )));
            }
        }
    }
    Ok(())
}

/// additionalGids without repeats, in order (runc keeps each group once too).
fn unique_groups(gids: &[u32]) -> Vec<libc::gid_t> {
    let mut seen = std::collections::HashSet::new();
    gids.iter().copied().filter(|g| seen.insert(*g)).collect()
}

/// Whether this user namespace forbids setgroups (`/proc/self/setgroups`).
fn setgroups_denied() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny")
}

/// Maps a failed call's error to the init's message for `what`.
pub(crate) fn fail(what: &'static str) -> impl Fn(std::io::Error) -> InitError {
    move |e| InitError::Other(format!("{what}: {e}"))
}

/// Sets the process's groups, gid and uid (keeping permitted capabilities
/// for [`crate::capabilities::apply`]) and its umask.
pub fn set_user(sys: &dyn Syscalls, p: &Process) -> Result<(), InitError> {
    let u = p.user();
    sys.keep_caps().map_err(fail("prctl(PR_SET_KEEPCAPS)"))?;
    let groups = unique_groups(u.additional_gids().as_deref().unwrap_or(&[]));
    // setgroups is denied in user namespaces with setgroups=deny (one that
    // maps a rootless user's own ids alone, where no other group exists
    // either): the process keeps no supplementary groups there. Elsewhere
    // a failure is fatal when groups were asked for.
    if let Err(e) = sys.setgroups(&groups)
        && !groups.is_empty()
        && !setgroups_denied()
    {
        return Err(fail("setgroups")(e));
    }
    sys.setresgid(u.gid()).map_err(fail("setresgid"))?;
    sys.setresuid(u.uid()).map_err(fail("setresuid"))?;
    // SAFETY: umask cannot fail.
    unsafe {
        libc::umask(u.umask().unwrap_or(0o022) as libc::mode_t);
    }
    Ok(())
}

/// Makes every descriptor above `keep_upto` close on exec.
pub fn cloexec_from(first: u32) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

/// Unblocks every signal and restores the default disposition of SIGPIPE, so the
/// user process starts as a shell would start it.
pub fn reset_signals() {
    // SAFETY: sigprocmask/signal with valid arguments.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::record::Recorder;

    /// The credential sequence of an init through the syscall seam, as
    /// `finish_process` runs it: bounding set, then user (keep-caps,
    /// groups once each, gid before uid), then the capability sets.
    #[test]
    fn credentials_in_order() {
        let process: Process = serde_json::from_value(serde_json::json!({
            "cwd": "/", "args": ["sh"],
            "user": {"uid": 1000, "gid": 1001, "additionalGids": [10, 10, 20]},
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_KILL"],
                "effective": ["CAP_CHOWN", "CAP_KILL"],
                "permitted": ["CAP_CHOWN", "CAP_KILL"],
                "inheritable": ["CAP_KILL"],
                "ambient": ["CAP_KILL", "CAP_CHOWN"]
            }
        }))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sys = Recorder::new(dir.path());
        let caps = process.capabilities().as_ref();
        crate::capabilities::drop_bounding(&sys, caps).unwrap();
        // SAFETY: umask cannot fail; the test's own is put back below.
        let umask = unsafe { libc::umask(0o022) };
        set_user(&sys, &process).unwrap();
        // SAFETY: as above.
        unsafe { libc::umask(umask) };
        crate::capabilities::apply(&sys, caps).unwrap();
        let log = sys.take();
        let dropped = log
            .iter()
            .take_while(|l| l.starts_with("drop bounding"))
            .count();
        assert_eq!(dropped, caps::all().len() - 2, "{log:#?}");
        assert!(
            !log.iter()
                .any(|l| l == "drop bounding CAP_CHOWN" || l == "drop bounding CAP_KILL")
        );
        assert_eq!(
            log[dropped..],
            [
                "prctl PR_SET_KEEPCAPS",
                "setgroups [10, 20]",
                "setresgid 1001",
                "setresuid 1000",
                "capset Inheritable [CAP_KILL]",
                // Permitted widened first so effective fits, then exact.
                "capset Permitted [CAP_CHOWN,CAP_KILL]",
                "capset Effective [CAP_CHOWN,CAP_KILL]",
                "capset Permitted [CAP_CHOWN,CAP_KILL]",
                "clear ambient",
                // CAP_CHOWN is not inheritable: runc's rule, not raised.
                "raise ambient CAP_KILL",
            ]
        );
    }

    #[test]
    fn a_refused_uid_change_is_an_error() {
        let process: Process = serde_json::from_value(serde_json::json!({
            "cwd": "/", "args": ["sh"], "user": {"uid": 1000, "gid": 1000}
        }))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut sys = Recorder::new(dir.path());
        sys.fail = vec![("setresuid".into(), libc::EPERM)];
        let err = set_user(&sys, &process).unwrap_err();
        assert!(
            matches!(&err, InitError::Other(m) if m.starts_with("setresuid: ")),
            "{err:?}"
        );
        // Groups failing without groups asked for is not fatal (setgroups=deny).
        let mut sys = Recorder::new(dir.path());
        sys.fail = vec![("setgroups".into(), libc::EPERM)];
        // SAFETY: umask cannot fail; put back below.
        let umask = unsafe { libc::umask(0o022) };
        let r = set_user(&sys, &process);
        // SAFETY: as above.
        unsafe { libc::umask(umask) };
        r.unwrap();
    }

    /// A bare clone is refused while another thread runs (it could copy a
    /// lock that thread holds into a child that then waits on it for ever,
    /// as a terminal build view's ticker thread once made a RUN step hang).
    #[test]
    fn clone_is_refused_beside_other_threads() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        assert!(!single_threaded());
        let err = clone_process(0).err().expect("refused");
        assert!(err.to_string().contains("other threads"), "{err}");
        drop(tx);
        t.join().unwrap();
    }
}

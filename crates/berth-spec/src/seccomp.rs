//! Docker's default seccomp profile (moby's `profiles/seccomp/default.json`,
//! Apache-2.0), kept here as data and resolved the way dockerd resolves it for
//! a container: entries conditioned on capabilities or architectures are kept or
//! dropped for the container's capability set and this machine's architecture.

use serde_json::{Value, json};

/// A syscall argument condition: (index, value, op).
type Arg = (u32, u64, &'static str);

struct Entry {
    names: &'static [&'static str],
    /// `None` = allow; `Some(errno)` = return that errno.
    errno: Option<u32>,
    args: &'static [Arg],
    /// Kept only when the container has all of these capabilities.
    caps: &'static [&'static str],
    /// Dropped when the container has any of these capabilities.
    not_caps: &'static [&'static str],
    /// Kept only on these architectures (docker's names), when not empty.
    arches: &'static [&'static str],
    /// Dropped on these architectures.
    not_arches: &'static [&'static str],
}

const fn allow(names: &'static [&'static str]) -> Entry {
    Entry {
        names,
        errno: None,
        args: &[],
        caps: &[],
        not_caps: &[],
        arches: &[],
        not_arches: &[],
    }
}

const fn with_cap(names: &'static [&'static str], cap: &'static [&'static str]) -> Entry {
    Entry {
        caps: cap,
        ..allow(names)
    }
}

const fn on_arch(names: &'static [&'static str], arches: &'static [&'static str]) -> Entry {
    Entry {
        arches,
        ..allow(names)
    }
}

/// Syscalls every container may make.
const BASE: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // Allowed on kernels ≥ 4.8, which every kernel berth runs on is.
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
];

/// The clone flags a container without CAP_SYS_ADMIN may not pass (new namespaces).
const CLONE_NS_MASK: u64 = 2114060288;

const ENTRIES: &[Entry] = &[
    allow(BASE),
    Entry {
        args: &[(0, 40, "SCMP_CMP_NE")],
        ..allow(&["socket"])
    },
    Entry {
        args: &[(0, 0, "SCMP_CMP_EQ")],
        ..allow(&["personality"])
    },
    Entry {
        args: &[(0, 8, "SCMP_CMP_EQ")],
        ..allow(&["personality"])
    },
    Entry {
        args: &[(0, 131072, "SCMP_CMP_EQ")],
        ..allow(&["personality"])
    },
    Entry {
        args: &[(0, 131080, "SCMP_CMP_EQ")],
        ..allow(&["personality"])
    },
    Entry {
        args: &[(0, 4294967295, "SCMP_CMP_EQ")],
        ..allow(&["personality"])
    },
    on_arch(&["sync_file_range2", "swapcontext"], &["ppc64le"]),
    on_arch(
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        &["arm", "arm64"],
    ),
    on_arch(&["arch_prctl"], &["amd64", "x32"]),
    on_arch(&["modify_ldt"], &["amd64", "x32", "x86"]),
    on_arch(
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        &["s390", "s390x"],
    ),
    on_arch(&["riscv_flush_icache"], &["riscv64"]),
    with_cap(&["open_by_handle_at"], &["CAP_DAC_READ_SEARCH"]),
    with_cap(
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
        &["CAP_SYS_ADMIN"],
    ),
    Entry {
        args: &[(0, CLONE_NS_MASK, "SCMP_CMP_MASKED_EQ")],
        not_caps: &["CAP_SYS_ADMIN"],
        not_arches: &["s390", "s390x"],
        ..allow(&["clone"])
    },
    Entry {
        args: &[(1, CLONE_NS_MASK, "SCMP_CMP_MASKED_EQ")],
        not_caps: &["CAP_SYS_ADMIN"],
        arches: &["s390", "s390x"],
        ..allow(&["clone"])
    },
    // clone3 cannot be filtered on its flags (they are behind a pointer): make
    // glibc fall back to clone, which is.
    Entry {
        errno: Some(38),
        not_caps: &["CAP_SYS_ADMIN"],
        ..allow(&["clone3"])
    },
    with_cap(&["reboot"], &["CAP_SYS_BOOT"]),
    with_cap(&["chroot"], &["CAP_SYS_CHROOT"]),
    with_cap(
        &["delete_module", "init_module", "finit_module"],
        &["CAP_SYS_MODULE"],
    ),
    with_cap(&["acct"], &["CAP_SYS_PACCT"]),
    with_cap(
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
        &["CAP_SYS_PTRACE"],
    ),
    with_cap(&["iopl", "ioperm"], &["CAP_SYS_RAWIO"]),
    with_cap(
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        &["CAP_SYS_TIME"],
    ),
    with_cap(&["vhangup"], &["CAP_SYS_TTY_CONFIG"]),
    with_cap(
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
        &["CAP_SYS_NICE"],
    ),
    with_cap(&["syslog"], &["CAP_SYSLOG"]),
    with_cap(&["bpf"], &["CAP_BPF"]),
    with_cap(&["perf_event_open"], &["CAP_PERFMON"]),
];

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Docker's default profile as an OCI `linux.seccomp` value for a container with
/// capabilities `caps` (`CAP_…` names).
pub fn docker_default(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let arch = host_arch();
    let mut syscalls = Vec::new();
    for e in ENTRIES {
        if !e.caps.iter().all(|c| has(c)) || e.not_caps.iter().any(|c| has(c)) {
            continue;
        }
        if (!e.arches.is_empty() && !e.arches.contains(&arch)) || e.not_arches.contains(&arch) {
            continue;
        }
        let mut s = json!({"names": e.names});
        match e.errno {
            None => s["action"] = json!("SCMP_ACT_ALLOW"),
            Some(n) => {
                s["action"] = json!("SCMP_ACT_ERRNO");
                s["errnoRet"] = json!(n);
            }
        }
        if !e.args.is_empty() {
            s["args"] = e
                .args
                .iter()
                .map(|(i, v, op)| json!({"index": i, "value": v, "op": op}))
                .collect();
        }
        syscalls.push(s);
    }
    let architectures = match arch {
        "amd64" => json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
        "arm64" => json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
        _ => json!([]),
    };
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": architectures,
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_runtime::seccomp::{Filters, ret};
    use oci_spec::runtime::LinuxSeccomp;

    #[test]
    fn resolves_by_capabilities() {
        let plain = docker_default(&["CAP_CHOWN".into()]);
        let names = |v: &Value| -> Vec<String> {
            v["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["action"] == "SCMP_ACT_ALLOW" && s.get("args").is_none())
                .flat_map(|s| {
                    s["names"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|n| n.as_str().unwrap().to_string())
                })
                .collect()
        };
        assert!(!names(&plain).contains(&"mount".to_string()));
        assert!(
            plain.to_string().contains("\"errnoRet\":38"),
            "clone3 → ENOSYS without SYS_ADMIN"
        );
        let admin = docker_default(&["CAP_SYS_ADMIN".into()]);
        assert!(names(&admin).contains(&"mount".to_string()));
        assert!(!admin.to_string().contains("\"errnoRet\":38"));
    }

    /// Docker's default profile for Docker's default capabilities, compiled
    /// by the runtime.
    fn docker_default_filters() -> Filters {
        let caps: Vec<String> = crate::DOCKER_DEFAULT
            .iter()
            .map(|s| s.to_string())
            .collect();
        let profile: LinuxSeccomp = serde_json::from_value(docker_default(&caps)).unwrap();
        berth_runtime::seccomp::compile(&profile).unwrap()
    }

    #[test]
    fn docker_default_compiles_into_two_filters() {
        let f = docker_default_filters();
        assert_eq!(
            f.programs.len(),
            2,
            "allow-list filter plus clone3 → ENOSYS"
        );
        assert!(f.programs[0].len() > 100);
    }

    #[test]
    fn docker_default_means_what_docker_s_does() {
        use syscalls::Sysno;
        let f = docker_default_filters();
        let v = |s: Sysno, args: [u64; 6]| f.verdict(s.id() as u32, args).unwrap();
        let eperm = ret::errno(libc::EPERM as u32);
        assert_eq!(v(Sysno::read, [0; 6]), ret::ALLOW);
        assert_eq!(v(Sysno::execve, [0; 6]), ret::ALLOW);
        assert_eq!(v(Sysno::clone3, [0; 6]), ret::errno(libc::ENOSYS as u32));
        assert_eq!(v(Sysno::unshare, [0; 6]), eperm);
        assert_eq!(v(Sysno::mount, [0; 6]), eperm);
        assert_eq!(v(Sysno::kexec_load, [0; 6]), eperm);
        // personality: only the listed personas.
        assert_eq!(v(Sysno::personality, [0, 0, 0, 0, 0, 0]), ret::ALLOW);
        assert_eq!(
            v(Sysno::personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
            ret::ALLOW
        );
        assert_eq!(v(Sysno::personality, [0x0040_0000, 0, 0, 0, 0, 0]), eperm);
        // socket: anything but AF_VSOCK (40).
        assert_eq!(v(Sysno::socket, [2, 1, 0, 0, 0, 0]), ret::ALLOW);
        assert_eq!(v(Sysno::socket, [40, 1, 0, 0, 0, 0]), eperm);
        // clone: without namespace flags only (CAP_SYS_ADMIN is not granted).
        assert_eq!(
            v(Sysno::clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            ret::ALLOW
        );
        assert_eq!(
            v(Sysno::clone, [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]),
            eperm
        );
        // A syscall number no table knows.
        assert_eq!(f.verdict(1000, [0; 6]).unwrap(), eperm);
    }
}

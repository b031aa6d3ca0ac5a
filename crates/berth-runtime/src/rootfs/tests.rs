//! The rootfs sequence through the syscall seam, without root: the calls
//! `prepare`, `pivot` and `finish` make for a Docker-like spec, in order,
//! against the recording double, on a temporary rootfs.

use super::*;
use crate::sys::record::Recorder;
use std::path::PathBuf;

/// A spec with Docker's mount table (as `berth-spec` writes it), a file
/// bind, masked and read-only paths, a device and a read-only root.
fn docker_like(hosts: &Path) -> Spec {
    serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": true},
        "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["ro", "nosuid", "noexec", "nodev"]},
            {"destination": "/etc/hosts", "type": "bind", "source": hosts,
             "options": ["rbind", "rprivate", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "cgroup"}],
            "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                         "fileMode": 438, "uid": 0, "gid": 0}],
            "maskedPaths": ["/proc/kcore", "/proc/acpi", "/proc/missing"],
            "readonlyPaths": ["/proc/sys", "/proc/bus"]
        }
    }))
    .unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
    hosts: PathBuf,
    cgroup: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("proc/acpi")).unwrap();
    std::fs::create_dir_all(rootfs.join("proc/sys")).unwrap();
    std::fs::write(rootfs.join("proc/kcore"), b"").unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, b"127.0.0.1 localhost\n").unwrap();
    let cgroup = dir.path().join("cgroup");
    std::fs::create_dir(&cgroup).unwrap();
    Fixture {
        rootfs: rootfs.canonicalize().unwrap(),
        hosts: hosts.canonicalize().unwrap(),
        cgroup,
        _dir: dir,
    }
}

fn context<'a>(f: &'a Fixture, paths: &'a [(String, PathBuf)], userns: bool) -> RootfsContext<'a> {
    RootfsContext {
        rootfs_mounts: &[],
        rootfs: &f.rootfs,
        userns,
        cgroupns: true,
        cgroup_paths: paths,
        host_mount_ns: false,
    }
}

/// Replaces the fixture's host paths in a log with names.
fn shown(f: &Fixture, log: Vec<String>) -> Vec<String> {
    let (root, hosts) = (
        f.rootfs.display().to_string(),
        f.hosts.display().to_string(),
    );
    log.into_iter()
        .map(|l| l.replace(&hosts, "<hosts>").replace(&root, "<rootfs>"))
        .collect()
}

#[test]
fn docker_rootfs_sequence_in_order() {
    let f = fixture();
    let spec = docker_like(&f.hosts);
    let paths = vec![(String::new(), f.cgroup.clone())];
    let sys = Recorder::new(&f.rootfs);
    prepare(&sys, &spec, &context(&f, &paths, false)).unwrap();
    pivot(&sys, &f.rootfs, RootChange::Pivot).unwrap();
    finish(&sys, &spec).unwrap();
    let got = shown(&f, sys.take());
    let want = [
        // Propagation: nothing of ours reaches the host.
        "mount none on / MS_REC|MS_SLAVE",
        // The rootfs bound onto itself: a mount point of its own.
        "mount / on / type bind MS_BIND|MS_REC",
        "mount proc on /proc type proc MS_NOSUID|MS_NODEV|MS_NOEXEC",
        "mount tmpfs on /dev type tmpfs MS_NOSUID|MS_STRICTATIME mode=755,size=65536k",
        "mount devpts on /dev/pts type devpts MS_NOSUID|MS_NOEXEC newinstance,ptmxmode=0666,mode=0620,gid=5",
        "mount sysfs on /sys type sysfs MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC",
        // cgroup v2 with a cgroup namespace: the container's own cgroup2.
        "mount cgroup2 on /sys/fs/cgroup type cgroup2 MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC",
        // A file bind: bound, then remounted read-only (a bind takes its
        // flags only on remount), then its propagation.
        "mount <hosts> on /etc/hosts MS_BIND|MS_REC",
        "mount none on /etc/hosts MS_RDONLY|MS_REMOUNT|MS_BIND",
        "mount none on /etc/hosts MS_REC|MS_PRIVATE",
        // Devices: runc's six and the spec's, each with its mode and owner.
        "mknod /dev/null c 1:3 mode=666 owner=0:0",
        "mknod /dev/zero c 1:5 mode=666 owner=0:0",
        "mknod /dev/full c 1:7 mode=666 owner=0:0",
        "mknod /dev/random c 1:8 mode=666 owner=0:0",
        "mknod /dev/urandom c 1:9 mode=666 owner=0:0",
        "mknod /dev/tty c 5:0 mode=666 owner=0:0",
        "mknod /dev/fuse c 10:229 mode=666 owner=0:0",
        // pivot_root, the old root made slave and detached.
        "chdir /",
        "pivot_root . .",
        "fchdir (the old root)",
        "mount none on . MS_REC|MS_SLAVE",
        "umount2 . MNT_DETACH",
        "chdir /",
        // Read-only paths (a missing one skipped), masked paths (a
        // directory gets a read-only tmpfs, a file /dev/null; a missing
        // one skipped), then the read-only root.
        "mount /proc/sys on /proc/sys MS_BIND|MS_REC",
        "mount none on /proc/sys MS_RDONLY|MS_REMOUNT|MS_BIND|MS_REC",
        "mount /dev/null on /proc/kcore MS_BIND",
        "mount tmpfs on /proc/acpi type tmpfs MS_RDONLY",
        "mount none on / MS_RDONLY|MS_REMOUNT|MS_BIND",
    ];
    assert_eq!(got, want, "\ngot:\n{}", got.join("\n"));
    // The /dev links are made for real, inside the rootfs.
    let link = std::fs::read_link(f.rootfs.join("dev/fd")).unwrap();
    assert_eq!(link, Path::new("/proc/self/fd"));
}

#[test]
fn in_a_user_namespace_devices_are_bound_from_the_host() {
    let f = fixture();
    let spec = docker_like(&f.hosts);
    let paths = vec![(String::new(), f.cgroup.clone())];
    let sys = Recorder::new(&f.rootfs);
    prepare(&sys, &spec, &context(&f, &paths, true)).unwrap();
    let got = shown(&f, sys.take());
    assert!(!got.iter().any(|l| l.starts_with("mknod")), "{got:#?}");
    for dev in ["null", "zero", "full", "random", "urandom", "tty", "fuse"] {
        let want = format!("mount /dev/{dev} on /dev/{dev} MS_BIND");
        assert!(got.contains(&want), "{want} not in {got:#?}");
    }
}

#[test]
fn a_failed_mount_names_its_destination_and_stops_the_sequence() {
    let f = fixture();
    let spec = docker_like(&f.hosts);
    let paths = vec![(String::new(), f.cgroup.clone())];
    let mut sys = Recorder::new(&f.rootfs);
    sys.fail = vec![("mount devpts".into(), libc::EPERM)];
    let err = prepare(&sys, &spec, &context(&f, &paths, false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("devpts on /dev/pts"), "{err}");
    let got = sys.take();
    assert!(got.last().unwrap().starts_with("mount devpts"), "{got:#?}");
}

#[test]
fn no_pivot_moves_the_root_and_chroots() {
    let f = fixture();
    let sys = Recorder::new(&f.rootfs);
    pivot(&sys, &f.rootfs, RootChange::MoveAndChroot).unwrap();
    assert_eq!(
        sys.take(),
        ["chdir /", "mount . on / MS_MOVE", "chroot .", "chdir /"]
    );
}

#[test]
fn without_a_cgroup_namespace_the_cgroup_is_bound_read_only() {
    let f = fixture();
    let spec = docker_like(&f.hosts);
    let paths = vec![(String::new(), f.cgroup.clone())];
    let sys = Recorder::new(&f.rootfs);
    let mut ctx = context(&f, &paths, false);
    ctx.cgroupns = false;
    prepare(&sys, &spec, &ctx).unwrap();
    let cg = f.cgroup.canonicalize().unwrap().display().to_string();
    let got: Vec<String> = sys
        .take()
        .into_iter()
        .filter(|l| l.contains("/sys/fs/cgroup"))
        .map(|l| l.replace(&cg, "<cgroup>"))
        .collect();
    assert_eq!(
        got,
        [
            "mount <cgroup> on /sys/fs/cgroup MS_BIND|MS_REC",
            "mount none on /sys/fs/cgroup MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND",
        ]
    );
}

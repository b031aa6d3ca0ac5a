//! docker's container defaults, for the callers that generate specs (the engine
//! and the builder): the standard mounts, masked and read-only /proc paths, and
//! the device allow-list. Nothing here reads an image.

use serde_json::{Value, json};

/// docker's masked paths.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// docker's read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Value {
    json!({"destination": dest, "type": typ, "source": source, "options": options})
}

/// What a rootfs may gain from [`mounts`] only to be mounted over, when
/// the image lacks it (paths relative to the rootfs): the mount points
/// the runtime makes. Differs leave them out (see
/// `berth_store::archive::diff::hide_mount_points`), as docker's init
/// layer and BuildKit's stub cleaner do.
pub const MOUNT_POINTS: &[&str] = &[
    "proc",
    "dev",
    "sys",
    "etc/resolv.conf",
    "etc/hostname",
    "etc/hosts",
];

/// The mounts every docker container has; `/etc/{resolv.conf,hostname,hosts}`
/// are bound from the given host files.
pub fn mounts(sys_rw: bool, resolv: &str, hostname: &str, hosts: &str) -> Vec<Value> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &[
                "nosuid",
                "noexec",
                "nodev",
                if sys_rw { "rw" } else { "ro" },
            ],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"],
        ),
        mount("/etc/resolv.conf", "bind", resolv, &["rbind", "rprivate"]),
        mount("/etc/hostname", "bind", hostname, &["rbind", "rprivate"]),
        mount("/etc/hosts", "bind", hosts, &["rbind", "rprivate"]),
    ]
}

/// The device cgroup rules: deny everything, then docker's allow-list
/// (mknod of any node; null, zero, full, tty, random, urandom, ptmx, tun, pts).
pub fn device_rules(privileged: bool) -> Vec<Value> {
    if privileged {
        return vec![json!({"allow": true, "access": "rwm"})];
    }
    let mut d = vec![json!({"allow": false, "access": "rwm"})];
    for t in ["c", "b"] {
        d.push(json!({"allow": true, "type": t, "access": "m"}));
    }
    for (ma, mi) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (5, 0),
        (1, 8),
        (1, 9),
        (5, 2),
        (10, 200),
    ] {
        d.push(json!({"allow": true, "type": "c", "major": ma, "minor": mi, "access": "rwm"}));
    }
    d.push(json!({"allow": true, "type": "c", "major": 136, "access": "rwm"}));
    d
}

/// The default `/etc/hosts` of a container.
pub fn hosts_file(hostname: &str, aliases: &[&str], extra: &[(String, String)]) -> String {
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (name, ip) in extra {
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    let mut names = vec![hostname];
    names.extend(aliases.iter().copied().filter(|a| *a != hostname));
    hosts.push_str(&format!("127.0.1.1\t{}\n", names.join(" ")));
    hosts
}

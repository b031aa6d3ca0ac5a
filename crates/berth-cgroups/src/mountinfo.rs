//! `/proc/self/mountinfo`, parsed once for every crate that asks the mount
//! table something (the cgroup layout and hierarchies here, the rootfs's
//! parent mount in the runtime, the engine's cgroup defaults). Written by
//! hand: the format is one line per mount (proc(5)), and the crates that
//! parse it (procfs, libmount bindings) bring far more than these few fields.

/// One mount of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount's root within its filesystem (field 4).
    pub root: String,
    /// Where it is mounted (field 5), with `\040`-style escapes undone.
    pub mount_point: String,
    /// Per-mount options (`rw,nosuid,…`).
    pub options: String,
    /// Optional fields: `shared:N`, `master:N`, `propagate_from:N`, `unbindable`.
    pub optional: Vec<String>,
    /// Filesystem type (`cgroup2`, `overlay`, …).
    pub fstype: String,
    /// Mount source.
    pub source: String,
    /// Per-superblock options (for cgroup v1, the controllers).
    pub super_options: String,
}

impl Mount {
    /// Whether it is a shared mount (a peer group member).
    pub fn is_shared(&self) -> bool {
        self.optional.iter().any(|o| o.starts_with("shared:"))
    }

    /// Whether it is unbindable.
    pub fn is_unbindable(&self) -> bool {
        self.optional.iter().any(|o| o == "unbindable")
    }
}

/// This process's mount table.
pub fn read() -> std::io::Result<Vec<Mount>> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|s| parse(&s))
}

/// The cgroup mounts (`cgroup`, `cgroup2`) of this process's mount table,
/// read once per process: the hierarchies do not move while berth runs, and
/// starting a container asks for them several times.
pub fn cgroup_mounts() -> &'static [Mount] {
    static M: std::sync::OnceLock<Vec<Mount>> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        read()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
            .collect()
    })
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let (pre, post) = line.split_once(" - ")?;
    let f: Vec<&str> = pre.split(' ').collect();
    if f.len() < 6 {
        return None;
    }
    let mut p = post.split(' ');
    Some(Mount {
        root: unescape(f[3]),
        mount_point: unescape(f[4]),
        options: f[5].to_string(),
        optional: f[6..].iter().map(|s| s.to_string()).collect(),
        fstype: p.next()?.to_string(),
        source: unescape(p.next().unwrap_or_default()),
        super_options: p.next().unwrap_or_default().to_string(),
    })
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_optional_tags_and_escapes() {
        let t = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid master:3 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 /sub /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
40 22 0:50 / /mnt/with\\040space\\134x rw unbindable - tmpfs my\\040src rw
bad line
";
        let m = parse(t);
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].mount_point, "/");
        assert!(m[0].is_shared() && !m[0].is_unbindable());
        assert_eq!(
            (m[2].fstype.as_str(), m[2].optional.clone()),
            ("cgroup2", vec!["master:3".to_string()])
        );
        assert_eq!(m[3].root, "/sub");
        assert_eq!(m[3].super_options, "rw,cpu,cpuacct");
        assert!(m[3].optional.is_empty());
        assert_eq!(m[4].mount_point, "/mnt/with space\\x");
        assert_eq!(m[4].source, "my src");
        assert!(m[4].is_unbindable());
    }

    #[test]
    fn reads_this_machine() {
        let m = read().unwrap();
        assert!(m.iter().any(|x| x.mount_point == "/"), "{m:?}");
    }
}

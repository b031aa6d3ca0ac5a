//! cgroup v1: one directory per controller hierarchy (found in mountinfo, so
//! co-mounted controllers like `cpu,cpuacct` work), limits written per controller.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use crate::fsutil::{self, CgroupError, flat_keyed, read_u64, write};
use crate::{FreezerState, Stats};

/// The controllers berth manages on v1.
pub const CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
];

/// A container cgroup across the v1 hierarchies.
#[derive(Debug, Clone)]
pub struct V1Manager {
    /// controller → directory.
    paths: BTreeMap<String, PathBuf>,
    /// controller → mountpoint (for cpuset's ancestors).
    mounts: BTreeMap<String, PathBuf>,
}

/// A v1 hierarchy mount: its controllers, where it is mounted, and its root.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// Controllers on it.
    pub controllers: Vec<String>,
    /// Mount point.
    pub mountpoint: PathBuf,
    /// The cgroup path that is this mount's root (usually `/`).
    pub root: String,
}

/// The v1 hierarchies mounted on this machine.
pub fn hierarchies() -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for m in crate::mountinfo::cgroup_mounts() {
        if m.fstype != "cgroup" {
            continue;
        }
        let controllers: Vec<String> = m
            .super_options
            .split(',')
            .filter(|o| CONTROLLERS.contains(o))
            .map(str::to_string)
            .collect();
        // A hierarchy is mounted more than once when a container shares the
        // host's mount namespace (its /sys/fs/cgroup is in the host's table
        // then): the first mount, the host's, is the one to use.
        if controllers.is_empty() || out.iter().any(|h| h.controllers == controllers) {
            continue;
        }
        out.push(Hierarchy {
            controllers,
            mountpoint: PathBuf::from(&m.mount_point),
            root: m.root.clone(),
        });
    }
    out
}

/// This process's cgroup per v1 controller, from /proc/self/cgroup.
fn own_cgroups() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(s) = std::fs::read_to_string("/proc/self/cgroup") {
        for line in s.lines() {
            let mut it = line.splitn(3, ':');
            let (_, ctrls, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or("/"));
            for c in ctrls.split(',') {
                if !c.is_empty() {
                    out.insert(c.to_string(), path.to_string());
                }
            }
        }
    }
    out
}

impl V1Manager {
    /// The cgroup `path` (absolute, or relative to this process's cgroup in each
    /// hierarchy) on this machine's hierarchies.
    pub fn new(path: &str) -> Result<Self, CgroupError> {
        let own = own_cgroups();
        let mut paths = BTreeMap::new();
        let mut mounts = BTreeMap::new();
        for h in hierarchies() {
            for c in &h.controllers {
                let rel = if path.starts_with('/') {
                    path.trim_start_matches('/').to_string()
                } else {
                    let mine = own.get(c).map(String::as_str).unwrap_or("/");
                    let mine = mine.strip_prefix(h.root.as_str()).unwrap_or(mine);
                    format!("{}/{}", mine.trim_matches('/'), path)
                        .trim_start_matches('/')
                        .to_string()
                };
                paths.insert(c.clone(), h.mountpoint.join(rel));
                mounts.insert(c.clone(), h.mountpoint.clone());
            }
        }
        if paths.is_empty() {
            return Err(CgroupError::MissingController("any v1 controller".into()));
        }
        Ok(V1Manager { paths, mounts })
    }

    /// A manager over explicit `controller → (mountpoint, dir)` pairs (tests).
    pub fn with_paths(map: BTreeMap<String, (PathBuf, PathBuf)>) -> Self {
        let mut paths = BTreeMap::new();
        let mut mounts = BTreeMap::new();
        for (c, (m, p)) in map {
            mounts.insert(c.clone(), m);
            paths.insert(c, p);
        }
        V1Manager { paths, mounts }
    }

    fn dir(&self, c: &str) -> Result<&Path, CgroupError> {
        self.paths
            .get(c)
            .map(PathBuf::as_path)
            .ok_or_else(|| CgroupError::MissingController(c.to_string()))
    }

    /// Directories per controller.
    pub fn paths(&self) -> Vec<(String, PathBuf)> {
        self.paths
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Creates every directory; cpuset ancestors get their parent's cpus and mems.
    pub fn create(&self) -> Result<(), CgroupError> {
        let mut seen = std::collections::BTreeSet::new();
        for (c, p) in &self.paths {
            if !seen.insert(p.clone()) {
                continue; // co-mounted controllers share a directory
            }
            if c == "cpuset" {
                self.create_cpuset(p)?;
            } else {
                std::fs::create_dir_all(p).map_err(|e| fsutil::io("mkdir", p, e))?;
            }
        }
        Ok(())
    }

    fn create_cpuset(&self, p: &Path) -> Result<(), CgroupError> {
        let mount = self.mounts.get("cpuset").cloned().unwrap_or_default();
        let rel = p.strip_prefix(&mount).unwrap_or(p);
        let mut cur = mount.clone();
        for comp in rel.components() {
            let parent = cur.clone();
            cur.push(comp);
            if !cur.exists() {
                std::fs::create_dir(&cur).map_err(|e| fsutil::io("mkdir", &cur, e))?;
            }
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let mine = cur.join(f);
                if std::fs::read_to_string(&mine)
                    .map(|s| s.trim().is_empty())
                    .unwrap_or(false)
                {
                    let v = fsutil::read(&parent.join(f))?;
                    write(&mine, v.trim())?;
                }
            }
        }
        Ok(())
    }

    /// Opens every hierarchy's `tasks` file for [`crate::SelfJoin`].
    pub fn open_tasks(&self) -> Result<Vec<(PathBuf, std::fs::File)>, CgroupError> {
        self.paths
            .values()
            .map(|p| {
                let t = p.join("tasks");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&t)
                    .map(|f| (t.clone(), f))
                    .map_err(|e| crate::fsutil::io("open", &t, e))
            })
            .collect()
    }

    /// Moves `pid` into every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        for p in self.paths.values() {
            write(&p.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Applies `r`, controller by controller.
    pub fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(u) = r.unified()
            && !u.is_empty()
        {
            return Err(CgroupError::Invalid(
                "unified resources need cgroup v2, but this machine's controllers are on v1".into(),
            ));
        }
        if let Some(m) = r.memory() {
            self.apply_memory(m)?;
        }
        if let Some(c) = r.cpu() {
            self.apply_cpu(c)?;
        }
        if let Some(p) = r.pids() {
            let d = self.dir("pids")?;
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            write(&d.join("pids.max"), &v)?;
        }
        if let Some(b) = r.block_io() {
            self.apply_blkio(b)?;
        }
        if let Some(devs) = r.devices() {
            self.apply_devices(devs)?;
        }
        for h in r.hugepage_limits().iter().flatten() {
            let d = self.dir("hugetlb")?;
            write(
                &d.join(format!("hugetlb.{}.limit_in_bytes", h.page_size())),
                &h.limit().to_string(),
            )?;
        }
        if let Some(n) = r.network() {
            if let Some(id) = n.class_id() {
                write(
                    &self.dir("net_cls")?.join("net_cls.classid"),
                    &id.to_string(),
                )?;
            }
            for p in n.priorities().iter().flatten() {
                write(
                    &self.dir("net_prio")?.join("net_prio.ifpriomap"),
                    &format!("{} {}", p.name(), p.priority()),
                )?;
            }
        }
        Ok(())
    }

    /// The device rules, in order: each write to devices.allow or
    /// devices.deny is one rule, so a run of rules of one kind goes through
    /// one open file (a start has a dozen).
    fn apply_devices(
        &self,
        devs: &[oci_spec::runtime::LinuxDeviceCgroup],
    ) -> Result<(), CgroupError> {
        use std::io::Write;
        let d = self.dir("devices")?;
        let mut open: Option<(bool, PathBuf, std::fs::File)> = None;
        for rule in devs {
            if open
                .as_ref()
                .is_none_or(|(allow, _, _)| *allow != rule.allow())
            {
                let p = d.join(if rule.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                });
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&p)
                    .map_err(|e| fsutil::io("open", &p, e))?;
                open = Some((rule.allow(), p, f));
            }
            let (_, p, f) = open.as_mut().expect("opened above");
            let v = device_rule(rule);
            f.write_all(v.as_bytes())
                .map_err(|e| fsutil::io(format!("write {v:?} to"), p, e))?;
        }
        Ok(())
    }

    /// The memory controller: limit and swap (in the order the kernel
    /// accepts), reservation, swappiness, OOM killer.
    fn apply_memory(&self, m: &oci_spec::runtime::LinuxMemory) -> Result<(), CgroupError> {
        let d = self.dir("memory")?;
        let limit = m.limit();
        let swap = m.swap();
        let set_limit = |v: i64| write(&d.join("memory.limit_in_bytes"), &v.to_string());
        let memsw = d.join("memory.memsw.limit_in_bytes");
        match (limit, swap) {
            (Some(l), Some(s)) => {
                if !memsw.exists() {
                    if s != l && s != -1 && s != 0 {
                        return Err(CgroupError::Invalid(
                            "swap limit set but the kernel has no swap accounting (memory.memsw.limit_in_bytes)".into(),
                        ));
                    }
                    set_limit(l)?;
                } else if s == -1 {
                    write(&memsw, "-1")?;
                    set_limit(l)?;
                } else if set_limit(l).is_err() {
                    // The new limit is above the current memsw limit: raise memsw first.
                    write(&memsw, &s.to_string())?;
                    set_limit(l)?;
                } else {
                    write(&memsw, &s.to_string())?;
                }
            }
            (Some(l), None) => set_limit(l)?,
            (None, Some(s)) if memsw.exists() => write(&memsw, &s.to_string())?,
            _ => {}
        }
        if let Some(res) = m.reservation() {
            write(&d.join("memory.soft_limit_in_bytes"), &res.to_string())?;
        }
        if let Some(sw) = m.swappiness() {
            if sw > 100 {
                return Err(CgroupError::Invalid(format!(
                    "invalid memory swappiness {sw}: must be 0 to 100"
                )));
            }
            write(&d.join("memory.swappiness"), &sw.to_string())?;
        }
        if m.disable_oom_killer() == Some(true) {
            write(&d.join("memory.oom_control"), "1")?;
        }
        Ok(())
    }

    /// The cpu and cpuset controllers.
    fn apply_cpu(&self, c: &oci_spec::runtime::LinuxCpu) -> Result<(), CgroupError> {
        let d = self.dir("cpu")?;
        if let Some(s) = c.shares()
            && s != 0
        {
            write(&d.join("cpu.shares"), &s.to_string())?;
        }
        if let Some(p) = c.period()
            && p != 0
        {
            write(&d.join("cpu.cfs_period_us"), &p.to_string())?;
        }
        if let Some(q) = c.quota()
            && q != 0
        {
            write(&d.join("cpu.cfs_quota_us"), &q.to_string())?;
        }
        if let Some(p) = c.realtime_period()
            && p != 0
        {
            write(&d.join("cpu.rt_period_us"), &p.to_string())?;
        }
        if let Some(rt) = c.realtime_runtime()
            && rt != 0
        {
            write(&d.join("cpu.rt_runtime_us"), &rt.to_string())?;
        }
        if let Some(idle) = c.idle() {
            write(&d.join("cpu.idle"), &idle.to_string())?;
        }
        let cs = self.dir("cpuset");
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            write(&cs?.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            write(&self.dir("cpuset")?.join("cpuset.mems"), mems)?;
        }
        Ok(())
    }

    /// The blkio controller: weights and throttles.
    fn apply_blkio(&self, b: &oci_spec::runtime::LinuxBlockIo) -> Result<(), CgroupError> {
        let d = self.dir("blkio")?;
        if let Some(w) = b.weight() {
            write(&d.join("blkio.weight"), &w.to_string())?;
        }
        if let Some(w) = b.leaf_weight() {
            write(&d.join("blkio.leaf_weight"), &w.to_string())?;
        }
        for wd in b.weight_device().iter().flatten() {
            if let Some(w) = wd.weight() {
                write(
                    &d.join("blkio.weight_device"),
                    &format!("{}:{} {w}", wd.major(), wd.minor()),
                )?;
            }
        }
        let throttles = [
            (
                "blkio.throttle.read_bps_device",
                b.throttle_read_bps_device(),
            ),
            (
                "blkio.throttle.write_bps_device",
                b.throttle_write_bps_device(),
            ),
            (
                "blkio.throttle.read_iops_device",
                b.throttle_read_iops_device(),
            ),
            (
                "blkio.throttle.write_iops_device",
                b.throttle_write_iops_device(),
            ),
        ];
        for (file, devs) in throttles {
            for t in devs.iter().flatten() {
                write(
                    &d.join(file),
                    &format!("{}:{} {}", t.major(), t.minor(), t.rate()),
                )?;
            }
        }
        Ok(())
    }

    /// Freezes or thaws.
    pub fn freeze(&self, s: FreezerState) -> Result<(), CgroupError> {
        let f = self.dir("freezer")?.join("freezer.state");
        let want = match s {
            FreezerState::Frozen => "FROZEN",
            FreezerState::Thawed => "THAWED",
        };
        for _ in 0..1000 {
            write(&f, want)?;
            if fsutil::read(&f)?.trim() == want {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(CgroupError::Invalid(format!(
            "{} did not reach {want}",
            f.display()
        )))
    }

    /// Whether frozen.
    pub fn frozen(&self) -> bool {
        self.dir("freezer")
            .ok()
            .and_then(|d| std::fs::read_to_string(d.join("freezer.state")).ok())
            .is_some_and(|s| s.trim() != "THAWED")
    }

    /// Processes.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let d = self
            .dir("pids")
            .or_else(|_| self.dir("memory"))
            .or_else(|_| {
                self.paths
                    .values()
                    .next()
                    .map(PathBuf::as_path)
                    .ok_or_else(|| CgroupError::MissingController("any".into()))
            })?;
        fsutil::read_pids(&d.join("cgroup.procs"))
    }

    /// The memory controller's count of OOM kills (0 without one).
    pub fn oom_kills(&self) -> u64 {
        self.dir("memory")
            .map(|d| flat_keyed(&d.join("memory.oom_control"), "oom_kill"))
            .unwrap_or(0)
    }

    /// Usage numbers.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        let mut s = Stats::default();
        if let Ok(d) = self.dir("cpuacct") {
            s.cpu_usage_ns = read_u64(&d.join("cpuacct.usage"));
        }
        if let Ok(d) = self.dir("memory") {
            s.memory_usage = read_u64(&d.join("memory.usage_in_bytes"));
            s.memory_max_usage = read_u64(&d.join("memory.max_usage_in_bytes"));
            let lim = read_u64(&d.join("memory.limit_in_bytes"));
            // v1 reports "no limit" as a huge page-aligned number.
            s.memory_limit = if lim >= 0x7fff_ffff_ffff_f000 { 0 } else { lim };
            s.memory_cache = flat_keyed(&d.join("memory.stat"), "total_cache");
            s.oom_kills = self.oom_kills();
        }
        if let Ok(d) = self.dir("pids") {
            s.pids_current = read_u64(&d.join("pids.current"));
            s.pids_limit = read_u64(&d.join("pids.max"));
        }
        if let Ok(d) = self.dir("blkio")
            && let Ok(t) =
                std::fs::read_to_string(d.join("blkio.throttle.io_service_bytes_recursive"))
        {
            for l in t.lines() {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() == 3 {
                    let v: u64 = f[2].parse().unwrap_or(0);
                    match f[1] {
                        "Read" => s.io_read_bytes += v,
                        "Write" => s.io_write_bytes += v,
                        _ => {}
                    }
                }
            }
        }
        Ok(s)
    }

    /// Removes every directory.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        for p in self.paths.values() {
            fsutil::remove_dir(p)?;
        }
        Ok(())
    }
}

/// `c 1:3 rwm` for devices.allow / devices.deny.
pub fn device_rule(r: &LinuxDeviceCgroup) -> String {
    let typ = r
        .typ()
        .map(|t| t.as_str().to_string())
        .unwrap_or_else(|| "a".into());
    if typ == "a" && r.major().is_none() && r.minor().is_none() {
        return "a".into();
    }
    let num = |n: Option<i64>| {
        n.filter(|v| *v >= 0)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "*".into())
    };
    let access = r.access().clone().unwrap_or_else(|| "rwm".into());
    format!("{typ} {}:{} {access}", num(r.major()), num(r.minor()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> (tempfile::TempDir, V1Manager) {
        let t = tempfile::tempdir().unwrap();
        let mut map = BTreeMap::new();
        for c in [
            "memory", "cpu", "cpuset", "pids", "devices", "freezer", "blkio",
        ] {
            let m = t.path().join(c);
            std::fs::create_dir_all(m.join("ctr")).unwrap();
            map.insert(c.to_string(), (m.clone(), m.join("ctr")));
        }
        std::fs::write(t.path().join("memory/ctr/memory.memsw.limit_in_bytes"), "").unwrap();
        (t, V1Manager::with_paths(map))
    }

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn writes_limits() {
        let (t, m) = fake();
        m.apply(&res(r#"{"memory":{"limit":67108864,"swap":134217728,"swappiness":10},"cpu":{"shares":512,"quota":50000,"period":100000,"cpus":"0"},"pids":{"limit":64},"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}],"blockIO":{"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}]}}"#)).unwrap();
        let r = |p: &str| std::fs::read_to_string(t.path().join(p)).unwrap();
        assert_eq!(r("memory/ctr/memory.limit_in_bytes"), "67108864");
        assert_eq!(r("memory/ctr/memory.memsw.limit_in_bytes"), "134217728");
        assert_eq!(r("memory/ctr/memory.swappiness"), "10");
        assert_eq!(r("cpu/ctr/cpu.shares"), "512");
        assert_eq!(r("cpu/ctr/cpu.cfs_quota_us"), "50000");
        assert_eq!(r("cpuset/ctr/cpuset.cpus"), "0");
        assert_eq!(r("pids/ctr/pids.max"), "64");
        assert_eq!(r("devices/ctr/devices.allow"), "c 1:3 rwm");
        assert_eq!(r("devices/ctr/devices.deny"), "a");
        assert_eq!(r("blkio/ctr/blkio.throttle.read_bps_device"), "8:0 1048576");
    }

    #[test]
    fn rejects_unified_and_bad_swappiness() {
        let (_t, m) = fake();
        assert!(m.apply(&res(r#"{"unified":{"memory.max":"1"}}"#)).is_err());
        assert!(m.apply(&res(r#"{"memory":{"swappiness":101}}"#)).is_err());
    }
}

//! cgroup v2: one directory on the unified hierarchy, controllers enabled in the
//! ancestors' `cgroup.subtree_control`, limits in the v2 files (memory.max,
//! memory.swap.max, cpu.max, cpu.weight, cpuset.*, pids.max, io.max, io.weight,
//! hugetlb.*.max, and `unified` keys verbatim), freezing through cgroup.freeze,
//! and device rules as an eBPF program ([`crate::v2::ebpf`]).

pub mod ebpf;

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use crate::fsutil::{self, CgroupError, flat_keyed, read_u64, write};
use crate::{FreezerState, Stats};

/// The controllers available in the cgroup directory `dir` (its
/// `cgroup.controllers`; none when it cannot be read).
pub fn controllers(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// [`controllers`] as a message says them: space-separated, or `none`.
pub fn controller_list(dir: &Path) -> String {
    let c = controllers(dir);
    if c.is_empty() {
        "none".into()
    } else {
        c.join(" ")
    }
}

/// A container cgroup on the unified hierarchy.
#[derive(Debug, Clone)]
pub struct V2Manager {
    base: PathBuf,
    path: PathBuf,
}

/// cgroup v1 cpu.shares → v2 cpu.weight, the conversion runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.saturating_sub(2)) * 9999) / 262142
}

impl V2Manager {
    /// `path` (absolute, or relative to this process's cgroup) under `base`.
    pub fn new(base: &Path, path: &str) -> Result<Self, CgroupError> {
        let rel = if path.starts_with('/') {
            path.trim_start_matches('/').to_string()
        } else {
            let own = crate::own_v2_path().unwrap_or_else(|| "/".into());
            format!("{}/{}", own.trim_matches('/'), path)
                .trim_start_matches('/')
                .to_string()
        };
        Ok(V2Manager {
            base: base.to_path_buf(),
            path: base.join(rel),
        })
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory and enables the available controllers on the way down.
    pub fn create(&self) -> Result<(), CgroupError> {
        let rel = self
            .path
            .strip_prefix(&self.base)
            .unwrap_or(&self.path)
            .to_path_buf();
        let mut cur = self.base.clone();
        for comp in rel.components() {
            let avail = std::fs::read_to_string(cur.join("cgroup.controllers")).unwrap_or_default();
            let enable: Vec<String> = avail
                .split_whitespace()
                .filter(|c| {
                    matches!(
                        *c,
                        "cpu" | "cpuset" | "memory" | "pids" | "io" | "hugetlb" | "misc"
                    )
                })
                .map(|c| format!("+{c}"))
                .collect();
            if !enable.is_empty() {
                // Enabling can fail on the root of a delegated subtree with
                // processes in it; the limits that need it will say so.
                let _ = write(&cur.join("cgroup.subtree_control"), &enable.join(" "));
            }
            cur.push(comp);
            if !cur.exists() {
                std::fs::create_dir(&cur).map_err(|e| fsutil::io("mkdir", &cur, e))?;
            }
        }
        Ok(())
    }

    /// The controllers `r` needs that this cgroup has not got (a delegated
    /// subtree may be given only some): `memory`, `cpu`, `cpuset`, `pids`,
    /// `io`, `hugetlb`.
    pub fn missing_controllers(&self, r: &LinuxResources) -> Vec<&'static str> {
        let have = controllers(&self.path);
        let cpu = r.cpu().as_ref();
        let wanted = [
            ("memory", r.memory().is_some()),
            (
                "cpu",
                cpu.is_some_and(|c| {
                    c.shares().is_some_and(|s| s != 0)
                        || c.quota().is_some()
                        || c.period().is_some()
                }),
            ),
            (
                "cpuset",
                cpu.is_some_and(|c| c.cpus().is_some() || c.mems().is_some()),
            ),
            ("pids", r.pids().is_some()),
            ("io", r.block_io().is_some()),
            (
                "hugetlb",
                r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
            ),
        ];
        wanted
            .into_iter()
            .filter(|(c, w)| *w && !have.iter().any(|h| h == c))
            .map(|(c, _)| c)
            .collect()
    }

    /// Moves `pid` in.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        write(&self.path.join("cgroup.procs"), &pid.to_string())
    }

    fn set(&self, file: &str, v: &str) -> Result<(), CgroupError> {
        write(&self.path.join(file), v)
    }

    /// Applies `r`.
    pub fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(m) = r.memory() {
            let lim = m.limit();
            if let Some(l) = lim {
                self.set("memory.max", &max_or(l))?;
            }
            if let Some(s) = m.swap() {
                // OCI's swap is memory+swap; v2's swap.max is swap alone.
                let v = match (s, lim) {
                    (-1, _) => "max".to_string(),
                    (s, Some(l)) if l > 0 => (s - l).max(0).to_string(),
                    (s, _) => s.to_string(),
                };
                self.set("memory.swap.max", &v)?;
            }
            if let Some(res) = m.reservation() {
                self.set("memory.low", &max_or(res))?;
            }
            if m.disable_oom_killer() == Some(true) {
                return Err(CgroupError::Invalid(
                    "disableOOMKiller is not supported on cgroup v2".into(),
                ));
            }
        }
        if let Some(c) = r.cpu() {
            if let Some(s) = c.shares()
                && s != 0
            {
                self.set("cpu.weight", &shares_to_weight(s).to_string())?;
            }
            if c.quota().is_some() || c.period().is_some() {
                let q = match c.quota() {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".into(),
                };
                let p = c.period().filter(|p| *p > 0).unwrap_or(100_000);
                self.set("cpu.max", &format!("{q} {p}"))?;
            }
            if let Some(idle) = c.idle() {
                self.set("cpu.idle", &idle.to_string())?;
            }
            if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
                self.set("cpuset.cpus", cpus)?;
            }
            if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
                self.set("cpuset.mems", mems)?;
            }
        }
        if let Some(p) = r.pids() {
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            self.set("pids.max", &v)?;
        }
        if let Some(b) = r.block_io() {
            if let Some(w) = b.weight() {
                // blkio.weight 10..1000 → io.weight 1..10000.
                let w2 = 1 + (u64::from(w).saturating_sub(10)) * 9999 / 990;
                self.set("io.weight", &format!("default {w2}"))?;
            }
            let mut lines: std::collections::BTreeMap<(i64, i64), Vec<String>> = Default::default();
            let groups = [
                ("rbps", b.throttle_read_bps_device()),
                ("wbps", b.throttle_write_bps_device()),
                ("riops", b.throttle_read_iops_device()),
                ("wiops", b.throttle_write_iops_device()),
            ];
            for (k, devs) in groups {
                for t in devs.iter().flatten() {
                    lines
                        .entry((t.major(), t.minor()))
                        .or_default()
                        .push(format!("{k}={}", t.rate()));
                }
            }
            for ((maj, min), kv) in lines {
                self.set("io.max", &format!("{maj}:{min} {}", kv.join(" ")))?;
            }
        }
        for h in r.hugepage_limits().iter().flatten() {
            self.set(
                &format!("hugetlb.{}.max", h.page_size()),
                &h.limit().to_string(),
            )?;
        }
        if let Some(u) = r.unified() {
            let mut keys: Vec<_> = u.iter().collect();
            keys.sort();
            for (k, v) in keys {
                if k.contains('/') || k.starts_with('.') {
                    return Err(CgroupError::Invalid(format!(
                        "unified key {k:?} is not a cgroup file name"
                    )));
                }
                self.set(k, v)?;
            }
        }
        if let Some(devs) = r.devices() {
            let prog = ebpf::compile(devs);
            ebpf::attach(&self.path, &prog)?;
        }
        Ok(())
    }

    /// Freezes or thaws.
    pub fn freeze(&self, s: FreezerState) -> Result<(), CgroupError> {
        let want = if s == FreezerState::Frozen { "1" } else { "0" };
        self.set("cgroup.freeze", want)?;
        for _ in 0..1000 {
            if flat_keyed(&self.path.join("cgroup.events"), "frozen").to_string() == want {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(CgroupError::Invalid(format!(
            "{} did not reach frozen={want}",
            self.path.display()
        )))
    }

    /// Whether frozen.
    pub fn frozen(&self) -> bool {
        std::fs::read_to_string(self.path.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
    }

    /// Processes.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        fsutil::read_pids(&self.path.join("cgroup.procs"))
    }

    /// Usage numbers.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        let p = &self.path;
        let mut io = (0, 0);
        if let Ok(t) = std::fs::read_to_string(p.join("io.stat")) {
            for l in t.lines() {
                for kv in l.split_whitespace().skip(1) {
                    if let Some(v) = kv.strip_prefix("rbytes=") {
                        io.0 += v.parse::<u64>().unwrap_or(0);
                    } else if let Some(v) = kv.strip_prefix("wbytes=") {
                        io.1 += v.parse::<u64>().unwrap_or(0);
                    }
                }
            }
        }
        Ok(Stats {
            cpu_usage_ns: flat_keyed(&p.join("cpu.stat"), "usage_usec") * 1000,
            memory_usage: read_u64(&p.join("memory.current")),
            memory_limit: read_u64(&p.join("memory.max")),
            memory_max_usage: read_u64(&p.join("memory.peak")),
            memory_cache: flat_keyed(&p.join("memory.stat"), "file"),
            // Without the pids controller (a delegated subtree may lack
            // it), the processes in the cgroup.
            pids_current: if p.join("pids.current").exists() {
                read_u64(&p.join("pids.current"))
            } else {
                self.pids().map(|v| v.len() as u64).unwrap_or(0)
            },
            pids_limit: read_u64(&p.join("pids.max")),
            io_read_bytes: io.0,
            io_write_bytes: io.1,
            oom_kills: self.oom_kills(),
        })
    }

    /// memory.events' count of OOM kills (0 without the memory controller).
    pub fn oom_kills(&self) -> u64 {
        flat_keyed(&self.path.join("memory.events"), "oom_kill")
    }

    /// Removes the directory.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        fsutil::remove_dir(&self.path)
    }
}

fn max_or(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn names_the_controllers_a_delegated_cgroup_lacks() {
        let t = tempfile::tempdir().unwrap();
        let m = V2Manager::new(t.path(), "/c").unwrap();
        std::fs::create_dir_all(m.path()).unwrap();
        std::fs::write(m.path().join("cgroup.controllers"), "hugetlb pids\n").unwrap();
        let r = res(
            r#"{"memory": {"limit": 1048576}, "pids": {"limit": 10}, "cpu": {"quota": 50000, "cpus": "0"}}"#,
        );
        assert_eq!(m.missing_controllers(&r), vec!["memory", "cpu", "cpuset"]);
        assert!(
            m.missing_controllers(&res(r#"{"pids": {"limit": 5}}"#))
                .is_empty()
        );
        // Device rules need no controller on v2.
        assert!(m.missing_controllers(&res(r#"{"devices": []}"#)).is_empty());
    }

    #[test]
    fn writes_v2_files_in_a_fake_tree() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids",
        )
        .unwrap();
        let m = V2Manager::new(t.path(), "/berth/c1").unwrap();
        m.create().unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("cgroup.subtree_control")).unwrap(),
            "+cpuset +cpu +io +memory +pids"
        );
        m.apply(&res(r#"{"memory":{"limit":67108864,"swap":134217728,"reservation":-1},"cpu":{"shares":1024,"quota":50000,"period":100000,"cpus":"0-1"},"pids":{"limit":0},"blockIO":{"weight":500,"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":100}],"throttleWriteIOPSDevice":[{"major":8,"minor":0,"rate":7}]},"unified":{"memory.high":"50000000"}}"#)).unwrap();
        let r = |f: &str| std::fs::read_to_string(m.path().join(f)).unwrap();
        assert_eq!(r("memory.max"), "67108864");
        assert_eq!(r("memory.swap.max"), "67108864");
        assert_eq!(r("memory.low"), "max");
        assert_eq!(r("cpu.weight"), "39");
        assert_eq!(r("cpu.max"), "50000 100000");
        assert_eq!(r("cpuset.cpus"), "0-1");
        assert_eq!(r("pids.max"), "max");
        assert_eq!(r("io.weight"), "default 4950");
        assert_eq!(r("io.max"), "8:0 rbps=100 wiops=7");
        assert_eq!(r("memory.high"), "50000000");
        assert!(m.apply(&res(r#"{"unified":{"../x":"1"}}"#)).is_err());
    }

    #[test]
    fn weight_conversion() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262144), 10000);
    }

    #[test]
    fn stats_from_fake_files() {
        let t = tempfile::tempdir().unwrap();
        let m = V2Manager::new(t.path(), "/c").unwrap();
        std::fs::create_dir_all(m.path()).unwrap();
        std::fs::write(
            m.path().join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\n",
        )
        .unwrap();
        std::fs::write(m.path().join("memory.current"), "4096\n").unwrap();
        std::fs::write(m.path().join("pids.current"), "3\n").unwrap();
        std::fs::write(
            m.path().join("io.stat"),
            "8:0 rbytes=10 wbytes=20 rios=1 wios=2\n",
        )
        .unwrap();
        std::fs::write(m.path().join("memory.events"), "low 0\noom 1\noom_kill 1\n").unwrap();
        let s = m.stats().unwrap();
        assert_eq!(
            (
                s.cpu_usage_ns,
                s.memory_usage,
                s.pids_current,
                s.io_read_bytes,
                s.io_write_bytes,
                s.oom_kills
            ),
            (1_500_000, 4096, 3, 10, 20, 1)
        );
    }
}

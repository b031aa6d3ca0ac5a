//! `update`: new limits and restart policy for an existing container, as
//! `docker update` changes them: recorded in the container (a later start
//! uses them) and, while it runs, written to its cgroup through the
//! runtime.

use crate::container::{self, Container, RestartPolicy, Status};
use crate::{Engine, EngineError, Result};

/// What `update` changes; `None` (or 0, as docker sends it) leaves a
/// setting as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// `--memory`, bytes.
    pub memory: Option<i64>,
    /// `--memory-swap`, bytes (-1: unlimited).
    pub memory_swap: Option<i64>,
    /// `--cpus`, in nano-CPUs.
    pub nano_cpus: Option<i64>,
    /// `--cpu-shares`.
    pub cpu_shares: Option<i64>,
    /// `--cpuset-cpus`.
    pub cpuset_cpus: Option<String>,
    /// `--pids-limit` (-1: unlimited).
    pub pids_limit: Option<i64>,
    /// `--restart`.
    pub restart_policy: Option<RestartPolicy>,
}

/// docker's smallest memory limit.
const MIN_MEMORY: i64 = 6 << 20;

impl Update {
    /// The container's settings with this update applied, or docker's
    /// refusal.
    pub fn apply_to(&self, c: &Container) -> Result<container::HostConfig> {
        let mut hc = c.host_config.clone();
        let conflict = |m: &str| Err(EngineError::Invalid(m.to_string()));
        let memory = self.memory.filter(|m| *m != 0);
        let swap = self.memory_swap.filter(|s| *s != 0);
        if let Some(m) = memory {
            if m < MIN_MEMORY {
                return conflict("Minimum memory limit allowed is 6MB");
            }
            // docker: a new limit above the swap limit already set needs
            // a new swap limit with it.
            if swap.is_none() && hc.memory_swap > 0 && m > hc.memory_swap {
                return conflict(
                    "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time",
                );
            }
            hc.memory = m;
        }
        if let Some(s) = swap {
            if s > 0 && s < hc.memory {
                return conflict(
                    "Minimum memoryswap limit should be larger than memory limit, see usage",
                );
            }
            if hc.memory == 0 {
                return conflict(
                    "You should always set the Memory limit when using Memoryswap limit, see usage",
                );
            }
            hc.memory_swap = s;
        }
        if let Some(n) = self.nano_cpus.filter(|n| *n != 0) {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
            if n < 0 || n > cpus * 1_000_000_000 {
                return conflict(&format!(
                    "Range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"
                ));
            }
            hc.nano_cpus = n;
        }
        if let Some(s) = self.cpu_shares.filter(|s| *s != 0) {
            hc.cpu_shares = s;
        }
        if let Some(s) = self.cpuset_cpus.as_ref().filter(|s| !s.is_empty()) {
            hc.cpuset_cpus = s.clone();
        }
        if let Some(p) = self.pids_limit.filter(|p| *p != 0) {
            hc.pids_limit = Some(p);
        }
        if let Some(p) = self.restart_policy.as_ref().filter(|p| !p.name.is_empty()) {
            if hc.auto_remove && p.name != "no" {
                return conflict(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container",
                );
            }
            if !matches!(
                p.name.as_str(),
                "no" | "always" | "unless-stopped" | "on-failure"
            ) {
                return conflict(&format!("invalid restart policy: {}", p.name));
            }
            hc.restart_policy = p.clone();
        }
        Ok(hc)
    }
}

impl Engine {
    /// `update`: records the new settings and applies the limits to the
    /// running container; returns the container.
    pub fn update(&self, q: &str, u: &Update) -> Result<Container> {
        let found = self.find(q)?;
        let dir = self.dir(&found.id);
        let c = {
            let _l = container::lock(&dir)?;
            let mut c = container::load(&dir)?;
            c.host_config = u.apply_to(&c)?;
            container::save(&dir, &c)?;
            c
        };
        if matches!(c.state.status, Status::Running | Status::Paused) {
            let res: oci_spec::runtime::LinuxResources =
                serde_json::from_value(crate::spec::resources(&c.host_config))
                    .map_err(|e| EngineError::Invalid(format!("resources: {e}")))?;
            self.runtime.update(&c.id, &res).map_err(|e| {
                EngineError::Invalid(format!("Cannot update container {}: {e}", c.id))
            })?;
        }
        self.container_event(&c, "update", &[]);
        Ok(c)
    }
}

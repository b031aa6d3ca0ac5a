//! `system restore`: after a reboot (or anything else that killed the
//! monitors), start again the containers whose restart policy says so, as
//! dockerd does when it starts at boot. A container that was running when
//! the machine went down is first recorded as exited (by
//! [`Engine::refresh`]); then docker's rule picks who comes back:
//!
//! - `always`: yes, even if it had been stopped by hand;
//! - `unless-stopped`: unless it had been stopped by hand;
//! - `on-failure[:N]`: if its last exit code is not 0 and retries are left;
//! - `no`: never.
//!
//! `--rm` containers that did not get to remove themselves are removed.
//! Each container is started once, oldest first (berth has no
//! `--network container:` or `--volumes-from` dependencies; networks and
//! volumes are set up by each start). Running it again changes nothing.

use crate::container::{Container, Status};
use crate::{Engine, EngineError};

/// What restore did with one container.
#[derive(Debug)]
pub enum Restored {
    /// Started again.
    Started(Container),
    /// Removed (`--rm`, exited while nobody watched).
    Removed(Container),
    /// Its start failed.
    Failed(Container, EngineError),
}

/// Whether docker's restart manager restarts `c` when the daemon starts.
pub fn should_restart(c: &Container) -> bool {
    let p = &c.host_config.restart_policy;
    match p.name.as_str() {
        "always" => true,
        "unless-stopped" => !c.state.stopped_by_user,
        "on-failure" => {
            c.state.exit_code != 0 && (p.max_retries == 0 || c.state.restart_count < p.max_retries)
        }
        _ => false,
    }
}

impl Engine {
    /// Brings back what a reboot stopped (see the module doc). Returns what
    /// it did, in order.
    pub fn restore(&self) -> crate::Result<Vec<Restored>> {
        let mut all = self.containers()?;
        all.sort_by(|a, b| a.created.cmp(&b.created));
        let mut out = Vec::new();
        for c in all {
            if !matches!(c.state.status, Status::Exited | Status::Created) {
                continue;
            }
            if c.state.status == Status::Exited && c.host_config.auto_remove {
                match self.remove(&c.id, true, true) {
                    Ok(_) => out.push(Restored::Removed(c)),
                    Err(e) => out.push(Restored::Failed(c, e)),
                }
                continue;
            }
            if c.state.status == Status::Created || !should_restart(&c) {
                continue;
            }
            match self.start_detached(&c.id) {
                Ok(()) => {
                    let fresh = self.find(&c.id).unwrap_or(c);
                    out.push(Restored::Started(fresh));
                }
                Err(e) => out.push(Restored::Failed(c, e)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(policy: &str, max: u32, code: i32, by_user: bool, restarts: u32) -> Container {
        let mut c: Container = serde_json::from_value(serde_json::json!({
            "Id": "0".repeat(64), "Name": "x", "Created": "", "ImageId": "", "Path": "", "Args": [],
            "Config": {"Hostname":"","Domainname":"","User":"","Tty":false,"OpenStdin":false,"Env":[],"Cmd":null,"Image":"","WorkingDir":"","Entrypoint":null,"Labels":{},"StopSignal":null,"StopTimeout":null},
            "HostConfig": {"Binds":[],"NetworkMode":"none","RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":false,"CapAdd":[],"CapDrop":[],"Privileged":false,"ReadonlyRootfs":false,"SecurityOpt":[],"Tmpfs":{},"Init":false,"Memory":0,"MemorySwap":0,"NanoCpus":0,"CpuShares":0,"CpusetCpus":"","PidsLimit":null,"Ulimits":[],"ExtraHosts":[],"Dns":[]},
            "Mounts": [], "State": {"Status":"exited","Pid":0,"ExitCode":0,"Error":"","StartedAt":"","FinishedAt":"","OOMKilled":false,"RestartCount":0}
        })).unwrap();
        c.host_config.restart_policy.name = policy.into();
        c.host_config.restart_policy.max_retries = max;
        c.state.exit_code = code;
        c.state.stopped_by_user = by_user;
        c.state.restart_count = restarts;
        c
    }

    #[test]
    fn docker_s_restart_rules() {
        assert!(should_restart(&c("always", 0, 0, true, 0)));
        assert!(should_restart(&c("unless-stopped", 0, 0, false, 0)));
        assert!(!should_restart(&c("unless-stopped", 0, 137, true, 0)));
        assert!(should_restart(&c("on-failure", 0, 137, false, 9)));
        assert!(!should_restart(&c("on-failure", 0, 0, false, 0)));
        assert!(!should_restart(&c("on-failure", 3, 1, false, 3)));
        assert!(should_restart(&c("on-failure", 3, 1, false, 2)));
        assert!(!should_restart(&c("no", 0, 1, false, 0)));
        assert!(!should_restart(&c("", 0, 1, false, 0)));
    }
}

//! The other container verbs: stop, kill, restart, rm, wait, pause,
//! unpause, rename, top, stats, prune here; exec, the filesystem changes
//! (diff, export, commit), cp and the archive endpoints, and docker's
//! inspect document in the modules below.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use berth_store::archive::diff::{Change, WriteOptions, write_layer};
use berth_types::{Descriptor, History, ImageConfig, Reference, media_types};
use serde_json::{Value, json};

use crate::container::{self, Container, Status};
use crate::{Engine, EngineError, Result, now};

mod archive;
mod changes;
mod exec;
mod inspect;

pub use archive::PathStat;
pub use exec::ExecRequest;

impl Engine {
    /// `kill`: a signal to the container's process.
    pub fn kill(&self, q: &str, signal: i32) -> Result<Container> {
        let c = self.find(q)?;
        if !matches!(
            c.state.status,
            Status::Running | Status::Paused | Status::Restarting
        ) {
            return Err(EngineError::Conflict(format!(
                "Cannot kill container: {}: container {} is not running",
                q, c.id
            )));
        }
        self.mark_stopped_by_user(&c.id)?;
        // The event first: the monitor records `die` as soon as the signal
        // lands, and dockerd's order is kill, then die.
        self.container_event(&c, "kill", &[("signal", signal.to_string())]);
        self.runtime.kill(&c.id, signal, false)?;
        if signal == libc::SIGKILL {
            // docker's kill of SIGKILL returns once the container is dead:
            // `kill x && rm x` and `kill x && start x` must work.
            return self.wait(&c.id);
        }
        if signal == libc::SIGKILL && c.state.status == Status::Paused {
            let _ = self.runtime.kill(&c.id, libc::SIGKILL, true);
        }
        Ok(c)
    }

    fn mark_stopped_by_user(&self, id: &str) -> Result<()> {
        let _l = container::lock(&self.dir(id))?;
        let mut c = container::load(&self.dir(id))?;
        c.state.stopped_by_user = true;
        container::save(&self.dir(id), &c)
    }

    /// `stop`: the stop signal, then SIGKILL after `timeout` seconds.
    pub fn stop(&self, q: &str, timeout: Option<i64>) -> Result<Container> {
        let c = self.find(q)?;
        if !matches!(
            c.state.status,
            Status::Running | Status::Paused | Status::Restarting
        ) {
            return Ok(c);
        }
        self.mark_stopped_by_user(&c.id)?;
        let sig = c
            .config
            .stop_signal
            .as_deref()
            .and_then(berth_runtime::parse_signal)
            .unwrap_or(libc::SIGTERM);
        let timeout = timeout.or(c.config.stop_timeout).unwrap_or(10);
        if c.state.status == Status::Paused {
            let _ = self.runtime.resume(&c.id);
        }
        self.container_event(&c, "kill", &[("signal", sig.to_string())]);
        let _ = self.runtime.kill(&c.id, sig, false);
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_secs(timeout.max(0) as u64);
        loop {
            let now_c = self.find(&c.id)?;
            if !matches!(
                now_c.state.status,
                Status::Running | Status::Paused | Status::Restarting
            ) {
                self.container_event(&now_c, "stop", &[]);
                return Ok(now_c);
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.runtime.kill(&c.id, libc::SIGKILL, true);
                let done = self.wait(&c.id)?;
                self.container_event(&done, "stop", &[]);
                return Ok(done);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `wait`: blocks until the container is not running; returns it.
    pub fn wait(&self, q: &str) -> Result<Container> {
        let id = self.find(q)?.id;
        loop {
            let c = self.find(&id)?;
            if !matches!(
                c.state.status,
                Status::Running | Status::Paused | Status::Restarting
            ) {
                return Ok(c);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `rm`: removes a stopped container (running ones with `force`).
    pub fn remove(&self, q: &str, force: bool, volumes: bool) -> Result<String> {
        let c = self.find(q)?;
        let running = matches!(
            c.state.status,
            Status::Running | Status::Paused | Status::Restarting
        );
        // An --rm container killed here is removed by its monitor too: if
        // the monitor gets there first, what was asked is done (docker's
        // `rm -f` succeeds).
        let removes_itself = running && c.host_config.auto_remove;
        if running {
            if !force {
                return Err(running_conflict(&c.name));
            }
            self.mark_stopped_by_user(&c.id)?;
            // dockerd's `rm -f` of a running container: kill, die, destroy
            // (the kill recorded before the signal, which the die follows).
            self.container_event(&c, "kill", &[("signal", libc::SIGKILL.to_string())]);
            let _ = self.runtime.kill(&c.id, libc::SIGKILL, true);
            match self.wait(&c.id) {
                // An --rm container: its monitor removed it once it died,
                // which is what was asked (docker's `rm -f` succeeds too).
                Err(EngineError::NotFound(_)) => return Ok(c.id),
                r => {
                    r?;
                }
            }
        }
        // Claim it under its lock: whoever renames the directory away removes
        // it; a concurrent rm, prune or start then finds no such container
        // instead of half a one.
        let dir = self.dir(&c.id);
        if removes_itself && !dir.exists() {
            return Ok(c.id);
        }
        let gone = || EngineError::NotFound(q.to_string());
        // Named by this process (its pid), so a prune can tell an abandoned
        // claim from one in progress; the container's id is in its record.
        let tomb = self
            .root()
            .join("containers")
            .join(berth_fs::unique_name(".removing-"));
        {
            let _l = match container::lock(&dir) {
                Ok(l) => l,
                Err(_) if !dir.exists() && removes_itself => return Ok(c.id),
                Err(_) if !dir.exists() => return Err(gone()),
                Err(e) => return Err(e),
            };
            // The record as it is now (`find` above already corrected a
            // crashed one; refresh would take this lock again).
            let now = match container::load(&dir) {
                Ok(now) => now,
                Err(_) if removes_itself && !dir.exists() => return Ok(c.id),
                Err(_) => return Err(gone()),
            };
            if matches!(
                now.state.status,
                Status::Running | Status::Paused | Status::Restarting
            ) {
                // Started since it was looked at.
                return Err(running_conflict(&c.name));
            }
            match std::fs::rename(&dir, &tomb) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && removes_itself => {
                    return Ok(c.id);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(gone()),
                Err(e) => return Err(EngineError::io("rename", &dir, e)),
            }
        }
        self.finish_removal(c, &tomb, volumes)
    }

    /// The rest of a removal once the container's directory is `tomb`: its
    /// runtime record, snapshot, network endpoints (and anonymous volumes),
    /// then the directory.
    fn finish_removal(&self, c: Container, tomb: &Path, volumes: bool) -> Result<String> {
        let _ = self.runtime.delete_moved(&c.id, true, tomb);
        crate::run::release_merged(tomb);
        match self.store.snapshots.remove_active(&c.id) {
            Ok(()) | Err(berth_store::snapshot::SnapshotError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if volumes {
            self.remove_anonymous_volumes(&c);
        }
        let mut c = c;
        self.network_detach(&mut c);
        std::fs::remove_dir_all(tomb).map_err(|e| EngineError::io("remove", tomb, e))?;
        self.container_event(&c, "destroy", &[]);
        Ok(c.id)
    }

    /// Waits (5 s at most) until no removal is under way: the background
    /// halves of `run --rm`'s removals (see `Engine::remove_exited`) and
    /// concurrent `rm`s. What walks or clears the whole store (prune, reset,
    /// check, df) calls this first, so that it neither races their deletes
    /// nor counts what is about to go.
    pub fn settle_removals(&self) {
        let containers = self.root().join("containers");
        let layers = self.store.snapshots.tmp_dir();
        let pending = |dir: &Path, prefix: &str| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with(prefix) && berth_fs::owner_alive(&n)
                })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while (pending(&containers, ".removing-") || pending(&layers, "rm-"))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// `rm -v`, and an `--rm` container's removal (dockerd's too): its
    /// anonymous volumes go with it, but not one another container uses
    /// (through `--volumes-from`), as in docker.
    pub(crate) fn remove_anonymous_volumes(&self, c: &Container) {
        for m in &c.mounts {
            if m.typ == "volume" && m.name.len() == 64 {
                let _ = self.volume_remove(&m.name, false);
            }
        }
    }

    /// Finishes removals whose `rm` died after claiming the container (its
    /// `.removing-<pid>-…` directory is left, and the pid is gone), and
    /// clears the records a power loss emptied.
    fn finish_abandoned_removals(&self) {
        let dir = self.root().join("containers");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Exit codes as berth kept them before `.exits` (one file each).
            if name.starts_with(".exit-") {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            // What a power loss leaves of a record written without fsync
            // (an --rm container's, see `container::save_unsynced`): an
            // empty container.json. Its container died with the machine;
            // its runtime record, layer and directory go (keyed by its id).
            if !name.starts_with('.')
                && std::fs::metadata(e.path().join("container.json")).is_ok_and(|m| m.len() == 0)
            {
                let _ = self.runtime.delete(&name, true);
                let _ = self.store.snapshots.remove_active(&name);
                let _ = std::fs::remove_dir_all(e.path());
                continue;
            }
            if !name.starts_with(".removing-") || berth_fs::owner_alive(&name) {
                continue;
            }
            match container::load(&e.path()) {
                Ok(c) => {
                    let _ = self.finish_removal(c, &e.path(), false);
                }
                Err(_) => {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// `pause`.
    pub fn pause(&self, q: &str) -> Result<()> {
        let c = self.find(q)?;
        if c.state.status != Status::Running {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        self.runtime.pause(&c.id)?;
        self.container_event(&c, "pause", &[]);
        Ok(())
    }

    /// `unpause`.
    pub fn unpause(&self, q: &str) -> Result<()> {
        let c = self.find(q)?;
        if c.state.status != Status::Paused {
            return Err(EngineError::Conflict(format!(
                "Container {} is not paused",
                c.id
            )));
        }
        self.runtime.resume(&c.id)?;
        self.container_event(&c, "unpause", &[]);
        Ok(())
    }

    /// `rename`.
    pub fn rename(&self, q: &str, new: &str) -> Result<()> {
        let c = self.find(q)?;
        let new = new.trim_start_matches('/');
        if !container::valid_name(new) {
            return Err(EngineError::Invalid(format!(
                "Invalid container name ({new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        let _names = container::lock(&self.root().join("containers"))?;
        if let Ok(other) = self.find(new)
            && other.name == new
        {
            return Err(EngineError::NameInUse {
                name: new.to_string(),
                id: other.id,
            });
        }
        let _l = container::lock(&self.dir(&c.id))?;
        let mut fresh = container::load(&self.dir(&c.id))?;
        fresh.name = new.to_string();
        container::save(&self.dir(&c.id), &fresh)?;
        self.container_event(&fresh, "rename", &[("oldName", format!("/{}", c.name))]);
        Ok(())
    }

    /// `top`: the container's processes as `ps -ef` columns.
    pub fn top(&self, q: &str) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        self.top_with(q, &[])
    }

    /// `top CONTAINER [ps OPTIONS]`: with options, the host's `ps` runs
    /// with them and its rows are kept for the container's processes (by
    /// the PID column), as dockerd does; without, docker's default columns.
    pub fn top_with(&self, q: &str, ps_args: &[String]) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        let c = self.find(q)?;
        if c.state.status != Status::Running && c.state.status != Status::Paused {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        let pids = self.runtime.ps(&c.id)?;
        if !ps_args.is_empty() {
            return ps_rows(ps_args, &pids);
        }
        let titles = vec!["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
            .into_iter()
            .map(String::from)
            .collect();
        let mut rows = Vec::new();
        for p in pids {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let rest = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim().to_string())
                .unwrap_or_default();
            let f: Vec<&str> = rest.split(' ').collect();
            let ppid = f.get(1).copied().unwrap_or("0").to_string();
            let ticks: u64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
                + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            let secs = ticks / 100;
            let uid = std::fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Uid:"))
                        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
                })
                .unwrap_or_default();
            let cmd = berth_runtime::cmdline(p);
            rows.push(vec![
                if uid == "0" { "root".into() } else { uid },
                p.to_string(),
                ppid,
                "0".into(),
                "-".into(),
                "?".into(),
                format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
                cmd,
            ]);
        }
        Ok((titles, rows))
    }

    /// `stats`: cgroup usage of a running container.
    pub fn stats(&self, q: &str) -> Result<(Container, berth_runtime::Stats)> {
        let c = self.find(q)?;
        let s = if matches!(c.state.status, Status::Running | Status::Paused) {
            self.runtime.stats(&c.id)?
        } else {
            Default::default()
        };
        Ok((c, s))
    }

    /// Keeps the exit code of an `--rm` container about to be removed, for
    /// a waiter that sees it only once it is gone (`wait --condition
    /// removed`, the Engine API's `run --rm`); kept a few minutes.
    ///
    /// In `containers/.exits/<minute>/<id>`: forgetting the old ones is a
    /// look at a handful of minute directories, not at every code kept (a
    /// loop of `run --rm` kept hundreds, and each run read them all).
    pub fn remember_exit(&self, id: &str, code: i32) {
        let exits = self.root().join("containers").join(EXITS);
        let minute = unix_minute();
        let bucket = exits.join(minute.to_string());
        let _ = std::fs::create_dir_all(&bucket);
        let _ = std::fs::write(bucket.join(id), code.to_string());
        for e in std::fs::read_dir(&exits).into_iter().flatten().flatten() {
            let old = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|m| minute.saturating_sub(m) > EXIT_KEPT_MINUTES);
            if old {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// The exit code an `--rm` container had, once it is gone.
    pub fn exit_of_removed(&self, id: &str) -> Option<i32> {
        let exits = self.root().join("containers").join(EXITS);
        let minute = unix_minute();
        // The minutes remember_exit keeps: this one and the
        // EXIT_KEPT_MINUTES before it.
        (0..=EXIT_KEPT_MINUTES).find_map(|back| {
            let p = exits.join(minute.saturating_sub(back).to_string()).join(id);
            std::fs::read_to_string(p).ok()?.trim().parse().ok()
        })
    }

    /// `container prune`: removes every stopped container; returns their ids.
    /// One that was started or removed meanwhile is left to its new fate, as
    /// docker's prune does.
    pub fn prune(&self) -> Result<Vec<String>> {
        self.settle_removals();
        self.finish_abandoned_removals();
        let mut out = Vec::new();
        for c in self.containers()? {
            // A created container whose creator still runs is being started
            // (`run` between its create and start), and a `run --rm` whose
            // process still runs removes its container itself: neither is
            // prunable.
            if (c.state.status == Status::Created || c.host_config.auto_remove)
                && c.state.creator_alive()
            {
                continue;
            }
            if matches!(
                c.state.status,
                Status::Exited | Status::Created | Status::Dead
            ) {
                match self.remove(&c.id, false, false) {
                    Ok(id) => out.push(id),
                    Err(EngineError::NotFound(_) | EngineError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }
}

/// Runs the host's `ps` with `args` and keeps the rows of `pids`: the
/// header's PID column finds them, and the last column keeps its spaces
/// (dockerd's parsePSOutput).
fn ps_rows(args: &[String], pids: &[i32]) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let out = std::process::Command::new("ps")
        .args(args)
        .output()
        .map_err(|e| EngineError::Invalid(format!("Error running ps: {e}")))?;
    if !out.status.success() {
        return Err(EngineError::Invalid(format!(
            "Error running ps: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pid_col = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| EngineError::Invalid("Couldn't find PID field in ps output".into()))?;
    let mut rows = Vec::new();
    for l in lines {
        let fields: Vec<&str> = l.split_whitespace().collect();
        if fields.len() < titles.len() {
            continue;
        }
        let Ok(pid) = fields[pid_col].parse::<i32>() else {
            continue;
        };
        if !pids.contains(&pid) {
            continue;
        }
        let mut row: Vec<String> = fields[..titles.len() - 1]
            .iter()
            .map(|f| f.to_string())
            .collect();
        row.push(fields[titles.len() - 1..].join(" "));
        rows.push(row);
    }
    Ok((titles, rows))
}

/// docker's refusal to remove a running container without `--force`.
fn running_conflict(name: &str) -> EngineError {
    EngineError::Conflict(format!(
        "cannot remove container \"/{name}\": container is running: stop the container before removing or force remove"
    ))
}

/// Where [`Engine::remember_exit`] keeps exit codes, under `containers`.
const EXITS: &str = ".exits";

/// How long an exit code is kept, in minutes (a waiter polls for far less).
const EXIT_KEPT_MINUTES: u64 = 5;

/// Minutes since the epoch: the name of the directory of this minute's exits.
fn unix_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exit codes are found for a while, and the old are forgotten by
    /// their minute's directory, without a look at each code.
    #[test]
    fn removed_containers_exit_codes_are_kept_by_the_minute() {
        let t = tempfile::tempdir().unwrap();
        let e = Engine::open(t.path()).unwrap();
        e.remember_exit("a", 3);
        assert_eq!(e.exit_of_removed("a"), Some(3));
        assert_eq!(e.exit_of_removed("b"), None);
        let exits = t.path().join("containers").join(EXITS);
        let old = exits.join((unix_minute() - EXIT_KEPT_MINUTES - 2).to_string());
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("b"), "7").unwrap();
        // Too old to be found, and gone at the next remembered exit.
        assert_eq!(e.exit_of_removed("b"), None);
        e.remember_exit("c", 0);
        assert!(!old.exists());
        assert_eq!(e.exit_of_removed("a"), Some(3));
        assert_eq!(e.exit_of_removed("c"), Some(0));
    }
}

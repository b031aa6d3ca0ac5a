//! Healthchecks as dockerd runs them: the image's HEALTHCHECK (or the
//! `--health-*` flags laid over it), probed through exec by a prober
//! process the container's monitor forks while the container runs; the
//! result (`starting` → `healthy` / `unhealthy`, the failing streak, the
//! last five probes) kept in `health.json` beside the container record.
//!
//! The prober is the only writer while the container runs; the monitor
//! writes `starting` before it forks the prober and, once it has killed and
//! reaped it after the container exited, `unhealthy` (dockerd's rule for a
//! stopped container). So the file needs no lock, and the container record's
//! other writers never race a probe. Each write is atomic (temp + rename).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_types::image::HealthConfig;
use serde::{Deserialize, Serialize};

use crate::container::{Container, Status};
use crate::{Engine, now};

/// Probes between checks when the config names none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// How long a probe may run when the config names no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Probes between checks during the start period.
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
/// Consecutive failures before `unhealthy` when the config names none.
pub const DEFAULT_RETRIES: u32 = 3;
/// Probes kept in the log.
pub const MAX_LOG: usize = 5;
/// Bytes of a probe's output kept.
pub const MAX_OUTPUT: usize = 4096;

/// `State.Health` of `docker inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Consecutive failed probes.
    pub failing_streak: u32,
    /// The last probes, oldest first.
    pub log: Vec<Probe>,
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Probe {
    /// RFC 3339.
    pub start: String,
    /// RFC 3339.
    pub end: String,
    /// The probe's exit code; -1 when it could not run or timed out.
    pub exit_code: i32,
    /// What it wrote (stdout and stderr), at most [`MAX_OUTPUT`] bytes.
    pub output: String,
}

/// Whether `h` asks for probes (a test that is not `NONE`).
pub fn active(h: Option<&HealthConfig>) -> bool {
    h.and_then(|h| h.test.as_ref())
        .and_then(|t| t.first())
        .is_some_and(|k| k != "NONE")
}

/// The container's healthcheck: the user's settings over the image's, as
/// dockerd merges them (a test or a timing the user left out comes from
/// the image).
pub fn merge(user: Option<HealthConfig>, image: Option<&HealthConfig>) -> Option<HealthConfig> {
    let Some(mut u) = user else {
        return image.cloned();
    };
    if let Some(i) = image {
        if u.test.as_ref().is_none_or(Vec::is_empty) {
            u.test = i.test.clone();
        }
        let pick = |a: Option<i64>, b: Option<i64>| a.filter(|v| *v != 0).or(b);
        u.interval = pick(u.interval, i.interval);
        u.timeout = pick(u.timeout, i.timeout);
        u.start_period = pick(u.start_period, i.start_period);
        u.start_interval = pick(u.start_interval, i.start_interval);
        u.retries = pick(u.retries, i.retries);
    }
    Some(u)
}

/// The argv of a probe: `CMD a b` runs `a b`, `CMD-SHELL s` runs `s` in
/// the image's shell.
pub fn command(h: &HealthConfig, shell: &[String]) -> Option<Vec<String>> {
    let t = h.test.as_ref()?;
    match t.first().map(String::as_str) {
        Some("CMD") if t.len() > 1 => Some(t[1..].to_vec()),
        Some("CMD-SHELL") if t.len() > 1 => {
            let mut v = shell.to_vec();
            v.push(t[1..].join(" "));
            Some(v)
        }
        _ => None,
    }
}

fn ns(v: Option<i64>, default: Duration) -> Duration {
    match v {
        Some(n) if n > 0 => Duration::from_nanos(n as u64),
        _ => default,
    }
}

/// A duration as Go prints one (`30s`, `1m30s`, `500ms`, `1.5s`), for
/// dockerd's timeout message.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64() % 60.0;
    let s = if secs.fract() == 0.0 {
        format!("{secs:.0}s")
    } else {
        format!("{}s", format!("{secs:.3}").trim_end_matches('0'))
    };
    let m = d.as_secs() / 60;
    match (m / 60, m % 60) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

/// Reads `dir/health.json`.
pub fn load(dir: &Path) -> Option<Health> {
    serde_json::from_slice(&std::fs::read(dir.join("health.json")).ok()?).ok()
}

fn save(dir: &Path, h: &Health) {
    let p = dir.join("health.json");
    let tmp = dir.join(format!(".health.json.{}", std::process::id()));
    let data = serde_json::to_vec(h).expect("health serialises");
    if std::fs::write(&tmp, data).is_ok() && std::fs::rename(&tmp, &p).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Folds one probe into `h` by dockerd's rules: success is healthy at
/// once; a failure counts toward `retries` (and `unhealthy`) unless it
/// falls in the start period before any success.
pub fn record(h: &mut Health, p: Probe, retries: u32, in_start_period: bool) {
    if h.log.len() >= MAX_LOG {
        h.log.drain(..=h.log.len() - MAX_LOG);
    }
    let ok = p.exit_code == 0;
    h.log.push(p);
    if ok {
        h.failing_streak = 0;
        h.status = "healthy".into();
    } else if !(h.status == "starting" && in_start_period) {
        h.failing_streak += 1;
        if h.failing_streak >= retries {
            h.status = "unhealthy".into();
        }
    }
}

/// A running prober (a pidfd for it, where the kernel has them).
#[derive(Debug)]
pub struct Prober(Option<std::os::fd::OwnedFd>);

impl Engine {
    /// Marks the container `starting` and forks its prober (none when it
    /// has no active healthcheck). Call from a single-threaded process: the
    /// monitor, or the CLI of an attached run.
    pub(crate) fn health_start(&self, c: &Container) -> Option<Prober> {
        let h = c.config.healthcheck.as_ref().filter(|h| active(Some(h)))?;
        let dir = self.dir(&c.id);
        let mut state = load(&dir).unwrap_or_default();
        state.status = "starting".into();
        state.failing_streak = 0;
        save(&dir, &state);
        let shell = self
            .store
            .resolve(&c.image_id)
            .ok()
            .and_then(|i| i.config.config.and_then(|c| c.shell))
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        let argv = command(h, &shell)?;
        let parent = std::process::id() as i32;
        // SAFETY: fork from a single-threaded process; the child runs the
        // probe loop and exits without returning.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return None;
        }
        if pid == 0 {
            // SAFETY: die with the monitor; stdio to /dev/null.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                if libc::getppid() != parent {
                    libc::_exit(0);
                }
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                for fd in 0..3 {
                    libc::dup2(null, fd);
                }
            }
            self.probe_loop(c, h, &argv);
            // SAFETY: the prober ends here.
            unsafe { libc::_exit(0) }
        }
        // A pidfd, not the pid: the monitor reaps every child it has (it is
        // a subreaper), so once the prober died the pid may be anyone's.
        let fd = rustix::process::Pid::from_raw(pid).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        Some(Prober(fd))
    }

    /// Stops the prober once the container exited; the container is then
    /// `unhealthy`, as dockerd reports a stopped container with a
    /// healthcheck.
    pub(crate) fn health_stop(&self, c: &Container, p: Option<Prober>) {
        let Some(Prober(fd)) = p else { return };
        if let Some(fd) = fd {
            let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
            let _ = rustix::process::waitid(
                rustix::process::WaitId::PidFd(std::os::fd::AsFd::as_fd(&fd)),
                rustix::process::WaitIdOptions::EXITED,
            );
        }
        let dir = self.dir(&c.id);
        if let Some(mut h) = load(&dir) {
            h.status = "unhealthy".into();
            save(&dir, &h);
        }
    }

    fn probe_loop(&self, c: &Container, h: &HealthConfig, argv: &[String]) {
        let interval = ns(h.interval, DEFAULT_INTERVAL);
        let timeout = ns(h.timeout, DEFAULT_TIMEOUT);
        let start_period = ns(h.start_period, Duration::ZERO);
        let start_interval = ns(h.start_interval, DEFAULT_START_INTERVAL);
        let retries = h
            .retries
            .filter(|r| *r > 0)
            .map_or(DEFAULT_RETRIES, |r| r as u32);
        let dir = self.dir(&c.id);
        let started = Instant::now();
        let req = crate::ops::ExecRequest {
            cmd: argv.to_vec(),
            ..Default::default()
        };
        loop {
            let mut health = load(&dir).unwrap_or_default();
            let in_start = started.elapsed() < start_period;
            std::thread::sleep(if in_start && health.status == "starting" {
                start_interval
            } else {
                interval
            });
            let Ok(now_c) = self.find(&c.id) else { return };
            match now_c.state.status {
                Status::Running => {}
                Status::Paused => continue,
                _ => return,
            }
            let probe = self.probe(&now_c, &req, timeout);
            // A probe that failed half-way may leave its process to us (we
            // are a subreaper): reap it, or the container's init could not
            // finish exiting while it is a zombie of its namespace.
            // SAFETY: non-blocking waitpid; the prober waits for no other child.
            while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
            let before = health.status.clone();
            health = load(&dir).unwrap_or(health);
            record(
                &mut health,
                probe,
                retries,
                started.elapsed() < start_period,
            );
            save(&dir, &health);
            if health.status != before {
                self.container_event(&now_c, &format!("health_status: {}", health.status), &[]);
            }
        }
    }

    /// Runs one probe: its output captured in a memory file (stdout and
    /// stderr of this prober point there while it runs), killed at the
    /// timeout.
    fn probe(&self, c: &Container, req: &crate::ops::ExecRequest, timeout: Duration) -> Probe {
        let start = now();
        let fail = |msg: String| Probe {
            start: start.clone(),
            end: now(),
            exit_code: -1,
            output: msg,
        };
        let process = match self.exec_process(c, req) {
            Ok(p) => p,
            Err(e) => return fail(e.to_string()),
        };
        let out = match rustix::fs::memfd_create("berth-probe", rustix::fs::MemfdFlags::CLOEXEC) {
            Ok(f) => std::fs::File::from(f),
            Err(e) => return fail(format!("memfd: {e}")),
        };
        // SAFETY: this prober is single-threaded; stdout and stderr go to
        // the memory file for the exec, then back to /dev/null.
        unsafe {
            libc::dup2(out.as_raw_fd(), 1);
            libc::dup2(out.as_raw_fd(), 2);
        }
        let res = self
            .runtime
            .exec_with_console(&c.id, &process, &Default::default(), None);
        // SAFETY: as above.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
        }
        let pid = match res {
            Ok(r) => r.pid,
            Err(e) => return fail(e.to_string()),
        };
        let deadline = Instant::now() + timeout;
        let mut nap = Duration::from_millis(2);
        let code = loop {
            let mut st = 0;
            // SAFETY: waitpid on our own child, without blocking.
            let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
            if r == pid {
                break Some(berth_runtime::wait::exit_code(st));
            }
            if r < 0 {
                break Some(-1);
            }
            if Instant::now() >= deadline {
                // SAFETY: our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut st, 0);
                }
                break None;
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(50));
        };
        let Some(code) = code else {
            return fail(format!(
                "Health check exceeded timeout ({})",
                go_duration(timeout)
            ));
        };
        use std::io::{Read, Seek};
        let mut out = out;
        let mut buf = Vec::new();
        let _ = out.seek(std::io::SeekFrom::Start(0));
        let _ = (&mut out).take(MAX_OUTPUT as u64).read_to_end(&mut buf);
        Probe {
            start,
            end: now(),
            exit_code: code,
            output: String::from_utf8_lossy(&buf).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(test: &[&str]) -> HealthConfig {
        HealthConfig {
            test: Some(test.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    fn probe(code: i32) -> Probe {
        Probe {
            start: String::new(),
            end: String::new(),
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn user_settings_lie_over_the_image_s() {
        let mut image = hc(&["CMD", "true"]);
        image.interval = Some(5);
        image.retries = Some(7);
        let mut user = HealthConfig {
            interval: Some(9),
            ..Default::default()
        };
        let m = merge(Some(user.clone()), Some(&image)).unwrap();
        assert_eq!(m.test, image.test);
        assert_eq!((m.interval, m.retries), (Some(9), Some(7)));
        user.test = Some(vec!["NONE".into()]);
        assert!(!active(merge(Some(user), Some(&image)).as_ref()));
        assert_eq!(merge(None, Some(&image)), Some(image));
        assert!(!active(None));
    }

    #[test]
    fn commands_as_docker_runs_them() {
        let sh = vec!["/bin/sh".to_string(), "-c".to_string()];
        assert_eq!(
            command(&hc(&["CMD", "cat", "/x"]), &sh).unwrap(),
            ["cat", "/x"]
        );
        assert_eq!(
            command(&hc(&["CMD-SHELL", "test -f /x"]), &sh).unwrap(),
            ["/bin/sh", "-c", "test -f /x"]
        );
        assert!(command(&hc(&["NONE"]), &sh).is_none());
        assert!(command(&hc(&["CMD"]), &sh).is_none());
    }

    #[test]
    fn results_follow_docker_s_rules() {
        let mut h = Health {
            status: "starting".into(),
            ..Default::default()
        };
        // Failures in the start period do not count.
        record(&mut h, probe(1), 2, true);
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 0));
        record(&mut h, probe(1), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 1));
        record(&mut h, probe(1), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), ("unhealthy", 2));
        record(&mut h, probe(0), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), ("healthy", 0));
        // Once healthy, the start period no longer shields failures.
        record(&mut h, probe(1), 2, true);
        assert_eq!(h.failing_streak, 1);
        for _ in 0..10 {
            record(&mut h, probe(0), 2, false);
        }
        assert_eq!(h.log.len(), MAX_LOG);
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }
}

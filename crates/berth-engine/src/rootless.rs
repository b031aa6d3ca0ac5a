//! Rootless berth: an ordinary user's berth, with no setup step.
//!
//! Run by a user other than root, berth enters that user's own user and
//! mount namespaces before it does anything else, and is root there: the
//! user's id maps to 0, and their subordinate ids (`/etc/subuid`,
//! `/etc/subgid`, mapped by `newuidmap`/`newgidmap` from Debian's `uidmap`)
//! to 1 and up, so image files owned by other users keep their owners. With
//! no subordinate ids the namespace maps the user's id alone (written
//! directly, which the kernel allows): images whose files all belong to root
//! work, others get an error that says how to add a range.
//!
//! The namespaces are kept by a small pause process (as podman keeps them),
//! so every berth of that user — and every container, monitor and `exec` —
//! lives in the same namespaces and sees the same store and mounts. Its pid
//! is in the user's runtime directory (`$XDG_RUNTIME_DIR/berth`, else
//! `/tmp/berth-<uid>`, 0700). The store is `$XDG_DATA_HOME/berth` (default
//! `~/.local/share/berth`).

use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Set by a berth that entered its user's namespaces, for itself and every
/// process it starts: the user's uid outside.
pub const ENV_UID: &str = "BERTH_ROOTLESS_UID";

/// How the user's ids are mapped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mapping {
    /// The user's uid and gid outside (0 inside).
    pub uid: u32,
    /// The user's gid outside.
    pub gid: u32,
    /// Subordinate uids (first outside, count), mapped to 1 and up.
    pub sub_uids: Option<(u32, u32)>,
    /// Subordinate gids.
    pub sub_gids: Option<(u32, u32)>,
}

impl Mapping {
    /// `0:uid:1,1:sub:count` as `berth info` shows it.
    pub fn describe(&self) -> String {
        let part = |own: u32, sub: Option<(u32, u32)>| match sub {
            Some((s, n)) => format!("0:{own}:1,1:{s}:{n}"),
            None => format!("0:{own}:1"),
        };
        format!(
            "uid {}; gid {}",
            part(self.uid, self.sub_uids),
            part(self.gid, self.sub_gids)
        )
    }
}

/// Whether this berth is a user's (rootless) berth.
pub fn active() -> bool {
    std::env::var_os(ENV_UID).is_some() || rustix::process::geteuid().as_raw() != 0
}

/// The user's uid outside, when rootless.
pub fn outside_uid() -> Option<u32> {
    match std::env::var(ENV_UID) {
        Ok(v) => v.parse().ok(),
        Err(_) => {
            let u = rustix::process::geteuid().as_raw();
            (u != 0).then_some(u)
        }
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The user's store: `$XDG_DATA_HOME/berth`, else `~/.local/share/berth`.
pub fn default_root() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("berth"),
        None => home().join(".local/share/berth"),
    }
}

/// The user's runtime directory: `$XDG_RUNTIME_DIR/berth`, else
/// `/tmp/berth-<uid>`.
pub fn runtime_dir(uid: u32) -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("berth"),
        None => PathBuf::from(format!("/tmp/berth-{uid}")),
    }
}

/// The first range of `/etc/subuid`-style `text` for `name` or `id`.
pub fn sub_range(text: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let who = f.next()?;
        if who != name && who.parse::<u32>().ok() != Some(id) {
            return None;
        }
        let start = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.parse().ok()?;
        (count > 0).then_some((start, count))
    })
}

fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
            })
        })
        .unwrap_or_default()
}

/// The mapping this user gets: their subordinate ranges when they have
/// some and `newuidmap`/`newgidmap` exist, else their own ids alone.
pub fn plan(uid: u32, gid: u32) -> Mapping {
    let name = user_name(uid);
    let tools = ["newuidmap", "newgidmap"]
        .iter()
        .all(|t| berth_fs::which(t).is_some());
    let read = |f: &str, id: u32| {
        std::fs::read_to_string(f)
            .ok()
            .and_then(|t| sub_range(&t, &name, id))
    };
    let (su, sg) = (read("/etc/subuid", uid), read("/etc/subgid", gid));
    let both = tools && su.is_some() && sg.is_some();
    Mapping {
        uid,
        gid,
        sub_uids: su.filter(|_| both),
        sub_gids: sg.filter(|_| both),
    }
}

/// Where the pause process's pid and the mapping are kept.
fn files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("pause.pid"),
        dir.join("mapping.json"),
        dir.join("pause.lock"),
    )
}

/// The live pause process of `dir`, if there is one (ours, its namespaces
/// readable).
fn live_pause(dir: &Path, uid: u32) -> Option<i32> {
    let (pidf, _, _) = files(dir);
    let pid: i32 = std::fs::read_to_string(pidf).ok()?.trim().parse().ok()?;
    let st = std::fs::metadata(format!("/proc/{pid}")).ok()?;
    use std::os::unix::fs::MetadataExt;
    let ours = st.uid() == uid;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    // A pause process that was killed but not yet reaped has no namespaces.
    let alive = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok();
    (ours && alive && comm.trim() == "berth-pause").then_some(pid)
}

/// The mapping of the user's namespaces (as written by [`enter`]).
pub fn current_mapping() -> Option<Mapping> {
    let uid = outside_uid()?;
    let (_, mapf, _) = files(&runtime_dir(uid));
    serde_json::from_slice(&std::fs::read(mapf).ok()?).ok()
}

/// Enters the user's namespaces (making them the first time), unless this
/// is root's berth or already inside. Call it first thing, while the
/// process runs one thread (setns requires it).
pub fn enter() -> Result<(), String> {
    let euid = rustix::process::geteuid().as_raw();
    if euid == 0 {
        return Ok(());
    }
    let gid = rustix::process::getegid().as_raw();
    let dir = runtime_dir(euid);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("making {}: {e}", dir.display()))?;
    let pid = match live_pause(&dir, euid) {
        Some(p) => p,
        None => {
            let (_, _, lockf) = files(&dir);
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lockf)
                .map_err(|e| format!("{}: {e}", lockf.display()))?;
            lock.lock()
                .map_err(|e| format!("{}: {e}", lockf.display()))?;
            match live_pause(&dir, euid) {
                Some(p) => p,
                None => start_pause(&dir, &plan(euid, gid))?,
            }
        }
    };
    join(pid)?;
    // SAFETY: setting our own environment while single-threaded.
    unsafe {
        std::env::set_var(ENV_UID, euid.to_string());
    }
    Ok(())
}

/// Joins the pause process's user and mount namespaces, as root there.
fn join(pid: i32) -> Result<(), String> {
    let cwd = std::env::current_dir().ok();
    for (ns, flag) in [("user", libc::CLONE_NEWUSER), ("mnt", libc::CLONE_NEWNS)] {
        let p = format!("/proc/{pid}/ns/{ns}");
        let f = std::fs::File::open(&p).map_err(|e| format!("{p}: {e}"))?;
        // SAFETY: setns on a descriptor we hold; the process is single-threaded.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), flag) } != 0 {
            return Err(format!(
                "joining your berth namespaces ({p}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    // SAFETY: credential calls with integer arguments.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            return Err(format!(
                "becoming root in your user namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if let Some(d) = cwd {
        let _ = std::env::set_current_dir(d);
    }
    Ok(())
}

/// Starts the pause process in new user and mount namespaces, maps its ids,
/// records it, and returns its pid.
fn start_pause(dir: &Path, m: &Mapping) -> Result<i32, String> {
    let (ready_r, ready_w) = std::io::pipe().map_err(|e| e.to_string())?;
    let (go_r, go_w) = std::io::pipe().map_err(|e| e.to_string())?;
    match berth_runtime::process::clone_process(0).map_err(|e| e.to_string())? {
        berth_runtime::process::Forked::Child => {
            drop((ready_r, go_w));
            pause_child(ready_w, go_r)
        }
        berth_runtime::process::Forked::Parent(pid) => {
            drop((ready_w, go_r));
            let mut ready_r = ready_r;
            let mut b = [0u8; 1];
            if ready_r.read_exact(&mut b).is_err() || b[0] != b'u' {
                return Err(
                    "the kernel refused a user namespace to this user (sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces)".into(),
                );
            }
            write_maps(pid, m)?;
            let mut go_w = go_w;
            go_w.write_all(b"g").map_err(|e| e.to_string())?;
            let (pidf, mapf, _) = files(dir);
            berth_fs::atomic_write(&mapf, &serde_json::to_vec(m).expect("mapping"))
                .map_err(|e| e.to_string())?;
            berth_fs::atomic_write(&pidf, pid.to_string().as_bytes()).map_err(|e| e.to_string())?;
            Ok(pid)
        }
    }
}

/// The pause process: new namespaces, then nothing but waiting, for ever.
fn pause_child(mut ready: std::io::PipeWriter, mut go: std::io::PipeReader) -> ! {
    // SAFETY: unshare with constant flags in the fresh child.
    let ok = unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } == 0;
    let _ = ready.write_all(if ok { b"u" } else { b"x" });
    let mut b = [0u8; 1];
    if !ok || go.read_exact(&mut b).is_err() {
        // SAFETY: leaving the child.
        unsafe { libc::_exit(1) }
    }
    drop((ready, go));
    let _ = rustix::process::setsid();
    let _ = std::env::set_current_dir("/");
    // SAFETY: prctl and signal calls with constant arguments; then only pause.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"berth-pause".as_ptr());
        for s in [libc::SIGINT, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(s, libc::SIG_IGN);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        loop {
            libc::pause();
        }
    }
}

/// Writes the pause process's id maps: through newuidmap/newgidmap with
/// subordinate ranges, or the user's own ids alone (setgroups denied first,
/// as the kernel requires of an unprivileged writer).
fn write_maps(pid: i32, m: &Mapping) -> Result<(), String> {
    match (m.sub_uids, m.sub_gids) {
        (Some((su, sn)), Some((sg, gn))) => {
            for (tool, own, start, n) in
                [("newuidmap", m.uid, su, sn), ("newgidmap", m.gid, sg, gn)]
            {
                let out = std::process::Command::new(tool)
                    .args([pid.to_string(), "0".into(), own.to_string(), "1".into()])
                    .args(["1".to_string(), start.to_string(), n.to_string()])
                    .output()
                    .map_err(|e| format!("{tool}: {e} (apt-get install uidmap)"))?;
                if !out.status.success() {
                    return Err(format!(
                        "{tool}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
        }
        _ => {
            let w = |f: &str, s: String| {
                std::fs::write(format!("/proc/{pid}/{f}"), s)
                    .map_err(|e| format!("writing /proc/{pid}/{f}: {e}"))
            };
            w("setgroups", "deny".into())?;
            w("uid_map", format!("0 {} 1\n", m.uid))?;
            w("gid_map", format!("0 {} 1\n", m.gid))?;
        }
    }
    Ok(())
}

/// The error for an image file whose owner this user cannot map.
pub fn unmapped_owner_hint() -> Option<String> {
    let m = current_mapping()?;
    (m.sub_uids.is_none()).then(|| {
        let name = user_name(m.uid);
        format!(
            "this image has files owned by users other than root, and your user has no subordinate ids to map them to: add a range as root (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}) and install uidmap, then remove {} so berth maps them",
            runtime_dir(m.uid).display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_id() {
        let t = "alice:100000:65536\n1001:200000:65536\nbob:300000:0\n";
        assert_eq!(sub_range(t, "alice", 1000), Some((100000, 65536)));
        assert_eq!(sub_range(t, "carol", 1001), Some((200000, 65536)));
        assert_eq!(sub_range(t, "bob", 1002), None, "an empty range is none");
        assert_eq!(sub_range(t, "dave", 1003), None);
    }

    #[test]
    fn mappings_read_as_podman_shows_them() {
        let m = Mapping {
            uid: 1000,
            gid: 1000,
            sub_uids: Some((100000, 65536)),
            sub_gids: Some((100000, 65536)),
        };
        assert_eq!(
            m.describe(),
            "uid 0:1000:1,1:100000:65536; gid 0:1000:1,1:100000:65536"
        );
    }
}

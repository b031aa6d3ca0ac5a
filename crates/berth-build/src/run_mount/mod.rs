//! `RUN --mount=…` (BuildKit's syntax): `type=cache` (a directory kept
//! between builds, the pip/apt cache pattern), `type=tmpfs`, `type=bind` of a
//! file or directory of the build context (read-only), `type=secret` (a
//! `--secret` given to the build, as a file — written to a private directory
//! on tmpfs (`/dev/shm`) for the step only, so not to disk where that exists —
//! or as an environment variable) and `type=ssh` (the `--ssh` agent socket,
//! with `SSH_AUTH_SOCK` pointing at it). What is mounted never becomes part of
//! the layer, nor do the mount points the image did not have (the empty
//! directories or files made to mount on), as with BuildKit; secrets are not
//! part of the cache key, as with BuildKit. A bind may come `from=` an earlier
//! stage or an image (the builder mounts it for the step). A bind with `rw`
//! can be written by the step and what it writes is thrown away afterwards,
//! as BuildKit does: an overlay with a scratch upper directory over the
//! source, or a scratch copy of it where overlay's option syntax cannot name
//! the source (a path with `,` or `:`) or it is a single file. A `--mount`
//! value is a CSV record, as BuildKit reads it: a quoted field may hold commas. A cache with
//! `ro` is mounted read-only. `from=` on caches is refused with a clear error
//! rather than silently run without its mount.
//!
//! A bind's source is resolved inside its tree (the context or the stage) as
//! BuildKit does, a link followed as if the tree were `/`, and the very file
//! or directory found is bind-mounted through its handle onto a staging point
//! of the builder's own ([`Pinned`]) before the step's container sees it: a
//! link swapped into the context meanwhile cannot redirect the mount to the
//! host.

mod parse;

pub use parse::*;

use std::path::{Path, PathBuf};

use berth_store::inroot::{self, InRoot};
use serde_json::{Value, json};

/// One parsed `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMount {
    /// A persistent cache directory.
    Cache {
        /// Where it appears.
        target: String,
        /// Which cache (default: the target).
        id: String,
        /// Owner and mode of a new cache directory.
        uid: u32,
        /// Group.
        gid: u32,
        /// Mode.
        mode: u32,
        /// `ro`: mounted read-only.
        readonly: bool,
    },
    /// A tmpfs.
    Tmpfs {
        /// Where it appears.
        target: String,
        /// `size=` in bytes, if given.
        size: Option<u64>,
    },
    /// A path of the context, or of an earlier stage or an image (`from=`),
    /// read-only unless `rw`.
    Bind {
        /// Where it appears.
        target: String,
        /// Relative to the context or to the root of `from`.
        source: String,
        /// As parsed, the stage or image; once the builder has mounted it, the
        /// host directory it is mounted on.
        from: Option<String>,
        /// `rw`: the step may write to it; what it writes is discarded.
        rw: bool,
    },
    /// A `--secret`.
    Secret {
        /// Which secret.
        id: String,
        /// Where its file appears (`/run/secrets/<id>` unless only `env=`).
        target: Option<String>,
        /// An environment variable to hold it instead of (or besides) a file.
        env: Option<String>,
        /// Fail when the build was not given it.
        required: bool,
        /// Owner of the file.
        uid: u32,
        /// Group.
        gid: u32,
        /// Mode (0400 by default).
        mode: u32,
    },
    /// The `--ssh` agent socket (bound as it is: its owner and mode are the
    /// host's, so `uid`, `gid` and `mode` are refused rather than ignored).
    Ssh {
        /// Which agent (`default`).
        id: String,
        /// Where the socket appears.
        target: String,
        /// Fail when the build was not given it.
        required: bool,
    },
}

impl RunMount {
    /// Where it appears in the filesystem (an env-only secret appears nowhere).
    pub fn target(&self) -> Option<&str> {
        match self {
            RunMount::Cache { target, .. }
            | RunMount::Tmpfs { target, .. }
            | RunMount::Bind { target, .. }
            | RunMount::Ssh { target, .. } => Some(target),
            RunMount::Secret { target, .. } => target.as_deref(),
        }
    }
}

/// Where a `--secret` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file on the build host.
    File(PathBuf),
    /// An environment variable of the build command.
    Env(String),
}

impl SecretSource {
    /// Parses `docker build --secret`'s value: `id=X[,src=PATH|,env=VAR]`
    /// (`source=`, `type=file|env` too); with neither, the variable named `id`
    /// if it is set, as buildx does.
    pub fn parse(s: &str) -> Result<(String, SecretSource), String> {
        let (mut id, mut src, mut env, mut typ) = (None, None, None, None);
        for field in s.split(',').filter(|f| !f.is_empty()) {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| format!("--secret {s}: expected key=value, got {field:?}"))?;
            match k {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                "type" => typ = Some(v.to_string()),
                other => return Err(format!("--secret {s}: unexpected key {other:?}")),
            }
        }
        let id = id
            .or_else(|| {
                src.as_deref()
                    .and_then(|p| Path::new(p).file_name())
                    .map(|f| f.to_string_lossy().into_owned())
            })
            .ok_or_else(|| format!("--secret {s}: id is required"))?;
        let source = match (typ.as_deref(), src, env) {
            (Some("env"), Some(v), _) | (_, None, Some(v)) => SecretSource::Env(v),
            (Some("file") | None, Some(p), None) => SecretSource::File(PathBuf::from(p)),
            (None, None, None) if std::env::var_os(&id).is_some() => SecretSource::Env(id.clone()),
            (Some(t), _, _) if t != "file" && t != "env" => {
                return Err(format!("--secret {s}: type must be file or env, not {t:?}"));
            }
            _ => return Err(format!("--secret {s}: give src=PATH or env=VAR")),
        };
        Ok((id, source))
    }

    /// The secret's bytes.
    pub fn read(&self, id: &str) -> Result<Vec<u8>, String> {
        match self {
            SecretSource::File(p) => {
                std::fs::read(p).map_err(|e| format!("secret {id}: {}: {e}", p.display()))
            }
            SecretSource::Env(v) => std::env::var_os(v)
                .map(|x| std::os::unix::ffi::OsStrExt::as_bytes(x.as_os_str()).to_vec())
                .ok_or_else(|| format!("secret {id}: environment variable {v} is not set")),
        }
    }
}

/// What a build was given for `type=secret` and `type=ssh` mounts.
#[derive(Debug, Clone, Default)]
pub struct Provided {
    /// `--secret`: id → source.
    pub secrets: std::collections::BTreeMap<String, SecretSource>,
    /// `--ssh`: id → agent socket.
    pub ssh: std::collections::BTreeMap<String, PathBuf>,
}

/// The mounts and environment of one RUN step, ready for its container. The
/// secret files live in a private directory removed when this is dropped.
#[derive(Debug, Default)]
pub struct StepMounts {
    /// OCI mounts.
    pub mounts: Vec<Value>,
    /// `KEY=VALUE` for the process (secrets with `env=`, `SSH_AUTH_SOCK`).
    pub env: Vec<String>,
    /// The targets mounted (for the stubs to remove afterwards).
    pub targets: Vec<String>,
    secrets: Option<tempfile::TempDir>,
    /// Scratch space of `rw` binds, removed when this is dropped (after the
    /// step's container, and with it the overlay, is gone).
    scratch: Vec<tempfile::TempDir>,
    /// The bind sources, unmounted when this is dropped (after the overlays
    /// over them in `scratch` are gone: fields drop in order).
    pins: Vec<Pinned>,
}

/// The first component of `target` that none of `layers` (the image's
/// layer directories, top last) has: what mounting there will create.
/// Returns (that path, the target), or `None` if the target exists.
pub fn stub_root(target: &str, layers: &[PathBuf]) -> Option<(String, String)> {
    let mut path = String::new();
    for comp in target.split('/').filter(|c| !c.is_empty()) {
        path.push('/');
        path.push_str(comp);
        let exists = layers
            .iter()
            .any(|l| std::fs::symlink_metadata(l.join(&path[1..])).is_ok());
        if !exists {
            return Some((path, target.to_string()));
        }
    }
    None
}

/// Removes a mount stub from the layer being made (`upper`): `root` and the
/// directories down to `target`, if they hold nothing but the path to an
/// empty `target`. Whatever the step wrote beside them stays.
pub fn remove_stub(upper: &Path, root: &str, target: &str) {
    let t = upper.join(target.trim_start_matches('/'));
    let empty_target = match std::fs::symlink_metadata(&t) {
        Ok(m) if m.is_dir() => std::fs::read_dir(&t)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false),
        Ok(m) if m.is_file() => m.len() == 0,
        _ => false,
    };
    if !empty_target {
        return;
    }
    // Walk up from the target while each directory holds only its child.
    let mut cur = t.clone();
    let stop = upper.join(root.trim_start_matches('/'));
    let _ = if cur.is_dir() {
        std::fs::remove_dir(&cur)
    } else {
        std::fs::remove_file(&cur)
    };
    while cur != stop {
        let Some(parent) = cur.parent() else { break };
        if !parent.starts_with(&stop) {
            break;
        }
        cur = parent.to_path_buf();
        if std::fs::remove_dir(&cur).is_err() {
            break; // not empty: the step wrote something there
        }
    }
}

/// A bind source: `source` resolved inside the tree at `root` (the context
/// or a stage), links followed inside it; returns the tree and the real path.
pub fn bind_source(root: &Path, source: &str, what: &str) -> Result<(InRoot, String), String> {
    let tree = InRoot::open(root).map_err(|e| format!("{what} {}: {e}", root.display()))?;
    let real = tree
        .resolve(source)
        .map_err(|e| format!("--mount source {source}: not found in {what}: {e}"))?;
    Ok((tree, real))
}

/// The content identity of a bind source, for the step's cache key: names,
/// modes and contents of every file under it (read inside its tree).
pub fn content_hash(tree: &InRoot, real: &str) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut add = |rel: &str, st: &inroot::Stat| {
        h.update(rel.as_bytes());
        h.update((st.st_mode & 0o7777).to_le_bytes());
        if inroot::is_symlink(st) {
            if let Ok(t) = tree.read_link(rel) {
                h.update(t.display().to_string().as_bytes());
            }
        } else if inroot::is_file(st)
            && let Ok(mut f) = tree.open_file(rel)
        {
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n) = std::io::Read::read(&mut f, &mut buf) {
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
    };
    let Ok(st) = tree.lstat(real) else {
        return "missing".into();
    };
    add(real, &st);
    if inroot::is_dir(&st) {
        let _ = tree.walk(real, &mut |rel, st| {
            add(rel, st);
            Ok(true)
        });
    }
    hex::encode(h.finalize())
}

/// A bind source pinned for one step: the file or directory found in its
/// tree, bind-mounted through its handle (`/proc/self/fd/N`, the resolved
/// inode itself, not a path) onto a staging point in the builder's scratch
/// space. Unmounted before its directory is removed, on drop.
#[derive(Debug)]
pub struct Pinned {
    /// The staging point: what the step's mount names.
    pub path: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Pinned {
    /// Pins `real` of `tree` under `scratch`.
    pub fn new(tree: &InRoot, real: &str, scratch: &Path) -> Result<Pinned, String> {
        use std::os::fd::AsRawFd;
        let fd = tree
            .open_path(real)
            .map_err(|e| format!("--mount source {real}: {e}"))?;
        let st = inroot::fstat(&fd).map_err(|e| format!("--mount source {real}: {e}"))?;
        let dir = tempfile::Builder::new()
            .prefix("berth-bind-")
            .tempdir_in(scratch)
            .map_err(|e| format!("scratch space in {}: {e}", scratch.display()))?;
        let path = dir.path().join("src");
        if inroot::is_dir(&st) {
            std::fs::create_dir(&path)
        } else {
            std::fs::write(&path, b"")
        }
        .map_err(|e| format!("{}: {e}", path.display()))?;
        let src = format!("/proc/self/fd/{}", fd.as_raw_fd());
        berth_runtime::rootfs::mount::sys_mount(
            Some(&src),
            &path.display().to_string(),
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .map_err(|e| format!("--mount source {real}: bind: {e}"))?;
        Ok(Pinned {
            path,
            dir: Some(dir),
        })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let unmounted =
            rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH).is_ok();
        let dir = self.dir.take().expect("dropped once");
        if unmounted {
            drop(dir);
        } else {
            // Still mounted (or unknown): never remove through the mount;
            // the scratch space is collected with the build's.
            let _ = dir.keep();
        }
    }
}

/// The OCI mount of a parsed cache, tmpfs or bind `--mount`; cache
/// directories live under `cache_root`, made on first use with the asked owner
/// and mode; an `rw` bind's scratch space is made in `scratch` and kept in
/// `keep` for as long as the step runs.
fn spec_mount(
    m: &RunMount,
    cache_root: &Path,
    context: &Path,
    scratch: &Path,
    keep: &mut Vec<tempfile::TempDir>,
    pins: &mut Vec<Pinned>,
) -> Result<Value, String> {
    match m {
        RunMount::Cache {
            target,
            id,
            uid,
            gid,
            mode,
            readonly,
        } => {
            use sha2::Digest as _;
            let dir = cache_root.join(hex::encode(sha2::Sha256::digest(id.as_bytes())));
            if !dir.exists() {
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid))
                    .map_err(|e| format!("chown {}: {e}", dir.display()))?;
                std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(*mode))
                    .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
            }
            let access = if *readonly { "ro" } else { "rw" };
            Ok(
                json!({"destination": target, "type": "bind", "source": dir, "options": ["rbind", access]}),
            )
        }
        RunMount::Tmpfs { target, size } => {
            let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
            if let Some(s) = size {
                opts.push(format!("size={s}"));
            }
            Ok(json!({"destination": target, "type": "tmpfs", "source": "tmpfs", "options": opts}))
        }
        RunMount::Bind {
            target,
            source,
            from,
            rw,
        } => {
            let (tree, real) = match from {
                Some(dir) => bind_source(Path::new(dir), source, "the stage")?,
                None => bind_source(context, source, "the build context")?,
            };
            let pinned = Pinned::new(&tree, &real, scratch)?;
            let p = pinned.path.clone();
            pins.push(pinned);
            if !*rw {
                return Ok(
                    json!({"destination": target, "type": "bind", "source": p, "options": ["rbind", "ro"]}),
                );
            }
            let tmp = tempfile::Builder::new()
                .prefix("berth-rwbind-")
                .tempdir_in(scratch)
                .map_err(|e| format!("scratch space in {}: {e}", scratch.display()))?;
            let (upper, work, copy) = (
                tmp.path().join("upper"),
                tmp.path().join("work"),
                tmp.path().join("copy"),
            );
            let spec = if p.is_dir() && overlay_can_name(&p) && overlay_can_name(tmp.path()) {
                for d in [&upper, &work] {
                    std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
                }
                let mut options = vec![
                    format!("lowerdir={}", p.display()),
                    format!("upperdir={}", upper.display()),
                    format!("workdir={}", work.display()),
                ];
                options.extend(
                    berth_store::archive::overlay_meta::mount_options().map(str::to_string),
                );
                json!({"destination": target, "type": "overlay", "source": "overlay",
                    "options": options})
            } else {
                if p.is_dir() {
                    berth_store::snapshot::copy_tree(&p, &copy).map_err(|e| e.to_string())?;
                } else {
                    std::fs::copy(&p, &copy)
                        .map_err(|e| format!("copying {}: {e}", p.display()))?;
                }
                json!({"destination": target, "type": "bind", "source": copy, "options": ["rbind", "rw"]})
            };
            keep.push(tmp);
            Ok(spec)
        }
        RunMount::Secret { .. } | RunMount::Ssh { .. } => {
            unreachable!("secrets and ssh are prepared by step_mounts")
        }
    }
}

/// Whether `p` can be given in overlay's mount options, which are split at
/// `,` and its lower directories at `:`.
fn overlay_can_name(p: &Path) -> bool {
    !p.to_string_lossy().contains([',', ':', '\\'])
}

/// Where secret files are written for a step: `/dev/shm` when it is a tmpfs
/// (the secret never reaches a disk), else `fallback` (the builder's scratch
/// space). The directory is private (0700) and goes when the step is over.
fn secret_dir(fallback: &Path) -> Result<tempfile::TempDir, String> {
    let shm = Path::new("/dev/shm");
    let on_tmpfs = rustix::fs::statfs(shm).is_ok_and(|s| s.f_type == libc::TMPFS_MAGIC);
    let base = if on_tmpfs { shm } else { fallback };
    tempfile::Builder::new()
        .prefix("berth-secrets-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(base)
        .map_err(|e| format!("secrets directory in {}: {e}", base.display()))
}

/// Writes secret `id` into `dir`, owned and moded as asked; returns its path.
fn secret_file(
    dir: &Path,
    id: &str,
    data: &[u8],
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<PathBuf, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |what: &str, e: std::io::Error| format!("secret {id}: {what}: {e}");
    // One file per mount (the same secret may be mounted twice, moded apart).
    let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let p = dir.join(n.to_string());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .map_err(|e| err("create", e))?;
    f.write_all(data).map_err(|e| err("write", e))?;
    std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(|e| err("chown", e))?;
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| err("chmod", e))?;
    Ok(p)
}

/// Everything the step's `--mount`s need: OCI mounts (cache directories made
/// under `cache_root`), secret files (see [`secret_dir`]; `scratch` is the
/// builder's own space) and environment, the ssh agent socket. A secret or
/// agent the build was not given is left out, unless `required`.
pub fn step_mounts(
    run_mounts: &[RunMount],
    cache_root: &Path,
    context: &Path,
    provided: &Provided,
    scratch: &Path,
) -> Result<StepMounts, String> {
    let mut out = StepMounts::default();
    for m in run_mounts {
        match m {
            RunMount::Secret {
                id,
                target,
                env,
                required,
                uid,
                gid,
                mode,
            } => {
                let Some(src) = provided.secrets.get(id) else {
                    if *required {
                        return Err(format!(
                            "secret {id} is required but was not given (--secret id={id},src=…)"
                        ));
                    }
                    continue;
                };
                let data = src.read(id)?;
                if let Some(var) = env {
                    let value = String::from_utf8(data.clone())
                        .map_err(|_| format!("secret {id}: not UTF-8, cannot be env {var}"))?;
                    out.env.push(format!("{var}={value}"));
                }
                if let Some(t) = target {
                    if out.secrets.is_none() {
                        out.secrets = Some(secret_dir(scratch)?);
                    }
                    let dir = out.secrets.as_ref().expect("made above").path();
                    let path = secret_file(dir, id, &data, *uid, *gid, *mode)?;
                    out.mounts
                        .push(json!({"destination": t, "type": "bind", "source": path,
                        "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}));
                    out.targets.push(t.clone());
                }
            }
            RunMount::Ssh {
                id,
                target,
                required,
            } => {
                let Some(sock) = provided.ssh.get(id) else {
                    if *required {
                        return Err(format!(
                            "ssh agent {id} is required but was not given (--ssh {id})"
                        ));
                    }
                    continue;
                };
                out.mounts.push(
                    json!({"destination": target, "type": "bind", "source": sock,
                    "options": ["bind", "nosuid", "nodev", "noexec"]}),
                );
                out.env.push(format!("SSH_AUTH_SOCK={target}"));
                out.targets.push(target.clone());
            }
            other => {
                out.mounts.push(spec_mount(
                    other,
                    cache_root,
                    context,
                    scratch,
                    &mut out.scratch,
                    &mut out.pins,
                )?);
                out.targets
                    .push(other.target().expect("has a target").to_string());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_go_what_the_step_wrote_stays() {
        let lower = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(lower.path().join("etc")).unwrap();
        let upper = tempfile::tempdir().unwrap();
        let layers = vec![lower.path().to_path_buf(), upper.path().to_path_buf()];
        assert_eq!(stub_root("/etc", &layers), None, "exists in the image");
        let (root, t) = stub_root("/var/cache/app", &layers).unwrap();
        assert_eq!(root, "/var");
        // Only the stub: all of it goes.
        std::fs::create_dir_all(upper.path().join("var/cache/app")).unwrap();
        remove_stub(upper.path(), &root, &t);
        assert!(!upper.path().join("var").exists());
        // The step also wrote /var/cache/keep: that stays.
        std::fs::create_dir_all(upper.path().join("var/cache/app")).unwrap();
        std::fs::write(upper.path().join("var/cache/keep"), "x").unwrap();
        remove_stub(upper.path(), &root, &t);
        assert!(!upper.path().join("var/cache/app").exists());
        assert!(upper.path().join("var/cache/keep").exists());
        // A target the step filled is no stub.
        std::fs::create_dir_all(upper.path().join("var/cache/app")).unwrap();
        std::fs::write(upper.path().join("var/cache/app/f"), "x").unwrap();
        remove_stub(upper.path(), &root, &t);
        assert!(upper.path().join("var/cache/app/f").exists());
    }

    #[test]
    fn bind_sources_stay_in_the_context() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("out")).unwrap();
        std::os::unix::fs::symlink("/a", d.path().join("abs")).unwrap();
        let src = |s: &str| bind_source(d.path(), s, "the build context").map(|(_, r)| r);
        assert_eq!(src("a").unwrap(), "a");
        assert_eq!(src("../").unwrap(), "", "`..` stops at the context's root");
        assert_eq!(src("abs").unwrap(), "a", "a link is followed inside");
        let e = src("out").unwrap_err();
        assert!(e.contains("not found in the build context"), "{e}");
        let (tree, _) = bind_source(d.path(), "a", "x").unwrap();
        let h1 = content_hash(&tree, "a");
        std::fs::write(d.path().join("a"), "y").unwrap();
        assert_ne!(h1, content_hash(&tree, "a"));
    }

    #[test]
    fn secret_flags_parse_as_docker_s() {
        let (id, src) = SecretSource::parse("id=npm,src=/tmp/npmrc").unwrap();
        assert_eq!(
            (id.as_str(), src),
            ("npm", SecretSource::File("/tmp/npmrc".into()))
        );
        let (id, src) = SecretSource::parse("id=tok,env=GITHUB_TOKEN").unwrap();
        assert_eq!(
            (id.as_str(), src),
            ("tok", SecretSource::Env("GITHUB_TOKEN".into()))
        );
        let (id, _) = SecretSource::parse("source=/etc/key.pem").unwrap();
        assert_eq!(id, "key.pem");
        assert!(SecretSource::parse("src=/x,bogus=1").is_err());
        assert!(SecretSource::parse("id=berth-no-such-variable-xyz").is_err());
    }

    #[test]
    fn secrets_become_files_and_env_and_stay_out_of_sight() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("s");
        std::fs::write(&f, "hunter2").unwrap();
        let mut provided = Provided::default();
        provided.secrets.insert("pw".into(), SecretSource::File(f));
        let mounts = vec![
            parse("type=secret,id=pw,mode=0440,gid=5").unwrap(),
            parse("type=secret,id=pw,env=PW,target=/x/pw").unwrap(),
            parse("type=secret,id=absent").unwrap(),
        ];
        let sm = step_mounts(&mounts, d.path(), d.path(), &provided, d.path()).unwrap();
        assert_eq!(sm.targets, ["/run/secrets/pw", "/x/pw"]);
        assert_eq!(sm.env, ["PW=hunter2"]);
        let src = sm.mounts[0]["source"].as_str().unwrap();
        assert!(
            src.starts_with("/dev/shm/berth-secrets-"),
            "on tmpfs: {src}"
        );
        assert_eq!(std::fs::read_to_string(src).unwrap(), "hunter2");
        let dir = Path::new(src).parent().unwrap().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let md = std::fs::metadata(src).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((md.mode() & 0o777, md.gid()), (0o440, 5));
        assert_eq!(
            sm.mounts[0]["options"],
            json!(["bind", "ro", "nosuid", "nodev", "noexec"])
        );
        drop(sm);
        assert!(!dir.exists(), "gone with the step");
        // Required and not given: an error naming it.
        let e = step_mounts(
            &[parse("type=secret,id=absent,required").unwrap()],
            d.path(),
            d.path(),
            &provided,
            d.path(),
        )
        .unwrap_err();
        assert!(e.contains("secret absent is required"), "{e}");
        let e = step_mounts(
            &[parse("type=ssh,required=true").unwrap()],
            d.path(),
            d.path(),
            &provided,
            d.path(),
        )
        .unwrap_err();
        assert!(e.contains("ssh agent default is required"), "{e}");
    }
}

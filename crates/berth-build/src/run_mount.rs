//! `RUN --mount=…` (BuildKit's syntax): `type=cache` (a directory kept
//! between builds, the pip/apt cache pattern), `type=tmpfs`, and `type=bind`
//! of a file or directory of the build context (read-only). What is mounted
//! never becomes part of the layer, nor do the mount points the image did
//! not have (the empty directories or files made to mount on), as with
//! BuildKit. Other kinds (`secret`, `ssh`, binds
//! `from=` a stage, read-write binds) are refused with a clear error rather
//! than silently run without their mount.

use std::path::{Path, PathBuf};

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
    },
    /// A tmpfs.
    Tmpfs {
        /// Where it appears.
        target: String,
        /// `size=` in bytes, if given.
        size: Option<u64>,
    },
    /// A context path, read-only.
    Bind {
        /// Where it appears.
        target: String,
        /// Relative to the context.
        source: String,
    },
}

impl RunMount {
    /// Where it appears.
    pub fn target(&self) -> &str {
        match self {
            RunMount::Cache { target, .. }
            | RunMount::Tmpfs { target, .. }
            | RunMount::Bind { target, .. } => target,
        }
    }
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

/// Parses one `--mount` value.
pub fn parse(s: &str) -> Result<RunMount, String> {
    let mut typ = "bind".to_string();
    let mut target = None;
    let mut source = String::new();
    let mut id = None;
    let (mut uid, mut gid, mut mode) = (0u32, 0u32, 0o755u32);
    let mut size = None;
    for field in s.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k.to_ascii_lowercase().as_str() {
            "type" => typ = v.to_string(),
            "target" | "dst" | "destination" => target = Some(v.to_string()),
            "source" | "src" => source = v.to_string(),
            "id" => id = Some(v.to_string()),
            "uid" => {
                uid = v
                    .parse()
                    .map_err(|_| format!("--mount {s}: invalid uid {v}"))?
            }
            "gid" => {
                gid = v
                    .parse()
                    .map_err(|_| format!("--mount {s}: invalid gid {v}"))?
            }
            "mode" => {
                mode = u32::from_str_radix(v, 8)
                    .map_err(|_| format!("--mount {s}: invalid mode {v}"))?
            }
            "size" => {
                size = Some(parse_size(v).ok_or_else(|| format!("--mount {s}: invalid size {v}"))?)
            }
            "sharing" | "readonly" | "ro" | "required" => {}
            "rw" | "readwrite" if typ == "bind" => {
                return Err(format!(
                    "--mount {s}: read-write bind mounts are not supported yet"
                ));
            }
            "from" => {
                return Err(format!(
                    "--mount {s}: mounts from another stage or image are not supported yet"
                ));
            }
            other => return Err(format!("--mount {s}: unexpected key '{other}'")),
        }
    }
    let target = target
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("--mount {s}: target is required"))?;
    let target = if target.starts_with('/') {
        target
    } else {
        format!("/{target}")
    };
    match typ.as_str() {
        "cache" => Ok(RunMount::Cache {
            id: id.unwrap_or_else(|| target.clone()),
            target,
            uid,
            gid,
            mode,
        }),
        "tmpfs" => Ok(RunMount::Tmpfs { target, size }),
        "bind" => Ok(RunMount::Bind {
            target,
            source: if source.is_empty() {
                ".".into()
            } else {
                source
            },
        }),
        other => Err(format!(
            "--mount {s}: type={other} is not supported yet (cache, tmpfs and bind are)"
        )),
    }
}

fn parse_size(v: &str) -> Option<u64> {
    let v = v.to_ascii_lowercase();
    let (n, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1u64 << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        _ => (v.as_str(), 1),
    };
    n.parse::<u64>().ok().map(|n| n * mult)
}

/// A context path inside the context (no `..` or symlink out of it).
pub fn context_path(context: &Path, source: &str) -> Result<PathBuf, String> {
    let root = context
        .canonicalize()
        .map_err(|e| format!("context {}: {e}", context.display()))?;
    let p = root
        .join(source.trim_start_matches('/'))
        .canonicalize()
        .map_err(|e| format!("--mount source {source}: {e}"))?;
    if !p.starts_with(&root) {
        return Err(format!(
            "--mount source {source} is outside the build context"
        ));
    }
    Ok(p)
}

/// The content identity of a bind source, for the step's cache key: names,
/// modes and contents of every file under it.
pub fn content_hash(p: &Path) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut walk = vec![p.to_path_buf()];
    while let Some(x) = walk.pop() {
        let Ok(md) = std::fs::symlink_metadata(&x) else {
            continue;
        };
        let rel = x.strip_prefix(p).unwrap_or(&x).display().to_string();
        h.update(rel.as_bytes());
        h.update(std::os::unix::fs::PermissionsExt::mode(&md.permissions()).to_le_bytes());
        if md.is_dir() {
            let mut kids: Vec<PathBuf> = std::fs::read_dir(&x)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            kids.sort();
            kids.reverse();
            walk.extend(kids);
        } else if md.is_symlink() {
            if let Ok(t) = std::fs::read_link(&x) {
                h.update(t.display().to_string().as_bytes());
            }
        } else if let Ok(b) = std::fs::read(&x) {
            h.update(&b);
        }
    }
    hex::encode(h.finalize())
}

/// The OCI mount of a parsed `--mount`; cache directories live under
/// `cache_root`, made on first use with the asked owner and mode.
pub fn spec_mount(m: &RunMount, cache_root: &Path, context: &Path) -> Result<Value, String> {
    match m {
        RunMount::Cache {
            target,
            id,
            uid,
            gid,
            mode,
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
            Ok(
                json!({"destination": target, "type": "bind", "source": dir, "options": ["rbind", "rw"]}),
            )
        }
        RunMount::Tmpfs { target, size } => {
            let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
            if let Some(s) = size {
                opts.push(format!("size={s}"));
            }
            Ok(json!({"destination": target, "type": "tmpfs", "source": "tmpfs", "options": opts}))
        }
        RunMount::Bind { target, source } => {
            let p = context_path(context, source)?;
            Ok(
                json!({"destination": target, "type": "bind", "source": p, "options": ["rbind", "ro"]}),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildkit_mount_syntax() {
        assert_eq!(
            parse("type=cache,target=/root/.cache/pip").unwrap(),
            RunMount::Cache {
                target: "/root/.cache/pip".into(),
                id: "/root/.cache/pip".into(),
                uid: 0,
                gid: 0,
                mode: 0o755
            }
        );
        assert_eq!(
            parse("type=cache,id=apt,dst=/var/cache/apt,sharing=locked,uid=1000,mode=0700")
                .unwrap(),
            RunMount::Cache {
                target: "/var/cache/apt".into(),
                id: "apt".into(),
                uid: 1000,
                gid: 0,
                mode: 0o700
            }
        );
        assert_eq!(
            parse("type=tmpfs,target=/t,size=1m").unwrap(),
            RunMount::Tmpfs {
                target: "/t".into(),
                size: Some(1 << 20)
            }
        );
        assert_eq!(
            parse("target=/src,source=app").unwrap(),
            RunMount::Bind {
                target: "/src".into(),
                source: "app".into()
            }
        );
        for bad in [
            "type=secret,id=x,target=/s",
            "type=cache",
            "type=bind,target=/x,from=builder",
            "type=bind,target=/x,rw",
            "type=cache,target=/x,bogus=1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

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
        assert!(context_path(d.path(), "a").is_ok());
        assert!(context_path(d.path(), "../").is_err());
        assert!(context_path(d.path(), "out").is_err());
        let h1 = content_hash(&d.path().join("a"));
        std::fs::write(d.path().join("a"), "y").unwrap();
        assert_ne!(h1, content_hash(&d.path().join("a")));
    }
}

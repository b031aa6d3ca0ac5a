//! `cp` and the archive endpoints: a container's paths read and written
//! inside its root, by docker's rules.

use super::*;

/// A filesystem root to copy from or into: `/proc/<pid>/root` of a running
/// container, or its snapshot mounted in this process's private mount namespace.
struct CpRoot {
    path: std::path::PathBuf,
    mounted: bool,
}

impl CpRoot {
    /// The root as a libpathrs root (opened through /proc/<pid>/root's magic link).
    pub(crate) fn open(&self) -> Result<pathrs::Root> {
        let fd = rustix::fs::open(
            &self.path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| EngineError::io("open", &self.path, e.into()))?;
        Ok(pathrs::Root::from_fd(fd))
    }

    /// The root as a tree to read from, every path resolved inside it.
    pub(crate) fn tree(&self) -> Result<berth_store::inroot::InRoot> {
        berth_store::inroot::InRoot::open(&self.path)
            .map_err(|e| EngineError::io("open", &self.path, e))
    }
}

impl Drop for CpRoot {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

impl Engine {
    fn cp_root(&self, c: &Container) -> Result<CpRoot> {
        if matches!(c.state.status, Status::Running | Status::Paused) && c.state.pid > 0 {
            return Ok(CpRoot {
                path: format!("/proc/{}/root", c.state.pid).into(),
                mounted: false,
            });
        }
        // SAFETY: unshare and a propagation change in the single-threaded CLI.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
            {
                return Err(EngineError::io(
                    "unshare",
                    Path::new("mount namespace"),
                    std::io::Error::last_os_error(),
                ));
            }
        }
        let mnt = self.dir(&c.id).join(format!(".cp{}", std::process::id()));
        std::fs::create_dir_all(&mnt).map_err(|e| EngineError::io("mkdir", &mnt, e))?;
        let m = self.store.snapshots.mounts(&c.id)?;
        let m = m
            .first()
            .ok_or_else(|| EngineError::Corrupt("snapshot without mounts".into()))?;
        if m.typ == berth_store::snapshot::FUSE {
            berth_store::snapshot::mount_fuse(m, &mnt)
                .map_err(|e| EngineError::io("mount", &mnt, e))?;
            return Ok(CpRoot {
                path: mnt,
                mounted: true,
            });
        }
        let opts = m.options.join(",");
        let (typ, flags, data) = if m.typ == "bind" {
            (None, libc::MS_BIND | libc::MS_REC, String::new())
        } else {
            (Some(m.typ.as_str()), 0, opts)
        };
        berth_runtime::rootfs::mount::sys_mount(
            Some(&m.source),
            &mnt.display().to_string(),
            typ,
            flags,
            Some(&data),
        )
        .map_err(|e| EngineError::io("mount", &mnt, e))?;
        Ok(CpRoot {
            path: mnt,
            mounted: true,
        })
    }

    /// A path of a container as a tar (its top entry named by the path's
    /// base name, as docker's archive endpoint gives it) and its stat.
    /// Everything is resolved inside the container's root (a symlink
    /// pointing out of it leads back inside, never to the host) and read
    /// through handles, so a running container that swaps a file for a link
    /// meanwhile cannot make us read a host file. The last component is
    /// followed only with `follow` (`cp -L`), as docker does.
    pub fn archive_get(&self, q: &str, src: &str, follow: bool) -> Result<(PathStat, Vec<u8>)> {
        self.archive_get_as(q, src, follow, None)
    }

    pub(crate) fn archive_get_as(
        &self,
        q: &str,
        src: &str,
        follow: bool,
        name: Option<&str>,
    ) -> Result<(PathStat, Vec<u8>)> {
        use berth_store::archive::diff::Mapped;
        let c = self.find(q)?;
        let root = self.cp_root(&c)?;
        let tree = std::sync::Arc::new(root.tree()?);
        let (real, stat) = path_stat(&tree, src, follow).map_err(|_| {
            EngineError::PathNotFound(format!("Could not find the file {src} in container {q}"))
        })?;
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| stat.name.clone());
        // An empty name: the directory's contents, without itself.
        let contents = name.is_empty() && stat.is_dir();
        let mut items = Vec::new();
        if !contents {
            items.push(Mapped::InRoot {
                root: tree.clone(),
                rel: real.as_bytes().to_vec(),
                name: name.as_bytes().to_vec(),
            });
        }
        if stat.is_dir() {
            let strip = if real.is_empty() { 0 } else { real.len() + 1 };
            tree.walk(&real, &mut |child, st| {
                let rest = &child[strip..];
                items.push(Mapped::InRoot {
                    root: tree.clone(),
                    rel: child.as_bytes().to_vec(),
                    name: if contents {
                        rest.as_bytes().to_vec()
                    } else {
                        format!("{name}/{rest}").into_bytes()
                    },
                });
                Ok(berth_store::inroot::is_dir(st))
            })
            .map_err(|e| EngineError::io("readdir", Path::new(src), e))?;
        }
        let tar = berth_store::archive::diff::write_mapped(
            &items,
            &Default::default(),
            Vec::new(),
            &WriteOptions::default(),
        )?;
        Ok((stat, tar))
    }

    /// The stat of a path of a container (docker's
    /// `X-Docker-Container-Path-Stat`).
    pub fn archive_stat(&self, q: &str, src: &str) -> Result<PathStat> {
        let c = self.find(q)?;
        let root = self.cp_root(&c)?;
        let tree = root.tree()?;
        path_stat(&tree, src, false).map(|(_, st)| st).map_err(|_| {
            EngineError::PathNotFound(format!("Could not find the file {src} in container {q}"))
        })
    }

    /// Extracts a tar into directory `dir` of a container (docker's
    /// `PUT /containers/{id}/archive`): resolved inside its root, nothing
    /// of another type replaced, `.wh.` names written as files.
    pub fn archive_put(&self, q: &str, dir: &str, tar: impl std::io::Read) -> Result<()> {
        let c = self.find(q)?;
        let root = self.cp_root(&c)?;
        let r = root.open()?;
        let h = r.resolve(dir).map_err(|_| {
            EngineError::PathNotFound(format!("Could not find the file {dir} in container {q}"))
        })?;
        let fd: std::os::fd::OwnedFd = h.into();
        let target = std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        if !target.is_dir() {
            return Err(EngineError::Invalid(format!(
                "extraction point is not a directory: {dir}"
            )));
        }
        berth_store::archive::apply::apply(&target, tar, &cp_apply_options())?;
        Ok(())
    }

    /// `cp CONTAINER:SRC DEST`: [`Engine::archive_get`] written onto the
    /// host, by docker's rules: into an existing directory the source keeps
    /// its name (`SRC/.` copies the directory's contents), a `DEST/` that
    /// does not exist is an error, and so is a missing parent. Nothing on
    /// the host is removed: a directory where a file would go (or the
    /// reverse) is docker's "cannot overwrite" error, and files named
    /// `.wh.*` are copied as files.
    pub fn cp_from(&self, q: &str, src: &str, dest: &Path, follow: bool) -> Result<()> {
        let contents = src.ends_with("/.") || src == ".";
        let base = Path::new(src)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        let dest_s = dest.to_string_lossy();
        let (out_dir, name) = if dest.is_dir() {
            (
                dest.to_path_buf(),
                if contents { String::new() } else { base },
            )
        } else {
            if dest_s.ends_with('/') {
                return Err(EngineError::Invalid(format!(
                    "destination directory {dest_s:?} must exist"
                )));
            }
            let parent = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            if !parent.is_dir() {
                return Err(EngineError::Invalid(format!(
                    "destination directory {:?} must exist",
                    parent.display().to_string()
                )));
            }
            (
                parent,
                dest.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or(base),
            )
        };
        let (stat, tar) =
            self.archive_get_as(q, src, follow, Some(&name))
                .map_err(|e| match e {
                    EngineError::PathNotFound(m) => EngineError::Invalid(m),
                    e => e,
                })?;
        if !name.is_empty() {
            let target = out_dir.join(&name);
            if let Ok(m) = std::fs::symlink_metadata(&target)
                && m.is_dir() != stat.is_dir()
            {
                return Err(EngineError::Invalid(if m.is_dir() {
                    format!(
                        "cannot overwrite directory {:?} with non-directory {src:?}",
                        target.display().to_string()
                    )
                } else {
                    format!(
                        "cannot overwrite non-directory {:?} with directory {src:?}",
                        target.display().to_string()
                    )
                }));
            }
        }
        berth_store::archive::apply::apply(&out_dir, &tar[..], &cp_apply_options())?;
        Ok(())
    }

    /// `cp SRC CONTAINER:DEST`, written inside the container's root, by
    /// docker's rules (see [`Engine::cp_from`]): the destination's parent
    /// must exist, `DEST/` must be an existing directory, a directory
    /// cannot replace a file.
    pub fn cp_into(&self, src: &Path, q: &str, dest: &str) -> Result<()> {
        let c = self.find(q)?;
        let md = std::fs::symlink_metadata(src).map_err(|e| EngineError::io("stat", src, e))?;
        let src_s = src.to_string_lossy();
        let contents = md.is_dir() && (src_s.ends_with("/.") || src_s == ".");
        let root = self.cp_root(&c)?;
        let r = root.open()?;
        let base = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "src".into());
        let existing_dir = r.resolve(dest).ok().map(|h| {
            let fd: std::os::fd::OwnedFd = h.into();
            std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map(|m| m.is_dir())
                .unwrap_or(false)
        });
        let not_found =
            |p: &str| EngineError::Invalid(format!("Could not find the file {p} in container {q}"));
        let (dir, name) = match existing_dir {
            Some(true) => (
                dest.to_string(),
                if contents { String::new() } else { base },
            ),
            Some(false) if md.is_dir() => {
                return Err(EngineError::Invalid(format!(
                    "cannot overwrite non-directory {dest:?} with directory {src_s:?}"
                )));
            }
            None if dest.ends_with('/') => {
                return Err(EngineError::Invalid(format!(
                    "destination directory {dest:?} must exist in container {q}"
                )));
            }
            _ => {
                let p = Path::new(dest);
                (
                    p.parent()
                        .map(|x| x.display().to_string())
                        .filter(|x| !x.is_empty())
                        .unwrap_or_else(|| "/".into()),
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or(base),
                )
            }
        };
        let h = r.resolve(&dir).map_err(|_| not_found(&dir))?;
        let fd: std::os::fd::OwnedFd = h.into();
        let target = std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        if !target.is_dir() {
            return Err(not_found(&dir));
        }
        let mut items = Vec::new();
        if name.is_empty() {
            collect_contents(src, &mut items)?;
        } else {
            items.push(berth_store::archive::diff::Mapped::Path {
                src: src.to_path_buf(),
                name: name.as_bytes().to_vec(),
            });
            if md.is_dir() {
                collect(src, &name, &mut items)?;
            }
        }
        let tar = berth_store::archive::diff::write_mapped(
            &items,
            &Default::default(),
            Vec::new(),
            &WriteOptions::default(),
        )?;
        berth_store::archive::apply::apply(&target, &tar[..], &cp_apply_options())?;
        Ok(())
    }
}

/// docker's `container.PathStat`: what `HEAD /containers/{id}/archive`
/// says of a path (mode in Go's `os.FileMode` bits).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PathStat {
    /// Base name.
    pub name: String,
    /// Size in bytes.
    pub size: i64,
    /// Permission bits with Go's type bits (dir 1<<31, symlink 1<<27…).
    pub mode: u32,
    /// RFC 3339 modification time.
    pub mtime: String,
    /// A symlink's target.
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

impl PathStat {
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & (1 << 31) != 0
    }
}

/// Resolves `src` in `tree` (its last component followed with `follow`)
/// and stats it.
fn path_stat(
    tree: &berth_store::inroot::InRoot,
    src: &str,
    follow: bool,
) -> std::io::Result<(String, PathStat)> {
    use berth_store::inroot;
    let real = if follow {
        tree.resolve(src)?
    } else {
        tree.resolve_parent(src)?
    };
    let st = tree.lstat(&real)?;
    let mut mode = st.st_mode & 0o777;
    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
    mode |= match ft {
        rustix::fs::FileType::Directory => 1 << 31,
        rustix::fs::FileType::Symlink => 1 << 27,
        rustix::fs::FileType::BlockDevice => 1 << 26,
        rustix::fs::FileType::CharacterDevice => (1 << 26) | (1 << 21),
        rustix::fs::FileType::Fifo => 1 << 25,
        rustix::fs::FileType::Socket => 1 << 24,
        _ => 0,
    };
    if st.st_mode & 0o4000 != 0 {
        mode |= 1 << 23;
    }
    if st.st_mode & 0o2000 != 0 {
        mode |= 1 << 22;
    }
    if st.st_mode & 0o1000 != 0 {
        mode |= 1 << 20;
    }
    let link_target = if inroot::is_symlink(&st) {
        tree.read_link(&real)
            .map(|t| t.display().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let name = Path::new(src.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into());
    let mtime = jiff::Timestamp::from_second(st.st_mtime)
        .map(|t| t.to_string())
        .unwrap_or_default();
    Ok((
        real,
        PathStat {
            name,
            size: st.st_size,
            mode,
            mtime,
            link_target,
        },
    ))
}

/// How `cp` writes: `.wh.` names are files, and nothing of another type
/// already there is replaced (docker refuses those copies).
fn cp_apply_options() -> berth_store::archive::apply::ApplyOptions {
    berth_store::archive::apply::ApplyOptions {
        whiteouts: berth_store::archive::apply::Whiteouts::Literal,
        keep_types: true,
        ..Default::default()
    }
}

/// The entries under `dir`, named relative to it (`cp DIR/. …`).
fn collect_contents(dir: &Path, out: &mut Vec<berth_store::archive::diff::Mapped>) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| EngineError::io("readdir", dir, e))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let name = n.to_string_lossy().into_owned();
        out.push(berth_store::archive::diff::Mapped::Path {
            src: p.clone(),
            name: name.as_bytes().to_vec(),
        });
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            collect(&p, &name, out)?;
        }
    }
    Ok(())
}

fn collect(
    dir: &Path,
    name: &str,
    out: &mut Vec<berth_store::archive::diff::Mapped>,
) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| EngineError::io("readdir", dir, e))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let child = format!("{name}/{}", n.to_string_lossy());
        out.push(berth_store::archive::diff::Mapped::Path {
            src: p.clone(),
            name: child.as_bytes().to_vec(),
        });
        if std::fs::symlink_metadata(&p)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            collect(&p, &child, out)?;
        }
    }
    Ok(())
}

//! Reading a directory tree that may be hostile: a build context, an earlier
//! stage's or an image's filesystem (`COPY --from`), a git checkout, a
//! container's root or upper directory (`cp`, `commit`).
//!
//! Every path is resolved inside the tree's root with `openat2(RESOLVE_IN_ROOT)`:
//! a symlink is followed as if the root were `/` (`link -> /` leads back to the
//! root, `../../..` stops at it), so nothing outside the tree is ever read, even
//! when a link is swapped in while we read (the kernel resolves each open in one
//! step). Files are opened as `O_PATH` handles without following their last
//! component, their type taken from that handle, and only then reopened for
//! reading through `/proc/self/fd`, so a FIFO, a device or a link put in a
//! file's place is never opened as the file.
//!
//! Written by hand over rustix because the lexical resolution the builder needs
//! (the resolved path back, to match `.dockerignore` rules and to name
//! destinations) is not something libpathrs exposes.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// How many symlinks one resolution may follow (the kernel's own limit is 40
/// per lookup; BuildKit's is 255 over a whole path).
const MAX_LINKS: usize = 255;

/// A directory whose paths are resolved inside it.
#[derive(Debug)]
pub struct InRoot {
    fd: OwnedFd,
    path: PathBuf,
}

/// What [`InRoot::lstat`] says of a path (its last component not followed).
pub type Stat = rustix::fs::Stat;

fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

impl InRoot {
    /// Opens `path` (itself resolved normally: it is ours, not the tree's).
    pub fn open(path: &Path) -> io::Result<InRoot> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(InRoot {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// A root from an open directory handle (`O_PATH` is enough); `path`
    /// names it in messages.
    pub fn from_fd(fd: OwnedFd, path: &Path) -> InRoot {
        InRoot {
            fd,
            path: path.to_path_buf(),
        }
    }

    /// The root's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root's handle.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn openat2(&self, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
        let rel = trim_rel(rel);
        let name = if rel.is_empty() {
            OsStr::new(".")
        } else {
            OsStr::from_bytes(rel)
        };
        Ok(rustix::fs::openat2(
            &self.fd,
            name,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?)
    }

    /// An `O_PATH` handle on `rel`, its last component not followed.
    pub fn open_path(&self, rel: impl AsRef<[u8]>) -> io::Result<OwnedFd> {
        self.openat2(rel.as_ref(), OFlags::PATH | OFlags::NOFOLLOW)
    }

    /// `lstat` of `rel`.
    pub fn lstat(&self, rel: impl AsRef<[u8]>) -> io::Result<Stat> {
        let fd = self.open_path(rel)?;
        Ok(rustix::fs::fstat(&fd)?)
    }

    /// Resolves `rel`, following every symlink (an absolute target from the
    /// root, `..` never above it), to the real path of what it names,
    /// relative to the root (`""` is the root itself). A missing component is
    /// `NotFound`, a file used as a directory `NotADirectory`.
    pub fn resolve(&self, rel: impl AsRef<[u8]>) -> io::Result<String> {
        let mut queue: VecDeque<Vec<u8>> = rel
            .as_ref()
            .split(|&b| b == b'/')
            .map(<[u8]>::to_vec)
            .collect();
        let mut resolved: Vec<Vec<u8>> = Vec::new();
        let mut links = 0;
        while let Some(c) = queue.pop_front() {
            match &c[..] {
                b"" | b"." => continue,
                b".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            resolved.push(c);
            let cur = resolved.join(&b'/');
            let fd = self.open_path(&cur)?;
            let st = rustix::fs::fstat(&fd)?;
            match file_type(&st) {
                FileType::Symlink => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    resolved.pop();
                    let target = rustix::fs::readlinkat(&fd, "", Vec::new())?;
                    let t = target.as_bytes();
                    if t.starts_with(b"/") {
                        resolved.clear();
                    }
                    for part in t.split(|&b| b == b'/').rev() {
                        queue.push_front(part.to_vec());
                    }
                }
                FileType::Directory => {}
                _ if !queue.iter().all(|c| c.is_empty() || c == b".") => {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                }
                _ => {}
            }
        }
        let out = resolved.join(&b'/');
        String::from_utf8(out.clone()).or_else(|_| {
            // Names that are not UTF-8 stay as they are (lossless through OsString).
            OsString::from_vec(out)
                .into_string()
                .map_err(|_| io::Error::from_raw_os_error(libc::EILSEQ))
        })
    }

    /// Like [`InRoot::resolve`], but the last component is kept as it is (a
    /// link there is not followed) unless the path ends in `/`, `.` or `..`,
    /// which name the directory itself (`cp` without `-L`).
    pub fn resolve_parent(&self, rel: impl AsRef<[u8]>) -> io::Result<String> {
        let rel = rel.as_ref();
        let last = rel.rsplit(|&b| b == b'/').next().unwrap_or(b"");
        if matches!(last, b"" | b"." | b"..") {
            return self.resolve(rel);
        }
        let parent = &rel[..rel.len() - last.len()];
        let dir = self.resolve(parent)?;
        let last =
            std::str::from_utf8(last).map_err(|_| io::Error::from_raw_os_error(libc::EILSEQ))?;
        let p = if dir.is_empty() {
            last.to_string()
        } else {
            format!("{dir}/{last}")
        };
        self.lstat(&p)?;
        Ok(p)
    }

    /// Visits every entry under directory `dir` (sorted, parents before
    /// their children, links never followed) with its path and `lstat`;
    /// `visit` says whether to go into a directory.
    pub fn walk(
        &self,
        dir: &str,
        visit: &mut dyn FnMut(&str, &Stat) -> io::Result<bool>,
    ) -> io::Result<()> {
        for n in self.read_dir(dir)? {
            let n = n.to_string_lossy();
            let child = if dir.is_empty() {
                n.into_owned()
            } else {
                format!("{dir}/{n}")
            };
            let st = self.lstat(&child)?;
            if visit(&child, &st)? && is_dir(&st) {
                self.walk(&child, visit)?;
            }
        }
        Ok(())
    }

    /// The names in directory `rel` (not followed if a link), sorted, without
    /// `.` and `..`.
    pub fn read_dir(&self, rel: impl AsRef<[u8]>) -> io::Result<Vec<OsString>> {
        let fd = self.openat2(
            rel.as_ref(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        )?;
        let mut names = Vec::new();
        for ent in rustix::fs::Dir::read_from(&fd)? {
            let ent = ent?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsString::from_vec(n.to_vec()));
            }
        }
        names.sort();
        Ok(names)
    }

    /// Opens regular file `rel` for reading (not a link, a FIFO or a device:
    /// those are `InvalidInput`).
    pub fn open_file(&self, rel: impl AsRef<[u8]>) -> io::Result<File> {
        let fd = self.open_path(rel)?;
        let st = rustix::fs::fstat(&fd)?;
        if file_type(&st) != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        reopen(&fd, OFlags::RDONLY)
    }

    /// The target of symlink `rel`.
    pub fn read_link(&self, rel: impl AsRef<[u8]>) -> io::Result<PathBuf> {
        let fd = self.open_path(rel)?;
        Ok(PathBuf::from(OsString::from_vec(
            rustix::fs::readlinkat(&fd, "", Vec::new())?.into_bytes(),
        )))
    }
}

/// Reopens an `O_PATH` handle for I/O (the same inode: `/proc/self/fd` names
/// the open file, not a path that could be swapped).
pub fn reopen(fd: &OwnedFd, flags: OFlags) -> io::Result<File> {
    let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let f = rustix::fs::open(
        p.as_str(),
        flags | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    Ok(File::from(f))
}

/// `lstat` through an open `O_PATH` handle.
pub fn fstat(fd: &OwnedFd) -> io::Result<Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

/// `rel` without leading slashes (paths in a root are relative to it).
fn trim_rel(rel: &[u8]) -> &[u8] {
    let mut r = rel;
    while let Some(x) = r.strip_prefix(b"/") {
        r = x;
    }
    r
}

/// Whether `st` is a directory.
pub fn is_dir(st: &Stat) -> bool {
    file_type(st) == FileType::Directory
}

/// Whether `st` is a symlink.
pub fn is_symlink(st: &Stat) -> bool {
    file_type(st) == FileType::Symlink
}

/// Whether `st` is a regular file.
pub fn is_file(st: &Stat) -> bool {
    file_type(st) == FileType::RegularFile
}

/// `statat` relative to a directory handle, not following `name`.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, InRoot) {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a/b/f"), "in").unwrap();
        symlink("/", r.join("rootlink")).unwrap();
        symlink("../../../../../../etc", r.join("a/up")).unwrap();
        symlink("b", r.join("a/rel")).unwrap();
        symlink("/a/rel/f", r.join("chain")).unwrap();
        symlink("chain", r.join("chain2")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        let root = InRoot::open(r).unwrap();
        (t, root)
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let (_t, root) = tree();
        assert_eq!(root.resolve("rootlink").unwrap(), "");
        assert_eq!(root.resolve("rootlink/a/b/f").unwrap(), "a/b/f");
        assert_eq!(
            root.resolve("rootlink/etc/shadow").unwrap_err().kind(),
            io::ErrorKind::NotFound,
            "the host's /etc is not reached"
        );
        assert_eq!(
            root.resolve("a/up/passwd").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            root.resolve("a/up").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(root.resolve("chain2").unwrap(), "a/b/f");
        assert_eq!(root.resolve("/a/../../../a/rel").unwrap(), "a/b");
        assert_eq!(
            root.resolve("a/b/f/x").unwrap_err().raw_os_error(),
            Some(libc::ENOTDIR)
        );
        assert_eq!(
            root.resolve("loop").unwrap_err().raw_os_error(),
            Some(libc::ELOOP)
        );
    }

    #[test]
    fn opens_never_leave_the_root() {
        let (_t, root) = tree();
        // Through the kernel's own resolution too, in one step.
        assert!(root.open_file("rootlink/etc/passwd").is_err());
        assert!(root.read_dir("rootlink/root").is_err());
        assert!(
            root.read_dir("rootlink").is_err(),
            "a link is not a directory"
        );
        let names = root.read_dir("rootlink/a").unwrap();
        assert_eq!(names, vec!["b", "rel", "up"]);
        assert!(root.open_file("chain").is_err(), "a link is not a file");
        let mut s = String::new();
        io::Read::read_to_string(&mut root.open_file("a/rel/f").unwrap(), &mut s).unwrap();
        assert_eq!(s, "in");
        assert_eq!(
            root.read_link("a/up").unwrap(),
            Path::new("../../../../../../etc")
        );
    }

    #[test]
    fn resolve_parent_keeps_the_last_link() {
        let (_t, root) = tree();
        assert_eq!(root.resolve_parent("rootlink/a/up").unwrap(), "a/up");
        assert_eq!(root.resolve_parent("rootlink/a/rel/").unwrap(), "a/b");
        assert_eq!(root.resolve_parent("rootlink").unwrap(), "rootlink");
        assert!(root.resolve_parent("rootlink/etc/passwd").is_err());
        let mut seen = Vec::new();
        root.walk("a", &mut |p, st| {
            seen.push(p.to_string());
            Ok(is_dir(st))
        })
        .unwrap();
        assert_eq!(seen, vec!["a/b", "a/b/f", "a/rel", "a/up"]);
    }

    #[test]
    fn a_fifo_is_not_opened_as_a_file() {
        let (t, root) = tree();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            t.path().join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = root.open_file("fifo").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}

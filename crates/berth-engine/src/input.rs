//! Input for a detached container started with `-i` (`run -di`, `run -dit`):
//! its monitor keeps the write end of the container's stdin (or its
//! terminal's master) and serves `attach.sock` in the container's
//! directory. Whatever a client writes there goes to that input, which is
//! how `attach` (the CLI's and the Engine API's) forwards a user's keys to a
//! container it did not start. Output does not pass here: attachers follow
//! the json-file log the monitor writes.
//!
//! As docker's `StdinOnce=false` for detached containers, a client that
//! goes away does not close the container's stdin; the next one carries on.
//! The socket is mode 0600 in the container's 0700 directory: only the
//! store's owner reaches it. Paths are bound and connected through
//! `/proc/self/fd/N/attach.sock` (N an `O_PATH` descriptor of the
//! directory), so a store root deep enough to push the path past the
//! 108 bytes of `sun_path` still works.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use crate::{EngineError, Result};

/// The socket's file name in the container's directory.
pub const SOCKET: &str = "attach.sock";

/// Opens `dir` as an `O_PATH` descriptor and calls `f` with the short
/// `/proc/self/fd/N/attach.sock` path naming the socket in it.
fn with_short_path<T>(dir: &Path, f: impl FnOnce(&Path) -> std::io::Result<T>) -> Result<T> {
    let d = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| EngineError::io("open", dir, e.into()))?;
    let p = format!("/proc/self/fd/{}/{SOCKET}", d.as_raw_fd());
    f(Path::new(&p)).map_err(|e| EngineError::io("attach socket", &dir.join(SOCKET), e))
}

/// Connects to a running container's input (`dir` is its directory).
/// Fails when the container has no open stdin or no monitor serving it.
pub fn connect(dir: &Path) -> Result<UnixStream> {
    with_short_path(dir, |p| UnixStream::connect(p))
}

/// The monitor's side for one run of the container: a process of its own,
/// forked from the (then single-threaded) monitor, serving the socket with
/// a thread per client. A process and not threads of the monitor: the
/// monitor starts the container again on restart with a bare clone, which
/// a second thread of its would make unsafe.
pub(crate) struct Server {
    pid: i32,
    path: std::path::PathBuf,
}

impl Server {
    /// Binds `dir/attach.sock` (replacing a stale one) and forks the
    /// process feeding what clients write into `input`.
    pub(crate) fn spawn(dir: &Path, input: OwnedFd) -> Result<Server> {
        let path = dir.join(SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = with_short_path(dir, |p| {
            // Created 0600 from the first moment: the umask covers bind.
            let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
            let l = UnixListener::bind(p);
            rustix::process::umask(old);
            l
        })?;
        // SAFETY: fork from the monitor, single-threaded here; the child
        // keeps only the two descriptors it serves and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let _ = std::fs::remove_file(&path);
            return Err(EngineError::io(
                "fork",
                &path,
                std::io::Error::last_os_error(),
            ));
        }
        if pid == 0 {
            // SAFETY: in the child: descriptors moved above everything
            // inherited, the rest closed, then served until killed.
            unsafe {
                let l = libc::fcntl(listener.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 1000);
                let i = libc::fcntl(input.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 1000);
                libc::syscall(libc::SYS_close_range, 3u32, 999u32, 0u32);
                libc::syscall(libc::SYS_close_range, (l.max(i) + 1) as u32, u32::MAX, 0u32);
                std::mem::forget(listener);
                std::mem::forget(input);
                use std::os::fd::FromRawFd;
                serve(
                    UnixListener::from_raw_fd(l),
                    Arc::new(OwnedFd::from_raw_fd(i)),
                );
                libc::_exit(0);
            }
        }
        Ok(Server { pid, path })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: our own child, killed and reaped (ECHILD when a
        // subreaper's wait took it first).
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Accepts clients forever, a thread each.
fn serve(listener: UnixListener, input: Arc<OwnedFd>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let input = input.clone();
        std::thread::spawn(move || feed(conn, &input));
    }
}

/// Copies one client's bytes to the input until the client closes or the
/// input is gone. A container that does not read blocks this client only.
fn feed(mut conn: UnixStream, input: &OwnedFd) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            match rustix::io::write(input.as_fd(), rest) {
                Ok(w) => rest = &rest[w..],
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_client_s_bytes_reach_the_input_through_a_long_path() {
        let tmp = tempfile::tempdir().unwrap();
        // Deeper than sun_path's 108 bytes.
        let dir = tmp.path().join("d".repeat(100)).join("e".repeat(60));
        std::fs::create_dir_all(&dir).unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        let server = Server::spawn(&dir, w).unwrap();
        let mode = std::fs::metadata(dir.join(SOCKET)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let mut c = connect(&dir).unwrap();
        c.write_all(b"hello\n").unwrap();
        let mut got = [0u8; 6];
        let mut f = std::fs::File::from(r);
        f.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello\n");
        drop(server);
        assert!(!dir.join(SOCKET).exists());
        assert!(connect(&dir).is_err());
    }
}

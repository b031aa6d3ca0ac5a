//! Terminals, per the runtime spec: the container's init opens a pty from the
//! container's own devpts, makes the peer its controlling terminal and stdio, and
//! sends the master over the `--console-socket` unix socket (SCM_RIGHTS). The
//! receiving side is here too, for `run -t` without a console socket and for the
//! engine.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::pty::OpenptFlags;

use crate::error::{Result, RuntimeError, SysContext};

pub use crate::fdpass::{connect, recv_fd, send_fd};

/// In the container (after pivot_root): opens a pty on /dev/ptmx, makes its peer
/// the controlling terminal and stdio, and returns the master.
pub fn setup_in_container(size: Option<(u16, u16)>) -> Result<OwnedFd> {
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .sys("open", "/dev/ptmx")?;
    rustix::pty::grantpt(&master).sys("grantpt", "/dev/ptmx")?;
    rustix::pty::unlockpt(&master).sys("unlockpt", "/dev/ptmx")?;
    let peer = rustix::pty::ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY)
        .sys("ioctl(TIOCGPTPEER)", "/dev/ptmx")?;
    if let Some((rows, cols)) = size {
        let ws = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&peer, ws).sys("ioctl(TIOCSWINSZ)", "pty")?;
    }
    // SAFETY: TIOCSCTTY on the pty peer; we are a session leader (setsid ran).
    if unsafe { libc::ioctl(peer.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(RuntimeError::sys(
            "ioctl(TIOCSCTTY)",
            "pty",
            std::io::Error::last_os_error(),
        ));
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors.
        if unsafe { libc::dup2(peer.as_raw_fd(), target) } < 0 {
            return Err(RuntimeError::sys(
                "dup2",
                "pty",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(master)
}

/// Copies a terminal window size from `from` to `to` (SIGWINCH propagation).
pub fn copy_winsize(from: impl AsFd, to: impl AsFd) {
    if let Ok(ws) = rustix::termios::tcgetwinsize(from) {
        let _ = rustix::termios::tcsetwinsize(to, ws);
    }
}

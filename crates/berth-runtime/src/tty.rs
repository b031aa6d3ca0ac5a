//! Terminals, per the runtime spec: the container's init opens a pty from the
//! container's own devpts, makes the peer its controlling terminal and stdio, and
//! sends the master over the `--console-socket` unix socket (SCM_RIGHTS). The
//! receiving side is here too, for `run -t` without a console socket and for the
//! engine.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use rustix::pty::OpenptFlags;

use crate::error::{Result, RuntimeError, SysContext};

/// Connects to the console socket at `path` (done before pivot_root, while the
/// host path is visible).
pub fn connect(path: &Path) -> Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .sys("socket", path.display())?;
    let addr = rustix::net::SocketAddrUnix::new(path).sys("connect", path.display())?;
    rustix::net::connect(&fd, &addr).sys("connect", path.display())?;
    Ok(fd)
}

/// Sends `fd` over the unix socket `sock`.
pub fn send_fd(sock: &OwnedFd, fd: &OwnedFd, name: &str) -> Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    let fds = [fd.as_fd()];
    cmsg.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        sock,
        &[IoSlice::new(name.as_bytes())],
        &mut cmsg,
        SendFlags::empty(),
    )
    .sys("sendmsg", "console socket")?;
    Ok(())
}

/// Receives one descriptor from the unix socket `sock`.
pub fn recv_fd(sock: &OwnedFd) -> Result<OwnedFd> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 4096];
    rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC,
    )
    .sys("recvmsg", "console socket")?;
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = m
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(RuntimeError::Init(
        "console socket: no terminal descriptor received".into(),
    ))
}

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

//! Descriptors over unix sockets (SCM_RIGHTS): the terminal master to a
//! `--console-socket`, the seccomp notify descriptor to a `listenerPath` agent,
//! and both over the init channel.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::error::{Result, RuntimeError, SysContext};

/// Connects a stream socket to the unix socket at `path`.
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

/// Sends `fd` over the unix socket `sock`, with `payload` as the message.
pub fn send_fd(sock: &OwnedFd, fd: &OwnedFd, payload: &str) -> Result<()> {
    use std::os::fd::AsFd;
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    let fds = [fd.as_fd()];
    cmsg.push(SendAncillaryMessage::ScmRights(&fds));
    loop {
        match rustix::net::sendmsg(
            sock,
            &[IoSlice::new(payload.as_bytes())],
            &mut cmsg,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).sys("sendmsg", "unix socket (SCM_RIGHTS)"),
        }
    }
}

/// Receives one message from `sock` into `buf`: its length and the descriptor
/// that came with it, if any (any more are closed).
pub fn recv_with_fd(sock: &OwnedFd, buf: &mut [u8]) -> Result<(usize, Option<OwnedFd>)> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let n = loop {
        match rustix::net::recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut cmsg,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(r) => break r.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).sys("recvmsg", "unix socket"),
        }
    };
    let mut fd = None;
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = m
            && fd.is_none()
        {
            fd = fds.next();
        }
    }
    Ok((n, fd))
}

/// Receives one descriptor from the unix socket `sock` (a console socket).
pub fn recv_fd(sock: &OwnedFd) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    recv_with_fd(sock, &mut buf)?
        .1
        .ok_or_else(|| RuntimeError::Init("console socket: no terminal descriptor received".into()))
}

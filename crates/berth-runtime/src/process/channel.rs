//! The typed message channel between the runtime (parent) and the container's
//! init (child): a SOCK_SEQPACKET socketpair carrying one JSON message per packet,
//! so message boundaries survive and a dead peer reads as end of stream.

use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType, socketpair};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError, SysContext};

/// Messages the runtime sends to init.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ToChild {
    /// ID mappings are written and the process is in its cgroup: go on.
    Go,
    /// The hooks init asked for have run.
    HooksDone,
    /// The seccomp agent has the listener.
    SeccompDone,
}

/// Messages init sends to the runtime.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ToParent {
    /// The process that will exec (after a second fork to enter a pid namespace).
    Pid(i32),
    /// Run the prestart and createRuntime hooks (runtime namespace) now.
    RunCreateHooks,
    /// The seccomp notify listener (the descriptor comes with the message):
    /// hand it to the agent at `listenerPath`, then answer `SeccompDone`.
    SeccompListener,
    /// Set up and waiting for `start`.
    Ready,
    /// Setup failed.
    Error(InitError),
}

/// What init reports when it fails.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum InitError {
    /// The executable is not there.
    NotFound(String),
    /// The executable cannot be run.
    Permission(String),
    /// The working directory cannot be entered.
    Cwd(String),
    /// Anything else, as a message.
    Other(String),
}

impl From<InitError> for RuntimeError {
    fn from(e: InitError) -> Self {
        match e {
            InitError::NotFound(p) => RuntimeError::ExecNotFound(p),
            InitError::Permission(p) => RuntimeError::ExecPermission(p),
            InitError::Cwd(p) => RuntimeError::Cwd(p),
            InitError::Other(m) => RuntimeError::Init(m),
        }
    }
}

/// One end of the channel.
pub struct Channel {
    fd: OwnedFd,
}

/// A connected pair (parent end, child end).
pub fn pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .sys("socketpair", "init channel")?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    /// Sends a message.
    pub fn send<T: Serialize>(&self, msg: &T) -> Result<()> {
        let data = serde_json::to_vec(msg).expect("message serialises");
        rustix::net::send(self.fd.as_fd(), &data, SendFlags::NOSIGNAL)
            .sys("send", "init channel")?;
        Ok(())
    }

    /// Sends a message with a descriptor.
    pub fn send_with_fd<T: Serialize>(&self, msg: &T, fd: &OwnedFd) -> Result<()> {
        let data = serde_json::to_string(msg).expect("message serialises");
        crate::fdpass::send_fd(&self.fd, fd, &data)
    }

    /// Receives a message; `None` when the peer closed its end.
    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> Result<Option<T>> {
        Ok(self.recv_with_fd()?.map(|(m, _)| m))
    }

    /// Receives a message and the descriptor sent with it, if any.
    pub fn recv_with_fd<T: for<'de> Deserialize<'de>>(
        &self,
    ) -> Result<Option<(T, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; 64 * 1024];
        let (n, fd) = crate::fdpass::recv_with_fd(&self.fd, &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(|m| Some((m, fd)))
            .map_err(|e| {
                RuntimeError::Init(format!("garbled message from the container's init: {e}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_eof() {
        let (a, b) = pair().unwrap();
        a.send(&ToChild::Go).unwrap();
        assert_eq!(b.recv::<ToChild>().unwrap(), Some(ToChild::Go));
        b.send(&ToParent::Error(InitError::NotFound("x".into())))
            .unwrap();
        assert_eq!(
            a.recv::<ToParent>().unwrap(),
            Some(ToParent::Error(InitError::NotFound("x".into())))
        );
        // A descriptor travels with its message.
        let (r, w) = rustix::pipe::pipe().unwrap();
        b.send_with_fd(&ToParent::SeccompListener, &w).unwrap();
        drop(w);
        let (m, fd) = a.recv_with_fd::<ToParent>().unwrap().unwrap();
        assert_eq!(m, ToParent::SeccompListener);
        rustix::io::write(fd.unwrap(), b"x").unwrap();
        let mut got = [0u8; 1];
        rustix::io::read(&r, &mut got).unwrap();
        assert_eq!(&got, b"x");
        drop(b);
        assert_eq!(a.recv::<ToParent>().unwrap(), None);
    }
}

//! The typed message channel between the runtime (parent) and the container's
//! init (child): a SOCK_SEQPACKET socketpair carrying one JSON message per packet,
//! so message boundaries survive and a dead peer reads as end of stream.

use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, socketpair};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError, SysContext};

/// Messages the runtime sends to init.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ToChild {
    /// ID mappings are written and the process is in its cgroup: go on.
    Go,
    /// The hooks init asked for have run.
    HooksDone,
}

/// Messages init sends to the runtime.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ToParent {
    /// The process that will exec (after a second fork to enter a pid namespace).
    Pid(i32),
    /// Run the prestart and createRuntime hooks (runtime namespace) now.
    RunCreateHooks,
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
    /// Anything else, as a message.
    Other(String),
}

impl From<InitError> for RuntimeError {
    fn from(e: InitError) -> Self {
        match e {
            InitError::NotFound(p) => RuntimeError::ExecNotFound(p),
            InitError::Permission(p) => RuntimeError::ExecPermission(p),
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

    /// Receives a message; `None` when the peer closed its end.
    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> Result<Option<T>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rustix::net::recv(self.fd.as_fd(), &mut buf, RecvFlags::empty()) {
                Ok((0, _)) => return Ok(None),
                Ok((n, _)) => {
                    return serde_json::from_slice(&buf[..n]).map(Some).map_err(|e| {
                        RuntimeError::Init(format!(
                            "garbled message from the container's init: {e}"
                        ))
                    });
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e).sys("recv", "init channel"),
            }
        }
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
        drop(b);
        assert_eq!(a.recv::<ToParent>().unwrap(), None);
    }
}

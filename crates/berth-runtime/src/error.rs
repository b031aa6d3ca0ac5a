//! Errors of the runtime. Kernel calls name the call and the path (`mount
//! '/x/rootfs/proc': EPERM`), as crun's do; configuration errors name the field.

use std::fmt;

/// Every error the runtime returns.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A bad or unsupported config.json.
    #[error("config.json: {0}")]
    Spec(String),
    /// A kernel call failed.
    #[error("{call} {path}: {err}")]
    Sys {
        /// The call (`mount`, `pivot_root`).
        call: &'static str,
        /// What it was called on.
        path: String,
        /// The errno.
        #[source]
        err: std::io::Error,
    },
    /// cgroup setup.
    #[error(transparent)]
    Cgroup(#[from] berth_cgroups::CgroupError),
    /// Unknown container.
    #[error("container {0:?} does not exist")]
    NotFound(String),
    /// The id is taken.
    #[error("container with id {0:?} already exists")]
    Exists(String),
    /// The id is not valid.
    #[error("invalid container id {0:?}: use letters, digits, '_', '-' and '.'")]
    InvalidId(String),
    /// The operation does not fit the container's state.
    #[error("{0}")]
    State(String),
    /// The container's state file cannot be read as a state (a crash left
    /// it truncated, or something else wrote it); its path and why.
    #[error("{0}: corrupt state: {1}")]
    CorruptState(String, String),
    /// The container's init failed while setting up; its message.
    #[error("{0}")]
    Init(String),
    /// The process's executable does not exist (docker exits 127).
    #[error("exec: {0:?}: executable file not found in $PATH")]
    ExecNotFound(String),
    /// The process's executable cannot be executed (docker exits 126).
    #[error("exec: {0:?}: permission denied")]
    ExecPermission(String),
    /// The process's working directory cannot be entered (docker exits 126).
    #[error("chdir to cwd ({0:?}) set in config.json failed: no such file or directory")]
    Cwd(String),
    /// A hook failed.
    #[error("{kind} hook {path}: {msg}")]
    Hook {
        /// Which hook list.
        kind: &'static str,
        /// The hook's path.
        path: String,
        /// What happened.
        msg: String,
    },
}

impl RuntimeError {
    /// A failed call on a path.
    pub fn sys(
        call: &'static str,
        path: impl fmt::Display,
        err: impl Into<std::io::Error>,
    ) -> Self {
        RuntimeError::Sys {
            call,
            path: path.to_string(),
            err: err.into(),
        }
    }
}

/// `Result` with [`RuntimeError`].
pub type Result<T> = std::result::Result<T, RuntimeError>;

/// Attaches the call and path to a rustix or io result.
pub trait SysContext<T> {
    /// Wraps the error.
    fn sys(self, call: &'static str, path: impl fmt::Display) -> Result<T>;
}

impl<T> SysContext<T> for std::result::Result<T, rustix::io::Errno> {
    fn sys(self, call: &'static str, path: impl fmt::Display) -> Result<T> {
        self.map_err(|e| {
            RuntimeError::sys(
                call,
                path,
                std::io::Error::from_raw_os_error(e.raw_os_error()),
            )
        })
    }
}

impl<T> SysContext<T> for std::result::Result<T, std::io::Error> {
    fn sys(self, call: &'static str, path: impl fmt::Display) -> Result<T> {
        self.map_err(|e| RuntimeError::sys(call, path, e))
    }
}

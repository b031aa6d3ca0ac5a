//! What a build reports when it fails: [`BuildError`] (the Dockerfile, a
//! step located by file and line, a failing RUN with its exit code) and the
//! [`Cause`] it keeps, so an error chain reaches the store's or the
//! system's own error.

use berth_dockerfile::instructions;

/// What went wrong in a build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile.
    #[error(transparent)]
    Dockerfile(#[from] instructions::DockerfileError),
    /// A step, located in the Dockerfile, and what failed in it.
    #[error("{file}:{line}: {source}")]
    Step {
        /// Dockerfile name.
        file: String,
        /// Line.
        line: usize,
        /// What failed, its own error kept.
        #[source]
        source: Cause,
    },
    /// A RUN step that exited non-zero.
    #[error("{file}:{line}: process \"{cmd}\" did not complete successfully: exit code: {code}")]
    Run {
        /// Dockerfile name.
        file: String,
        /// Line.
        line: usize,
        /// The command.
        cmd: String,
        /// Its exit code.
        code: i32,
    },
    /// Anything else (outside a step: the store, the runtime, a stage's thread).
    #[error(transparent)]
    Other(#[from] Cause),
}

/// What failed, as its own error where there is one (so an error chain
/// reaches the store's or the system's error), else a message.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// A message (a rule of Dockerfiles or of the build).
    #[error("{0}")]
    Message(String),
    /// The image store.
    #[error(transparent)]
    Store(#[from] berth_store::StoreError),
    /// The store's blobs.
    #[error(transparent)]
    Content(#[from] berth_store::content::ContentError),
    /// The store's snapshots.
    #[error(transparent)]
    Snapshot(#[from] berth_store::snapshot::SnapshotError),
    /// A layer's archive.
    #[error(transparent)]
    Archive(#[from] berth_store::archive::ArchiveError),
    /// A file of the store, with the operation and path.
    #[error(transparent)]
    Path(#[from] berth_fs::PathError),
    /// An instruction's words (variable expansion).
    #[error(transparent)]
    Shell(#[from] berth_dockerfile::shell::ShellError),
    /// An instruction applied to the image's configuration.
    #[error(transparent)]
    Dispatch(#[from] crate::dispatch::DispatchError),
    /// The system.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<String> for Cause {
    fn from(m: String) -> Cause {
        Cause::Message(m)
    }
}

impl From<&str> for Cause {
    fn from(m: &str) -> Cause {
        Cause::Message(m.to_string())
    }
}

impl From<BuildError> for Cause {
    /// A build error met inside a step: its cause, or its message.
    fn from(e: BuildError) -> Cause {
        match e {
            BuildError::Other(c) => c,
            e => Cause::Message(e.to_string()),
        }
    }
}

impl From<String> for BuildError {
    fn from(m: String) -> BuildError {
        BuildError::Other(Cause::Message(m))
    }
}

impl BuildError {
    /// An error that is a message only.
    pub fn msg(m: impl Into<String>) -> BuildError {
        BuildError::Other(Cause::Message(m.into()))
    }

    /// The exit code `build` should end with (a failing RUN's own code).
    pub fn exit_code(&self) -> i32 {
        match self {
            BuildError::Run { code, .. } => *code,
            _ => 1,
        }
    }
}

//! berth's containers: an image from the store becomes a snapshot (mounted by
//! the runtime inside the container's own mount namespace), an OCI spec
//! generated as docker generates it, and a process run through the runtime
//! library in-process — no runtime binary on the hot path, no daemon.
//!
//! Attached containers are monitored by the `berth` process that runs them;
//! detached ones by a forked monitor that holds their stdio, writes json-file
//! logs, records the exit and applies the restart policy.
//!
//! On disk under the berth root: `containers/<id>/{container.json, config.json,
//! rootfs/, hosts, hostname, resolv.conf, <id>-json.log}`, `runtime/` (the
//! runtime's state), `volumes/<name>/_data`.
#![deny(missing_docs)]

pub mod apparmor;
pub mod container;
mod create;
pub mod devices;
pub mod df;
pub mod docs;
pub mod emulation;
pub mod events;
pub mod health;
pub mod input;
pub mod list;
pub mod logs;
pub mod network;
pub mod objfilter;
pub mod ops;
pub mod reset;
pub mod restore;
pub mod rootless;
pub mod run;
pub mod spec;
pub mod update;
pub mod volume;

use std::path::{Path, PathBuf};

use berth_store::Store;

pub use container::{Container, Status};

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// I/O on a path.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// From the store.
    #[error(transparent)]
    Store(#[from] berth_store::StoreError),
    /// From the runtime.
    #[error(transparent)]
    Runtime(#[from] berth_runtime::RuntimeError),
    /// No such container.
    #[error("No such container: {0}")]
    NotFound(String),
    /// No such volume (dockerd's words).
    #[error("get {0}: no such volume")]
    VolumeNotFound(String),
    /// No such path in a container (`cp`, the archive endpoints).
    #[error("{0}")]
    PathNotFound(String),
    /// A name in use.
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse {
        /// The name.
        name: String,
        /// Its container.
        id: String,
    },
    /// Bad options.
    #[error("{0}")]
    Invalid(String),
    /// The operation does not fit the container's state.
    #[error("{0}")]
    Conflict(String),
    /// A record that does not parse.
    #[error("corrupt container record: {0}")]
    Corrupt(String),
}

impl EngineError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        EngineError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// docker's exit code for this error when it stops `run` (126/127 for an
    /// executable that cannot run, 125 otherwise).
    pub fn run_exit_code(&self) -> i32 {
        match self {
            EngineError::Runtime(berth_runtime::RuntimeError::ExecNotFound(_)) => 127,
            EngineError::Runtime(
                berth_runtime::RuntimeError::ExecPermission(_)
                | berth_runtime::RuntimeError::Cwd(_),
            ) => 126,
            _ => 125,
        }
    }
}

macro_rules! via_store {
    ($($t:ty),*) => {$(
        impl From<$t> for EngineError {
            fn from(e: $t) -> Self {
                EngineError::Store(e.into())
            }
        }
    )*};
}

via_store!(
    berth_store::snapshot::SnapshotError,
    berth_store::content::ContentError,
    berth_store::archive::ArchiveError
);

/// `Result` with [`EngineError`].
pub type Result<T> = std::result::Result<T, EngineError>;

/// The engine over a berth root.
#[derive(Debug, Clone)]
pub struct Engine {
    root: PathBuf,
    /// The image store.
    pub store: Store,
    /// The runtime library.
    pub runtime: berth_runtime::Runtime,
    /// A berth binary whose hidden `__monitor ID FD` command runs
    /// [`Engine::run_monitor`]: detached containers' monitors are re-executed
    /// from it so they hold none of the starting command's memory. `None`:
    /// the forked process is the monitor.
    pub monitor_exe: Option<PathBuf>,
    /// The small watcher program (`berth-monitor`) a detached container's
    /// monitor becomes once the container runs (see [`run::watch`]); `None`:
    /// the monitor itself waits.
    pub watch_exe: Option<PathBuf>,
}

impl Engine {
    /// Opens the engine on `root` (the store lives there too).
    pub fn open(root: &Path) -> Result<Engine> {
        let store = Store::open(root)?;
        for d in ["containers", "volumes"] {
            berth_store::fsutil::private_dir(&root.join(d)).map_err(|e| {
                EngineError::io("mkdir", &root.join(d), std::io::Error::other(e.to_string()))
            })?;
        }
        Ok(Engine {
            root: root.to_path_buf(),
            store,
            runtime: berth_runtime::Runtime::new(root.join("runtime")),
            monitor_exe: None,
            watch_exe: None,
        })
    }

    /// The berth root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A container's directory.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// A container's json-file log (docker's `<id>-json.log`, in its
    /// directory).
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join(format!("{id}-json.log"))
    }

    /// Every container record as stored (status not brought up to date).
    pub fn records(&self) -> Vec<Container> {
        container::all_dirs(&self.root.join("containers"))
            .iter()
            .filter_map(|d| container::load(d).ok())
            .collect()
    }

    /// Every container, newest first, with its status brought up to date.
    pub fn containers(&self) -> Result<Vec<Container>> {
        let mut out = Vec::new();
        for c in self.records() {
            let id = c.id.clone();
            match self.refresh(c) {
                Ok(c) => out.push(c),
                Err(_) if !self.dir(&id).exists() => {} // removed meanwhile
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created));
        Ok(out)
    }

    /// Finds a container by full id, unique id prefix, or name (`/name` too).
    pub fn find(&self, q: &str) -> Result<Container> {
        // A full id (what berth passes itself, and API clients mostly)
        // names its directory: one record read, not all of them. An exact
        // id wins over a name, as in docker's lookup.
        if q.len() == 64
            && q.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(c) = container::load(&self.dir(q))
        {
            return self.refresh_found(q, &c);
        }
        let name = q.trim_start_matches('/');
        let all = self.records();
        if let Some(c) = all.iter().find(|c| c.id == q || c.name == name) {
            return self.refresh_found(q, c);
        }
        let hex = !q.is_empty() && q.bytes().all(|b| b.is_ascii_hexdigit());
        if hex {
            let mut m = all.iter().filter(|c| c.id.starts_with(q));
            match (m.next(), m.next()) {
                (Some(c), None) => return self.refresh_found(q, c),
                (Some(_), Some(_)) => {
                    return Err(EngineError::Invalid(format!(
                        "multiple IDs found with provided prefix: {q}"
                    )));
                }
                _ => {}
            }
        }
        Err(EngineError::NotFound(q.to_string()))
    }

    /// [`Engine::refresh`] of a container just found by `q`: one removed
    /// meanwhile is not found.
    fn refresh_found(&self, q: &str, c: &Container) -> Result<Container> {
        self.refresh(c.clone()).map_err(|e| {
            if self.dir(&c.id).exists() {
                e
            } else {
                EngineError::NotFound(q.to_string())
            }
        })
    }

    /// Brings a record's status up to date with the facts: a running container
    /// whose process is gone has exited (its monitor records the code; if the
    /// monitor died too, the runtime's exit record is used).
    pub fn refresh(&self, mut c: Container) -> Result<Container> {
        if matches!(
            c.state.status,
            Status::Running | Status::Paused | Status::Restarting
        ) {
            let alive = c.state.pid > 0
                && berth_runtime::state::proc_stat(c.state.pid).is_some_and(|(st, start)| {
                    start == c.state.pid_start && st != 'Z' && st != 'X'
                });
            let monitor_alive = c.state.monitor_pid > 0
                && berth_runtime::state::proc_stat(c.state.monitor_pid)
                    .is_some_and(|(st, _)| st != 'Z');
            if !alive && !monitor_alive {
                let _l = container::lock(&self.dir(&c.id))?;
                let mut fresh = container::load(&self.dir(&c.id))?;
                if matches!(
                    fresh.state.status,
                    Status::Running | Status::Paused | Status::Restarting
                ) {
                    fresh.state.status = Status::Exited;
                    fresh.state.pid = 0;
                    fresh.state.monitor_pid = 0;
                    if fresh.state.finished_at.is_empty() {
                        fresh.state.finished_at = now();
                    }
                    let code = run::read_exit_file(&self.dir(&c.id));
                    fresh.state.exit_code = code.unwrap_or(137);
                    if code.is_none() {
                        fresh.state.error =
                            "the container's monitor exited before recording its exit code".into();
                    }
                    // What its monitor would have withdrawn (published ports,
                    // a fuse-overlayfs root).
                    self.network_detach(&mut fresh);
                    crate::run::release_merged(&self.dir(&c.id));
                    container::save(&self.dir(&c.id), &fresh)?;
                    let _ = self.runtime.delete(&c.id, true);
                }
                c = fresh;
            } else if c.state.status == Status::Running
                && let Ok(st) = self.runtime.state(&c.id)
                && st.status == berth_runtime::Status::Paused
            {
                c.state.status = Status::Paused;
            }
        }
        Ok(c)
    }
}

/// Now, RFC 3339 with nanoseconds (docker's format).
pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}

//! The Docker Engine API over berth's engine (`berth system service`): the
//! docker CLI with `DOCKER_HOST`, docker-py, Compose and testcontainers
//! drive the same containers, images, volumes and networks the berth CLI
//! does — one store, the same locks, and no daemon beyond this server,
//! which may exit when idle while its containers keep running.
//!
//! The server is a thin front-end: it turns docker's wire types into engine
//! requests and engine results into docker's JSON (shared with the CLI
//! through `berth_engine::docs` and `berth_engine::list`). Engine calls are
//! blocking (files, locks, process waits) and run on tokio's blocking pool;
//! anything that forks — starting a container, whose monitor must outlive
//! this process — runs in a helper process (`berth __api-helper`, see
//! [`helper`]), never in this multi-threaded one.
//!
//! Routing is written by hand ([`route`]), as in the registry server: image
//! names hold slashes, and docker's routes are told apart by their tails.

#![recursion_limit = "256"]

pub mod archives;
pub mod attach;
pub mod build;
pub mod client;
pub mod containers;
pub mod create;
pub mod error;
pub mod exec;
pub mod helper;
pub mod images;
pub mod listen;
pub mod logs;
pub mod networks;
pub mod query;
pub mod route;
pub mod stats;
pub mod stream;
pub mod system;
pub mod volumes;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use berth_engine::Engine;

pub use error::ApiError;

/// The newest API version served (docker 27's).
pub const API_VERSION: &str = "1.47";
/// The oldest API version served.
pub const MIN_API_VERSION: &str = "1.24";

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// `unix:///run/berth.sock`, `tcp://127.0.0.1:2375`, or `fd://` (socket
    /// activation).
    pub host: String,
    /// Exit after this long without a request or an open connection.
    pub idle: Option<Duration>,
    /// The berth root.
    pub root: PathBuf,
    /// The berth binary (for helper processes).
    pub exe: PathBuf,
    /// The docker config directory for registry credentials.
    pub config_dir: Option<PathBuf>,
}

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The engine.
    pub engine: Engine,
    /// The berth binary.
    pub exe: PathBuf,
    /// The berth root.
    pub root: PathBuf,
    /// The docker config directory.
    pub config_dir: Option<PathBuf>,
    /// Exec instances.
    pub execs: exec::Execs,
    /// Attaches waiting for their containers' starts.
    pub attaches: attach::PendingAttaches,
    activity: Arc<Activity>,
}

/// Open connections and the time of the last request, for `--time`.
#[derive(Debug, Default)]
struct Activity {
    open: AtomicUsize,
    last: AtomicI64,
}

impl Activity {
    fn touch(&self) {
        self.last
            .store(jiff::Timestamp::now().as_second(), Ordering::Relaxed);
    }
}

impl Ctx {
    /// Runs `f` with the engine on the blocking pool.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let e = self.engine.clone();
        tokio::task::spawn_blocking(move || f(&e))
            .await
            .map_err(|e| ApiError::internal(format!("worker: {e}")))?
    }
}

/// Serves the API until SIGTERM/SIGINT, or until idle for `opts.idle`.
pub fn serve(opts: Options) -> Result<(), String> {
    let engine = Engine::open(&opts.root).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    rt.block_on(async move {
        let listener = listen::Listener::open(&opts.host).await?;
        eprintln!(
            "berth system service: Engine API {API_VERSION} (down to {MIN_API_VERSION}) on {}",
            listener.describe()
        );
        let activity = Arc::new(Activity::default());
        activity.touch();
        let ctx = Ctx {
            engine,
            exe: opts.exe.clone(),
            root: opts.root.clone(),
            config_dir: opts.config_dir.clone(),
            execs: Default::default(),
            attaches: Default::default(),
            activity: activity.clone(),
        };
        let idle = async {
            match opts.idle {
                None => std::future::pending::<()>().await,
                Some(limit) => loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let quiet =
                        jiff::Timestamp::now().as_second() - activity.last.load(Ordering::Relaxed);
                    if activity.open.load(Ordering::Relaxed) == 0 && quiet >= limit.as_secs() as i64
                    {
                        eprintln!(
                            "berth system service: idle for {}s, exiting",
                            limit.as_secs()
                        );
                        break;
                    }
                },
            }
        };
        let signals = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        };
        tokio::select! {
            r = listener.run(ctx) => r,
            _ = idle => Ok(()),
            _ = signals => Ok(()),
        }
    })?;
    // Streams in flight (logs -f, attach) end with the process; the
    // containers they watch keep running.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

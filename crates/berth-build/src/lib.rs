//! berth's builder: a Dockerfile and a context become an image in the store.
//! [`builder`] runs the stages (RUN through the runtime library, COPY/ADD through
//! mounted snapshots), [`cache`] keys and explains the layer cache ([`cache_share`]
//! shares it through a registry or a directory), [`context`]
//! reads the context with `.dockerignore`, and [`dispatch`] applies the
//! instructions that change only the config (shared with `import --change`).
#![deny(missing_docs)]

pub mod builder;
pub mod cache;
pub mod cache_share;
pub mod context;
pub mod dispatch;
pub mod git;
pub mod leftovers;
pub mod run_mount;

pub use builder::{BuildError, BuildOptions, Builder, Cause};

/// What [`prune`] removed: cache records and leftovers, and the bytes the
/// store's collection then freed.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Cache records and leftovers of dead builds removed.
    pub objects: usize,
    /// The layers' ids the store collected.
    pub layers: Vec<berth_types::Digest>,
    /// Bytes freed.
    pub bytes_freed: u64,
}

/// `builder prune` (and the Engine API's `POST /build/prune`): drops the
/// layer cache and what dead builds left, then collects the layers only
/// the cache kept.
pub fn prune(
    store: &berth_store::Store,
    root: &std::path::Path,
) -> Result<PruneReport, BuildError> {
    let cache = cache::Cache::open(&root.join("buildcache")).map_err(Cause::from)?;
    let n = cache.clear().map_err(Cause::from)?;
    store.set_roots("buildcache", &[]).map_err(Cause::from)?;
    let left = leftovers::collect(store, root, false).len();
    let report = store.gc().map_err(Cause::from)?;
    Ok(PruneReport {
        objects: n + left,
        layers: report.layers_removed,
        bytes_freed: report.bytes_freed,
    })
}

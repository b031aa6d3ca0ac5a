//! berth's builder: a Dockerfile and a context become an image in the store.
//! [`builder`] runs the stages (RUN through the runtime library, COPY/ADD through
//! mounted snapshots), [`cache`] keys and explains the layer cache, [`context`]
//! reads the context with `.dockerignore`, and [`dispatch`] applies the
//! instructions that change only the config (shared with `import --change`).
#![deny(missing_docs)]

pub mod builder;
pub mod cache;
pub mod context;
pub mod dispatch;
pub mod git;
pub mod leftovers;
pub mod run_mount;

pub use builder::{BuildError, BuildOptions, Builder};

//! berth's image store: content-addressed blobs ([`content`]), layer tars applied
//! and produced safely ([`archive`]), overlay snapshots keyed by chain id
//! ([`snapshot`]) and image names with their manifests ([`image`]).
//!
//! The store never spawns a process and knows nothing of Dockerfiles or containers.
#![deny(missing_docs)]

pub mod archive;
pub mod content;
pub mod fsutil;
pub mod snapshot;

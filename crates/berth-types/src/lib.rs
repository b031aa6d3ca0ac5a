//! Shared vocabulary of berth: digests, image references, media types, platforms,
//! image documents and chain ids. No I/O happens here.
#![deny(missing_docs)]

pub mod digest;
pub mod image;
pub mod reference;
pub mod units;
pub mod user;

pub use digest::Digest;
pub use image::{
    AnyManifest, ContainerConfig, Descriptor, History, ImageConfig, Index, Manifest, Platform,
    chain_ids, media_types,
};
pub use reference::Reference;

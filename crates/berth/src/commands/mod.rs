//! One module per command family; each takes parsed arguments and an open store.

pub mod build;
pub mod build_cache;
pub mod build_output;
pub mod cdi;
pub mod container;
pub mod distribution;
pub mod image;
pub mod manifest;
pub mod network;
pub mod registry;
pub mod remote;
pub mod system;

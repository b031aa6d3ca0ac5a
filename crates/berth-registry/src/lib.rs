//! berth's registry side: the server (`berth registry serve`, an OCI
//! distribution-spec v1.1 registry with accounts and access tokens) and the
//! client (`login`, `pull`, `push`) that talks to Docker Hub style registries.

pub mod client;
pub mod server;

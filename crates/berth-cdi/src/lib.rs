//! The Container Device Interface (CDI, versions 0.3 to 0.8): vendors' specs
//! of what a device is to a container — device nodes, mounts, environment,
//! hooks, additional groups. [`spec`] reads and validates one spec file,
//! [`registry`] loads the spec directories and resolves qualified names
//! (`vendor.com/class=name`, `=all`), [`edits`] applies the chosen devices'
//! edits (and host devices given by path) to an OCI runtime spec, and
//! [`nvidia`] writes a spec for the NVIDIA GPUs and driver of a host, as
//! `nvidia-ctk cdi generate` does. Written by hand over oci-spec's types:
//! no Rust crate reads CDI.
#![deny(missing_docs)]

pub mod edits;
pub mod nvidia;
pub mod registry;
pub mod spec;

use std::path::Path;

pub use registry::{Registry, Resolved};

/// Why a CDI device could not be given to a container.
#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    /// A spec file that does not read or validate, naming the field.
    #[error("{file}: {}{msg}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
    Spec {
        /// The file.
        file: String,
        /// The field (`devices[0].containerEdits.deviceNodes[1].path`).
        field: String,
        /// What is wrong.
        msg: String,
    },
    /// A device no spec defines.
    #[error("{0}")]
    Unknown(String),
    /// Two definitions of one device, or two devices whose edits collide.
    #[error("{0}")]
    Conflict(String),
    /// A name that is not `vendor.com/class=name`.
    #[error("{0}")]
    Name(String),
    /// A device node that cannot be looked up on the host.
    #[error("{0}")]
    Device(String),
    /// An edit berth does not apply.
    #[error("{0}")]
    Unsupported(String),
}

impl CdiError {
    fn spec(file: &Path, field: &str, msg: impl Into<String>) -> CdiError {
        CdiError::Spec {
            file: file.display().to_string(),
            field: field.to_string(),
            msg: msg.into(),
        }
    }
}

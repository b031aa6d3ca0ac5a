//! berth's OCI runtime library. It sees only a bundle (config.json + rootfs):
//! namespaces, cgroups (through berth-cgroups), the rootfs and its mounts,
//! devices, pivot_root, capabilities, rlimits, seccomp, terminals and hooks, and
//! the lifecycle verbs over per-container state directories.
//!
//! Process rule: [`Runtime::create`] and [`Runtime::exec`] fork; call them from a
//! single-threaded process (the `berth` and `berth-runtime` binaries are; the
//! engine's monitor is).
#![deny(missing_docs)]

pub mod capabilities;
pub mod container;
pub mod error;
pub mod fdpass;
pub mod hooks;
pub mod lsm;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod sys;
pub mod trace;
pub mod tty;
pub mod wait;

pub use berth_cgroups::Layout as CgroupLayout;
pub use berth_cgroups::Stats;
pub use berth_cgroups::delegated_root as cgroup_delegated_root;
pub use berth_cgroups::detect_layout as cgroup_layout;
pub use berth_cgroups::own_v2_path as cgroup_own_v2_path;
pub use berth_cgroups::v2::controller_list as cgroup_controller_list;
pub use container::cmdline;
pub use container::kill::parse_signal;
pub use container::{CreateOptions, ExecOptions, Runtime};
pub use error::{Result, RuntimeError};
pub use state::Status;

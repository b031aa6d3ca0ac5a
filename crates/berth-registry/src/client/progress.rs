//! Progress events of pulls and pushes. The client reports; the CLI renders
//! (per-layer bars on a tty, docker's plain lines otherwise, nothing when quiet).

use berth_types::Digest;

/// Receives progress from transfers running on several threads.
pub trait Progress: Sync {
    /// A line of its own (`latest: Pulling from library/busybox`).
    fn message(&self, line: &str);
    /// A layer's transfer starts (`total` bytes; `verb` is `Downloading`/`Pushing`).
    fn start(&self, id: &Digest, total: u64, verb: &str);
    /// `n` more bytes moved.
    fn advance(&self, id: &Digest, n: u64);
    /// The transfer restarted from `at` bytes (after a dropped connection).
    fn reset(&self, id: &Digest, at: u64) {
        let _ = (id, at);
    }
    /// A layer is done: `Pull complete`, `Already exists`, `Pushed`,
    /// `Layer already exists`, `Mounted from x`.
    fn done(&self, id: &Digest, status: &str);
}

/// Reports nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn message(&self, _: &str) {}
    fn start(&self, _: &Digest, _: u64, _: &str) {}
    fn advance(&self, _: &Digest, _: u64) {}
    fn done(&self, _: &Digest, _: &str) {}
}

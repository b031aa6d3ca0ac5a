//! `BERTH_TRACE=1`: one line per phase of a command on stderr, `berth-trace
//! <pid> <µs> <phase>`, the time on the machine's monotonic clock, so the
//! lines of the CLI, the runtime and a container's init (other processes)
//! line up. `bench/profile.sh` turns them into the table of where a `run
//! --rm` spends its time. Off, it costs one environment lookup per process.

use std::sync::OnceLock;

fn on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("BERTH_TRACE").is_some_and(|v| v == "1"))
}

/// Marks the end of `phase` (when tracing is on).
pub fn mark(phase: &str) {
    if !on() {
        return;
    }
    // SAFETY: clock_gettime into a zeroed timespec.
    let us = unsafe {
        let mut t: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t);
        t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1000
    };
    eprintln!("berth-trace {} {us} {phase}", std::process::id());
}

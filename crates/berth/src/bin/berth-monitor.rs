//! `berth-monitor`: what stays beside a detached container while it runs,
//! as conmon does for podman. berth's monitor launches the container, then
//! executes this program in its place (same process, so the container stays
//! its child): it appends the container's output to the json-file log,
//! forwards the signals it is sent, reaps, and once the container exited it
//! writes the exit code to the exit file and executes berth again with the
//! code, to record the exit and apply the restart policy.
//!
//! A program of its own, not a mode of `berth`, so that it touches only its
//! own few pages: a process of the 130 MB `berth` image keeps megabytes of
//! code and relocated data resident. Its command line (made only by berth):
//!
//! ```text
//! berth-monitor PID LOG EXIT-FILE (tty MASTER-FD | pipes OUT-FD ERR-FD) -- BERTH-ARGV…
//! ```
//!
//! The code is appended to BERTH-ARGV.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;

use berth_runtime::wait::Stdio;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((pid, log, exit_file, io, then)) = parse(&args) else {
        eprintln!("berth-monitor: berth runs this program itself (see its documentation)");
        std::process::exit(2);
    };
    let code = berth_engine::run::watch(pid, io, Path::new(log), &mut drop_startup_pages);
    // First on disk: if berth cannot be executed, whoever looks at the
    // container next still finds how it exited.
    let _ = std::fs::write(exit_file, code.to_string());
    let err = std::process::Command::new(&then[0])
        .args(&then[1..])
        .arg(code.to_string())
        .exec();
    eprintln!("berth-monitor: {}: {err}", then[0]);
    std::process::exit(1);
}

/// The command line: the container's pid, the log, the exit file, its
/// output descriptors and the berth command to execute after.
fn parse(args: &[String]) -> Option<(i32, &str, &str, Stdio, &[String])> {
    let pid: i32 = args.first()?.parse().ok()?;
    let (log, exit_file) = (args.get(1)?, args.get(2)?);
    let fd = |i: usize| -> Option<OwnedFd> {
        let n: i32 = args.get(i)?.parse().ok()?;
        // SAFETY: berth left this descriptor open for us, and nothing else
        // in this process owns it.
        (n > 2).then(|| unsafe { OwnedFd::from_raw_fd(n) })
    };
    let (io, next) = match args.get(3)?.as_str() {
        "tty" => (
            Stdio::Tty {
                master: fd(4)?,
                stdin: false,
            },
            5,
        ),
        "pipes" => (
            Stdio::Pipes {
                out: fd(4)?,
                err: fd(5)?,
                input: None,
            },
            6,
        ),
        _ => return None,
    };
    let then = args.get(next + 1..).filter(|t| !t.is_empty())?;
    (args.get(next)? == "--").then_some((pid, log.as_str(), exit_file.as_str(), io, then))
}

/// Takes the file pages that loading and setting up touched (the
/// loader's, libc's, ours) out of this process's resident set, once the
/// wait is about to begin: the kernel maps a file's cached pages around
/// each one touched, so a few calls leave most of libc's text mapped.
/// Only file mappings that hold no page of their own (no relocated or
/// written page, `Anonymous: 0 kB` in smaps): theirs come back from the
/// page cache on the next touch, so the wait loop ends up holding only what
/// it runs.
fn drop_startup_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut mapping: Option<(usize, usize)> = None;
    let mut drop = Vec::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            // `start-end perms offset dev inode path`: a named file, mapped
            // private and never writable.
            let perms = f.next().unwrap_or("");
            let file = f.nth(3).is_some_and(|p| p.starts_with('/'));
            mapping = (file
                && perms.starts_with('r')
                && perms.get(1..2) == Some("-")
                && perms.ends_with('p'))
            .then_some((a, b));
        } else if first == "Anonymous:"
            && let Some(m) = mapping.take()
            && f.next() == Some("0")
        {
            drop.push(m);
        }
    }
    for (a, b) in drop {
        // SAFETY: a private read-only file mapping without a page of its
        // own: discarding its pages loses nothing, they fault back in from
        // the file.
        unsafe {
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED);
        }
    }
}

//! OCI hooks: each runs with the container's state JSON on stdin, its own args
//! and env, and an optional timeout; a failing hook fails the operation (except
//! poststart and poststop, whose failures are only reported, per the spec).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};

use crate::error::{Result, RuntimeError};

/// Runs `hooks` of kind `kind` (for messages) with `state` on stdin.
pub fn run(kind: &'static str, hooks: &[Hook], state: &serde_json::Value) -> Result<()> {
    for h in hooks {
        run_one(kind, h, state)?;
    }
    Ok(())
}

/// The hooks `pick` chooses (poststart or poststop) of the container `id`
/// whose bundle is `bundle`, read without the rest of the spec
/// ([`crate::spec::load_hooks`]), run with its state; a failing one is
/// reported on stderr, not fatal (the runtime spec's rule for these two).
pub fn run_late(
    kind: &'static str,
    pick: fn(&Hooks) -> &Option<Vec<Hook>>,
    bundle: &std::path::Path,
    id: &str,
    status: &str,
    pid: i32,
) {
    let Ok(spec) = crate::spec::load_hooks(bundle) else {
        return;
    };
    let Some(hooks) = spec.hooks.as_ref().and_then(|h| pick(h).as_ref()) else {
        return;
    };
    let state = crate::container::hook_state_of(
        &spec.version,
        spec.annotations.as_ref(),
        id,
        status,
        pid,
        bundle,
    );
    if let Err(e) = run(kind, hooks, &state) {
        eprintln!("warning: {e}");
    }
}

fn run_one(kind: &'static str, h: &Hook, state: &serde_json::Value) -> Result<()> {
    let path = h.path().display().to_string();
    let fail = |msg: String| RuntimeError::Hook {
        kind,
        path: path.clone(),
        msg,
    };
    let mut cmd = Command::new(h.path());
    if let Some(args) = h.args()
        && let Some((argv0, rest)) = args.split_first()
    {
        use std::os::unix::process::CommandExt;
        cmd.arg0(argv0);
        cmd.args(rest);
    }
    cmd.env_clear();
    for e in h.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        write_without_sigpipe(&mut stdin, state.to_string().as_bytes());
    }
    let deadline = h
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t.max(0) as u64));
    loop {
        if let Some(st) = child.try_wait().map_err(|e| fail(e.to_string()))? {
            if st.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(fail(format!("{st}: {}", err.trim())));
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "timed out after {}s",
                h.timeout().unwrap_or(0)
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Writes the state to a hook that may not read it (`sh -c "echo …"` exits
/// first): the binaries restore SIGPIPE's default, so a write to the closed
/// pipe would kill the runtime. SIGPIPE is blocked in this thread for the
/// write, and one raised by it is taken off the pending set before the mask
/// is restored; the hook's own exit status decides the outcome.
fn write_without_sigpipe(w: &mut impl Write, data: &[u8]) {
    // SAFETY: signal-mask calls on a local set, for this thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let r = w.write_all(data);
        if r.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
}

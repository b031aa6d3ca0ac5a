//! End to end: healthchecks as dockerd runs them (the reference for every
//! state, text and rule here): `--health-*` flags and the image's
//! HEALTHCHECK, `State.Health` in inspect, `(healthy)` in `ps`, the
//! `health` filter, timeouts, `--no-healthcheck`.

mod common;

use std::time::{Duration, Instant};

use common::Berth;

fn health(b: &Berth, name: &str) -> serde_json::Value {
    // dockerd leaves Health out of State when there is none.
    let out = b
        .run(&["inspect", "--format", "{{json .State}}", name])
        .ok();
    let state: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    state["Health"].clone()
}

/// Polls until the container's health status is `want` (30 s at most).
#[track_caller]
fn wait_for(b: &Berth, name: &str, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = health(b, name);
        if h["Status"] == want {
            return h;
        }
        assert!(Instant::now() < deadline, "{name} never became {want}: {h}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(b: &Berth, name: &str) -> String {
    b.run(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={name}"),
        "--format",
        "{{.Status}}",
    ])
    .ok()
    .trim()
    .to_string()
}

/// docker: `starting` until a probe passes, `healthy` at once on success,
/// `unhealthy` after `--health-retries` failures in a row; the log keeps
/// the last five probes; a stopped container is `unhealthy`.
#[test]
fn health_flags_drive_docker_s_states() {
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&[
        "run",
        "-d",
        "--name",
        "hc",
        "--health-cmd",
        "cat /tmp/ok",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "busybox",
        "sh",
        "-c",
        "sleep 300",
    ])
    .ok();
    let cfg = b
        .run(&["inspect", "--format", "{{json .Config.Healthcheck}}", "hc"])
        .ok();
    let cfg: serde_json::Value = serde_json::from_str(cfg.trim()).unwrap();
    assert_eq!(cfg["Test"], serde_json::json!(["CMD-SHELL", "cat /tmp/ok"]));
    assert_eq!(cfg["Interval"], 200_000_000);
    assert_eq!(cfg["Retries"], 2);

    let h = wait_for(&b, "hc", "unhealthy");
    assert!(h["FailingStreak"].as_u64().unwrap() >= 2, "{h}");
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 1);
    assert!(
        last["Output"].as_str().unwrap().contains("/tmp/ok"),
        "the probe's stderr is its output: {last}"
    );
    assert!(
        status(&b, "hc").ends_with("(unhealthy)"),
        "{}",
        status(&b, "hc")
    );
    let q = b.run(&["ps", "-q", "--filter", "health=unhealthy"]).ok();
    assert_eq!(q.lines().count(), 1, "{q}");

    b.run(&["exec", "hc", "sh", "-c", "echo fine > /tmp/ok"])
        .ok();
    let h = wait_for(&b, "hc", "healthy");
    assert_eq!(h["FailingStreak"], 0);
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["ExitCode"].clone(), last["Output"].clone()),
        (0.into(), "fine\n".into())
    );
    assert!(
        status(&b, "hc").ends_with("(healthy)"),
        "{}",
        status(&b, "hc")
    );
    assert!(
        b.run(&["ps", "-q", "--filter", "health=unhealthy"])
            .ok()
            .is_empty()
    );
    // Enough probes for the log to wrap: five kept.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(health(&b, "hc")["Log"].as_array().unwrap().len(), 5);

    b.run(&["stop", "-t", "1", "hc"]).ok();
    assert_eq!(health(&b, "hc")["Status"], "unhealthy");
    // Started again: `starting` until a probe says otherwise.
    b.run(&["start", "hc"]).ok();
    let first = health(&b, "hc")["Status"].clone();
    assert!(first == "starting" || first == "healthy", "{first}");
    wait_for(&b, "hc", "healthy");
    b.run(&["rm", "-f", "hc"]).ok();
}

/// docker: a probe still running at `--health-timeout` is killed and counts
/// as a failure with exit code -1 and "Health check exceeded timeout (…)".
/// Failures in `--health-start-period` do not count.
#[test]
fn health_timeouts_and_start_period() {
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--health-cmd",
        "sleep 10",
        "--health-interval",
        "100ms",
        "--health-timeout",
        "200ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "300",
    ])
    .ok();
    let h = wait_for(&b, "slow", "unhealthy");
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], -1);
    assert_eq!(last["Output"], "Health check exceeded timeout (200ms)");
    // The killed probe is gone from the container.
    let ps = b.run(&["top", "slow"]).ok();
    assert!(
        ps.lines().filter(|l| l.contains("sleep 10")).count() <= 1,
        "probes pile up: {ps}"
    );
    b.run(&["rm", "-f", "slow"]).ok();

    b.run(&[
        "run",
        "-d",
        "--name",
        "warm",
        "--health-cmd",
        "false",
        "--health-interval",
        "100ms",
        "--health-start-period",
        "30s",
        "--health-start-interval",
        "100ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "300",
    ])
    .ok();
    std::thread::sleep(Duration::from_millis(1200));
    let h = health(&b, "warm");
    assert_eq!(h["Status"], "starting", "{h}");
    assert_eq!(h["FailingStreak"], 0, "{h}");
    assert!(!h["Log"].as_array().unwrap().is_empty(), "probes ran: {h}");
    assert!(status(&b, "warm").ends_with("(health: starting)"));
    b.run(&["rm", "-f", "warm"]).ok();
}

/// docker: the image's HEALTHCHECK runs unless `--no-healthcheck`; the
/// `--health-*` flags lie over it; `--no-healthcheck` with a `--health-*`
/// flag is refused (125).
#[test]
fn image_healthcheck_and_no_healthcheck() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let ctx = b.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nHEALTHCHECK --interval=100ms --retries=1 CMD [\"echo\", \"probe says hi\"]\n",
    )
    .unwrap();
    b.run(&["build", "-q", "-t", "checked", ctx.to_str().unwrap()])
        .ok();
    b.run(&["run", "-d", "--name", "img", "checked", "sleep", "300"])
        .ok();
    let h = wait_for(&b, "img", "healthy");
    assert_eq!(h["Log"][0]["Output"], "probe says hi\n");

    // A flag over the image's check keeps its command.
    b.run(&[
        "run",
        "-d",
        "--name",
        "over",
        "--health-retries",
        "7",
        "checked",
        "sleep",
        "300",
    ])
    .ok();
    let cfg = b
        .run(&[
            "inspect",
            "--format",
            "{{json .Config.Healthcheck}}",
            "over",
        ])
        .ok();
    let cfg: serde_json::Value = serde_json::from_str(cfg.trim()).unwrap();
    assert_eq!(
        cfg["Test"],
        serde_json::json!(["CMD", "echo", "probe says hi"])
    );
    assert_eq!(cfg["Retries"], 7);
    assert_eq!(cfg["Interval"], 100_000_000);

    b.run(&[
        "run",
        "-d",
        "--name",
        "off",
        "--no-healthcheck",
        "checked",
        "sleep",
        "300",
    ])
    .ok();
    std::thread::sleep(Duration::from_millis(500));
    assert!(health(&b, "off").is_null());
    assert!(!status(&b, "off").contains('('), "{}", status(&b, "off"));
    let none = b
        .run(&["ps", "--filter", "health=none", "--format", "{{.Names}}"])
        .ok();
    assert_eq!(none.trim(), "off");

    let err = b
        .run(&[
            "run",
            "--no-healthcheck",
            "--health-cmd",
            "true",
            "busybox",
            "true",
        ])
        .fails(125);
    assert!(
        err.contains("--no-healthcheck conflicts with --health-* options"),
        "{err}"
    );
    let err = b
        .run(&["run", "--health-interval", "-1s", "busybox", "true"])
        .fails(125);
    assert!(
        err.contains("--health-interval cannot be negative"),
        "{err}"
    );
    b.run(&["rm", "-f", "img", "over", "off"]).ok();
}

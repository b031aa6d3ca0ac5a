//! End to end: docker parity items found by a side-by-side run against
//! dockerd (issue: docker parity); each test states docker's behaviour as
//! the reference.

mod common;

use common::Berth;

/// docker: `rmi -f` of an image a stopped container uses only untags it (the
/// container keeps its image and starts again); of one a running container
/// uses, by id, it is a conflict that cannot be forced.
#[test]
fn rmi_force_keeps_the_image_containers_use() {
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&["tag", "busybox", "app:1"]).ok();
    b.run(&["create", "--name", "stopped", "app:1", "echo", "still here"])
        .ok();
    let out = b.run(&["rmi", "-f", "app:1"]).ok();
    assert_eq!(out.trim(), "Untagged: app:1");
    assert!(!b.run(&["images"]).ok().contains("app"), "untagged");
    b.run(&["start", "stopped"]).ok();
    b.run(&["wait", "stopped"]).ok();
    assert_eq!(b.run(&["logs", "stopped"]).ok(), "still here\n");
    // Running, by id: docker's hard conflict.
    let id = b
        .run(&["image", "inspect", "--format", "{{.Id}}", "busybox"])
        .ok()
        .trim()
        .to_string();
    b.run(&["run", "-d", "--name", "running", &id, "sleep", "300"])
        .ok();
    let err = b.run(&["rmi", "-f", &id]).fails(1);
    assert!(
        err.contains("(cannot be forced) - image is being used by running container"),
        "{err}"
    );
    b.run(&["rm", "-f", "running", "stopped"]).ok();
}

/// docker: `kill` (SIGKILL) returns once the container is dead, so `kill x
/// && rm x` and `kill x && start x` work.
#[test]
fn kill_returns_once_the_container_is_dead() {
    let b = Berth::new();
    b.import_busybox("busybox");
    for i in 0..3 {
        let name = format!("k{i}");
        b.run(&["run", "-d", "--name", &name, "busybox", "sleep", "300"])
            .ok();
        b.run(&["kill", &name]).ok();
        b.run(&["rm", &name]).ok();
    }
    b.run(&["run", "-d", "--name", "again", "busybox", "sleep", "300"])
        .ok();
    b.run(&["kill", "again"]).ok();
    b.run(&["start", "again"]).ok();
    let st = b
        .run(&["inspect", "--format", "{{.State.Status}}", "again"])
        .ok();
    assert_eq!(st.trim(), "running");
    b.run(&["rm", "-f", "again"]).ok();
}

/// docker: `run -d --init` returns once the container runs; the init held
/// the starting client's pipe and `run` waited for the container to exit.
/// No descriptor of berth's reaches a container's processes.
#[test]
fn run_detached_with_init_returns_and_leaks_no_descriptor() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let start = std::time::Instant::now();
    let mut child = b
        .command(&[
            "run", "-d", "--init", "--name", "withinit", "busybox", "sleep", "300",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "run -d --init did not return"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(child.wait().unwrap().success());
    b.run(&["run", "-d", "--name", "noinit", "busybox", "sleep", "300"])
        .ok();
    for name in ["withinit", "noinit"] {
        // Every process of the container: only its stdio.
        let out = b
            .run(&[
                "exec",
                name,
                "sh",
                "-c",
                "for p in $(pidof sleep) 1; do ls /proc/$p/fd | tr '\\n' ' '; echo; done",
            ])
            .ok();
        for l in out.lines() {
            assert_eq!(l.trim(), "0 1 2", "{name}: {out}");
        }
    }
    b.run(&["rm", "-f", "withinit", "noinit"]).ok();
}

/// podman's rule (docker fails here): `--privileged` gives the container
/// every capability berth holds — this machine's root lacks
/// CAP_SYS_RESOURCE, and asking for it failed ("capset effective set:
/// Operation not permitted").
#[test]
fn privileged_gets_the_capabilities_there_are() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let host_bnd = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        .unwrap();
    let out = b
        .run(&[
            "run",
            "--rm",
            "--privileged",
            "busybox",
            "grep",
            "CapEff",
            "/proc/self/status",
        ])
        .ok();
    assert_eq!(
        out.split_whitespace().nth(1),
        Some(host_bnd.as_str()),
        "{out}"
    );
    let out = b
        .run(&[
            "run",
            "--rm",
            "--cap-add",
            "ALL",
            "busybox",
            "grep",
            "CapEff",
            "/proc/self/status",
        ])
        .ok();
    assert_eq!(
        out.split_whitespace().nth(1),
        Some(host_bnd.as_str()),
        "{out}"
    );
}

/// docker: `run --help` and `create --help` print their usage (`-h` is
/// `--hostname`, so only the long form is help); they failed with
/// "unexpected argument '--help'".
#[test]
fn run_and_create_have_help() {
    let b = Berth::new();
    for cmd in ["run", "create"] {
        let out = b.run(&[cmd, "--help"]).ok();
        assert!(
            out.contains(&format!("Usage: berth {cmd} [OPTIONS] <IMAGE>")),
            "{out}"
        );
        assert!(out.contains("--hostname"), "{out}");
    }
}

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

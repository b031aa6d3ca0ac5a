//! berth-runtime on a Kubernetes node's stack: Debian's containerd with its
//! CRI plugin and a `berth` runtime handler (scripts/cri-node: CNI bridge,
//! look-alike images on a local berth registry behind containerd's mirrors,
//! all in a network namespace of the test's own), driven by crictl the way
//! the kubelet drives it. crictl is built from kubernetes-sigs/cri-tools
//! (no Debian package): without it on PATH the test says so and is skipped.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{berth_bin, have, project_root};

/// A node made by scripts/cri-node, stopped (pods, containerd, registry,
/// network namespace) when dropped.
struct Node {
    dir: tempfile::TempDir,
    address: String,
    netns: String,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-cri-")
            .tempdir()
            .unwrap();
        let out = Command::new(project_root().join("scripts/cri-node"))
            .arg("start")
            .arg(dir.path().join("node"))
            .env("BERTH", berth_bin())
            .output()
            .unwrap();
        let env = std::fs::read_to_string(dir.path().join("node/env")).unwrap_or_default();
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(str::to_string)
        };
        let node = Node {
            address: get("CONTAINERD_ADDRESS").unwrap_or_default(),
            netns: get("NETNS").unwrap_or_default(),
            dir,
        };
        assert!(
            out.status.success(),
            "scripts/cri-node start failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        node
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// crictl in the node's network namespace (its streaming server, for
    /// exec and logs, listens there).
    fn crictl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["crictl", "--runtime-endpoint"])
            .arg(format!("unix://{}", self.address))
            .arg("--image-endpoint")
            .arg(format!("unix://{}", self.address))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.crictl(args);
        assert!(ok, "crictl {args:?} failed:\n{out}\n{err}");
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new(project_root().join("scripts/cri-node"))
            .arg("stop")
            .arg(self.dir.path().join("node"))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .status();
    }
}

#[test]
fn a_pod_runs_on_berth_runtime_through_containerd_cri() {
    if Command::new("crictl").arg("--version").output().is_err() {
        eprintln!(
            "skipped: no crictl on PATH (no Debian package: build it from \
             kubernetes-sigs/cri-tools with `go build ./cmd/crictl`, as scripts/cri-conformance does)"
        );
        return;
    }
    if !have("containerd", "containerd") || !have("nsenter", "util-linux") {
        return;
    }
    if !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        eprintln!("skipped: no CNI plugins (apt-get install containernetworking-plugins)");
        return;
    }
    let node = Node::start();
    std::fs::create_dir_all(node.path("logs")).unwrap();
    let pod = node.path("pod.json");
    std::fs::write(
        &pod,
        serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "pod-uid-1", "attempt": 1},
            "hostname": "web-0",
            "log_directory": node.path("logs"),
            "linux": {}
        })
        .to_string(),
    )
    .unwrap();
    let ctr = node.path("ctr.json");
    std::fs::write(
        &ctr,
        serde_json::json!({
            "metadata": {"name": "main"},
            "image": {"image": "registry.k8s.io/e2e-test-images/busybox:1.29-2"},
            "command": ["sh", "-c", "echo hello-from-a-pod; exec sleep 3600"],
            "log_path": "main.log",
            "linux": {}
        })
        .to_string(),
    )
    .unwrap();
    let (pod, ctr) = (pod.to_str().unwrap(), ctr.to_str().unwrap());
    // The kubelet's steps: pull, run the sandbox with the RuntimeClass's
    // handler, create and start a container in it.
    node.ok(&["pull", "registry.k8s.io/e2e-test-images/busybox:1.29-2"]);
    let p = node.ok(&["runp", "--runtime", "berth", pod]);
    let inspect: serde_json::Value =
        serde_json::from_str(&node.ok(&["inspectp", &p])).expect("inspectp json");
    assert_eq!(inspect["status"]["state"], "SANDBOX_READY", "{inspect:#}");
    assert_eq!(inspect["info"]["runtimeHandler"], "berth", "{inspect:#}");
    let ip = inspect["status"]["network"]["ip"].as_str().unwrap_or("");
    assert!(
        ip.starts_with("10.88."),
        "the pod has a CNI address: {ip:?}"
    );
    let c = node.ok(&["create", &p, ctr, pod]);
    node.ok(&["start", &c]);
    let info: serde_json::Value =
        serde_json::from_str(&node.ok(&["inspect", &c])).expect("inspect json");
    assert!(
        info["info"]["runtimeOptions"]
            .to_string()
            .contains("berth-runtime"),
        "the container's runtime is berth-runtime: {:#}",
        info["info"]["runtimeOptions"]
    );
    // Logs through containerd's CRI log files.
    let mut logs = String::new();
    for _ in 0..50 {
        logs = node.ok(&["logs", &c]);
        if logs.contains("hello-from-a-pod") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(logs.contains("hello-from-a-pod"), "{logs}");
    // Exec joins the container: its hostname, its address, its exit code.
    let out = node.ok(&["exec", &c, "sh", "-c", "hostname; ip -4 addr show eth0"]);
    assert!(out.starts_with("web-0"), "{out}");
    assert!(out.contains(ip), "{out}");
    let (ok, _, err) = node.crictl(&["exec", &c, "sh", "-c", "exit 3"]);
    assert!(!ok, "a failing exec fails");
    assert!(
        err.contains("exit code 3") || err.contains("code 3"),
        "{err}"
    );
    assert!(node.ok(&["ps", "-q"]).contains(&c));
    // And down again, the kubelet's way.
    node.ok(&["stop", &c]);
    node.ok(&["rm", &c]);
    node.ok(&["stopp", &p]);
    node.ok(&["rmp", &p]);
    assert!(node.ok(&["pods", "-q"]).is_empty());
}

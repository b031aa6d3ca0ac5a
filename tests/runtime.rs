//! End to end: the `berth-runtime` binary (runc's CLI) on busybox bundles —
//! isolation, limits, lifecycle, exec, terminals, seccomp and bad configs.
//! Each test has its own state root and container id, and deletes its
//! container when it ends, even on failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{busybox_tar, tool};
use serde_json::{Value, json};

fn runtime_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth-runtime")
}

/// A bundle with a busybox rootfs, a state root, and a container id; the
/// container is force-deleted on drop.
struct Bundle {
    dir: tempfile::TempDir,
    id: String,
}

impl Bundle {
    fn new(args: &[&str]) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("berth-rt-")
            .tempdir()
            .unwrap();
        let rootfs = dir.path().join("bundle/rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        tool(
            "tar",
            &[
                "-C",
                rootfs.to_str().unwrap(),
                "-xf",
                busybox_tar().to_str().unwrap(),
            ],
        );
        let b = Bundle {
            id: format!(
                "t{}-{}",
                std::process::id(),
                dir.path()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .replace('.', "")
            ),
            dir,
        };
        let out = Command::new(runtime_bin())
            .args(["spec", "--bundle"])
            .arg(b.bundle())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        b.edit(|c| {
            c["process"]["terminal"] = json!(false);
            c["process"]["args"] = json!(args);
            c["root"]["readonly"] = json!(false);
        });
        b
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn edit(&self, f: impl FnOnce(&mut Value)) {
        let p = self.bundle().join("config.json");
        let mut c: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        f(&mut c);
        std::fs::write(&p, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(runtime_bin());
        c.arg("--root").arg(self.root()).args(args);
        c
    }

    fn rt(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// For `create` and `run -d`: the container keeps the stdio it is given, so
    /// give it files instead of the pipes `output()` would wait on.
    fn rt_detached(&self, args: &[&str]) -> Output {
        let log = self.dir.path().join("detached.log");
        let f = std::fs::File::create(&log).unwrap();
        let st = self
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .status()
            .unwrap();
        Output {
            status: st,
            stdout: Vec::new(),
            stderr: std::fs::read(&log).unwrap_or_default(),
        }
    }

    /// `run` in the foreground: (exit code, stdout, stderr).
    fn run(&self) -> (i32, String, String) {
        let o = self.rt(&["run", "-b", self.bundle().to_str().unwrap(), &self.id]);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = self
            .cmd(&["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
    }
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn isolation_basics() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "echo pid=$$; hostname; ls /proc | grep -c '^[0-9]'; cat /proc/1/cmdline | tr '\\0' ' '; echo; \
         test -e /host-marker && echo LEAK || echo no-leak; \
         mount -t tmpfs none /mnt 2>/dev/null && echo MOUNTED || echo mount-denied; \
         (echo 1 > /proc/sys/kernel/domainname) 2>/dev/null && echo SYSCTL || echo sysctl-ro; \
         wc -c < /proc/timer_list",
    ]);
    std::fs::write("/tmp/host-marker-unused", "x").ok();
    b.edit(|c| c["hostname"] = json!("boxhost"));
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1", "the user process is PID 1");
    assert_eq!(lines[1], "boxhost");
    assert!(
        lines[2].trim().parse::<u32>().unwrap() <= 3,
        "host processes invisible: {}",
        lines[2]
    );
    assert!(lines[3].starts_with("sh -c"));
    assert_eq!(lines[4], "no-leak");
    assert_eq!(lines[5], "mount-denied", "no CAP_SYS_ADMIN");
    assert_eq!(lines[6], "sysctl-ro");
    assert_eq!(lines[7].trim(), "0", "masked /proc/timer_list reads empty");
    assert!(
        !std::fs::read_to_string("/proc/timer_list")
            .unwrap()
            .is_empty(),
        "the host's is not"
    );
    assert_ne!(tool("hostname", &[]).trim(), "boxhost");
}

fn wait_status(b: &Bundle, want: &str) {
    for _ in 0..500 {
        let o = b.rt(&["state", &b.id]);
        if o.status.success() {
            let st: Value = serde_json::from_slice(&o.stdout).unwrap();
            if st["status"] == want {
                return;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("container {} never reached {want}", b.id);
}

#[test]
fn exit_codes_propagate() {
    let b = Bundle::new(&["sh", "-c", "exit 7"]);
    assert_eq!(b.run().0, 7);
    // Killed from outside (PID 1 ignores its own SIGKILL): 128 + 9, as docker reports.
    let b = Bundle::new(&["sleep", "100"]);
    let mut child = b
        .cmd(&["run", "-b", b.bundle().to_str().unwrap(), &b.id])
        .spawn()
        .unwrap();
    wait_status(&b, "running");
    ok(&b.rt(&["kill", &b.id, "KILL"]));
    assert_eq!(child.wait().unwrap().code(), Some(137), "128 + SIGKILL");
    let b = Bundle::new(&["/nonexistent"]);
    let (code, _, err) = b.run();
    assert_eq!(code, 1);
    assert!(
        err.contains("executable file not found") || err.contains("/nonexistent"),
        "{err}"
    );
    assert!(
        !b.root().join(&b.id).exists(),
        "failed create leaves no state"
    );
}

#[test]
fn memory_limit_kills_the_hog() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    b.edit(|c| {
        c["linux"]["resources"]["memory"] = json!({"limit": 33554432, "swap": 33554432});
    });
    let (code, out, _) = b.run();
    assert_eq!(code, 137, "OOM-killed: {out}");
    assert!(!out.contains("survived"));
    assert_eq!(tool("sh", &["-c", "echo host-fine"]).trim(), "host-fine");
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    // Builtins only after the loop: forking is what the limit stops.
    let b = Bundle::new(&[
        "sh",
        "-c",
        "sh -c 'i=0; while [ $i -lt 40 ]; do sleep 5 & i=$((i+1)); done'; \
         read n < /sys/fs/cgroup/pids/pids.current; echo $n; exit 0",
    ]);
    b.edit(|c| c["linux"]["resources"]["pids"] = json!({"limit": 10}));
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("can't fork"), "the bomb hit the limit: {err}");
    let n: u32 = out.trim().lines().last().unwrap().trim().parse().unwrap();
    assert!(
        (2..=10).contains(&n),
        "the cgroup never held more than 10 tasks (40 were tried): {n}"
    );
}

#[test]
fn lifecycle_create_start_state_kill_delete() {
    let b = Bundle::new(&["sleep", "100"]);
    let bundle = b.bundle();
    let pidfile = b.dir.path().join("pid");
    ok(&b.rt_detached(&[
        "create",
        "-b",
        bundle.to_str().unwrap(),
        "--pid-file",
        pidfile.to_str().unwrap(),
        &b.id,
    ]));
    let st: Value = serde_json::from_str(&ok(&b.rt(&["state", &b.id]))).unwrap();
    assert_eq!(st["status"], "created");
    assert_eq!(
        st["pid"].as_i64().unwrap().to_string(),
        std::fs::read_to_string(&pidfile).unwrap()
    );
    // The process has not exec'd yet: it is still berth-runtime's init.
    ok(&b.rt(&["start", &b.id]));
    let st: Value = serde_json::from_str(&ok(&b.rt(&["state", &b.id]))).unwrap();
    assert_eq!(st["status"], "running");
    let list = ok(&b.rt(&["list"]));
    assert!(list.contains(&b.id) && list.contains("running"), "{list}");
    let err = b.rt(&["delete", &b.id]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("not stopped"));
    ok(&b.rt(&["pause", &b.id]));
    let st: Value = serde_json::from_str(&ok(&b.rt(&["state", &b.id]))).unwrap();
    assert_eq!(st["status"], "paused");
    ok(&b.rt(&["resume", &b.id]));
    let ps: Vec<i32> =
        serde_json::from_str(&ok(&b.rt(&["ps", "--format", "json", &b.id]))).unwrap();
    assert_eq!(ps.len(), 1);
    let table = ok(&b.rt(&["ps", &b.id]));
    assert_eq!(
        table.lines().collect::<Vec<_>>(),
        [
            "PID      CMD".to_string(),
            format!("{:<8} sleep 100", ps[0])
        ],
        "{table}"
    );
    ok(&b.rt(&["kill", &b.id, "KILL"]));
    for _ in 0..100 {
        let st: Value = serde_json::from_str(&ok(&b.rt(&["state", &b.id]))).unwrap();
        if st["status"] == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ok(&b.rt(&["delete", &b.id]));
    assert!(!b.root().join(&b.id).exists());
    assert!(!b.rt(&["state", &b.id]).status.success());
    // As runc: deleting a missing container fails, unless forced.
    assert!(!b.rt(&["delete", &b.id]).status.success());
    ok(&b.rt(&["delete", "--force", &b.id]));
}

/// A container in the host's pid namespace (a Kubernetes pod with hostPID)
/// whose init dies leaves the init's children in its cgroup: `kill --all`
/// still reaches them and `delete` kills them before removing the cgroup,
/// as runc does. berth-runtime answered "container not running" and then
/// failed the delete with EBUSY on the cgroup, so containerd could never
/// stop such a pod (found by critest's NamespaceOption HostPID specs).
#[test]
fn a_host_pid_container_s_leftovers_are_killed_and_deleted() {
    let b = Bundle::new(&["sh", "-c", "sleep 300 & exec sleep 301"]);
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "pid");
    });
    let bundle = b.bundle();
    ok(&b.rt_detached(&["create", "-b", bundle.to_str().unwrap(), &b.id]));
    ok(&b.rt(&["start", &b.id]));
    // Both sleeps in the cgroup, then the init alone killed.
    let mut pids: Vec<i32> = Vec::new();
    for _ in 0..100 {
        pids = serde_json::from_str(&ok(&b.rt(&["ps", "--format", "json", &b.id]))).unwrap();
        if pids.len() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(pids.len(), 2, "{pids:?}");
    ok(&b.rt(&["kill", &b.id, "KILL"]));
    wait_status(&b, "stopped");
    let child = pids
        .iter()
        .copied()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.contains("300"))
        })
        .expect("the init's child");
    assert!(
        std::path::Path::new(&format!("/proc/{child}")).exists(),
        "the child outlives the init"
    );
    // A harmless signal, so that `delete` still finds the child to kill.
    ok(&b.rt(&["kill", "--all", &b.id, "CONT"]));
    ok(&b.rt(&["delete", &b.id]));
    assert!(!b.root().join(&b.id).exists());
    for _ in 0..100 {
        let gone = std::fs::read_to_string(format!("/proc/{child}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        if gone {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("the init's child {child} still runs");
}

/// Hooks that never read the state on stdin (found by youki's contest: the
/// runtime died of SIGPIPE when one exited first): every hook of every kind
/// runs, in order, and `start` succeeds.
#[test]
fn hooks_that_ignore_stdin_run_in_order() {
    let b = Bundle::new(&["true"]);
    let out = b.dir.path().join("hooks.out");
    let hook = |t: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {t} >> {}", out.display())]});
    b.edit(|c| {
        c["hooks"] = json!({
            "prestart": [hook("pre1"), hook("pre2")],
            "poststart": [hook("post1"), hook("post2")],
            "poststop": [hook("stop1"), hook("stop2")],
        });
    });
    for _ in 0..5 {
        let _ = std::fs::remove_file(&out);
        ok(&b.rt_detached(&["create", "-b", b.bundle().to_str().unwrap(), &b.id]));
        ok(&b.rt(&["start", &b.id]));
        wait_status(&b, "stopped");
        ok(&b.rt(&["delete", &b.id]));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "pre1\npre2\npost1\npost2\nstop1\nstop2\n"
        );
    }
}

#[test]
fn exec_joins_the_namespaces() {
    let b = Bundle::new(&["sleep", "100"]);
    b.edit(|c| c["hostname"] = json!("exechost"));
    ok(&b.rt_detached(&["run", "-d", "-b", b.bundle().to_str().unwrap(), &b.id]));
    let out = ok(&b.rt(&[
        "exec",
        &b.id,
        "sh",
        "-c",
        "hostname; cat /proc/1/cmdline | tr '\\0' ' '",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "exechost");
    assert_eq!(lines[1].trim(), "sleep 100");
    let o = b.rt(&["exec", &b.id, "sh", "-c", "exit 5"]);
    assert_eq!(o.status.code(), Some(5));
    let o = b.rt(&["exec", &b.id, "nope-not-here"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("executable file not found"));
}

/// A container that joins another's pid and uts namespaces by path (what
/// `docker run --pid container:X` asks of runc): it sees the other's init as
/// pid 1 and its hostname, and is not init itself.
#[test]
fn joins_another_containers_pid_namespace() {
    let a = Bundle::new(&["sleep", "100"]);
    a.edit(|c| c["hostname"] = json!("host-a"));
    ok(&a.rt_detached(&["run", "-d", "-b", a.bundle().to_str().unwrap(), &a.id]));
    let state: Value = serde_json::from_str(&ok(&a.rt(&["state", &a.id]))).unwrap();
    let pid = state["pid"].as_i64().unwrap();
    let b = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname; [ $$ -gt 1 ] && echo not-init",
    ]);
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        for n in ns.iter_mut() {
            if n["type"] == "pid" || n["type"] == "uts" {
                n["path"] = json!(format!("/proc/{pid}/ns/{}", n["type"].as_str().unwrap()));
            }
        }
        c["hostname"] = Value::Null;
    });
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["sleep 100 ", "host-a", "not-init"], "{out}");
}

#[test]
fn user_namespace_maps_root() {
    let b = Bundle::new(&["sh", "-c", "id -u; cat /proc/self/uid_map; sleep 1"]);
    let rootfs = b.bundle().join("rootfs");
    tool("chown", &["-R", "100000:100000", rootfs.to_str().unwrap()]);
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        // sysfs and cgroups cannot be mounted from a user namespace without a netns of its own.
        let m = c["mounts"].as_array_mut().unwrap();
        m.retain(|x| x["type"] != "cgroup");
    });
    let (code, out, err) = b.run();
    if code != 0 && err.contains("the kernel refused to make a user namespace") {
        // As from a chroot (a test run in a fresh mmdebstrap root), where
        // the kernel refuses CLONE_NEWUSER: said clearly, nothing more to
        // check here.
        eprintln!("skipped: the kernel makes no user namespace here");
        return;
    }
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "root inside");
    let map: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        map,
        vec!["0", "100000", "65536"],
        "mapped to host uid 100000"
    );
}

/// Found by the runtime-tools suite: `rootfsPropagation: shared` (pivot_root
/// refuses a shared parent mount; the propagation is applied to the new root
/// afterwards, as runc does), a FIFO in `linux.devices` (no device-cgroup rule
/// for it), and the init joining its cgroups itself (SelfJoin).
#[test]
fn shared_root_propagation_fifo_devices_and_cgroup_membership() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "awk '$5 == \"/\"' /proc/self/mountinfo; test -p /dev/myfifo && echo fifo; cat /proc/self/cgroup",
    ]);
    b.edit(|c| {
        c["linux"]["rootfsPropagation"] = json!("shared");
        // Without a cgroup namespace /proc/self/cgroup shows the real paths.
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "cgroup");
        c["linux"]["devices"] =
            json!([{"path": "/dev/myfifo", "type": "p", "major": 8, "minor": 666, "fileMode": 432}]);
    });
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{out}{err}");
    let root = out.lines().next().unwrap_or_default();
    assert!(root.contains(" shared:"), "/ is shared inside: {out}");
    assert!(out.contains("\nfifo\n"), "{out}");
    // Unbindable (runtime-tools' linux_rootfs_propagation): the rootfs can
    // still be bound before pivot_root, and / is unbindable inside.
    for prop in ["unbindable", "runbindable"] {
        b.edit(|c| c["linux"]["rootfsPropagation"] = json!(prop));
        let (code, out, err) = b.run();
        assert_eq!(code, 0, "{prop}: {out}{err}");
        let root = out.lines().next().unwrap_or_default();
        assert!(
            root.contains(" unbindable "),
            "{prop}: / is unbindable inside: {out}"
        );
    }
    for ctl in ["memory", "pids", "blkio", "devices", "freezer"] {
        let line = out
            .lines()
            .find(|l| l.split(':').nth(1) == Some(ctl))
            .unwrap_or_else(|| panic!("no {ctl} line in {out}"));
        assert!(
            line.ends_with(&b.id),
            "in the container's {ctl} cgroup: {line}"
        );
    }
}

/// A tmpfs mounted on a host directory for one test, unmounted on drop.
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    fn new(at: &Path) -> TmpfsMount {
        std::fs::create_dir_all(at).unwrap();
        tool(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=8m",
                "tmpfs",
                at.to_str().unwrap(),
            ],
        );
        TmpfsMount(at.to_path_buf())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// An rshared bind (Kubernetes' Bidirectional mount propagation, critest's
/// "mount with 'rshared' should support propagation from host to container
/// and vice versa"): a mount the container makes under it shows on the host.
/// berth-runtime used to make the new root recursively slave after
/// pivot_root (mount(2) on "." names the new root, not the old one stacked
/// on it), which cut such binds off from their host peers; runc passed.
#[test]
fn an_rshared_bind_propagates_from_the_container_to_the_host() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "mkdir -p /shared/inner && mount -t tmpfs t /shared/inner && echo hi > /shared/inner/from-container",
    ]);
    let host = b.dir.path().join("shared");
    let _m = TmpfsMount::new(&host);
    tool("mount", &["--make-rshared", host.to_str().unwrap()]);
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/shared", "type": "bind",
            "source": host, "options": ["rbind", "rshared", "rw"]
        }));
        c["linux"]["rootfsPropagation"] = json!("rshared");
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(json!("CAP_SYS_ADMIN"));
        }
    });
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{out}{err}");
    let seen = std::fs::read_to_string(host.join("inner/from-container"));
    assert_eq!(
        seen.ok().as_deref(),
        Some("hi\n"),
        "the container's mount under the rshared bind reached the host"
    );
}

/// runc's recursive mount options (`rro`, `rnosuid`, `rnoexec`, `rnodev`,
/// `rnoatime`): an `rbind` of a directory with a submount gets them on the
/// submount too (mount_setattr with AT_RECURSIVE); a plain `ro` would leave
/// the submount writable. Found missing by youki's contest (mounts_recursive).
#[test]
fn recursive_mount_attributes_reach_submounts() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "awk '$5 ~ /^\\/data/ {print $5, $6}' /proc/self/mountinfo; \
         touch /data/sub/x 2>/dev/null && echo wrote-sub; \
         touch /data/top 2>/dev/null && echo wrote-top; \
         /data/sub/busybox true 2>/dev/null && echo exec-sub; true",
    ]);
    let host = b.dir.path().join("host");
    std::fs::create_dir_all(host.join("sub")).unwrap();
    let _sub = TmpfsMount::new(&host.join("sub"));
    std::fs::copy(
        b.bundle().join("rootfs/bin/busybox"),
        host.join("sub/busybox"),
    )
    .unwrap();
    let mount = |opts: &[&str]| json!([{"destination": "/data", "type": "bind", "source": host, "options": opts}]);
    b.edit(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.extend(
            mount(&["rbind", "rro", "rnosuid", "rnodev", "rnoexec", "rnoatime"])
                .as_array()
                .unwrap()
                .clone(),
        );
    });
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{out}{err}");
    let sub = out
        .lines()
        .find(|l| l.starts_with("/data/sub "))
        .unwrap_or_else(|| panic!("no /data/sub mount inside: {out}"));
    for attr in ["ro", "nosuid", "nodev", "noexec", "noatime"] {
        assert!(sub.split([' ', ',']).any(|a| a == attr), "{attr} on {sub}");
    }
    assert!(!out.contains("wrote-"), "read-only everywhere: {out}");
    assert!(!out.contains("exec-sub"), "noexec on the submount: {out}");

    // Without the recursive forms the submount keeps its own flags.
    b.rt(&["delete", "--force", &b.id]);
    b.edit(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.pop();
        mounts.extend(mount(&["rbind", "ro"]).as_array().unwrap().clone());
    });
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("wrote-sub"),
        "plain ro is not recursive: {out}"
    );
    assert!(!out.contains("wrote-top"), "{out}");
}

/// A seccomp agent as the runtime spec describes one: it listens on
/// `listenerPath`, receives the container process state with the notify
/// descriptor, and answers every notification with "continue" (counting them).
fn seccomp_agent(
    listener: std::os::unix::net::UnixListener,
) -> std::thread::JoinHandle<(Value, usize)> {
    use std::os::fd::AsRawFd;
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let conn = std::os::fd::OwnedFd::from(conn);
        let mut buf = vec![0u8; 64 * 1024];
        let (n, fd) = berth_runtime::fdpass::recv_with_fd(&conn, &mut buf).unwrap();
        let state: Value = serde_json::from_slice(&buf[..n]).unwrap();
        let fd = fd.expect("the notify descriptor comes with the state");
        let mut answered = 0;
        loop {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one valid descriptor.
            if unsafe { libc::poll(&mut p, 1, 10_000) } <= 0 || p.revents & libc::POLLHUP != 0 {
                break;
            }
            // SAFETY: the notify ioctls with structs of the kernel's layout.
            unsafe {
                let mut req: libc::seccomp_notif = std::mem::zeroed();
                if libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) != 0 {
                    continue;
                }
                let resp = libc::seccomp_notif_resp {
                    id: req.id,
                    val: 0,
                    error: 0,
                    flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
                };
                libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp);
            }
            answered += 1;
        }
        (state, answered)
    })
}

/// `SCMP_ACT_NOTIFY` with `listenerPath`/`listenerMetadata`: the agent gets
/// the container's state and the listener before the process runs, and the
/// notified syscall waits for its answer (youki's contest: seccomp_notify).
#[test]
fn seccomp_notify_reaches_the_agent() {
    let b = Bundle::new(&["sh", "-c", "cd /etc && pwd"]);
    let sock = b.dir.path().join("agent.sock");
    let agent = seccomp_agent(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    b.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock,
            "listenerMetadata": "hello agent",
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_NOTIFY"}]
        });
    });
    ok(&b.rt_detached(&["create", "-b", b.bundle().to_str().unwrap(), &b.id]));
    let st: Value = serde_json::from_str(&ok(&b.rt(&["state", &b.id]))).unwrap();
    ok(&b.rt(&["start", &b.id]));
    wait_status(&b, "stopped");
    let (msg, answered) = agent.join().unwrap();
    assert_eq!(msg["fds"], json!(["seccompFd"]));
    assert_eq!(msg["metadata"], "hello agent");
    assert_eq!(msg["pid"], st["pid"], "{msg}");
    assert_eq!(msg["state"]["id"], b.id.as_str());
    assert_eq!(msg["state"]["pid"], st["pid"]);
    assert!(answered >= 1, "busybox pwd calls getcwd: {answered}");
    let log = std::fs::read_to_string(b.dir.path().join("detached.log")).unwrap();
    assert!(
        log.contains("/etc"),
        "pwd went on after the agent's answer: {log}"
    );

    // Without a listenerPath the profile is refused, naming what is missing.
    let b = Bundle::new(&["true"]);
    b.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_NOTIFY"}]
        });
    });
    let (code, _, err) = b.run();
    assert_ne!(code, 0);
    assert!(err.contains("SCMP_ACT_NOTIFY needs listenerPath"), "{err}");
}

/// process.user: uid, gid, additionalGids (a repeated group is kept once, as
/// runc does; youki's contest checks that) and umask, as seen inside.
#[test]
fn user_groups_and_umask() {
    let b = Bundle::new(&["sh", "-c", "id -u; id -g; id -G; umask"]);
    b.edit(|c| {
        c["process"]["user"] = json!({
            "uid": 10, "gid": 10, "additionalGids": [300, 200, 300, 10], "umask": 2
        });
    });
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "10");
    assert_eq!(lines[1], "10");
    let mut groups: Vec<&str> = lines[2].split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, ["10", "200", "300"], "{out}");
    assert_eq!(lines[3], "0002");
}

/// process.oomScoreAdj: set when allowed; a lower score than ours needs
/// CAP_SYS_RESOURCE, and without it (this project's machines, containers,
/// CI runners) the container starts with the current score instead of
/// failing — Kubernetes asks -998 for every pod sandbox, and runc fails them
/// all on such a machine.
#[test]
fn oom_score_adj_is_set_or_kept_when_it_may_not_be_lowered() {
    let ours: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for want in [ours + 100, -998] {
        let b = Bundle::new(&["cat", "/proc/self/oom_score_adj"]);
        b.edit(|c| c["process"]["oomScoreAdj"] = json!(want));
        let (code, out, err) = b.run();
        assert_eq!(code, 0, "oomScoreAdj {want}: {out}{err}");
        let got: i32 = out.trim().parse().unwrap();
        let may_lower = caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_RESOURCE,
        )
        .unwrap_or(false);
        if want >= ours || may_lower {
            assert_eq!(got, want);
        } else {
            assert!(got > want && got <= ours + 1000, "kept {got}, asked {want}");
        }
    }
}

/// Mount points of this (the host's) mount namespace under `dir`.
fn host_mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|mp| mp.starts_with(&prefix))
        .collect()
}

/// A container with no namespaces at all (youki's contest: ns_itype): it
/// shares every namespace of the host and its root is a chroot (pivot_root
/// would move the host's root). Its mounts can only be in the host's table:
/// they sit under a private view of the rootfs in the runtime's state
/// directory (never in the bundle, where runc puts them) and are gone after
/// delete (runc leaves them behind) and after a create that fails. A read-only
/// root and masked paths apply to that view, not to the host's filesystem.
#[test]
fn no_namespaces_shares_the_host_and_cleans_up_its_mounts() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "test -e /bin/busybox && echo chrooted; touch /x 2>/dev/null || echo ro-root; \
         wc -c < /proc/meminfo; sleep 30",
    ]);
    b.edit(|c| {
        c["linux"]["namespaces"] = json!([]);
        c["linux"]["maskedPaths"] = json!(["/proc/meminfo"]);
        c["linux"]["readonlyPaths"] = json!([]);
        c["root"]["readonly"] = json!(true);
        c.as_object_mut().unwrap().remove("hostname");
    });
    let rootfs = b.bundle().join("rootfs");
    let view = b.root().join(&b.id).join("rootfs");
    ok(&b.rt_detached(&["create", "-b", b.bundle().to_str().unwrap(), &b.id]));
    let st: Value = serde_json::from_str(&ok(&b.rt(&["state", &b.id]))).unwrap();
    let pid = st["pid"].as_i64().unwrap();
    for ns in ["mnt", "pid", "net", "uts", "ipc", "user", "cgroup"] {
        assert_eq!(
            std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap(),
            std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap(),
            "{ns} namespace is the host's"
        );
    }
    let mounts = host_mounts_under(&view);
    assert!(
        mounts.iter().any(|m| m.ends_with("/rootfs/proc")),
        "the container's mounts are under its view: {mounts:?}"
    );
    assert_eq!(
        host_mounts_under(&rootfs),
        Vec::<String>::new(),
        "none in the bundle"
    );
    ok(&b.rt(&["start", &b.id]));
    let log = b.dir.path().join("detached.log");
    for _ in 0..100 {
        if std::fs::read_to_string(&log).unwrap().lines().count() >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["chrooted", "ro-root", "0"],
        "{out}"
    );
    assert!(rootfs.join("bin/busybox").exists());
    ok(&b.rt(&["delete", "--force", &b.id]));
    assert_eq!(
        host_mounts_under(&view),
        Vec::<String>::new(),
        "delete unmounts"
    );
    assert!(
        rootfs.join("bin/busybox").exists(),
        "the rootfs is untouched"
    );
    assert!(!b.root().join(&b.id).exists());

    // A create that fails after mounting leaves nothing either.
    b.edit(|c| c["process"]["args"] = json!(["/no/such/binary"]));
    let o = b.rt_detached(&["create", "-b", b.bundle().to_str().unwrap(), &b.id]);
    assert!(!o.status.success());
    assert_eq!(host_mounts_under(&b.root()), Vec::<String>::new());
    assert!(!b.root().join(&b.id).exists(), "no state left");
    assert!(
        rootfs.join("bin/busybox").exists(),
        "the rootfs is untouched"
    );
}

/// process.scheduler (sched_setattr) and process.ioPriority (ioprio_set),
/// read back inside: /proc/self/stat's nice (19th field) and policy (41st),
/// and busybox's ionice (youki's contest: set_scheduler_policy,
/// set_io_priority; runc 1.1 ignores both).
#[test]
fn scheduler_and_io_priority() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "cut -d' ' -f19,41 /proc/self/stat; ionice -p $$",
    ]);
    b.edit(|c| {
        c["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5});
        c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
    });
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "5 3", "nice 5, SCHED_BATCH (3): {out}");
    assert_eq!(lines[1], "best-effort: prio 6", "{out}");

    // A value the kernel refuses names the field.
    b.edit(|c| {
        c["process"]["scheduler"] = json!({"policy": "SCHED_FIFO", "priority": 1000});
    });
    let (code, _, err) = b.run();
    assert_eq!(code, 1);
    assert!(
        err.contains("process.scheduler: sched_setattr(SchedFifo)"),
        "{err}"
    );
}

#[test]
fn seccomp_profiles_are_enforced() {
    let b = Bundle::new(&["sh", "-c", "mkdir /x 2>&1; echo done"]);
    b.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
    });
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Operation not permitted"), "{out}");
    // Docker's default profile: the container runs, unshare is refused.
    let b = Bundle::new(&[
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; unshare -n true 2>/dev/null && echo UNSHARED || echo unshare-denied",
    ]);
    let caps: Vec<String> = ["CAP_CHOWN", "CAP_KILL", "CAP_SETUID", "CAP_SETGID"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let profile = berth_spec::seccomp::docker_default(&caps);
    b.edit(|c| c["linux"]["seccomp"] = profile);
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Seccomp:\t2"), "filter mode: {out}");
    assert!(out.contains("unshare-denied"), "{out}");
}

#[test]
fn terminal_through_run() {
    let b = Bundle::new(&["sh", "-c", "tty; test -t 0 && echo is-a-tty"]);
    b.edit(|c| c["process"]["terminal"] = json!(true));
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("is-a-tty"));
}

#[test]
fn bad_configs_fail_cleanly() {
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|c: &mut Value| c["process"]["args"] = json!([])),
            "process.args",
        ),
        (
            Box::new(|c: &mut Value| c["root"]["path"] = json!("missing-rootfs")),
            "root.path",
        ),
        (
            Box::new(|c: &mut Value| c["linux"]["namespaces"] = json!([{"type": "bogus"}])),
            "bogus",
        ),
        (
            Box::new(|c: &mut Value| {
                c.as_object_mut().unwrap().remove("ociVersion");
            }),
            "ociVersion",
        ),
    ];
    for (edit, needle) in cases {
        let b = Bundle::new(&["true"]);
        b.edit(edit);
        let (code, _, err) = b.run();
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(needle), "error names {needle:?}: {err}");
        assert!(!b.root().join(&b.id).exists(), "no state left");
        assert!(
            !Path::new(&format!("/sys/fs/cgroup/memory/berth/{}", b.id)).exists(),
            "no cgroup left"
        );
    }
    let b = Bundle::new(&["true"]);
    std::fs::write(b.bundle().join("config.json"), "{ not json").unwrap();
    let (code, _, err) = b.run();
    assert_eq!(code, 1);
    assert!(err.contains("config.json"), "{err}");
}

/// podman with `--runtime berth-runtime` on a private vfs store: podman and
/// conmon drive berth-runtime through runc's CLI (create with --pid-file and
/// --console-socket, start, state, exec, kill, delete, pause, resume), with
/// podman's own spec (which only denies devices and leaves the defaults to
/// the runtime, as runc does).
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("berth-podman-")
            .tempdir()
            .unwrap();
        // This machine's quirks: no CAP_SYS_RESOURCE (no default ulimits),
        // cgroup v1 without systemd as the manager.
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        Podman { dir }
    }

    fn cmd(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "vfs", "--runtime", runtime_bin()])
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .stdin(Stdio::null())
            .output()
            .expect("podman")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Never a panic here: one during a failed test's unwinding would
        // abort the whole test binary.
        let d = self.dir.path();
        let _ = Command::new("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "vfs", "--runtime", runtime_bin()])
            .args(["rm", "-af", "-t", "0"])
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .stdin(Stdio::null())
            .output();
    }
}

#[test]
fn podman_runs_containers_through_berth_runtime() {
    if !common::have("podman", "podman") {
        return;
    }
    let p = Podman::new();
    ok(&p.cmd(&[
        "import",
        "-q",
        busybox_tar().to_str().unwrap(),
        "localhost/bb",
    ]));
    let out = ok(&p.cmd(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/bb",
        "echo",
        "hello from podman",
    ]));
    assert_eq!(out, "hello from podman\n");
    let o = p.cmd(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/bb",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "exit codes propagate");
    let out = ok(&p.cmd(&[
        "run",
        "--rm",
        "-t",
        "--network",
        "none",
        "localhost/bb",
        "tty",
    ]));
    assert!(
        out.contains("/dev/pts/0"),
        "a terminal through --console-socket: {out:?}"
    );
    // Detached, with a memory limit, exec, pause/unpause, stop.
    ok(&p.cmd(&[
        "run",
        "-d",
        "--name",
        "pd",
        "--network",
        "none",
        "-m",
        "64m",
        "--pids-limit",
        "42",
        "localhost/bb",
        "sleep",
        "600",
    ]));
    assert_eq!(ok(&p.cmd(&["exec", "pd", "echo", "exec ok"])), "exec ok\n");
    let limit = ok(&p.cmd(&[
        "exec",
        "pd",
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]));
    assert_eq!(limit.trim(), "67108864", "the limit podman asked for");
    let pids = ok(&p.cmd(&["exec", "pd", "cat", "/sys/fs/cgroup/pids/pids.max"]));
    assert_eq!(pids.trim(), "42", "--pids-limit reaches the cgroup");
    // podman update hands the new resources to `berth-runtime update
    // --resources FILE`, runc's interface.
    ok(&p.cmd(&["update", "--memory", "96m", "--cpu-shares", "256", "pd"]));
    let now = ok(&p.cmd(&[
        "exec",
        "pd",
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/cpu/cpu.shares",
    ]));
    assert_eq!(now, "100663296\n256\n", "podman update reaches the cgroup");
    ok(&p.cmd(&["pause", "pd"]));
    let st = ok(&p.cmd(&["inspect", "-f", "{{.State.Status}}", "pd"]));
    assert_eq!(st.trim(), "paused");
    ok(&p.cmd(&["unpause", "pd"]));
    ok(&p.cmd(&["stop", "-t", "1", "pd"]));
    let st = ok(&p.cmd(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        "pd",
    ]));
    assert_eq!(
        st.trim(),
        "exited 137",
        "SIGKILL after the timeout, as with runc"
    );
    ok(&p.cmd(&["rm", "pd"]));
}

/// A private containerd (its own root, state and socket), killed on drop.
struct Containerd {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("berth-containerd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("config.toml"),
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{0}/containerd.sock\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_cgroup = true\n",
                d.display()
            ),
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("log")).unwrap())
            .spawn()
            .expect("containerd");
        let c = Containerd { dir, child };
        for _ in 0..100 {
            if c.ctr(&["version"]).status.success() {
                return c;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("containerd did not start");
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.dir.path().join("containerd.sock"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ctr")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", "cd1"]);
        let _ = self.ctr(&["containers", "rm", "cd1"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
        // containerd's snapshotter and task state leave mounts under its root.
        let root = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| m.starts_with(&root))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let c = std::ffi::CString::new(m).unwrap();
            // SAFETY: unmounting this test's own mounts.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[test]
fn containerd_runs_containers_through_berth_runtime() {
    if !common::have("containerd", "containerd") || !common::have("ctr", "containerd") {
        return;
    }
    let c = Containerd::start();
    // An image in containerd's store: berth's own docker-archive of busybox.
    let b = common::Berth::new();
    b.import_busybox("bb");
    let tar = b.path("bb.tar");
    b.run(&["save", "-o", tar.to_str().unwrap(), "bb"]).ok();
    ok(&c.ctr(&[
        "images",
        "import",
        "--base-name",
        "docker.io/library/bb",
        tar.to_str().unwrap(),
    ]));
    let img = "docker.io/library/bb:latest";
    let rt = runtime_bin();
    let out = ok(&c.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        rt,
        img,
        "cd0",
        "echo",
        "hello from containerd",
    ]));
    assert_eq!(out, "hello from containerd\n");
    let o = c.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        rt,
        img,
        "cd2",
        "sh",
        "-c",
        "exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "exit codes propagate");
    // A detached task: exec into it, then kill it.
    ok(&c.ctr(&["run", "-d", "--runc-binary", rt, img, "cd1", "sleep", "600"]));
    // ctr closes its end of the exec's FIFOs when the exit event arrives,
    // which under load can come before it copied the output (the exit
    // code was 0 and the output empty, once in a loaded full run): an
    // empty answer is asked again, a wrong one fails.
    let mut out = String::new();
    for i in 1..=3 {
        let id = format!("e{i}");
        out = ok(&c.ctr(&["tasks", "exec", "--exec-id", &id, "cd1", "echo", "exec ok"]));
        if !out.is_empty() {
            break;
        }
    }
    assert_eq!(out, "exec ok\n");
    let ps = ok(&c.ctr(&["tasks", "ls"]));
    assert!(ps.contains("cd1") && ps.contains("RUNNING"), "{ps}");
    ok(&c.ctr(&["tasks", "kill", "-s", "SIGKILL", "cd1"]));
    for _ in 0..100 {
        if ok(&c.ctr(&["tasks", "ls"])).contains("STOPPED") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ok(&c.ctr(&["tasks", "ls"])).contains("STOPPED"));
    ok(&c.ctr(&["tasks", "rm", "cd1"]));
    ok(&c.ctr(&["containers", "rm", "cd1"]));
}

/// The probe found `process.apparmorProfile` and `linux.mountLabel` silently
/// ignored: on an AppArmor host a requested profile went unapplied. Now
/// each is applied where its LSM is enabled and refused where it is not,
/// as runc refuses it (runc's behaviour is the reference), with no state
/// left behind.
#[test]
fn requested_lsm_confinement_is_applied_or_refused() {
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'));
    let selinux =
        std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|s| s.contains(" selinuxfs "));
    let b = Bundle::new(&["cat", "/proc/self/attr/current"]);
    b.edit(|c| c["process"]["apparmorProfile"] = json!("unconfined"));
    let (code, out, err) = b.run();
    if apparmor {
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("unconfined"), "{out}");
    } else {
        assert_ne!(code, 0);
        assert!(err.contains("AppArmor is not enabled"), "{err}");
        assert!(!b.root().join(&b.id).exists(), "no state left");
    }
    for key in ["mountLabel", "selinuxLabel"] {
        let b = Bundle::new(&["true"]);
        b.edit(|c| {
            let l = json!("system_u:object_r:container_file_t:s0:c1,c2");
            if key == "mountLabel" {
                c["linux"]["mountLabel"] = l;
            } else {
                c["process"]["selinuxLabel"] = l;
            }
        });
        let (code, _, err) = b.run();
        if selinux {
            eprintln!("SELinux is enabled here: {key} applied, rc {code}");
        } else {
            assert_ne!(code, 0, "{key}");
            assert!(
                err.contains("selinux label is specified in config, but selinux is disabled"),
                "{key}: {err}"
            );
        }
    }
    if !apparmor {
        eprintln!(
            "skipped: AppArmor is not enabled on this host; a profile is applied where it is"
        );
    }
}

/// runc's own default bundle (`runc spec`) asks for ambient capabilities
/// that are in neither the inheritable nor (all of them) the permitted set;
/// runc warns and runs it (runc's behaviour is the reference), berth-runtime
/// failed with "PR_CAP_AMBIENT_RAISE failure".
#[test]
fn ambient_capabilities_outside_the_inheritable_set_are_a_warning() {
    let b = Bundle::new(&["sh", "-c", "grep CapAmb /proc/self/status"]);
    b.edit(|c| {
        let caps = &mut c["process"]["capabilities"];
        caps["ambient"] = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        caps.as_object_mut().unwrap().remove("inheritable");
    });
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("CapAmb:\t0000000000000000"), "{out}");
    assert!(err.contains("ambient capabilities"), "{err}");
}

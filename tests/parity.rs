//! End to end: docker parity items found by a side-by-side run against
//! dockerd (issue: docker parity); each test states docker's behaviour as
//! the reference.

mod common;

use common::{Berth, echo_through};

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

/// What a reboot does to a berth root, done by hand: every process of it
/// killed (monitors, probers, containers), its mounts gone, its cgroups
/// gone, the network namespace's links and nftables rules gone. The files
/// on disk stay, as they do across a reboot.
fn simulate_reboot(b: &Berth) {
    let root = b.root();
    let root_s = root.to_str().unwrap().to_string();
    let ids: Vec<String> = b
        .run(&["ps", "-aq", "--no-trunc"])
        .ok()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut pids: Vec<i32> = Vec::new();
    for id in &ids {
        let p = b
            .run(&["inspect", "--format", "{{.State.Pid}}", id])
            .ok()
            .trim()
            .parse()
            .unwrap_or(0);
        if p > 0 {
            pids.push(p);
        }
    }
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&root_s) {
                pids.push(pid);
            }
        }
    }
    for p in &pids {
        // SAFETY: this test's own monitors and containers.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&root_s))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let c = std::ffi::CString::new(m).unwrap();
        // SAFETY: unmounting this test's own mounts.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    for ctl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let mut dirs: Vec<std::path::PathBuf> = Vec::new();
        let mut stack = vec![ctl.path()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if ids.iter().any(|id| name.contains(id.as_str())) {
                        dirs.push(e.path());
                    } else if stack.len() < 64 && e.path().components().count() < 8 {
                        stack.push(e.path());
                    }
                }
            }
        }
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
    let ns = b.netns.as_ref().unwrap();
    ns.sh("for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do [ \"$l\" = lo ] || ip link del \"$l\" 2>/dev/null; done; nft flush ruleset 2>/dev/null; true");
}

/// docker: when dockerd starts at boot it starts again the containers whose
/// policy says so — `always` (even one stopped by hand), `unless-stopped`
/// (unless stopped by hand), `on-failure` after a failure (a reboot is
/// one) — and removes `--rm` ones; the others stay exited. `berth system
/// restore` (run at boot by contrib/systemd/berth-restore.service) does the
/// same, once: running it again changes nothing.
#[test]
fn system_restore_brings_back_what_a_reboot_stopped() {
    let b = Berth::with_netns();
    b.import_busybox("busybox");
    let run = |args: &[&str]| {
        let mut a = vec!["run", "-d"];
        a.extend_from_slice(args);
        b.run(&a).ok();
    };
    run(&[
        "--name",
        "web",
        "--restart",
        "always",
        "-p",
        "18081:80",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /www && echo back again > /www/index.html && httpd -f -p 80 -h /www",
    ]);
    run(&[
        "--name",
        "us",
        "--restart",
        "unless-stopped",
        "busybox",
        "sleep",
        "300",
    ]);
    run(&[
        "--name",
        "us-stopped",
        "--restart",
        "unless-stopped",
        "busybox",
        "sleep",
        "300",
    ]);
    run(&[
        "--name",
        "al-stopped",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "300",
    ]);
    run(&[
        "--name",
        "onfail",
        "--restart",
        "on-failure",
        "busybox",
        "sleep",
        "300",
    ]);
    run(&[
        "--name",
        "onfail-ok",
        "--restart",
        "on-failure",
        "busybox",
        "true",
    ]);
    run(&["--name", "plain", "busybox", "sleep", "300"]);
    run(&["--name", "gone", "--rm", "busybox", "sleep", "300"]);
    b.run(&["stop", "-t", "1", "us-stopped", "al-stopped"]).ok();
    b.run(&["wait", "onfail-ok"]).ok();

    simulate_reboot(&b);
    let status = |n: &str| {
        b.run(&["inspect", "--format", "{{.State.Status}}", n])
            .ok()
            .trim()
            .to_string()
    };
    for n in ["web", "us", "onfail", "plain"] {
        assert_eq!(status(n), "exited", "{n} after the reboot");
    }

    let out = b.run(&["system", "restore"]).ok();
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "removed gone",
            "started al-stopped",
            "started onfail",
            "started us",
            "started web"
        ],
        "{out}"
    );
    for n in ["web", "us", "al-stopped", "onfail"] {
        assert_eq!(status(n), "running", "{n}");
    }
    for n in ["us-stopped", "onfail-ok", "plain"] {
        assert_eq!(status(n), "exited", "{n}");
    }
    assert_ne!(
        b.run(&["inspect", "gone"]).code(),
        0,
        "--rm container removed"
    );
    // The network came back with it: the published port answers again.
    let ns = b.netns.as_ref().unwrap();
    let mut page = String::new();
    for _ in 0..50 {
        let (ok, p) = ns.sh("busybox wget -qO- http://127.0.0.1:18081/ 2>&1");
        page = p;
        if ok {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(page.trim(), "back again");
    // Once: nothing more to do.
    assert_eq!(b.run(&["system", "restore"]).ok(), "");
}

/// docker's `version`, `info` and `events` (with `system info` and `system
/// events` as aliases): the table texts docker prints, `--format`
/// templates over the same documents as the Engine API's, and events from
/// the journal with `--since/--until/--filter`.
#[test]
fn version_info_and_events() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let out = b.run(&["version"]).ok();
    assert!(out.starts_with("Client:\n Version:"), "{out}");
    assert!(out.contains("\nServer: berth\n Engine:\n"), "{out}");
    let v = b
        .run(&["version", "--format", "{{.Server.ApiVersion}}"])
        .ok();
    assert_eq!(v.trim(), "1.47");
    let j: serde_json::Value =
        serde_json::from_str(&b.run(&["version", "--format", "json"]).ok()).unwrap();
    assert_eq!(j["Client"]["Version"], j["Server"]["Version"]);

    b.run(&["run", "-d", "--name", "up", "busybox", "sleep", "300"])
        .ok();
    b.run(&["create", "--name", "made", "busybox", "true"]).ok();
    let out = b.run(&["info"]).ok();
    for want in [
        " Containers: 2\n  Running: 1\n  Paused: 0\n  Stopped: 1\n",
        " Images: 1\n",
        " Logging Driver: json-file\n",
        &format!(" Docker Root Dir: {}\n", b.root().display()),
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    let n = b
        .run(&[
            "system",
            "info",
            "--format",
            "{{.ContainersRunning}}/{{.Images}}",
        ])
        .ok();
    assert_eq!(n.trim(), "1/1");

    b.run(&["rm", "-f", "up"]).ok();
    let out = b.run(&["events", "--since", "5m", "--until", "0s"]).ok();
    let lines: Vec<&str> = out.lines().collect();
    // `2026-01-02T03:04:05.123456789Z container create ID (image=busybox, name=up)`
    let create = lines
        .iter()
        .find(|l| l.contains(" container create ") && l.ends_with("name=up)"))
        .unwrap_or_else(|| panic!("no create event:\n{out}"));
    let (time, rest) = create.split_once(' ').unwrap();
    assert!(
        time.len() == 30 && time.ends_with('Z') || time.len() == 35,
        "RFC3339NanoFixed: {time}"
    );
    assert!(rest.contains("(image=busybox, name=up)"), "{rest}");
    let order: Vec<&str> = lines
        .iter()
        .filter(|l| l.ends_with("name=up)") || l.contains("name=up,"))
        .map(|l| l.split(' ').nth(2).unwrap())
        .collect();
    assert_eq!(
        order,
        ["create", "start", "kill", "die", "destroy"],
        "{out}"
    );
    let out = b
        .run(&[
            "system",
            "events",
            "--since",
            "5m",
            "--until",
            "0s",
            "--filter",
            "container=made",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
        ])
        .ok();
    assert_eq!(out, "container create made\n");
    let err = b
        .run(&["events", "--since", "yesterday-ish", "--until", "0s"])
        .fails(1);
    assert!(err.contains("--since"), "{err}");
}

/// docker: `logs --since` takes dates and times without a zone (the local
/// one); `load -q` still names what it loaded.
#[test]
fn logs_since_dates_and_quiet_load() {
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&["run", "--name", "lg", "busybox", "echo", "logged"])
        .ok();
    assert_eq!(
        b.run(&["logs", "--since", "2020-01-01", "lg"]).ok(),
        "logged\n"
    );
    assert_eq!(
        b.run(&["logs", "--since", "2020-01-01T00:00:00", "lg"])
            .ok(),
        "logged\n"
    );
    assert_eq!(b.run(&["logs", "--since", "2999-01-01", "lg"]).ok(), "");
    let tar = b.path("bb.tar");
    b.run(&["save", "-o", tar.to_str().unwrap(), "busybox"])
        .ok();
    let out = b.run(&["load", "-q", "-i", tar.to_str().unwrap()]).ok();
    assert_eq!(out, "Loaded image: busybox:latest\n");
}

/// The paths of the top layer of `image`, from `berth save`.
fn top_layer_paths(b: &Berth, image: &str) -> Vec<String> {
    let dir = b.path(&format!("saved-{}", image.replace([':', '/'], "-")));
    std::fs::create_dir_all(&dir).unwrap();
    let tar = dir.join("image.tar");
    b.run(&["save", "-o", tar.to_str().unwrap(), image]).ok();
    let st = std::process::Command::new("tar")
        .args(["-xf", tar.to_str().unwrap(), "-C", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let layers = m[0]["Layers"].as_array().unwrap();
    let top = dir.join(layers.last().unwrap().as_str().unwrap());
    let out = std::process::Command::new("tar")
        .args(["-tf", top.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

/// docker: `diff` leaves out the mount points the runtime made (dockerd
/// keeps /etc/hosts, /etc/hostname, /etc/resolv.conf, /proc, /sys and /dev
/// in an init layer under the container's own), so a container that
/// changed nothing shows nothing, even on an image with no /etc; `commit`
/// does not carry them; and a RUN step's layer holds only what the step
/// wrote (BuildKit removes its mount stubs).
#[test]
fn diff_commit_and_run_steps_leave_out_mount_points() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let ctx = b.path("bare");
    std::fs::create_dir_all(&ctx).unwrap();
    // An image of nothing but /bin: no /etc, /proc, /sys or /dev.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox AS src\nFROM scratch\nCOPY --from=src /bin /bin\n",
    )
    .unwrap();
    b.run(&["build", "-q", "-t", "bare", ctx.to_str().unwrap()])
        .ok();
    for image in ["busybox", "bare"] {
        let name = format!("still-{image}");
        b.run(&["run", "--name", &name, image, "true"]).ok();
        assert_eq!(b.run(&["diff", &name]).ok(), "", "{image}");
    }

    b.run(&[
        "run",
        "--name",
        "wrote",
        "bare",
        "sh",
        "-c",
        "echo x > /etc/mine && mkdir /data",
    ])
    .ok();
    let diff = b.run(&["diff", "wrote"]).ok();
    let lines: Vec<&str> = diff.lines().collect();
    assert!(lines.contains(&"A /etc/mine"), "{diff}");
    assert!(lines.contains(&"A /data"), "{diff}");
    for hidden in ["hosts", "hostname", "resolv.conf", "/proc", "/sys", "/dev"] {
        assert!(!diff.contains(hidden), "{hidden}: {diff}");
    }
    b.run(&["commit", "wrote", "wrote-img"]).ok();
    let mut paths = top_layer_paths(&b, "wrote-img");
    paths.sort();
    assert_eq!(paths, ["data", "etc", "etc/mine"]);
    assert_eq!(
        b.run(&["run", "--rm", "wrote-img", "cat", "/etc/mine"])
            .ok(),
        "x\n"
    );

    std::fs::write(ctx.join("Dockerfile"), "FROM bare\nRUN echo hi > /hi\n").unwrap();
    b.run(&["build", "-q", "-t", "bare-run", ctx.to_str().unwrap()])
        .ok();
    assert_eq!(top_layer_paths(&b, "bare-run"), ["hi"]);
}

/// docker: a detached exec's process is reaped when it exits (the shim
/// waits for it), even in a container whose PID 1 reaps nothing (`sleep`):
/// no zombie is left in the container. A program that is not there fails
/// the exec with 127 and docker's words.
#[test]
fn exec_detached_leaves_no_zombie() {
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&["run", "-d", "--name", "reaper", "busybox", "sleep", "1000"])
        .ok();
    for _ in 0..5 {
        b.run(&["exec", "-d", "reaper", "sleep", "0.1"]).ok();
    }
    b.run(&[
        "exec",
        "-d",
        "-t",
        "reaper",
        "sh",
        "-c",
        "echo out; sleep 0.1",
    ])
    .ok();
    let stats = || {
        b.run(&[
            "exec",
            "reaper",
            "sh",
            "-c",
            "cat /proc/[0-9]*/stat 2>/dev/null; true",
        ])
        .ok()
    };
    let mut left = String::new();
    for _ in 0..100 {
        left = stats();
        if left.matches("(sleep)").count() == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(left.matches("(sleep)").count(), 1, "{left}");
    assert!(!left.contains(") Z "), "a zombie: {left}");
    let err = b.run(&["exec", "-d", "reaper", "nope"]).fails(127);
    assert!(
        err.contains("exec: \"nope\": executable file not found in $PATH"),
        "{err}"
    );
    b.run(&["rm", "-f", "reaper"]).ok();
}

/// docker: `update` changes a running container's limits in its cgroup
/// (memory, CPUs, pids) and its restart policy, records them (inspect; a
/// later start keeps them), prints each container it updated, and refuses
/// what dockerd refuses ("Minimum memory limit allowed is 6MB", a restart
/// policy for an `--rm` container, no flag at all) with exit 1.
#[test]
fn update_changes_a_running_containers_limits() {
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&["run", "-d", "--name", "upd", "busybox", "sleep", "1000"])
        .ok();
    let out = b
        .run(&[
            "update",
            "--memory",
            "64m",
            "--memory-swap",
            "128m",
            "--cpus",
            "0.5",
            "--cpu-shares",
            "512",
            "--pids-limit",
            "50",
            "--restart",
            "on-failure:3",
            "upd",
        ])
        .ok();
    assert_eq!(out, "upd\n");
    let cgroup = |b: &Berth| {
        b.run(&[
            "exec",
            "upd",
            "cat",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/pids/pids.max",
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
            "/sys/fs/cgroup/cpu/cpu.shares",
        ])
        .ok()
    };
    assert_eq!(cgroup(&b), "67108864\n50\n50000\n512\n");
    let recorded = "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}} \
                    {{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}}:\
                    {{.HostConfig.RestartPolicy.MaximumRetryCount}}";
    let want = "67108864 134217728 500000000 50 on-failure:3";
    assert_eq!(b.run(&["inspect", "-f", recorded, "upd"]).ok().trim(), want);
    // A restart starts it with the new limits.
    b.run(&["restart", "-t", "0", "upd"]).ok();
    assert_eq!(cgroup(&b), "67108864\n50\n50000\n512\n");

    let err = b.run(&["update", "--memory", "1m", "upd"]).fails(1);
    assert!(err.contains("Minimum memory limit allowed is 6MB"), "{err}");
    let err = b.run(&["update", "--memory", "256m", "upd"]).fails(1);
    assert!(
        err.contains("update the memoryswap at the same time"),
        "{err}"
    );
    let err = b.run(&["update", "upd"]).fails(1);
    assert!(err.contains("one or more flags"), "{err}");
    b.run(&[
        "run", "-d", "--rm", "--name", "upd-rm", "busybox", "sleep", "1000",
    ])
    .ok();
    let err = b
        .run(&["update", "--restart", "always", "upd-rm", "nope-x"])
        .fails(1);
    assert!(err.contains("AutoRemove is enabled"), "{err}");
    assert!(err.contains("No such container: nope-x"), "{err}");
    // Nothing changed by the refusals.
    assert_eq!(b.run(&["inspect", "-f", recorded, "upd"]).ok().trim(), want);
    b.run(&["rm", "-f", "upd", "upd-rm"]).ok();
}

/// docker's `cp` forms: `CONTAINER:SRC -` writes a tar to stdout, `-
/// CONTAINER:DIR` extracts one from stdin, `SRC/.` copies a directory's
/// contents, and a destination that must exist does not get made up (a
/// `DIR/` that is not there, a missing parent; docker refuses both).
#[test]
fn cp_dash_and_dot_forms() {
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&[
        "run",
        "-d",
        "--name",
        "cpf",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /d/sub && echo a > /d/a && echo b > /d/sub/b && sleep 1000",
    ])
    .ok();
    for _ in 0..100 {
        if b.run(&["exec", "cpf", "test", "-f", "/d/sub/b"]).code() == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A tar on stdout: one entry, the file under its base name.
    let out = b.run(&["cp", "cpf:/d/a", "-"]);
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let tar_path = b.path("a.tar");
    std::fs::write(&tar_path, &out.out.stdout).unwrap();
    let list = std::process::Command::new("tar")
        .args(["-tf", tar_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout), "a\n");
    // A tar from stdin into a directory.
    let from = b.path("from");
    std::fs::create_dir_all(&from).unwrap();
    std::fs::write(from.join("h"), "hi\n").unwrap();
    let tar = std::process::Command::new("tar")
        .args(["-cf", "-", "-C", from.to_str().unwrap(), "h"])
        .output()
        .unwrap();
    b.run_stdin(&["cp", "-", "cpf:/d/"], &tar.stdout).ok();
    assert_eq!(b.run(&["exec", "cpf", "cat", "/d/h"]).ok(), "hi\n");
    let err = b.run_stdin(&["cp", "-", "cpf:/d/a"], &tar.stdout).fails(1);
    assert!(err.contains("not a directory"), "{err}");
    // DIR/. : the contents, into an existing directory.
    let into = b.path("into");
    std::fs::create_dir_all(&into).unwrap();
    b.run(&["cp", "cpf:/d/.", into.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(into.join("sub/b")).unwrap(), "b\n");
    assert!(!into.join("d").exists());
    b.run(&["exec", "cpf", "mkdir", "/e"]).ok();
    b.run(&["cp", &format!("{}/.", from.display()), "cpf:/e"])
        .ok();
    assert_eq!(b.run(&["exec", "cpf", "cat", "/e/h"]).ok(), "hi\n");
    // Destinations that are not there.
    let f = from.join("h");
    let f = f.to_str().unwrap();
    let err = b.run(&["cp", f, "cpf:/nonexist/dir/"]).fails(1);
    assert!(err.contains("must exist"), "{err}");
    let err = b.run(&["cp", f, "cpf:/nonexist/f"]).fails(1);
    assert!(err.contains("Could not find the file /nonexist"), "{err}");
    assert_ne!(b.run(&["exec", "cpf", "test", "-e", "/nonexist"]).code(), 0);
    let missing = format!("{}/", b.path("missing").display());
    let err = b.run(&["cp", "cpf:/d/a", &missing]).fails(1);
    assert!(err.contains("must exist"), "{err}");
    b.run(&["rm", "-f", "cpf"]).ok();
}

/// docker's inspect of a container: HostConfig.Binds holds the `-v` binds
/// and named volumes as given, HostConfig.Tmpfs the `--tmpfs` mounts,
/// MemorySwap twice `-m`; `.Mounts` lists binds and volumes (not --tmpfs)
/// by destination with Mode, RW, Propagation and a volume's Driver; the
/// SELinux/AppArmor fields are there; a started container's exit code is 0.
#[test]
fn inspect_documents_what_docker_shows() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let src = b.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let bind = format!("{}:/src:ro", src.display());
    b.run(&[
        "run",
        "-d",
        "--name",
        "ins",
        "-m",
        "64m",
        "-v",
        &bind,
        "-v",
        "named1:/named",
        "-v",
        "/anon",
        "--tmpfs",
        "/tm:size=1m",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    let doc: serde_json::Value = serde_json::from_str(&b.run(&["inspect", "ins"]).ok()).unwrap();
    let d = &doc[0];
    let hc = &d["HostConfig"];
    assert_eq!(hc["Binds"], serde_json::json!([bind, "named1:/named"]));
    assert_eq!(hc["Tmpfs"], serde_json::json!({"/tm": "size=1m"}));
    assert_eq!(hc["Memory"], 64 << 20);
    assert_eq!(hc["MemorySwap"], 128 << 20);
    assert_eq!(hc["LogConfig"]["Type"], "json-file");
    let mounts = d["Mounts"].as_array().unwrap();
    let dests: Vec<&str> = mounts
        .iter()
        .map(|m| m["Destination"].as_str().unwrap())
        .collect();
    assert_eq!(dests, ["/anon", "/named", "/src"]);
    assert_eq!(mounts[1]["Driver"], "local");
    assert_eq!(mounts[1]["Mode"], "z");
    assert_eq!(mounts[2]["Mode"], "ro");
    assert_eq!(mounts[2]["RW"], false);
    assert_eq!(mounts[2]["Propagation"], "rprivate");
    for k in ["AppArmorProfile", "MountLabel", "ProcessLabel"] {
        assert_eq!(d[k], "", "{k}");
    }
    assert!(d.get("ExecIDs").is_some());

    // Exits 3 the first time, runs on the second.
    b.run(&[
        "run",
        "--name",
        "ins-exit",
        "busybox",
        "sh",
        "-c",
        "test -f /x && exec sleep 1000; touch /x; exit 3",
    ])
    .fails(3);
    b.run(&["start", "ins-exit"]).ok();
    let st = b
        .run(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.ExitCode}}",
            "ins-exit",
        ])
        .ok();
    assert_eq!(st.trim(), "true 0");
    b.run(&["rm", "-f", "ins", "ins-exit"]).ok();
}

/// docker's flags and words for everyday commands: `exec -w` into a
/// missing directory exits 126, `ps --format '{{.Label "k"}}'`, `ps -n`,
/// `ps -s`, `inspect --type` and `-s`, `run --cidfile` (refused when the
/// file exists), `commit --pause=false`, `logs --details`, `top` with ps
/// options, `volume rm` of a missing volume, `-v`, and shell completion.
#[test]
fn everyday_flags_as_docker() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let cid = b.path("cid");
    b.run(&[
        "run",
        "-d",
        "--name",
        "ev1",
        "-l",
        "app=web",
        "--cidfile",
        cid.to_str().unwrap(),
        "busybox",
        "sh",
        "-c",
        "echo hello; exec sleep 1000",
    ])
    .ok();
    let id = std::fs::read_to_string(&cid).unwrap();
    assert_eq!(id.len(), 64, "{id}");
    let err = b
        .run(&["run", "--cidfile", cid.to_str().unwrap(), "busybox", "true"])
        .fails(125);
    assert!(err.contains("Container ID file found"), "{err}");
    assert_eq!(std::fs::read_to_string(&cid).unwrap(), id);

    let err = b
        .run(&["exec", "-w", "/nonexist", "ev1", "true"])
        .fails(126);
    assert!(err.contains("chdir to cwd (\"/nonexist\")"), "{err}");
    assert_eq!(
        b.run(&["ps", "--format", "{{.Names}} {{.Label \"app\"}}"])
            .ok(),
        "ev1 web\n"
    );
    b.run(&["create", "--name", "ev2", "busybox", "true"]).ok();
    assert_eq!(
        b.run(&["ps", "-n", "1", "--format", "{{.Names}}"]).ok(),
        "ev2\n"
    );
    let sized = b.run(&["ps", "-s"]).ok();
    assert!(sized.lines().next().unwrap().ends_with("SIZE"), "{sized}");
    assert!(sized.contains("(virtual "), "{sized}");
    let s = b
        .run(&[
            "inspect",
            "-s",
            "-f",
            "{{.SizeRw}} {{gt .SizeRootFs 0}}",
            "ev1",
        ])
        .ok();
    assert!(s.trim().ends_with("true"), "{s}");
    b.run(&["volume", "create", "evvol"]).ok();
    assert_eq!(
        b.run(&["inspect", "--type", "volume", "-f", "{{.Name}}", "evvol"])
            .ok(),
        "evvol\n"
    );
    let err = b.run(&["inspect", "--type", "image", "ev1"]).fails(1);
    assert!(err.contains("No such image: ev1"), "{err}");
    b.run(&["commit", "--pause=false", "ev1", "ev1-img"]).ok();
    for _ in 0..100 {
        if b.run(&["logs", "ev1"]).ok() == "hello\n" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(b.run(&["logs", "--details", "ev1"]).ok(), " hello\n");
    let top = b.run(&["top", "ev1", "-o", "pid,comm"]).ok();
    assert!(top.starts_with("PID"), "{top}");
    assert!(top.contains("sleep"), "{top}");
    let err = b.run(&["volume", "rm", "nope-vol"]).fails(1);
    assert!(err.contains("get nope-vol: no such volume"), "{err}");
    assert!(b.run(&["-v"]).ok().starts_with("berth version "));
    let script = b.run(&["completion", "bash"]).ok();
    assert!(script.contains("_berth()"), "{script}");
    b.run(&["rm", "-f", "ev1", "ev2"]).ok();
}

/// docker's `volume ls --filter` (dangling, label, name, driver) and
/// `network ls --filter` (type, name, label, dangling), volume labels from
/// `volume create --label`, and docker's refusal of an unknown filter.
#[test]
fn volume_and_network_ls_filters() {
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&["volume", "create", "--label", "team=a", "fv-used"])
        .ok();
    b.run(&["volume", "create", "fv-free"]).ok();
    b.run(&[
        "create",
        "--name",
        "fv-c",
        "-v",
        "fv-used:/d",
        "busybox",
        "true",
    ])
    .ok();
    let ls = |args: &[&str]| {
        let mut a = vec!["volume", "ls", "-q"];
        a.extend_from_slice(args);
        b.run(&a).ok()
    };
    assert_eq!(ls(&["-f", "dangling=true"]), "fv-free\n");
    assert_eq!(ls(&["-f", "dangling=false"]), "fv-used\n");
    assert_eq!(ls(&["-f", "label=team=a"]), "fv-used\n");
    assert_eq!(ls(&["-f", "label=team"]), "fv-used\n");
    assert_eq!(ls(&["-f", "name=free"]), "fv-free\n");
    assert_eq!(
        ls(&["-f", "driver=local", "-f", "name=fv-"])
            .lines()
            .count(),
        2
    );
    let labels = b
        .run(&["volume", "inspect", "-f", "{{.Labels}}", "fv-used"])
        .ok();
    assert_eq!(labels, "map[team:a]\n");
    let err = b.run(&["volume", "ls", "-f", "bogus=1"]).fails(1);
    assert!(err.contains("Invalid filter 'bogus'"), "{err}");

    b.run(&["network", "create", "--label", "x=y", "fn-custom"])
        .ok();
    let nls = |args: &[&str]| {
        let mut a = vec!["network", "ls", "--format", "{{.Name}}"];
        a.extend_from_slice(args);
        b.run(&a).ok()
    };
    assert_eq!(nls(&["-f", "type=custom"]), "fn-custom\n");
    assert_eq!(nls(&["-f", "type=builtin"]), "bridge\nhost\nnone\n");
    assert_eq!(nls(&["-f", "label=x=y"]), "fn-custom\n");
    assert_eq!(nls(&["-f", "dangling=true"]), "fn-custom\n");
    assert_eq!(nls(&["-f", "name=fn-"]), "fn-custom\n");
    b.run(&["rm", "fv-c"]).ok();
}

/// docker's `attach`: the running container's output from now on (not
/// what it printed before), signals proxied to it (SIGTERM here, which it
/// traps), and the container's exit code as attach's own; a stopped
/// container is refused with docker's words.
#[test]
fn attach_follows_output_proxies_signals_and_exits_with_the_container() {
    use std::io::BufRead;
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&[
        "run",
        "-d",
        "--name",
        "att",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-term; exit 7' TERM; echo before; \
         while true; do if [ -e /go ]; then echo after; rm /go; fi; sleep 0.1; done",
    ])
    .ok();
    for _ in 0..100 {
        if b.run(&["logs", "att"]).ok() == "before\n" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut child = b
        .command(&["attach", "att"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Ready once it blocks SIGTERM (it took its place in the log before).
    let status = format!("/proc/{}/status", child.id());
    for _ in 0..200 {
        let blocked = std::fs::read_to_string(&status)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("SigBlk:"))
                    .and_then(|l| u64::from_str_radix(l[7..].trim(), 16).ok())
            })
            .unwrap_or(0);
        if blocked & (1 << (libc::SIGTERM - 1)) != 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    b.run(&["exec", "att", "touch", "/go"]).ok();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first, "after\n");
    // SAFETY: a signal to the attach we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(child.wait().unwrap().code(), Some(7));
    let err = b.run(&["attach", "att"]).fails(1);
    assert!(
        err.contains("You cannot attach to a stopped container"),
        "{err}"
    );
    b.run(&["rm", "att"]).ok();
}

/// docker's `system df --format` (one row per kind: Type, TotalCount,
/// Active, Size, Reclaimable) and `system df -v` (a section per kind with
/// docker's columns).
#[test]
fn system_df_format_and_verbose() {
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&["volume", "create", "dfvol"]).ok();
    b.run(&[
        "create", "--name", "dfc", "-v", "dfvol:/d", "busybox", "true",
    ])
    .ok();
    let rows = b
        .run(&[
            "system",
            "df",
            "--format",
            "{{.Type}}={{.TotalCount}}/{{.Active}}",
        ])
        .ok();
    assert_eq!(
        rows,
        "Images=1/1\nContainers=1/0\nLocal Volumes=1/1\nBuild Cache=0/0\n"
    );
    let v = b.run(&["system", "df", "-v"]).ok();
    for want in [
        "Images space usage:",
        "REPOSITORY   TAG       IMAGE ID",
        "SHARED SIZE   UNIQUE SIZE   CONTAINERS",
        "Containers space usage:",
        "LOCAL VOLUMES",
        "Local Volumes space usage:",
        "VOLUME NAME   LINKS     SIZE",
        "Build cache usage: 0B",
    ] {
        assert!(v.contains(want), "{want}: {v}");
    }
    assert!(
        v.lines()
            .any(|l| l.starts_with("dfvol") && l.contains(" 1 ")),
        "{v}"
    );
    b.run(&["rm", "dfc"]).ok();
    // docker counts a layer two images share once in the Images size, and
    // as SHARED SIZE in each: an image built on busybox holds all of it.
    let ctx = b.path("dfctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo more > /more\n",
    )
    .unwrap();
    b.run(&["build", "-q", "-t", "derived", ctx.to_str().unwrap()])
        .ok();
    let derived: f64 = b
        .run(&["image", "inspect", "-f", "{{.Size}}", "derived"])
        .ok()
        .trim()
        .parse()
        .unwrap();
    let rows = b
        .run(&["system", "df", "--format", "{{.Type}} {{.Size}}"])
        .ok();
    // docker's df prints 4 digits (go-units HumanSize): "Images 1.983MB".
    let shown = rows.lines().next().unwrap().trim_start_matches("Images ");
    let mb: f64 = shown.trim_end_matches("MB").parse().unwrap();
    assert!(
        shown.ends_with("MB") && (mb * 1e6 - derived).abs() / derived < 0.001,
        "{rows} vs {derived}"
    );
    let v = b.run(&["system", "df", "-v"]).ok();
    let busybox = v.lines().find(|l| l.starts_with("busybox")).unwrap();
    let cells: Vec<&str> = busybox.split_whitespace().collect();
    // SIZE equals SHARED SIZE: every layer of busybox is derived's too.
    assert_eq!(cells[cells.len() - 4], cells[cells.len() - 3], "{v}");
}

/// docker's `run -a`: only the streams named are attached (`-a stdout`
/// shows no stderr, and the reverse), the exit code is the container's;
/// a stream that does not exist and `-a` with `-d` are refused with 125.
#[test]
fn run_attach_picks_streams() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let script = "echo to-out; echo to-err >&2; exit 3";
    let r = b.run(&["run", "--rm", "-a", "stdout", "busybox", "sh", "-c", script]);
    assert_eq!(r.code(), 3);
    assert_eq!(r.stdout(), "to-out\n");
    assert_eq!(r.stderr(), "");
    let r = b.run(&["run", "--rm", "-a", "STDERR", "busybox", "sh", "-c", script]);
    assert_eq!(r.code(), 3);
    assert_eq!(r.stdout(), "");
    assert_eq!(r.stderr(), "to-err\n");
    let err = b.run(&["run", "-a", "bogus", "busybox", "true"]).fails(125);
    assert!(
        err.contains("valid streams are STDIN, STDOUT and STDERR"),
        "{err}"
    );
    let err = b
        .run(&["run", "-d", "-a", "stdout", "busybox", "true"])
        .fails(125);
    assert!(err.contains("Conflicting options: -a and -d"), "{err}");
}

/// docker: `run -di` keeps a detached container's stdin open, and `attach`
/// sends our input to it; a client that goes away leaves it open for the
/// next (`StdinOnce` is false for a detached container).
#[test]
fn attach_sends_input_to_a_detached_interactive_container() {
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&["run", "-di", "--name", "cat", "busybox", "cat"])
        .ok();
    for word in ["first", "second"] {
        let got = echo_through(b.command(&["attach", "cat"]), word);
        assert_eq!(got.as_deref(), Some(format!("{word}\n").as_str()));
    }
    let logs = b.run(&["logs", "cat"]).ok();
    assert!(logs.starts_with("first\n"), "{logs}");
    assert!(logs.contains("second\n"), "{logs}");
    assert_eq!(
        b.run(&["inspect", "-f", "{{.State.Status}}", "cat"])
            .ok()
            .trim(),
        "running"
    );
    b.run(&["rm", "-f", "cat"]).ok();
}

/// A pseudo-terminal pair for a child's stdio: (master, slave).
fn pty() -> (std::fs::File, std::fs::File) {
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty fills two descriptors we then own.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty");
    // SAFETY: fresh descriptors from openpty.
    unsafe {
        use std::os::fd::FromRawFd;
        (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(s))
    }
}

/// Reads `master` until `want` shows up (or a few seconds pass).
fn read_until(master: &std::fs::File, want: &str) -> String {
    use std::os::fd::AsRawFd;
    let mut got = Vec::new();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < end && !String::from_utf8_lossy(&got).contains(want) {
        let mut p = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one descriptor we own.
        if unsafe { libc::poll(&mut p, 1, 100) } > 0 {
            let mut buf = [0u8; 4096];
            match std::io::Read::read(&mut &*master, &mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// docker: attaching from a terminal to a `run -dit` container gives a
/// raw session with the container's shell; ctrl-p ctrl-q (docker's
/// default detach keys) leaves it running and exits 0.
#[test]
fn attach_to_a_terminal_container_and_detach_with_ctrl_p_ctrl_q() {
    use std::io::Write;
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&["run", "-dit", "--name", "term", "busybox", "sh"])
        .ok();
    let (mut master, slave) = pty();
    let mut child = b
        .command(&["attach", "term"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for _ in 0..20 {
        master.write_all(b"echo $((6*7))\r").unwrap();
        seen = read_until(&master, "42\r");
        if seen.contains("42\r") {
            break;
        }
    }
    assert!(seen.contains("42\r"), "{seen:?}");
    master.write_all(b"\x10\x11").unwrap();
    let tail = read_until(&master, "read escape sequence");
    assert!(tail.contains("read escape sequence"), "{tail:?}");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(
        b.run(&["inspect", "-f", "{{.State.Status}}", "term"])
            .ok()
            .trim(),
        "running"
    );
    b.run(&["rm", "-f", "term"]).ok();
}

//! End to end: `berth run` and the container lifecycle through the real binary,
//! on the busybox image made offline. Docker's behaviour is the reference for
//! outputs and exit codes (noted where it matters).

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;

use common::{Berth, tool};

fn with_busybox() -> Berth {
    let b = Berth::new();
    b.import_busybox("busybox");
    b
}

#[test]
fn run_applies_docker_defaults() {
    let b = with_busybox();
    let out = b
        .run(&["run", "--rm", "busybox", "sh", "-c", "hostname; id; echo $HOME; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; cat /etc/hosts | grep -c localhost; wc -c < /proc/keys"])
        .ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].len(), 12, "hostname is the short id: {out}");
    assert_eq!(
        lines[1], "uid=0(root) gid=0(root) groups=0(root),10(wheel)",
        "as docker shows it"
    );
    assert_eq!(lines[2], "/root");
    assert!(
        out.contains("CapEff:\t00000000a80425fb"),
        "docker's default capabilities: {out}"
    );
    assert!(out.contains("CapBnd:\t00000000a80425fb"));
    assert!(out.contains("NoNewPrivs:\t0"));
    assert!(out.contains("Seccomp:\t2"), "seccomp in filter mode");
    assert!(lines[lines.len() - 2].parse::<u32>().unwrap() >= 2);
    assert_eq!(lines.last().unwrap().trim(), "0", "/proc/keys is masked");
    let out = b
        .run(&[
            "run",
            "--rm",
            "--security-opt",
            "no-new-privileges",
            "busybox",
            "grep",
            "NoNewPrivs",
            "/proc/self/status",
        ])
        .ok();
    assert!(out.contains("NoNewPrivs:\t1"));
    assert_eq!(b.run(&["ps", "-aq"]).ok(), "", "--rm removed them");
}

#[test]
fn entrypoint_cmd_env_workdir_user() {
    let b = with_busybox();
    // The lecture's image, without a build: ENTRYPOINT + CMD composition.
    b.run(&[
        "import",
        "--change",
        "ENTRYPOINT [\"/bin/echo\",\"Hello\"]",
        "--change",
        "CMD [\"world\"]",
        common::busybox_tar().to_str().unwrap(),
        "hello",
    ])
    .ok();
    assert_eq!(b.run(&["run", "--rm", "hello"]).ok(), "Hello world\n");
    // Everything after the image belongs to the container, flags included
    // (docker's `run --entrypoint /bin/sh img -c '…'`), even where berth has a
    // flag of the same name (`-c` is --cpu-shares).
    let out = b
        .run(&[
            "run",
            "--rm",
            "-e",
            "X=1",
            "--entrypoint",
            "/bin/sh",
            "busybox",
            "-c",
            "echo $X -c",
        ])
        .ok();
    assert_eq!(out, "1 -c\n");
    let out = b.run(&["run", "--rm", "hello", "-n", "--cpus"]).ok();
    assert_eq!(out, "Hello -n --cpus\n");
    assert_eq!(
        b.run(&["run", "--rm", "hello", "Pavlos"]).ok(),
        "Hello Pavlos\n"
    );
    assert_eq!(
        b.run(&["run", "--rm", "--entrypoint", "/bin/echo", "hello", "x"])
            .ok(),
        "x\n",
        "--entrypoint clears CMD"
    );
    let out = b
        .run(&[
            "run",
            "--rm",
            "-e",
            "A=1",
            "-e",
            "PATH=/bin",
            "-w",
            "/made/here",
            "-u",
            "33:33",
            "busybox",
            "sh",
            "-c",
            "echo $A $PATH; pwd; id -u; id -g",
        ])
        .ok();
    assert_eq!(
        out, "1 /bin\n/made/here\n33\n33\n",
        "workdir created if missing"
    );
    let out = b
        .run(&[
            "run",
            "--rm",
            "-u",
            "www-data",
            "busybox",
            "sh",
            "-c",
            "id -un; echo $HOME",
        ])
        .ok();
    assert_eq!(
        out, "www-data\n/var/www\n",
        "user name resolved from the image's /etc/passwd"
    );
    let err = b
        .run(&["run", "--rm", "-u", "nobody-here", "busybox", "true"])
        .fails(125);
    assert!(err.contains("unable to find user nobody-here"), "{err}");
}

/// `run --rm` (docker's reference: the command returns once the container
/// is removed, its anonymous volumes with it): when it returns, no view a
/// user has shows the container: not `ps -a`, not its name (free for the
/// next run), not its image (removable), not its anonymous volume. What
/// nobody sees (the runtime's record, the cgroups, the layer's files) is
/// deleted in the background just after, and nothing of it is left.
#[test]
fn run_rm_is_gone_when_it_returns_and_leaves_nothing() {
    let b = with_busybox();
    let cidfile = b.path("cid");
    let run = b.run(&[
        "run",
        "--rm",
        "--name",
        "once",
        "--cidfile",
        cidfile.to_str().unwrap(),
        "-v",
        "/data",
        "busybox",
        "sh",
        "-c",
        "echo hi; exit 3",
    ]);
    assert_eq!(
        (run.code(), run.stdout().as_str()),
        (3, "hi\n"),
        "{}",
        run.stderr()
    );
    let id = std::fs::read_to_string(&cidfile).unwrap();
    assert_eq!(id.len(), 64);
    assert_eq!(b.run(&["ps", "-aq"]).ok(), "");
    assert_eq!(
        b.run(&["volume", "ls", "-q"]).ok(),
        "",
        "the anonymous volume went"
    );
    // Its output captured whole: the background half holds no pipe open.
    let out = b
        .run(&["run", "--rm", "--name", "once", "busybox", "echo", "again"])
        .ok();
    assert_eq!(out, "again\n", "the name is free again");
    let out = b.run(&["rmi", "busybox"]).ok();
    assert!(
        out.contains("Deleted: sha256:"),
        "no container uses the image: {out}"
    );
    let root = b.root();
    let leftovers = || {
        let mut left: Vec<String> = Vec::new();
        for d in [
            root.join("runtime"),
            root.join("snapshots/tmp"),
            root.join("snapshots/active"),
        ] {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                left.push(e.path().display().to_string());
            }
        }
        for e in std::fs::read_dir(root.join("containers"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(".removing-") {
                left.push(e.path().display().to_string());
            }
        }
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            for p in [
                h.path().join("berth").join(&id),
                Path::new("/sys/fs/cgroup/berth").join(&id),
            ] {
                if p.exists() {
                    left.push(p.display().to_string());
                }
            }
        }
        left
    };
    let mut left = leftovers();
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = leftovers();
    }
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// An `--rm` container's record and layer metadata are written without
/// fsync (it does not outlive a crash): what a power loss leaves of them,
/// empty files, breaks no listing, and `container prune` clears the rest.
#[test]
fn a_power_loss_emptied_rm_container_is_cleared_by_prune() {
    let b = with_busybox();
    let id = b
        .run(&["create", "--rm", "busybox", "true"])
        .ok()
        .trim()
        .to_string();
    let root = b.root();
    // What the disk may hold after a power loss: the renames done, the
    // data not yet written.
    std::fs::write(
        root.join("containers").join(&id).join("container.json"),
        b"",
    )
    .unwrap();
    std::fs::write(
        root.join("snapshots/active").join(&id).join("meta.json"),
        b"",
    )
    .unwrap();
    assert_eq!(b.run(&["ps", "-aq"]).ok(), "");
    b.run(&["images"]).ok();
    b.run(&["container", "prune", "-f"]).ok();
    assert!(!root.join("containers").join(&id).exists());
    assert!(!root.join("snapshots/active").join(&id).exists());
    let out = b.run(&["rmi", "busybox"]).ok();
    assert!(out.contains("Deleted: sha256:"), "{out}");
}

#[test]
fn exit_codes_like_docker() {
    let b = with_busybox();
    assert_eq!(
        b.run(&["run", "--rm", "busybox", "sh", "-c", "exit 3"])
            .code(),
        3
    );
    let err = b
        .run(&["run", "--rm", "busybox", "nope-not-here"])
        .fails(127);
    assert!(err.contains("executable file not found"), "{err}");
    let err = b.run(&["run", "--rm", "busybox", "/etc/passwd"]).fails(126);
    assert!(err.contains("permission denied"), "{err}");
    let err = b.run(&["run", "--rm", "no-such-image"]).fails(125);
    assert!(
        err.contains("Unable to find image 'no-such-image:latest' locally"),
        "{err}"
    );
    b.run(&["run", "--bogus-flag", "busybox"]).fails(125);
    b.run(&["create", "--name", "taken", "busybox", "true"])
        .ok();
    let err = b
        .run(&["create", "--name", "taken", "busybox", "true"])
        .fails(125);
    assert!(err.contains("is already in use"), "{err}");
    let err = b
        .run(&[
            "run",
            "--rm",
            "--mount",
            "type=bind,source=/no/such/dir,target=/x",
            "busybox",
            "true",
        ])
        .fails(125);
    assert!(err.contains("bind source path does not exist"), "{err}");
    assert_eq!(
        b.run(&["ps", "-aq"]).ok().lines().count(),
        1,
        "nothing created for the bad mount"
    );
    // -v creates a missing host directory, as docker does.
    let host = b.path("made-by-v");
    b.run(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/data", host.display()),
        "busybox",
        "sh",
        "-c",
        "echo hi > /data/f",
    ])
    .ok();
    assert_eq!(std::fs::read_to_string(host.join("f")).unwrap(), "hi\n");
}

#[test]
fn detached_logs_stop_rm() {
    let b = with_busybox();
    let id = b.run(&["run", "-d", "--name", "ticker", "busybox", "sh", "-c", "trap 'echo got-term; exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"]).ok();
    assert_eq!(id.trim().len(), 64);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let ps = b.run(&["ps"]).ok();
    assert!(ps.contains("ticker") && ps.contains("Up "), "{ps}");
    let logs = b.run(&["logs", "--tail", "2", "ticker"]).ok();
    assert_eq!(logs.lines().count(), 2, "{logs}");
    // logs -f follows until the container stops.
    let mut follow = b
        .command(&["logs", "-f", "ticker"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    b.run(&["stop", "ticker"]).ok();
    let mut followed = String::new();
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed)
        .unwrap();
    assert!(follow.wait().unwrap().success());
    assert!(
        followed.contains("tick 0") && followed.contains("got-term"),
        "{followed}"
    );
    let st = b
        .run(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            "ticker",
        ])
        .ok();
    assert_eq!(st.trim(), "exited 0", "the TERM trap ran");
    let log_file: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(
            b.root()
                .join("containers")
                .join(id.trim())
                .join(format!("{}-json.log", id.trim())),
        )
        .unwrap()
        .lines()
        .next()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(log_file["stream"], "stdout");
    assert_eq!(log_file["log"], "tick 0\n");
    b.run(&["rm", "ticker"]).ok();
    assert_eq!(b.run(&["ps", "-a", "-q"]).ok(), "");
}

/// What stays beside a detached container while it runs is the small
/// `berth-monitor` program (podman's conmon), which berth's monitor becomes
/// once the container started: output reaches the log through it, and each
/// exit brings berth back to record it and apply the restart policy. If
/// berth cannot be run again then (upgraded away mid-run), the exit code the
/// watcher wrote first is what the next command shows, not a crash's 137.
#[test]
fn detached_container_is_watched_by_berth_monitor() {
    let b = with_busybox();
    let pid_of = |name: &str| -> i32 {
        let p = b.run(&["inspect", "-f", "{{.State.Pid}}", name]).ok();
        p.trim().parse().unwrap()
    };
    let parent = |pid: i32| -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = stat.rsplit(')').next().unwrap().to_string();
        after.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let exe_name = |pid: i32| {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|e| e.file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    let soon = |what: &str, f: &dyn Fn() -> bool| {
        for _ in 0..200 {
            if f() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{what}");
    };

    // Restarts: each run's exit goes watcher -> berth -> the next run.
    b.run(&[
        "run",
        "-d",
        "--name",
        "again",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 3",
    ])
    .ok();
    soon("two restarts, then exited", &|| {
        b.run(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Status}}",
            "again",
        ])
        .ok()
        .trim()
            == "2 exited"
    });
    let st = b
        .run(&["inspect", "-f", "{{.State.ExitCode}}", "again"])
        .ok();
    assert_eq!(st.trim(), "3");
    assert_eq!(b.run(&["logs", "again"]).ok(), "run\nrun\nrun\n");

    // A copy of berth whose binary goes away while its container runs.
    let bin = b.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let here = std::path::Path::new(common::berth_bin()).parent().unwrap();
    for f in ["berth", "berth-monitor"] {
        std::fs::copy(here.join(f), bin.join(f)).unwrap();
    }
    let out = std::process::Command::new(bin.join("berth"))
        .args([
            "run",
            "-d",
            "--name",
            "watched",
            "busybox",
            "sh",
            "-c",
            "trap 'echo bye; exit 7' USR1; echo hi; while :; do sleep 0.05; done",
        ])
        .env("BERTH_ROOT", b.root())
        .env("BERTH_DEFAULT_NETWORK", "none")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let monitor = parent(pid_of("watched"));
    soon("the monitor becomes berth-monitor", &|| {
        exe_name(monitor).as_deref() == Some("berth-monitor")
    });
    soon("the output is logged", &|| {
        b.run(&["logs", "watched"]).ok() == "hi\n"
    });
    std::fs::remove_file(bin.join("berth")).unwrap();
    b.run(&["kill", "-s", "USR1", "watched"]).ok();
    soon("exited with the watcher's code", &|| {
        b.run(&[
            "ps",
            "-a",
            "--filter",
            "name=watched",
            "--format",
            "{{.Status}}",
        ])
        .ok()
        .starts_with("Exited (7)")
    });
    assert_eq!(b.run(&["logs", "watched"]).ok(), "hi\nbye\n");
    assert!(
        std::fs::metadata(format!("/proc/{monitor}")).is_err()
            || exe_name(monitor).as_deref() != Some("berth-monitor"),
        "the watcher is gone"
    );
    b.run(&["rm", "watched", "again"]).ok();
}

/// A runtime record that a full disk or a crash left truncated does not
/// wedge its container: the next start clears it and runs.
#[test]
fn a_truncated_runtime_state_does_not_block_the_next_start() {
    let b = with_busybox();
    let id = b
        .run(&["create", "--name", "again", "busybox", "echo", "ran"])
        .ok();
    let state = b.root().join("runtime").join(id.trim());
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("state.json"), "{\"id\":\"tr").unwrap();
    assert_eq!(b.run(&["start", "-a", "again"]).ok(), "ran\n");
    let st = b
        .run(&["inspect", "-f", "{{.State.ExitCode}}", "again"])
        .ok();
    assert_eq!(st.trim(), "0");
    b.run(&["rm", "again"]).ok();
    assert!(!state.exists());
}

#[test]
fn limits_are_in_the_cgroup() {
    let b = with_busybox();
    let out = b
        .run(&["run", "--rm", "--memory", "64m", "--pids-limit", "50", "--cpus", "0.5", "--cpu-shares", "512", "busybox", "sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.shares"])
        .ok();
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        vec!["67108864", "50", "50000", "512"]
    );
    // A memory hog is OOM-killed: 137, and inspect says so.
    let out = b.run(&[
        "run",
        "--name",
        "hog",
        "--memory",
        "32m",
        "busybox",
        "sh",
        "-c",
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a)",
    ]);
    assert_eq!(out.code(), 137);
    let st = b
        .run(&[
            "inspect",
            "--format",
            "{{.State.OOMKilled}} {{.State.ExitCode}}",
            "hog",
        ])
        .ok();
    assert_eq!(st.trim(), "true 137");
}

#[test]
fn exec_cp_pause_top_diff_commit() {
    let b = with_busybox();
    b.run(&[
        "run",
        "-d",
        "--name",
        "box",
        "-h",
        "boxhost",
        "busybox",
        "sh",
        "-c",
        "echo data > /data.txt; ln -s / /escape; sleep 60",
    ])
    .ok();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = b
        .run(&[
            "exec",
            "box",
            "sh",
            "-c",
            "hostname; cat /proc/1/cmdline | tr '\\0' ' '",
        ])
        .ok();
    assert!(
        out.starts_with("boxhost\n") && out.contains("sleep 60"),
        "exec joins the namespaces: {out}"
    );
    assert_eq!(
        b.run(&[
            "exec",
            "-e",
            "X=7",
            "-u",
            "33",
            "-w",
            "/tmp",
            "box",
            "sh",
            "-c",
            "echo $X; id -u; pwd"
        ])
        .ok(),
        "7\n33\n/tmp\n"
    );
    assert_eq!(b.run(&["exec", "box", "sh", "-c", "exit 4"]).code(), 4);
    // cp resolves inside the container: /escape/etc/hostname is the container's.
    let dst = b.path("out");
    std::fs::create_dir(&dst).unwrap();
    b.run(&[
        "cp",
        "box:/escape/etc/hostname",
        dst.join("h").to_str().unwrap(),
    ])
    .ok();
    assert_eq!(std::fs::read_to_string(dst.join("h")).unwrap(), "boxhost\n");
    b.run(&["cp", "box:/data.txt", dst.to_str().unwrap()]).ok();
    assert_eq!(
        std::fs::read_to_string(dst.join("data.txt")).unwrap(),
        "data\n"
    );
    let src = b.path("in.txt");
    std::fs::write(&src, "from host").unwrap();
    b.run(&["cp", src.to_str().unwrap(), "box:/tmp/"]).ok();
    assert_eq!(
        b.run(&["exec", "box", "cat", "/tmp/in.txt"]).ok(),
        "from host"
    );
    let top = b.run(&["top", "box"]).ok();
    assert!(top.contains("sleep 60"), "{top}");
    b.run(&["pause", "box"]).ok();
    assert!(b.run(&["ps"]).ok().contains("(Paused)"));
    b.run(&["unpause", "box"]).ok();
    let diff = b.run(&["diff", "box"]).ok();
    assert!(diff.contains("A /data.txt"), "{diff}");
    b.run(&["commit", "box", "snapshot:v1"]).ok();
    assert_eq!(
        b.run(&["run", "--rm", "snapshot:v1", "cat", "/data.txt"])
            .ok(),
        "data\n"
    );
    b.run(&["rm", "-f", "box"]).ok();
}

#[test]
fn interactive_tty_shell() {
    let b = with_busybox();
    let pty =
        rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
            .unwrap();
    rustix::pty::grantpt(&pty).unwrap();
    rustix::pty::unlockpt(&pty).unwrap();
    let name = rustix::pty::ptsname(&pty, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let mut child = b
        .command(&["run", "--rm", "-it", "busybox", "sh"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty);
    std::thread::sleep(std::time::Duration::from_millis(500));
    master
        .write_all(b"tty; echo got-$((20+22)); exit 5\n")
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&all).contains("got-42") {
                break;
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let st = child.wait().unwrap();
    let out = reader.join().unwrap();
    assert!(out.contains("/dev/pts/0"), "a real terminal inside: {out}");
    assert!(out.contains("got-42"), "{out}");
    assert_eq!(st.code(), Some(5));
}

#[test]
fn fifty_concurrent_runs() {
    let b = with_busybox();
    let kids: Vec<_> = (0..50)
        .map(|i| {
            b.command(&[
                "run",
                "--rm",
                "busybox",
                "sh",
                "-c",
                &format!("echo run-{i}"),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for (i, k) in kids.into_iter().enumerate() {
        let out = k.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "run {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("run-{i}\n"));
    }
    assert_eq!(b.run(&["ps", "-aq"]).ok(), "");
    b.run(&["system", "check"]).ok();
}

#[test]
fn volumes_and_prune() {
    let b = with_busybox();
    b.run(&["volume", "create", "data"]).ok();
    b.run(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo persisted > /data/f",
    ])
    .ok();
    assert_eq!(
        b.run(&[
            "run",
            "--rm",
            "-v",
            "data:/data:ro",
            "busybox",
            "cat",
            "/data/f"
        ])
        .ok(),
        "persisted\n"
    );
    assert!(b.run(&["volume", "ls"]).ok().contains("data"));
    b.run(&[
        "create", "--name", "user", "-v", "data:/d", "busybox", "true",
    ])
    .ok();
    let err = b.run(&["volume", "rm", "data"]).fails(1);
    assert!(err.contains("volume is in use"), "{err}");
    b.run(&["run", "--name", "done", "busybox", "true"]).ok();
    let out = b.run(&["system", "prune", "-f", "--volumes"]).ok();
    assert!(out.contains("Deleted Containers:"), "{out}");
    assert_eq!(b.run(&["ps", "-aq"]).ok(), "");
    let df = b.run(&["system", "df"]).ok();
    assert!(df.contains("Containers      0"), "{df}");
    let _ = tool("true", &[]);
}

/// Removals racing each other and a prune (two `rm` of every container at
/// once, and `container prune` beside them): each container goes exactly
/// once, the loser of a race gets docker's "No such container", the prune
/// does not fail, and nothing is left behind (directories, snapshots).
#[test]
fn concurrent_removals_and_prune() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let ids: Vec<String> = (0..6)
        .map(|i| {
            b.run(&[
                "create",
                "--network",
                "none",
                "--name",
                &format!("r{i}"),
                "busybox",
                "true",
            ])
            .ok()
            .trim()
            .to_string()
        })
        .collect();
    let b = &b;
    let results = std::thread::scope(|sc| {
        let rms: Vec<_> = ids
            .iter()
            .flat_map(|id| [id.clone(), id.clone()])
            .map(|id| sc.spawn(move || b.run(&["rm", &id])))
            .collect();
        let prune = sc.spawn(|| b.run(&["container", "prune", "-f"]));
        let rms: Vec<_> = rms.into_iter().map(|h| h.join().unwrap()).collect();
        (rms, prune.join().unwrap())
    });
    let (rms, prune) = results;
    let mut removed = 0;
    for r in &rms {
        if r.code() == 0 {
            removed += 1;
        } else {
            assert!(
                r.stderr().contains("No such container"),
                "a lost race is a missing container: {}",
                r.stderr()
            );
        }
    }
    let pruned = prune.ok().lines().filter(|l| l.len() == 64).count();
    assert_eq!(removed + pruned, ids.len(), "each container removed once");
    assert_eq!(b.run(&["ps", "-aq"]).ok(), "");
    let left: Vec<_> = std::fs::read_dir(b.root().join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lock")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let active: Vec<_> = std::fs::read_dir(b.root().join("snapshots/active"))
        .unwrap()
        .flatten()
        .collect();
    assert!(active.is_empty(), "{active:?}");
    // An rm that died after claiming its container (its pid is gone): the
    // next prune finishes the removal, snapshot included.
    let id = b
        .run(&["create", "--network", "none", "busybox", "true"])
        .ok()
        .trim()
        .to_string();
    let containers = b.root().join("containers");
    std::fs::rename(
        containers.join(&id),
        containers.join(format!(".removing-4194303-0-{id}")),
    )
    .unwrap();
    assert_eq!(b.run(&["ps", "-aq"]).ok(), "", "claimed: not listed");
    assert!(b.root().join("snapshots/active").join(&id).exists());
    b.run(&["container", "prune", "-f"]).ok();
    assert!(
        !containers
            .join(format!(".removing-4194303-0-{id}"))
            .exists()
    );
    assert!(!b.root().join("snapshots/active").join(&id).exists());
}

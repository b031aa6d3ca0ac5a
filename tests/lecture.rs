//! The lecture's flow end to end, as a user types it: examples/hello and
//! examples/translate built, run with `-it` (under a real terminal: tmux),
//! pushed to a registry with an access token, removed, pulled and run again.
//! Docker's behaviour is the reference for each output checked.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Berth, RegistryServer, berth_bin, project_root, tool};

/// A tmux server of its own (private socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `cmd` (a shell command line) in a fresh 120x40 terminal.
    fn start(name: &str, cmd: &str) -> Tmux {
        let socket = format!("berth-e2e-{name}-{}", std::process::id());
        tool(
            "tmux",
            &[
                "-L",
                &socket,
                "new-session",
                "-d",
                "-s",
                "main",
                "-x",
                "120",
                "-y",
                "40",
                cmd,
            ],
        );
        Tmux { socket }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args([
                "-L",
                &self.socket,
                "capture-pane",
                "-p",
                "-S",
                "-200",
                "-t",
                "main",
            ])
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn send(&self, line: &str) {
        tool(
            "tmux",
            &["-L", &self.socket, "send-keys", "-t", "main", "-l", line],
        );
        tool(
            "tmux",
            &["-L", &self.socket, "send-keys", "-t", "main", "Enter"],
        );
    }

    /// Waits until the screen contains `text` (or panics with the screen).
    #[track_caller]
    fn wait_for(&self, text: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if s.contains(text) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {text:?}; the terminal shows:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The command line a terminal runs: berth with this test's root and config,
/// then a marker with its exit code, then a pause so the screen can be read.
fn in_terminal(b: &Berth, args: &str) -> String {
    format!(
        "cd {} && BERTH_DEFAULT_NETWORK=none BERTH_ROOT={} DOCKER_CONFIG={} {} {args}; echo \"EXIT=$?\"; sleep 60",
        project_root().display(),
        b.root().display(),
        b.dir.path().join("docker-config").display(),
        berth_bin()
    )
}

#[test]
fn hello_world_cmd_as_in_the_lecture() {
    let b = Berth::new();
    b.import_busybox("busybox:latest");
    let dir = project_root().join("examples/hello");
    let mut c = b.command(&["build", "-t", "hello_world_cmd", "-f", "Dockerfile", "."]);
    let out = c.current_dir(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let t = Tmux::start("hello", &in_terminal(&b, "run -it hello_world_cmd"));
    let s = t.wait_for("EXIT=", 30);
    assert!(s.contains("Hello world") && s.contains("EXIT=0"), "{s}");
    let t = Tmux::start("pavlos", &in_terminal(&b, "run -it hello_world_cmd Pavlos"));
    let s = t.wait_for("EXIT=", 30);
    assert!(s.contains("Hello Pavlos") && s.contains("EXIT=0"), "{s}");

    let images = b.run(&["images"]).ok();
    let header = images.lines().next().unwrap();
    for col in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        images.contains("hello_world_cmd") && images.contains("busybox"),
        "{images}"
    );
    // The slide's history: CMD and ENTRYPOINT as "#(nop)" metadata rows of 0B
    // on top of the base's rows.
    let h = b
        .run(&["image", "history", "--no-trunc", "hello_world_cmd"])
        .ok();
    let rows: Vec<&str> = h.lines().skip(1).collect();
    assert!(
        rows[0].contains("#(nop)  CMD [\"world\"]") && rows[0].contains("0B"),
        "{h}"
    );
    assert!(
        rows[1].contains("#(nop)  ENTRYPOINT [\"/bin/echo\" \"Hello\"]"),
        "{h}"
    );
    assert!(rows.len() >= 3, "{h}");
}

fn python_base(b: &Berth) {
    let st = Command::new(project_root().join("scripts/python-base.sh"))
        .arg(berth_bin())
        .env("BERTH_ROOT", b.root())
        .env("BERTH_DEFAULT_NETWORK", "none")
        .status()
        .expect("scripts/python-base.sh");
    assert!(
        st.success(),
        "scripts/python-base.sh failed (mmdebstrap and Debian's mirror are needed)"
    );
}

#[test]
fn translate_built_run_pushed_pulled_and_run_again() {
    let b = Berth::new();
    python_base(&b);
    let dir = project_root().join("examples/translate");
    let out = b
        .command(&["build", "-t", "translate", "."])
        .current_dir(&dir)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("pipenv sync") || log.contains("RUN pipenv sync"),
        "{log}"
    );

    // `berth run --rm -it translate` opens the pipenv shell, where the app runs.
    let shell = |name: &str, image: &str| {
        let t = Tmux::start(name, &in_terminal(&b, &format!("run --rm -it {image}")));
        t.wait_for("Launching subshell in virtual environment", 120);
        std::thread::sleep(Duration::from_millis(500));
        t.send("python cli.py \"good morning\" --all");
        let s = t.wait_for("buongiorno", 30);
        assert!(s.contains("καλημέρα") && s.contains("buenos días"), "{s}");
        t.send("python cli.py hello -d el");
        t.wait_for("γεια σου", 30);
        t.send("exit");
        std::thread::sleep(Duration::from_millis(300));
        t.send("exit");
        let s = t.wait_for("EXIT=", 30);
        assert!(s.contains("EXIT=0"), "{s}");
    };
    shell("translate", "translate");

    // A registry with an account and an access token, as on Docker Hub.
    let t = tempfile::tempdir().unwrap();
    let storage = t.path().join("registry");
    let reg = RegistryServer::start(&storage, &[]);
    let st = storage.to_str().unwrap();
    b.run_stdin(
        &[
            "registry",
            "user",
            "add",
            "--storage",
            st,
            "--password-stdin",
            "pavlos",
        ],
        b"lecture password\n",
    )
    .ok();
    let token = b
        .run(&[
            "registry",
            "token",
            "create",
            "--storage",
            st,
            "--user",
            "pavlos",
        ])
        .ok();
    let login = b.run_stdin(
        &["login", "-u", "pavlos", "--password-stdin", &reg.addr],
        format!("{}\n", token.trim()).as_bytes(),
    );
    assert!(login.ok().contains("Login Succeeded"));
    let remote = format!("{}/pavlos/translate", reg.addr);
    b.run(&["tag", "translate", &remote]).ok();
    let out = b.run(&["push", &remote]).ok();
    assert!(out.contains("latest: digest: sha256:"), "{out}");
    b.run(&["rmi", "translate", &remote]).ok();
    b.run(&["system", "prune", "-a", "-f"]).ok();
    let left = b.run(&["images", "-q"]).ok();
    assert!(
        !left.contains(|c: char| c.is_ascii_hexdigit()),
        "everything pruned: {left}"
    );
    // The build cache went too (docker's `system prune -a`), so nothing but
    // empty rows is left and the pull below downloads every layer again.
    let df = b.run(&["system", "df"]).ok();
    for row in ["Images ", "Build Cache "] {
        let line = df.lines().find(|l| l.starts_with(row)).unwrap();
        assert!(
            line.split_whitespace().any(|w| w == "0B") && !line.contains("MB"),
            "{df}"
        );
    }
    // Pulled on the way, and the app runs again.
    shell("again", &remote);
    assert!(
        b.run(&["images"])
            .ok()
            .contains(&format!("{}/pavlos/translate", reg.addr))
    );
}

//! Rootless berth, as an ordinary user the test makes (`useradd`, with a
//! subordinate id range, or without one): the same binary and no setup
//! step. The store is the user's own, the user is root inside a user
//! namespace whose other ids are theirs too, networking is pasta's, and
//! what a user cannot have (cgroup limits without delegation, image files
//! of users a single-id mapping has not got) is refused with a message
//! that says why and what to do.

mod common;

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
use common::user::TestUser;

/// The body of `GET /` on the host's loopback `port`, when it answers 200.
fn get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")).then(|| body.to_string())
}

/// A run with a memory limit (which needs a cgroup the user may manage).
const LIMITED: &[&str] = &[
    "run",
    "--rm",
    "--network",
    "none",
    "-m",
    "10m",
    "busybox",
    "true",
];

/// [`get`], retried for up to 5 s while the server comes up.
fn get_soon(port: u16) -> Option<String> {
    for _ in 0..50 {
        if let Some(b) = get(port) {
            return Some(b);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

#[test]
fn a_user_builds_runs_pushes_and_pulls_in_their_own_store() {
    let Some(u) = TestUser::with_busybox("a", true) else {
        return;
    };
    // Root inside, in the user's own store.
    let id = u
        .berth(&["run", "--rm", "--network", "none", "busybox", "id", "-u"])
        .ok();
    assert_eq!(id.trim(), "0");
    let info = u.berth(&["info"]).ok();
    assert!(
        info.contains("rootless")
            && info.contains(&format!("uid 0:{}:1,1:", u.uid))
            && info.contains(&format!("/home/{}/.local/share/berth", u.name)),
        "{info}"
    );
    // A build whose files belong to other users keeps their owners (the
    // subordinate ids), and `chown` in a RUN step works.
    let ctx = u.write(
        "app/Dockerfile",
        b"FROM busybox\nRUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && mkdir -p /home/app && echo hi > /f && chown 1000:1000 /f /home/app && touch /n && chown 65534:65534 /n\nUSER app\nCMD [\"id\", \"-u\"]\n",
    );
    let dir = ctx.parent().unwrap().to_str().unwrap().to_string();
    u.berth(&["build", "-q", "-t", "owned", &dir]).ok();
    assert_eq!(
        u.berth(&["run", "--rm", "--network", "none", "owned"])
            .ok()
            .trim(),
        "1000"
    );
    let owners = u
        .berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "0",
            "owned",
            "stat",
            "-c",
            "%u:%g %n",
            "/f",
            "/n",
            "/home/app",
        ])
        .ok();
    assert_eq!(
        owners,
        "1000:1000 /f\n65534:65534 /n\n1000:1000 /home/app\n"
    );
    assert!(
        u.berth(&["history", "--no-trunc", "owned"])
            .ok()
            .contains("chown 1000:1000")
    );
    // A volume is how a container writes to the host: the files are the user's.
    let data = u.write("data/.keep", b"").parent().unwrap().to_path_buf();
    u.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{}:/data", data.display()),
        "busybox",
        "sh",
        "-c",
        "echo out > /data/x",
    ])
    .ok();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(data.join("x")).map(|m| m.uid()).ok(),
        Some(u.uid)
    );

    // Limits need a delegated cgroup: refused, saying why (podman's rule).
    let err = u.berth(LIMITED).fails(125);
    assert!(
        err.contains("rootless") && err.contains("--memory") && err.contains("delegated"),
        "{err}"
    );

    // The lecture's example, and `run -it` under a real terminal.
    let hello = u.write(
        "hello/Dockerfile",
        &std::fs::read(common::project_root().join("examples/hello/Dockerfile")).unwrap(),
    );
    u.berth(&[
        "build",
        "-q",
        "-t",
        "hello",
        hello.parent().unwrap().to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        u.berth(&["run", "--rm", "--network", "none", "hello"]).ok(),
        "Hello world\n"
    );
    let bin = u.bin_path("berth");
    let tty = u
        .command(
            "script",
            &[
                "-qec",
                &format!("{bin} run --rm -it --network none busybox sh -c 'tty; exit 3'"),
                "/dev/null",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(tty.status.code(), Some(3), "{tty:?}");
    assert!(
        String::from_utf8_lossy(&tty.stdout).contains("/dev/pts/0"),
        "{tty:?}"
    );

    // The user's own registry on a high port, an account there, `login`
    // into the user's ~/.docker/config.json, push, and pull back.
    let port = common::free_port();
    let storage = u.home.join("registry");
    let st = storage.to_str().unwrap().to_string();
    u.berth_stdin(
        &[
            "registry",
            "user",
            "add",
            "--storage",
            &st,
            "--password-stdin",
            "team",
        ],
        b"correct horse\n",
    )
    .ok();
    let _reg = Killed(
        u.command(
            bin.as_str(),
            &[
                "registry",
                "serve",
                "--storage",
                &st,
                "--addr",
                &format!("127.0.0.1:{port}"),
                "-q",
            ],
        )
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap(),
    );
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    u.berth_stdin(
        &["login", "-u", "team", "--password-stdin", &addr],
        b"correct horse\n",
    )
    .ok();
    use std::os::unix::fs::PermissionsExt;
    let cfg = u.home.join(".docker/config.json");
    assert_eq!(
        std::fs::metadata(&cfg)
            .map(|m| m.permissions().mode() & 0o777)
            .ok(),
        Some(0o600)
    );
    let r = format!("{addr}/team/owned:1");
    u.berth(&["tag", "owned", &r]).ok();
    u.berth(&["push", &r]).ok();
    u.berth(&["rmi", &r, "owned"]).ok();
    u.berth(&["pull", &r]).ok();
    assert_eq!(
        u.berth(&["run", "--rm", "--network", "none", &r])
            .ok()
            .trim(),
        "1000"
    );
    assert!(u.berth(&["images"]).ok().contains("team/owned"));
    u.berth(&["system", "prune", "-af"]).ok();
    assert!(!u.berth(&["images"]).ok().contains("team/owned"));
}

#[test]
fn a_published_port_reaches_a_rootless_container() {
    if !common::have("pasta", "passt") {
        return;
    }
    let Some(u) = TestUser::with_busybox("p", true) else {
        return;
    };
    let port = common::free_port();
    u.berth(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("{port}:80"),
        "busybox",
        "sh",
        "-c",
        "while true; do printf 'HTTP/1.0 200 OK\\r\\n\\r\\nrootless\\n' | nc -l -p 80; done",
    ])
    .ok();
    let body = get_soon(port);
    assert_eq!(body.as_deref(), Some("rootless\n"));
    assert_eq!(
        u.berth(&["port", "web"]).ok(),
        format!("80/tcp -> 0.0.0.0:{port}\n")
    );
    u.berth(&["rm", "-f", "web"]).ok();
    assert_eq!(get(port), None, "the port is withdrawn with the container");
}

/// Docker's user networks, rootless: containers on one find each other by
/// name and alias (the network's resolver), a container on another network
/// cannot reach them, each still has its way out and published ports
/// (pasta), and the network goes with `network rm`.
#[test]
fn rootless_containers_on_a_user_network_find_each_other_by_name() {
    if !common::have("pasta", "passt") {
        return;
    }
    let Some(u) = TestUser::with_busybox("n", true) else {
        return;
    };
    u.berth(&["network", "create", "--subnet", "10.213.0.0/24", "appnet"])
        .ok();
    u.berth(&["network", "create", "othernet"]).ok();
    let port = common::free_port();
    u.berth(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "appnet",
        "--network-alias",
        "site",
        "-p",
        &format!("{port}:80"),
        "busybox",
        "sh",
        "-c",
        "mkdir /srv && echo hello > /srv/index.html && exec httpd -f -p 80 -h /srv",
    ])
    .ok();
    let ip = u
        .berth(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.appnet.IPAddress}}",
            "web",
        ])
        .ok();
    let ip = ip.trim();
    assert!(ip.starts_with("10.213.0."), "{ip}");
    // By name and by alias, from another container on the network
    // (`timeout`, not wget's -T: busybox 1.35's wget -T crashes).
    for name in ["web", "site"] {
        let mut got = String::new();
        for _ in 0..30 {
            let r = u.berth(&[
                "run",
                "--rm",
                "--network",
                "appnet",
                "busybox",
                "timeout",
                "5",
                "wget",
                "-qO-",
                &format!("http://{name}/"),
            ]);
            if r.code() == 0 {
                got = r.stdout();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert_eq!(got, "hello\n", "{name}");
    }
    // eth0 carries the network's address; pasta's interface is tap0.
    let links = u
        .berth(&[
            "run",
            "--rm",
            "--network",
            "appnet",
            "busybox",
            "ip",
            "-4",
            "addr",
        ])
        .ok();
    assert!(
        links.contains("eth0") && links.contains("inet 10.213.0.") && links.contains("tap0"),
        "{links}"
    );
    // Another network is another segment: no way across.
    let r = u.berth(&[
        "run",
        "--rm",
        "--network",
        "othernet",
        "busybox",
        "timeout",
        "3",
        "wget",
        "-qO-",
        &format!("http://{ip}/"),
    ]);
    assert_ne!(r.code(), 0, "reached appnet from othernet: {}", r.stdout());
    // The published port, through the container's pasta.
    let body = get_soon(port);
    assert_eq!(body.as_deref(), Some("hello\n"));
    // docker's rule: a network in use stays.
    let r = u.berth(&["network", "rm", "appnet"]);
    assert_ne!(r.code(), 0);
    assert!(r.stderr().contains("active endpoints"), "{}", r.stderr());
    u.berth(&["rm", "-f", "web"]).ok();
    u.berth(&["network", "rm", "appnet", "othernet"]).ok();
    assert!(!u.berth(&["network", "ls"]).ok().contains("appnet"));
}

/// A cgroup v2 subtree delegated to a user, as systemd's user@.service
/// delegation (or an administrator's chown) makes one: a directory on the
/// unified hierarchy owned by the user, with a leaf the user's commands run
/// in. Removed, bottom up, when dropped (the user's processes killed first).
struct Delegated {
    root: std::path::PathBuf,
    user: String,
}

impl Delegated {
    fn new(u: &TestUser) -> Option<Delegated> {
        let mount = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(std::path::Path::new)
            .find(|p| p.join("cgroup.subtree_control").exists())?;
        let root = mount.join(format!("berth-test-delegated-{}", u.name));
        std::fs::create_dir_all(root.join("shell")).ok()?;
        for d in [root.clone(), root.join("shell")] {
            for f in [
                "",
                "cgroup.procs",
                "cgroup.subtree_control",
                "cgroup.threads",
            ] {
                std::os::unix::fs::chown(d.join(f), Some(u.uid), Some(u.uid)).ok()?;
            }
        }
        Some(Delegated {
            root,
            user: u.name.clone(),
        })
    }

    /// The user's berth, run from the delegated leaf (root moves the
    /// command there before it drops to the user, as systemd would start it).
    fn berth(&self, u: &TestUser, args: &[&str]) -> common::Run {
        use std::os::unix::process::CommandExt;
        let procs = self.root.join("shell/cgroup.procs");
        let mut c = u.command(&u.bin_path("berth"), args);
        // SAFETY: only a write(2) of this process's id between fork and exec.
        unsafe {
            c.pre_exec(move || std::fs::write(&procs, std::process::id().to_string()));
        }
        common::Run {
            out: c.output().unwrap(),
        }
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        fn remove(d: &std::path::Path) {
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        remove(&e.path());
                    }
                }
            }
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        // The user's processes first: a cgroup with processes stays.
        common::user::kill_processes(&self.user);
        remove(&self.root);
    }
}

/// With a cgroup v2 subtree delegated to the user, each rootless container
/// gets a cgroup of its own there: it can be paused, `stats` counts its
/// processes, and a limit whose controller was not delegated is refused
/// with the controller's name (podman's rule); without delegation, limits
/// are refused saying so (see the lecture-flow test).
#[test]
fn a_rootless_container_gets_a_cgroup_in_the_user_s_delegated_subtree() {
    let Some(u) = TestUser::with_busybox("g", true) else {
        return;
    };
    let Some(d) = Delegated::new(&u) else {
        return;
    };
    let info = d.berth(&u, &["info"]).ok();
    let root = format!("/{}", d.root.file_name().unwrap().to_str().unwrap());
    assert!(
        info.contains(&format!("Cgroups: v2, delegated: {root}")),
        "{info}"
    );
    d.berth(
        &u,
        &[
            "run",
            "-d",
            "--name",
            "cg",
            "--network",
            "none",
            "busybox",
            "sleep",
            "300",
        ],
    )
    .ok();
    let cg = d.berth(&u, &["exec", "cg", "cat", "/proc/1/cgroup"]).ok();
    let id = d.berth(&u, &["inspect", "-f", "{{.Id}}", "cg"]).ok();
    assert!(
        cg.contains(&format!("0::{root}/berth/{}", id.trim())),
        "{cg}"
    );
    d.berth(&u, &["pause", "cg"]).ok();
    assert!(
        d.berth(&u, &["ps", "--format", "{{.Status}}"])
            .ok()
            .contains("(Paused)")
    );
    assert_eq!(
        std::fs::read_to_string(d.root.join("berth").join(id.trim()).join("cgroup.freeze"))
            .unwrap()
            .trim(),
        "1"
    );
    d.berth(&u, &["unpause", "cg"]).ok();
    let stats = d
        .berth(&u, &["stats", "--no-stream", "--format", "{{.PIDs}}", "cg"])
        .ok();
    assert_eq!(stats.trim(), "1");
    // This machine's delegated subtree has no memory controller.
    let have = std::fs::read_to_string(d.root.join("cgroup.controllers")).unwrap();
    if !have.split_whitespace().any(|c| c == "memory") {
        let err = d.berth(&u, LIMITED).fails(125);
        assert!(
            err.contains("memory controller") && err.contains(&root),
            "{err}"
        );
    }
    d.berth(&u, &["rm", "-f", "cg"]).ok();
    assert!(!d.root.join("berth").join(id.trim()).exists());
}

/// fuse-overlayfs, rootless berth's layer driver where the kernel will not
/// mount overlayfs in a user namespace (before Linux 5.11; chosen by the
/// probe there, forced here with BERTH_SNAPSHOTTER as podman's
/// mount_program is): a build with a directory replaced (opaque) and a
/// file deleted (whiteout), run, diff, cp, commit, and no server left once
/// the container is gone.
#[test]
fn a_user_s_layers_on_fuse_overlayfs() {
    if !common::have("fuse-overlayfs", "fuse-overlayfs")
        || !std::path::Path::new("/dev/fuse").exists()
    {
        return;
    }
    let Some(u) = TestUser::new("f", true) else {
        return;
    };
    let berth = |args: &[&str]| {
        let bin = u.bin_path("berth");
        let mut all = vec!["BERTH_SNAPSHOTTER=fuse-overlayfs", bin.as_str()];
        all.extend_from_slice(args);
        common::Run {
            out: u.command("env", &all).output().unwrap(),
        }
    };
    let tar = u.home.join("busybox.tar");
    berth(&[
        "import",
        "--change",
        "CMD [\"sh\"]",
        tar.to_str().unwrap(),
        "busybox",
    ])
    .ok();
    assert!(
        berth(&["info"])
            .ok()
            .contains("Storage Driver: fuse-overlayfs"),
        "the driver is recorded"
    );
    let ctx = u.write(
        "fuse/Dockerfile",
        b"FROM busybox\nRUN mkdir -p /d/sub && echo a > /d/sub/a && echo keep > /k\nRUN rm -rf /d && mkdir /d && echo new > /d/f && rm /k\n",
    );
    let dir = ctx.parent().unwrap().to_str().unwrap().to_string();
    berth(&["build", "-q", "-t", "fimg", &dir]).ok();
    assert_eq!(
        berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "fimg",
            "sh",
            "-c",
            "ls -A /d; ls /k 2>&1"
        ])
        .stdout(),
        "f\nls: /k: No such file or directory\n"
    );
    berth(&[
        "run",
        "-d",
        "--name",
        "fc",
        "--network",
        "none",
        "fimg",
        "sleep",
        "300",
    ])
    .ok();
    berth(&["exec", "fc", "sh", "-c", "rm /d/f && echo z > /z"]).ok();
    assert_eq!(berth(&["diff", "fc"]).ok(), "C /d\nD /d/f\nA /z\n");
    let out = u.home.join("z.out");
    berth(&["cp", "fc:/z", out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "z\n");
    berth(&["commit", "fc", "fimg2"]).ok();
    berth(&["rm", "-f", "fc"]).ok();
    assert_eq!(
        berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "fimg2",
            "sh",
            "-c",
            "ls -A /d; cat /z"
        ])
        .stdout(),
        "z\n"
    );
    // Every fuse-overlayfs server went with its mount.
    let serving: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|st| st.contains("(fuse-overlayfs)") && !st.contains(") Z "))
        .filter(|st| {
            let pid = st.split_whitespace().next().unwrap_or("");
            std::fs::metadata(format!("/proc/{pid}"))
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == u.uid)
        })
        .collect();
    assert!(serving.is_empty(), "{serving:?}");
}

#[test]
fn two_users_do_not_see_each_other() {
    let (Some(a), Some(b)) = (TestUser::new("x", true), TestUser::new("y", true)) else {
        return;
    };
    a.import_busybox("busybox");
    b.import_busybox("busybox");
    a.berth(&[
        "run",
        "-d",
        "--name",
        "mine",
        "--network",
        "none",
        "busybox",
        "sleep",
        "60",
    ])
    .ok();
    assert!(a.berth(&["ps"]).ok().contains("mine"));
    assert!(!b.berth(&["ps", "-a"]).ok().contains("mine"));
    // Nor may one read the other's store.
    let theirs = a.home.join(".local/share/berth");
    let r = b.berth(&["--root", theirs.to_str().unwrap(), "ps", "-a"]);
    assert_ne!(r.code(), 0, "{}", r.stdout());
    a.berth(&["rm", "-f", "mine"]).ok();
}

#[test]
fn a_user_without_subordinate_ids_gets_root_s_files_and_a_clear_error() {
    let Some(u) = TestUser::with_busybox("s", false) else {
        return;
    };
    // busybox's files are all root's: it runs, root inside, one id mapped.
    let out = u
        .berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map",
        ])
        .ok();
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0"]);
    assert_eq!(lines[1], ["0", &u.uid.to_string(), "1"]);
    // A terminal still works (devpts without the tty group).
    let tty = u
        .berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "ls",
            "/dev/pts/ptmx",
        ])
        .ok();
    assert!(tty.contains("/dev/pts/ptmx"), "{tty}");
    // An image with a file of uid 1000 cannot be unpacked: say how to fix it.
    let tree = u.home.join("tree/home/app");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    let tar = u.home.join("owned.tar");
    let ok = std::process::Command::new("tar")
        .args(["--owner=1000", "--group=1000", "-C"])
        .arg(u.home.join("tree"))
        .arg("-cf")
        .arg(&tar)
        .arg("home")
        .status()
        .unwrap();
    assert!(ok.success());
    let _ = std::process::Command::new("chown")
        .args([&format!("{0}:{0}", u.name), tar.to_str().unwrap()])
        .status();
    let err = u
        .berth(&["import", tar.to_str().unwrap(), "owned"])
        .fails(1);
    assert!(
        err.contains("not mapped in this user namespace") && err.contains("usermod --add-subuids"),
        "{err}"
    );
}

/// The lecture's simple-translate as an ordinary user (#19's done-when):
/// the python base made offline from Debian into the user's own store
/// (`scripts/python-base.sh` with a berth that runs as the user), the
/// lecture's Dockerfile built rootless — apt-get upgrade and install,
/// whose `_apt` sandbox needs the subordinate ids, pip and pipenv from
/// PyPI over the host's network — and the app run in a container.
#[test]
fn a_user_builds_and_runs_the_lecture_s_translate() {
    let Some(u) = TestUser::new("tr", true) else {
        return;
    };
    if !common::have("mmdebstrap", "mmdebstrap") {
        return;
    }
    // A berth that runs as the user, for the script run as root.
    let wrapper = u.write(
        "berth-as-user",
        format!(
            "#!/bin/sh\nexec setpriv --reuid={uid} --regid={uid} --init-groups --reset-env env HOME={home} USER={name} PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin {bin} \"$@\"\n",
            uid = u.uid,
            home = u.home.display(),
            name = u.name,
            bin = u.bin_path("berth"),
        )
        .as_bytes(),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let st = std::process::Command::new(common::project_root().join("scripts/python-base.sh"))
        .arg(&wrapper)
        .status()
        .expect("scripts/python-base.sh");
    assert!(
        st.success(),
        "scripts/python-base.sh failed (mmdebstrap and Debian's mirror are needed)"
    );
    assert!(u.berth(&["images"]).ok().contains("3.9-slim-bullseye"));
    // The example, in the user's home.
    let src = common::project_root().join("examples/translate");
    for f in [
        "Dockerfile",
        "Pipfile",
        "Pipfile.lock",
        "cli.py",
        "README.md",
    ] {
        u.write(
            &format!("translate/{f}"),
            &std::fs::read(src.join(f)).unwrap(),
        );
    }
    let dir = u.home.join("translate");
    let built = u.berth(&["build", "-t", "translate", dir.to_str().unwrap()]);
    assert!(built.code() == 0, "{}", built.stderr());
    let out = u
        .berth(&[
            "run",
            "--rm",
            "translate",
            "-c",
            "pipenv run python cli.py 'good morning' --all",
        ])
        .ok();
    assert!(
        out.contains("buongiorno") && out.contains("buenos días"),
        "{out}"
    );
    // The files the build made belong to the user's ids, nobody else's.
    let owner = std::fs::metadata(u.home.join(".local/share/berth"))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    assert_eq!(owner, u.uid);
}

/// A layer with device nodes (Debian's rootfs has /dev/console, /dev/null…)
/// unpacks for a user, whose namespace may not make devices: they are left
/// out, as moby's and containers/storage's rootless unpackers leave them
/// out, and everything else of the layer is there (a FIFO too).
#[test]
fn a_layer_s_device_nodes_are_left_out_for_a_user() {
    let Some(u) = TestUser::with_busybox("dv", true) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("tree");
    std::fs::create_dir_all(tree.join("dev")).unwrap();
    std::fs::write(tree.join("kept"), "kept\n").unwrap();
    let mk = |p: &std::path::Path, mode: u32, dev: libc::dev_t| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mknod with a valid path.
        assert_eq!(unsafe { libc::mknod(c.as_ptr(), mode, dev) }, 0);
    };
    mk(
        &tree.join("dev/null"),
        libc::S_IFCHR | 0o666,
        libc::makedev(1, 3),
    );
    mk(&tree.join("dev/fifo"), libc::S_IFIFO | 0o644, 0);
    let tar = u.home.join("devs.tar");
    let st = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    std::os::unix::fs::chown(&tar, Some(u.uid), Some(u.uid)).unwrap();
    u.berth(&["import", tar.to_str().unwrap(), "devs"]).ok();
    // The image has no shell: look through a busybox container at its layer.
    u.berth(&["create", "--name", "devc", "devs", "x"]).ok();
    let out = u.berth(&["cp", "devc:/kept", "-"]).ok();
    assert!(out.contains("kept"), "{out}");
    let dev = u.berth(&["cp", "devc:/dev", "-"]).ok();
    assert!(
        dev.contains("dev/fifo") && !dev.contains("dev/null"),
        "{dev}"
    );
}

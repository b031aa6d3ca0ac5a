//! Helpers for the end-to-end tests: each test gets its own berth root in a
//! temporary directory and drives the real `berth` binary.
#![allow(dead_code)]

pub mod browser;
pub mod s3;
pub mod service;
pub mod user;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The `berth` binary cargo built for these tests.
/// Whether the program `tool` is installed; when it is not, prints one line
/// saying the test is skipped and which package brings the tool (`.ci/run`
/// installs every one of them), so a machine without it runs the rest.
pub fn have(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(d.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    if !found {
        eprintln!("skipped: {tool} is not installed (apt-get install {package})");
    }
    found
}

pub fn berth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

/// The project's root directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A berth root of its own, removed when dropped; optionally with a network
/// namespace of its own that every command runs in (see [`Berth::with_netns`]).
pub struct Berth {
    pub netns: Option<NetNs>,
    pub dir: tempfile::TempDir,
}

/// A network namespace made for one test, persisted by a bind mount on a file
/// in the test's directory. On drop every process still in it is killed and
/// the mount goes, so the namespace with its links and nft rules vanishes.
pub struct NetNs {
    pub path: PathBuf,
    fd: std::fs::File,
}

impl NetNs {
    pub fn new(path: PathBuf) -> NetNs {
        std::fs::write(&path, b"").expect("netns file");
        let p = path.clone();
        std::thread::spawn(move || {
            // SAFETY: unshare of this thread's network namespace only.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            let src = std::ffi::CString::new("/proc/thread-self/ns/net").unwrap();
            let dst = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
            // SAFETY: valid C strings; a plain bind mount.
            let r = unsafe {
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            assert_eq!(r, 0, "bind netns: {}", std::io::Error::last_os_error());
        })
        .join()
        .expect("netns thread");
        let fd = std::fs::File::open(&path).expect("open netns");
        let ns = NetNs { path, fd };
        let lo = ns
            .command("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip");
        assert!(lo.success());
        ns
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(program);
        let fd = self.fd.as_raw_fd();
        // SAFETY: setns between fork and exec touches only this child.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    }

    /// Runs `sh -c script` inside; returns (success, stdout + stderr).
    pub fn sh(&self, script: &str) -> (bool, String) {
        let o = self
            .command("sh")
            .args(["-c", script])
            .output()
            .expect("sh");
        let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&o.stderr));
        (o.status.success(), s)
    }

    /// Pids of the processes in the namespace.
    pub fn pids(&self) -> Vec<i32> {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&self.path).map(|m| m.ino()).unwrap_or(0);
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>()
                && std::fs::metadata(e.path().join("ns/net")).is_ok_and(|m| m.ino() == ino)
            {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        // Containers of a namespaced test go before the namespace does.
        if self.netns.is_some() {
            let ids = self.run(&["ps", "-aq"]).stdout();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.run(&args);
            }
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: these are this test's own monitors and servers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let dst = std::ffi::CString::new(self.path.to_str().unwrap()).unwrap();
        // SAFETY: unmounting the test's own bind mount.
        unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The result of one command.
pub struct Run {
    pub out: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert!(
            self.out.status.success(),
            "command failed ({:?}):\nstdout: {}\nstderr: {}",
            self.out.status,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }
    /// Asserts failure with `code` and returns stderr.
    #[track_caller]
    pub fn fails(&self, code: i32) -> String {
        assert_eq!(
            self.code(),
            code,
            "stdout: {}\nstderr: {}",
            self.stdout(),
            self.stderr()
        );
        self.stderr()
    }
}

impl Berth {
    /// A root on the host's network namespace, where containers default to
    /// `--network none` (BERTH_DEFAULT_NETWORK) so no test adds a bridge or
    /// NAT rules to the machine.
    pub fn new() -> Self {
        Berth {
            netns: None,
            dir: tempfile::Builder::new()
                .prefix("berth-e2e-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// A root whose commands all run in a network namespace made for this
    /// test (its "host"), where the default bridge network is used.
    pub fn with_netns() -> Self {
        let mut b = Berth::new();
        b.netns = Some(NetNs::new(b.dir.path().join("netns")));
        b
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = match &self.netns {
            Some(ns) => ns.command(berth_bin()),
            None => {
                let mut c = Command::new(berth_bin());
                c.env("BERTH_DEFAULT_NETWORK", "none");
                c
            }
        };
        c.args(args)
            .env("BERTH_ROOT", self.root())
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run {
            out: self.command(args).output().expect("spawn berth"),
        }
    }

    /// Runs berth from a chroot, as in a build sandbox or a rescue system:
    /// the whole host rbound under the test's directory, in a mount
    /// namespace of its own (so paths are the same inside and nothing
    /// reaches the host's mount table), and berth chrooted there.
    #[allow(dead_code)]
    pub fn run_chrooted(&self, args: &[&str]) -> Run {
        let jail = self.dir.path().join("jail");
        std::fs::create_dir_all(&jail).expect("jail");
        let mut script = format!(
            "mount --rbind / {j} && exec chroot {j} {berth}",
            j = jail.display(),
            berth = berth_bin()
        );
        for a in args {
            script.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        }
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c", &script])
            .env("BERTH_ROOT", self.root())
            .env("BERTH_DEFAULT_NETWORK", "none")
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .stdin(Stdio::null());
        Run {
            out: c.output().expect("spawn unshare"),
        }
    }

    /// Runs with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut c = self.command(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn berth");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = input.to_vec();
        let w = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().expect("wait");
        w.join().expect("writer");
        Run { out }
    }

    /// Imports the busybox base image as `name`, as the README does.
    pub fn import_busybox(&self, name: &str) -> String {
        let id = self
            .run(&[
                "import",
                "--change",
                "CMD [\"sh\"]",
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                busybox_tar().to_str().unwrap(),
                name,
            ])
            .ok();
        id.trim().to_string()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Waits (10 s at most) until the store has no removal under way: a
    /// `run --rm` returns once its container is gone from every listing,
    /// and deletes its files just after, in the background. A test that
    /// walks the store's directories itself waits for that first (berth's
    /// own prune, reset, check and df do).
    #[allow(dead_code)]
    pub fn settled(&self) {
        let root = self.root();
        let pending = || {
            [("containers", ".removing-"), ("snapshots/tmp", "rm-")]
                .iter()
                .any(|(d, prefix)| {
                    std::fs::read_dir(root.join(d))
                        .into_iter()
                        .flatten()
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
                })
        };
        for _ in 0..1000 {
            if !pending() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("removals still under way after 10 s");
    }
}

/// A busybox rootfs tarball made by scripts/busybox-rootfs.sh, shared by
/// the test processes: kept under `target/` by the script's and busybox's
/// fingerprint (made again when either changes), written to a name of its
/// own and renamed into place, so concurrent test binaries never read half
/// a file and nothing is left in /tmp.
pub fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let script = project_root().join("scripts/busybox-rootfs.sh");
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::fs::read(&script).unwrap_or_default().hash(&mut h);
        for bin in ["/bin/busybox", "/usr/bin/busybox"] {
            if let Ok(m) = std::fs::metadata(bin) {
                (m.len(), m.modified().ok()).hash(&mut h);
            }
        }
        let dir = project_root().join("target/berth-e2e");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!("busybox-{:016x}.tar", h.finish()));
        if out.is_file() {
            return out;
        }
        let tmp = dir.join(format!("busybox-{}.tar.tmp", std::process::id()));
        let st = Command::new(&script)
            .arg(&tmp)
            .status()
            .expect("run scripts/busybox-rootfs.sh");
        assert!(
            st.success(),
            "scripts/busybox-rootfs.sh failed (is busybox-static installed?)"
        );
        std::fs::rename(&tmp, &out).unwrap();
        out
    })
}

/// The manifest `repo:reference` at the registry `addr` (an image manifest,
/// OCI or docker's), parsed.
pub fn manifest_json(addr: &str, repo: &str, reference: &str) -> serde_json::Value {
    let (_, _, m) = curl(&[
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        &format!("http://{addr}/v2/{repo}/manifests/{reference}"),
    ]);
    serde_json::from_slice(&m).unwrap()
}

/// A loopback TCP port that was free a moment ago (for a server the test
/// is about to start).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Runs a host tool; panics with its output when it fails.
#[track_caller]
pub fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is not installed ({e}); .ci/run installs it"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `berth registry serve` on a free loopback port, stopped (SIGTERM) when dropped.
pub struct RegistryServer {
    pub child: std::process::Child,
    pub addr: String,
    pub storage: PathBuf,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl RegistryServer {
    /// Starts a server on `storage` with extra flags.
    pub fn start(storage: &Path, extra: &[&str]) -> RegistryServer {
        Self::start_env(storage, extra, &[])
    }

    /// Starts a server on `storage` with extra flags and environment.
    pub fn start_env(storage: &Path, extra: &[&str], env: &[(&str, &str)]) -> RegistryServer {
        use std::io::BufRead;
        let mut child = Command::new(berth_bin())
            .args(["registry", "serve", "--addr", "127.0.0.1:0", "--storage"])
            .arg(storage)
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth registry serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let first = lines
            .next()
            .expect("registry printed nothing")
            .expect("read");
        let addr = first
            .split("http://")
            .nth(1)
            .or_else(|| first.split("https://").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_string();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut g = l2.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        RegistryServer {
            child,
            addr,
            storage: storage.to_path_buf(),
            log,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid"),
            rustix::process::Signal::TERM,
        );
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl -s -i` (headers and body), with extra args.
pub fn curl(args: &[&str]) -> (u16, String, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl is not installed; .ci/run installs it");
    let raw = out.stdout;
    // Skip interim responses (100 Continue).
    let mut rest: &[u8] = &raw;
    loop {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("http response")
            + 4;
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if status == 100 {
            rest = &rest[end..];
            continue;
        }
        return (status, head, rest[end..].to_vec());
    }
}

/// A header's value from `curl -i` output.
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Runs `cmd` (an `attach` to a container that echoes its input, such as
/// `cat`), writes `line` until it comes back on its stdout (the attach may
/// still be connecting), then stops it. Returns what came back.
pub fn echo_through(mut cmd: Command, line: &str) -> Option<String> {
    use std::io::{BufRead, Write};
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut got = String::new();
        let _ = out.read_line(&mut got);
        let _ = tx.send(got);
    });
    let mut got = None;
    for _ in 0..50 {
        if input.write_all(format!("{line}\n").as_bytes()).is_err() {
            break;
        }
        if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            got = Some(l);
            break;
        }
    }
    drop(input);
    let _ = child.kill();
    let _ = child.wait();
    got
}

//! Ordinary users for the rootless tests: each made by the test (`useradd`,
//! with or without a subordinate id range), with copies of the berth
//! binaries it may execute, and removed with everything it started when
//! the [`TestUser`] drops, so the machine is left as it was found.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use super::{berth_bin, busybox_tar};

/// useradd/userdel lock /etc/passwd: one at a time in this process.
static USERS: Mutex<()> = Mutex::new(());

/// A user made for one test.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
    /// berth and berth-runtime, where the user may run them.
    bin: tempfile::TempDir,
}

fn run_root(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// Kills every process of `user` (pause process, monitors, pasta,
/// containers, fuse-overlayfs), three times over for the ones forked meanwhile.
pub fn kill_processes(user: &str) {
    for _ in 0..3 {
        let _ = run_root("pkill", &["-KILL", "-u", user]);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

impl TestUser {
    /// A new user; `sub_ids` gives them a subordinate range (useradd's
    /// default), else none. `None` when users cannot be made here.
    pub fn new(tag: &str, sub_ids: bool) -> Option<TestUser> {
        if !super::have("useradd", "passwd") {
            return None;
        }
        let name = format!("brt{tag}{}", std::process::id() % 100_000);
        {
            let _g = USERS.lock().unwrap_or_else(|p| p.into_inner());
            let _ = run_root("userdel", &["-r", &name]);
            let mut args = vec!["-m", "-s", "/bin/sh"];
            if !sub_ids {
                args.extend(["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]);
            }
            args.push(&name);
            let out = run_root("useradd", &args);
            assert!(
                out.status.success(),
                "useradd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let id = run_root("id", &["-u", &name]);
        let uid: u32 = String::from_utf8_lossy(&id.stdout).trim().parse().unwrap();
        let bin = tempfile::Builder::new()
            .prefix("berth-rootless-bin-")
            .tempdir()
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let src = Path::new(berth_bin());
        for b in ["berth", "berth-runtime", "berth-monitor"] {
            let from = src.with_file_name(b);
            if from.exists() {
                std::fs::copy(&from, bin.path().join(b)).unwrap();
            }
        }
        let home = PathBuf::from(format!("/home/{name}"));
        let u = TestUser {
            name,
            uid,
            home,
            bin,
        };
        // The busybox base, where the user can read it.
        std::fs::copy(busybox_tar(), u.home.join("busybox.tar")).unwrap();
        u.chown_home();
        Some(u)
    }

    /// [`TestUser::new`] with the busybox base imported as `busybox`.
    pub fn with_busybox(tag: &str, sub_ids: bool) -> Option<TestUser> {
        let u = TestUser::new(tag, sub_ids)?;
        u.import_busybox("busybox");
        Some(u)
    }

    fn chown_home(&self) {
        let _ = run_root(
            "chown",
            &[
                "-R",
                &format!("{0}:{0}", self.name),
                self.home.to_str().unwrap(),
            ],
        );
    }

    /// A file in the user's home with `content`, theirs.
    pub fn write(&self, rel: &str, content: &[u8]) -> PathBuf {
        let p = self.home.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        self.chown_home();
        p
    }

    /// A command run as the user (their HOME, no XDG dirs: berth's own
    /// defaults), with `args` after `program`.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={}", self.uid),
            &format!("--regid={}", self.uid),
            "--init-groups",
            "--reset-env",
        ])
        .arg(program)
        .args(args)
        .env("HOME", &self.home)
        .env("USER", &self.name)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .current_dir(&self.home)
        .stdin(Stdio::null());
        c
    }

    /// The path of the user's copy of `bin` (berth, berth-runtime, berth-monitor).
    pub fn bin_path(&self, bin: &str) -> String {
        self.bin.path().join(bin).display().to_string()
    }

    /// Runs the user's berth.
    pub fn berth(&self, args: &[&str]) -> super::Run {
        let bin = self.bin.path().join("berth");
        super::Run {
            out: self
                .command(bin.to_str().unwrap(), args)
                .output()
                .expect("setpriv (util-linux)"),
        }
    }

    /// The user's berth with `input` on stdin.
    pub fn berth_stdin(&self, args: &[&str], input: &[u8]) -> super::Run {
        use std::io::Write;
        let bin = self.bin.path().join("berth");
        let mut c = self.command(bin.to_str().unwrap(), args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("setpriv");
        child.stdin.take().unwrap().write_all(input).unwrap();
        super::Run {
            out: child.wait_with_output().unwrap(),
        }
    }

    /// Imports the busybox base as `name`.
    pub fn import_busybox(&self, name: &str) {
        let tar = self.home.join("busybox.tar");
        self.berth(&[
            "import",
            "--change",
            "CMD [\"sh\"]",
            tar.to_str().unwrap(),
            name,
        ])
        .ok();
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Everything the user started (pause process, monitors, pasta,
        // containers), then the user and their files.
        kill_processes(&self.name);
        let _g = USERS.lock().unwrap_or_else(|p| p.into_inner());
        let _ = run_root("userdel", &["-r", "-f", &self.name]);
        let _ = std::fs::remove_dir_all(format!("/tmp/berth-{}", self.uid));
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

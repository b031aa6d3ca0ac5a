//! Container records: what was asked for (config and host config), and the
//! state (status, pid, exit code, times), in `containers/<id>/container.json`,
//! written atomically under the container's lock. Lookups by full id, unique id
//! prefix or name, as docker does them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{EngineError, Result};

/// Docker's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Frozen.
    Paused,
    /// Waiting to be restarted by its policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Stopped.
    Exited,
    /// Broken.
    Dead,
}

impl Status {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// A bind or volume mount of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPoint {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub typ: String,
    /// Volume name, for volumes.
    #[serde(rename = "Name", default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Host path (or the volume's data directory).
    #[serde(rename = "Source")]
    pub source: String,
    /// Path in the container.
    #[serde(rename = "Destination")]
    pub destination: String,
    /// Read-write.
    #[serde(rename = "RW")]
    pub rw: bool,
    /// tmpfs options / mount options.
    #[serde(rename = "Options", default)]
    pub options: Vec<String>,
}

/// Restart policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RestartPolicy {
    /// `no`, `always`, `unless-stopped`, `on-failure`.
    #[serde(rename = "Name")]
    pub name: String,
    /// For on-failure.
    #[serde(rename = "MaximumRetryCount")]
    pub max_retries: u32,
}

/// How the container runs (docker's Config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Config {
    /// Hostname.
    pub hostname: String,
    /// Domain name.
    pub domainname: String,
    /// User.
    pub user: String,
    /// Allocate a tty.
    pub tty: bool,
    /// Keep stdin open.
    pub open_stdin: bool,
    /// Environment.
    pub env: Vec<String>,
    /// Command.
    pub cmd: Option<Vec<String>>,
    /// Image as given.
    pub image: String,
    /// Working directory.
    pub working_dir: String,
    /// Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Stop signal.
    pub stop_signal: Option<String>,
    /// Stop timeout (seconds).
    pub stop_timeout: Option<i64>,
    /// Exposed ports.
    #[serde(default)]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    /// The healthcheck (the image's, under the `--health-*` flags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<berth_types::image::HealthConfig>,
}

/// Resources and host-side settings (docker's HostConfig).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    /// `-v` binds as given.
    pub binds: Vec<String>,
    /// Network mode.
    pub network_mode: String,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// `--rm`.
    pub auto_remove: bool,
    /// Added capabilities.
    pub cap_add: Vec<String>,
    /// Dropped capabilities.
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--read-only`.
    pub readonly_rootfs: bool,
    /// `--security-opt`.
    pub security_opt: Vec<String>,
    /// `--tmpfs` dest → options.
    pub tmpfs: BTreeMap<String, String>,
    /// `--init`.
    pub init: bool,
    /// Memory limit, bytes.
    pub memory: i64,
    /// Memory + swap, bytes (-1 unlimited).
    pub memory_swap: i64,
    /// CPU quota in nano-CPUs (`--cpus`).
    pub nano_cpus: i64,
    /// CPU shares.
    pub cpu_shares: i64,
    /// cpuset.
    pub cpuset_cpus: String,
    /// pids limit.
    pub pids_limit: Option<i64>,
    /// `--ulimit name=soft[:hard]`.
    pub ulimits: Vec<Ulimit>,
    /// `--add-host`.
    pub extra_hosts: Vec<String>,
    /// `--dns`.
    pub dns: Vec<String>,
    /// `-p`: `80/tcp` → host bindings asked for.
    #[serde(default)]
    pub port_bindings: BTreeMap<String, Vec<crate::network::PortBinding>>,
    /// `-P`: every exposed port on a random host port.
    #[serde(default)]
    pub publish_all_ports: bool,
    /// `--device /dev/x[:/dev/y[:rwm]]`: host devices.
    #[serde(default)]
    pub devices: Vec<DeviceMapping>,
    /// `--gpus`, and `--device vendor.com/class=name` (CDI devices).
    #[serde(default)]
    pub device_requests: Vec<DeviceRequest>,
}

/// One host device given to a container (docker's `Devices` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeviceMapping {
    /// The node on the host (or a directory of nodes).
    pub path_on_host: String,
    /// Where it appears in the container.
    pub path_in_container: String,
    /// The cgroup access, `rwm` or part of it.
    pub cgroup_permissions: String,
}

/// A request for devices by driver (docker's `DeviceRequests` entry):
/// `cdi` with qualified names, or a GPU driver by count or ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceRequest {
    /// `cdi`, `nvidia`, or empty (any that has the capabilities).
    #[serde(default)]
    pub driver: String,
    /// How many (-1: all); with no ids.
    #[serde(default)]
    pub count: i64,
    /// Device ids (GPU indexes or UUIDs; CDI names for `cdi`).
    #[serde(default, rename = "DeviceIDs", deserialize_with = "null_as_empty")]
    pub device_ids: Vec<String>,
    /// Alternatives of capability sets (`[["gpu"]]`).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub capabilities: Vec<Vec<String>>,
    /// Driver options.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub options: BTreeMap<String, String>,
}

/// A JSON `null` (docker-py and the docker CLI send them) as an empty value.
fn null_as_empty<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One `--ulimit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ulimit {
    /// `nofile`.
    pub name: String,
    /// Soft.
    pub soft: i64,
    /// Hard.
    pub hard: i64,
}

/// Runtime state (docker's State).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct State {
    /// Status.
    pub status: Status,
    /// Host pid of the process (0 when not running).
    pub pid: i32,
    /// Start time of the pid (to catch reuse).
    #[serde(default)]
    pub pid_start: u64,
    /// Host pid of the monitor of a detached container.
    #[serde(default)]
    pub monitor_pid: i32,
    /// Exit code.
    pub exit_code: i32,
    /// Error that kept it from running.
    pub error: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// Killed by the OOM killer.
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Restarts done by the policy.
    pub restart_count: u32,
    /// Stopped by the user (for unless-stopped).
    #[serde(default)]
    pub stopped_by_user: bool,
    /// The process that created it and its start time: while that process
    /// lives a created container is about to be started (`run`), and a
    /// prune beside it leaves it alone, as a build's lease protects its
    /// snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<(i32, u64)>,
    /// The healthcheck's state, read from `health.json` beside the record
    /// (its prober's file; see [`crate::health`]); never written here.
    #[serde(skip)]
    pub health: Option<crate::health::Health>,
}

impl State {
    /// Whether the process that created the container still runs (so a
    /// created container is still about to be started).
    pub fn creator_alive(&self) -> bool {
        self.creator.is_some_and(|(pid, start)| {
            berth_runtime::state::proc_stat(pid)
                .is_some_and(|(st, s)| s == start && st != 'Z' && st != 'X')
        })
    }
}

/// A container record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Container {
    /// 64-hex id.
    pub id: String,
    /// Name (without the leading `/`).
    pub name: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// The image id.
    pub image_id: String,
    /// The process's path.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Config.
    pub config: Config,
    /// Host config.
    pub host_config: HostConfig,
    /// Mounts.
    pub mounts: Vec<MountPoint>,
    /// State.
    pub state: State,
    /// Networks joined and ports published.
    #[serde(default)]
    pub network_settings: crate::network::NetworkSettings,
}

impl Container {
    /// The 12-hex short id.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
}

/// Reads a container record.
pub fn load(dir: &Path) -> Result<Container> {
    let p = dir.join("container.json");
    let data = std::fs::read(&p).map_err(|e| EngineError::io("read", &p, e))?;
    let mut c: Container = serde_json::from_slice(&data)
        .map_err(|e| EngineError::Corrupt(format!("{}: {e}", p.display())))?;
    if crate::health::active(c.config.healthcheck.as_ref()) {
        c.state.health = crate::health::load(dir);
    }
    Ok(c)
}

/// The name and id of the container whose record is in `dir`: what a name
/// check needs, without building the whole record.
pub fn load_name(dir: &Path) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(rename = "Name")]
        name: String,
        #[serde(rename = "Id")]
        id: String,
    }
    let data = std::fs::read(dir.join("container.json")).ok()?;
    let n: Named = serde_json::from_slice(&data).ok()?;
    Some((n.name, n.id))
}

/// Writes a container record atomically, and durably unless it is an
/// `--rm` container's (see [`save_unsynced`]).
pub fn save(dir: &Path, c: &Container) -> Result<()> {
    write_record(dir, c, durable(c))
}

/// Whether `c`'s record must survive a crash: an `--rm` container's need
/// not, the container does not.
fn durable(c: &Container) -> bool {
    !c.host_config.auto_remove
}

/// Writes a container record atomically (whole, by rename) but without
/// fsync: for a record whose durability waits for [`sync`] (a create
/// shows the record under the lock on names, and syncs it after), or
/// does not matter (an `--rm` container does not outlive a crash). What a
/// power loss leaves of one may be an empty `container.json`, which a
/// prune clears (see `Engine::finish_abandoned_removals`).
pub fn save_unsynced(dir: &Path, c: &Container) -> Result<()> {
    write_record(dir, c, false)
}

/// Makes the record of `c` in `dir` durable (an `--rm` container's is left
/// as it is, as [`save`] leaves it).
pub fn sync(dir: &Path, c: &Container) -> Result<()> {
    if !durable(c) {
        return Ok(());
    }
    let p = dir.join("container.json");
    std::fs::File::open(&p)
        .and_then(|f| f.sync_all())
        .map_err(|e| EngineError::io("fsync", &p, e))
}

fn write_record(dir: &Path, c: &Container, durable: bool) -> Result<()> {
    let p = dir.join("container.json");
    let tmp = dir.join(format!(".container.json.{}", std::process::id()));
    let data = serde_json::to_vec_pretty(c).expect("container serialises");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &p)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        EngineError::io("write", &p, e)
    })
}

/// An exclusive lock on a container (released on drop).
pub struct Lock {
    _f: std::fs::File,
}

/// Locks `dir/lock`.
pub fn lock(dir: &Path) -> Result<Lock> {
    let p = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| EngineError::io("open", &p, e))?;
    f.lock().map_err(|e| EngineError::io("lock", &p, e))?;
    Ok(Lock { _f: f })
}

/// Docker's name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A random 64-hex id.
pub fn new_id() -> String {
    let mut buf = [0u8; 32];
    let _ = rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty());
    hex::encode(buf)
}

/// docker's generated names: `adjective_surname`.
pub fn random_name(id: &str) -> String {
    const ADJ: &[&str] = &[
        "admiring", "bold", "brave", "calm", "clever", "eager", "ecstatic", "focused", "gallant",
        "happy", "hopeful", "jolly", "keen", "laughing", "loving", "modest", "nifty", "peaceful",
        "quirky", "relaxed", "serene", "sharp", "stoic", "tender", "upbeat", "vigilant",
        "wizardly", "youthful", "zealous", "zen",
    ];
    const NAMES: &[&str] = &[
        "albattani",
        "babbage",
        "curie",
        "darwin",
        "einstein",
        "feynman",
        "galileo",
        "hopper",
        "hypatia",
        "johnson",
        "kepler",
        "lamarr",
        "lovelace",
        "mayer",
        "noether",
        "pascal",
        "ritchie",
        "shannon",
        "thompson",
        "turing",
        "volta",
        "wozniak",
        "yonath",
        "zhukovsky",
    ];
    let n = u64::from_str_radix(&id[..12], 16).unwrap_or(0);
    format!(
        "{}_{}",
        ADJ[(n % ADJ.len() as u64) as usize],
        NAMES[((n / 97) % NAMES.len() as u64) as usize]
    )
}

/// The directory of every container under `root`.
pub fn all_dirs(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .filter(|p| p.join("container.json").exists())
                .collect()
        })
        .unwrap_or_default()
}

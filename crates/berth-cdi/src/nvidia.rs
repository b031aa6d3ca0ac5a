//! A CDI spec for the NVIDIA GPUs of a host, read from the driver itself
//! (no toolkit): the GPUs from `/proc/driver/nvidia/gpus/*/information`
//! (minor number, UUID), the driver version from
//! `/proc/driver/nvidia/version`, the control nodes (`/dev/nvidiactl`,
//! `/dev/nvidia-uvm`, `/dev/nvidia-uvm-tools`, `/dev/nvidia-modeset`,
//! `/dev/nvidia-caps/*`), the driver's user-space libraries of that version
//! in the usual library directories, its tools (`nvidia-smi`, …), firmware
//! and the persistenced socket. Like `nvidia-ctk cdi generate`: one device
//! per GPU by index and by UUID, and `all`; the files mounted read-only at
//! their host paths; a createContainer hook that makes the libraries'
//! soname links and refreshes the container's linker cache
//! ([`create_symlinks`], [`update_ldcache`], run as `berth system cdi
//! hook …`).
//!
//! Everything is read under a root directory (`/` on a host), so a fake
//! driver tree tests the generator.

use std::path::{Path, PathBuf};

use crate::CdiError;
use crate::spec::{ContainerEdits, Device, DeviceNode, Hook, Mount, Spec};

/// The kind of the GPUs' devices.
pub const KIND: &str = "nvidia.com/gpu";

/// The driver's compute and video libraries, as nvidia-ctk mounts them.
const LIBRARIES: &[&str] = &[
    "libcuda",
    "libcudadebugger",
    "libnvidia-allocator",
    "libnvidia-cfg",
    "libnvidia-encode",
    "libnvidia-gpucomp",
    "libnvidia-ml",
    "libnvidia-nvvm",
    "libnvidia-opencl",
    "libnvidia-opticalflow",
    "libnvidia-pkcs11",
    "libnvidia-pkcs11-openssl3",
    "libnvidia-ptxjitcompiler",
    "libnvcuvid",
];

/// Where the libraries are looked for, under the root.
const LIBRARY_DIRS: &[&str] = &[
    "usr/lib/x86_64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "usr/lib64",
    "usr/lib",
    "lib/x86_64-linux-gnu",
    "lib64",
];

/// The driver's tools.
const BINARIES: &[&str] = &[
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
];

/// The control nodes every GPU device needs.
const CONTROL_NODES: &[&str] = &[
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
];

/// One GPU the driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// Its device minor (`/dev/nvidia<minor>`), which is also its index.
    pub minor: u32,
    /// `GPU-…`, when the driver says.
    pub uuid: Option<String>,
    /// The model name.
    pub model: Option<String>,
}

/// What the driver under `root` offers.
#[derive(Debug, Clone, Default)]
pub struct Driver {
    /// The driver's version (`550.54.14`).
    pub version: String,
    /// The GPUs, by minor.
    pub gpus: Vec<Gpu>,
}

/// The value after `key:` on a line of a driver information file.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// The driver under `root`: None when no NVIDIA driver is loaded there.
pub fn discover(root: &Path) -> Option<Driver> {
    let version_file = std::fs::read_to_string(root.join("proc/driver/nvidia/version")).ok()?;
    // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 …"
    let version = version_file
        .split_whitespace()
        .skip_while(|w| *w != "Module")
        .nth(1)
        .filter(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))?
        .to_string();
    let mut gpus = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("proc/driver/nvidia/gpus")) {
        for e in rd.flatten() {
            let Ok(info) = std::fs::read_to_string(e.path().join("information")) else {
                continue;
            };
            let Some(minor) = field(&info, "Device Minor").and_then(|m| m.parse().ok()) else {
                continue;
            };
            gpus.push(Gpu {
                minor,
                uuid: field(&info, "GPU UUID").filter(|u| u.starts_with("GPU-")),
                model: field(&info, "Model"),
            });
        }
    }
    if gpus.is_empty() {
        // No per-GPU information: the device nodes say which GPUs there are.
        if let Ok(rd) = std::fs::read_dir(root.join("dev")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(n) = name.strip_prefix("nvidia").and_then(|n| n.parse().ok()) {
                    gpus.push(Gpu {
                        minor: n,
                        uuid: None,
                        model: None,
                    });
                }
            }
        }
    }
    gpus.sort_by_key(|g| g.minor);
    Some(Driver { version, gpus })
}

/// A device node at its host path, numbers left to [`crate::edits`].
fn node(path: &str) -> DeviceNode {
    DeviceNode {
        path: path.to_string(),
        ..Default::default()
    }
}

/// A read-only bind of a host file at the same path.
fn ro_mount(path: &str) -> Mount {
    Mount {
        host_path: path.to_string(),
        container_path: path.to_string(),
        options: vec!["ro".into(), "nosuid".into(), "nodev".into(), "bind".into()],
        typ: None,
    }
}

/// The host path (from `/`) of `p`, a path under `root`.
fn host_path(root: &Path, p: &Path) -> String {
    Path::new("/")
        .join(p.strip_prefix(root).unwrap_or(p))
        .display()
        .to_string()
}

/// The driver's libraries of `version` under `root`: each file's host path
/// and the soname links beside it (symlinks in its directory, such as
/// `libcuda.so.1`, that point at it).
fn libraries(root: &Path, version: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for dir in LIBRARY_DIRS {
        let d = root.join(dir);
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for lib in LIBRARIES {
            let file = d.join(format!("{lib}.so.{version}"));
            if !file.is_file() || file.is_symlink() {
                continue;
            }
            let target = file.file_name().expect("a name").to_owned();
            let links: Vec<String> = entries
                .iter()
                .filter(|e| {
                    e.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        n.starts_with(&format!("{lib}.so")) && n != *target.to_string_lossy()
                    }) && std::fs::read_link(e).is_ok_and(|t| t.file_name() == Some(&target))
                })
                .filter_map(|e| Some(e.file_name()?.to_string_lossy().into_owned()))
                .collect();
            out.push((host_path(root, &file), links));
        }
    }
    out
}

/// The spec for the driver under `root`, with hooks run by `hook_program`
/// (`berth system cdi hook …`). An error when there is no driver or no GPU.
pub fn generate(root: &Path, hook_program: &Path) -> Result<Spec, CdiError> {
    let driver = discover(root).ok_or_else(|| {
        CdiError::Device(format!(
            "no NVIDIA driver is loaded ({} is missing)",
            root.join("proc/driver/nvidia/version").display()
        ))
    })?;
    if driver.gpus.is_empty() {
        return Err(CdiError::Device(format!(
            "the NVIDIA driver {} reports no GPU",
            driver.version
        )));
    }
    let mut common = ContainerEdits {
        device_nodes: control_nodes(root),
        ..Default::default()
    };
    let (links, folders) = driver_files(root, &driver.version, &mut common.mounts);
    // berth itself, as `system cdi hook NAME --FLAG value…`.
    let hook = |name: &str, flag: &str, values: &[String]| Hook {
        hook_name: "createContainer".into(),
        path: hook_program.display().to_string(),
        args: ["berth", "system", "cdi", "hook", name]
            .iter()
            .map(|a| a.to_string())
            .chain(values.iter().flat_map(|v| [flag.to_string(), v.clone()]))
            .collect(),
        env: Vec::new(),
        timeout: None,
    };
    if !links.is_empty() {
        common.hooks.push(hook("create-symlinks", "--link", &links));
    }
    if !folders.is_empty() {
        common
            .hooks
            .push(hook("update-ldcache", "--folder", &folders));
    }
    Ok(Spec {
        cdi_version: "0.5.0".into(),
        kind: KIND.into(),
        annotations: Default::default(),
        devices: gpu_devices(&driver.gpus),
        container_edits: common,
    })
}

/// The control nodes under `root` every GPU needs, `/dev/nvidia-caps/*` too.
fn control_nodes(root: &Path) -> Vec<DeviceNode> {
    let mut nodes: Vec<DeviceNode> = CONTROL_NODES
        .iter()
        .filter(|n| root.join(n.trim_start_matches('/')).exists())
        .map(|n| node(n))
        .collect();
    if let Ok(rd) = std::fs::read_dir(root.join("dev/nvidia-caps")) {
        let mut caps: Vec<String> = rd
            .flatten()
            .map(|e| format!("/dev/nvidia-caps/{}", e.file_name().to_string_lossy()))
            .collect();
        caps.sort();
        nodes.extend(caps.iter().map(|c| node(c)));
    }
    nodes
}

/// The driver's files of `version` under `root` as read-only mounts (its
/// libraries, tools, firmware, the persistenced socket), and what the hooks
/// need: the libraries' soname links (`target::link`) and their folders.
fn driver_files(
    root: &Path,
    version: &str,
    mounts: &mut Vec<crate::spec::Mount>,
) -> (Vec<String>, Vec<String>) {
    let exists = |p: &str| root.join(p.trim_start_matches('/')).exists();
    let mut links = Vec::new();
    let mut folders: Vec<String> = Vec::new();
    for (path, sonames) in &libraries(root, version) {
        mounts.push(ro_mount(path));
        let p = Path::new(path);
        let dir = p
            .parent()
            .expect("a library's directory")
            .display()
            .to_string();
        let name = p
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        for s in sonames {
            links.push(format!("{name}::{dir}/{s}"));
        }
        if !folders.contains(&dir) {
            folders.push(dir);
        }
    }
    for b in BINARIES {
        let p = format!("/usr/bin/{b}");
        if exists(&p) {
            mounts.push(ro_mount(&p));
        }
    }
    let firmware = root.join(format!("lib/firmware/nvidia/{version}"));
    if let Ok(rd) = std::fs::read_dir(&firmware) {
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files.iter().filter(|f| f.is_file()) {
            mounts.push(ro_mount(&host_path(root, f)));
        }
    }
    if let Some(sock) = [
        "/run/nvidia-persistenced/socket",
        "/var/run/nvidia-persistenced/socket",
    ]
    .into_iter()
    .find(|s| exists(s))
    {
        mounts.push(ro_mount(sock));
    }
    (links, folders)
}

/// One device per GPU by index and by UUID, and `all`.
fn gpu_devices(gpus: &[Gpu]) -> Vec<Device> {
    let nodes = |gs: &[&Gpu]| ContainerEdits {
        device_nodes: gs
            .iter()
            .map(|g| node(&format!("/dev/nvidia{}", g.minor)))
            .collect(),
        ..Default::default()
    };
    let device = |name: String, container_edits| Device {
        name,
        annotations: Default::default(),
        container_edits,
    };
    let mut devices = Vec::new();
    for g in gpus {
        devices.push(device(g.minor.to_string(), nodes(&[g])));
        if let Some(u) = &g.uuid {
            devices.push(device(u.clone(), nodes(&[g])));
        }
    }
    devices.push(device(
        "all".into(),
        nodes(&gpus.iter().collect::<Vec<_>>()),
    ));
    devices
}

/// The container's root directory, from the OCI state a hook reads on
/// stdin (its bundle, and the bundle's `config.json` `root.path`).
pub fn rootfs_from_state(state: &[u8]) -> Result<PathBuf, String> {
    let st: serde_json::Value =
        serde_json::from_slice(state).map_err(|e| format!("the container state: {e}"))?;
    let bundle = PathBuf::from(
        st["bundle"]
            .as_str()
            .ok_or("the container state has no bundle")?,
    );
    let cfg_path = bundle.join("config.json");
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&cfg_path).map_err(|e| format!("{}: {e}", cfg_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    let root = PathBuf::from(cfg["root"]["path"].as_str().unwrap_or("rootfs"));
    Ok(if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    })
}

/// The `create-symlinks` hook: each `target::link` made inside `rootfs`
/// (the link's directories too), resolved there so no link in the
/// container's own files leads out of it; an existing link is left.
pub fn create_symlinks(rootfs: &Path, links: &[String]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let root = pathrs::Root::open(rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    for l in links {
        let (target, link) = l
            .split_once("::")
            .ok_or_else(|| format!("--link {l:?}: not target::link"))?;
        let link = Path::new(link);
        if let Some(dir) = link.parent() {
            root.mkdir_all(dir, &std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        if root.resolve_nofollow(link).is_ok() {
            continue;
        }
        root.create(link, &pathrs::InodeType::Symlink(PathBuf::from(target)))
            .map_err(|e| format!("{}: {e}", link.display()))?;
    }
    Ok(())
}

/// The `update-ldcache` hook: the folders listed in the container's
/// `/etc/ld.so.conf.d/00-berth-cdi.conf` (written inside `rootfs`), then
/// the host's `ldconfig -r` run over the container's root when the image
/// has a linker cache (a static image has none to update). The host's
/// ldconfig, chrooted by `-r`: no program of the image runs.
pub fn update_ldcache(rootfs: &Path, folders: &[String]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let root = pathrs::Root::open(rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    let conf_dir = Path::new("/etc/ld.so.conf.d");
    root.mkdir_all(conf_dir, &std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", conf_dir.display()))?;
    let conf = conf_dir.join("00-berth-cdi.conf");
    let _ = root.remove_file(&conf);
    let mut f = root
        .create_file(
            &conf,
            pathrs::flags::OpenFlags::O_WRONLY | pathrs::flags::OpenFlags::O_EXCL,
            &std::fs::Permissions::from_mode(0o644),
        )
        .map_err(|e| format!("{}: {e}", conf.display()))?;
    f.write_all(format!("{}\n", folders.join("\n")).as_bytes())
        .map_err(|e| format!("{}: {e}", conf.display()))?;
    let has_cache = root.resolve("/etc/ld.so.cache").is_ok();
    let ldconfig = ["/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if let (true, Some(ldconfig)) = (has_cache, ldconfig) {
        let st = std::process::Command::new(ldconfig)
            .arg("-r")
            .arg(rootfs)
            .status()
            .map_err(|e| format!("{ldconfig}: {e}"))?;
        if !st.success() {
            return Err(format!("{ldconfig} -r {}: {st}", rootfs.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver laid out as the NVIDIA installer lays it out, under a temp
    /// root: two GPUs, the control nodes (regular files: only their paths
    /// matter here), libraries with their soname links, tools, firmware.
    fn fake_driver(root: &Path) {
        let w = |p: &str, body: &str| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        };
        w(
            "proc/driver/nvidia/version",
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n",
        );
        for (bus, minor, uuid) in [
            (
                "0000:01:00.0",
                0,
                "GPU-11111111-2222-3333-4444-555555555555",
            ),
            (
                "0000:02:00.0",
                1,
                "GPU-66666666-7777-8888-9999-000000000000",
            ),
        ] {
            w(
                &format!("proc/driver/nvidia/gpus/{bus}/information"),
                &format!(
                    "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 42\nGPU UUID: \t {uuid}\nVideo BIOS: \t 96.00.74.00.01\nBus Type: \t PCIe\nDMA Size: \t 52 bits\nDevice Minor: \t {minor}\n"
                ),
            );
            w(&format!("dev/nvidia{minor}"), "");
        }
        for n in ["dev/nvidiactl", "dev/nvidia-uvm", "dev/nvidia-uvm-tools"] {
            w(n, "");
        }
        w("dev/nvidia-caps/nvidia-cap1", "");
        let lib = "usr/lib/x86_64-linux-gnu";
        for l in ["libcuda", "libnvidia-ml", "libnvidia-ptxjitcompiler"] {
            w(&format!("{lib}/{l}.so.550.54.14"), "ELF");
            std::os::unix::fs::symlink(
                format!("{l}.so.550.54.14"),
                root.join(format!("{lib}/{l}.so.1")),
            )
            .unwrap();
        }
        // An older version's leftover and an unrelated library: not mounted.
        w(&format!("{lib}/libcuda.so.535.1.1"), "old");
        w(&format!("{lib}/libz.so.1.2.13"), "zlib");
        w("usr/bin/nvidia-smi", "#!");
        w("usr/bin/nvidia-persistenced", "#!");
        w("lib/firmware/nvidia/550.54.14/gsp_ga10x.bin", "fw");
        w("run/nvidia-persistenced/socket", "");
    }

    #[test]
    fn the_spec_from_a_driver_tree_matches_the_golden_file() {
        let t = tempfile::tempdir().unwrap();
        fake_driver(t.path());
        let spec = generate(t.path(), Path::new("/usr/bin/berth")).unwrap();
        let yaml = serde_norway::to_string(&spec).unwrap();
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/nvidia-golden.yaml");
        if std::env::var_os("BERTH_UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &yaml).unwrap();
        }
        assert_eq!(
            yaml,
            std::fs::read_to_string(&golden).unwrap(),
            "rerun with BERTH_UPDATE_GOLDEN=1 to accept a deliberate change"
        );
        // And it reads back as a valid spec.
        crate::spec::parse(Path::new("nvidia.yaml"), yaml.as_bytes()).unwrap();
    }

    #[test]
    fn no_driver_or_no_gpu_is_said() {
        let t = tempfile::tempdir().unwrap();
        let e = generate(t.path(), Path::new("/b")).unwrap_err().to_string();
        assert!(e.contains("no NVIDIA driver"), "{e}");
        std::fs::create_dir_all(t.path().join("proc/driver/nvidia")).unwrap();
        std::fs::write(
            t.path().join("proc/driver/nvidia/version"),
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  x\n",
        )
        .unwrap();
        let e = generate(t.path(), Path::new("/b")).unwrap_err().to_string();
        assert!(e.contains("reports no GPU"), "{e}");
    }

    #[test]
    fn hooks_make_links_and_the_loader_config_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let rootfs = t.path().join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        // A link in the image pointing out of it is not followed.
        std::os::unix::fs::symlink(t.path(), rootfs.join("escape")).unwrap();
        create_symlinks(
            &rootfs,
            &["libcuda.so.550::/usr/lib/x86_64-linux-gnu/libcuda.so.1".into()],
        )
        .unwrap();
        // Refused or made inside: never outside.
        let _ = create_symlinks(&rootfs, &["x::/escape/planted".into()]);
        assert_eq!(
            std::fs::read_link(rootfs.join("usr/lib/x86_64-linux-gnu/libcuda.so.1")).unwrap(),
            Path::new("libcuda.so.550")
        );
        assert!(
            !t.path().join("planted").exists(),
            "nothing made outside the root"
        );
        update_ldcache(&rootfs, &["/usr/lib/x86_64-linux-gnu".into()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(rootfs.join("etc/ld.so.conf.d/00-berth-cdi.conf")).unwrap(),
            "/usr/lib/x86_64-linux-gnu\n"
        );
        assert!(create_symlinks(&rootfs, &["no-separator".into()]).is_err());
    }
}

//! The devices a container asks for, as docker gives them: host device
//! nodes (`--device /dev/x[:/dev/y[:rwm]]`, a directory meaning every node
//! under it), CDI devices by qualified name (`--device vendor.com/class=name`,
//! docker 25's `cdi` device requests), and GPUs (`--gpus all|N|device=…`,
//! mapped onto the CDI devices of `nvidia.com/gpu`; with no such spec on
//! the host, one is generated from the NVIDIA driver the first time, into
//! the run-time spec directory). [`check`] runs at create (an unknown device
//! fails there, exit 125); [`apply`] edits the spec at each start, so a
//! spec refreshed after a driver update is what the next start gets.

use std::path::{Path, PathBuf};

use berth_cdi::edits::{Node, add_node};
use berth_cdi::{Registry, Resolved};
use oci_spec::runtime::Spec;

use crate::container::{DeviceMapping, DeviceRequest, HostConfig};
use crate::{EngineError, Result};

/// The CDI names a container's device requests come to.
fn cdi_names(reqs: &[DeviceRequest], reg: &mut Registry) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for r in reqs {
        if r.driver == "cdi" {
            for id in &r.device_ids {
                berth_cdi::registry::split_name(id)
                    .map_err(|e| EngineError::Invalid(e.to_string()))?;
                names.push(id.clone());
            }
            continue;
        }
        let gpu = r.capabilities.is_empty()
            || r.capabilities
                .iter()
                .any(|set| set.iter().any(|c| c == "gpu"));
        if !(gpu && (r.driver.is_empty() || r.driver == "nvidia")) {
            return Err(EngineError::Invalid(format!(
                "could not select device driver {:?} with capabilities: {:?}",
                r.driver, r.capabilities
            )));
        }
        if !reg.has_kind(berth_cdi::nvidia::KIND) {
            generate_nvidia(reg, r)?;
        }
        if !r.device_ids.is_empty() {
            names.extend(
                r.device_ids
                    .iter()
                    .map(|id| format!("{}={id}", berth_cdi::nvidia::KIND)),
            );
        } else if r.count < 0 {
            names.push(format!("{}=all", berth_cdi::nvidia::KIND));
        } else {
            // The first N GPUs by index.
            let prefix = format!("{}=", berth_cdi::nvidia::KIND);
            let mut idx: Vec<u64> = reg
                .names()
                .iter()
                .filter_map(|n| n.strip_prefix(&prefix)?.parse().ok())
                .collect();
            idx.sort();
            let want = r.count.max(1) as usize;
            if idx.len() < want {
                return Err(EngineError::Invalid(format!(
                    "--gpus {want}: only {} GPU(s) are available",
                    idx.len()
                )));
            }
            names.extend(idx[..want].iter().map(|i| format!("{prefix}{i}")));
        }
    }
    Ok(names)
}

/// Writes a spec for the host's NVIDIA driver into the run-time spec
/// directory and reloads, or says why a GPU cannot be given (docker's
/// words, then the reason).
fn generate_nvidia(reg: &mut Registry, r: &DeviceRequest) -> Result<()> {
    let refuse = |why: String| {
        EngineError::Invalid(format!(
            "could not select device driver {:?} with capabilities: [[gpu]]: {why}",
            r.driver
        ))
    };
    let program = std::env::current_exe().map_err(|e| refuse(e.to_string()))?;
    let spec = berth_cdi::nvidia::generate(Path::new("/"), &program)
        .map_err(|e| refuse(format!("no CDI spec for nvidia.com/gpu, and {e}")))?;
    let dirs = berth_cdi::registry::spec_dirs();
    let dir = dirs
        .last()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/var/run/cdi"));
    std::fs::create_dir_all(&dir).map_err(|e| refuse(format!("{}: {e}", dir.display())))?;
    let yaml = berth_cdi::spec::to_yaml(&spec);
    berth_fs::atomic_write(&dir.join("berth-nvidia.yaml"), yaml.as_bytes())
        .map_err(|e| refuse(e.to_string()))?;
    *reg = Registry::load(&dirs);
    Ok(())
}

/// The CDI devices a container asks for, resolved in the spec directories.
fn resolve(hc: &HostConfig) -> Result<Vec<Resolved>> {
    if hc.device_requests.is_empty() {
        return Ok(Vec::new());
    }
    let mut reg = Registry::load_default();
    let names = cdi_names(&hc.device_requests, &mut reg)?;
    reg.resolve(&names)
        .map_err(|e| EngineError::Invalid(format!("setting up CDI devices: {e}")))
}

/// The host nodes one `--device` gives: the node, or every node under a
/// directory (at the same place under the container path).
fn host_nodes(m: &DeviceMapping) -> Result<Vec<Node>> {
    let bad = |e: String| {
        EngineError::Invalid(format!(
            "error gathering device information while adding custom device {:?}: {e}",
            m.path_on_host
        ))
    };
    let meta = std::fs::metadata(&m.path_on_host).map_err(|e| bad(e.to_string()))?;
    let access = if m.cgroup_permissions.is_empty() {
        "rwm".to_string()
    } else {
        m.cgroup_permissions.clone()
    };
    let node_at = |host: &Path, inside: String| {
        berth_cdi::edits::resolve_node(&berth_cdi::spec::DeviceNode {
            path: inside,
            host_path: Some(host.display().to_string()),
            permissions: Some(access.clone()),
            ..Default::default()
        })
    };
    if !meta.is_dir() {
        return node_at(Path::new(&m.path_on_host), m.path_in_container.clone())
            .map(|n| vec![n])
            .map_err(|e| bad(e.to_string()));
    }
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::from(&m.path_on_host)];
    while let Some(dir) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                todo.push(p);
                continue;
            }
            let rel = p.strip_prefix(&m.path_on_host).unwrap_or(&p);
            let inside = Path::new(&m.path_in_container).join(rel);
            if let Ok(n) = node_at(&p, inside.display().to_string()) {
                out.push(n);
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Checks at create that every device asked for exists (host nodes and CDI
/// names), so a typo fails before the container is made.
pub fn check(hc: &HostConfig) -> Result<()> {
    for m in &hc.devices {
        host_nodes(m)?;
    }
    let cdi = resolve(hc)?;
    // Edits that collide or cannot be applied fail here too.
    berth_cdi::edits::apply(&mut Spec::default(), &cdi)
        .map_err(|e| EngineError::Invalid(format!("setting up CDI devices: {e}")))
}

/// The container's devices added to its spec.
pub fn apply(spec: &mut Spec, hc: &HostConfig) -> Result<()> {
    for m in &hc.devices {
        for n in host_nodes(m)? {
            add_node(spec, &n);
        }
    }
    let cdi = resolve(hc)?;
    berth_cdi::edits::apply(spec, &cdi)
        .map_err(|e| EngineError::Invalid(format!("setting up CDI devices: {e}")))
}

/// The CDI devices the host offers, and the spec files that failed to
/// read (for `info`).
pub fn discovered() -> (Vec<PathBuf>, Vec<String>, Vec<String>) {
    let dirs = berth_cdi::registry::spec_dirs();
    let reg = Registry::load(&dirs);
    let errors = reg.errors.iter().map(|e| e.to_string()).collect();
    (dirs, reg.names(), errors)
}

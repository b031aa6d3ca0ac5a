//! `create`: the container's cgroup, its init process in new namespaces (parked
//! on the exec fifo), ID mappings written by the parent, hooks, state. On any
//! failure everything made so far is removed (process, cgroup, state directory).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, Spec};

use super::Runtime;
use crate::error::{Result, RuntimeError, SysContext};
use crate::namespaces;
use crate::process::channel::{self, ToChild, ToParent};
use crate::process::init::{InitArgs, container_init};
use crate::process::{Forked, clone_process};
use crate::state::{ContainerState, proc_stat};

/// Options of `create`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Unix socket to send the terminal master to.
    pub console_socket: Option<PathBuf>,
    /// Where to write the init's pid.
    pub pid_file: Option<PathBuf>,
    /// MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Pass descriptors 3..3+n to the process.
    pub preserve_fds: u32,
    /// Filesystems to mount on the rootfs directory inside the container's mount
    /// namespace before anything else (an engine's overlay of image layers), so
    /// no mount is ever made in the caller's namespace.
    pub rootfs_mounts: Vec<crate::rootfs::RootfsMount>,
    /// Keep a reaper as PID 1 (`docker run --init`): it forwards signals to the
    /// process and reaps orphaned zombies.
    pub reaper: bool,
    /// Descriptors (in the caller) to become the process's stdin, stdout and
    /// stderr; the caller's own stdio otherwise.
    pub stdio: Option<[i32; 3]>,
}

/// Removes what a failed create made.
struct Cleanup {
    dir: PathBuf,
    cgroup: Option<berth_cgroups::Manager>,
    pid: Option<i32>,
    /// The root view of a container without a mount namespace.
    host_view: Option<PathBuf>,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            // SAFETY: kill/waitpid on our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        if let Some(cg) = &self.cgroup {
            let _ = berth_cgroups::kill_all(cg);
            let _ = cg.destroy();
        }
        if let Some(v) = &self.host_view
            && crate::rootfs::detach_host_view(v).is_err()
        {
            // Still mounted: removing the state directory would reach the rootfs.
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_mappings(pid: i32, file: &str, maps: &[LinuxIdMapping]) -> Result<()> {
    if maps.is_empty() {
        return Ok(());
    }
    let body: String = maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    let p = format!("/proc/{pid}/{file}");
    std::fs::write(&p, body).sys("write", &p)
}

/// The OCI state document handed to hooks.
pub fn hook_state(
    spec: &Spec,
    id: &str,
    status: &str,
    pid: i32,
    bundle: &Path,
) -> serde_json::Value {
    hook_state_of(
        spec.version(),
        spec.annotations().as_ref(),
        id,
        status,
        pid,
        bundle,
    )
}

/// [`hook_state`] from the spec's version and annotations alone.
pub(crate) fn hook_state_of(
    version: &str,
    annotations: Option<&std::collections::HashMap<String, String>>,
    id: &str,
    status: &str,
    pid: i32,
    bundle: &Path,
) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": version,
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": annotations.cloned().unwrap_or_default(),
    })
}

impl Runtime {
    /// Creates container `id` from the bundle; returns the init's pid.
    pub fn create(&self, id: &str, bundle: &Path, opts: &CreateOptions) -> Result<i32> {
        let console = match &opts.console_socket {
            Some(p) => Some(crate::tty::connect(p)?),
            None => None,
        };
        self.create_with_console(id, bundle, opts, console)
    }

    /// Makes the container's state directory (and the runtime's root);
    /// an existing one means the id is taken.
    fn make_state_dir(&self, id: &str) -> Result<PathBuf> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.root)
            .sys("mkdir", self.root.display())?;
        let dir = self.dir(id);
        match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(RuntimeError::Exists(id.to_string()))
            }
            Err(e) => Err(e).sys("mkdir", dir.display()),
        }
    }

    /// [`Runtime::create`] with an already connected console socket (one end of a
    /// socketpair the caller reads the terminal master from).
    ///
    /// Long by reason: it is the create sequence of the runtime spec in one
    /// place (state directory, cgroup, fifo, clone, id maps, cgroup join,
    /// the init's handshake, state), each step owning what the cleanup
    /// undoes; the steps with logic of their own are functions beside it.
    pub fn create_with_console(
        &self,
        id: &str,
        bundle: &Path,
        opts: &CreateOptions,
        console: Option<std::os::fd::OwnedFd>,
    ) -> Result<i32> {
        super::validate_id(id)?;
        let bundle = std::fs::canonicalize(bundle)
            .map_err(|e| RuntimeError::Spec(format!("bundle {}: {e}", bundle.display())))?;
        let spec = crate::spec::load(&bundle)?;
        crate::trace::mark("runtime: spec read");
        crate::spec::validate(&spec, &bundle)?;
        let rootfs = crate::spec::rootfs(&spec, &bundle)?;
        let dir = self.make_state_dir(id)?;
        let mut cleanup = Cleanup {
            dir: dir.clone(),
            cgroup: None,
            pid: None,
            host_view: None,
            armed: true,
        };
        let lock = self.lock(id)?;
        let linux = spec.linux().as_ref().expect("validated");
        let plan = namespaces::plan(linux.namespaces().as_deref().unwrap_or(&[]));
        let root_view = if plan.mount {
            rootfs.clone()
        } else {
            let v = crate::rootfs::host_view(&dir);
            cleanup.host_view = Some(v.clone());
            crate::rootfs::make_host_view(&rootfs, &v)?;
            v
        };
        let (cg, cgroup_path) = make_cgroup(linux, id, &mut cleanup)?;
        crate::trace::mark("runtime: cgroup made");
        let fifo = make_fifo(&dir)?;
        let (parent, child) = channel::pair()?;
        let state_for_hooks = hook_state(&spec, id, "creating", 0, &bundle);
        if plan.join_pid {
            // The init is a grandchild then: make it ours to reap.
            // SAFETY: prctl with constant arguments.
            unsafe {
                libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            }
        }
        // Without a user namespace the init moves itself into the cgroup,
        // which avoids the kernel's global migration lock (see SelfJoin); in
        // one, the cgroup files are not its to write, so we move it.
        let self_join = match &cg {
            Some(cg) if plan.new_flags & libc::CLONE_NEWUSER == 0 => {
                berth_cgroups::SelfJoin::open(cg)?
            }
            _ => None,
        };
        let pid = match clone_init(plan.new_flags, id)? {
            Forked::Child => {
                drop(parent);
                for (target, fd) in opts.stdio.iter().flatten().enumerate() {
                    // SAFETY: dup2 of descriptors the caller keeps open.
                    unsafe {
                        libc::dup2(*fd, target as i32);
                    }
                }
                // flock locks belong to the open file: the child's copy must go, or
                // the lock outlives create until the container starts.
                drop(lock);
                container_init(
                    InitArgs {
                        spec: &spec,
                        rootfs: &root_view,
                        plan: &plan,
                        fifo: &fifo,
                        console,
                        no_pivot: opts.no_pivot,
                        cgroup_paths: cg.as_ref().map(|c| c.paths()).unwrap_or_default(),
                        preserve_fds: opts.preserve_fds,
                        rootfs_mounts: &opts.rootfs_mounts,
                        reaper: opts.reaper,
                        state: state_for_hooks,
                        cgroup_join: self_join.as_ref(),
                    },
                    child,
                );
            }
            Forked::Parent(pid) => pid,
        };
        drop(child);
        drop(console);
        cleanup.pid = Some(pid);
        if plan.new_flags & libc::CLONE_NEWUSER != 0 {
            for (file, map) in [
                ("uid_map", linux.uid_mappings()),
                ("gid_map", linux.gid_mappings()),
            ] {
                write_mappings(pid, file, map.as_deref().unwrap_or(&[]))?;
            }
        }
        if let Some(cg) = &cg
            && self_join.is_none()
        {
            cg.add_pid(pid)?;
        }
        drop(self_join);
        crate::trace::mark("runtime: init cloned (namespaces)");
        parent.send(&ToChild::Go)?;
        let init_pid = await_ready(
            &parent,
            &spec,
            id,
            &bundle,
            pid,
            plan.join_pid,
            &mut cleanup,
        )?;
        let pid_start = proc_stat(init_pid).map(|(_, s)| s).ok_or_else(|| {
            RuntimeError::Init("the container's init exited before it was ready".into())
        })?;
        let state = ContainerState {
            id: id.to_string(),
            bundle: bundle.clone(),
            rootfs,
            pid: init_pid,
            pid_start,
            created: jiff::Timestamp::now().to_string(),
            cgroup_path,
            annotations: spec.annotations().clone().unwrap_or_default(),
            owner: "root".into(),
            started: false,
            host_mounts: !plan.mount,
        };
        state.save(&dir)?;
        if let Some(pf) = &opts.pid_file {
            write_pid_file(pf, init_pid)?;
        }
        cleanup.armed = false;
        drop(lock);
        Ok(init_pid)
    }
}

/// The container's cgroup (`linux.cgroupsPath`, `/berth/<id>` by default),
/// made and given the spec's resources and device rules; the cleanup removes
/// it on failure. Returns it and its path.
///
/// In a user namespace (a rootless runtime) the path is taken inside the
/// cgroup v2 subtree delegated to the user
/// ([`berth_cgroups::delegated_root`]), and the device rules stand as the
/// user namespace's, where no device can be made anyway (a user may not
/// attach a device program). With no delegated subtree the container has
/// no cgroup when the spec sets no limits (as runc's rootless mode does);
/// limits that cannot be applied, or that need a controller the subtree
/// was not given, are an error that says so.
fn make_cgroup(
    linux: &oci_spec::runtime::Linux,
    id: &str,
    cleanup: &mut Cleanup,
) -> Result<(Option<berth_cgroups::Manager>, String)> {
    let mut cgroup_path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("/berth/{id}"));
    let rootless = crate::namespaces::in_user_namespace();
    let mut delegated = None;
    if rootless {
        match berth_cgroups::delegated_root() {
            Some((_, root)) => {
                cgroup_path = format!(
                    "{}/{}",
                    root.trim_end_matches('/'),
                    cgroup_path.trim_start_matches('/')
                );
                delegated = Some(root);
            }
            None if has_limits(linux) => {
                let own = berth_cgroups::own_v2_path().unwrap_or_default();
                return Err(RuntimeError::Spec(format!(
                    "resource limits need a cgroup this user may manage, and there is none: this process's cgroup {own:?} is not delegated to the user; rootless limits need cgroup v2 with a delegated subtree (systemd's user@.service delegation: run berth under `systemd-run --user --scope`)"
                )));
            }
            None => return Ok((None, String::new())),
        }
    }
    let made = berth_cgroups::Manager::new(&cgroup_path).and_then(|cg| cg.create().map(|()| cg));
    let cg = match made {
        Ok(cg) => cg,
        Err(e) if rootless => {
            if has_limits(linux) {
                return Err(RuntimeError::Spec(format!(
                    "resource limits need a cgroup this user may manage, and making {cgroup_path} failed ({e})"
                )));
            }
            return Ok((None, String::new()));
        }
        Err(e) => return Err(e.into()),
    };
    cleanup.cgroup = Some(cg.clone());
    let mut resources = linux.resources().clone().unwrap_or_default();
    if rootless {
        resources.set_devices(None);
        if let (berth_cgroups::Manager::V2(m), Some(root)) = (&cg, &delegated) {
            let missing = m.missing_controllers(&resources);
            if !missing.is_empty() {
                return Err(RuntimeError::Spec(format!(
                    "the limits asked for need the {} controller{}, which the cgroup delegated to this user ({root}) has not got (it has: {}); ask for the controller to be delegated (systemd: Delegate=yes, or Delegate={} for user@.service), or run without those limits",
                    missing.join(", "),
                    if missing.len() == 1 { "" } else { "s" },
                    berth_cgroups::v2::controller_list(m.path()),
                    missing.join(" "),
                )));
            }
        }
    } else if resources.devices().is_some() || linux.devices().is_some() {
        resources.set_devices(Some(device_rules(linux)));
    }
    cg.apply(&resources)?;
    Ok((Some(cg), cgroup_path))
}

/// Whether the spec limits anything besides devices.
fn has_limits(linux: &oci_spec::runtime::Linux) -> bool {
    linux.resources().as_ref().is_some_and(|r| {
        r.memory().is_some()
            || r.cpu().is_some()
            || r.pids().is_some()
            || r.block_io().is_some()
            || r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
            || r.network().is_some()
            || r.unified().as_ref().is_some_and(|u| !u.is_empty())
    })
}

/// Forks the container's init into its new namespaces.
fn clone_init(flags: libc::c_int, id: &str) -> Result<Forked> {
    clone_process(flags).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) && flags & libc::CLONE_NEWUSER != 0 {
            RuntimeError::Spec(
                "the kernel refused to make a user namespace: it always does from a chroot (run the runtime from its mount namespace's own root), and where user namespaces are disabled (sysctl user.max_user_namespaces)".into(),
            )
        } else {
            RuntimeError::sys("clone", format!("container {id}"), e)
        }
    })
}

/// The exec fifo the init blocks on until `start`, writable by the
/// container's user.
fn make_fifo(dir: &Path) -> Result<PathBuf> {
    let fifo = dir.join("exec.fifo");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o622),
    )
    .sys("mkfifo", fifo.display())?;
    // The fifo mode is filtered by the umask; make it what is intended.
    std::fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o622))
        .sys("chmod", fifo.display())?;
    Ok(fifo)
}

/// Serves the init over its channel until it is ready: the seccomp
/// listener to the agent, the init's pid from an intermediate process (with
/// a joined pid namespace), the prestart and createRuntime hooks. Returns
/// the init's pid.
fn await_ready(
    parent: &channel::Channel,
    spec: &Spec,
    id: &str,
    bundle: &Path,
    pid: i32,
    join_pid: bool,
    cleanup: &mut Cleanup,
) -> Result<i32> {
    let mut init_pid = pid;
    // With a joined pid namespace the intermediate process reports the
    // init's pid, and the init its readiness, on one channel from two
    // processes: Ready may come first, so both are awaited.
    let mut pid_pending = join_pid;
    let mut ready = false;
    while !ready || pid_pending {
        let (msg, fd) = match parent.recv_with_fd::<ToParent>()? {
            Some((m, fd)) => (m, fd),
            None => {
                return Err(RuntimeError::Init(
                    "the container's init exited before it was ready".into(),
                ));
            }
        };
        match msg {
            ToParent::SeccompListener => {
                let st = hook_state(spec, id, "creating", init_pid, bundle);
                hand_to_agent(spec, fd, init_pid, &st)?;
                parent.send(&ToChild::SeccompDone)?;
            }
            ToParent::Pid(p) => {
                // SAFETY: reap the intermediate process, our child.
                unsafe {
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                init_pid = p;
                cleanup.pid = Some(p);
                pid_pending = false;
            }
            ToParent::RunCreateHooks => {
                let st = hook_state(spec, id, "created", init_pid, bundle);
                if let Some(h) = spec.hooks() {
                    crate::hooks::run("prestart", h.prestart().as_deref().unwrap_or(&[]), &st)?;
                    crate::hooks::run(
                        "createRuntime",
                        h.create_runtime().as_deref().unwrap_or(&[]),
                        &st,
                    )?;
                }
                parent.send(&ToChild::HooksDone)?;
            }
            ToParent::Ready => ready = true,
            ToParent::Error(e) => return Err(e.into()),
        }
    }
    Ok(init_pid)
}

/// Passes the seccomp notify listener the init sent to the profile's agent.
pub(super) fn hand_to_agent(
    spec: &Spec,
    fd: Option<std::os::fd::OwnedFd>,
    pid: i32,
    state: &serde_json::Value,
) -> Result<()> {
    let fd = fd.ok_or_else(|| RuntimeError::Init("seccomp listener: no descriptor came".into()))?;
    let s = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .ok_or_else(|| RuntimeError::Init("seccomp listener without a profile".into()))?;
    crate::seccomp::send_listener(s, &fd, pid, state)
}

/// Writes a pid file atomically (as containerd and conmon read it).
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, pid.to_string()).sys("write", tmp.display())?;
    std::fs::rename(&tmp, path).sys("rename", path.display())
}

/// The spec's device cgroup rules, then what runc always allows after them:
/// mknod of any device, the default devices the runtime creates (null,
/// zero, full, random, urandom, tty, ptmx, pts, tun), and every device of
/// `linux.devices`. Engines such as podman send only "deny all" and rely on
/// this; without it the default devices cannot even be created.
fn device_rules(linux: &oci_spec::runtime::Linux) -> Vec<oci_spec::runtime::LinuxDeviceCgroup> {
    use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
    let rule = |typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true);
        r.set_typ(Some(typ));
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(Some(access.to_string()));
        r
    };
    let mut out: Vec<LinuxDeviceCgroup> = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    out.push(rule(LinuxDeviceType::C, None, None, "m"));
    out.push(rule(LinuxDeviceType::B, None, None, "m"));
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 2),
        (10, 200),
    ] {
        out.push(rule(LinuxDeviceType::C, Some(major), Some(minor), "rwm"));
    }
    out.push(rule(LinuxDeviceType::C, Some(136), None, "rwm"));
    for d in linux.devices().iter().flatten() {
        let typ = match d.typ() {
            LinuxDeviceType::U => LinuxDeviceType::C,
            // FIFOs are not devices to the device cgroup (it takes a, b, c).
            LinuxDeviceType::P => continue,
            t => t,
        };
        out.push(rule(typ, Some(d.major()), Some(d.minor()), "rwm"));
    }
    out
}

//! `create`: a container's record from the request and its image (name,
//! command, environment, mounts, host config, exposed ports), its snapshot
//! prepared under the store's lease, its network address picked, and the
//! files the runtime binds (hosts, hostname, resolv.conf).

use std::collections::BTreeMap;

use crate::container::{self, Config, Container, HostConfig, MountPoint, State, Status};
use crate::run::{CreateRequest, default_network, write_file};
use crate::spec;
use crate::{Engine, EngineError, Result, now};

impl Engine {
    /// Creates a container from an image in the store.
    pub fn create(&self, req: &CreateRequest) -> Result<Container> {
        // From the image lookup until its snapshot holds the image's layers,
        // gc (a concurrent prune or rmi) waits.
        let lease = self.store.write_lock()?;
        let image = match &req.platform {
            Some(p) => self.store.resolve_platform(&req.image, p)?,
            None => self.store.resolve(&req.image)?,
        };
        let id = container::new_id();
        let ic = image.config.config.clone().unwrap_or_default();
        let (entrypoint, cmd, command) = command_of(req, &ic)?;
        let env = env_of(req, &ic);
        let mut labels = ic.labels.clone().unwrap_or_default();
        labels.extend(req.labels.clone());
        let host = host_config_of(req);
        // An unknown or unusable device fails here, before anything is made.
        crate::devices::check(&host)?;
        // The container's directory and snapshot (keyed by the new id) are
        // made before the lock on names, which a create holds only to pick
        // and record its name: parallel creates queue for less (the
        // snapshot's metadata is fsynced twice).
        let dir = self.dir(&id);
        let undo = || {
            let _ = self.store.snapshots.remove_active(&id);
            let _ = std::fs::remove_dir_all(&dir);
        };
        let made = std::fs::create_dir_all(dir.join("rootfs"))
            .map_err(|e| EngineError::io("mkdir", &dir, e))
            .and_then(|()| {
                let mut labels = BTreeMap::new();
                labels.insert(
                    berth_store::image::IMAGE_LABEL.to_string(),
                    image.id.to_string(),
                );
                labels.insert("io.berth.container".to_string(), id.clone());
                // An --rm container's layer does not outlive a crash: not
                // fsynced (nor is its record).
                let parent = image.top_chain();
                if host.auto_remove {
                    self.store
                        .snapshots
                        .prepare_scratch(&id, parent.as_ref(), labels)?;
                } else {
                    self.store.snapshots.prepare(&id, parent.as_ref(), labels)?;
                }
                Ok(())
            });
        let named = made.and_then(|()| {
            let names_lock = container::lock(&self.root().join("containers"))?;
            let name = self.pick_name(req.name.as_deref(), &id)?;
            // After the name is known to be free: anonymous volumes are made here.
            let mounts = self.mounts_of(req, &ic)?;
            Ok((names_lock, name, mounts))
        });
        let (names_lock, name, mounts) = match named {
            Ok(n) => n,
            Err(e) => {
                undo();
                return Err(e);
            }
        };
        let mut c = Container {
            id: id.clone(),
            name,
            created: now(),
            image_id: image.id.to_string(),
            path: command[0].clone(),
            args: command[1..].to_vec(),
            config: Config {
                hostname: req.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
                domainname: String::new(),
                user: req.user.clone().or(ic.user.clone()).unwrap_or_default(),
                tty: req.tty,
                open_stdin: req.interactive,
                env,
                cmd,
                image: req.image.clone(),
                working_dir: req
                    .workdir
                    .clone()
                    .or(ic.working_dir.clone())
                    .unwrap_or_default(),
                entrypoint,
                labels,
                stop_signal: req.stop_signal.clone().or(ic.stop_signal.clone()),
                stop_timeout: req.stop_timeout,
                exposed_ports: exposed_of(req, &ic)?,
                healthcheck: crate::health::merge(req.healthcheck.clone(), ic.healthcheck.as_ref()),
            },
            host_config: host,
            mounts,
            state: created_state(),
            network_settings: Default::default(),
        };
        let result = (|| -> Result<()> {
            let _addresses =
                self.network_prepare(&mut c, req.ip.as_deref(), &req.network_aliases)?;
            self.write_etc_files(&c)?;
            // Seen by the next create's name check once renamed into place;
            // made durable after the lock on names is released, so that
            // parallel creates do not queue behind each other's fsync.
            container::save_unsynced(&dir, &c)
        })();
        drop(names_lock);
        drop(lease);
        let result = result.and_then(|()| container::sync(&dir, &c));
        if let Err(e) = result {
            undo();
            return Err(e);
        }
        self.container_event(&c, "create", &[]);
        Ok(c)
    }

    fn write_etc_files(&self, c: &Container) -> Result<()> {
        let dir = self.dir(&c.id);
        let mut extra: Vec<(String, String)> = c
            .host_config
            .extra_hosts
            .iter()
            .filter_map(|h| {
                h.split_once(':')
                    .map(|(n, ip)| (n.to_string(), ip.to_string()))
            })
            .collect();
        // docker: the container's own address under its hostname.
        if let Some(own) = self.network_hosts_entry(c) {
            extra.push(own);
        }
        let hosts =
            berth_spec::defaults::hosts_file(&c.config.hostname, &[c.name.as_str()], &extra);
        write_file(&dir.join("hosts"), &hosts)?;
        write_file(&dir.join("hostname"), &format!("{}\n", c.config.hostname))?;
        let resolv = if c.host_config.dns.is_empty() {
            self.network_resolv_conf(
                c,
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            )
        } else {
            c.host_config
                .dns
                .iter()
                .map(|d| format!("nameserver {d}\n"))
                .collect()
        };
        write_file(&dir.join("resolv.conf"), &resolv)
    }

    /// The name asked for, checked and free, or a generated one that is
    /// free (docker's generator retries, then adds a number). Called with
    /// the names lock held.
    fn pick_name(&self, asked: Option<&str>, id: &str) -> Result<String> {
        let name = match asked {
            Some(n) => {
                let n = n.trim_start_matches('/').to_string();
                if !container::valid_name(&n) {
                    return Err(EngineError::Invalid(format!(
                        "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                n
            }
            None => String::new(),
        };
        // Each record's name alone: a create reads every record.
        let taken: Vec<(String, String)> = container::all_dirs(&self.root().join("containers"))
            .iter()
            .filter_map(|d| container::load_name(d))
            .collect();
        Ok(if name.is_empty() {
            // docker's generator retries, then adds a number.
            let mut n = container::random_name(id);
            let mut i = 1;
            while taken.iter().any(|(t, _)| *t == n) {
                n = format!("{}{i}", container::random_name(&container::new_id()));
                i += 1;
            }
            n
        } else {
            if let Some((_, other)) = taken.iter().find(|(t, _)| *t == name) {
                return Err(EngineError::NameInUse {
                    name,
                    id: other.clone(),
                });
            }
            name
        })
    }

    /// The container's mounts: `-v`, `--mount`, `--tmpfs`, then an
    /// anonymous volume for each VOLUME of the image not mounted over.
    fn mounts_of(
        &self,
        req: &CreateRequest,
        ic: &berth_types::image::ContainerConfig,
    ) -> Result<Vec<MountPoint>> {
        let mut mounts: Vec<MountPoint> = Vec::new();
        for v in &req.volumes {
            mounts.push(self.parse_bind(v)?);
        }
        for m in &req.mounts {
            mounts.push(self.parse_mount(m)?);
        }
        for t in &req.tmpfs {
            let (dst, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
            mounts.push(MountPoint {
                typ: "tmpfs".into(),
                name: String::new(),
                source: "tmpfs".into(),
                destination: dst.to_string(),
                rw: true,
                options: opts
                    .split(',')
                    .filter(|o| !o.is_empty())
                    .map(str::to_string)
                    .collect(),
            });
        }
        // VOLUME directives of the image get anonymous volumes, unless mounted over.
        for v in ic.volumes.clone().unwrap_or_default().keys() {
            if !mounts.iter().any(|m| m.destination == *v) {
                mounts.push(self.parse_bind(v)?);
            }
        }
        Ok(mounts)
    }
}

/// Entrypoint and cmd as docker combines the request's with the image's
/// (an empty `--entrypoint` clears the image's), and the command they make.
type Command = (Option<Vec<String>>, Option<Vec<String>>, Vec<String>);

fn command_of(req: &CreateRequest, ic: &berth_types::image::ContainerConfig) -> Result<Command> {
    let (entrypoint, cmd) = match &req.entrypoint {
        Some(e) if e.iter().all(String::is_empty) => {
            (None, Some(req.cmd.clone()).filter(|c| !c.is_empty()))
        }
        Some(e) => (
            Some(e.clone()),
            Some(req.cmd.clone()).filter(|c| !c.is_empty()),
        ),
        None => (
            ic.entrypoint.clone(),
            if req.cmd.is_empty() {
                ic.cmd.clone()
            } else {
                Some(req.cmd.clone())
            },
        ),
    };
    let command = spec::command(entrypoint.as_deref(), cmd.as_deref());
    if command.is_empty() {
        return Err(EngineError::Invalid("No command specified".into()));
    }
    Ok((entrypoint, cmd, command))
}

/// The image's environment with the request's laid over it (`-e NAME`
/// takes the value from berth's own environment, as docker does).
fn env_of(req: &CreateRequest, ic: &berth_types::image::ContainerConfig) -> Vec<String> {
    let mut env = ic.env.clone().unwrap_or_default();
    for e in &req.env {
        if e.contains('=') {
            spec::env_set(&mut env, e);
        } else if let Ok(v) = std::env::var(e) {
            spec::env_set(&mut env, &format!("{e}={v}"));
        }
    }
    env
}

/// What docker's HostConfig records: the network (the default one when
/// none is named), the `-v` binds and named volumes as given, the --tmpfs
/// mounts, and a swap limit of twice the memory when only --memory was set.
fn host_config_of(req: &CreateRequest) -> HostConfig {
    let mut host = req.host.clone();
    if host.network_mode.is_empty() || host.network_mode == "default" {
        host.network_mode = default_network();
    }
    if host.binds.is_empty() {
        host.binds = req
            .volumes
            .iter()
            .filter(|v| v.contains(':'))
            .cloned()
            .collect();
    }
    if host.tmpfs.is_empty() {
        for t in &req.tmpfs {
            let (dst, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
            host.tmpfs.insert(dst.to_string(), opts.to_string());
        }
    }
    if host.memory > 0 && host.memory_swap == 0 {
        host.memory_swap = host.memory.saturating_mul(2);
    }
    host
}

/// The image's exposed ports and `--expose`'s (ranges too).
fn exposed_of(
    req: &CreateRequest,
    ic: &berth_types::image::ContainerConfig,
) -> Result<BTreeMap<String, serde_json::Value>> {
    let mut e = ic.exposed_ports.clone().unwrap_or_default();
    for x in &req.expose {
        let (ports, proto) = x.split_once('/').unwrap_or((x.as_str(), "tcp"));
        let (a, b) = ports.split_once('-').unwrap_or((ports, ports));
        let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) else {
            return Err(EngineError::Invalid(format!(
                "invalid range format for --expose: {x}"
            )));
        };
        for p in a..=b {
            e.insert(format!("{p}/{proto}"), serde_json::json!({}));
        }
    }
    Ok(e)
}

/// The state of a container just made: created, never run; `creator`
/// names this process, whose death before the start a prune may collect.
fn created_state() -> State {
    State {
        status: Status::Created,
        pid: 0,
        pid_start: 0,
        monitor_pid: 0,
        exit_code: 0,
        error: String::new(),
        started_at: "0001-01-01T00:00:00Z".into(),
        finished_at: "0001-01-01T00:00:00Z".into(),
        oom_killed: false,
        restart_count: 0,
        stopped_by_user: false,
        health: None,
        creator: {
            let me = std::process::id() as i32;
            berth_runtime::state::proc_stat(me).map(|(_, start)| (me, start))
        },
    }
}

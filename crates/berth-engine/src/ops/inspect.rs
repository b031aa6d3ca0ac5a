//! docker's inspect document of a container.

use super::*;

impl Engine {
    /// docker's `ContainerJSON`.
    pub fn inspect_json(&self, c: &Container) -> Value {
        let mut state = serde_json::to_value(&c.state).unwrap_or(Value::Null);
        if let Some(o) = state.as_object_mut() {
            o.remove("PidStart");
            o.remove("MonitorPid");
            o.remove("StoppedByUser");
            o.remove("Creator");
            o.insert(
                "Running".into(),
                json!(matches!(c.state.status, Status::Running | Status::Paused)),
            );
            o.insert("Paused".into(), json!(c.state.status == Status::Paused));
            o.insert(
                "Restarting".into(),
                json!(c.state.status == Status::Restarting),
            );
            o.insert("Dead".into(), json!(c.state.status == Status::Dead));
            // dockerd: no Health before the first start.
            if let Some(h) = &c.state.health {
                o.insert("Health".into(), json!(h));
            }
        }
        let ns = &c.network_settings;
        let first = ns.primary().map(|(_, e)| e);
        let networks = if ns.networks.is_empty() {
            json!({c.host_config.network_mode.clone(): {}})
        } else {
            serde_json::to_value(&ns.networks).unwrap_or_default()
        };
        let mut host_config = serde_json::to_value(&c.host_config).unwrap_or_default();
        // The log driver every berth container has (SDKs read it).
        host_config["LogConfig"] = json!({"Type": "json-file", "Config": {}});
        let network_settings = json!({
            "Networks": networks,
            "Ports": ns.ports,
            "IPAddress": first.map(|e| e.ip_address.clone()).unwrap_or_default(),
            "IPPrefixLen": first.map(|e| e.ip_prefix_len).unwrap_or_default(),
            "Gateway": first.map(|e| e.gateway.clone()).unwrap_or_default(),
            "MacAddress": first.map(|e| e.mac_address.clone()).unwrap_or_default(),
        });
        json!({
            "Id": c.id,
            "Created": c.created,
            "Path": c.path,
            "Args": c.args,
            "State": state,
            "Image": c.image_id,
            "ResolvConfPath": self.dir(&c.id).join("resolv.conf"),
            "HostnamePath": self.dir(&c.id).join("hostname"),
            "HostsPath": self.dir(&c.id).join("hosts"),
            "LogPath": self.log_path(&c.id),
            "Name": format!("/{}", c.name),
            "RestartCount": c.state.restart_count,
            "Driver": self.store.snapshots.driver_name(),
            "Platform": "linux",
            "HostConfig": host_config,
            "Mounts": mounts_doc(c),
            "AppArmorProfile": "",
            "ExecIDs": null,
            "MountLabel": "",
            "ProcessLabel": "",
            "Config": c.config,
            "GraphDriver": {"Name": self.store.snapshots.driver_name(), "Data": {"UpperDir": self.store.snapshots.upper_dir(&c.id)}},
            "NetworkSettings": network_settings,
        })
    }
}

/// docker's `Mounts` of a container: its binds and volumes (not the
/// `--tmpfs` mounts, which docker lists only in `HostConfig.Tmpfs`), with
/// Mode, RW, Propagation and a volume's Driver, by destination.
fn mounts_doc(c: &Container) -> Value {
    let mut ms: Vec<&container::MountPoint> = c
        .mounts
        .iter()
        .filter(|m| !(m.typ == "tmpfs" && c.host_config.tmpfs.contains_key(&m.destination)))
        .collect();
    ms.sort_by(|a, b| a.destination.cmp(&b.destination));
    Value::Array(
        ms.into_iter()
            .map(|m| {
                let mode = m
                    .options
                    .iter()
                    .filter(|o| !o.starts_with("size=") && !o.starts_with("mode="))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",");
                match m.typ.as_str() {
                    "volume" => {
                        let anonymous = m.name.len() == 64
                            && m.name.bytes().all(|b| b.is_ascii_hexdigit());
                        json!({
                            "Type": "volume",
                            "Name": m.name,
                            "Source": m.source,
                            "Destination": m.destination,
                            "Driver": "local",
                            "Mode": if mode.is_empty() && !anonymous { "z".to_string() } else { mode },
                            "RW": m.rw,
                            "Propagation": "",
                        })
                    }
                    "bind" => json!({
                        "Type": "bind",
                        "Source": m.source,
                        "Destination": m.destination,
                        "Mode": if mode.is_empty() && !m.rw { "ro".to_string() } else { mode },
                        "RW": m.rw,
                        "Propagation": "rprivate",
                    }),
                    _ => json!({
                        "Type": m.typ,
                        "Source": m.source,
                        "Destination": m.destination,
                        "Mode": "",
                        "RW": m.rw,
                        "Propagation": "",
                    }),
                }
            })
            .collect(),
    )
}

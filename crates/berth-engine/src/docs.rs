//! Docker's JSON documents for what the engine holds — `ImageInspect`,
//! `NetworkResource`, and the sizes they report — built once for both
//! front-ends: the CLI prints them (`inspect`), the Engine API returns them.

use berth_store::Store;
use berth_store::image::Image;
use serde_json::{Value, json};

use crate::network::Network;
use crate::{Engine, EngineError, Result};

/// Total unpacked size of an image's layers (docker's SIZE).
pub fn image_size(store: &Store, img: &Image) -> u64 {
    berth_types::chain_ids(&img.config.rootfs.diff_ids)
        .iter()
        .filter_map(|c| store.snapshots.layer(c).ok().flatten())
        .map(|m| m.size)
        .sum()
}

/// Docker's `ImageInspect` JSON for an image.
pub fn image_inspect(store: &Store, img: &Image) -> Value {
    let cfg = img.config.config.clone().unwrap_or_default();
    let or_null = |v: Option<Value>| v.unwrap_or(Value::Null);
    let config = json!({
        "Hostname": "",
        "Domainname": "",
        "User": cfg.user.clone().unwrap_or_default(),
        "AttachStdin": false,
        "AttachStdout": false,
        "AttachStderr": false,
        "ExposedPorts": or_null(cfg.exposed_ports.as_ref().map(|p| json!(p))),
        "Tty": false,
        "OpenStdin": false,
        "StdinOnce": false,
        "Env": or_null(cfg.env.as_ref().map(|e| json!(e))),
        "Cmd": or_null(cfg.cmd.as_ref().map(|e| json!(e))),
        "Healthcheck": or_null(cfg.healthcheck.as_ref().map(|e| json!(e))),
        "ArgsEscaped": cfg.args_escaped.unwrap_or(false),
        "Image": "",
        "Volumes": or_null(cfg.volumes.as_ref().map(|e| json!(e))),
        "WorkingDir": cfg.working_dir.clone().unwrap_or_default(),
        "Entrypoint": or_null(cfg.entrypoint.as_ref().map(|e| json!(e))),
        "OnBuild": or_null(cfg.on_build.as_ref().map(|e| json!(e))),
        "Labels": or_null(cfg.labels.as_ref().map(|e| json!(e))),
        "StopSignal": or_null(cfg.stop_signal.as_ref().map(|e| json!(e))),
        "Shell": or_null(cfg.shell.as_ref().map(|e| json!(e))),
    });
    let graph = match img.top_chain() {
        Some(top) => {
            let lowers = store
                .snapshots
                .lower_dirs(&top)
                .unwrap_or_default()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":");
            json!({"Data": {"LowerDir": lowers}, "Name": store.snapshots.driver_name()})
        }
        None => json!({"Data": null, "Name": store.snapshots.driver_name()}),
    };
    let comment = img
        .config
        .extra
        .get("comment")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| img.config.history.last().and_then(|h| h.comment.clone()))
        .unwrap_or_default();
    json!({
        "Id": img.id.to_string(),
        "RepoTags": img.names.iter().map(|n| n.familiar()).collect::<Vec<_>>(),
        "RepoDigests": img.repo_digests.iter().map(|n| n.familiar()).collect::<Vec<_>>(),
        "Parent": "",
        "Comment": comment,
        "Created": img.config.created.clone().unwrap_or_default(),
        "DockerVersion": img.config.extra.get("docker_version").cloned().unwrap_or(json!("")),
        "Author": img.config.author.clone().unwrap_or_default(),
        "Config": config,
        "Architecture": img.config.architecture,
        "Variant": img.config.variant,
        "Os": img.config.os,
        "Size": image_size(store, img),
        "GraphDriver": graph,
        "RootFS": {
            "Type": "layers",
            "Layers": img.config.rootfs.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        },
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        "Descriptor": {
            "mediaType": img.manifest_desc.media_type,
            "digest": img.manifest_desc.digest.to_string(),
            "size": img.manifest_desc.size,
        },
    })
}

/// docker's `NetworkResource` JSON for a network.
pub fn network_inspect(engine: &Engine, n: &Network) -> Result<Value> {
    let mut containers = serde_json::Map::new();
    for c in engine.containers()? {
        if let Some(ep) = c.network_settings.networks.get(&n.name) {
            containers.insert(
                c.id.clone(),
                json!({
                    "Name": c.name,
                    "MacAddress": ep.mac_address,
                    "IPv4Address": format!("{}/{}", ep.ip_address, ep.ip_prefix_len),
                }),
            );
        }
    }
    let ipam_config = if n.subnet.is_empty() {
        json!([])
    } else {
        json!([{"Subnet": n.subnet, "Gateway": n.gateway}])
    };
    Ok(json!({
        "Name": n.name,
        "Id": n.id,
        // The predefined networks have no creation time of their own.
        "Created": if n.created.is_empty() { "0001-01-01T00:00:00Z" } else { n.created.as_str() },
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": ipam_config},
        "Internal": n.internal,
        "Attachable": false,
        "Containers": containers,
        "Options": if n.bridge.is_empty() { json!({}) } else { json!({"com.docker.network.bridge.name": n.bridge}) },
        "Labels": n.labels,
    }))
}

impl Engine {
    /// `rmi`: the store's untag-then-delete rules, and docker's hard
    /// conflict: an image a running container uses cannot be deleted by id,
    /// even forced (by name, forced, it is only untagged, as for stopped
    /// containers, which keep their image and start again).
    pub fn remove_image(
        &self,
        name: &str,
        force: bool,
    ) -> Result<Vec<berth_store::image::RemoveEvent>> {
        let img = self.store.resolve(name)?;
        let by_id = !img.names.iter().any(|n| {
            berth_types::Reference::parse(name)
                .map(|r| r.with_default_tag() == *n)
                .unwrap_or(false)
        });
        if force
            && by_id
            && let Some(c) = self
                .containers()?
                .into_iter()
                .find(|c| c.image_id == img.id.to_string() && c.is_up())
        {
            return Err(EngineError::Conflict(format!(
                "conflict: unable to delete {} (cannot be forced) - image is being used by running container {}",
                img.id.short(),
                c.short_id()
            )));
        }
        let events = self.store.remove_image(name, force)?;
        for ev in &events {
            match ev {
                berth_store::image::RemoveEvent::Untagged(n) => {
                    let r = berth_types::Reference::parse(n).ok();
                    self.image_event("untag", &img.id.to_string(), r.as_ref());
                }
                berth_store::image::RemoveEvent::Deleted(d) => {
                    self.image_event("delete", &d.to_string(), None)
                }
            }
        }
        Ok(events)
    }
}

/// docker's `SizeRw` and `SizeRootFs` of a container: what its writable
/// layer holds, and that plus its image.
pub fn container_sizes(engine: &crate::Engine, c: &crate::Container) -> (u64, u64) {
    let rw = berth_fs::du(&engine.store.snapshots.upper_dir(&c.id));
    let image = engine
        .store
        .resolve(&c.image_id)
        .map(|i| image_size(&engine.store, &i))
        .unwrap_or(0);
    (rw, rw + image)
}

//! `--device` and `--gpus` as docker reads them: a host device
//! `/dev/x[:/dev/y][:rwm]`, or a CDI name `vendor.com/class=name` (docker
//! 25's `cdi` device request); `--gpus all`, `--gpus 2`,
//! `--gpus '"device=0,1"'`, `--gpus device=GPU-…`, with docker's
//! `count=`, `device=`, `driver=`, `capabilities=` and `options=` keys.

use anyhow::bail;
use berth_engine::container::{DeviceMapping, DeviceRequest};

/// The host devices and CDI requests `--device` values make.
pub fn devices(values: &[String]) -> anyhow::Result<(Vec<DeviceMapping>, Vec<DeviceRequest>)> {
    let mut host = Vec::new();
    let mut cdi: Vec<String> = Vec::new();
    for v in values {
        if berth_cdi::registry::is_qualified(v) {
            berth_cdi::registry::split_name(v)?;
            cdi.push(v.clone());
            continue;
        }
        let parts: Vec<&str> = v.split(':').collect();
        let perms_ok = |p: &str| !p.is_empty() && p.chars().all(|c| "rwm".contains(c));
        let (src, dst, perms) = match parts.as_slice() {
            [s] => (*s, *s, "rwm"),
            [s, p] if perms_ok(p) => (*s, *s, *p),
            [s, d] => (*s, *d, "rwm"),
            [s, d, p] if perms_ok(p) => (*s, *d, *p),
            _ => bail!("invalid device specification: {v}"),
        };
        if !src.starts_with('/') || !dst.starts_with('/') {
            bail!("invalid device specification: {v}: paths must be absolute");
        }
        host.push(DeviceMapping {
            path_on_host: src.to_string(),
            path_in_container: dst.to_string(),
            cgroup_permissions: perms.to_string(),
        });
    }
    let reqs = if cdi.is_empty() {
        Vec::new()
    } else {
        vec![DeviceRequest {
            driver: "cdi".into(),
            device_ids: cdi,
            ..Default::default()
        }]
    };
    Ok((host, reqs))
}

/// The request `--gpus` makes.
pub fn gpus(value: &str) -> anyhow::Result<DeviceRequest> {
    let v = value.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(v);
    let mut req = DeviceRequest {
        capabilities: vec![vec!["gpu".into()]],
        ..Default::default()
    };
    // docker reads a CSV line: a field without `=` continues a list value
    // before it (`device=0,1`, `capabilities=compute,utility`, quoted as
    // one field).
    let mut fields: Vec<String> = Vec::new();
    for f in v.split(',') {
        match fields.last_mut() {
            Some(last)
                if !f.contains('=')
                    && ["device=", "capabilities="]
                        .iter()
                        .any(|k| last.starts_with(k)) =>
            {
                last.push(',');
                last.push_str(f);
            }
            _ => fields.push(f.to_string()),
        }
    }
    for f in fields {
        match f.split_once('=') {
            None if f == "all" => req.count = -1,
            None => match f.parse::<i64>() {
                Ok(n) if n > 0 => req.count = n,
                _ => bail!("invalid --gpus value {value:?}: expected all, a count, or device=…"),
            },
            Some(("count", c)) => {
                req.count = if c == "all" {
                    -1
                } else {
                    c.parse()
                        .map_err(|_| anyhow::anyhow!("invalid count {c:?} in --gpus {value:?}"))?
                }
            }
            Some(("device", ids)) => {
                req.device_ids = ids.split(',').map(|s| s.trim().to_string()).collect();
            }
            Some(("driver", d)) => req.driver = d.to_string(),
            Some(("capabilities", c)) => {
                req.capabilities = vec![c.split(',').map(str::to_string).collect()];
            }
            Some(("options", o)) => {
                for kv in o.split(',') {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    req.options.insert(k.to_string(), v.to_string());
                }
            }
            Some((k, _)) => bail!("unexpected key {k:?} in --gpus {value:?}"),
        }
    }
    if req.count != 0 && !req.device_ids.is_empty() {
        bail!("cannot set both Count and DeviceIDs on device request");
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_reads_docker_s_spellings() {
        assert_eq!(gpus("all").unwrap().count, -1);
        assert_eq!(gpus("2").unwrap().count, 2);
        assert_eq!(gpus("\"device=0,1\"").unwrap().device_ids, ["0", "1"]);
        assert_eq!(gpus("device=GPU-abc").unwrap().device_ids, ["GPU-abc"]);
        let r = gpus("count=1,capabilities=compute,utility").unwrap();
        assert_eq!(r.count, 1);
        assert_eq!(r.capabilities, [["compute", "utility"]]);
        assert!(gpus("zero").is_err());
        assert!(gpus("count=1,device=0").is_err());
        assert!(gpus("colour=red").is_err());
    }

    #[test]
    fn device_takes_paths_and_cdi_names() {
        let (host, cdi) = devices(&[
            "/dev/fuse".into(),
            "/dev/sda:/dev/xvda:rw".into(),
            "/dev/null:r".into(),
            "vendor.test/dev=a".into(),
        ])
        .unwrap();
        assert_eq!(host.len(), 3);
        assert_eq!(host[1].path_in_container, "/dev/xvda");
        assert_eq!(host[1].cgroup_permissions, "rw");
        assert_eq!(host[2].path_in_container, "/dev/null");
        assert_eq!(host[2].cgroup_permissions, "r");
        assert_eq!(cdi[0].driver, "cdi");
        assert_eq!(cdi[0].device_ids, ["vendor.test/dev=a"]);
        assert!(devices(&["dev/fuse".into()]).is_err());
        assert!(devices(&["/a:/b:/c:/d".into()]).is_err());
    }
}

//! A `--mount` value read as BuildKit reads it: a CSV record (a quoted
//! field may hold commas) of `key=value` options, into a [`RunMount`];
//! and `--ssh`'s `id=path` form.

use super::*;

/// Parses `docker build --ssh`'s value: `ID[=SOCKET]` (`default` is
/// `$SSH_AUTH_SOCK`). Only agent sockets are forwarded; key files are refused
/// (load them into an agent).
pub fn parse_ssh(s: &str) -> Result<(String, PathBuf), String> {
    let (id, path) = match s.split_once('=') {
        Some((id, p)) => (id.to_string(), PathBuf::from(p)),
        None => {
            let p = std::env::var_os("SSH_AUTH_SOCK").ok_or_else(|| {
                format!("--ssh {s}: SSH_AUTH_SOCK is not set (give {s}=/path/to/agent.sock)")
            })?;
            (s.to_string(), PathBuf::from(p))
        }
    };
    if path.as_os_str().to_string_lossy().contains(',') {
        return Err(format!("--ssh {s}: one agent socket per id"));
    }
    let md = std::fs::metadata(&path).map_err(|e| format!("--ssh {s}: {}: {e}", path.display()))?;
    if !std::os::unix::fs::FileTypeExt::is_socket(&md.file_type()) {
        return Err(format!(
            "--ssh {s}: {} is not an agent socket (load keys into ssh-agent and pass its socket)",
            path.display()
        ));
    }
    Ok((id, path))
}

/// Parses one `--mount` value. Long on purpose: one arm per option key
/// of BuildKit's syntax, each checked with its message.
pub fn parse(s: &str) -> Result<RunMount, String> {
    let mut typ = "bind".to_string();
    let mut target = None;
    let mut source = String::new();
    let mut id = None;
    let mut env = None;
    let mut from = None;
    let mut required = false;
    // `rw`/`ro` as said (each type has its own default).
    let mut writable: Option<bool> = None;
    let (mut uid, mut gid, mut mode) = (0u32, 0u32, None);
    let mut size = None;
    for field in csv_fields(s).iter().filter(|f| !f.is_empty()) {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        let key = k.to_ascii_lowercase();
        match key.as_str() {
            "type" => typ = v.to_string(),
            "target" | "dst" | "destination" => target = Some(v.to_string()),
            "source" | "src" => source = v.to_string(),
            "id" => id = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            "uid" => {
                uid = v
                    .parse()
                    .map_err(|_| format!("--mount {s}: invalid uid {v}"))?
            }
            "gid" => {
                gid = v
                    .parse()
                    .map_err(|_| format!("--mount {s}: invalid gid {v}"))?
            }
            "mode" => {
                mode = Some(
                    u32::from_str_radix(v, 8)
                        .map_err(|_| format!("--mount {s}: invalid mode {v}"))?,
                )
            }
            "size" => {
                size = Some(parse_size(v).ok_or_else(|| format!("--mount {s}: invalid size {v}"))?)
            }
            "required" => {
                required = matches!(v, "" | "true" | "1");
            }
            "sharing" => {}
            "readonly" | "ro" | "rw" | "readwrite" => {
                let on = match v {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(format!("--mount {s}: {k} takes true or false, not {v:?}")),
                };
                writable = Some(on == matches!(key.as_str(), "rw" | "readwrite"));
            }
            "from" => from = Some(v.to_string()),
            other => return Err(format!("--mount {s}: unexpected key '{other}'")),
        }
    }
    if from.is_some() && typ != "bind" {
        return Err(format!(
            "--mount {s}: from= is supported on type=bind only (not type={typ})"
        ));
    }
    let absolute = |t: String| {
        if t.starts_with('/') {
            t
        } else {
            format!("/{t}")
        }
    };
    let target = target.filter(|t| !t.is_empty()).map(absolute);
    match typ.as_str() {
        "secret" => {
            // BuildKit: the id defaults to the target's file name.
            let id = id
                .or_else(|| {
                    target
                        .as_deref()
                        .and_then(|t| Path::new(t).file_name())
                        .map(|f| f.to_string_lossy().into_owned())
                })
                .ok_or_else(|| format!("--mount {s}: id is required"))?;
            let target = match (target, &env) {
                (Some(t), _) => Some(t),
                (None, Some(_)) => None,
                (None, None) => Some(format!("/run/secrets/{id}")),
            };
            return Ok(RunMount::Secret {
                id,
                target,
                env,
                required,
                uid,
                gid,
                mode: mode.unwrap_or(0o400),
            });
        }
        "ssh" => {
            if uid != 0 || gid != 0 || mode.is_some() {
                return Err(format!(
                    "--mount {s}: uid, gid and mode are not supported on type=ssh (the agent socket is bound with the host's owner and mode)"
                ));
            }
            return Ok(RunMount::Ssh {
                id: id.unwrap_or_else(|| "default".into()),
                target: target.unwrap_or_else(|| "/run/buildkit/ssh_agent.0".into()),
                required,
            });
        }
        _ => {}
    }
    let target = target.ok_or_else(|| format!("--mount {s}: target is required"))?;
    match typ.as_str() {
        "cache" => Ok(RunMount::Cache {
            id: id.unwrap_or_else(|| target.clone()),
            target,
            uid,
            gid,
            mode: mode.unwrap_or(0o755),
            // BuildKit: caches are writable unless `ro`.
            readonly: writable == Some(false),
        }),
        "tmpfs" => Ok(RunMount::Tmpfs { target, size }),
        "bind" => Ok(RunMount::Bind {
            target,
            source: if source.is_empty() {
                ".".into()
            } else {
                source
            },
            from,
            // BuildKit: binds are read-only unless `rw`.
            rw: writable == Some(true),
        }),
        other => Err(format!(
            "--mount {s}: type={other} is not supported (bind, cache, tmpfs, secret and ssh are)"
        )),
    }
}

/// Splits a `--mount` value into its fields as BuildKit does (a CSV record):
/// a field in double quotes may hold commas, `""` inside it is one quote.
fn csv_fields(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().expect("one field").push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().expect("one field").push(c),
        }
    }
    out
}

fn parse_size(v: &str) -> Option<u64> {
    let v = v.to_ascii_lowercase();
    let (n, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1u64 << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        _ => (v.as_str(), 1),
    };
    n.parse::<u64>().ok().map(|n| n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_mounts() {
        assert_eq!(
            parse("type=cache,target=/root/.cache/pip").unwrap(),
            RunMount::Cache {
                target: "/root/.cache/pip".into(),
                id: "/root/.cache/pip".into(),
                uid: 0,
                gid: 0,
                mode: 0o755,
                readonly: false
            }
        );
        assert_eq!(
            parse("type=cache,id=apt,dst=/var/cache/apt,sharing=locked,uid=1000,mode=0700")
                .unwrap(),
            RunMount::Cache {
                target: "/var/cache/apt".into(),
                id: "apt".into(),
                uid: 1000,
                gid: 0,
                mode: 0o700,
                readonly: false
            }
        );
        assert!(matches!(
            parse("type=cache,target=/c,ro").unwrap(),
            RunMount::Cache { readonly: true, .. }
        ));
        assert!(matches!(
            parse("type=cache,target=/c,readonly=false").unwrap(),
            RunMount::Cache {
                readonly: false,
                ..
            }
        ));
    }

    #[test]
    fn tmpfs_and_bind_mounts() {
        assert_eq!(
            parse("type=tmpfs,target=/t,size=1m").unwrap(),
            RunMount::Tmpfs {
                target: "/t".into(),
                size: Some(1 << 20)
            }
        );
        assert_eq!(
            parse("target=/src,source=app").unwrap(),
            RunMount::Bind {
                target: "/src".into(),
                source: "app".into(),
                from: None,
                rw: false
            }
        );
        assert_eq!(
            parse(r#"type=bind,"source=a,b",target=/x"#).unwrap(),
            RunMount::Bind {
                target: "/x".into(),
                source: "a,b".into(),
                from: None,
                rw: false
            }
        );
        assert_eq!(csv_fields(r#"a,"b=""q"",c",d"#), ["a", r#"b="q",c"#, "d"]);
        for rw in ["rw", "readwrite", "RW=true", "readwrite=1", "ro=false"] {
            assert!(
                matches!(
                    parse(&format!("target=/x,{rw}")).unwrap(),
                    RunMount::Bind { rw: true, .. }
                ),
                "{rw}"
            );
        }
        for ro in ["ro", "readonly=true", "rw=false"] {
            assert!(
                matches!(
                    parse(&format!("target=/x,{ro}")).unwrap(),
                    RunMount::Bind { rw: false, .. }
                ),
                "{ro}"
            );
        }
    }

    #[test]
    fn secret_and_ssh_mounts() {
        assert_eq!(
            parse("type=secret,id=aws").unwrap(),
            RunMount::Secret {
                id: "aws".into(),
                target: Some("/run/secrets/aws".into()),
                env: None,
                required: false,
                uid: 0,
                gid: 0,
                mode: 0o400
            }
        );
        assert_eq!(
            parse("type=secret,target=/root/.npmrc,required,mode=0440,uid=1000").unwrap(),
            RunMount::Secret {
                id: ".npmrc".into(),
                target: Some("/root/.npmrc".into()),
                env: None,
                required: true,
                uid: 1000,
                gid: 0,
                mode: 0o440
            }
        );
        assert!(matches!(
            parse("type=secret,id=tok,env=TOKEN").unwrap(),
            RunMount::Secret { target: None, env: Some(e), .. } if e == "TOKEN"
        ));
        assert_eq!(
            parse("type=ssh").unwrap(),
            RunMount::Ssh {
                id: "default".into(),
                target: "/run/buildkit/ssh_agent.0".into(),
                required: false
            }
        );
    }

    #[test]
    fn bad_mounts_are_refused() {
        for bad in [
            "type=secret",
            "type=ssh,mode=0666",
            "type=cache",
            "type=cache,target=/x,from=builder",
            "type=bind,target=/x,rw=maybe",
            "type=cache,target=/x,bogus=1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

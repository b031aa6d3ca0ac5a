//! `berth -H HOST …` (or `BERTH_HOST`): the CLI as an Engine API client of
//! a service elsewhere — `berth system service` on another socket or
//! machine, or dockerd (the protocol is docker's). The same flags and the
//! same tables as the local commands: each command here asks the service
//! (through [`berth_api::client`]) for the documents the local path reads
//! from the engine and prints them with the local path's renderers.
//!
//! `DOCKER_HOST` is deliberately not read: a user who points the docker CLI
//! at a daemon should not find berth's own store commands silently acting
//! on that daemon instead.

use std::io::{IsTerminal, Write};

use anyhow::anyhow;
use berth_api::client::Method;
use berth_api::client::{Call, Client, ClientError, Demux, Then, q};
use serde_json::{Value, json};

use super::container::exit_err;
use crate::{Cmd, ContainerCmd, ImageCmd, SystemCmd};

/// Runs `cmd` against the service at `host`. Long on purpose: one arm per
/// command sent, each a request or two; the bigger ones are functions below.
pub fn run(host: &str, cmd: Cmd) -> anyhow::Result<()> {
    let c = Client::new(host).map_err(daemon)?;
    match cmd {
        Cmd::Version(a) => {
            let server = c.get("/version").map_err(daemon)?;
            super::system::print_version(&a, server)
        }
        Cmd::Info(a) | Cmd::System(SystemCmd::Info(a)) => {
            let doc = c.get("/info").map_err(daemon)?;
            super::system::print_info(&a, &doc)
        }
        Cmd::Ps(a) | Cmd::Container(ContainerCmd::Ls(a)) => ps(&c, a),
        Cmd::Images(a) | Cmd::Image(ImageCmd::Ls(a)) => images(&c, a),
        Cmd::Inspect(a) => {
            let kinds: &[&str] = match a.typ.as_deref() {
                Some("container") => &["containers"],
                Some("image") => &["images"],
                Some("volume") => &["volumes"],
                Some("network") => &["networks"],
                _ => &["containers", "images", "volumes", "networks"],
            };
            inspect(&c, &a.names, kinds, a.format.as_deref())
        }
        Cmd::Container(ContainerCmd::Inspect(a)) => {
            inspect(&c, &a.containers, &["containers"], a.format.as_deref())
        }
        Cmd::Image(ImageCmd::Inspect(a)) => {
            inspect(&c, &a.images, &["images"], a.format.as_deref())
        }
        Cmd::Run(a) | Cmd::Container(ContainerCmd::Run(a)) => run_container(&c, a),
        Cmd::Create(a) | Cmd::Container(ContainerCmd::Create(a)) => {
            let id = create(&c, &a)?;
            println!("{id}");
            Ok(())
        }
        Cmd::Start(a) | Cmd::Container(ContainerCmd::Start(a)) => {
            if a.attach || a.interactive {
                let [one] = a.containers.as_slice() else {
                    return Err(exit_err(
                        1,
                        "you cannot start and attach multiple containers at once",
                    ));
                };
                return attached(&c, one, a.interactive, true);
            }
            each(&a.containers, |id| {
                c.post(&format!("/containers/{}/start", q(id)), None)
            })
        }
        Cmd::Stop(a) | Cmd::Container(ContainerCmd::Stop(a)) => {
            let mut qs = String::new();
            if let Some(t) = a.time {
                qs.push_str(&format!("?t={t}"));
            }
            each(&a.containers, |id| {
                c.post(&format!("/containers/{}/stop{qs}", q(id)), None)
            })
        }
        Cmd::Restart(a) | Cmd::Container(ContainerCmd::Restart(a)) => {
            let qs = a.time.map(|t| format!("?t={t}")).unwrap_or_default();
            each(&a.containers, |id| {
                c.post(&format!("/containers/{}/restart{qs}", q(id)), None)
            })
        }
        Cmd::Kill(a) | Cmd::Container(ContainerCmd::Kill(a)) => each(&a.containers, |id| {
            c.post(
                &format!("/containers/{}/kill?signal={}", q(id), q(&a.signal)),
                None,
            )
        }),
        Cmd::Pause(a) | Cmd::Container(ContainerCmd::Pause(a)) => each(&a.containers, |id| {
            c.post(&format!("/containers/{}/pause", q(id)), None)
        }),
        Cmd::Unpause(a) | Cmd::Container(ContainerCmd::Unpause(a)) => each(&a.containers, |id| {
            c.post(&format!("/containers/{}/unpause", q(id)), None)
        }),
        Cmd::Rm(a) | Cmd::Container(ContainerCmd::Rm(a)) => each(&a.containers, |id| {
            c.call(
                Method::DELETE,
                &format!("/containers/{}?force={}&v={}", q(id), a.force, a.volumes),
                Call::default(),
            )
        }),
        Cmd::Wait(a) | Cmd::Container(ContainerCmd::Wait(a)) => each_with(&a.containers, |id| {
            let r = c.post(&format!("/containers/{}/wait", q(id)), None)?;
            println!("{}", r.json()?["StatusCode"]);
            Ok(())
        }),
        Cmd::Logs(a) | Cmd::Container(ContainerCmd::Logs(a)) => logs(&c, a),
        Cmd::Exec(a) | Cmd::Container(ContainerCmd::Exec(a)) => exec(&c, a),
        Cmd::Attach(a) | Cmd::Container(ContainerCmd::Attach(a)) => {
            attached(&c, &a.container, !a.no_stdin, false)
        }
        Cmd::Pull(a) | Cmd::Image(ImageCmd::Pull(a)) => {
            let r = berth_types::Reference::parse(&a.name)?.with_default_tag();
            let path = format!(
                "/images/create?fromImage={}&tag={}",
                q(&r.familiar_name()),
                q(r.tag().unwrap_or("latest"))
            );
            progress(&c, &path, a.quiet)?;
            if a.quiet {
                println!("{}", r.familiar());
            }
            Ok(())
        }
        Cmd::Tag(a) | Cmd::Image(ImageCmd::Tag(a)) => {
            let t = berth_types::Reference::parse(&a.target)?.with_default_tag();
            c.post(
                &format!(
                    "/images/{}/tag?repo={}&tag={}",
                    q(&a.source),
                    q(&t.familiar_name()),
                    q(t.tag().unwrap_or("latest"))
                ),
                None,
            )
            .map_err(daemon)?;
            Ok(())
        }
        Cmd::Rmi(a) | Cmd::Image(ImageCmd::Rm(a)) => each_with(&a.images, |i| {
            let path = format!("/images/{}?force={}&noprune={}", q(i), a.force, a.no_prune);
            let v = c.call(Method::DELETE, &path, Call::default())?.json()?;
            for e in v.as_array().into_iter().flatten() {
                if let Some(t) = e["Untagged"].as_str() {
                    println!("Untagged: {t}");
                }
                if let Some(d) = e["Deleted"].as_str() {
                    println!("Deleted: {d}");
                }
            }
            Ok(())
        }),
        other => Err(exit_err(
            1,
            format!(
                "`berth -H` does not send `{}` to a service yet: run it without -H, or with the docker CLI and DOCKER_HOST",
                command_name(&other)
            ),
        )),
    }
}

/// The service's error as the CLI's (exit 1, docker's wording).
fn daemon(e: ClientError) -> anyhow::Error {
    exit_err(1, e.to_string())
}

fn command_name(c: &Cmd) -> String {
    let s = format!("{c:?}");
    s.split(['(', ' ', '{']).next().unwrap_or("").to_lowercase()
}

/// docker's loop over names: each name printed on success, each error on
/// stderr, exit 1 if any failed.
fn each(
    names: &[String],
    mut f: impl FnMut(&str) -> Result<berth_api::client::Response, ClientError>,
) -> anyhow::Result<()> {
    each_with(names, |n| f(n).map(|_| println!("{n}")))
}

/// docker's loop over names, `f` printing each answer itself: each error
/// on stderr, exit 1 if any failed.
fn each_with(
    names: &[String],
    mut f: impl FnMut(&str) -> Result<(), ClientError>,
) -> anyhow::Result<()> {
    let mut failed = false;
    for n in names {
        if let Err(e) = f(n) {
            eprintln!("{e}");
            failed = true;
        }
    }
    if failed {
        return Err(exit_err(1, String::new()));
    }
    Ok(())
}

/// `--filter name=value` flags as the API's `filters` map.
fn filter_map(flags: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, Vec<String>>> {
    let mut filters: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for f in flags {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("bad format of filter (expected name=value)"))?;
        filters
            .entry(k.to_string())
            .or_default()
            .push(v.to_string());
    }
    Ok(filters)
}

fn ps(c: &Client, a: super::container::PsArgs) -> anyhow::Result<()> {
    let filters = filter_map(&a.filter)?;
    let all = a.all || a.latest || a.last >= 0;
    let mut path = format!("/containers/json?all={all}&size={}", a.size);
    if !filters.is_empty() {
        path.push_str(&format!("&filters={}", q(&json!(filters).to_string())));
    }
    if a.latest {
        path.push_str("&limit=1");
    } else if a.last >= 0 {
        path.push_str(&format!("&limit={}", a.last));
    }
    let list = c.get(&path).map_err(daemon)?;
    let items: Vec<Value> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| ps_item(d, a.no_trunc, a.size))
        .collect();
    super::container::print_ps(&a, &items)
}

/// A `GET /containers/json` entry as the row the local `ps` prints.
fn ps_item(d: &Value, no_trunc: bool, size: bool) -> Value {
    use crate::output::{ellipsis, human_size};
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
    let id = s("Id");
    let cmd = s("Command");
    let created = d["Created"]
        .as_i64()
        .and_then(|t| jiff::Timestamp::from_second(t).ok())
        .map(|t| t.to_string());
    let ports = d["Ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["Type"].as_str().unwrap_or("tcp");
            match p["PublicPort"].as_u64() {
                Some(pub_) => format!(
                    "{}:{}->{}/{proto}",
                    p["IP"].as_str().unwrap_or("0.0.0.0"),
                    pub_,
                    p["PrivatePort"]
                ),
                None => format!("{}/{proto}", p["PrivatePort"]),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let labels = d["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let names = d["Names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .map(|n| n.trim_start_matches('/'))
        .collect::<Vec<_>>()
        .join(",");
    let size = if size {
        format!(
            "{} (virtual {})",
            human_size(d["SizeRw"].as_u64().unwrap_or(0)),
            human_size(d["SizeRootFs"].as_u64().unwrap_or(0))
        )
    } else {
        String::new()
    };
    json!({
        "Command": if no_trunc { format!("\"{cmd}\"") } else { format!("\"{}\"", ellipsis(&cmd, 20)) },
        "CreatedAt": crate::output::created_at(created.as_deref()),
        "ID": if no_trunc { id } else { id.chars().take(12).collect() },
        "Image": s("Image"),
        "Labels": labels,
        "Names": names,
        "Networks": d["HostConfig"]["NetworkMode"].as_str().unwrap_or_default(),
        "Ports": ports,
        "RunningFor": crate::output::since(created.as_deref()),
        "Size": size,
        "State": s("State"),
        "Status": s("Status"),
    })
}

fn images(c: &Client, a: super::image::ImagesArgs) -> anyhow::Result<()> {
    let mut path = format!("/images/json?all={}", a.all);
    let mut filters = filter_map(&a.filter)?;
    if let Some(r) = &a.reference {
        filters
            .entry("reference".into())
            .or_default()
            .push(r.clone());
    }
    if !filters.is_empty() {
        path.push_str(&format!("&filters={}", q(&json!(filters).to_string())));
    }
    let list = c.get(&path).map_err(daemon)?;
    let mut items = Vec::new();
    for d in list.as_array().into_iter().flatten() {
        let id = d["Id"].as_str().unwrap_or_default();
        let hex = id.trim_start_matches("sha256:");
        let shown = if a.no_trunc {
            id.to_string()
        } else {
            hex.chars().take(12).collect()
        };
        let created = d["Created"]
            .as_i64()
            .and_then(|t| jiff::Timestamp::from_second(t).ok())
            .map(|t| t.to_string());
        let size = crate::output::human_size(d["Size"].as_u64().unwrap_or(0));
        let tags: Vec<&str> = d["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .filter(|t| *t != "<none>:<none>")
            .collect();
        let digest = d["RepoDigests"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|x| x.as_str())
            .and_then(|x| x.split_once('@'))
            .map(|(_, d)| d.to_string())
            .unwrap_or_else(|| "<none>".into());
        let mut rows: Vec<(String, String)> = tags
            .iter()
            .map(|t| match t.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
                _ => (t.to_string(), "<none>".to_string()),
            })
            .collect();
        if rows.is_empty() {
            rows.push(("<none>".into(), "<none>".into()));
        }
        for (repo, tag) in rows {
            items.push(super::image::image_row(
                &repo,
                &tag,
                &digest,
                &shown,
                created.as_deref(),
                &size,
            ));
        }
    }
    super::image::print_images(&a, &items)
}

/// `inspect`: the first kind of object each name finds, in the order given.
fn inspect(
    c: &Client,
    names: &[String],
    kinds: &[&str],
    format: Option<&str>,
) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        let mut found = None;
        for k in kinds {
            let path = match *k {
                "volumes" | "networks" => format!("/{k}/{}", q(n)),
                _ => format!("/{k}/{}/json", q(n)),
            };
            match c.get(&path) {
                Ok(v) => {
                    found = Some(v);
                    break;
                }
                Err(ClientError::Daemon { status: 404, .. }) => {}
                Err(e) => return Err(daemon(e)),
            }
        }
        match found {
            Some(v) => out.push(v),
            None => missing.push(n.clone()),
        }
    }
    let what = match kinds {
        [k] => k.trim_end_matches('s'),
        _ => "object",
    };
    crate::print_and_fail(out, missing, format, what)
}

/// `create`: the same request the local path makes, sent as docker's body.
/// Pulls a missing image first, as docker's CLI does on a 404.
fn create(c: &Client, a: &super::container::CreateArgs) -> anyhow::Result<String> {
    let req = super::container::request(a).map_err(|e| exit_err(125, e.to_string()))?;
    let body = berth_api::create::create_body(&req).map_err(|e| exit_err(125, e))?;
    let path = match &req.name {
        Some(n) => format!("/containers/create?name={}", q(n)),
        None => "/containers/create".to_string(),
    };
    let call = || {
        c.call(
            Method::POST,
            &path,
            Call {
                json: Some(&body),
                ..Default::default()
            },
        )
    };
    let r = match call() {
        Err(ClientError::Daemon { status: 404, .. }) if a.pull != "never" => {
            let r = berth_types::Reference::parse(&req.image)?.with_default_tag();
            eprintln!("Unable to find image '{}' locally", r.familiar());
            progress(
                c,
                &format!(
                    "/images/create?fromImage={}&tag={}",
                    q(&r.familiar_name()),
                    q(r.tag().unwrap_or("latest"))
                ),
                false,
            )?;
            call()
        }
        r => r,
    };
    let v = r
        .map_err(|e| exit_err(125, e.to_string()))?
        .json()
        .map_err(daemon)?;
    Ok(v["Id"].as_str().unwrap_or_default().to_string())
}

fn run_container(c: &Client, a: super::container::RunArgs) -> anyhow::Result<()> {
    if a.c.tty && !a.detach && a.c.interactive && !std::io::stdin().is_terminal() {
        return Err(exit_err(1, "the input device is not a TTY"));
    }
    let id = create(c, &a.c)?;
    if a.detach {
        c.post(&format!("/containers/{id}/start"), None)
            .map_err(|e| exit_err(start_exit_code(&e), e.to_string()))?;
        println!("{id}");
        return Ok(());
    }
    attached(c, &id, a.c.interactive, true)
}

/// docker's CLI: a start that failed because the command is missing exits
/// 127, one that cannot be executed 126, anything else 125.
fn start_exit_code(e: &ClientError) -> i32 {
    let m = e.to_string();
    if m.contains("not found") || m.contains("no such file") {
        127
    } else if m.contains("permission denied") {
        126
    } else {
        125
    }
}

/// Attaches to `id` (its output, and our stdin with `stdin`), starting it
/// first when `start`; exits with the container's code as docker's
/// `run`/`start -a` do.
fn attached(c: &Client, id: &str, stdin: bool, start: bool) -> anyhow::Result<()> {
    let doc = c
        .get(&format!("/containers/{}/json", q(id)))
        .map_err(daemon)?;
    let tty = doc["Config"]["Tty"].as_bool().unwrap_or(false);
    let full = doc["Id"].as_str().unwrap_or(id).to_string();
    let path = format!(
        "/containers/{full}/attach?stream=1&stdout=1&stderr=1&stdin={}",
        u8::from(stdin)
    );
    let then = start.then(|| Then {
        wait: format!("/containers/{full}/wait?condition=next-exit"),
        start: format!("/containers/{full}/start"),
    });
    let (keys, _raw) = super::container::terminal_input(tty && stdin);
    let input: Option<Box<dyn std::io::Read + Send>> =
        stdin.then(|| Box::new(keys) as Box<dyn std::io::Read + Send>);
    let mut demux = Demux::default();
    let mut on_output = |d: &[u8]| {
        if tty {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(d);
            let _ = o.flush();
        } else {
            demux.feed(d, &mut |s, b| write_stream(s, b));
        }
    };
    let r = c.hijack(&path, Call::default(), then, input, &mut on_output);
    drop(_raw);
    let (_, code) = r.map_err(|e| match start {
        true => exit_err(start_exit_code(&e), e.to_string()),
        false => daemon(e),
    })?;
    let code = match code {
        Some(c) => c,
        None => c
            .get(&format!("/containers/{full}/json"))
            .map(|d| d["State"]["ExitCode"].as_i64().unwrap_or(0))
            .unwrap_or(0),
    };
    if code != 0 {
        return Err(exit_err(code as i32, String::new()));
    }
    Ok(())
}

fn write_stream(stream: u8, b: &[u8]) {
    if stream == 2 {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(b);
    } else {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(b);
        let _ = o.flush();
    }
}

fn logs(c: &Client, a: super::container::LogsArgs) -> anyhow::Result<()> {
    let mut path = format!(
        "/containers/{}/logs?stdout=1&stderr=1&follow={}&timestamps={}&details={}&tail={}",
        q(&a.container),
        a.follow,
        a.timestamps,
        a.details,
        q(&a.tail)
    );
    for (k, v) in [("since", &a.since), ("until", &a.until)] {
        if let Some(v) = v {
            path.push_str(&format!("&{k}={}", q(v)));
        }
    }
    let mut demux = Demux::default();
    c.stream(Method::GET, &path, Call::default(), &mut |head, d| {
        if head.multiplexed() {
            demux.feed(d, &mut |s, b| write_stream(s, b));
        } else {
            write_stream(1, d);
        }
    })
    .map_err(daemon)?;
    Ok(())
}

fn exec(c: &Client, a: super::container::ExecArgs) -> anyhow::Result<()> {
    let body = json!({
        "Cmd": a.command,
        "Env": a.env,
        "User": a.user.clone().unwrap_or_default(),
        "WorkingDir": a.workdir.clone().unwrap_or_default(),
        "Tty": a.tty,
        "Privileged": a.privileged,
        "AttachStdin": a.interactive && !a.detach,
        "AttachStdout": !a.detach,
        "AttachStderr": !a.detach,
    });
    let v = c
        .post(
            &format!("/containers/{}/exec", q(&a.container)),
            Some(&body),
        )
        .and_then(|r| r.json())
        .map_err(daemon)?;
    let eid = v["Id"].as_str().unwrap_or_default().to_string();
    let start = json!({"Detach": a.detach, "Tty": a.tty});
    if a.detach {
        c.post(&format!("/exec/{eid}/start"), Some(&start))
            .map_err(daemon)?;
        return Ok(());
    }
    let _raw = (a.tty && a.interactive).then(|| berth_runtime::wait::RawMode::enter(0));
    let input: Option<Box<dyn std::io::Read + Send>> = a
        .interactive
        .then(|| Box::new(std::io::stdin()) as Box<dyn std::io::Read + Send>);
    let mut demux = Demux::default();
    let tty = a.tty;
    let mut on_output = |d: &[u8]| {
        if tty {
            write_stream(1, d);
        } else {
            demux.feed(d, &mut |s, b| write_stream(s, b));
        }
    };
    c.hijack(
        &format!("/exec/{eid}/start"),
        Call {
            json: Some(&start),
            ..Default::default()
        },
        None,
        input,
        &mut on_output,
    )
    .map_err(daemon)?;
    drop(_raw);
    let code = c.get(&format!("/exec/{eid}/json")).map_err(daemon)?["ExitCode"]
        .as_i64()
        .unwrap_or(0);
    if code != 0 {
        return Err(exit_err(code as i32, String::new()));
    }
    Ok(())
}

/// A streamed JSON-lines progress answer (pull): each status line shown
/// once, an `error` line the command's error.
fn progress(c: &Client, path: &str, quiet: bool) -> anyhow::Result<()> {
    let mut pending = Vec::new();
    let mut err = None;
    c.stream(Method::POST, path, Call::default(), &mut |_, d| {
        pending.extend_from_slice(d);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if let Some(e) = v["error"].as_str() {
                err = Some(e.to_string());
            } else if !quiet && v["progressDetail"].as_object().is_none_or(|m| m.is_empty()) {
                match (v["id"].as_str(), v["status"].as_str()) {
                    (Some(id), Some(s)) => println!("{id}: {s}"),
                    (None, Some(s)) => println!("{s}"),
                    _ => {}
                }
            }
        }
    })
    .map_err(daemon)?;
    match err {
        Some(e) => Err(exit_err(1, format!("Error response from daemon: {e}"))),
        None => Ok(()),
    }
}

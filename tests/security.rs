//! End to end: the attacks a probe of berth found, each reproduced against the
//! real binaries, and what berth does instead (issue: security). Each test
//! names the attack; docker's or BuildKit's behaviour is the reference where
//! one exists.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::{Berth, RegistryServer, curl};

fn build(b: &Berth, dir: &Path, extra: &[&str]) -> common::Run {
    let mut args = vec!["build", "--network", "none"];
    args.extend_from_slice(extra);
    args.push(dir.to_str().unwrap());
    b.run(&args)
}

fn write(p: &Path, content: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A directory outside every context, holding a file only the host has.
fn host_secret(b: &Berth) -> (PathBuf, String) {
    let d = b.path("host-only");
    let secret = format!("HOST-SECRET-{}", std::process::id());
    write(&d.join("etc/shadow"), &secret);
    write(&d.join("etc/passwd"), &secret);
    write(&d.join("root/.ssh/id_rsa"), &secret);
    (d, secret)
}

/// Attack: a build context whose symlinks point out of it (`rootlink -> /`,
/// `sub/up -> ../../../..`, chains, links to directories, globs through
/// links). BuildKit resolves every source inside the context, a link
/// followed as if the context were `/`; so does berth.
#[test]
fn copy_never_follows_a_link_out_of_the_context() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let (host, secret) = host_secret(&b);
    let ctx = b.path("ctx");
    write(&ctx.join("real.txt"), "in the context\n");
    write(&ctx.join("dir/inner.txt"), "inner\n");
    write(&ctx.join("secret.txt"), "ignored\n");
    write(&ctx.join(".dockerignore"), "secret.txt\n");
    symlink(&host, ctx.join("hostlink")).unwrap();
    symlink("/", ctx.join("rootlink")).unwrap();
    std::fs::create_dir_all(ctx.join("sub/deeper")).unwrap();
    // Enough `..` to reach the host's / from the context.
    let ups = "../".repeat(ctx.components().count() + 2);
    symlink(
        format!("{ups}{}", host.display()),
        ctx.join("sub/deeper/up"),
    )
    .unwrap();
    symlink("/real.txt", ctx.join("abs")).unwrap();
    symlink("abs", ctx.join("chain")).unwrap();
    symlink("../../dir", ctx.join("sub/deeper/todir")).unwrap();
    symlink("secret.txt", ctx.join("to-ignored")).unwrap();

    // Each of these reads a host file with a naive join; each must fail as
    // "not found", naming the source.
    let host_rel = host.strip_prefix("/").unwrap().display().to_string();
    for src in [
        "hostlink/etc/shadow".to_string(),
        format!("rootlink/{host_rel}/etc/shadow"),
        "sub/deeper/up/etc/passwd".to_string(),
        "hostlink/root/".to_string(),
        "hostlink/etc/*".to_string(),
        "to-ignored".to_string(),
    ] {
        write(
            &ctx.join("Dockerfile"),
            &format!("FROM busybox\nCOPY {src} /x\n"),
        );
        let r = build(&b, &ctx, &["-t", "leak"]);
        let err = r.fails(1);
        assert!(
            err.contains("not found") && err.contains("Dockerfile:2"),
            "COPY {src}: {err}"
        );
        assert!(!err.contains(&secret), "{err}");
    }

    // Links that stay inside are followed inside: an absolute link is read
    // from the context's root, chains too, and a link to a directory copies
    // the directory (BuildKit's behaviour).
    write(
        &ctx.join("Dockerfile"),
        "FROM busybox\nCOPY abs /abs\nCOPY chain /chain\nCOPY sub/deeper/todir/ /todir/\n\
         COPY rootlink/ /whole/\n",
    );
    build(&b, &ctx, &["-t", "inside"]).ok();
    let out = b
        .run(&[
            "run",
            "--rm",
            "inside",
            "sh",
            "-c",
            "cat /abs /chain /todir/inner.txt; ls -A /whole; readlink /whole/hostlink; \
             cat /whole/hostlink/etc/shadow 2>&1; true",
        ])
        .ok();
    assert!(
        out.starts_with("in the context\nin the context\ninner\n"),
        "{out}"
    );
    assert!(
        !out.contains(&secret),
        "a host file reached the image: {out}"
    );
    // The context's own links are copied as links (dangling in the image).
    assert!(out.contains(&host.display().to_string()), "{out}");
    assert!(
        !out.contains("secret.txt"),
        "an ignored file was copied: {out}"
    );
}

/// Attack: `COPY --from` a stage whose filesystem has a link to a host path.
/// The stage's links resolve inside the stage.
#[test]
fn copy_from_a_stage_stays_in_the_stage() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let (host, secret) = host_secret(&b);
    let ctx = b.path("ctx");
    write(
        &ctx.join("Dockerfile"),
        &format!(
            "FROM busybox AS s\nRUN ln -s {} /l && ln -s / /r && mkdir -p /etc && echo stage > /etc/own\n\
             FROM busybox\nCOPY --from=s /l/etc/shadow /x\n",
            host.display()
        ),
    );
    let err = build(&b, &ctx, &["-t", "leak"]).fails(1);
    assert!(err.contains("not found"), "{err}");
    assert!(!err.contains(&secret));
    write(
        &ctx.join("Dockerfile"),
        "FROM busybox AS s\nRUN echo stage > /etc/own && ln -s / /r && ln -s /etc/own /abs\n\
         FROM busybox\nCOPY --from=s /r/etc/own /own\nCOPY --from=s /abs /abs\n",
    );
    build(&b, &ctx, &["-t", "fine"]).ok();
    let out = b.run(&["run", "--rm", "fine", "cat", "/own", "/abs"]).ok();
    assert_eq!(out, "stage\nstage\n");
}

/// Attack: a directory of the context swapped for a link to the host while
/// builds copy it. Whatever each build finds, nothing of the host's reaches
/// an image.
#[test]
fn a_link_swapped_in_during_a_build_reads_nothing_of_the_host() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let (host, secret) = host_secret(&b);
    let ctx = b.path("ctx");
    for i in 0..200 {
        write(&ctx.join(format!("d/f{i}")), "ctx\n");
    }
    write(
        &ctx.join("Dockerfile"),
        "FROM busybox\nCOPY d/ /out/\nCOPY d/f1 /one\n",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (ctx, host, stop) = (ctx.clone(), host.join("etc"), stop.clone());
        std::thread::spawn(move || {
            let (d, aside, link) = (ctx.join("d"), ctx.join("d.aside"), ctx.join("d.link"));
            let _ = symlink(&host, &link);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // d -> host link, then back to the directory, atomically.
                let _ = std::fs::rename(&d, &aside);
                let _ = symlink(&host, &d);
                std::thread::sleep(std::time::Duration::from_millis(2));
                let _ = std::fs::remove_file(&d);
                let _ = std::fs::rename(&aside, &d);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let mut built = 0;
    for i in 0..12 {
        let tag = format!("swap{i}");
        let r = build(&b, &ctx, &["--no-cache", "-t", &tag]);
        if r.code() != 0 {
            let err = r.stderr();
            // Not even the names of the host's files.
            assert!(
                !err.contains(&secret) && !err.contains("shadow") && !err.contains("passwd"),
                "build {i} read the host: {err}"
            );
            eprintln!("build {i}: {}", err.lines().last().unwrap_or(""));
            continue;
        }
        built += 1;
        let out = b
            .run(&[
                "run",
                "--rm",
                &tag,
                "sh",
                "-c",
                "cat /one /out/* 2>&1; true",
            ])
            .ok();
        assert!(!out.contains(&secret), "build {i} read the host: {out}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    eprintln!("{built} of 12 builds completed while the link was swapped");
}

fn reg_user_add(storage: &Path, name: &str, pw: &str) {
    Berth::new()
        .run_stdin(
            &[
                "registry",
                "user",
                "add",
                "--storage",
                storage.to_str().unwrap(),
                "--password-stdin",
                name,
            ],
            format!("{pw}\n").as_bytes(),
        )
        .ok();
}

/// An image pushed to `<addr>/<repo>` by a user logged in with `pw`.
fn push_as(addr: &str, repo: &str, user: &str, pw: &str) -> Berth {
    let b = Berth::new();
    b.import_busybox("busybox:latest");
    b.run_stdin(
        &["login", "-u", user, "--password-stdin", addr],
        pw.as_bytes(),
    )
    .ok();
    let r = format!("{addr}/{repo}");
    b.run(&["tag", "busybox:latest", &r]).ok();
    b.run(&["push", &r]).ok();
    b
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Runs `cmd` as `nobody` (setpriv, util-linux).
fn as_nobody(cmd: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(cmd)
        .output()
        .expect("setpriv (util-linux)")
}

/// Attack: the registry failed open — an unreadable or corrupt users file
/// (EMFILE under load, a torn write) read as "no users", and no users meant
/// anyone may delete; removing the last user opened every private
/// repository. Now open is asked for (`--open`), and an unreadable store
/// refuses (503).
#[test]
fn registry_fails_closed() {
    let t = tempfile::tempdir().unwrap();
    let storage = t.path().join("reg");
    let reg = RegistryServer::start(&storage, &[]);
    let base = format!("http://{}", reg.addr);
    // No accounts and no --open: closed, not open.
    let (st, _, _) = curl(&[&format!("{base}/v2/")]);
    assert_eq!(st, 401);
    let (st, _, _) = curl(&["-X", "POST", &format!("{base}/v2/x/blobs/uploads/")]);
    assert_eq!(st, 401, "an anonymous push on a registry without accounts");
    reg_user_add(&storage, "alice", "correct horse");
    push_as(&reg.addr, "alice/app", "alice", "correct horse");
    let manifest = format!("{base}/v2/alice/app/manifests/latest");
    let (st, _, _) = curl(&["-u", "alice:correct horse", "-I", &manifest]);
    assert_eq!(st, 200);

    // A corrupt users file: nobody gets in, anonymous deletes stay refused.
    let users = storage.join("auth/users.json");
    let good = std::fs::read(&users).unwrap();
    std::fs::write(&users, b"{\"alice\": {").unwrap();
    for args in [
        vec!["-X", "DELETE", manifest.as_str()],
        vec!["-I", manifest.as_str()],
    ] {
        let (st, _, _) = curl(&args);
        assert_eq!(st, 401, "anonymous {args:?} with a corrupt users file");
    }
    let (st, _, body) = curl(&["-u", "alice:correct horse", "-I", &manifest]);
    assert_eq!(st, 503, "{}", String::from_utf8_lossy(&body));
    // Unreadable (a directory in its place): the same.
    std::fs::remove_file(&users).unwrap();
    std::fs::create_dir(&users).unwrap();
    let (st, _, _) = curl(&["-u", "alice:correct horse", "-X", "DELETE", &manifest]);
    assert_eq!(st, 503);
    let (st, _, _) = curl(&["-X", "DELETE", &manifest]);
    assert_eq!(st, 401);
    std::fs::remove_dir(&users).unwrap();
    std::fs::write(&users, &good).unwrap();
    std::os::unix::fs::chown(&users, Some(0), Some(0)).unwrap();

    // Removing the last user leaves a closed registry.
    Berth::new()
        .run(&[
            "registry",
            "user",
            "rm",
            "--storage",
            storage.to_str().unwrap(),
            "alice",
        ])
        .ok();
    let (st, _, _) = curl(&["-I", &manifest]);
    assert_eq!(st, 401, "the last user removed must not open the registry");
    let (st, _, _) = curl(&["-X", "DELETE", &manifest]);
    assert_eq!(st, 401);
    drop(reg);

    // --open is asked for, and refused while accounts exist.
    reg_user_add(&storage, "bob", "correct horse");
    let out = std::process::Command::new(common::berth_bin())
        .args([
            "registry",
            "serve",
            "--open",
            "--addr",
            "127.0.0.1:0",
            "--storage",
        ])
        .arg(&storage)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--open") && err.contains("1 account"), "{err}");
}

/// Attack: the JWT secret was written 0644 and chmodded after the rename,
/// so a local user could read it and forge tokens. Now the storage root and
/// auth/ are 0700 and every auth file is 0600 from its first byte: a watcher
/// never sees one with other bits, and `nobody` reads nothing.
#[test]
fn registry_secrets_are_private_from_the_first_byte() {
    let t = tempfile::tempdir().unwrap();
    // Anyone may walk to the stores: only their own modes protect them.
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(
        std::collections::BTreeSet::<String>::new(),
    ));
    let stores: Vec<PathBuf> = (0..20).map(|i| t.path().join(format!("s{i}"))).collect();
    let watcher = {
        let (stop, seen, stores) = (stop.clone(), seen.clone(), stores.clone());
        std::thread::spawn(move || {
            use std::os::unix::fs::PermissionsExt;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for s in &stores {
                    for e in std::fs::read_dir(s.join("auth"))
                        .into_iter()
                        .flatten()
                        .flatten()
                    {
                        if let Ok(m) = e.metadata()
                            && m.is_file()
                            && m.permissions().mode() & 0o077 != 0
                        {
                            seen.lock().unwrap().insert(e.path().display().to_string());
                        }
                    }
                }
            }
        })
    };
    for s in &stores {
        reg_user_add(s, "alice", "correct horse");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
    let s = &stores[0];
    assert_eq!(mode_of(s), 0o700);
    assert_eq!(mode_of(&s.join("auth")), 0o700);
    for f in ["secret", "users.json"] {
        assert_eq!(mode_of(&s.join("auth").join(f)), 0o600, "{f}");
    }
    let out = as_nobody(&["cat", s.join("auth/secret").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Attack: store directories were 0755, so a setuid-root file in an image
/// layer, written by a container or put in a volume was a root shell for
/// any local user who walked into the store. Docker and podman keep these
/// 0700/0710; berth's store root and content directories are 0700, and an
/// older store is made so when opened.
#[test]
fn the_store_hands_nobody_a_setuid_file() {
    let b = Berth::new();
    // Anyone may walk to the store: only its own modes protect it.
    std::fs::set_permissions(
        b.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    b.import_busybox("busybox");
    let ctx = b.path("ctx");
    write(
        &ctx.join("Dockerfile"),
        "FROM busybox\nRUN cp /bin/busybox /layer-suid && chmod 4755 /layer-suid\n",
    );
    build(&b, &ctx, &["-t", "suid"]).ok();
    b.run(&[
        "run",
        "--name",
        "writer",
        "busybox",
        "sh",
        "-c",
        "cp /bin/busybox /tmp/.x && chmod 4755 /tmp/.x",
    ])
    .ok();
    b.run(&["volume", "create", "vol"]).ok();
    b.run(&[
        "run",
        "--rm",
        "-v",
        "vol:/v",
        "busybox",
        "sh",
        "-c",
        "cp /bin/busybox /v/x && chmod 4755 /v/x",
    ])
    .ok();
    // The --rm container's files are deleted just after it returns.
    b.settled();
    let root = b.root();
    let found = common::tool(
        "find",
        &[root.to_str().unwrap(), "-type", "f", "-perm", "-4000"],
    );
    let files: Vec<&str> = found.lines().collect();
    let has = |s: &str| files.iter().any(|f| f.contains(s));
    assert!(
        has("layer-suid") && has("/.x") && has("/volumes/"),
        "setuid files in a layer, an upper dir and a volume: {found}"
    );
    for f in &files {
        let out = as_nobody(&["stat", f]);
        assert!(!out.status.success(), "nobody reached {f}");
        let out = as_nobody(&[f, "id", "-u"]);
        assert!(!out.status.success(), "nobody ran {f}");
    }
    for d in ["", "content", "snapshots", "containers", "volumes", "locks"] {
        assert_eq!(mode_of(&root.join(d)), 0o700, "{d}");
    }
    // A store an older berth left open is made private when opened, and
    // `system check` would say so.
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    b.run(&["images"]).ok();
    assert_eq!(mode_of(&root), 0o700);
    assert!(!as_nobody(&["stat", files[0]]).status.success());
    b.run(&["rm", "writer"]).ok();
}

/// A registry with small limits, from a config file.
fn limited_registry(dir: &Path, body_timeout: u64) -> RegistryServer {
    let cfg = dir.join("limits.toml");
    std::fs::write(
        &cfg,
        format!(
            "max_connections_per_client = 4\nheader_timeout = 2\nbody_timeout = {body_timeout}\n\
             write_timeout = 2\nshutdown_timeout = 2\n"
        ),
    )
    .unwrap();
    RegistryServer::start(
        &dir.join("reg"),
        &["--open", "--config", cfg.to_str().unwrap()],
    )
}

/// Whether the server closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut std::net::TcpStream, within: std::time::Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a response (408/400) before the close
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// A TCP connection to `addr` from the loopback address `local` (any
/// 127.x is this machine on Linux: a client address of its own).
fn connect_from(local: &str, addr: &str) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let target: std::net::SocketAddrV4 = addr.parse().unwrap();
    let me: std::net::Ipv4Addr = local.parse().unwrap();
    {
        // SAFETY: plain socket calls on a descriptor this function owns.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            let sa = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                sin_zero: [0; 8],
            };
            let l = sa(me, 0);
            let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
            assert_eq!(
                libc::bind(fd, &l as *const _ as *const libc::sockaddr, len),
                0
            );
            let r = sa(*target.ip(), target.port());
            assert_eq!(
                libc::connect(fd, &r as *const _ as *const libc::sockaddr, len),
                0,
                "connect: {}",
                std::io::Error::last_os_error()
            );
            std::net::TcpStream::from_raw_fd(fd)
        }
    }
}

/// Attack: 20,000 idle connections exhausted the server's descriptors (no
/// connection limit, no timeout); a stalled header or body held resources
/// for ever. Now connections are capped per client address, headers and
/// bodies have deadlines, and others are served meanwhile.
#[test]
fn registry_connections_are_bounded() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let t = tempfile::tempdir().unwrap();
    let reg = limited_registry(t.path(), 2);
    // Four idle connections from one address are all it may hold.
    let mut idle: Vec<_> = (0..4)
        .map(|_| connect_from("127.0.0.1", &reg.addr))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = connect_from("127.0.0.1", &reg.addr);
    assert!(
        closed_within(&mut fifth, Duration::from_secs(1)),
        "a connection over the per-client cap was kept"
    );
    // Another address is served meanwhile.
    let mut other = connect_from("127.0.0.2", &reg.addr);
    other
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut other, &mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // Idle connections go after the header deadline (2s here).
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(5)),
            "an idle connection outlived the header deadline"
        );
    }
    // Slowloris: a header trickled a byte at a time is cut at the deadline.
    let mut slow = connect_from("127.0.0.3", &reg.addr);
    let start = Instant::now();
    let mut cut = false;
    for b in
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
    {
        if slow.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        cut || closed_within(&mut slow, Duration::from_secs(3)),
        "a trickled header was still open after {:?}",
        start.elapsed()
    );
    // A stalled upload body fails after the body deadline; the upload
    // holds nothing afterwards.
    let (st, head, _) = curl(&[
        "-X",
        "POST",
        &format!("http://{}/v2/a/blobs/uploads/", reg.addr),
    ]);
    assert_eq!(st, 202, "{head}");
    let loc = common::header(&head, "location").unwrap();
    let path = loc.trim_start_matches(&format!("http://{}", reg.addr));
    let mut up = connect_from("127.0.0.4", &reg.addr);
    write!(
        up,
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\nonly a little"
    )
    .unwrap();
    assert!(
        closed_within(&mut up, Duration::from_secs(6)),
        "a stalled body held its request"
    );
}

/// A stalled client must not keep a stopping server alive: after SIGTERM,
/// requests in flight get `shutdown_timeout` (2s here), then it exits.
#[test]
fn registry_stops_despite_a_stalled_client() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let t = tempfile::tempdir().unwrap();
    let mut reg = limited_registry(t.path(), 600);
    let (st, head, _) = curl(&[
        "-X",
        "POST",
        &format!("http://{}/v2/a/blobs/uploads/", reg.addr),
    ]);
    assert_eq!(st, 202, "{head}");
    let loc = common::header(&head, "location").unwrap();
    let path = loc
        .trim_start_matches(&format!("http://{}", reg.addr))
        .to_string();
    let mut up = connect_from("127.0.0.1", &reg.addr);
    write!(
        up,
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nstalled"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(reg.child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let mut exited = false;
    while start.elapsed() < Duration::from_secs(10) {
        if reg.child.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        exited,
        "still running 10s after SIGTERM with a stalled client"
    );
    drop(up);
}

/// Attack: password guessing, with argon2 run on the async workers (64
/// guessing clients slowed every other request). Now each address and
/// account waits longer after each failure beyond a few, the wait answered
/// with 429 and Retry-After at no cost; the right password waits too.
#[test]
fn registry_slows_password_guessing() {
    let t = tempfile::tempdir().unwrap();
    let storage = t.path().join("reg");
    let reg = RegistryServer::start(&storage, &[]);
    reg_user_add(&storage, "alice", "correct horse");
    let url = format!("http://{}/v2/", reg.addr);
    let mut codes = Vec::new();
    for i in 0..8 {
        let (st, head, _) = curl(&["-u", &format!("alice:guess{i}"), &url]);
        codes.push(st);
        if st == 429 {
            assert!(common::header(&head, "retry-after").is_some(), "{head}");
        }
    }
    assert_eq!(&codes[..5], &[401; 5], "{codes:?}");
    assert!(codes[5..].contains(&429), "{codes:?}");
    let (st, _, _) = curl(&["-u", "alice:correct horse", &url]);
    assert_eq!(st, 429, "the account waits, whoever asks");
    // The token endpoint is held the same way.
    let (st, _, _) = curl(&[
        "-u",
        "alice:guess",
        &format!("http://{}/token?scope=repository:alice/x:pull", reg.addr),
    ]);
    assert_eq!(st, 429);
    // Anonymous requests are not held up.
    let (st, _, _) = curl(&[&url]);
    assert_eq!(st, 401);
}

/// Cross-repository mounts with accounts on: the challenge for the mount's
/// POST names the source repository's pull scope too (as distribution
/// does), so a client's next token can mount instead of uploading.
#[test]
fn registry_mount_challenge_names_the_source() {
    let t = tempfile::tempdir().unwrap();
    let storage = t.path().join("reg");
    let reg = RegistryServer::start(&storage, &[]);
    reg_user_add(&storage, "alice", "correct horse");
    push_as(&reg.addr, "alice/app", "alice", "correct horse");
    let (_, _, body) = curl(&[
        "-u",
        "alice:correct horse",
        &format!("http://{}/v2/alice/app/manifests/latest", reg.addr),
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
    ]);
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let mount = format!(
        "http://{}/v2/alice/copy/blobs/uploads/?mount={layer}&from=alice/app",
        reg.addr
    );
    let (st, head, _) = curl(&["-X", "POST", &mount]);
    assert_eq!(st, 401);
    let www = common::header(&head, "www-authenticate").unwrap();
    assert!(
        www.contains("scope=\"repository:alice/copy:pull,push repository:alice/app:pull\""),
        "{www}"
    );
    // With a token for both scopes the mount happens (201, no upload).
    let (st, _, body) = curl(&[
        "-u",
        "alice:correct horse",
        &format!(
            "http://{}/token?scope=repository:alice/copy:pull,push&scope=repository:alice/app:pull",
            reg.addr
        ),
    ]);
    assert_eq!(st, 200);
    let tok: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let bearer = format!("Authorization: Bearer {}", tok["token"].as_str().unwrap());
    let (st, head, _) = curl(&["-X", "POST", "-H", &bearer, &mount]);
    assert_eq!(st, 201, "{head}");
}

fn sha256_file(p: &Path) -> String {
    common::tool("sha256sum", &[p.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Attack: `load` skipped layer verification when the layer was unpacked
/// already, so an archive whose layer bytes do not match the config's
/// diff id loaded, `system check` said consistent, and `push` uploaded a
/// broken image. Every layer of every load and pull is now checked against
/// its diff id, unpacked or not.
#[test]
fn a_layer_that_is_not_its_diff_id_is_refused() {
    let b = Berth::new();
    b.import_busybox("good");
    let arch = b.path("good.tar");
    b.run(&["save", "-o", arch.to_str().unwrap(), "good"]).ok();
    let x = b.path("x");
    std::fs::create_dir_all(&x).unwrap();
    common::tool(
        "tar",
        &["-xf", arch.to_str().unwrap(), "-C", x.to_str().unwrap()],
    );
    // Another layer under the same config: its blob is named by its own
    // digest (so the archive itself is consistent), but it is not the
    // layer the config's diff id names.
    let evil_dir = b.path("evil");
    write(&evil_dir.join("evil"), "not busybox\n");
    let evil = b.path("evil.tar");
    common::tool(
        "tar",
        &[
            "-cf",
            evil.to_str().unwrap(),
            "-C",
            evil_dir.to_str().unwrap(),
            "evil",
        ],
    );
    let hex = sha256_file(&evil);
    let mf = x.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mf).unwrap()).unwrap();
    let old = m[0]["Layers"][0].as_str().unwrap().to_string();
    std::fs::remove_file(x.join(&old)).unwrap();
    std::fs::copy(&evil, x.join(format!("blobs/sha256/{hex}"))).unwrap();
    m[0]["Layers"][0] = serde_json::json!(format!("blobs/sha256/{hex}"));
    m[0]["RepoTags"] = serde_json::json!(["evil:latest"]);
    std::fs::write(&mf, serde_json::to_vec(&m).unwrap()).unwrap();
    let _ = std::fs::remove_file(x.join("index.json"));
    let crafted = b.path("crafted.tar");
    common::tool(
        "tar",
        &[
            "-cf",
            crafted.to_str().unwrap(),
            "-C",
            x.to_str().unwrap(),
            ".",
        ],
    );
    let err = b.run(&["load", "-i", crafted.to_str().unwrap()]).fails(1);
    assert!(
        err.contains(&format!("sha256:{hex}")) && err.contains("image config says"),
        "{err}"
    );
    assert!(
        b.run(&["image", "inspect", "evil"]).code() != 0,
        "nothing loaded"
    );
    let check = b.run(&["system", "check"]);
    assert!(check.code() == 0, "{}{}", check.stdout(), check.stderr());
}

/// Attack: `cp ctr:/data /host/dir/` where /data is a file in the container
/// deleted the host directory `dir/data/` (rc 0); a hostile container
/// decides which path is a file. Docker refuses ("cannot overwrite
/// directory … with non-directory"); so does berth, and it removes nothing
/// on the host: not for a `.wh.` name either, and links resolve inside the
/// container.
#[test]
fn cp_from_a_container_never_removes_host_files() {
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&[
        "run",
        "--name",
        "cpsrc",
        "busybox",
        "sh",
        "-c",
        "echo file > /data && mkdir /wh && echo x > /wh/.wh.victim && \
         echo inside > /etc/marker && ln -s /etc /link && ln -s / /rootlink",
    ])
    .ok();
    let out = b.path("out");
    write(&out.join("data/precious"), "keep me\n");
    write(&out.join("wh/victim"), "keep me too\n");
    let o = out.to_str().unwrap();
    let err = b.run(&["cp", "cpsrc:/data", &format!("{o}/")]).fails(1);
    assert!(
        err.contains("cannot overwrite directory") && err.contains("with non-directory"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("data/precious")).unwrap(),
        "keep me\n"
    );
    b.run(&["cp", "cpsrc:/wh", &format!("{o}/")]).ok();
    assert_eq!(
        std::fs::read_to_string(out.join("wh/victim")).unwrap(),
        "keep me too\n",
        "a .wh. name deleted a host file"
    );
    assert!(out.join("wh/.wh.victim").is_file());
    // The source's own link is copied as a link, -L follows it inside.
    b.run(&["cp", "cpsrc:/link", &format!("{o}/l")]).ok();
    assert_eq!(
        std::fs::read_link(out.join("l")).unwrap(),
        Path::new("/etc")
    );
    b.run(&["cp", "-L", "cpsrc:/link", &format!("{o}/l2")]).ok();
    assert_eq!(
        std::fs::read_to_string(out.join("l2/marker")).unwrap(),
        "inside\n"
    );
    b.run(&["cp", "cpsrc:/rootlink/etc/marker", &format!("{o}/m")])
        .ok();
    assert_eq!(std::fs::read_to_string(out.join("m")).unwrap(), "inside\n");
    b.run(&["rm", "cpsrc"]).ok();
}

/// Attack (on the disk): killed builds leaked their step snapshots (164 MB
/// after 10 kills), step containers, cgroups and scratch, and nothing
/// collected them. Now what a dead build left is named as such by `system
/// check` and removed by `builder prune` (and `system prune`, `check --repair`).
#[test]
fn a_killed_build_leaves_nothing_for_good() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let ctx = b.path("ctx");
    // A sleep of its own length, to be found among the machine's processes.
    let nap = format!("sleep {}", 5000 + std::process::id() % 5000);
    write(
        &ctx.join("Dockerfile"),
        &format!("FROM busybox\nRUN {nap}\n"),
    );
    let mut child = b
        .command(&["build", "--network", "none", ctx.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sleeping = || {
        common::tool("ps", &["-eo", "args"])
            .lines()
            .any(|l| l.trim() == nap)
    };
    let start = std::time::Instant::now();
    while !sleeping() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the step never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let pid = child.id();
    let root = b.root();
    let ours = |dir: &str| -> Vec<String> {
        std::fs::read_dir(root.join(dir))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(&format!("-{pid}-")))
                    .collect()
            })
            .unwrap_or_default()
    };
    let cgroups = || {
        common::tool(
            "find",
            &[
                "/sys/fs/cgroup",
                "-maxdepth",
                "3",
                "-name",
                &format!("build-{pid}-*"),
            ],
        )
    };
    assert!(
        !ours("snapshots/active").is_empty(),
        "the kill left a step snapshot: pid {pid}, {:?}",
        std::fs::read_dir(root.join("snapshots/active"))
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    assert!(!ours("runtime").is_empty());
    assert!(!ours("builds").is_empty());
    assert!(sleeping(), "the step outlived its build");
    let check = b.run(&["system", "check"]).ok();
    assert!(check.contains("of a killed build"), "{check}");
    b.run(&["builder", "prune", "-f"]).ok();
    for d in ["snapshots/active", "runtime", "builds"] {
        assert!(ours(d).is_empty(), "{d}: {:?}", ours(d));
    }
    assert_eq!(cgroups().trim(), "", "cgroups of the killed build remain");
    assert!(!sleeping(), "the step still runs");
    let check = b.run(&["system", "check"]).ok();
    assert!(!check.contains("killed build"), "{check}");
}

/// Attack (a race): `system prune -a` beside `run --rm` removed a container
/// between its create and its start ("No such container"). A created
/// container whose creating process still runs is being started, and prune
/// leaves it alone; once that process is gone it is prunable again.
#[test]
fn prune_leaves_a_container_that_is_being_started() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let id = b
        .run(&["create", "busybox", "true"])
        .ok()
        .trim()
        .to_string();
    let rec = b.root().join("containers").join(&id).join("container.json");
    let set_creator = |pid: u32| {
        let mut c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let start: u64 = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(19)?.parse().ok())
            .unwrap_or(1);
        c["State"]["Creator"] = serde_json::json!([pid, start]);
        std::fs::write(&rec, serde_json::to_vec(&c).unwrap()).unwrap();
    };
    // As if this test process were the `run` that is about to start it.
    set_creator(std::process::id());
    b.run(&["container", "prune", "-f"]).ok();
    b.run(&["system", "prune", "-a", "-f"]).ok();
    assert!(
        b.run(&["inspect", &id]).code() == 0,
        "pruned while being started"
    );
    // Its creator gone (pid 1's start time never matches a recorded one of
    // another process): prunable, as docker's created containers are.
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    c["State"]["Creator"] = serde_json::json!([1, 0]);
    std::fs::write(&rec, serde_json::to_vec(&c).unwrap()).unwrap();
    b.run(&["container", "prune", "-f"]).ok();
    assert!(b.run(&["inspect", &id]).code() != 0);
    // And the race itself: runs beside prunes all succeed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pruner = {
        let (stop, root) = (stop.clone(), b.root());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::process::Command::new(common::berth_bin())
                    .args(["system", "prune", "-f"])
                    .env("BERTH_ROOT", &root)
                    .output();
            }
        })
    };
    for i in 0..30 {
        let r = b.run(&["run", "--rm", "busybox", "true"]);
        assert_eq!(r.code(), 0, "run {i}: {}", r.stderr());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pruner.join().unwrap();
}

/// Bad input to `run` (found by the probe): `--memory 99999999999999999999`
/// overflowed into a -2 swap limit, `-v /src:/` was accepted (docker refuses
/// a mount on `/`), and a `-v` through a dangling symlink said only "open
/// newly created directory failed". Each is refused, saying what is wrong,
/// with docker's exit code 125, and nothing is left behind.
#[test]
fn bad_run_input_is_refused_clearly() {
    let b = Berth::new();
    b.import_busybox("busybox");
    for (args, want) in [
        (
            vec!["--memory", "99999999999999999999"],
            "invalid size: '99999999999999999999'",
        ),
        (vec!["--memory-swap", "1e30"], "invalid size: '1e30'"),
        (vec!["--cpus", "1e12"], "Range of CPUs is from 0.01 to"),
        (vec!["-v", "/tmp:/"], "destination can't be '/'"),
        (vec!["-v", "vol:/."], "destination can't be '/'"),
        (
            vec!["--mount", "type=bind,src=/tmp,dst=/"],
            "destination can't be '/'",
        ),
    ] {
        let mut a = vec!["run", "--rm"];
        a.extend(args.iter().copied());
        a.extend(["busybox", "true"]);
        let err = b.run(&a).fails(125);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(b.run(&["ps", "-aq"]).ok(), "", "nothing created");
    let ctx = b.path("ctx");
    write(
        &ctx.join("Dockerfile"),
        "FROM busybox\nRUN ln -s /nowhere /data\n",
    );
    build(&b, &ctx, &["-t", "dangling"]).ok();
    let r = b.run(&["run", "--rm", "-v", "/tmp:/data/sub", "dangling", "true"]);
    assert_ne!(r.code(), 0);
    let err = r.stderr();
    assert!(
        err.contains("/data is a symlink to /nowhere, which does not exist in the container"),
        "{err}"
    );
}

/// `berth run` gets docker's AppArmor defaults: on an AppArmor host a
/// container runs under berth's default profile (as docker's under
/// docker-default) unless privileged or `--security-opt apparmor=…` says
/// otherwise; where AppArmor is absent nothing is applied by default and a
/// profile asked for by name is refused rather than dropped.
#[test]
fn run_gets_docker_apparmor_defaults() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'));
    let r = b.run(&[
        "run",
        "--rm",
        "--security-opt",
        "apparmor=some-profile",
        "busybox",
        "true",
    ]);
    if apparmor {
        let out = b
            .run(&["run", "--rm", "busybox", "cat", "/proc/self/attr/current"])
            .ok();
        assert_eq!(out.trim(), "berth-default (enforce)");
        let out = b
            .run(&[
                "run",
                "--rm",
                "--privileged",
                "busybox",
                "cat",
                "/proc/self/attr/current",
            ])
            .ok();
        assert_eq!(out.trim(), "unconfined");
        assert_ne!(r.code(), 0, "an unknown profile cannot be applied");
    } else {
        let err = r.stderr();
        assert_ne!(r.code(), 0);
        assert!(err.contains("AppArmor is not enabled"), "{err}");
        b.run(&["run", "--rm", "busybox", "true"]).ok();
        eprintln!(
            "skipped: AppArmor is not enabled here; its default profile is checked where it is"
        );
    }
}

/// Reads a little of an answer to `request` on `s`, then hangs up with the
/// rest unread.
fn hang_up_mid_answer(mut s: impl std::io::Read + std::io::Write, request: &str) {
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let _ = s.read(&mut buf);
}

/// Attack: a client that asks for something large and hangs up before
/// reading it. The servers' writes then fail with EPIPE; with SIGPIPE at
/// its default (as berth's CLI keeps it for `berth images | head`), the
/// signal killed the whole Engine API service or registry. Now a server
/// loses that connection only, and answers the next client.
#[test]
fn a_client_that_hangs_up_kills_no_server() {
    let b = Berth::new();
    b.import_busybox("busybox");
    // The Engine API service: a save (a ~2 MB tar) abandoned, three times.
    let sock = b.path("api.sock");
    // Killed when the test ends, passed or failed.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut svc = Reaped(
        b.command(&[
            "system",
            "service",
            "-H",
            &format!("unix://{}", sock.display()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap(),
    );
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for _ in 0..3 {
        let s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        hang_up_mid_answer(s, "GET /images/busybox/get HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    // A load whose archive the helper process refuses at its first bytes,
    // while the service still writes the rest into the helper's pipe.
    let junk = b.path("junk.tar");
    let mut data = b"not a tar at all".to_vec();
    data.resize(8 << 20, b'x');
    std::fs::write(&junk, &data).unwrap();
    let (code, _, _) = curl(&[
        "--unix-socket",
        sock.to_str().unwrap(),
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", junk.display()),
        "http://x/images/load",
    ]);
    assert_ne!(code, 200);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(svc.0.try_wait().unwrap().is_none(), "the service died");
    let (code, _, body) = curl(&["--unix-socket", sock.to_str().unwrap(), "http://x/_ping"]);
    assert_eq!((code, body.as_slice()), (200, b"OK".as_slice()));
    drop(svc);

    // The registry: a layer blob abandoned, three times.
    let mut reg = RegistryServer::start(&b.path("reg"), &["--open"]);
    let r = format!("{}/hang/up", reg.addr);
    b.run(&["tag", "busybox", &r]).ok();
    b.run(&["push", &r]).ok();
    let layer = b
        .run(&[
            "image",
            "inspect",
            "-f",
            "{{index .RootFS.Layers 0}}",
            "busybox",
        ])
        .ok();
    // The blob is the compressed layer: find it through the manifest.
    let m = common::manifest_json(&reg.addr, "hang/up", "latest");
    let blob = m["layers"][0]["digest"].as_str().unwrap().to_string();
    assert!(!layer.trim().is_empty());
    for _ in 0..3 {
        let s = std::net::TcpStream::connect(&reg.addr).unwrap();
        hang_up_mid_answer(
            s,
            &format!("GET /v2/hang/up/blobs/{blob} HTTP/1.1\r\nHost: x\r\n\r\n"),
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(reg.child.try_wait().unwrap().is_none(), "the registry died");
    let (code, _, _) = curl(&[&format!("http://{}/v2/", reg.addr)]);
    assert_eq!(code, 200);
}

/// Found running berth from a chroot (a build sandbox, a rescue system):
/// the container's init pivots from the chroot's root, which is a mount
/// below its namespace's root, and `exec` — joining that mount namespace —
/// was left at the namespace's root: the host's `/`, outside both the
/// container and the chroot. Now exec enters the container's own root.
#[test]
fn exec_from_a_chrooted_berth_stays_in_the_container() {
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run_chrooted(&[
        "run",
        "-d",
        "--name",
        "cj",
        "busybox",
        "sh",
        "-c",
        "touch /inside; sleep 120",
    ])
    .ok();
    for _ in 0..100 {
        if b.run(&["exec", "cj", "test", "-e", "/inside"]).code() == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    b.run(&["exec", "cj", "test", "-e", "/inside"]).ok();
    // The container's root (its own /inside), not the host's.
    let listed = b.run(&["exec", "cj", "ls", "/"]).ok();
    assert!(listed.lines().any(|l| l == "inside"), "{listed}");
    b.run(&["rm", "-f", "cj"]).ok();
}

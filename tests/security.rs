//! End to end: the attacks a probe of berth found, each reproduced against the
//! real binaries, and what berth does instead (issue: security). Each test
//! names the attack; docker's or BuildKit's behaviour is the reference where
//! one exists.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::Berth;

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

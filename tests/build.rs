//! End to end: `berth build` through the real binary on the busybox base.

mod common;

use std::path::Path;

use common::Berth;
use serde_json::Value;

fn ctx(b: &Berth, name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let d = b.path(name);
    for (f, content) in files {
        let p = d.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    d
}

fn build(b: &Berth, dir: &Path, extra: &[&str]) -> common::Run {
    let mut args = vec!["build"];
    args.extend_from_slice(extra);
    args.push(dir.to_str().unwrap());
    b.run(&args)
}

#[test]
fn the_lectures_hello_world_cmd() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let d = ctx(
        &b,
        "hello",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo updated > /etc/motd\nENTRYPOINT [\"/bin/echo\", \"Hello\"]\nCMD [\"world\"]\n",
        )],
    );
    let r = b.run(&[
        "build",
        "-t",
        "hello_world_cmd",
        "-f",
        d.join("Dockerfile").to_str().unwrap(),
        d.to_str().unwrap(),
    ]);
    r.ok();
    let progress = r.stderr();
    assert!(
        progress.contains("[2/2] RUN echo updated > /etc/motd"),
        "{progress}"
    );
    assert!(progress.contains("naming to docker.io/library/hello_world_cmd:latest"));
    assert_eq!(
        b.run(&["run", "-i", "--rm", "hello_world_cmd"]).ok(),
        "Hello world\n"
    );
    assert_eq!(
        b.run(&["run", "--rm", "hello_world_cmd", "Pavlos"]).ok(),
        "Hello Pavlos\n"
    );
    let hist = b.run(&["image", "history", "hello_world_cmd"]).ok();
    let rows: Vec<&str> = hist.lines().collect();
    assert_eq!(
        rows.len(),
        5,
        "header + CMD + ENTRYPOINT + RUN + import: {hist}"
    );
    assert!(
        rows[1].contains("/bin/sh -c #(nop)  CMD [\"world\"]") && rows[1].contains("0B"),
        "{hist}"
    );
    assert!(
        rows[2].contains("/bin/sh -c #(nop)  ENTRYPOINT [\"/bin/echo\" \"…"),
        "{hist}"
    );
    assert!(
        rows[3].contains("/bin/sh -c echo updated > /etc/motd"),
        "{hist}"
    );
    // A rebuild is fully cached, and gives the very same image (docker's
    // behaviour: no new dangling image per rebuild).
    let id = |b: &Berth| {
        b.run(&["image", "inspect", "-f", "{{.Id}}", "hello_world_cmd"])
            .ok()
    };
    let first = id(&b);
    let again = build(&b, &d, &["-t", "hello_world_cmd"]);
    again.ok();
    assert!(again.stderr().contains("CACHED"), "{}", again.stderr());
    assert!(!again.stderr().contains("cache miss"), "{}", again.stderr());
    assert_eq!(id(&b), first);
    assert_eq!(b.run(&["images", "-q", "-f", "dangling=true"]).ok(), "");
    // --no-cache makes a new one.
    build(&b, &d, &["-t", "hello_world_cmd", "--no-cache"]).ok();
    assert_ne!(id(&b), first);
}

#[test]
fn copy_cache_dockerignore_multistage() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let d = ctx(
        &b,
        "app",
        &[
            (
                "Dockerfile",
                "FROM busybox AS build\nWORKDIR /src\nCOPY app/ ./\nRUN cat *.txt > /src/all.out\nFROM busybox\nCOPY --from=build /src/all.out /out/\nCOPY extra.txt /out/\nCMD [\"cat\", \"/out/all.out\", \"/out/extra.txt\"]\n",
            ),
            ("app/a.txt", "a\n"),
            ("app/b.txt", "b\n"),
            ("app/secret.txt", "SECRET\n"),
            ("extra.txt", "extra\n"),
            (".dockerignore", "app/secret.txt\n"),
        ],
    );
    build(&b, &d, &["-t", "app"]).ok();
    assert_eq!(
        b.run(&["run", "--rm", "app"]).ok(),
        "a\nb\nextra\n",
        ".dockerignore kept the secret out"
    );
    // Touching a file copied late reruns only that step.
    std::fs::write(d.join("extra.txt"), "extra2\n").unwrap();
    let r = build(&b, &d, &["-t", "app"]);
    r.ok();
    let log = r.stderr();
    assert!(
        log.contains("cache miss: file /out/extra.txt changed"),
        "the miss says why: {log}"
    );
    assert_eq!(log.matches("CACHED").count(), 4, "{log}");
    assert_eq!(b.run(&["run", "--rm", "app"]).ok(), "a\nb\nextra2\n");
    // Changing a source of the first stage reruns its tail and the copy from it.
    std::fs::write(d.join("app/a.txt"), "A\n").unwrap();
    let log = build(&b, &d, &["-t", "app"]).stderr();
    assert!(log.contains("file /src/a.txt changed"), "{log}");
    assert!(log.contains("an earlier step changed"), "{log}");
    assert_eq!(b.run(&["run", "--rm", "app"]).ok(), "A\nb\nextra2\n");
    // `system df` counts the cache's records; the superseded first-stage
    // layers are kept by the cache alone, so it has bytes to reclaim.
    let cache_row = |b: &Berth| {
        let df = b.run(&["system", "df"]).ok();
        df.lines()
            .find(|l| l.starts_with("Build Cache"))
            .unwrap()
            .split_whitespace()
            .skip(2)
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let row = cache_row(&b);
    assert!(row[0].parse::<u32>().unwrap() >= 5, "{row:?}");
    assert_ne!(row[2], "0B", "{row:?}");
    let out = b.run(&["builder", "prune", "-f"]).ok();
    assert!(out.contains("Deleted build cache objects:"), "{out}");
    assert_eq!(cache_row(&b), ["0", "0", "0B", "0B"]);
}

#[test]
fn config_fields_and_heredocs() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let d = ctx(
        &b,
        "cfg",
        &[(
            "Dockerfile",
            "FROM busybox\nARG VERSION=1.0\nENV APP_VERSION=${VERSION} PATH=/app/bin:$PATH\nLABEL org.example.name=\"demo app\" version=$VERSION\nEXPOSE 8080 53/udp\nVOLUME [\"/data\"]\nWORKDIR /app\nRUN <<EOF\nmkdir -p bin\necho \"#!/bin/sh\" > bin/hello\necho 'echo hello from $APP_VERSION' >> bin/hello\nchmod +x bin/hello\nEOF\nCOPY <<EOF /app/note.txt\nnote for ${VERSION}\nEOF\nUSER www-data\nSTOPSIGNAL SIGINT\nCMD [\"hello\"]\n",
        )],
    );
    build(&b, &d, &["-t", "cfg", "--build-arg", "VERSION=2.5"]).ok();
    let cfg: Value = serde_json::from_str(
        &b.run(&["image", "inspect", "--format", "{{json .Config}}", "cfg"])
            .ok(),
    )
    .unwrap();
    assert!(
        cfg["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "APP_VERSION=2.5"),
        "{cfg}"
    );
    assert_eq!(cfg["Cmd"][0], "hello");
    assert_eq!(cfg["WorkingDir"], "/app");
    assert_eq!(cfg["User"], "www-data");
    assert!(
        cfg["ExposedPorts"].get("8080/tcp").is_some()
            && cfg["ExposedPorts"].get("53/udp").is_some(),
        "{cfg}"
    );
    assert!(cfg["Volumes"].get("/data").is_some());
    assert_eq!(cfg["Labels"]["org.example.name"], "demo app");
    assert_eq!(cfg["Labels"]["version"], "2.5");
    assert_eq!(cfg["StopSignal"], "SIGINT");
    assert_eq!(b.run(&["run", "--rm", "cfg"]).ok(), "hello from 2.5\n");
    assert_eq!(
        b.run(&["run", "--rm", "cfg", "cat", "note.txt"]).ok(),
        "note for 2.5\n"
    );
}

#[test]
fn errors_stop_the_build_cleanly() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let before = b.run(&["images", "-q"]).ok();
    let d = ctx(
        &b,
        "bad",
        &[("Dockerfile", "FROM busybox\nRUN echo one\nRUNN echo two\n")],
    );
    let err = build(&b, &d, &["-t", "bad"]).fails(1);
    assert!(
        err.contains("Dockerfile:3: unknown instruction: RUNN (did you mean RUN?)"),
        "{err}"
    );
    let d = ctx(
        &b,
        "fails",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo output-before-failure; exit 7\n",
        )],
    );
    let r = build(&b, &d, &["-t", "fails"]);
    let err = r.fails(7);
    assert!(err.contains("process \"/bin/sh -c echo output-before-failure; exit 7\" did not complete successfully: exit code: 7"), "{err}");
    assert!(
        err.contains("output-before-failure"),
        "the step's output is shown: {err}"
    );
    let d = ctx(
        &b,
        "missing",
        &[("Dockerfile", "FROM busybox\nCOPY nothere.txt /\n")],
    );
    let err = build(&b, &d, &[]).fails(1);
    assert!(
        err.contains("Dockerfile:2") && err.contains("nothere.txt") && err.contains("not found"),
        "{err}"
    );
    let d = ctx(&b, "nobase", &[("Dockerfile", "FROM never-imported:1\n")]);
    let err = build(&b, &d, &[]).fails(1);
    assert!(err.contains("never-imported:1"), "{err}");
    assert_eq!(b.run(&["images", "-q"]).ok(), before, "no image made");
    assert!(b.run(&["ps", "-aq"]).ok().is_empty());
    b.run(&["system", "check"]).ok();
    assert_eq!(
        std::fs::read_dir(b.root().join("snapshots/active"))
            .unwrap()
            .count(),
        0,
        "no build snapshot left"
    );
}

#[test]
fn reproducible_with_source_date_epoch() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let d = ctx(
        &b,
        "repro",
        &[
            (
                "Dockerfile",
                "FROM busybox\nCOPY f.txt /f.txt\nCMD [\"cat\", \"/f.txt\"]\n",
            ),
            ("f.txt", "same\n"),
        ],
    );
    let id = |b: &Berth| {
        let mut c = b.command(&["build", "-q", "--no-cache", d.to_str().unwrap()]);
        c.env("SOURCE_DATE_EPOCH", "1700000000");
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let first = id(&b);
    let second = id(&b);
    assert!(first.starts_with("sha256:"));
    assert_eq!(
        first, second,
        "same Dockerfile and context, same image digest"
    );
    let iid = b.path("iid");
    build(&b, &d, &["-q", "--iidfile", iid.to_str().unwrap()]).ok();
    assert!(std::fs::read_to_string(iid).unwrap().starts_with("sha256:"));
}

#[test]
fn many_layers_beyond_mount_data_page() {
    // 80 layers of ~110-byte paths overflow mount(2)'s one-page option
    // string; Docker allows up to 125 layers, so berth must too.
    let b = Berth::new();
    b.import_busybox("busybox");
    let mut df = String::from("FROM busybox\n");
    for i in 1..=80 {
        df.push_str(&format!("RUN echo {i} > /f{i}\n"));
    }
    df.push_str("CMD cat /f1 /f80\n");
    let d = ctx(&b, "deep", &[("Dockerfile", &df)]);
    build(&b, &d, &["-t", "deep"]).ok();
    assert_eq!(b.run(&["run", "--rm", "deep"]).ok(), "1\n80\n");
    assert_eq!(
        b.run(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", "deep"])
            .ok()
            .trim(),
        "81"
    );
}

#[test]
fn run_mounts_cache_tmpfs_bind() {
    // BuildKit's RUN --mount: a cache directory kept across builds (even
    // --no-cache ones), a tmpfs and a read-only bind of the context, none of
    // which ends up in the image.
    let b = Berth::new();
    b.import_busybox("busybox");
    let d = ctx(
        &b,
        "mounts",
        &[
            (
                "Dockerfile",
                "FROM busybox\nRUN --mount=type=cache,target=/var/cache/app sh -c 'echo run >> /var/cache/app/log; wc -l < /var/cache/app/log > /runs'\nRUN --mount=type=tmpfs,target=/scratch sh -c 'echo x > /scratch/f; mount | grep -q \" /scratch type tmpfs\" && echo tmpfs > /tmpfs-seen'\nRUN --mount=type=bind,source=data.txt,target=/data.txt cp /data.txt /copied\nCMD cat /runs /tmpfs-seen /copied\n",
            ),
            ("data.txt", "from the context\n"),
        ],
    );
    build(&b, &d, &["-t", "m"]).ok();
    assert_eq!(
        b.run(&["run", "--rm", "m"]).ok(),
        "1\ntmpfs\nfrom the context\n"
    );
    // Not even the mount points the image did not have stay behind.
    let ls = b
        .run(&[
            "run",
            "--rm",
            "m",
            "sh",
            "-c",
            "ls -d /var/cache /scratch /data.txt 2>&1; true",
        ])
        .ok();
    assert_eq!(ls.matches("No such file or directory").count(), 3, "{ls}");
    // The cache directory outlives the build.
    build(&b, &d, &["-t", "m", "--no-cache"]).ok();
    assert!(b.run(&["run", "--rm", "m"]).ok().starts_with("2\n"));
    // The bind's content is part of the step's key.
    std::fs::write(d.join("data.txt"), "changed\n").unwrap();
    let r = build(&b, &d, &["-t", "m"]);
    r.ok();
    assert!(
        r.stderr().contains("cache miss: mount /data.txt changed"),
        "{}",
        r.stderr()
    );
    assert!(b.run(&["run", "--rm", "m"]).ok().ends_with("changed\n"));
    // A bad value fails with the line, not silently.
    std::fs::write(
        d.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=bind,target=/s,rw=maybe cat /s\n",
    )
    .unwrap();
    let err = build(&b, &d, &["-t", "m2"]).fails(1);
    assert!(
        err.contains("Dockerfile:2") && err.contains("rw takes true or false"),
        "{err}"
    );
    // A stage or image that does not exist is named.
    std::fs::write(
        d.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=bind,from=builder,target=/s cat /s\n",
    )
    .unwrap();
    let err = build(&b, &d, &["-t", "m2"]).fails(1);
    assert!(
        err.contains("Dockerfile:2") && err.contains("--from=builder: no such stage or image"),
        "{err}"
    );
}

/// `COPY --chown/--chmod` and `USER` for RUN steps, resolved in the image's
/// own passwd and group files as BuildKit resolves them: a name takes its
/// passwd primary group, a bare uid is also the gid, `user:group` both; a RUN
/// under `USER app` runs with app's ids, supplementary groups and HOME, and
/// `USER app:grp` with that group. An unknown name fails at its line.
#[test]
fn chown_chmod_and_user_in_steps() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let df = "FROM busybox\n\
              RUN echo 'app:x:1234:100::/home/app:/bin/sh' >> /etc/passwd && echo 'extra:x:777:app' >> /etc/group && mkdir -p /home/app /out && chown app /home/app && chmod 1777 /out\n\
              COPY --chown=app f.txt /f-name\n\
              COPY --chown=4242 f.txt /f-uid\n\
              COPY --chown=www-data:staff f.txt /f-both\n\
              COPY --chown=1:2 --chmod=640 f.txt /f-mode\n\
              USER app\n\
              RUN id -u > /out/u && id -g > /out/g && id -G > /out/groups && echo $HOME > /out/home && touch /home/app/made\n\
              USER app:extra\n\
              RUN id -g > /out/g2\n\
              USER root\n\
              CMD stat -c '%n %u:%g %a' /f-name /f-uid /f-both /f-mode /home/app/made && cat /out/u /out/g /out/groups /out/home /out/g2\n";
    let d = ctx(&b, "chown", &[("Dockerfile", df), ("f.txt", "data\n")]);
    build(&b, &d, &["-t", "own"]).ok();
    assert_eq!(
        b.run(&["run", "--rm", "own"]).ok(),
        "/f-name 1234:100 644\n/f-uid 4242:4242 644\n/f-both 33:50 644\n/f-mode 1:2 640\n\
         /home/app/made 1234:100 644\n1234\n100\n100 777\n/home/app\n777\n"
    );
    std::fs::write(
        d.join("Dockerfile"),
        "FROM busybox\nCOPY --chown=nobody-here f.txt /f\n",
    )
    .unwrap();
    let err = build(&b, &d, &["-t", "own2"]).fails(1);
    assert!(
        err.contains("Dockerfile:2") && err.contains("unable to find user nobody-here"),
        "{err}"
    );
}

/// A build is not broken by a prune running beside it (BuildKit keeps leases
/// for the same): `builder prune` and `image prune` loop while a build of
/// slow, uncached steps runs; the build succeeds, its image has every step's
/// file, and the store checks consistent. Without the build's lease, gc took
/// the step's half-made snapshot or the layers not yet in any image.
#[test]
fn prune_beside_a_build_does_not_break_it() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let df = "FROM busybox\n\
              RUN sleep 0.3 && echo a > /a\n\
              RUN sleep 0.3 && echo b > /b\n\
              COPY f /f\n\
              RUN sleep 0.3 && echo c > /c\n\
              RUN sleep 0.3 && echo d > /d\n";
    let d = ctx(&b, "lease", &[("Dockerfile", df), ("f", "file\n")]);
    std::thread::scope(|sc| {
        let build = sc.spawn(|| build(&b, &d, &["-t", "leased", "--no-cache"]));
        let mut prunes = 0;
        while !build.is_finished() {
            b.run(&["builder", "prune", "-f"]).ok();
            b.run(&["image", "prune", "-f"]).ok();
            prunes += 1;
        }
        build.join().unwrap().ok();
        assert!(prunes > 0);
    });
    assert_eq!(
        b.run(&["run", "--rm", "leased", "cat", "/a", "/b", "/f", "/c", "/d"])
            .ok(),
        "a\nb\nfile\nc\nd\n"
    );
    let check = b.run(&["system", "check"]).ok();
    assert!(check.contains("the store is consistent"), "{check}");
}

/// `RUN --mount=type=bind,rw` (BuildKit): the step may write to the bound
/// directory or file, and what it writes is thrown away — neither the context
/// nor the image keeps it; a source overlay's options cannot name (`:` in the
/// path) is copied instead. `type=cache,ro` is read-only.
#[test]
fn run_mount_bind_rw_and_cache_ro() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let d = ctx(
        &b,
        "rwbind",
        &[
            (
                "Dockerfile",
                "FROM busybox\n\
                 RUN --mount=type=bind,source=src,target=/s,rw sh -c 'echo changed > /s/a.txt; echo new > /s/new; rm /s/gone; mkdir /s/d; cat /s/a.txt /s/new > /dir-seen; mount | grep -q \" /s type overlay \" && echo overlay >> /dir-seen; ls /s > /dir-ls'\n\
                 RUN --mount=type=bind,source=data.txt,target=/data.txt,rw sh -c 'echo appended >> /data.txt; cat /data.txt > /file-seen'\n\
                 RUN --mount=type=bind,source=odd:dir,target=/o,rw sh -c 'echo w > /o/f2; cat /o/f /o/f2 > /odd-seen'\n\
                 RUN --mount=type=cache,target=/c sh -c 'echo kept > /c/k'\n\
                 RUN --mount=type=cache,target=/c,ro sh -c 'cat /c/k > /cache-seen; touch /c/x 2>/dev/null || echo read-only >> /cache-seen'\n\
                 CMD cat /dir-seen /dir-ls /file-seen /odd-seen /cache-seen; ls -d /s /o /c 2>&1; true\n",
            ),
            ("src/a.txt", "original\n"),
            ("src/gone", "still here\n"),
            ("data.txt", "line\n"),
            ("odd:dir/f", "odd\n"),
        ],
    );
    build(&b, &d, &["-t", "rw"]).ok();
    assert_eq!(
        b.run(&["run", "--rm", "rw"]).ok(),
        "changed\nnew\noverlay\na.txt\nd\nnew\nline\nappended\nodd\nw\nkept\nread-only\n\
         ls: /s: No such file or directory\nls: /o: No such file or directory\nls: /c: No such file or directory\n"
    );
    // The context is as it was.
    assert_eq!(
        std::fs::read_to_string(d.join("src/a.txt")).unwrap(),
        "original\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("src/gone")).unwrap(),
        "still here\n"
    );
    assert!(!d.join("src/new").exists() && !d.join("src/d").exists());
    assert_eq!(
        std::fs::read_to_string(d.join("data.txt")).unwrap(),
        "line\n"
    );
    assert!(!d.join("odd:dir/f2").exists());
    // A source with a comma, quoted as a CSV field (BuildKit's --mount
    // syntax; the quotes escaped from the Dockerfile's own quoting).
    std::fs::create_dir_all(d.join("x,y")).unwrap();
    std::fs::write(d.join("x,y/f"), "comma\n").unwrap();
    std::fs::write(
        d.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=bind,\\\"source=x,y\\\",target=/q,rw sh -c 'cat /q/f > /seen; echo w > /q/new'\nCMD cat /seen\n",
    )
    .unwrap();
    build(&b, &d, &["-t", "rw2"]).ok();
    assert_eq!(b.run(&["run", "--rm", "rw2"]).ok(), "comma\n");
    assert!(!d.join("x,y/new").exists());
    // Nothing is left in the builder's scratch space.
    let left: Vec<_> = walk_names(&b.root())
        .into_iter()
        .filter(|n| n.contains("berth-rwbind-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Every path under `dir` (recursively, as strings).
fn walk_names(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
            let path = e.path();
            out.push(path.display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            }
        }
    }
    out
}

/// `--secret` and `RUN --mount=type=secret` (a file at /run/secrets/<id> or a
/// chosen target, or an environment variable), `--ssh` and
/// `RUN --mount=type=ssh` (the agent socket, with SSH_AUTH_SOCK): what the
/// step sees, and that neither the secret nor its mount point is in the image
/// or its history, as with docker build (BuildKit).
#[test]
fn secret_and_ssh_mounts() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let d = ctx(
        &b,
        "secrets",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             RUN --mount=type=secret,id=pw cat /run/secrets/pw > /dev/null && stat -c '%a %u' /run/secrets/pw > /seen-file && wc -c < /run/secrets/pw >> /seen-file\n\
             RUN --mount=type=secret,id=tok,env=TOKEN,required test ${#TOKEN} = 5 && echo env-ok > /seen-env\n\
             RUN --mount=type=secret,id=missing sh -c 'test ! -e /run/secrets/missing && echo absent > /seen-missing'\n\
             RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /seen-ssh\n\
             CMD cat /seen-file /seen-env /seen-missing /seen-ssh\n",
        )],
    );
    let secret = b.path("pw.txt");
    std::fs::write(&secret, "hunter2\n").unwrap();
    let sock = b.path("agent.sock");
    let _agent = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let pw = format!("id=pw,src={}", secret.display());
    let ssh = format!("default={}", sock.display());
    let r = b
        .command(&[
            "build",
            "-t",
            "s",
            "--secret",
            &pw,
            "--secret",
            "id=tok,env=BERTH_TEST_TOKEN",
            "--ssh",
            &ssh,
            d.to_str().unwrap(),
        ])
        .env("BERTH_TEST_TOKEN", "t0k3n")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        b.run(&["run", "--rm", "s"]).ok(),
        "400 0\n8\nenv-ok\nabsent\n/run/buildkit/ssh_agent.0\n"
    );
    // Nothing of the secrets in the image: no mount points, no content.
    let ls = b
        .run(&["run", "--rm", "s", "sh", "-c", "ls -d /run 2>&1; grep -rl hunter2 /etc /root /tmp /home /var /seen-file /seen-env /seen-missing /seen-ssh; true"])
        .ok();
    assert_eq!(ls, "ls: /run: No such file or directory\n");
    let history = b.run(&["history", "--no-trunc", "s"]).ok();
    assert!(
        !history.contains("hunter2") && !history.contains("t0k3n"),
        "{history}"
    );
    // A required secret the build was not given: the step's line and its id.
    std::fs::write(
        d.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=secret,id=pw,required true\n",
    )
    .unwrap();
    let err = build(&b, &d, &["-t", "s2"]).fails(1);
    assert!(
        err.contains("Dockerfile:2") && err.contains("secret pw is required"),
        "{err}"
    );
    // Bad flags are refused before anything runs.
    let err = build(&b, &d, &["--secret", "id=x,src=/no/such/file"]).fails(1);
    assert!(err.contains("/no/such/file"), "{err}");
    let err = build(&b, &d, &["--ssh", "default=/etc/hostname"]).fails(1);
    assert!(err.contains("not an agent socket"), "{err}");
}

/// A one-file HTTP server on loopback for `ADD <url>`; serves `body` for
/// every request until the test ends.
fn http_file(body: &'static str) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_from_a_url() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let base = http_file("downloaded content\n");
    let url = format!("{base}/files/notes.txt");
    let sum = {
        let out = std::process::Command::new("sh")
            .args(["-c", "printf 'downloaded content\\n' | sha256sum"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)[..64].to_string()
    };
    let df = format!(
        "FROM busybox\nADD {url} /dl/\nADD --checksum=sha256:{sum} {url} /named.txt\nCMD cat /dl/notes.txt /named.txt; stat -c '%a %Y' /dl/notes.txt\n"
    );
    let d = ctx(&b, "addurl", &[("Dockerfile", &df)]);
    build(&b, &d, &["-t", "dl"]).ok();
    // docker: named after the URL's last segment, mode 0600, mtime from
    // Last-Modified (2015-10-21 07:28:00 UTC), never extracted.
    assert_eq!(
        b.run(&["run", "--rm", "dl"]).ok(),
        "downloaded content\ndownloaded content\n600 1445412480\n"
    );
    // A wrong checksum stops the build at its line.
    let bad = format!(
        "FROM busybox\nADD --checksum=sha256:{} {url} /x\n",
        "0".repeat(64)
    );
    std::fs::write(d.join("Dockerfile"), bad).unwrap();
    let err = build(&b, &d, &["-t", "dl2"]).fails(1);
    assert!(
        err.contains("Dockerfile:2") && err.contains("digest mismatch"),
        "{err}"
    );
    // COPY takes no URLs.
    std::fs::write(
        d.join("Dockerfile"),
        format!("FROM busybox\nCOPY {url} /x\n"),
    )
    .unwrap();
    let err = build(&b, &d, &["-t", "dl3"]).fails(1);
    assert!(err.contains("source can't be a URL for COPY"), "{err}");
}

/// `build --check` lints without building (docker's output shape: rule, URL,
/// message, `file:line`, the lines around it, a summary; exit 0 on warnings,
/// 1 on a parse error or with `# check=error=true`); `build --print` dumps
/// what the parser understood; `check=error=true` also stops a real build
/// before any step runs.
#[test]
fn check_and_print() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let d = ctx(
        &b,
        "lint",
        &[(
            "Dockerfile",
            "FROM busybox AS Base\nENV API_TOKEN=x\nWORKDIR app\nCMD echo hi\n",
        )],
    );
    let r = build(&b, &d, &["--check"]);
    let out = r.ok();
    for want in [
        "WARNING: StageNameCasing - https://docs.docker.com/go/dockerfile/rule/stage-name-casing/",
        "Stage name 'Base' should be lowercase\nDockerfile:1\n",
        "Do not use ARG or ENV instructions for sensitive data (ENV \"API_TOKEN\")",
        "Relative workdir \"app\" can have unexpected results if the base image changes",
        "JSON arguments recommended for CMD",
        "   4 | >>> CMD echo hi\n",
        "Check complete, 4 warnings have been found!",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert_eq!(
        b.run(&["images", "-q"]).ok().trim(),
        b.run(&["images", "-q", "busybox"]).ok().trim(),
        "nothing built"
    );

    let clean = ctx(
        &b,
        "clean",
        &[("Dockerfile", "FROM busybox\nCMD [\"true\"]\n")],
    );
    assert!(
        build(&b, &clean, &["--check"])
            .ok()
            .contains("Check complete, no warnings found.")
    );

    let bad = ctx(
        &b,
        "bad",
        &[(
            "Dockerfile",
            "FROM busybox\nCOPY --checksum=sha256:00 a /b\n",
        )],
    );
    let r = build(&b, &bad, &["--check"]);
    let err = r.fails(1);
    assert!(
        err.contains(
            "Dockerfile:2: unknown flag: checksum (the --checksum flag is not allowed on COPY)"
        ),
        "{err}"
    );
    assert!(
        r.stdout().contains("   2 | >>> COPY --checksum"),
        "{}",
        r.stdout()
    );

    let strict = ctx(
        &b,
        "strict",
        &[(
            "Dockerfile",
            "# check=skip=StageNameCasing;error=true\nFROM busybox AS Base\nRUN touch /ran\nCMD echo shell form\n",
        )],
    );
    let r = build(&b, &strict, &["--check"]);
    let err = r.fails(1);
    assert!(
        err.contains("lint violation found for rules: JSONArgsRecommended"),
        "{err}"
    );
    assert!(
        !r.stdout().contains("StageNameCasing"),
        "skipped rule: {}",
        r.stdout()
    );
    assert!(r.stdout().contains("JSONArgsRecommended"));
    let err = build(&b, &strict, &["-t", "strict"]).fails(1);
    assert!(
        err.contains("lint violation found for rules: JSONArgsRecommended"),
        "{err}"
    );
    assert!(!err.contains("RUN touch"), "no step ran: {err}");
    b.run(&["image", "inspect", "strict"]).fails(1);

    let missing = b.path("no-such-Dockerfile");
    let err = build(&b, &clean, &["--print", "-f", missing.to_str().unwrap()]).fails(1);
    assert!(
        err.contains(&format!(
            "failed to read dockerfile: open {}",
            missing.display()
        )),
        "{err}"
    );

    // --print: the stages and typed instructions, as JSON on stdout; `-f -` too.
    let r = b.run_stdin(
        &["build", "--print", "-f", "-", d.to_str().unwrap()],
        b"ARG V=1\nFROM busybox:${V} AS build\nRUN --mount=type=cache,target=/c echo hi\nFROM scratch\nCOPY --from=build /bin/sh /sh\n",
    );
    let v: Value = serde_json::from_str(&r.ok()).unwrap();
    assert_eq!(v["metaArgs"][0]["args"][0]["name"], "V");
    assert_eq!(v["stages"][0]["name"], "build");
    assert_eq!(v["stages"][0]["base"], "busybox:${V}");
    let run = &v["stages"][0]["commands"][0];
    assert_eq!(run["instruction"], "RUN");
    assert_eq!(run["line"], 3);
    assert_eq!(run["args"]["mounts"][0], "type=cache,target=/c");
    assert_eq!(run["args"]["cmd"]["args"][0], "echo hi");
    assert_eq!(v["stages"][1]["commands"][0]["args"]["from"], "build");
}

/// ARG and ENV scoping as docker has it: an ARG before FROM is visible in FROM
/// only, unless the stage declares it again (then it has the global default);
/// ENV wins over ARG of the same name; --build-arg overrides defaults; an ARG
/// declared in one stage is not visible in the next.
#[test]
fn arg_and_env_scoping() {
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&["tag", "busybox", "busybox:scoped"]).ok();
    let d = ctx(
        &b,
        "scope",
        &[(
            "Dockerfile",
            "ARG TAG=scoped\nARG GLOBAL=global-default\nFROM busybox:${TAG} AS first\nARG LOCAL=local-default\nRUN echo \"tag=[$TAG] global=[$GLOBAL] local=[$LOCAL]\" > /first\nARG GLOBAL\nARG SHADOW=from-arg\nENV SHADOW=from-env\nRUN echo \"global=[$GLOBAL] shadow=[$SHADOW]\" >> /first\n\
             FROM first\nRUN echo \"local=[$LOCAL] shadow=[$SHADOW]\" > /second\n",
        )],
    );
    build(
        &b,
        &d,
        &["-t", "scoped-out", "--build-arg", "LOCAL=overridden"],
    )
    .ok();
    let first = b
        .run(&["run", "--rm", "scoped-out", "cat", "/first", "/second"])
        .ok();
    assert_eq!(
        first,
        "tag=[] global=[] local=[overridden]\nglobal=[global-default] shadow=[from-env]\nlocal=[] shadow=[from-env]\n"
    );
}

/// A git repository served by `git daemon` on loopback for `ADD <git URL>`;
/// the daemon is killed on drop.
struct GitServer {
    dir: std::path::PathBuf,
    child: std::process::Child,
    port: u16,
}

impl GitServer {
    fn start(dir: &Path) -> GitServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // git-daemon itself, not `git daemon` (which would leave it orphaned
        // when killed).
        let exec_path = common::tool("git", &["--exec-path"]);
        let child = std::process::Command::new(format!("{}/git-daemon", exec_path.trim()))
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", dir.display()))
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let s = GitServer {
            dir: dir.to_path_buf(),
            child,
            port,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        s
    }

    fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }

    /// Commits `files` to `work` (a clone) and pushes to its origin.
    fn commit(&self, work: &Path, files: &[(&str, &str)], msg: &str) {
        for (f, content) in files {
            let p = work.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let git =
            |args: &[&str]| common::tool("git", &[&["-C", work.to_str().unwrap()], args].concat());
        git(&["add", "-A"]);
        git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            msg,
        ]);
        git(&["push", "-q", "origin", "HEAD:main", "--tags"]);
        let _ = &self.dir;
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ADD <git URL>#ref:subdir` as BuildKit does it: the repository's files
/// (without .git unless `--keep-git-dir`), a tag and a branch's subdirectory;
/// the cache follows the commit the reference names (a rebuild is CACHED, a
/// push to the branch reruns only that step, saying why); COPY refuses git
/// sources; a missing reference fails at its line. Served by `git daemon` on
/// loopback.
#[test]
fn add_from_git() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let srv_root = b.path("git");
    let bare = srv_root.join("repo.git");
    common::tool(
        "git",
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    let work = b.path("git-work");
    common::tool(
        "git",
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    let srv = GitServer::start(&srv_root);
    srv.commit(
        &work,
        &[("README", "v1 readme\n"), ("docs/guide.txt", "guide v1\n")],
        "one",
    );
    common::tool("git", &["-C", work.to_str().unwrap(), "tag", "v1"]);
    common::tool(
        "git",
        &["-C", work.to_str().unwrap(), "push", "-q", "origin", "v1"],
    );
    let url = srv.url("repo.git");
    let df = format!(
        "FROM busybox\nADD {url}#v1 /src\nADD {url}#main:docs /docs\nCMD cat /src/README /docs/guide.txt; ls -A /src /docs\n"
    );
    let d = ctx(&b, "gitctx", &[("Dockerfile", &df)]);
    build(&b, &d, &["-t", "g"]).ok();
    assert_eq!(
        b.run(&["run", "--rm", "g"]).ok(),
        "v1 readme\nguide v1\n/docs:\nguide.txt\n\n/src:\nREADME\ndocs\n"
    );
    // Nothing moved: fully cached (the references are resolved, not fetched).
    let r = build(&b, &d, &["-t", "g", "--progress", "plain"]);
    assert_eq!(r.stderr().matches("CACHED").count(), 2, "{}", r.stderr());
    // main moves on: the tag's step stays cached, the branch's reruns.
    srv.commit(&work, &[("docs/guide.txt", "guide v2\n")], "two");
    let r = build(&b, &d, &["-t", "g", "--progress", "plain"]);
    let out = r.stderr();
    assert_eq!(out.matches("CACHED").count(), 1, "{out}");
    assert!(
        out.contains(&format!("cache miss: git {url}#main:docs changed")),
        "{out}"
    );
    assert!(
        b.run(&["run", "--rm", "g"])
            .ok()
            .starts_with("v1 readme\nguide v2\n")
    );
    // --keep-git-dir keeps the repository's .git.
    std::fs::write(
        d.join("Dockerfile"),
        format!("FROM busybox\nADD --keep-git-dir=true {url}#v1 /src\n"),
    )
    .unwrap();
    build(&b, &d, &["-t", "g2"]).ok();
    b.run(&["run", "--rm", "g2", "test", "-f", "/src/.git/HEAD"])
        .ok();
    // COPY takes no git source; a reference that does not exist names itself.
    std::fs::write(
        d.join("Dockerfile"),
        format!("FROM busybox\nCOPY {url} /x\n"),
    )
    .unwrap();
    let err = build(&b, &d, &["-t", "g3"]).fails(1);
    assert!(err.contains("source can't be a URL for COPY"), "{err}");
    std::fs::write(
        d.join("Dockerfile"),
        format!("FROM busybox\nADD {url}#nope /x\n"),
    )
    .unwrap();
    let err = build(&b, &d, &["-t", "g3"]).fails(1);
    assert!(
        err.contains("Dockerfile:2") && err.contains("nope") && err.contains("no such reference"),
        "{err}"
    );
}

/// `RUN --mount=type=bind,from=<stage|image>`: a path of an earlier stage
/// (built because of the mount alone) or of an image in the store, read-only
/// for the step (or, with `rw`, writable with the writes thrown away — the
/// next step sees the stage as it was) and not in the layer; the stage's content is in the step's
/// cache key; a source that leaves the stage through a symlink is refused.
#[test]
fn run_mount_bind_from_a_stage() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let df = "FROM busybox AS tools\n\
              RUN mkdir -p /out && echo v1 > /out/tool.txt && ln -s /etc /out/evil\n\
              FROM busybox\n\
              RUN --mount=type=bind,from=tools,source=/out,target=/mnt/tools cat /mnt/tools/tool.txt > /got && (touch /mnt/tools/x 2>/dev/null || echo ro >> /got)\n\
              RUN --mount=type=bind,from=busybox,source=/bin/busybox,target=/mnt/busybox /mnt/busybox true && echo image-ok > /got2\n\
              RUN --mount=type=bind,from=tools,source=/out,target=/mnt/tools,rw sh -c 'echo written > /mnt/tools/tool.txt && cat /mnt/tools/tool.txt > /got3'\n\
              RUN --mount=type=bind,from=tools,source=/out,target=/mnt/tools cat /mnt/tools/tool.txt >> /got3\n\
              CMD cat /got /got2 /got3; ls -d /mnt 2>&1; true\n";
    let d = ctx(&b, "bindfrom", &[("Dockerfile", df)]);
    build(&b, &d, &["-t", "bf"]).ok();
    assert_eq!(
        b.run(&["run", "--rm", "bf"]).ok(),
        "v1\nro\nimage-ok\nwritten\nv1\nls: /mnt: No such file or directory\n"
    );
    // What the mounted stage holds is part of the key.
    let r = build(&b, &d, &["-t", "bf", "--progress", "plain"]);
    assert!(!r.stderr().contains("cache miss"), "{}", r.stderr());
    std::fs::write(d.join("Dockerfile"), df.replace("echo v1", "echo v2")).unwrap();
    let r = build(&b, &d, &["-t", "bf", "--progress", "plain"]);
    assert!(
        r.stderr().contains("cache miss: mount /mnt/tools changed"),
        "{}",
        r.stderr()
    );
    assert!(b.run(&["run", "--rm", "bf"]).ok().starts_with("v2\n"));
    // The stage's absolute symlink is followed inside the stage, as BuildKit
    // does: the mount is the stage's /etc, never the host's.
    std::fs::write(
        d.join("Dockerfile"),
        "FROM busybox AS tools\n\
         RUN mkdir -p /out && ln -s /etc /out/evil && echo stage-etc > /etc/marker\n\
         FROM busybox\n\
         RUN --mount=type=bind,from=tools,source=/out/evil,target=/mnt/e cat /mnt/e/marker > /got4\n\
         CMD cat /got4\n",
    )
    .unwrap();
    build(&b, &d, &["-t", "bf2"]).ok();
    assert_eq!(b.run(&["run", "--rm", "bf2"]).ok(), "stage-etc\n");
}

/// Independent stages are built at the same time (BuildKit does too): two
/// stages meet through a shared cache mount — each marks that it started and
/// waits (up to 10 s) for the other's mark, which only works if both run at
/// once — and a third copies from both. A failing stage among parallel ones
/// fails the build at its own line.
#[test]
fn independent_stages_build_in_parallel() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let meet = |me: &str, other: &str| {
        format!(
            "RUN --mount=type=cache,id=meet,target=/meet sh -c 'touch /meet/{me}; i=0; while [ ! -e /meet/{other} ]; do sleep 0.05; i=$((i+1)); [ $i -lt 200 ] || exit 7; done; echo {me} met {other} > /{me}.txt'"
        )
    };
    let df = format!(
        "FROM busybox AS a\n{}\nFROM busybox AS b\n{}\nFROM busybox\nCOPY --from=a /a.txt /\nCOPY --from=b /b.txt /\nCMD cat /a.txt /b.txt\n",
        meet("a", "b"),
        meet("b", "a")
    );
    let d = ctx(&b, "parallel", &[("Dockerfile", &df)]);
    let r = build(&b, &d, &["-t", "par", "--progress", "plain"]);
    r.ok();
    // The same from a chroot (a build sandbox), with a cache of its own so
    // the marks are new: the stages still meet.
    let d2 = ctx(
        &b,
        "parallel-chrooted",
        &[("Dockerfile", &df.replace("id=meet,", "id=meet-chrooted,"))],
    );
    b.run_chrooted(&["build", "-q", "-t", "par-chrooted", d2.to_str().unwrap()])
        .ok();
    assert_eq!(b.run(&["run", "--rm", "par"]).ok(), "a met b\nb met a\n");
    // Every vertex number is given out once.
    let log = r.stderr();
    let mut starts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" [") && l.starts_with('#'))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let n = starts.len();
    starts.sort();
    starts.dedup();
    assert_eq!(starts.len(), n, "{log}");
    // One of two parallel stages fails: its line and code, nothing left running.
    let bad = df.replace(&meet("b", "a"), "RUN exit 3");
    std::fs::write(d.join("Dockerfile"), bad).unwrap();
    let err = build(&b, &d, &["-t", "par2", "--no-cache"]).fails(3);
    assert!(
        err.contains("Dockerfile:4") && err.contains("exit code: 3"),
        "{err}"
    );
    let rt = std::path::Path::new(common::berth_bin()).with_file_name("berth-runtime");
    let left = common::tool(
        rt.to_str().unwrap(),
        &[
            "--root",
            b.root().join("runtime").to_str().unwrap(),
            "list",
            "-q",
        ],
    );
    assert_eq!(left, "", "no build container left");
}

/// docker: `build - < Dockerfile` reads a Dockerfile (not an archive) from
/// stdin and builds it with an empty context; a COPY then finds nothing.
#[test]
fn build_reads_a_plain_dockerfile_from_stdin() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let id = b
        .run_stdin(
            &["build", "-q", "-t", "from-stdin", "-"],
            b"FROM busybox\nRUN echo built > /f\nCMD [\"cat\", \"/f\"]\n",
        )
        .ok();
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(b.run(&["run", "--rm", "from-stdin"]).ok(), "built\n");
    let err = b
        .run_stdin(&["build", "-q", "-"], b"FROM busybox\nCOPY x /x\n")
        .fails(1);
    assert!(
        err.contains("Dockerfile:2") && err.contains("not found"),
        "{err}"
    );
}

/// docker's history of a build: one row per instruction, ARG and WORKDIR
/// included (empty where they made no layer), each size against its own
/// step, RUN rows prefixed with the build args in use (`|1 V=2 …`), and
/// the default PATH in the config when the base sets none.
#[test]
fn build_history_rows_as_docker_writes_them() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let ctx = b.path("hist");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("data.txt"), "12345\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nARG V=1\nWORKDIR /app\nCOPY data.txt .\nRUN echo $V > /v\nWORKDIR /app\nCMD [\"sh\"]\n",
    )
    .unwrap();
    b.run(&[
        "build",
        "-q",
        "--build-arg",
        "V=2",
        "-t",
        "hist",
        ctx.to_str().unwrap(),
    ])
    .ok();
    let rows = b
        .run(&[
            "history",
            "--no-trunc",
            "--format",
            "{{.CreatedBy}}\t{{.Size}}",
            "hist",
        ])
        .ok();
    let rows: Vec<&str> = rows.lines().take(6).collect();
    assert_eq!(
        rows,
        [
            "/bin/sh -c #(nop)  CMD [\"sh\"]\t0B",
            "/bin/sh -c #(nop)  WORKDIR /app\t0B",
            "|1 V=2 /bin/sh -c echo $V > /v\t2B",
            "/bin/sh -c #(nop) COPY data.txt .\t6B",
            "/bin/sh -c #(nop)  WORKDIR /app\t0B",
            "/bin/sh -c #(nop)  ARG V=1\t0B",
        ]
    );
    // scratch sets no PATH; the builders add theirs.
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY data.txt /\n").unwrap();
    b.run(&["build", "-q", "-t", "nopath", ctx.to_str().unwrap()])
        .ok();
    let env = b
        .run(&["image", "inspect", "-f", "{{json .Config.Env}}", "nopath"])
        .ok();
    assert!(
        env.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{env}"
    );
}

/// BuildKit's side of Dockerfile edge cases: a RUN with nothing to run
/// builds, a Latin-1 byte in a comment does not stop the build, and
/// `--check` refuses a FROM whose image reference is invalid or blank.
#[test]
fn dockerfile_edge_cases_as_buildkit() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let d = b.path("edge");
    std::fs::create_dir_all(&d).unwrap();
    let mut src = b"FROM busybox\n# caf\xe9\nRUN\nRUN []\nRUN echo ok > /ok\n".to_vec();
    src.extend_from_slice(b"RUN \\\n");
    std::fs::write(d.join("Dockerfile"), &src).unwrap();
    build(&b, &d, &["-q", "-t", "edge"]).ok();
    assert_eq!(b.run(&["run", "--rm", "edge", "cat", "/ok"]).ok(), "ok\n");

    std::fs::write(d.join("Dockerfile"), "FROM BASEIMAGE\n").unwrap();
    let err = build(&b, &d, &["--check"]).fails(1);
    assert!(
        err.contains("Dockerfile:1") && err.contains("invalid reference format"),
        "{err}"
    );
    std::fs::write(d.join("Dockerfile"), "ARG EMPTY\nFROM ${EMPTY}\n").unwrap();
    let err = build(&b, &d, &["--check"]).fails(1);
    assert!(err.contains("should not be blank"), "{err}");
    std::fs::write(d.join("Dockerfile"), "FROM busybox AS base\nFROM base\n").unwrap();
    build(&b, &d, &["--check"]).ok();
}

/// BuildKit's plain progress streams a RUN step's output as it comes: the
/// step prints a line, then waits until the test has seen that line (the
/// test drops a file into the context, bound into the step); held output
/// would never be seen and the step would give up after 60 s and fail.
#[test]
fn run_output_arrives_before_the_step_ends() {
    use std::io::BufRead;
    let b = Berth::new();
    b.import_busybox("busybox");
    let d = b.path("stream");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=bind,target=/ctx sh -c 'echo first-line; \
         i=0; while [ ! -e /ctx/seen ]; do i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.1; done; \
         echo second-line'\n",
    )
    .unwrap();
    let mut child = b
        .command(&[
            "build",
            "--no-cache",
            "--progress",
            "plain",
            d.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Progress goes to stderr, as BuildKit's does.
    let out = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut all = String::new();
    for line in out.lines() {
        let line = line.unwrap();
        if line.ends_with(" first-line") {
            std::fs::write(d.join("seen"), "").unwrap();
        }
        all.push_str(&line);
        all.push('\n');
    }
    assert!(child.wait().unwrap().success(), "{all}");
    assert!(all.contains(" second-line\n"), "{all}");
}

/// `--progress`: on a terminal (util-linux's `script`), BuildKit's live view
/// (`[+] Building …`, one line per step, `FINISHED` at the end); `rawjson`
/// gives one JSON object per event (vertexes with started and completed
/// times, logs base64-encoded); an unknown mode is refused.
#[test]
fn progress_tty_and_rawjson() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let d = b.path("prog");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("Dockerfile"),
        "FROM busybox\nRUN echo from-the-step\n",
    )
    .unwrap();
    let cmd = format!(
        "{} --root {} build --no-cache --progress tty {}",
        common::berth_bin(),
        b.root().display(),
        d.display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script (util-linux)");
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{shown}");
    assert!(shown.contains("[+] Building"), "{shown}");
    assert!(shown.contains("FINISHED"), "{shown}");
    assert!(
        shown.contains(" => [2/2] RUN echo from-the-step"),
        "{shown}"
    );

    let r = build(&b, &d, &["--no-cache", "--progress", "rawjson"]);
    r.ok();
    let mut completed = 0;
    let mut logged = false;
    for l in r.stderr().lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        for vx in v["vertexes"].as_array().into_iter().flatten() {
            if vx.get("completed").is_some() {
                completed += 1;
            }
        }
        for lg in v["logs"].as_array().into_iter().flatten() {
            use std::io::Read;
            let data = lg["data"].as_str().unwrap();
            let out = std::process::Command::new("base64")
                .arg("-d")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin.take().unwrap().write_all(data.as_bytes())?;
                    let mut s = String::new();
                    c.stdout.take().unwrap().read_to_string(&mut s)?;
                    c.wait()?;
                    Ok(s)
                })
                .unwrap();
            logged |= out == "from-the-step\n";
        }
    }
    assert!(completed >= 3, "{}", r.stderr());
    assert!(logged, "{}", r.stderr());
    let err = build(&b, &d, &["--progress", "fancy"]).fails(1);
    assert!(err.contains("invalid progress mode"), "{err}");
}

/// BuildKit's exporters (`docker buildx build -o`): the final stage's
/// files into a directory or a tar (a file, or stdout with `-o -`), and the
/// image as a docker or OCI archive that loads elsewhere.
#[test]
fn outputs_write_the_final_stage_and_the_image() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let dir = ctx(
        &b,
        "out",
        &[(
            "Dockerfile",
            "FROM busybox AS builder\nRUN echo built > /artifact && echo junk > /builder-only\nFROM scratch\nCOPY --from=builder /artifact /bin/artifact\n",
        )],
    );
    // A directory: exactly the final stage's files. Run again into the same
    // directory, as CI does: BuildKit's rule, the files are replaced.
    let out = b.path("local");
    for _ in 0..2 {
        build(
            &b,
            &dir,
            &["-q", "-o", &format!("type=local,dest={}", out.display())],
        )
        .ok();
    }
    let mut files: Vec<String> = walk(&out);
    files.sort();
    assert_eq!(files, ["bin", "bin/artifact"]);
    assert_eq!(
        std::fs::read_to_string(out.join("bin/artifact")).unwrap(),
        "built\n"
    );
    // A tar file, and `-o -` on stdout (stdout carries the tar alone).
    let tar = b.path("fs.tar");
    build(
        &b,
        &dir,
        &["-q", "-o", &format!("type=tar,dest={}", tar.display())],
    )
    .ok();
    let listed = common::tool("tar", &["-tf", tar.to_str().unwrap()]);
    assert_eq!(listed.lines().collect::<Vec<_>>(), ["bin/", "bin/artifact"]);
    let piped = build(&b, &dir, &["-q", "-o", "-"]);
    assert!(piped.out.status.success());
    let stdout_tar = b.path("stdout.tar");
    std::fs::write(&stdout_tar, &piped.out.stdout).unwrap();
    assert_eq!(
        common::tool("tar", &["-tf", stdout_tar.to_str().unwrap()]),
        listed
    );
    // The image as a docker archive, named by -t: another store loads it.
    let archive = b.path("img.tar");
    build(
        &b,
        &dir,
        &[
            "-q",
            "-t",
            "artifact:1",
            "-o",
            &format!("type=docker,dest={}", archive.display()),
        ],
    )
    .ok();
    let other = Berth::new();
    other.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    assert!(other.run(&["images"]).ok().contains("artifact"));
    // And as an OCI layout archive (skopeo reads it where installed).
    let oci = b.path("oci.tar");
    build(
        &b,
        &dir,
        &["-q", "-o", &format!("type=oci,dest={}", oci.display())],
    )
    .ok();
    let index = common::tool("tar", &["-xOf", oci.to_str().unwrap(), "index.json"]);
    assert!(
        index.contains("application/vnd.oci.image.index.v1+json"),
        "{index}"
    );
    if common::have("skopeo", "skopeo") {
        let raw = common::tool(
            "skopeo",
            &[
                "inspect",
                "--raw",
                &format!("oci-archive:{}", oci.display()),
            ],
        );
        assert!(raw.contains("\"layers\""), "{raw}");
    }
    // Unknown exporters and options are refused, not ignored.
    let err = build(&b, &dir, &["-o", "type=registry"]).fails(1);
    assert!(err.contains("unknown type \"registry\""), "{err}");
}

/// Relative paths of everything under `root`.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// `build --progress plain -t app --cache-from FROM` of `dir` in `b`'s
/// store, which must succeed; its whole log.
fn build_from_cache(b: &Berth, dir: &Path, from: &str) -> String {
    let r = build(
        b,
        dir,
        &["--progress", "plain", "-t", "app", "--cache-from", from],
    );
    r.stderr() + &r.ok()
}

/// The CI case of BuildKit's `--cache-to` / `--cache-from`: one job builds
/// and exports its cache to the team's registry; the next job starts with
/// an empty store, imports it, and every step is restored from the
/// registry (none runs), giving the same image id. The same through a
/// directory (`type=local`), `mode=min` exporting only the final image's
/// steps, and a first run whose cache is not there yet.
#[test]
fn a_ci_build_restores_every_step_from_a_shared_cache() {
    let storage = tempfile::tempdir().unwrap();
    let reg = common::RegistryServer::start(storage.path(), &["--open"]);
    let base = format!("{}/ci/busybox:1", reg.addr);
    let first = Berth::new();
    first.import_busybox(&base);
    first.run(&["push", "-q", &base]).ok();
    let dockerfile = format!(
        "FROM {base} AS tools\nRUN echo tool > /tool\n\
         FROM {base}\nRUN echo one > /one\nCOPY hello /hello\n\
         COPY --from=tools /tool /tool\nRUN cat /hello /tool > /two\nWORKDIR /app\n"
    );
    let dir = ctx(
        &first,
        "ci",
        &[("Dockerfile", &dockerfile), ("hello", "hi\n")],
    );
    let cache = format!("{}/ci/cache:main", reg.addr);
    let exported = build(
        &first,
        &dir,
        &[
            "-t",
            "app",
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
            "--cache-from",
            &cache,
        ],
    );
    exported.ok();
    // A first run: no cache there yet, said, not an error.
    assert!(
        exported.stderr().contains("no cache at registry"),
        "{}",
        exported.stderr()
    );
    assert!(
        exported.stderr().contains("exporting cache to registry"),
        "{}",
        exported.stderr()
    );
    let id = first.run(&["images", "-q", "--no-trunc", "app"]).ok();
    // skopeo sees BuildKit's cache manifest: the cache config and the layers.
    let raw = common::tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{cache}"),
        ],
    );
    let m: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.buildkit.cacheconfig.v0"
    );
    assert!(m["layers"].as_array().unwrap().len() >= 4, "{m}");
    // The next job: an empty store.
    let next = Berth::new();
    let log = build_from_cache(&next, &dir, &format!("type=registry,ref={cache}"));
    assert_eq!(
        log.matches(&format!("CACHED (from registry {cache})"))
            .count(),
        6,
        "every RUN, COPY and WORKDIR restored: {log}"
    );
    assert!(!log.contains("cache miss"), "{log}");
    assert_eq!(next.run(&["images", "-q", "--no-trunc", "app"]).ok(), id);
    assert_eq!(
        next.run(&["run", "--rm", "app", "cat", "/two"]).ok(),
        "hi\ntool\n"
    );
    // Through a directory, as a CI cache action keeps it.
    let keep = tempfile::tempdir().unwrap();
    let local = keep.path().join("cache");
    let to_dir = build(
        &first,
        &dir,
        &[
            "-t",
            "app",
            "--cache-to",
            &format!("type=local,dest={}", local.display()),
        ],
    );
    to_dir.ok();
    assert!(local.join("index.json").is_file() && local.join("oci-layout").is_file());
    let third = Berth::new();
    let log = build_from_cache(&third, &dir, &format!("type=local,src={}", local.display()));
    // mode=min (the default): the final image's steps only; the tools
    // stage's RUN runs again (its layer is not in the final image).
    assert_eq!(log.matches("CACHED (from local").count(), 5, "{log}");
    assert_eq!(log.matches("cache miss").count(), 1, "{log}");
    assert_eq!(third.run(&["images", "-q", "--no-trunc", "app"]).ok(), id);
    // Bad options are named.
    let err = build(&third, &dir, &["--cache-to", "type=inline"]).fails(1);
    assert!(err.contains("type=inline is not supported"), "{err}");
    let err = build(&third, &dir, &["--cache-to", "type=registry"]).fails(1);
    assert!(err.contains("needs ref="), "{err}");
}

/// `--compression-format zstd` (buildah's and BuildKit's zstd layers): the
/// build's own layers are zstd, its base's stay as they are, a registry
/// and skopeo see `tar+zstd`, and another store pulls and runs the image.
/// A gzip build of the same Dockerfile does not take the zstd build's
/// cached steps (their layers are another format).
#[test]
fn zstd_layers_are_built_pushed_and_pulled() {
    let storage = tempfile::tempdir().unwrap();
    let reg = common::RegistryServer::start(storage.path(), &["--open"]);
    let b = Berth::new();
    let base = format!("{}/z/busybox:1", reg.addr);
    b.import_busybox(&base);
    let dir = ctx(
        &b,
        "z",
        &[("Dockerfile", &format!("FROM {base}\nRUN echo zstd > /x\n"))],
    );
    let image = format!("{}/z/app:1", reg.addr);
    build(&b, &dir, &["--compression-format", "zstd", "-t", &image]).ok();
    b.run(&["push", "-q", &image]).ok();
    let raw = common::tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{image}"),
        ],
    );
    let m: Value = serde_json::from_str(&raw).unwrap();
    let types: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd"
        ],
        "{raw}"
    );
    let other = Berth::new();
    other.run(&["pull", "-q", &image]).ok();
    assert_eq!(
        other.run(&["run", "--rm", &image, "cat", "/x"]).ok(),
        "zstd\n"
    );
    // The same steps in gzip are built anew, not taken from the zstd build.
    let again = build(&b, &dir, &["--progress", "plain", "-t", "gz"]);
    let log = again.stderr() + &again.ok();
    assert!(log.contains("cache miss"), "{log}");
    let bad = build(&b, &dir, &["--compression-format", "lz4"]).fails(1);
    assert!(bad.contains("lz4"), "{bad}");
}

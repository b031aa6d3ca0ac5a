//! End to end: the image commands through the real `berth` binary, and interop
//! with skopeo and umoci. Where docker's behaviour is the reference, it says so.

mod common;

use common::{Berth, busybox_tar, tool};
use serde_json::Value;

#[test]
fn import_images_tag_history_inspect() {
    let b = Berth::new();
    let id = b.import_busybox("busybox");
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "import prints the id like docker: {id}"
    );

    // docker's table: REPOSITORY TAG IMAGE ID CREATED SIZE, ids 12 chars.
    let out = b.run(&["images"]).ok();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("REPOSITORY   TAG       IMAGE ID       CREATED"),
        "{out}"
    );
    assert!(lines[1].starts_with("busybox      latest    "), "{out}");
    assert!(lines[1].contains(&id[7..19]));
    assert!(lines[1].trim_end().ends_with("MB"), "{out}");

    b.run(&["tag", "busybox", "me/box:v1"]).ok();
    b.run(&["image", "tag", &id[7..19], "localhost:5000/team/box"])
        .ok();
    let names = b
        .run(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok();
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "busybox:latest",
            "localhost:5000/team/box:latest",
            "me/box:v1"
        ]
    );
    assert_eq!(b.run(&["images", "-q"]).ok().lines().count(), 3);
    let filtered = b.run(&["images", "me/box"]).ok();
    assert_eq!(filtered.lines().count(), 2, "{filtered}");

    // --format json: one object per line with docker's keys.
    let json = b.run(&["images", "--format", "json"]).ok();
    let first: Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    for k in ["ID", "Repository", "Tag", "CreatedSince", "Size", "Digest"] {
        assert!(first.get(k).is_some(), "missing {k} in {first}");
    }

    // history: one row for the import, with its comment.
    let h = b.run(&["history", "busybox"]).ok();
    assert!(h.starts_with("IMAGE          CREATED"), "{h}");
    assert!(h.contains("Imported from"), "{h}");
    assert!(h.lines().nth(1).unwrap().starts_with(&id[7..19]));

    // inspect, as scripts use it.
    let cmd = b
        .run(&["image", "inspect", "--format", "{{.Config.Cmd}}", "busybox"])
        .ok();
    assert_eq!(cmd.trim(), "[sh]");
    let env = b
        .run(&["inspect", "--format", "{{json .Config.Env}}", "me/box:v1"])
        .ok();
    assert_eq!(
        env.trim(),
        r#"["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]"#
    );
    let full: Value = serde_json::from_str(&b.run(&["image", "inspect", "busybox"]).ok()).unwrap();
    assert_eq!(full[0]["Id"], id.as_str());
    assert_eq!(full[0]["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(full[0]["Os"], "linux");
    assert!(full[0]["Size"].as_u64().unwrap() > 1_000_000);
}

#[test]
fn rmi_untags_then_deletes_like_docker() {
    let b = Berth::new();
    let id = b.import_busybox("busybox");
    b.run(&["tag", "busybox", "other"]).ok();
    // By id with two names: docker refuses without -f.
    let err = b.run(&["rmi", &id[7..19]]).fails(1);
    assert!(
        err.contains("must be forced") && err.contains("referenced in multiple repositories"),
        "{err}"
    );
    let out = b.run(&["rmi", "other"]).ok();
    assert_eq!(out.trim(), "Untagged: other:latest");
    let out = b.run(&["image", "rm", "busybox"]).ok();
    assert!(
        out.starts_with("Untagged: busybox:latest\nDeleted: sha256:"),
        "{out}"
    );
    assert_eq!(b.run(&["images", "-q"]).ok(), "");
    let err = b.run(&["rmi", "busybox"]).fails(1);
    assert!(err.contains("No such image: busybox"), "{err}");
    let err = b.run(&["image", "inspect", "nope"]).fails(1);
    assert!(err.contains("No such image: nope"), "{err}");
    b.run(&["system", "check"]).ok();
    let df = b.run(&["system", "df"]).ok();
    assert!(df.contains("Images          0"), "{df}");
}

#[test]
fn save_load_round_trip_and_skopeo_interop() {
    let b = Berth::new();
    let id = b.import_busybox("busybox");
    let layers = b
        .run(&[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            "busybox",
        ])
        .ok();
    let docker_tar = b.path("docker.tar");
    let oci_tar = b.path("oci.tar");
    b.run(&["save", "-o", docker_tar.to_str().unwrap(), "busybox"])
        .ok();
    b.run(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        oci_tar.to_str().unwrap(),
        "busybox",
    ])
    .ok();

    // skopeo reads what berth writes.
    let info: Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            &format!("docker-archive:{}", docker_tar.display()),
        ],
    ))
    .unwrap();
    assert_eq!(
        serde_json::to_string(&info["Layers"]).unwrap(),
        layers.trim()
    );
    let raw_cfg = tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--raw",
            &format!("oci-archive:{}", oci_tar.display()),
        ],
    );
    let cfg: Value = serde_json::from_str(&raw_cfg).unwrap();
    assert_eq!(cfg["config"]["Cmd"][0], "sh");
    // umoci reads the OCI layout inside berth's docker-archive too.
    let layout = b.path("layout");
    std::fs::create_dir(&layout).unwrap();
    tool(
        "tar",
        &[
            "-C",
            layout.to_str().unwrap(),
            "-xf",
            docker_tar.to_str().unwrap(),
        ],
    );
    let tags = tool("umoci", &["ls", "--layout", layout.to_str().unwrap()]);
    assert_eq!(tags.trim(), "latest");

    // berth reads what skopeo writes, with identical config and layer digests.
    let sk_docker = b.path("sk-docker.tar");
    let sk_oci = b.path("sk-oci.tar");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{}", docker_tar.display()),
            &format!("docker-archive:{}:sk/a:1", sk_docker.display()),
        ],
    );
    tool(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{}", docker_tar.display()),
            &format!("oci-archive:{}:sk/b:2", sk_oci.display()),
        ],
    );
    let fresh = Berth::new();
    let out = fresh.run(&["load", "-i", sk_docker.to_str().unwrap()]).ok();
    assert_eq!(out.trim(), "Loaded image: sk/a:1");
    let out = fresh
        .run_stdin(&["load"], &std::fs::read(&sk_oci).unwrap())
        .ok();
    assert_eq!(out.trim(), "Loaded image: sk/b:2");
    for name in ["sk/a:1", "sk/b:2"] {
        let got_id = fresh
            .run(&["image", "inspect", "--format", "{{.Id}}", name])
            .ok();
        assert_eq!(got_id.trim(), id, "{name}: same config digest");
        let got_layers = fresh
            .run(&[
                "image",
                "inspect",
                "--format",
                "{{json .RootFS.Layers}}",
                name,
            ])
            .ok();
        assert_eq!(got_layers, layers, "{name}: same layer digests");
    }
    // And berth's own archives, through stdout and stdin.
    let again = Berth::new();
    let saved = b.run(&["save", "busybox"]);
    let bytes = saved.out.stdout.clone();
    saved.ok();
    let out = again.run_stdin(&["load"], &bytes).ok();
    assert_eq!(out.trim(), "Loaded image: busybox:latest");
    again.run(&["system", "check"]).ok();
}

#[test]
fn bad_input_is_named_and_changes_nothing() {
    let b = Berth::new();
    b.import_busybox("busybox");
    // Compare what matters, not the "CREATED" column, which ages while the test runs.
    let listing = [
        "images",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}} {{.Size}}",
    ];
    let before = b.run(&listing).ok();

    // A truncated rootfs tarball.
    let data = std::fs::read(busybox_tar()).unwrap();
    let cut = b.path("cut.tar");
    std::fs::write(&cut, &data[..data.len() / 3]).unwrap();
    let err = b.run(&["import", cut.to_str().unwrap(), "broken"]).fails(1);
    assert!(err.contains("cut.tar"), "the error names the file: {err}");
    // A malformed reference, docker's wording.
    let err = b.run(&["tag", "busybox", "Bad:Name"]).fails(1);
    assert!(err.contains("invalid reference format"), "{err}");
    let err = b
        .run(&[
            "import",
            "--change",
            "RUN true",
            busybox_tar().to_str().unwrap(),
        ])
        .fails(1);
    assert!(err.contains("not a valid change command"), "{err}");
    // Archives that are not archives.
    let junk = b.path("junk.tar");
    std::fs::write(
        &junk,
        b"this is not a tar archive at all, not even close............",
    )
    .unwrap();
    let err = b.run(&["load", "-i", junk.to_str().unwrap()]).fails(1);
    assert!(err.contains("archive"), "{err}");
    let missing = b.run(&["load", "-i", "/nonexistent/x.tar"]).fails(1);
    assert!(missing.contains("/nonexistent/x.tar"), "{missing}");
    // Unknown flags exit 125 as docker's do.
    b.run(&["images", "--bogus"]).fails(125);

    assert_eq!(b.run(&listing).ok(), before, "store unchanged");
    b.run(&["system", "check"]).ok();
}

#[test]
fn killed_load_leaves_a_consistent_store() {
    let b = Berth::new();
    b.import_busybox("busybox");
    // An image with a big incompressible layer, so the load takes a while.
    let big_root = b.path("bigroot");
    std::fs::create_dir(&big_root).unwrap();
    let mut f = std::fs::File::create(big_root.join("blob")).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..300 {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        std::io::Write::write_all(&mut f, &buf).unwrap();
    }
    drop(f);
    let big_tar = b.path("big.tar");
    tool(
        "tar",
        &[
            "-C",
            big_root.to_str().unwrap(),
            "-cf",
            big_tar.to_str().unwrap(),
            ".",
        ],
    );
    b.run(&["import", big_tar.to_str().unwrap(), "big"]).ok();
    let archive = b.path("big-save.tar");
    b.run(&["save", "-o", archive.to_str().unwrap(), "big"])
        .ok();
    let fresh = Berth::new();
    fresh.import_busybox("busybox");
    let listing = [
        "images",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}} {{.Size}}",
    ];
    let before = fresh.run(&listing).ok();
    for delay_ms in [30u64, 150, 400] {
        let mut child = fresh
            .command(&["load", "-i", archive.to_str().unwrap()])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever was in flight, the store is consistent and still lists what it had
        // (or the whole new image, if the load won the race).
        fresh.run(&["system", "check"]).ok();
        let now = fresh.run(&listing).ok();
        assert!(now == before || now.contains(" big:latest "), "{now}");
        fresh.run(&["rmi", "-f", "big"]);
    }
    let repaired = fresh.run(&["system", "check", "--repair"]).ok();
    assert!(
        repaired.contains("consistent") || repaired.contains("repaired"),
        "{repaired}"
    );
    fresh.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    fresh.run(&["system", "check"]).ok();
}

#[test]
fn concurrent_commands_do_not_corrupt_the_store() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let children: Vec<_> = (0..12)
        .map(|i| {
            let args: Vec<String> = match i % 3 {
                0 => vec![
                    "import".into(),
                    busybox_tar().display().to_string(),
                    format!("imp{i}"),
                ],
                1 => vec!["tag".into(), "busybox".into(), format!("tag{i}")],
                _ => vec!["images".into()],
            };
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            b.command(&a)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let names = b.run(&["images", "--format", "{{.Repository}}"]).ok();
    assert_eq!(names.lines().count(), 9, "{names}");
    b.run(&["system", "check"]).ok();
}

#[test]
fn prune_removes_dangling_images() {
    let b = Berth::new();
    b.import_busybox("app");
    // Re-importing under the same name with a change leaves the old one dangling.
    b.run(&[
        "import",
        "--change",
        "CMD [\"ls\"]",
        busybox_tar().to_str().unwrap(),
        "app",
    ])
    .ok();
    let rows = b.run(&["images"]).ok();
    assert!(
        rows.lines()
            .any(|l| l.split_whitespace().take(2).eq(["<none>", "<none>"])),
        "{rows}"
    );
    let out = b.run(&["image", "prune", "-f"]).ok();
    assert!(
        out.contains("Deleted Images:") && out.contains("Total reclaimed space:"),
        "{out}"
    );
    assert_eq!(b.run(&["images", "-q"]).ok().lines().count(), 1);
}

//! Images of other machines, run and built under QEMU's user-mode
//! emulators (Debian's qemu-user-static) through binfmt_misc, which berth
//! mounts and registers itself on a machine without systemd: an arm64
//! busybox (Debian's busybox-static for arm64, fetched by .ci/run) imported
//! as linux/arm64, run, and built FROM with a RUN step — `uname -m` says
//! aarch64 each time. An architecture with no emulator is refused with the
//! reason, before anything starts. A `build --platform linux/amd64,linux/arm64`
//! makes one index (each platform's stages from that platform's base, pulled
//! through a manifest list), pushed whole and run per platform.

mod common;

use std::path::Path;

use common::Berth;

const ARM64_BUSYBOX: &str = "/var/cache/berth-test/busybox-arm64";

/// Puts back what the test changed when dropped: the arm64 handler
/// removed if it was not registered before, binfmt_misc unmounted if it
/// was not mounted.
struct Unregister {
    handler: bool,
    mount: bool,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        if self.handler {
            let _ = std::fs::write("/proc/sys/fs/binfmt_misc/qemu-aarch64", "-1");
        }
        if self.mount {
            let _ = std::process::Command::new("umount")
                .arg("/proc/sys/fs/binfmt_misc")
                .status();
        }
    }
}

/// The tests that register the arm64 handler take turns: one's cleanup
/// would pull the handler from under another.
static EMULATION: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// arm64 emulation set up for one test (None, said why, when this machine
/// cannot): held until the test ends, then put back as found.
fn arm64_emulation(b: &Berth) -> Option<(std::sync::MutexGuard<'static, ()>, Unregister)> {
    if std::env::consts::ARCH != "x86_64"
        || !common::have("qemu-aarch64-static", "qemu-user-static")
    {
        return None;
    }
    if !Path::new(ARM64_BUSYBOX).exists() {
        eprintln!("skipped: {ARM64_BUSYBOX} is missing (.ci/run fetches busybox-static:arm64)");
        return None;
    }
    let turn = EMULATION.lock().unwrap_or_else(|p| p.into_inner());
    // Left as found: a handler this test registers goes when it ends.
    let undo = Unregister {
        handler: !Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists(),
        mount: !Path::new("/proc/sys/fs/binfmt_misc/register").exists(),
    };
    let r = b.run(&["system", "emulators", "--install", "arm64"]);
    if r.code() != 0 {
        eprintln!("skipped: binfmt_misc cannot be set up here: {}", r.stderr());
        return None;
    }
    Some((turn, undo))
}

/// Debian's arm64 busybox as a rootfs tar at `tar`.
fn arm64_rootfs(tar: &Path) {
    let ok = std::process::Command::new(common::project_root().join("scripts/busybox-rootfs.sh"))
        .arg(tar)
        .env("BUSYBOX", ARM64_BUSYBOX)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn arm64_images_run_and_build_under_emulation() {
    let b = Berth::new();
    let Some(_emulation) = arm64_emulation(&b) else {
        return;
    };
    assert!(b.run(&["system", "emulators"]).ok().contains("arm64"));
    let tar = b.path("arm64.tar");
    arm64_rootfs(&tar);
    b.run(&[
        "import",
        "--platform",
        "linux/arm64",
        tar.to_str().unwrap(),
        "bb-arm64",
    ])
    .ok();
    assert_eq!(
        b.run(&[
            "image",
            "inspect",
            "-f",
            "{{.Os}}/{{.Architecture}}",
            "bb-arm64"
        ])
        .ok(),
        "linux/arm64\n"
    );
    assert_eq!(
        b.run(&["run", "--rm", "bb-arm64", "uname", "-m"]).ok(),
        "aarch64\n"
    );
    // A build FROM it runs its RUN steps under the emulator too, and the
    // image it makes is arm64's.
    let ctx = b.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb-arm64\nRUN uname -m > /arch\nCMD [\"cat\", \"/arch\"]\n",
    )
    .unwrap();
    b.run(&["build", "-q", "-t", "built-arm64", ctx.to_str().unwrap()])
        .ok();
    assert_eq!(b.run(&["run", "--rm", "built-arm64"]).ok(), "aarch64\n");
    assert_eq!(
        b.run(&["image", "inspect", "-f", "{{.Architecture}}", "built-arm64"])
            .ok(),
        "arm64\n"
    );
}

#[test]
fn an_architecture_without_an_emulator_is_refused() {
    let b = Berth::new();
    b.run(&[
        "import",
        "--platform",
        "linux/sparc64",
        common::busybox_tar().to_str().unwrap(),
        "odd",
    ])
    .ok();
    let err = b.run(&["run", "--rm", "odd", "true"]).fails(125);
    assert!(
        err.contains("is for linux/sparc64") && err.contains("no emulator"),
        "{err}"
    );
    // `run --platform` asks for a platform: a local image of another is
    // refused with docker's words.
    b.import_busybox("busybox");
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let err = b
        .run(&[
            "run",
            "--rm",
            "--platform",
            "linux/riscv64",
            "busybox",
            "true",
        ])
        .fails(125);
    assert!(
        err.contains(&format!(
            "image with reference busybox:latest was found but does not match the specified platform: wanted linux/riscv64, actual: linux/{host}"
        )),
        "{err}"
    );
    b.run(&[
        "run",
        "--rm",
        "--platform",
        &format!("linux/{host}"),
        "busybox",
        "true",
    ])
    .ok();
}

/// buildx's multi-platform build, the way the user does it: bases
/// for both platforms published as one manifest list in a registry, a
/// Dockerfile with `RUN uname -m`, `build --platform linux/amd64,linux/arm64`
/// in an empty store (each platform's base pulled for it), then the index
/// pushed whole and each platform run, here and after a pull elsewhere.
#[test]
fn a_multi_platform_build_is_one_index_of_each_platform() {
    let b = Berth::new();
    let Some(_emulation) = arm64_emulation(&b) else {
        return;
    };
    let storage = tempfile::tempdir().unwrap();
    let reg = common::RegistryServer::start(storage.path(), &["--open"]);
    let r = |n: &str| format!("{}/{n}", reg.addr);
    // The bases: busybox for amd64 and for arm64, one list.
    let tar = b.path("arm64.tar");
    arm64_rootfs(&tar);
    let amd = common::busybox_tar().to_str().unwrap().to_string();
    b.run(&["import", &amd, &r("bb:amd64")]).ok();
    b.run(&[
        "import",
        "--platform",
        "linux/arm64",
        tar.to_str().unwrap(),
        &r("bb:arm64"),
    ])
    .ok();
    for t in ["bb:amd64", "bb:arm64"] {
        b.run(&["push", "-q", &r(t)]).ok();
    }
    b.run(&[
        "manifest",
        "create",
        &r("busybox:multi"),
        &r("bb:amd64"),
        &r("bb:arm64"),
    ])
    .ok();
    b.run(&["manifest", "push", "--purge", &r("busybox:multi")])
        .ok();
    // The build, in a store that has neither base.
    let builder = Berth::new();
    let ctx = builder.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}\nARG TARGETPLATFORM\nARG TARGETARCH\nRUN uname -m > /arch && echo \"$TARGETPLATFORM $TARGETARCH\" >> /arch\nCMD [\"cat\", \"/arch\"]\n",
            r("busybox:multi")
        ),
    )
    .unwrap();
    let app = r("app:1");
    let built = builder.run(&[
        "build",
        "--progress",
        "plain",
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        &app,
        ctx.to_str().unwrap(),
    ]);
    built.ok();
    let out = built.stderr() + &built.stdout();
    // BuildKit's step labels and export lines.
    assert!(out.contains("[linux/arm64 2/2] RUN uname -m"), "{out}");
    assert!(out.contains("exporting manifest list sha256:"), "{out}");
    // `images` shows it once; each platform runs, the foreign one emulated.
    let images = builder
        .run(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok();
    assert_eq!(images.matches("/app:1").count(), 1, "{images}");
    assert_eq!(
        builder
            .run(&["run", "--rm", "--platform", "linux/amd64", &app])
            .ok(),
        "x86_64\nlinux/amd64 amd64\n"
    );
    assert_eq!(
        builder
            .run(&["run", "--rm", "--platform", "linux/arm64", &app])
            .ok(),
        "aarch64\nlinux/arm64/v8 arm64\n"
    );
    // push sends the whole index: skopeo sees two manifests.
    builder.run(&["push", &app]).ok();
    let raw = common::tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{app}"),
        ],
    );
    assert_eq!(index_arches(&raw), ["amd64", "arm64"], "{raw}");
    // Elsewhere: a pull for arm64 runs arm64 (and says so in inspect).
    let other = Berth::new();
    other
        .run(&["pull", "-q", "--platform", "linux/arm64", &app])
        .ok();
    assert_eq!(
        other.run(&["run", "--rm", &app]).ok(),
        "aarch64\nlinux/arm64/v8 arm64\n"
    );
    assert_eq!(
        other
            .run(&["image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", &app])
            .ok(),
        "linux/arm64\n"
    );
    // A base with no image for the platform asked is named with the platform.
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {}\n", r("bb:amd64"))).unwrap();
    let err = builder
        .run(&["build", "--platform", "linux/arm64", ctx.to_str().unwrap()])
        .fails(1);
    assert!(err.contains("linux/arm64"), "{err}");
}

/// The architectures an image index (its JSON) lists, in order.
fn index_arches(raw: &str) -> Vec<String> {
    let idx: serde_json::Value = serde_json::from_str(raw).unwrap();
    idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap().to_string())
        .collect()
}

/// `save --format oci-archive -o TAR IMAGE`, which must succeed.
fn save_oci(b: &Berth, image: &str, tar: &Path) {
    b.run(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        tar.to_str().unwrap(),
        image,
    ])
    .ok();
}

/// `build -q --platform linux/amd64,linux/arm64 -t TAG` (and `extra`) of
/// a Dockerfile that copies a file per TARGETARCH FROM scratch: a
/// multi-platform image with no RUN step, so no emulator is needed.
fn build_scratch_multi(b: &Berth, tag: &str, extra: &[&str]) -> common::Run {
    let ctx = b.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nARG TARGETARCH\nCOPY file-${TARGETARCH} /file\n",
    )
    .unwrap();
    std::fs::write(ctx.join("file-amd64"), "amd64\n").unwrap();
    std::fs::write(ctx.join("file-arm64"), "arm64\n").unwrap();
    let mut args = vec![
        "build",
        "-q",
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        tag,
    ];
    args.extend_from_slice(extra);
    let dir = ctx.to_str().unwrap().to_string();
    args.push(&dir);
    b.run(&args)
}

/// A multi-platform image moves whole through an OCI archive (#21's
/// "save/load keep indexes"): `save --format oci-archive` writes the index
/// and every platform's image, skopeo reads the index from the archive,
/// `load` in another store names the index again (listed once, the host's
/// platform runs), and saving it there gives the same index digest. Built
/// FROM scratch with a file per TARGETARCH, so no emulator is needed.
#[test]
fn a_multi_platform_image_saves_and_loads_as_one_index() {
    let b = Berth::new();
    build_scratch_multi(&b, "multi:1", &[]).ok();
    let tar = b.path("multi.tar");
    save_oci(&b, "multi:1", &tar);
    let inspect = |t: &Path| {
        common::tool(
            "skopeo",
            &[
                "inspect",
                "--raw",
                &format!("oci-archive:{}:1", t.display()),
            ],
        )
    };
    let raw = inspect(&tar);
    assert_eq!(index_arches(&raw), ["amd64", "arm64"], "{raw}");
    let other = Berth::new();
    assert!(
        other
            .run(&["load", "-i", tar.to_str().unwrap()])
            .ok()
            .contains("multi:1")
    );
    let listed = other
        .run(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok();
    assert_eq!(listed, "multi:1\n");
    let host = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    assert_eq!(
        other
            .run(&["image", "inspect", "-f", "{{.Architecture}}", "multi:1"])
            .ok(),
        format!("{host}\n")
    );
    let again = other.path("again.tar");
    save_oci(&other, "multi:1", &again);
    assert_eq!(inspect(&again), raw, "the index is the same, byte for byte");
}

/// A multi-platform image built here, pushed, pulled elsewhere with
/// `--all-platforms` and pushed on to another repository arrives there
/// byte for byte (#21: images move between berth, registries and cluster
/// nodes unchanged). FROM scratch, so no emulator is needed.
#[test]
fn an_index_moves_between_registries_unchanged() {
    let storage = tempfile::tempdir().unwrap();
    let reg = common::RegistryServer::start(storage.path(), &["--open"]);
    let b = Berth::new();
    // Refused before anything is built: --push with no name to push, and
    // -o with several platforms (BuildKit writes one directory each).
    let ctx = b.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\n").unwrap();
    let e = b.run(&["build", "--push", ctx.to_str().unwrap()]).fails(1);
    assert!(e.contains("--push needs a name"), "{e}");
    let out = b.path("out");
    let e = b
        .run(&[
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            out.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ])
        .fails(1);
    assert!(e.contains("--output with several platforms"), "{e}");
    assert!(!out.exists(), "nothing written");
    assert_eq!(b.run(&["images", "-q"]).ok(), "", "nothing built");
    let first = format!("{}/team/multi:1", reg.addr);
    // `build --push`, as buildx's: the index and both platforms go.
    let built = build_scratch_multi(&b, &first, &["--push"]);
    let index = built.ok();
    assert!(
        built
            .stderr()
            .contains(&format!("pushed {first}@{}", index.trim())),
        "{}",
        built.stderr()
    );
    let raw = |r: &str| {
        common::tool(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{r}"),
            ],
        )
    };
    let pushed = raw(&first);
    let other = Berth::new();
    other.run(&["pull", "-q", "--all-platforms", &first]).ok();
    assert_eq!(
        other
            .run(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .ok()
            .lines()
            .count(),
        1
    );
    let second = format!("{}/elsewhere/multi:1", reg.addr);
    other.run(&["tag", &first, &second]).ok();
    other.run(&["push", "-q", &second]).ok();
    assert_eq!(raw(&second), pushed, "the index arrives unchanged");
    // Both platforms came along: the second repository serves arm64 too.
    let third = Berth::new();
    third
        .run(&["pull", "-q", "--platform", "linux/arm64", &second])
        .ok();
    assert_eq!(
        third
            .run(&["image", "inspect", "-f", "{{.Architecture}}", &second])
            .ok(),
        "arm64\n"
    );
}

/// A private containerd (its own root, state and socket), stopped and
/// removed when dropped.
struct Containerd {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Option<Containerd> {
        if !common::have("containerd", "containerd") || !common::have("ctr", "containerd") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("config.toml"),
            format!(
                "version = 2\nroot = \"{r}/root\"\nstate = \"{r}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{r}/ctr.sock\"\n[ttrpc]\n  address = \"{r}/ctr.sock.ttrpc\"\n",
                r = d.display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let c = Containerd { child, dir };
        for _ in 0..100 {
            if c.dir.path().join("ctr.sock").exists() {
                return Some(c);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        eprintln!("skipped: containerd made no socket");
        None
    }

    fn ctr(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("ctr")
            .arg("-a")
            .arg(self.dir.path().join("ctr.sock"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Anything it left mounted under its root goes before the directory.
        let _ = std::process::Command::new("umount")
            .arg("-R")
            .arg(self.dir.path().join("root"))
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// containerd imports berth's OCI archive of a multi-platform image as the
/// index it is, both platforms present (`ctr images import --all-platforms`),
/// as a cluster node would take an image moved by hand.
#[test]
fn containerd_imports_a_multi_platform_archive_whole() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let b = Berth::new();
    let index = build_scratch_multi(&b, "multi:1", &[]).ok();
    let tar = b.path("multi.tar");
    save_oci(&b, "multi:1", &tar);
    cd.ctr(&["images", "import", "--all-platforms", tar.to_str().unwrap()]);
    let ls = cd.ctr(&["images", "ls"]);
    let row = ls
        .lines()
        .find(|l| l.starts_with("docker.io/library/multi:1"))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(
        row.contains("application/vnd.oci.image.index.v1+json"),
        "{row}"
    );
    assert!(row.contains(index.trim()), "the index berth built: {row}");
    assert!(
        row.contains("linux/amd64") && row.contains("linux/arm64"),
        "{row}"
    );
}

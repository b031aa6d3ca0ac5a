//! Images of other machines, run and built under QEMU's user-mode
//! emulators (Debian's qemu-user-static) through binfmt_misc, which berth
//! mounts and registers itself on a machine without systemd: an arm64
//! busybox (Debian's busybox-static for arm64, fetched by .ci/run) imported
//! as linux/arm64, run, and built FROM with a RUN step — `uname -m` says
//! aarch64 each time. An architecture with no emulator is refused with the
//! reason, before anything starts.

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

#[test]
fn arm64_images_run_and_build_under_emulation() {
    if std::env::consts::ARCH != "x86_64"
        || !common::have("qemu-aarch64-static", "qemu-user-static")
    {
        return;
    }
    if !Path::new(ARM64_BUSYBOX).exists() {
        eprintln!("skipped: {ARM64_BUSYBOX} is missing (.ci/run fetches busybox-static:arm64)");
        return;
    }
    let b = Berth::new();
    // Left as found: a handler this test registers goes when it ends.
    let _undo = Unregister {
        handler: !Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists(),
        mount: !Path::new("/proc/sys/fs/binfmt_misc/register").exists(),
    };
    let r = b.run(&["system", "emulators", "--install", "arm64"]);
    if r.code() != 0 {
        eprintln!("skipped: binfmt_misc cannot be set up here: {}", r.stderr());
        return;
    }
    assert!(b.run(&["system", "emulators"]).ok().contains("arm64"));
    let tar = b.path("arm64.tar");
    let ok = std::process::Command::new(common::project_root().join("scripts/busybox-rootfs.sh"))
        .arg(&tar)
        .env("BUSYBOX", ARM64_BUSYBOX)
        .status()
        .unwrap();
    assert!(ok.success());
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

//! End to end: devices given to containers the way docker gives them —
//! `--device` with a host node, and CDI devices (`--device
//! vendor.com/class=name`, `--gpus`) from synthetic specs in a spec
//! directory of the test's own (`BERTH_CDI_SPEC_DIRS`), checked from inside
//! the container: the node with its numbers, the cgroup rule that lets it
//! open, the environment, the mount, the hook's work. No GPU is needed:
//! the NVIDIA spec is generated from a fake driver tree, and `--gpus` maps
//! onto a synthetic `nvidia.com/gpu` spec. docker 25+'s CLI and Engine API
//! behaviour (CDI device requests, `--gpus`) is the reference.

mod common;

use std::path::{Path, PathBuf};

use common::service::Service;
use common::{Berth, Run, berth_bin};

/// A spec directory of the test's own.
struct Specs {
    dir: PathBuf,
}

impl Specs {
    fn new(b: &Berth) -> Specs {
        let dir = b.path("cdi");
        std::fs::create_dir_all(&dir).unwrap();
        Specs { dir }
    }

    fn write(&self, name: &str, body: &str) {
        std::fs::write(self.dir.join(name), body).unwrap();
    }

    fn run(&self, b: &Berth, args: &[&str]) -> Run {
        Run {
            out: b
                .command(args)
                .env("BERTH_CDI_SPEC_DIRS", &self.dir)
                .output()
                .unwrap(),
        }
    }
}

/// A char device with /dev/null's numbers, made in the test's directory.
fn fake_node(b: &Berth) -> PathBuf {
    let p = b.path("dev-a");
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mknod with a valid path.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(r, 0, "mknod {}", std::io::Error::last_os_error());
    p
}

fn test_spec(node: &Path, shared: &Path) -> String {
    format!(
        r#"cdiVersion: 0.6.0
kind: vendor.test/dev
devices:
  - name: a
    containerEdits:
      env: [DEV_A=yes]
      deviceNodes:
        - path: /dev/berth-a
          hostPath: {node}
          permissions: rw
      mounts:
        - hostPath: {shared}
          containerPath: /opt/shared.txt
          options: [ro, bind]
      hooks:
        - hookName: createContainer
          path: {berth}
          args: [berth, system, cdi, hook, create-symlinks, --link, /opt/shared.txt::/cdi-link]
  - name: b
    containerEdits:
      env: [DEV_A=no]
containerEdits:
  env: [VENDOR_TEST=1]
"#,
        node = node.display(),
        shared = shared.display(),
        berth = berth_bin(),
    )
}

/// The busybox base as `bb`, and a spec directory holding [`test_spec`]
/// over a node the test makes and a host file saying "from the host".
fn with_test_spec(b: &Berth) -> Specs {
    b.import_busybox("bb");
    let specs = Specs::new(b);
    let node = fake_node(b);
    let shared = b.path("shared.txt");
    std::fs::write(&shared, "from the host\n").unwrap();
    specs.write("test.yaml", &test_spec(&node, &shared));
    specs
}

#[test]
fn cdi_devices_get_exactly_their_edits() {
    let b = Berth::new();
    let specs = with_test_spec(&b);
    let out = specs
        .run(
            &b,
            &[
                "run",
                "--rm",
                "--device",
                "vendor.test/dev=a",
                "bb",
                "sh",
                "-c",
                "env | grep -E '^(DEV_A|VENDOR_TEST)=' | sort; stat -c '%F %t:%T' /dev/berth-a; \
                 echo x > /dev/berth-a && echo opened; cat /opt/shared.txt; readlink /cdi-link",
            ],
        )
        .ok();
    assert_eq!(
        out,
        "DEV_A=yes\nVENDOR_TEST=1\ncharacter special file 1:3\nopened\nfrom the host\n/opt/shared.txt\n"
    );
    // Without the device, none of it.
    let plain = specs
        .run(&b, &["run", "--rm", "bb", "sh", "-c", "env; ls /dev"])
        .ok();
    assert!(
        !plain.contains("DEV_A") && !plain.contains("berth-a"),
        "{plain}"
    );
    // inspect shows docker's DeviceRequests.
    specs
        .run(
            &b,
            &[
                "create",
                "--name",
                "c1",
                "--device",
                "vendor.test/dev=a",
                "bb",
            ],
        )
        .ok();
    let reqs = b
        .run(&["inspect", "-f", "{{json .HostConfig.DeviceRequests}}", "c1"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&reqs).unwrap();
    assert_eq!(v[0]["Driver"], "cdi");
    assert_eq!(v[0]["DeviceIDs"][0], "vendor.test/dev=a");
    // `info` lists what the spec directory defines.
    let info = specs.run(&b, &["info"]).ok();
    assert!(info.contains("cdi: vendor.test/dev=a"), "{info}");
    // Both devices of one kind with different values for one variable
    // conflict, and the error names both (docker's exit 125).
    let e = specs
        .run(
            &b,
            &[
                "run",
                "--rm",
                "--device",
                "vendor.test/dev=a",
                "--device",
                "vendor.test/dev=b",
                "bb",
                "true",
            ],
        )
        .fails(125);
    assert!(
        e.contains("vendor.test/dev=a") && e.contains("vendor.test/dev=b") && e.contains("DEV_A"),
        "{e}"
    );
}

#[test]
fn unknown_devices_and_bad_specs_are_named() {
    let b = Berth::new();
    b.import_busybox("bb");
    let specs = Specs::new(&b);
    // A malformed spec: its file and field are named when a device is not found.
    specs.write(
        "broken.yaml",
        "cdiVersion: 0.6.0\nkind: vendor.test/dev\ndevices:\n  - name: a\n    containerEdits:\n      deviceNodes:\n        - path: dev/relative\n",
    );
    let e = specs
        .run(
            &b,
            &["run", "--rm", "--device", "vendor.test/dev=a", "bb", "true"],
        )
        .fails(125);
    assert!(
        e.contains("unresolvable CDI devices vendor.test/dev=a"),
        "{e}"
    );
    assert!(
        e.contains("broken.yaml") && e.contains("devices[0].containerEdits.deviceNodes[0].path"),
        "{e}"
    );
    // Nothing was made.
    assert_eq!(b.run(&["ps", "-aq"]).ok(), "");
    // A name that is not vendor/class=name, and a host device that is not there.
    let e = specs
        .run(&b, &["run", "--rm", "--device", "vendor=x", "bb", "true"])
        .fails(125);
    assert!(e.contains("vendor=x"), "{e}");
    let e = b
        .run(&[
            "run",
            "--rm",
            "--device",
            "/dev/berth-nothing",
            "bb",
            "true",
        ])
        .fails(125);
    assert!(e.contains("/dev/berth-nothing"), "{e}");
}

#[test]
fn a_host_device_comes_with_the_cgroup_rule_that_opens_it() {
    // /dev/loop-control (10:237) is not among docker's default devices: the
    // container can open it only through the rule --device adds.
    if !Path::new("/dev/loop-control").exists() {
        eprintln!("skipped: no /dev/loop-control here");
        return;
    }
    let b = Berth::new();
    b.import_busybox("bb");
    let with = b
        .run(&[
            "run",
            "--rm",
            "--device",
            "/dev/loop-control:/dev/ctl:rw",
            "bb",
            "sh",
            "-c",
            "stat -c '%t:%T' /dev/ctl; exec 3<>/dev/ctl && echo opened",
        ])
        .ok();
    assert_eq!(with, "a:ed\nopened\n");
    let without = b.run(&[
        "run",
        "--rm",
        "--cap-add",
        "MKNOD",
        "bb",
        "sh",
        "-c",
        "mknod /dev/ctl c 10 237 2>/dev/null; exec 3<>/dev/ctl && echo opened",
    ]);
    assert!(!without.stdout().contains("opened"), "{}", without.stdout());
}

#[test]
fn gpus_map_onto_nvidia_cdi_devices() {
    let b = Berth::new();
    b.import_busybox("bb");
    let specs = Specs::new(&b);
    // No nvidia.com/gpu spec and no driver: docker's words, and why. (On
    // a machine with the driver, berth would generate a spec instead.)
    if !Path::new("/proc/driver/nvidia/version").exists() {
        let e = specs
            .run(&b, &["run", "--rm", "--gpus", "all", "bb", "true"])
            .fails(125);
        assert!(
            e.contains("could not select device driver \"\" with capabilities: [[gpu]]"),
            "{e}"
        );
    }
    specs.write(
        "gpu.yaml",
        "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n\
         - name: \"0\"\n  containerEdits:\n    env: [GPU_0=1]\n\
         - name: \"1\"\n  containerEdits:\n    env: [GPU_1=1]\n\
         - name: GPU-1111\n  containerEdits:\n    env: [GPU_0=1]\n\
         containerEdits:\n  env: [NVIDIA_DRIVER=fake]\n",
    );
    let gpus = |flag: &str| {
        specs
            .run(
                &b,
                &[
                    "run",
                    "--rm",
                    "--gpus",
                    flag,
                    "bb",
                    "sh",
                    "-c",
                    "env | grep -E '^(GPU|NVIDIA)' | sort",
                ],
            )
            .ok()
    };
    assert_eq!(gpus("all"), "GPU_0=1\nGPU_1=1\nNVIDIA_DRIVER=fake\n");
    assert_eq!(gpus("1"), "GPU_0=1\nNVIDIA_DRIVER=fake\n");
    assert_eq!(gpus("\"device=1\""), "GPU_1=1\nNVIDIA_DRIVER=fake\n");
    assert_eq!(gpus("device=GPU-1111"), "GPU_0=1\nNVIDIA_DRIVER=fake\n");
    let e = specs
        .run(&b, &["run", "--rm", "--gpus", "3", "bb", "true"])
        .fails(125);
    assert!(e.contains("only 2 GPU(s)"), "{e}");
}

/// `system cdi generate` over a driver laid out as NVIDIA's installer lays
/// it out (under a fake root): the spec it writes defines each GPU by index
/// and UUID, and `all`.
#[test]
fn a_spec_is_generated_from_the_driver_tree() {
    let b = Berth::new();
    let root = b.path("driver");
    let w = |p: &str, body: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    };
    w(
        "proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 2024\n",
    );
    w(
        "proc/driver/nvidia/gpus/0000:01:00.0/information",
        "Model: \t NVIDIA H100\nGPU UUID: \t GPU-aaaa\nDevice Minor: \t 0\n",
    );
    w("dev/nvidia0", "");
    w("dev/nvidiactl", "");
    w("usr/lib/x86_64-linux-gnu/libcuda.so.550.54.14", "ELF");
    let specs = Specs::new(&b);
    let out = specs.dir.join("nvidia.yaml");
    let r = b.run(&[
        "system",
        "cdi",
        "generate",
        "--driver-root",
        root.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(r.ok().is_empty());
    assert!(
        r.stderr().contains("Generated CDI spec with 3 devices"),
        "{}",
        r.stderr()
    );
    let list = specs.run(&b, &["system", "cdi", "list"]).ok();
    assert_eq!(
        list,
        "nvidia.com/gpu=0\nnvidia.com/gpu=GPU-aaaa\nnvidia.com/gpu=all\n"
    );
    // Without a driver: said, non-zero.
    let e = b
        .run(&[
            "system",
            "cdi",
            "generate",
            "--driver-root",
            b.path("none").to_str().unwrap(),
        ])
        .fails(1);
    assert!(e.contains("no NVIDIA driver"), "{e}");
}

/// The docker CLI through berth's Engine API: `--device` with a CDI name
/// and `--gpus` arrive as docker 25+ sends them (`HostConfig.DeviceRequests`).
#[test]
fn the_engine_api_takes_device_requests() {
    let docker = ["/usr/local/bin/docker", "/usr/bin/docker"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(docker) = docker else {
        eprintln!("skipped: no docker CLI (apt-get install docker.io; .ci/run does)");
        return;
    };
    let b = Berth::new();
    let specs = with_test_spec(&b);
    specs.write(
        "gpu.yaml",
        "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    env: [GPU_0=1]\n",
    );
    let service = Service::start_with(&b, &[], &[("BERTH_CDI_SPEC_DIRS", specs.dir.as_os_str())]);
    let run = |args: &[&str]| {
        std::process::Command::new(docker)
            .arg("-H")
            .arg(service.host())
            .args(args)
            .env("DOCKER_CONFIG", b.path("docker-config"))
            .output()
            .unwrap()
    };
    let cdi = run(&[
        "run",
        "--rm",
        "--device",
        "vendor.test/dev=a",
        "bb",
        "sh",
        "-c",
        "echo $DEV_A; stat -c %t:%T /dev/berth-a",
    ]);
    let gpu = run(&[
        "run",
        "--rm",
        "--gpus",
        "all",
        "bb",
        "sh",
        "-c",
        "echo $GPU_0",
    ]);
    drop(service);
    assert!(
        cdi.status.success(),
        "{}",
        String::from_utf8_lossy(&cdi.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&cdi.stdout), "yes\n1:3\n");
    assert!(
        gpu.status.success(),
        "{}",
        String::from_utf8_lossy(&gpu.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&gpu.stdout), "1\n");
}

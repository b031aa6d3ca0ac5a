//! End to end: `berth system service` driven by the real docker CLI and by
//! docker-py, as their users drive dockerd. dockerd's behaviour (outputs,
//! exit codes, status codes and messages) is the reference.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::service::Service;
use common::{Berth, berth_bin, echo_through};

/// Whether a docker CLI is here; when not, the test says it is skipped.
fn have_docker() -> bool {
    let here = ["/usr/bin/docker", "/usr/local/bin/docker"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !here {
        eprintln!("skipped: no docker CLI (apt-get install docker.io; .ci/run does)");
    }
    here
}

/// Whether the Python module `m` imports; when not, the test says it is skipped.
fn have_python(m: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {m}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "skipped: the Python module {m} is not installed (pip install {m}; .ci/run does)"
        );
    }
    ok
}

/// The docker CLI to test with: Debian's (docker.io, what CI installs), or
/// the one in /usr/local/bin.
fn docker_bin() -> &'static str {
    for p in ["/usr/bin/docker", "/usr/local/bin/docker"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("no docker CLI; .ci/run installs Debian's docker.io for its client");
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the docker CLI against the service (killed after 60 s: a hang is a failure).
fn docker(b: &Berth, s: &Service, args: &[&str]) -> Out {
    let mut c = Command::new("timeout");
    c.args(["-s", "KILL", "60", docker_bin()])
        .args(args)
        .env("DOCKER_HOST", s.host())
        .env("DOCKER_CONFIG", b.path("docker-cli-config"))
        .stdin(Stdio::null());
    let o = c.output().expect("docker");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[track_caller]
fn ok(o: Out) -> String {
    assert_eq!(o.code, 0, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
    o.stdout
}

/// `curl` on the socket: (status, body).
fn curl(s: &Service, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut args = vec![
        "-s".to_string(),
        "-o".into(),
        "-".into(),
        "-w".into(),
        "\n%{http_code}".into(),
        "--max-time".into(),
        "20".into(),
        "--unix-socket".into(),
        s.sock.display().to_string(),
        "-X".into(),
        method.into(),
    ];
    if let Some(b) = body {
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "--data-binary".into(),
            b.into(),
        ]);
    }
    args.push(format!("http://localhost{path}"));
    let o = Command::new("curl").args(&args).output().expect("curl");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The lecture's daily flow through the docker CLI: what it prints and the
/// codes it exits with are dockerd's.
#[test]
fn the_docker_cli_drives_berth() {
    if !(have_docker()) {
        return;
    }
    let b = Berth::new();
    b.import_busybox("busybox");
    let s = Service::start(&b, &[]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&s.sock).unwrap().permissions().mode() & 0o777,
        0o660,
        "docker.sock's mode"
    );
    let v = ok(docker(
        &b,
        &s,
        &[
            "version",
            "--format",
            "{{.Server.Platform.Name}} {{.Server.APIVersion}}",
        ],
    ));
    assert_eq!(v.trim(), "berth 1.47");
    let images = ok(docker(
        &b,
        &s,
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    ));
    assert_eq!(images.trim(), "busybox:latest");
    // Attached runs: output, exit codes, --rm.
    assert_eq!(
        ok(docker(
            &b,
            &s,
            &[
                "run",
                "--rm",
                "busybox",
                "echo",
                "hello from the docker CLI"
            ]
        )),
        "hello from the docker CLI\n"
    );
    let o = docker(
        &b,
        &s,
        &[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (3, "out\n", "err\n")
    );
    let o = docker(&b, &s, &["run", "--rm", "busybox", "/nonexistent"]);
    assert_eq!(o.code, 127, "{}", o.stderr);
    // Detached: ps, logs, top, stop, rm — and berth's CLI sees the same.
    let id = ok(docker(
        &b,
        &s,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-e",
            "GREETING=hi",
            "busybox",
            "sh",
            "-c",
            "echo $GREETING; sleep 300",
        ],
    ));
    let id = id.trim();
    assert_eq!(id.len(), 64);
    let ps = ok(docker(
        &b,
        &s,
        &["ps", "--format", "{{.Names}} {{.Status}}"],
    ));
    assert!(ps.starts_with("web Up"), "{ps}");
    assert!(b.run(&["ps"]).ok().contains("web"), "the berth CLI sees it");
    for _ in 0..50 {
        if ok(docker(&b, &s, &["logs", "web"])) == "hi\n" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(ok(docker(&b, &s, &["logs", "web"])), "hi\n");
    assert!(ok(docker(&b, &s, &["top", "web"])).contains("sleep 300"));
    assert_eq!(
        ok(docker(
            &b,
            &s,
            &["inspect", "--format", "{{.State.Running}} {{.Name}}", "web"]
        ))
        .trim(),
        "true /web"
    );
    let o = docker(&b, &s, &["run", "-d", "--name", "web", "busybox", "true"]);
    assert_eq!(o.code, 125);
    assert!(
        o.stderr.contains("is already in use by container"),
        "{}",
        o.stderr
    );
    ok(docker(&b, &s, &["stop", "-t", "1", "web"]));
    let ps = ok(docker(
        &b,
        &s,
        &["ps", "-a", "--format", "{{.Names}} {{.Status}}"],
    ));
    assert!(
        ps.contains("web Exited (137)") || ps.contains("web Exited (143)"),
        "{ps}"
    );
    ok(docker(&b, &s, &["rm", "web"]));
    // A container berth's CLI made is docker's to see.
    b.run(&[
        "run",
        "-d",
        "--name",
        "fromberth",
        "busybox",
        "sleep",
        "300",
    ])
    .ok();
    let ps = ok(docker(&b, &s, &["ps", "--format", "{{.Names}}"]));
    assert_eq!(ps.trim(), "fromberth");
    ok(docker(&b, &s, &["rm", "-f", "fromberth"]));
    assert_eq!(b.run(&["ps", "-aq"]).ok(), "");
    // Errors, as dockerd words them.
    let o = docker(&b, &s, &["inspect", "--type", "container", "nosuch"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("No such container: nosuch"),
        "{}",
        o.stderr
    );
    let o = docker(&b, &s, &["rm", "nosuch"]);
    assert!(
        o.stderr.contains("No such container: nosuch"),
        "{}",
        o.stderr
    );
    // Images, volumes, networks.
    ok(docker(&b, &s, &["tag", "busybox", "mybox:1"]));
    assert!(ok(docker(&b, &s, &["images"])).contains("mybox"));
    assert!(ok(docker(&b, &s, &["rmi", "mybox:1"])).contains("Untagged: mybox:1"));
    assert!(ok(docker(&b, &s, &["image", "history", "busybox"])).contains("Imported from"));
    ok(docker(&b, &s, &["volume", "create", "data"]));
    assert_eq!(
        ok(docker(
            &b,
            &s,
            &[
                "run",
                "--rm",
                "-v",
                "data:/data",
                "busybox",
                "sh",
                "-c",
                "echo kept > /data/f; cat /data/f"
            ]
        )),
        "kept\n"
    );
    assert_eq!(
        ok(docker(
            &b,
            &s,
            &[
                "run",
                "--rm",
                "-v",
                "data:/data",
                "busybox",
                "cat",
                "/data/f"
            ]
        )),
        "kept\n"
    );
    assert!(ok(docker(&b, &s, &["volume", "ls"])).contains("data"));
    // Filters and labels through the API.
    ok(docker(
        &b,
        &s,
        &["volume", "create", "--label", "k=v", "labelled"],
    ));
    assert_eq!(
        ok(docker(&b, &s, &["volume", "ls", "-q", "-f", "label=k=v"])),
        "labelled\n"
    );
    assert_eq!(
        ok(docker(
            &b,
            &s,
            &["network", "ls", "-q", "-f", "type=custom"]
        )),
        ""
    );
    ok(docker(&b, &s, &["volume", "rm", "data", "labelled"]));
    let nets = ok(docker(&b, &s, &["network", "ls", "--format", "{{.Name}}"]));
    assert!(nets.contains("bridge") && nets.contains("none"), "{nets}");
    let info = ok(docker(
        &b,
        &s,
        &["info", "--format", "{{.Images}} {{.Driver}}"],
    ));
    assert!(info.starts_with("1 "), "{info}");
    // The docker CLI's df (from `GET /system/df`) and berth's agree: one
    // accounting in the engine, layers counted once, each container's
    // writable layer, each volume's references.
    let fmt = "{{.Type}} {{.TotalCount}} {{.Active}} {{.Size}}";
    let theirs = ok(docker(&b, &s, &["system", "df", "--format", fmt]));
    let ours = b.run(&["system", "df", "--format", fmt]).ok();
    let first3 = |t: &str| t.lines().take(3).collect::<Vec<_>>().join("\n");
    assert_eq!(first3(&theirs), first3(&ours));
    ok(docker(&b, &s, &["container", "prune", "-f"]));
}

/// Bad requests get dockerd's status and message, never a hang or a crash.
#[test]
fn bad_requests_get_dockerd_s_answers() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let s = Service::start(&b, &[]);
    let (st, body) = curl(&s, "POST", "/v1.47/containers/create", Some("{not json"));
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("\"message\""), "{body}");
    let (st, body) = curl(
        &s,
        "POST",
        "/v1.47/containers/create",
        Some(r#"{"Image":"nosuch:1"}"#),
    );
    assert_eq!(
        (st, body.trim()),
        (404, r#"{"message":"No such image: nosuch:1"}"#)
    );
    let (st, body) = curl(&s, "GET", "/v1.47/containers/nosuch/json", None);
    assert_eq!(
        (st, body.trim()),
        (404, r#"{"message":"No such container: nosuch"}"#)
    );
    let (st, body) = curl(&s, "GET", "/v9.99/_ping", None);
    assert_eq!(st, 400);
    assert!(body.contains("client version 9.99 is too new"), "{body}");
    let (st, _) = curl(&s, "GET", "/v1.47/nosuch", None);
    assert_eq!(st, 404);
    // Starting a running container is 304; stopping a stopped one too.
    let (st, body) = curl(
        &s,
        "POST",
        "/containers/create?name=c1",
        Some(r#"{"Image":"busybox","Cmd":["sleep","300"]}"#),
    );
    assert_eq!(st, 201, "{body}");
    assert_eq!(curl(&s, "POST", "/containers/c1/start", None).0, 204);
    assert_eq!(curl(&s, "POST", "/containers/c1/start", None).0, 304);
    let (st, body) = curl(
        &s,
        "POST",
        "/containers/create?name=c1",
        Some(r#"{"Image":"busybox"}"#),
    );
    assert_eq!(st, 409, "{body}");
    let (st, body) = curl(&s, "DELETE", "/containers/c1", None);
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("container is running"), "{body}");
    assert_eq!(curl(&s, "POST", "/containers/c1/stop?t=1", None).0, 204);
    assert_eq!(curl(&s, "POST", "/containers/c1/stop", None).0, 304);
    assert_eq!(curl(&s, "DELETE", "/containers/c1", None).0, 204);
    // A client that goes away mid-stream: the container keeps running.
    let (st, _) = curl(
        &s,
        "POST",
        "/containers/create?name=c2",
        Some(
            r#"{"Image":"busybox","Cmd":["sh","-c","while true; do echo tick; sleep 0.1; done"]}"#,
        ),
    );
    assert_eq!(st, 201);
    assert_eq!(curl(&s, "POST", "/containers/c2/start", None).0, 204);
    let _ = Command::new("curl")
        .args(["-s", "--max-time", "1", "--unix-socket"])
        .arg(&s.sock)
        .arg("http://localhost/containers/c2/logs?follow=1&stdout=1")
        .output();
    let (st, body) = curl(&s, "GET", "/containers/c2/json", None);
    assert_eq!(st, 200);
    assert!(body.contains("\"Running\":true"), "{body}");
    assert_eq!(curl(&s, "DELETE", "/containers/c2?force=1", None).0, 204);
}

/// The service exits after `--time` idle seconds; its containers go on.
#[test]
fn an_idle_service_exits_and_its_containers_keep_running() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let mut s = Service::start(&b, &["--time", "1"]);
    ok(docker(
        &b,
        &s,
        &["run", "-d", "--name", "lives", "busybox", "sleep", "300"],
    ));
    let start = std::time::Instant::now();
    let mut exited = false;
    while start.elapsed() < std::time::Duration::from_secs(20) {
        if s.child.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(exited, "the service outlived --time");
    assert!(!s.sock.exists(), "its socket is gone");
    let ps = b.run(&["ps", "--format", "{{.Names}} {{.State}}"]).ok();
    assert_eq!(ps.trim(), "lives running");
    b.run(&["rm", "-f", "lives"]).ok();
}

/// docker-py (the Python SDK) through the service.
#[test]
fn docker_py_drives_berth() {
    if !(have_python("docker")) {
        return;
    }
    let b = Berth::new();
    b.import_busybox("busybox");
    let s = Service::start(&b, &[]);
    let script = r#"
import docker, sys
c = docker.DockerClient(base_url=sys.argv[1])
assert c.ping()
print(c.version()["Platform"]["Name"])
print([t for i in c.images.list() for t in i.tags])
print(c.containers.run("busybox", ["echo", "hi from python"], remove=True).decode().strip())
ctr = c.containers.run("busybox", ["sh", "-c", "echo started; sleep 300"], detach=True, name="py")
import time
for _ in range(50):
    if b"started" in ctr.logs():
        break
    time.sleep(0.1)
print(ctr.logs().decode().strip())
ctr.reload()
print(ctr.status)
ctr.stop(timeout=1)
print(ctr.wait()["StatusCode"])
ctr.remove()
box = c.containers.run("busybox", ["sleep", "300"], detach=True)
r = box.exec_run(["sh", "-c", "echo exec; exit 2"])
print(r.exit_code, r.output.decode().strip())
import io, tarfile
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    data = b"put by python\n"
    info = tarfile.TarInfo("put.txt"); info.size = len(data)
    t.addfile(info, io.BytesIO(data))
print(box.put_archive("/tmp", buf.getvalue()))
stream, stat = box.get_archive("/tmp/put.txt")
raw = b"".join(stream)
with tarfile.open(fileobj=io.BytesIO(raw)) as t:
    print(stat["name"], t.extractfile("put.txt").read().decode().strip())
box.remove(force=True)
img, logs = c.images.build(path=sys.argv[2], tag="pybuilt")
print(img.tags)
v = c.volumes.create("pyvol")
print(v.name, [x.name for x in c.volumes.list()])
v.remove()
print(sorted(n.name for n in c.networks.list()))
print(len(c.containers.list(all=True)))
src = c.containers.run("busybox", ["sh", "-c", "echo kept > /kept"], detach=True)
src.wait()
img = src.commit("pycommit", "v1", conf={"Cmd": ["cat", "/kept"], "Labels": {"by": "py"}})
src.remove()
print(c.containers.run(img.id, remove=True).decode().strip(), img.labels)
data = b"".join(c.images.get("pycommit:v1").save())
c.images.remove("pycommit:v1")
print([i.tags for i in c.images.load(data)])
"#;
    let ctx = b.path("pyctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN echo py > /py\n").unwrap();
    let out = Command::new("python3")
        .args(["-c", script, &s.host(), ctx.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "docker-py (pip install docker; .ci/run installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "berth");
    assert_eq!(lines[1], "['busybox:latest']");
    assert_eq!(lines[2], "hi from python");
    assert_eq!(lines[3], "started");
    assert_eq!(lines[4], "running");
    assert!(lines[5] == "137" || lines[5] == "143", "{text}");
    assert_eq!(lines[6], "2 exec");
    assert_eq!(lines[7], "True");
    assert_eq!(lines[8], "put.txt put by python");
    assert_eq!(lines[9], "['pybuilt:latest']");
    assert_eq!(lines[10], "pyvol ['pyvol']");
    assert_eq!(lines[11], "['bridge', 'host', 'none']");
    assert_eq!(lines[12], "0");
    assert_eq!(lines[13], "kept {'by': 'py'}");
    assert_eq!(lines[14], "[['pycommit:v1']]");

    // attach (a stream of what the container writes from then on), and
    // login, push and pull with auth against `berth registry serve`.
    let t = tempfile::tempdir().unwrap();
    let storage = t.path().join("reg");
    let reg = common::RegistryServer::start(&storage, &[]);
    b.run_stdin(
        &[
            "registry",
            "user",
            "add",
            "--storage",
            storage.to_str().unwrap(),
            "--password-stdin",
            "pyuser",
        ],
        b"py password\n",
    )
    .ok();
    let script = r#"
import docker, sys
c = docker.DockerClient(base_url=sys.argv[1])
addr = sys.argv[2]
ctr = c.containers.run("busybox", ["sh", "-c", "sleep 0.5; echo attached-line; sleep 0.3"], detach=True)
print(b"".join(ctr.attach(stream=True, stdout=True, stderr=True, logs=False)).decode().strip())
ctr.wait(); ctr.remove()
print(c.login(username="pyuser", password="py password", registry=addr)["Status"])
img = c.images.get("busybox")
img.tag(addr + "/pyuser/box", "1")
out = c.images.push(addr + "/pyuser/box", tag="1", stream=True, decode=True)
print(any("digest" in (l.get("aux") or {}) or "digest:" in l.get("status", "") for l in out))
c.images.remove(addr + "/pyuser/box:1")
print(c.images.pull(addr + "/pyuser/box", tag="1").tags)
"#;
    let out = Command::new("python3")
        .args(["-c", script, &s.host(), &reg.addr])
        .env("DOCKER_CONFIG", b.path("docker-py-config"))
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "attached-line", "{text}");
    assert_eq!(lines[1], "Login Succeeded", "{text}");
    assert_eq!(lines[2], "True", "{text}");
    // The pulled image is busybox's: one image, both names (as dockerd).
    assert!(
        lines[3].contains(&format!("'{}/pyuser/box:1'", reg.addr)),
        "{text}"
    );
}

/// `docker exec`, `docker cp` both ways (a running and a stopped
/// container) and `docker build` through the service.
#[test]
fn docker_cli_exec_cp_and_build() {
    if !(have_docker()) {
        return;
    }
    let b = Berth::new();
    b.import_busybox("busybox");
    let s = Service::start(&b, &[]);
    ok(docker(
        &b,
        &s,
        &[
            "run",
            "-d",
            "--name",
            "box",
            "busybox",
            "sh",
            "-c",
            "mkdir -p /data/sub && echo inside > /data/sub/f && sleep 300",
        ],
    ));
    assert_eq!(
        ok(docker(&b, &s, &["exec", "box", "echo", "hi from exec"])),
        "hi from exec\n"
    );
    let o = docker(&b, &s, &["exec", "box", "sh", "-c", "echo e >&2; exit 5"]);
    assert_eq!((o.code, o.stderr.as_str()), (5, "e\n"));
    let o = docker(&b, &s, &["exec", "box", "nosuchcmd"]);
    assert_eq!(o.code, 127, "{}", o.stderr);
    // stdin through the hijacked connection.
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo piped | timeout -s KILL 30 {} exec -i box cat",
                docker_bin()
            ),
        ])
        .env("DOCKER_HOST", s.host())
        .env("DOCKER_CONFIG", b.path("docker-cli-config"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped\n");
    ok(docker(
        &b,
        &s,
        &["exec", "-d", "box", "touch", "/tmp/detached"],
    ));
    for _ in 0..50 {
        if docker(&b, &s, &["exec", "box", "test", "-e", "/tmp/detached"]).code == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    ok(docker(
        &b,
        &s,
        &["exec", "box", "test", "-e", "/tmp/detached"],
    ));
    // cp out and in, and out of a stopped container.
    let out = b.path("cpout");
    std::fs::create_dir_all(&out).unwrap();
    ok(docker(&b, &s, &["cp", "box:/data", out.to_str().unwrap()]));
    assert_eq!(
        std::fs::read_to_string(out.join("data/sub/f")).unwrap(),
        "inside\n"
    );
    std::fs::write(b.path("hostfile"), "from the host\n").unwrap();
    ok(docker(
        &b,
        &s,
        &["cp", b.path("hostfile").to_str().unwrap(), "box:/data/"],
    ));
    assert_eq!(
        ok(docker(&b, &s, &["exec", "box", "cat", "/data/hostfile"])),
        "from the host\n"
    );
    let o = docker(&b, &s, &["cp", "box:/nonexistent", out.to_str().unwrap()]);
    assert_ne!(o.code, 0);
    // dockerd's 404 for the path: docker 20.10's CLI words it "No such
    // container:path", newer ones pass dockerd's message on.
    assert!(
        o.stderr
            .contains("No such container:path: box:/nonexistent")
            || o.stderr
                .contains("Could not find the file /nonexistent in container box"),
        "{}",
        o.stderr
    );
    ok(docker(&b, &s, &["stop", "-t", "1", "box"]));
    ok(docker(
        &b,
        &s,
        &[
            "cp",
            "box:/data/hostfile",
            out.join("again").to_str().unwrap(),
        ],
    ));
    assert_eq!(
        std::fs::read_to_string(out.join("again")).unwrap(),
        "from the host\n"
    );
    ok(docker(&b, &s, &["rm", "box"]));
    // build: the context as a tar, docker's stream back.
    let ctx = b.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello from the context\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY hello.txt /hello.txt\nRUN echo built > /built\nCMD [\"cat\", \"/hello.txt\", \"/built\"]\n",
    )
    .unwrap();
    let mut c = Command::new("timeout");
    c.args(["-s", "KILL", "120", docker_bin(), "build", "-t", "apibuilt"])
        .arg(&ctx)
        .env("DOCKER_HOST", s.host())
        .env("DOCKER_BUILDKIT", "0")
        .env("DOCKER_CONFIG", b.path("docker-cli-config"));
    let o = c.output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.contains("Successfully tagged apibuilt:latest"),
        "{text}"
    );
    assert_eq!(
        ok(docker(&b, &s, &["run", "--rm", "apibuilt"])),
        "hello from the context\nbuilt\n"
    );
    assert!(b.run(&["images"]).ok().contains("apibuilt"), "one store");
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN exit 3\n").unwrap();
    let o = c.output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("did not complete successfully: exit code: 3"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `docker run -i` and `docker run -it` (under a real terminal, from
/// util-linux's `script`): input reaches the container, output and the exit
/// code come back, as with dockerd.
#[test]
fn interactive_runs_through_the_service() {
    if !(have_docker()) {
        return;
    }
    let b = Berth::new();
    b.import_busybox("busybox");
    let s = Service::start(&b, &[]);
    let sh = |script: &str| {
        let o = Command::new("sh")
            .args(["-c", script])
            .env("DOCKER_HOST", s.host())
            .env("DOCKER_CONFIG", b.path("docker-cli-config"))
            .env("D", docker_bin())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).replace('\r', ""),
        )
    };
    let (code, out) = sh(
        "echo 'piped in' | timeout -s KILL 30 \"$D\" run -i --rm busybox sh -c 'cat; echo done; exit 6'",
    );
    assert_eq!((code, out.as_str()), (6, "piped in\ndone\n"));
    let (code, out) = sh(
        "timeout -s KILL 30 script -qec \"$D run -it --rm busybox sh -c 'tty; echo inside'\" /dev/null",
    );
    assert_eq!(code, 0, "{out}");
    // (script may pass its own end of input on as a ^@ the terminal echoes.)
    assert!(
        out.contains("/dev/pts/0\n") && out.contains("inside\n"),
        "{out}"
    );
    // Typed at the container's shell prompt; its exit code comes back.
    let (code, out) = sh(
        "(sleep 1; printf 'echo typed-in\\n'; sleep 1; printf 'exit 4\\n'; sleep 1) | \
         timeout -s KILL 30 script -qec \"$D run -it --rm busybox sh\" /dev/null",
    );
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("echo typed-in\ntyped-in\n"), "{out}");
    let (code, out) = sh("timeout -s KILL 30 \"$D\" run -i --rm busybox /nonexistent 2>&1");
    assert_eq!(code, 127, "{out}");
    assert_eq!(b.run(&["ps", "-aq"]).ok(), "", "--rm containers are gone");
}

/// Docker Compose (Debian's docker-compose 1.29) through the service, in a
/// network namespace of the test's own: a web service with a published
/// port and a worker that reaches it by service name on the project
/// network, a named volume, an env file, depends_on; up, ps, logs, exec,
/// down -v leave nothing behind.
#[test]
fn docker_compose_brings_a_project_up_and_down() {
    if !(have_docker() && common::have("docker-compose", "docker-compose")) {
        return;
    }
    let b = Berth::with_netns();
    b.import_busybox("busybox");
    let s = Service::start(&b, &[]);
    let proj = b.path("proj");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(
        proj.join("docker-compose.yml"),
        r#"version: "2.4"
services:
  web:
    image: busybox
    command: sh -c 'sleep 1; mkdir -p /www && echo "hello from web $$GREETING" > /www/index.html && httpd -f -p 80 -h /www'
    env_file: web.env
    ports:
      - "18080:80"
    healthcheck:
      test: ["CMD", "wget", "-qO-", "http://127.0.0.1/"]
      interval: 200ms
      retries: 50
  worker:
    image: busybox
    command: sh -c 'wget -qO- http://web/ > /data/got; cat /data/got; sleep 300'
    depends_on:
      web:
        condition: service_healthy
    volumes:
      - data:/data
volumes:
  data:
"#,
    )
    .unwrap();
    std::fs::write(proj.join("web.env"), "GREETING=compose\n").unwrap();
    let compose = |args: &[&str]| {
        let o = Command::new("timeout")
            .args(["-s", "KILL", "120", "docker-compose", "--ansi", "never"])
            .args(args)
            .current_dir(&proj)
            .env("DOCKER_HOST", s.host())
            .env("COMPOSE_PROJECT_NAME", "proj")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (code, out) = compose(&["up", "-d"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = compose(&["ps"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("proj_web_1") && out.contains("proj_worker_1"),
        "{out}"
    );
    assert!(out.contains("18080->80/tcp"), "{out}");
    // `condition: service_healthy`: the worker started once web's
    // healthcheck passed, so its single fetch worked.
    assert!(out.contains("Up (healthy)"), "{out}");
    let mut logs = String::new();
    for _ in 0..60 {
        logs = compose(&["logs", "worker"]).1;
        if logs.contains("hello from web compose") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(logs.contains("hello from web compose"), "{logs}");
    // The published port, from the namespace's host side.
    let ns = b.netns.as_ref().unwrap();
    let (ok_, page) = ns
        .sh("wget -qO- http://127.0.0.1:18080/ 2>&1 || busybox wget -qO- http://127.0.0.1:18080/");
    assert!(ok_ && page.contains("hello from web compose"), "{page}");
    let (code, out) = compose(&["exec", "-T", "worker", "cat", "/data/got"]);
    assert_eq!((code, out.trim()), (0, "hello from web compose"));
    let (code, out) = compose(&["down", "-v", "-t", "1"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(b.run(&["ps", "-aq"]).ok(), "", "no containers left");
    assert!(
        !b.run(&["volume", "ls"]).ok().contains("proj_data"),
        "no volume left"
    );
    assert!(
        !b.run(&["network", "ls"]).ok().contains("proj_default"),
        "no network left"
    );
}

/// Socket activation as contrib/systemd/berth.socket does it (systemd's
/// own `systemd-socket-activate` holds the socket and starts the service
/// on the first connection with LISTEN_FDS): the first request is
/// answered, and the service leaves after `--time` idle seconds.
#[test]
fn socket_activation_starts_the_service_on_demand() {
    if Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-socket-activate (Debian's systemd) is not installed");
        return;
    }
    let b = Berth::new();
    b.import_busybox("busybox");
    let sock = b.path("activated.sock");
    let mut holder = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .arg(berth_bin())
        // (systemd-socket-activate passes no environment on.)
        .arg("--root")
        .arg(b.root())
        .args(["system", "service", "fd://", "--time", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let s = Service {
        child: Command::new("true").spawn().unwrap(),
        sock: sock.clone(),
    };
    assert_eq!(curl(&s, "GET", "/_ping", None), (200, "OK".to_string()));
    let (st, body) = curl(&s, "GET", "/v1.41/images/json", None);
    assert_eq!(st, 200);
    assert!(body.contains("busybox:latest"), "{body}");
    // The activated service exits when idle, and so does the holder
    // (it execs the service: one process).
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(20) {
        if holder.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = holder.kill();
    let _ = holder.wait();
    panic!("the activated service did not exit when idle");
}

/// `docker stats --no-stream`, and `docker login`, `push` and `pull`
/// against `berth registry serve` through the service (the credentials go
/// as dockerd takes them, in X-Registry-Auth).
#[test]
fn docker_cli_stats_login_push_pull() {
    if !(have_docker()) {
        return;
    }
    let b = Berth::new();
    b.import_busybox("busybox");
    let s = Service::start(&b, &[]);
    ok(docker(
        &b,
        &s,
        &[
            "run", "-d", "--name", "busy", "-m", "64m", "busybox", "sleep", "300",
        ],
    ));
    let st = ok(docker(
        &b,
        &s,
        &[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.MemUsage}} {{.PIDs}}",
            "busy",
        ],
    ));
    assert!(
        st.starts_with("busy ") && st.contains("/ 64MiB") && st.trim().ends_with(" 1"),
        "{st}"
    );
    ok(docker(&b, &s, &["rm", "-f", "busy"]));
    let t = tempfile::tempdir().unwrap();
    let storage = t.path().join("reg");
    let reg = common::RegistryServer::start(&storage, &[]);
    b.run_stdin(
        &[
            "registry",
            "user",
            "add",
            "--storage",
            storage.to_str().unwrap(),
            "--password-stdin",
            "alice",
        ],
        b"correct horse\n",
    )
    .ok();
    let o = docker(
        &b,
        &s,
        &["login", "-u", "alice", "-p", "wrong password", &reg.addr],
    );
    assert_ne!(o.code, 0, "a wrong password logs in: {}", o.stdout);
    let o = docker(
        &b,
        &s,
        &["login", "-u", "alice", "-p", "correct horse", &reg.addr],
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("Login Succeeded"), "{}", o.stdout);
    let target = format!("{}/alice/box:1", reg.addr);
    ok(docker(&b, &s, &["tag", "busybox", &target]));
    let out = ok(docker(&b, &s, &["push", &target]));
    assert!(out.contains("digest: sha256:"), "{out}");
    // docker search through the service reaches the registry's /v1/search;
    // a private repository is not shown to an anonymous search.
    let found = ok(docker(
        &b,
        &s,
        &[
            "search",
            "--format",
            "{{.Name}}",
            &format!("{}/box", reg.addr),
        ],
    ));
    assert_eq!(found, "", "{found}");
    ok(docker(&b, &s, &["rmi", &target]));
    let out = ok(docker(&b, &s, &["pull", &target]));
    assert!(out.contains("Digest: sha256:"), "{out}");
    assert_eq!(
        ok(docker(&b, &s, &["run", "--rm", &target, "echo", "pulled"])),
        "pulled\n"
    );
    // Without the credentials, the private repository is refused.
    ok(docker(&b, &s, &["logout", &reg.addr]));
    ok(docker(&b, &s, &["rmi", &target]));
    let o = docker(&b, &s, &["pull", &target]);
    assert_ne!(o.code, 0, "{}", o.stdout);
}

/// `docker events`: what the berth CLI, the service's helpers and the
/// containers' monitors record in the store, streamed as dockerd streams
/// it (with `since`/`until` and filters).
#[test]
fn docker_events_show_what_happened() {
    if !(have_docker()) {
        return;
    }
    let b = Berth::new();
    b.import_busybox("busybox");
    let s = Service::start(&b, &[]);
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    ok(docker(
        &b,
        &s,
        &["run", "--rm", "--name", "ev", "busybox", "true"],
    ));
    b.run(&["volume", "create", "evvol"]).ok();
    ok(docker(
        &b,
        &s,
        &[
            "run",
            "-d",
            "--name",
            "evh",
            "--health-cmd",
            "true",
            "--health-interval",
            "100ms",
            "busybox",
            "sleep",
            "300",
        ],
    ));
    for _ in 0..100 {
        if b.run(&["ps", "--filter", "health=healthy", "-q"])
            .ok()
            .trim()
            .len()
            == 12
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = ok(docker(
        &b,
        &s,
        &[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 1)
            .to_string(),
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
        ],
    ));
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        "container create ev",
        "container start ev",
        "container die ev",
        "container destroy ev",
        "volume create ",
        "container health_status: healthy evh",
    ] {
        assert!(lines.iter().any(|l| l.starts_with(want)), "{want}: {out}");
    }
    let pos = |w: &str| lines.iter().position(|l| l.starts_with(w)).unwrap();
    assert!(pos("container create ev") < pos("container start ev"));
    assert!(pos("container start ev") < pos("container die ev"));
    assert!(pos("container die ev") < pos("container destroy ev"));
    let out = ok(docker(
        &b,
        &s,
        &[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 1)
            .to_string(),
            "--filter",
            "type=volume",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.ID}}",
        ],
    ));
    assert_eq!(out.trim(), "volume create evvol");
    ok(docker(&b, &s, &["rm", "-f", "evh"]));
}

/// testcontainers-python (PyPI) starts a container through the service,
/// waits for a log line, and removes it (Ryuk, its reaper image from
/// Docker Hub, is off: no network here).
#[test]
fn testcontainers_waits_for_a_log_line() {
    if !(have_python("testcontainers")) {
        return;
    }
    let b = Berth::new();
    b.import_busybox("busybox");
    let s = Service::start(&b, &[]);
    let script = r#"
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy
c = DockerContainer("busybox").with_command(["sh", "-c", "echo booting; sleep 1; echo ready to serve; sleep 300"])
c.waiting_for(LogMessageWaitStrategy("ready to serve"))
with c:
    w = c.get_wrapped_container()
    w.reload()
    print(w.status)
    print(c.get_logs()[0].decode().strip().replace("\n", "|"))
"#;
    let out = Command::new("timeout")
        .args(["-s", "KILL", "90", "python3", "-c", script])
        .env("DOCKER_HOST", s.host())
        .env("TESTCONTAINERS_RYUK_DISABLED", "true")
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "testcontainers (pip install testcontainers; .ci/run installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "running\nbooting|ready to serve\n"
    );
    assert_eq!(b.run(&["ps", "-aq"]).ok(), "", "it removed its container");
}

/// `docker diff`, `commit`, `export`, `save` and `load` through the
/// service, checked the way a user would: the committed image runs with the
/// change, the export holds the container's file, the saved archive loads
/// back (into a second berth store, through its own service) and runs.
#[test]
fn docker_cli_diff_commit_export_save_load() {
    if !(have_docker()) {
        return;
    }
    let b = Berth::new();
    b.import_busybox("busybox");
    let s = Service::start(&b, &[]);
    ok(docker(
        &b,
        &s,
        &[
            "run",
            "--name",
            "dc",
            "busybox",
            "sh",
            "-c",
            "echo hi > /made && rm /bin/true && mkdir -p /etc/x",
        ],
    ));
    // docker diff: A added, C changed, D deleted (dockerd's letters).
    let diff = ok(docker(&b, &s, &["diff", "dc"]));
    let lines: Vec<&str> = diff.lines().collect();
    for want in ["A /made", "D /bin/true", "C /etc", "A /etc/x"] {
        assert!(lines.contains(&want), "{want}: {diff}");
    }
    let (code, body) = curl(&s, "GET", "/containers/nope/changes", None);
    assert_eq!(code, 404, "{body}");

    // commit with --change and a message; the image runs with the new CMD.
    let id = ok(docker(
        &b,
        &s,
        &[
            "commit",
            "-m",
            "made a file",
            "-a",
            "tester",
            "--change",
            "CMD [\"cat\", \"/made\"]",
            "--change",
            "ENV GREETING=hello",
            "dc",
            "committed:v1",
        ],
    ));
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let out = ok(docker(&b, &s, &["run", "--rm", "committed:v1"]));
    assert_eq!(out, "hi\n");
    let out = ok(docker(
        &b,
        &s,
        &["run", "--rm", "committed:v1", "sh", "-c", "echo $GREETING"],
    ));
    assert_eq!(out, "hello\n");
    let out = ok(docker(
        &b,
        &s,
        &[
            "image",
            "inspect",
            "-f",
            "{{.Author}}|{{.Comment}}",
            "committed:v1",
        ],
    ));
    assert_eq!(out.trim(), "tester|made a file");
    let bad = docker(&b, &s, &["commit", "--change", "FROM x", "dc", "bad:1"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("FROM"), "{}", bad.stderr);
    let missing = docker(&b, &s, &["commit", "nope", "x:1"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("No such container: nope"),
        "{}",
        missing.stderr
    );

    // export: a tar of the whole filesystem, the container's file included.
    let tar = b.path("dc.tar");
    ok(docker(
        &b,
        &s,
        &["export", "-o", tar.to_str().unwrap(), "dc"],
    ));
    let list = Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .expect("tar");
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(names.lines().any(|l| l == "made"), "export lacks /made");
    assert!(
        names.lines().any(|l| l == "bin/busybox"),
        "export lacks busybox"
    );
    assert!(
        !names.lines().any(|l| l == "bin/true"),
        "export has a deleted file"
    );

    // save through the API, load into another store through its service.
    let saved = b.path("saved.tar");
    ok(docker(
        &b,
        &s,
        &["save", "-o", saved.to_str().unwrap(), "committed:v1"],
    ));
    let nowhere = b.path("nope.tar");
    let missing = docker(&b, &s, &["save", "-o", nowhere.to_str().unwrap(), "nope:1"]);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("No such image"),
        "{}",
        missing.stderr
    );
    let b2 = Berth::new();
    let s2 = Service::start(&b2, &[]);
    let out = ok(docker(&b2, &s2, &["load", "-i", saved.to_str().unwrap()]));
    assert_eq!(out.trim(), "Loaded image: committed:v1");
    let out = ok(docker(&b2, &s2, &["run", "--rm", "committed:v1"]));
    assert_eq!(out, "hi\n");
    // A broken archive is refused and leaves nothing behind.
    std::fs::write(b2.path("junk.tar"), b"not a tar at all").unwrap();
    let bad = docker(
        &b2,
        &s2,
        &["load", "-i", b2.path("junk.tar").to_str().unwrap()],
    );
    assert_ne!(bad.code, 0, "{}", bad.stdout);
    let images = ok(docker(&b2, &s2, &["images", "-q"]));
    assert_eq!(images.lines().count(), 1, "{images}");
    // The image events were recorded.
    let ev = ok(docker(
        &b,
        &s,
        &[
            "events",
            "--since",
            "0",
            "--until",
            &(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 1)
            .to_string(),
            "--format",
            "{{.Type}} {{.Action}}",
        ],
    ));
    for want in ["container commit", "image save"] {
        assert!(ev.lines().any(|l| l == want), "{want}: {ev}");
    }
}

/// `docker update` through the service: the running container's cgroup
/// gets the new limits, inspect shows them and the restart policy, and
/// dockerd's refusal comes back as its words.
#[test]
fn docker_update_changes_limits() {
    if !(have_docker()) {
        return;
    }
    let b = Berth::new();
    b.import_busybox("busybox");
    let s = Service::start(&b, &[]);
    ok(docker(
        &b,
        &s,
        &["run", "-d", "--name", "du", "busybox", "sleep", "300"],
    ));
    let out = ok(docker(
        &b,
        &s,
        &[
            "update",
            "--memory",
            "48m",
            "--memory-swap",
            "96m",
            "--pids-limit",
            "40",
            "--cpus",
            "0.25",
            "--restart",
            "unless-stopped",
            "du",
        ],
    ));
    assert_eq!(out.trim(), "du");
    let cg = ok(docker(
        &b,
        &s,
        &[
            "exec",
            "du",
            "cat",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/pids/pids.max",
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        ],
    ));
    assert_eq!(cg, "50331648\n40\n25000\n");
    let f = ok(docker(
        &b,
        &s,
        &[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}}",
            "du",
        ],
    ));
    assert_eq!(f.trim(), "50331648 40 unless-stopped");
    let o = docker(&b, &s, &["update", "--memory", "2m", "du"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("Minimum memory limit allowed is 6MB"),
        "{}",
        o.stderr
    );
    ok(docker(&b, &s, &["rm", "-f", "du"]));
}

/// The rest of the lecture's flow through the docker CLI: `logs -f`
/// follows until the container stops, `exec -it` under a real terminal,
/// `system prune -f` removes what is stopped, and an attach to a stopped
/// container gets dockerd's answer, never a hang.
#[test]
fn docker_cli_follow_exec_it_and_prune() {
    if !have_docker() {
        return;
    }
    let b = Berth::new();
    b.import_busybox("busybox");
    let s = Service::start(&b, &[]);
    ok(docker(
        &b,
        &s,
        &[
            "run",
            "-d",
            "--name",
            "lf",
            "busybox",
            "sh",
            "-c",
            "echo one; sleep 0.5; echo two",
        ],
    ));
    assert_eq!(ok(docker(&b, &s, &["logs", "-f", "lf"])), "one\ntwo\n");
    ok(docker(
        &b,
        &s,
        &["run", "-d", "--name", "ex", "busybox", "sleep", "300"],
    ));
    let o = Command::new("timeout")
        .args(["-s", "KILL", "30", "script", "-qec"])
        .arg(format!(
            "{} exec -it ex sh -c 'tty; echo in-exec'",
            docker_bin()
        ))
        .arg("/dev/null")
        .env("DOCKER_HOST", s.host())
        .env("DOCKER_CONFIG", b.path("docker-cli-config"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).replace('\r', "");
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("/dev/pts/") && out.contains("in-exec\n"),
        "{out}"
    );
    // dockerd upgrades an attach to a stopped container and closes it at
    // once (the CLI refuses before asking): an answer, not a hang.
    let (code, body) = curl(&s, "POST", "/containers/lf/attach?stream=1&stdout=1", None);
    assert_eq!(code, 101, "{body}");
    let out = ok(docker(&b, &s, &["system", "prune", "-f"]));
    assert!(out.contains("Total reclaimed space"), "{out}");
    let left = ok(docker(&b, &s, &["ps", "-a", "--format", "{{.Names}}"]));
    assert_eq!(left, "ex\n");
    ok(docker(&b, &s, &["rm", "-f", "ex"]));
}

/// `berth -H HOST` (and `BERTH_HOST`): the berth CLI as an Engine API
/// client of a service, with the local commands' flags, tables and exit
/// codes — docker's CLI with `-H` is the reference. The client's own store
/// (`BERTH_ROOT`, empty here) is not touched.
#[test]
fn the_berth_cli_drives_a_service_with_h() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let s = Service::start(&b, &[]);
    let host = s.host();
    let empty = b.path("client-root");
    let cli = |args: &[&str]| {
        let o = Command::new(berth_bin())
            .env("BERTH_ROOT", &empty)
            .arg("-H")
            .arg(&host)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, _) = cli(&["version", "--format", "{{.Server.ApiVersion}}"]);
    assert_eq!((code, out.trim()), (0, "1.47"));
    let (_, out, _) = cli(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(out.trim(), "busybox:latest");
    // Output split by stream, the container's exit code ours.
    let (code, out, err) = cli(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!((code, out.as_str(), err.as_str()), (3, "out\n", "err\n"));
    let (code, out, _) = cli(&[
        "run",
        "-d",
        "--name",
        "bg",
        "busybox",
        "sh",
        "-c",
        "echo started; sleep 300",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.trim().len(), 64, "{out}");
    let (_, out, _) = cli(&["ps", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(out.trim(), "bg running");
    // The service's store has it, the client's has nothing.
    assert_eq!(b.run(&["ps", "-q"]).ok().trim().len(), 12);
    assert!(!empty.join("containers").exists());
    assert_eq!(cli(&["exec", "bg", "echo", "hi"]).1, "hi\n");
    assert_eq!(cli(&["exec", "bg", "sh", "-c", "exit 5"]).0, 5);
    let mut logs = String::new();
    for _ in 0..100 {
        logs = cli(&["logs", "bg"]).1;
        if !logs.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(logs, "started\n");
    assert_eq!(
        cli(&["inspect", "-f", "{{.Config.Image}}", "bg"]).1.trim(),
        "busybox"
    );
    // Input to a detached `-i` container, through BERTH_HOST this time.
    assert_eq!(cli(&["run", "-di", "--name", "cat", "busybox", "cat"]).0, 0);
    let mut attach = Command::new(berth_bin());
    attach
        .env("BERTH_ROOT", &empty)
        .env("BERTH_HOST", &host)
        .args(["attach", "cat"]);
    assert_eq!(
        echo_through(attach, "through the service").as_deref(),
        Some("through the service\n")
    );
    let (code, out, _) = cli(&["stop", "-t", "1", "bg"]);
    assert_eq!((code, out.as_str()), (0, "bg\n"));
    assert_eq!(cli(&["rm", "-f", "bg", "cat"]).1, "bg\ncat\n");
    // docker's errors and exit codes.
    let (code, _, err) = cli(&["rmi", "nosuch"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Error response from daemon:") && err.contains("nosuch"),
        "{err}"
    );
    assert_eq!(cli(&["run", "--rm", "busybox", "/nonexistent"]).0, 127);
    let (code, _, err) = cli(&["system", "df"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not send"), "{err}");
    let o = Command::new(berth_bin())
        .args(["-H", "unix:///nonexistent/berth.sock", "ps"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Cannot connect"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(b.run(&["ps", "-aq"]).ok(), "", "--rm containers are gone");
}

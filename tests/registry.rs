//! End-to-end tests of `berth registry serve` and the client (`login`, `push`,
//! `pull`, implicit pulls), against real clients (berth, skopeo, curl) and
//! Debian's docker-registry, all on loopback. Docker's behaviour is the
//! reference for output and errors: `Digest:`/`Status:` lines, "pull access
//! denied …", "Unable to find image … locally", `<tag>: digest: … size: …`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Berth, RegistryServer, curl, header, tool};

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A pusher with busybox tagged as `<addr>/<repo>`.
fn pusher(addr: &str, repo: &str) -> Berth {
    let b = Berth::new();
    b.import_busybox("busybox:latest");
    b.run(&["tag", "busybox:latest", &format!("{addr}/{repo}")])
        .ok();
    b
}

fn digest_line(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest line in {out}"))
        .to_string()
}

#[test]
fn push_pull_run_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let reg = RegistryServer::start(&t.path().join("reg"), &["--open"]);
    let a = pusher(&reg.addr, "library/busybox:1");
    let out = a
        .run(&["push", &format!("{}/library/busybox:1", reg.addr)])
        .ok();
    assert!(
        out.contains(&format!(
            "The push refers to repository [{}/library/busybox]",
            reg.addr
        )),
        "{out}"
    );
    assert!(out.contains(": Pushed"), "{out}");
    let digest = digest_line(&out);
    assert!(
        out.contains(&format!("1: digest: {digest} size: ")),
        "{out}"
    );
    // Pushing again uploads nothing.
    let again = a
        .run(&["push", &format!("{}/library/busybox:1", reg.addr)])
        .ok();
    assert!(again.contains("Layer already exists"), "{again}");

    let b = Berth::new();
    let name = format!("{}/library/busybox:1", reg.addr);
    let out = b.run(&["pull", &name]).ok();
    assert!(out.contains("1: Pulling from library/busybox"), "{out}");
    assert!(out.contains("Pull complete"), "{out}");
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    assert_eq!(out.lines().last().unwrap(), name);
    let same_id = |x: &Berth| x.run(&["image", "inspect", "-f", "{{.Id}}", &name]).ok();
    assert_eq!(
        same_id(&a),
        same_id(&b),
        "the image id survives the round trip"
    );
    let out = b
        .run(&["run", "--rm", &name, "echo", "pulled and running"])
        .ok();
    assert_eq!(out.trim(), "pulled and running");
    let out = b.run(&["pull", &name]).ok();
    assert!(
        out.contains("Already exists")
            && out.contains(&format!("Status: Image is up to date for {name}")),
        "{out}"
    );
    // By digest.
    let c = Berth::new();
    let by_digest = format!("{}/library/busybox@{digest}", reg.addr);
    c.run(&["pull", "-q", &by_digest]).ok();
    c.run(&["run", "--rm", &by_digest, "true"]).ok();
    let rd = c
        .run(&[
            "image",
            "inspect",
            "-f",
            "{{index .RepoDigests 0}}",
            &by_digest,
        ])
        .ok();
    assert_eq!(rd.trim(), by_digest);

    // The implicit pull of run, with its output on stderr (docker's).
    let d = Berth::new();
    let r = d.run(&["run", "--rm", &name, "echo", "implicit"]);
    assert_eq!(r.ok().trim(), "implicit", "stdout is the container's alone");
    assert!(
        r.stderr()
            .contains(&format!("Unable to find image '{name}' locally")),
        "{}",
        r.stderr()
    );
    assert!(
        r.stderr().contains("Status: Downloaded newer image"),
        "{}",
        r.stderr()
    );
    let r = d.run(&[
        "run",
        "--rm",
        "--pull",
        "never",
        &format!("{}/library/busybox:2", reg.addr),
        "true",
    ]);
    assert!(r.fails(125).contains("No such image"), "{}", r.stderr());

    // Missing tag and missing repository: docker's messages.
    let r = b.run(&["pull", &format!("{}/library/busybox:nope", reg.addr)]);
    assert!(
        r.fails(1).contains("manifest for") && r.stderr().contains("not found: manifest unknown"),
        "{}",
        r.stderr()
    );
    let r = b.run(&["pull", &format!("{}/nobody/nothing", reg.addr)]);
    assert!(
        r.fails(1)
            .contains("repository does not exist or may require 'berth login'"),
        "{}",
        r.stderr()
    );
    // `build` pulls a missing base.
    let e = Berth::new();
    let ctx = e.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {name}\nRUN echo built > /f\n"),
    )
    .unwrap();
    let r = e.run(&["build", "-t", "x", ctx.to_str().unwrap()]);
    r.ok();
    assert!(
        r.stderr().contains("Unable to find image"),
        "{}",
        r.stderr()
    );
    assert_eq!(
        e.run(&["run", "--rm", "x", "cat", "/f"]).ok().trim(),
        "built"
    );
}

#[test]
fn skopeo_interop_with_identical_digests() {
    let t = tempfile::tempdir().unwrap();
    let reg = RegistryServer::start(&t.path().join("reg"), &["--open"]);
    let a = pusher(&reg.addr, "interop/a:v1");
    let digest = digest_line(&a.run(&["push", &format!("{}/interop/a:v1", reg.addr)]).ok());
    // skopeo sees the digest berth printed, and reads every blob.
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/interop/a:v1", reg.addr),
        ],
    );
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), digest);
    let oci = t.path().join("oci");
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/interop/a:v1", reg.addr),
            &format!("oci:{}:v1", oci.display()),
        ],
    );
    // skopeo pushes (from a berth save archive); berth pulls; same config digest.
    let archive = a.path("a.tar");
    a.run(&["save", "-o", archive.to_str().unwrap(), "busybox:latest"])
        .ok();
    tool(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("docker-archive:{}", archive.display()),
            &format!("docker://{}/interop/b:v2", reg.addr),
        ],
    );
    let skopeo_digest = tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{}/interop/b:v2", reg.addr),
        ],
    );
    let b = Berth::new();
    let out = b.run(&["pull", &format!("{}/interop/b:v2", reg.addr)]).ok();
    assert!(
        out.contains(&format!("Digest: {}", skopeo_digest.trim())),
        "{out}"
    );
    let id_a = a
        .run(&["image", "inspect", "-f", "{{.Id}}", "busybox:latest"])
        .ok();
    let id_b = b
        .run(&[
            "image",
            "inspect",
            "-f",
            "{{.Id}}",
            &format!("{}/interop/b:v2", reg.addr),
        ])
        .ok();
    assert_eq!(id_a, id_b);
    // And berth pushes what skopeo pushed, unchanged.
    b.run(&[
        "tag",
        &format!("{}/interop/b:v2", reg.addr),
        &format!("{}/interop/c:v3", reg.addr),
    ])
    .ok();
    let out = b.run(&["push", &format!("{}/interop/c:v3", reg.addr)]).ok();
    assert_eq!(
        digest_line(&out),
        skopeo_digest.trim(),
        "berth pushes the stored manifest bytes"
    );
    assert!(
        out.contains("Mounted from interop/b") || out.contains("Layer already exists"),
        "{out}"
    );
}

#[test]
fn accounts_tokens_and_login() {
    let t = tempfile::tempdir().unwrap();
    let storage = t.path().join("reg");
    let reg = RegistryServer::start(&storage, &[]);
    let admin = Berth::new();
    let st = storage.to_str().unwrap();
    admin
        .run_stdin(
            &[
                "registry",
                "user",
                "add",
                "--storage",
                st,
                "--password-stdin",
                "alice",
            ],
            b"correct horse\n",
        )
        .ok();
    let push_tok = admin
        .run(&[
            "registry",
            "token",
            "create",
            "--storage",
            st,
            "--user",
            "alice",
            "--scope",
            "push",
        ])
        .ok();
    let push_tok = push_tok.trim();
    assert!(push_tok.starts_with("brt_"), "{push_tok}");
    let pull_tok = admin
        .run(&[
            "registry",
            "token",
            "create",
            "--storage",
            st,
            "--user",
            "alice",
            "--scope",
            "pull",
            "--expires",
            "30d",
        ])
        .ok();
    let ls = admin
        .run(&["registry", "token", "ls", "--storage", st])
        .ok();
    assert!(
        ls.contains("push") && ls.contains("pull") && !ls.contains(push_tok),
        "secrets are never listed: {ls}"
    );
    let tokens_file = std::fs::read_to_string(storage.join("auth/tokens.json")).unwrap();
    assert!(!tokens_file.contains(push_tok), "tokens are stored hashed");

    let a = pusher(&reg.addr, "alice/app:v1");
    // Anonymous push: the bearer challenge, then docker's error.
    let r = a.run(&["push", &format!("{}/alice/app:v1", reg.addr)]);
    assert!(
        r.fails(1).contains("unauthorized: authentication required"),
        "{}",
        r.stderr()
    );
    // Wrong password.
    let r = a.run_stdin(
        &["login", "-u", "alice", "--password-stdin", &reg.addr],
        b"wrong password\n",
    );
    assert!(
        r.fails(1).contains("incorrect username or password"),
        "{}",
        r.stderr()
    );
    // The access token as password, as on Docker Hub.
    let r = a.run_stdin(
        &["login", "-u", "alice", "--password-stdin", &reg.addr],
        format!("{push_tok}\n").as_bytes(),
    );
    assert!(r.ok().contains("Login Succeeded"));
    let cfg = a.dir.path().join("docker-config/config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    assert!(v["auths"][&reg.addr]["auth"].is_string(), "{v}");
    a.run(&["push", &format!("{}/alice/app:v1", reg.addr)]).ok();
    // Only under her own namespace.
    a.run(&["tag", "busybox:latest", &format!("{}/bob/app:v1", reg.addr)])
        .ok();
    let r = a.run(&["push", &format!("{}/bob/app:v1", reg.addr)]);
    assert!(
        r.fails(1)
            .contains("denied: requested access to the resource is denied"),
        "{}",
        r.stderr()
    );
    // Private by default.
    let anon = Berth::new();
    let r = anon.run(&["pull", &format!("{}/alice/app:v1", reg.addr)]);
    assert!(
        r.fails(1).contains("pull access denied for"),
        "{}",
        r.stderr()
    );
    // A pull token pulls but cannot push.
    let p = Berth::new();
    p.run_stdin(
        &["login", "-u", "alice", "--password-stdin", &reg.addr],
        format!("{}\n", pull_tok.trim()).as_bytes(),
    )
    .ok();
    p.run(&["pull", &format!("{}/alice/app:v1", reg.addr)]).ok();
    p.run(&[
        "tag",
        &format!("{}/alice/app:v1", reg.addr),
        &format!("{}/alice/app:v2", reg.addr),
    ])
    .ok();
    let r = p.run(&["push", &format!("{}/alice/app:v2", reg.addr)]);
    assert!(r.fails(1).contains("denied"), "{}", r.stderr());
    // skopeo with the same credentials (basic auth against the token flow).
    tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("alice:{push_tok}"),
            &format!("docker://{}/alice/app:v1", reg.addr),
        ],
    );
    // Revoked tokens stop working; logout forgets.
    let id = ls
        .lines()
        .find(|l| l.contains(" push "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    admin
        .run(&["registry", "token", "revoke", "--storage", st, &id])
        .ok();
    let r = a.run(&["push", &format!("{}/alice/app:v1", reg.addr)]);
    assert_eq!(r.code(), 1, "a revoked token cannot push: {}", r.stdout());
    assert!(
        a.run(&["logout", &reg.addr])
            .ok()
            .contains("Removing login credentials")
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    assert!(v["auths"].get(&reg.addr).is_none(), "{v}");
    // Request logs name the user.
    assert!(reg.log().contains("user=alice"), "{}", reg.log());
}

#[test]
fn public_registry_allows_anonymous_pull() {
    let t = tempfile::tempdir().unwrap();
    let storage = t.path().join("reg");
    let reg = RegistryServer::start(&storage, &["--public"]);
    let admin = Berth::new();
    admin
        .run_stdin(
            &[
                "registry",
                "user",
                "add",
                "--storage",
                storage.to_str().unwrap(),
                "--password-stdin",
                "bob",
            ],
            b"secret password\n",
        )
        .ok();
    let a = pusher(&reg.addr, "bob/pub:1");
    a.run_stdin(
        &["login", "-u", "bob", "--password-stdin", &reg.addr],
        b"secret password\n",
    )
    .ok();
    a.run(&["push", &format!("{}/bob/pub:1", reg.addr)]).ok();
    let anon = Berth::new();
    anon.run(&["pull", &format!("{}/bob/pub:1", reg.addr)]).ok();
    anon.run(&[
        "tag",
        &format!("{}/bob/pub:1", reg.addr),
        &format!("{}/bob/pub:2", reg.addr),
    ])
    .ok();
    let r = anon.run(&["push", &format!("{}/bob/pub:2", reg.addr)]);
    assert!(r.fails(1).contains("unauthorized"), "{}", r.stderr());
}

/// Uploads `data` as a blob of `repo` with a monolithic POST.
fn put_blob(addr: &str, repo: &str, data: &[u8], dir: &Path) -> String {
    let d = format!("sha256:{}", sha256_hex(data));
    let f = dir.join(format!("blob-{}", &d[7..19]));
    std::fs::write(&f, data).unwrap();
    let (status, head, body) = curl(&[
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", f.display()),
        "-H",
        "Content-Type: application/octet-stream",
        &format!("http://{addr}/v2/{repo}/blobs/uploads/?digest={d}"),
    ]);
    assert_eq!(status, 201, "{head}{}", String::from_utf8_lossy(&body));
    d
}

fn put_manifest(
    addr: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    doc: &str,
) -> (u16, String, String) {
    let (status, head, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {media_type}"),
        "--data-binary",
        doc,
        &format!("http://{addr}/v2/{repo}/manifests/{reference}"),
    ]);
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn raw_protocol_cases() {
    let t = tempfile::tempdir().unwrap();
    let reg = RegistryServer::start(&t.path().join("reg"), &["--open"]);
    let addr = reg.addr.clone();
    let (s, head, _) = curl(&[&format!("http://{addr}/v2/")]);
    assert_eq!(s, 200);
    assert_eq!(
        header(&head, "Docker-Distribution-API-Version").as_deref(),
        Some("registry/2.0")
    );

    // Chunked upload: in order works, a gap is 416, the final digest is checked.
    let (s, head, _) = curl(&[
        "-X",
        "POST",
        &format!("http://{addr}/v2/raw/a/blobs/uploads/"),
    ]);
    assert_eq!(s, 202);
    let loc = header(&head, "Location").unwrap();
    let url = format!("http://{addr}{loc}");
    let (s, head, _) = curl(&[
        "-X",
        "PATCH",
        "-H",
        "Content-Range: 0-4",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        "hello",
        &url,
    ]);
    assert_eq!(s, 202, "{head}");
    assert_eq!(header(&head, "Range").as_deref(), Some("0-4"));
    let (s, head, _) = curl(&[
        "-X",
        "PATCH",
        "-H",
        "Content-Range: 9-10",
        "--data-binary",
        "xx",
        &url,
    ]);
    assert_eq!(s, 416, "out-of-order chunk: {head}");
    let (s, _, _) = curl(&[
        "-X",
        "PATCH",
        "-H",
        "Content-Range: 5-10",
        "--data-binary",
        " world",
        &url,
    ]);
    assert_eq!(s, 202);
    let (s, head, _) = curl(&[&url]);
    assert_eq!((s, header(&head, "Range").as_deref()), (204, Some("0-10")));
    let wrong = format!("sha256:{}", sha256_hex(b"something else"));
    let (s, _, body) = curl(&["-X", "PUT", &format!("{url}?digest={wrong}")]);
    assert_eq!(s, 400);
    assert!(String::from_utf8_lossy(&body).contains("DIGEST_INVALID"));
    assert!(
        std::fs::read_dir(reg.storage.join("uploads"))
            .unwrap()
            .next()
            .is_none(),
        "a failed upload leaves nothing"
    );
    let (s, _, _) = curl(&[&format!("http://{addr}/v2/raw/a/blobs/{wrong}")]);
    assert_eq!(s, 404);

    // A client that disconnects halfway through a chunk: what arrived stays in
    // the session (resumable), nothing becomes a blob.
    let (s, head, _) = curl(&[
        "-X",
        "POST",
        &format!("http://{addr}/v2/raw/d/blobs/uploads/"),
    ]);
    assert_eq!(s, 202);
    let dloc = header(&head, "Location").unwrap();
    {
        let mut c = TcpStream::connect(&addr).unwrap();
        write!(c, "PATCH {dloc} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n").unwrap();
        c.write_all(&[7u8; 300_000]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
    } // dropped: the connection closes mid-body
    std::thread::sleep(std::time::Duration::from_millis(200));
    let full = [7u8; 1_000_000];
    let dd = format!("sha256:{}", sha256_hex(&full));
    let (s, _, _) = curl(&["-I", &format!("http://{addr}/v2/raw/d/blobs/{dd}")]);
    assert_eq!(s, 404, "a broken upload is never served");
    let (s, head, _) = curl(&[&format!("http://{addr}{dloc}")]);
    assert_eq!(s, 204, "the session survives the disconnect");
    let have: u64 = header(&head, "Range")
        .unwrap()
        .split('-')
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        + 1;
    assert!(have <= 300_000, "{have}");
    let rest = t.path().join("rest");
    std::fs::write(&rest, &full[have as usize..]).unwrap();
    let (s, _, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Range: {have}-999999"),
        "--data-binary",
        &format!("@{}", rest.display()),
        &format!("http://{addr}{dloc}?digest={dd}"),
    ]);
    assert_eq!(
        s,
        201,
        "resumed where the data stopped: {}",
        String::from_utf8_lossy(&body)
    );

    // Blobs: ranges, HEAD, per-repository visibility, mount, delete.
    let d = put_blob(&addr, "raw/a", b"hello world", t.path());
    let (s, head, body) = curl(&[
        "-H",
        "Range: bytes=6-10",
        &format!("http://{addr}/v2/raw/a/blobs/{d}"),
    ]);
    assert_eq!((s, body.as_slice()), (206, &b"world"[..]));
    assert_eq!(
        header(&head, "Content-Range").as_deref(),
        Some("bytes 6-10/11")
    );
    // A blob of several of the server's 4 MiB send pieces, whole and from an
    // offset that is neither page- nor piece-aligned across a piece boundary.
    let big: Vec<u8> = (0..9_437_189u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let bd = put_blob(&addr, "raw/a", &big, t.path());
    let (s, _, body) = curl(&[&format!("http://{addr}/v2/raw/a/blobs/{bd}")]);
    assert!(
        s == 200 && body == big,
        "whole big blob: {s}, {} bytes",
        body.len()
    );
    let (from, to) = (4_194_000usize, 8_400_123usize);
    let (s, head, body) = curl(&[
        "-H",
        &format!("Range: bytes={from}-{to}"),
        &format!("http://{addr}/v2/raw/a/blobs/{bd}"),
    ]);
    assert!(
        s == 206 && body == big[from..=to],
        "range of the big blob: {s}, {} bytes",
        body.len()
    );
    assert_eq!(
        header(&head, "Content-Range"),
        Some(format!("bytes {from}-{to}/{}", big.len()))
    );
    let (s, head, _) = curl(&["-I", &format!("http://{addr}/v2/raw/a/blobs/{d}")]);
    assert_eq!(
        (s, header(&head, "Content-Length").as_deref()),
        (200, Some("11"))
    );
    assert_eq!(header(&head, "Docker-Content-Digest"), Some(d.clone()));
    let (s, _, _) = curl(&["-I", &format!("http://{addr}/v2/raw/b/blobs/{d}")]);
    assert_eq!(
        s, 404,
        "blobs are visible only in repositories that have them"
    );
    let (s, head, _) = curl(&[
        "-X",
        "POST",
        &format!("http://{addr}/v2/raw/b/blobs/uploads/?mount={d}&from=raw/a"),
    ]);
    assert_eq!(s, 201, "{head}");
    let (s, _, _) = curl(&["-X", "DELETE", &format!("http://{addr}/v2/raw/b/blobs/{d}")]);
    assert_eq!(s, 202);
    let (s, _, _) = curl(&["-I", &format!("http://{addr}/v2/raw/b/blobs/{d}")]);
    assert_eq!(s, 404);

    // sha512 content, and tags given as parameters of a push by digest.
    let data = b"sha512 content";
    let f = t.path().join("s512");
    std::fs::write(&f, data).unwrap();
    let out = Command::new("sha512sum").arg(&f).output().unwrap();
    let d512 = format!(
        "sha512:{}",
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
    );
    let (s, _, _) = curl(&[
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", f.display()),
        &format!("http://{addr}/v2/raw/s/blobs/uploads/?digest={d512}"),
    ]);
    assert_eq!(s, 201);
    let (s, _, body) = curl(&[&format!("http://{addr}/v2/raw/s/blobs/{d512}")]);
    assert_eq!((s, body.as_slice()), (200, &data[..]));

    // Names and digests are validated before they reach the disk.
    let (s, _, body) = curl(&[
        "--path-as-is",
        &format!("http://{addr}/v2/../../etc/tags/list"),
    ]);
    assert!(s == 400 || s == 404, "{s}");
    assert!(!String::from_utf8_lossy(&body).contains("root:"));
    let (s, _, body) = curl(&[&format!("http://{addr}/v2/Upper/tags/list")]);
    assert_eq!(s, 400);
    assert!(String::from_utf8_lossy(&body).contains("NAME_INVALID"));
    let (s, _, body) = curl(&[&format!(
        "http://{addr}/v2/raw/a/blobs/sha256:..%2f..%2fetc"
    )]);
    assert_eq!(s, 400);
    assert!(String::from_utf8_lossy(&body).contains("DIGEST_INVALID"));

    // Manifests: missing blobs refused, malformed JSON refused, by tag and digest.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = put_blob(&addr, "raw/m", config, t.path());
    let manifest = |cfg: &str, extra: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":{}}},"layers":[]{extra}}}"#,
            config.len()
        )
    };
    let missing = format!("sha256:{}", sha256_hex(b"missing"));
    let (s, _, body) = put_manifest(
        &addr,
        "raw/m",
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        &manifest(&missing, ""),
    );
    assert_eq!(s, 400);
    assert!(body.contains("MANIFEST_BLOB_UNKNOWN"), "{body}");
    let (s, _, body) = put_manifest(
        &addr,
        "raw/m",
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        "{not json",
    );
    assert_eq!(s, 400);
    assert!(body.contains("MANIFEST_INVALID"), "{body}");
    let m = manifest(&cd, "");
    let md = format!("sha256:{}", sha256_hex(m.as_bytes()));
    let (s, head, _) = put_manifest(
        &addr,
        "raw/m",
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        &m,
    );
    assert_eq!(s, 201);
    assert_eq!(header(&head, "Docker-Content-Digest"), Some(md.clone()));
    let (s, head, body) = curl(&[
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("http://{addr}/v2/raw/m/manifests/v1"),
    ]);
    assert_eq!((s, body.as_slice()), (200, m.as_bytes()));
    assert_eq!(
        header(&head, "Content-Type").as_deref(),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    let (s, _, _) = curl(&[
        "-H",
        "Accept: application/vnd.docker.distribution.manifest.v2+json",
        &format!("http://{addr}/v2/raw/m/manifests/v1"),
    ]);
    assert_eq!(
        s, 404,
        "content negotiation: an OCI manifest is not served to a docker-only Accept"
    );

    // Tags as parameters of a push by digest (OCI-Tag).
    let (s, head, _) = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &m,
        &format!("http://{addr}/v2/raw/p/manifests/{md}?tag=one&tag=two"),
    ]);
    assert_eq!(s, 400, "blobs of raw/m are not in raw/p: {head}");
    let (s, head, _) = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &m,
        &format!("http://{addr}/v2/raw/m/manifests/{md}?tag=one&tag=two"),
    ]);
    assert_eq!(s, 201);
    assert!(
        head.to_ascii_lowercase().contains("oci-tag: one")
            && head.to_ascii_lowercase().contains("oci-tag: two"),
        "{head}"
    );
    for tag in ["one", "two"] {
        assert_eq!(
            curl(&[
                "-X",
                "DELETE",
                &format!("http://{addr}/v2/raw/m/manifests/{tag}")
            ])
            .0,
            202
        );
    }

    // Tags with pagination.
    for tag in ["v2", "v3", "a"] {
        assert_eq!(
            put_manifest(
                &addr,
                "raw/m",
                tag,
                "application/vnd.oci.image.manifest.v1+json",
                &m
            )
            .0,
            201
        );
    }
    let (s, head, body) = curl(&[&format!("http://{addr}/v2/raw/m/tags/list?n=2")]);
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["a", "v1"]));
    let link = header(&head, "Link").unwrap();
    assert!(
        link.contains("last=v1") && link.contains("rel=\"next\""),
        "{link}"
    );
    let (_, _, body) = curl(&[&format!("http://{addr}/v2/raw/m/tags/list?n=2&last=v1")]);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["v2", "v3"]));
    let (_, _, body) = curl(&[&format!("http://{addr}/v2/_catalog")]);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["raw/m"]));

    // Referrers: an artifact whose subject is the manifest.
    let art = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sbom","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{}","size":2}},"layers":[],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{}}}}}"#,
        put_blob(&addr, "raw/m", b"{}", t.path()),
        m.len()
    );
    let ad = format!("sha256:{}", sha256_hex(art.as_bytes()));
    let (s, head, _) = put_manifest(
        &addr,
        "raw/m",
        &ad,
        "application/vnd.oci.image.manifest.v1+json",
        &art,
    );
    assert_eq!(s, 201);
    assert_eq!(header(&head, "OCI-Subject"), Some(md.clone()));
    let (s, _, body) = curl(&[&format!("http://{addr}/v2/raw/m/referrers/{md}")]);
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["manifests"][0]["digest"], serde_json::json!(ad));
    assert_eq!(
        v["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );
    let (_, head, body) = curl(&[&format!(
        "http://{addr}/v2/raw/m/referrers/{md}?artifactType=application/other"
    )]);
    assert_eq!(
        header(&head, "OCI-Filters-Applied").as_deref(),
        Some("artifactType")
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]));

    // Deleting by digest drops its tags; gc then frees the blobs.
    let (s, _, _) = curl(&[
        "-X",
        "DELETE",
        &format!("http://{addr}/v2/raw/m/manifests/{ad}"),
    ]);
    assert_eq!(s, 202);
    let (s, _, _) = curl(&[
        "-X",
        "DELETE",
        &format!("http://{addr}/v2/raw/m/manifests/{md}"),
    ]);
    assert_eq!(s, 202);
    let (s, _, _) = curl(&[&format!("http://{addr}/v2/raw/m/manifests/v1")]);
    assert_eq!(s, 404);
    let b = Berth::new();
    let out = b
        .run(&[
            "registry",
            "gc",
            "--storage",
            reg.storage.to_str().unwrap(),
            "--grace",
            "0s",
        ])
        .ok();
    assert!(out.contains("removed"), "{out}");
    let (s, _, _) = curl(&[&format!("http://{addr}/v2/raw/a/blobs/{d}")]);
    assert_eq!(s, 404, "gc removed the unreferenced blob");
}

#[test]
fn multi_arch_index_picks_the_platform() {
    let t = tempfile::tempdir().unwrap();
    let reg = RegistryServer::start(&t.path().join("reg"), &["--open"]);
    let addr = reg.addr.clone();
    let a = pusher(&addr, "multi/app:amd64");
    let amd_digest = digest_line(&a.run(&["push", &format!("{addr}/multi/app:amd64")]).ok());
    let (_, head, amd) = curl(&[
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("http://{addr}/v2/multi/app/manifests/amd64"),
    ]);
    let amd_type = header(&head, "Content-Type").unwrap();
    let amd_manifest: serde_json::Value = serde_json::from_slice(&amd).unwrap();
    // An arm64 variant: the same layer under a config that says arm64.
    let cfg_digest = amd_manifest["config"]["digest"].as_str().unwrap();
    let (_, _, cfg) = curl(&[&format!("http://{addr}/v2/multi/app/blobs/{cfg_digest}")]);
    let mut cfg: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    cfg["architecture"] = "arm64".into();
    let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
    let arm_cfg = put_blob(&addr, "multi/app", &cfg_bytes, t.path());
    let mut arm = amd_manifest.clone();
    arm["config"]["digest"] = arm_cfg.clone().into();
    arm["config"]["size"] = cfg_bytes.len().into();
    let arm_doc = serde_json::to_string(&arm).unwrap();
    let arm_digest = format!("sha256:{}", sha256_hex(arm_doc.as_bytes()));
    assert_eq!(
        put_manifest(&addr, "multi/app", &arm_digest, &amd_type, &arm_doc).0,
        201
    );
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": amd_type, "digest": arm_digest, "size": arm_doc.len(), "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": amd_type, "digest": amd_digest, "size": amd.len(), "platform": {"architecture": "amd64", "os": "linux"}},
        ]
    })
    .to_string();
    let (s, _, body) = put_manifest(
        &addr,
        "multi/app",
        "latest",
        "application/vnd.oci.image.index.v1+json",
        &index,
    );
    assert_eq!(s, 201, "{body}");
    let index_digest = format!("sha256:{}", sha256_hex(index.as_bytes()));

    let b = Berth::new();
    let name = format!("{addr}/multi/app");
    let out = b.run(&["pull", &name]).ok();
    assert!(
        out.contains(&format!("Digest: {index_digest}")),
        "docker prints the index digest: {out}"
    );
    let arch = b
        .run(&["image", "inspect", "-f", "{{.Architecture}}", &name])
        .ok();
    assert_eq!(arch.trim(), "amd64");
    b.run(&["run", "--rm", &name, "true"]).ok();
    let c = Berth::new();
    c.run(&["pull", "--platform", "linux/arm64", &name]).ok();
    assert_eq!(
        c.run(&["image", "inspect", "-f", "{{.Architecture}}", &name])
            .ok()
            .trim(),
        "arm64"
    );
    let r = c.run(&["pull", "--platform", "linux/s390x", &name]);
    assert!(
        r.fails(1).contains("no matching manifest for linux/s390x"),
        "{}",
        r.stderr()
    );
    // The index digest resolves to the platform's image.
    b.run(&["image", "inspect", &format!("{name}@{index_digest}")])
        .ok();
}

/// What the fault-injecting proxy does.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Cut the first response of the big layer halfway.
    Drop,
    /// Flip a byte in every response of the big layer.
    Corrupt,
    /// Answer the first manifest request with 429 Retry-After: 1.
    TooMany,
    /// Answer everything with a captive portal's HTML page.
    Html,
    /// Answer manifest requests with a 5 MiB document.
    HugeManifest,
}

/// A one-request-per-connection HTTP proxy in front of `upstream`.
fn fault_proxy(upstream: String, fault: Fault, layer: String) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let upstream = upstream.clone();
            let layer = layer.clone();
            let h = h.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                let head_end = loop {
                    let n = c.read(&mut tmp).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if buf[0] == 0x16 {
                        return; // a TLS hello: close, as plain HTTP servers do
                    }
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let n = c.read(&mut tmp).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                let first_line = head.lines().next().unwrap_or("").to_string();
                if fault == Fault::Html {
                    let page = "<html><body>Please log in to the hotel wifi</body></html>";
                    let _ = write!(
                        c,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                        page.len()
                    );
                    return;
                }
                if fault == Fault::HugeManifest && first_line.contains("/manifests/") {
                    let doc = format!(
                        r#"{{"schemaVersion":2,"annotations":{{"x":"{}"}}}}"#,
                        "a".repeat(5 << 20)
                    );
                    let _ = write!(
                        c,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{doc}",
                        doc.len()
                    );
                    return;
                }
                if fault == Fault::TooMany
                    && first_line.contains("/manifests/")
                    && h.fetch_add(1, Ordering::SeqCst) == 0
                {
                    let _ = write!(
                        c,
                        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    return;
                }
                // Forward with Connection: close, read the whole answer.
                let fixed: String = head
                    .lines()
                    .filter(|l| !l.to_ascii_lowercase().starts_with("connection:") && !l.is_empty())
                    .map(|l| format!("{l}\r\n"))
                    .collect::<String>()
                    + "Connection: close\r\n\r\n";
                let mut up = TcpStream::connect(&upstream).unwrap();
                up.write_all(fixed.as_bytes()).unwrap();
                up.write_all(&buf[head_end..]).unwrap();
                let mut resp = Vec::new();
                up.read_to_end(&mut resp).unwrap();
                let is_layer = first_line.starts_with("GET ") && first_line.contains(&layer);
                if is_layer {
                    let n = h.fetch_add(1, Ordering::SeqCst);
                    let body_at = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    match fault {
                        Fault::Drop if n == 0 => {
                            let cut = body_at + (resp.len() - body_at) / 2;
                            let _ = c.write_all(&resp[..cut]);
                            return; // connection closed mid-body
                        }
                        Fault::Corrupt => {
                            let i = body_at + (resp.len() - body_at) / 3;
                            resp[i] ^= 0xff;
                        }
                        _ => {}
                    }
                }
                let _ = c.write_all(&resp);
            });
        }
    });
    (addr, hits)
}

#[test]
fn faults_are_retried_or_reported_and_never_half_stored() {
    let t = tempfile::tempdir().unwrap();
    let reg = RegistryServer::start(&t.path().join("reg"), &["--open"]);
    let a = pusher(&reg.addr, "faults/app:1");
    a.run(&["push", &format!("{}/faults/app:1", reg.addr)]).ok();
    let (_, _, m) = curl(&[
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("http://{}/v2/faults/app/manifests/1", reg.addr),
    ]);
    let m: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();

    // A dropped connection resumes with a Range request.
    let (proxy, hits) = fault_proxy(reg.addr.clone(), Fault::Drop, layer.clone());
    let b = Berth::new();
    let out = b.run(&["pull", &format!("{proxy}/faults/app:1")]).ok();
    assert!(out.contains("Pull complete"), "{out}");
    assert!(
        hits.load(Ordering::SeqCst) >= 2,
        "the layer was fetched again"
    );
    assert!(
        reg.log().contains("206") || reg.log().contains(&layer),
        "resumed"
    );
    b.run(&["run", "--rm", &format!("{proxy}/faults/app:1"), "true"])
        .ok();

    // Corrupted bytes: verification fails, nothing is stored.
    let (proxy, _) = fault_proxy(reg.addr.clone(), Fault::Corrupt, layer.clone());
    let c = Berth::new();
    let r = c.run(&["pull", &format!("{proxy}/faults/app:1")]);
    assert!(
        r.fails(1).contains(&format!(
            "filesystem layer verification failed for digest {layer}"
        )),
        "{}",
        r.stderr()
    );
    assert!(
        !c.run(&["images", "-q"])
            .ok()
            .contains(|ch: char| ch.is_ascii_hexdigit()),
        "no half image"
    );
    let blobs = c.root().join("content/blobs/sha256");
    assert!(!blobs.join(&layer[7..]).exists(), "no unverified blob");
    let ingest: Vec<_> = std::fs::read_dir(c.root().join("content/ingest"))
        .unwrap()
        .collect();
    assert!(ingest.is_empty(), "no temp files left");
    let tmp: Vec<_> = std::fs::read_dir(c.root().join("snapshots/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "no half-extracted layer left: {tmp:?}");
    c.run(&["system", "check"]).ok();

    // 429 with Retry-After is waited out.
    let (proxy, hits) = fault_proxy(reg.addr.clone(), Fault::TooMany, layer.clone());
    let d = Berth::new();
    d.run(&["pull", &format!("{proxy}/faults/app:1")]).ok();
    assert!(hits.load(Ordering::SeqCst) >= 2);

    // A manifest over docker's 4 MiB limit.
    let (proxy, _) = fault_proxy(reg.addr.clone(), Fault::HugeManifest, layer.clone());
    let r = Berth::new().run(&["pull", &format!("{proxy}/faults/app:1")]);
    assert!(
        r.fails(1).contains("larger than the limit"),
        "{}",
        r.stderr()
    );

    // A captive portal.
    let (proxy, _) = fault_proxy(reg.addr.clone(), Fault::Html, layer);
    let e = Berth::new();
    let r = e.run(&["pull", &format!("{proxy}/faults/app:1")]);
    assert!(r.fails(1).contains("HTML page"), "{}", r.stderr());
}

#[test]
fn oversized_manifest_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let reg = RegistryServer::start(&t.path().join("reg"), &["--open"]);
    let big = format!(
        r#"{{"schemaVersion":2,"annotations":{{"x":"{}"}}}}"#,
        "a".repeat(5 << 20)
    );
    let f = t.path().join("big.json");
    std::fs::write(&f, &big).unwrap();
    let (s, _, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &format!("@{}", f.display()),
        &format!("http://{}/v2/big/x/manifests/v1", reg.addr),
    ]);
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn concurrent_pushes_of_overlapping_images() {
    let t = tempfile::tempdir().unwrap();
    let reg = RegistryServer::start(&t.path().join("reg"), &["--open"]);
    let base = Berth::new();
    base.import_busybox("busybox:latest");
    // 20 images sharing the busybox layer, each with a layer of its own.
    let ctx = base.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    for i in 0..20 {
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM busybox\nRUN echo {i} > /n\n"),
        )
        .unwrap();
        base.run(&[
            "build",
            "-q",
            "-t",
            &format!("{}/conc/app{}:v1", reg.addr, i % 5),
            "-t",
            &format!("{}/conc/img{i}:v1", reg.addr),
            ctx.to_str().unwrap(),
        ])
        .ok();
    }
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let mut cmd = base.command(&["push", &format!("{}/conc/img{i}:v1", reg.addr)]);
            std::thread::spawn(move || cmd.output().unwrap())
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every manifest and blob verifies: pull them all into a fresh store and check it.
    let p = Berth::new();
    for i in 0..20 {
        p.run(&["pull", "-q", &format!("{}/conc/img{i}:v1", reg.addr)])
            .ok();
        let n = p
            .run(&[
                "run",
                "--rm",
                &format!("{}/conc/img{i}:v1", reg.addr),
                "cat",
                "/n",
            ])
            .ok();
        assert_eq!(n.trim(), i.to_string());
    }
    p.run(&["system", "check"]).ok();
    for e in std::fs::read_dir(reg.storage.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let data = std::fs::read(e.path()).unwrap();
        assert_eq!(
            sha256_hex(&data),
            e.file_name().to_string_lossy(),
            "blob content matches its name"
        );
    }
}

#[test]
fn killed_mid_upload_then_restarted_stays_consistent() {
    let t = tempfile::tempdir().unwrap();
    let storage = t.path().join("reg");
    let mut reg = RegistryServer::start(&storage, &["--open"]);
    let addr = reg.addr.clone();
    let (s, head, _) = curl(&["-X", "POST", &format!("http://{addr}/v2/k/blobs/uploads/")]);
    assert_eq!(s, 202);
    let loc = header(&head, "Location").unwrap();
    let (s, _, _) = curl(&[
        "-X",
        "PATCH",
        "-H",
        "Content-Range: 0-5",
        "--data-binary",
        "first ",
        &format!("http://{addr}{loc}"),
    ]);
    assert_eq!(s, 202);
    reg.child.kill().unwrap(); // SIGKILL
    reg.child.wait().unwrap();
    let reg2 = RegistryServer::start(&storage, &["--open"]);
    let addr2 = reg2.addr.clone();
    let (s, head, _) = curl(&[&format!("http://{addr2}{loc}")]);
    assert_eq!(
        (s, header(&head, "Range").as_deref()),
        (204, Some("0-5")),
        "the upload survived"
    );
    let (s, _, _) = curl(&[
        "-X",
        "PATCH",
        "-H",
        "Content-Range: 6-11",
        "--data-binary",
        "second",
        &format!("http://{addr2}{loc}"),
    ]);
    assert_eq!(s, 202);
    let d = format!("sha256:{}", sha256_hex(b"first second"));
    let (s, _, _) = curl(&["-X", "PUT", &format!("http://{addr2}{loc}?digest={d}")]);
    assert_eq!(s, 201);
    let (s, _, body) = curl(&[&format!("http://{addr2}/v2/k/blobs/{d}")]);
    assert_eq!((s, body.as_slice()), (200, &b"first second"[..]));
    drop(reg);
}

#[test]
fn debian_docker_registry_with_htpasswd() {
    if Command::new("docker-registry")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("docker-registry is not installed; .ci/run installs it");
    }
    let t = tempfile::tempdir().unwrap();
    let htpasswd = t.path().join("htpasswd");
    let hp = tool("htpasswd", &["-Bbn", "carol", "carols password"]);
    std::fs::write(&htpasswd, hp).unwrap();
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
        t.path().join("data").display(),
        htpasswd.display()
    );
    let cfg = t.path().join("config.yml");
    std::fs::write(&cfg, config).unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _srv = Kill(
        Command::new("docker-registry")
            .args(["serve", cfg.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if TcpStream::connect(&addr).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let a = pusher(&addr, "carol/app:1");
    let r = a.run(&["push", &format!("{addr}/carol/app:1")]);
    assert!(r.fails(1).contains("unauthorized"), "{}", r.stderr());
    let r = a.run_stdin(
        &["login", "-u", "carol", "--password-stdin", &addr],
        b"nope\n",
    );
    assert_eq!(r.code(), 1);
    a.run_stdin(
        &["login", "-u", "carol", "--password-stdin", &addr],
        b"carols password\n",
    )
    .ok();
    let digest = digest_line(
        &a.run(&[
            "push",
            "--chunk-size",
            "300000",
            &format!("{addr}/carol/app:1"),
        ])
        .ok(),
    );
    let sk = tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "carol:carols password",
            "--format",
            "{{.Digest}}",
            &format!("docker://{addr}/carol/app:1"),
        ],
    );
    assert_eq!(sk.trim(), digest);
    let b = Berth::new();
    b.run_stdin(
        &["login", "-u", "carol", "--password-stdin", &addr],
        b"carols password\n",
    )
    .ok();
    let out = b.run(&["pull", &format!("{addr}/carol/app:1")]).ok();
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    b.run(&["run", "--rm", &format!("{addr}/carol/app:1"), "true"])
        .ok();
}

#[test]
fn tls_registry() {
    let t = tempfile::tempdir().unwrap();
    let (cert, key) = (t.path().join("cert.pem"), t.path().join("key.pem"));
    tool(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    let reg = RegistryServer::start(
        &t.path().join("reg"),
        &[
            "--open",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    // Only TLS is spoken.
    let (s, _, _) = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        &format!("https://{}/v2/", reg.addr),
    ]);
    assert_eq!(s, 200);
    let a = pusher(&reg.addr, "tls/app:1");
    a.run(&["push", &format!("{}/tls/app:1", reg.addr)]).ok();
    let b = Berth::new();
    b.run(&["pull", &format!("{}/tls/app:1", reg.addr)]).ok();
    tool(
        "skopeo",
        &[
            "inspect",
            "--cert-dir",
            t.path().to_str().unwrap(),
            "--tls-verify=false",
            &format!("docker://{}/tls/app:1", reg.addr),
        ],
    );
}

#[test]
fn podman_pushes_and_pulls() {
    let t = tempfile::tempdir().unwrap();
    let reg = RegistryServer::start(&t.path().join("reg"), &["--open"]);
    let a = pusher(&reg.addr, "pod/app:1");
    let archive = a.path("a.tar");
    a.run(&["save", "-o", archive.to_str().unwrap(), "busybox:latest"])
        .ok();
    let (root, run) = (t.path().join("proot"), t.path().join("prun"));
    let podman = |args: &[&str]| {
        let mut full = vec![
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            run.to_str().unwrap(),
            "--storage-driver",
            "vfs",
        ];
        full.extend_from_slice(args);
        tool("podman", &full)
    };
    podman(&["load", "-q", "-i", archive.to_str().unwrap()]);
    podman(&[
        "push",
        "-q",
        "--tls-verify=false",
        "busybox:latest",
        &format!("docker://{}/pod/app:from-podman", reg.addr),
    ]);
    let b = Berth::new();
    b.run(&["pull", &format!("{}/pod/app:from-podman", reg.addr)])
        .ok();
    assert_eq!(
        b.run(&[
            "run",
            "--rm",
            &format!("{}/pod/app:from-podman", reg.addr),
            "echo",
            "ok"
        ])
        .ok()
        .trim(),
        "ok"
    );
    a.run(&["push", &format!("{}/pod/app:1", reg.addr)]).ok();
    podman(&[
        "pull",
        "-q",
        "--tls-verify=false",
        &format!("{}/pod/app:1", reg.addr),
    ]);
    let out = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(out.contains(&format!("{}/pod/app:1", reg.addr)), "{out}");
}

/// docker's `search` against berth's registry (`/v1/search`, what docker
/// asks of an index): the repositories whose name holds the term, in
/// docker's table; `--limit`, `--format` and `--filter` as docker's.
#[test]
fn search_lists_matching_repositories() {
    let t = tempfile::tempdir().unwrap();
    let reg = RegistryServer::start(&t.path().join("reg"), &["--open"]);
    for repo in ["library/busybox:1", "team/busy-tools:1", "other/alpine:1"] {
        let p = pusher(&reg.addr, repo);
        p.run(&["push", &format!("{}/{repo}", reg.addr)]).ok();
    }
    let s = Berth::new();
    let out = s.run(&["search", &format!("{}/busy", reg.addr)]).ok();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME")
            && lines[0].contains("DESCRIPTION")
            && lines[0].ends_with("OFFICIAL   AUTOMATED"),
        "{out}"
    );
    let names: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["library/busybox", "team/busy-tools"], "{out}");
    let one = s
        .run(&[
            "search",
            "--limit",
            "1",
            "--format",
            "{{.Name}} {{.StarCount}}",
            &format!("{}/busy", reg.addr),
        ])
        .ok();
    assert_eq!(one.lines().count(), 1, "{one}");
    assert!(one.ends_with(" 0\n"), "{one}");
    let none = s
        .run(&[
            "search",
            "--filter",
            "is-official=true",
            "--format",
            "{{.Name}}",
            &format!("{}/busy", reg.addr),
        ])
        .ok();
    assert_eq!(none, "");
    let err = s
        .run(&["search", "--filter", "bogus=1", &format!("{}/x", reg.addr)])
        .fails(1);
    assert!(err.contains("invalid filter 'bogus'"), "{err}");
}

/// docker's `manifest` commands: two images pushed to a registry on
/// loopback (in two repositories), made one list with the second annotated
/// as arm64, pushed under a third repository (the images' blobs mounted
/// there); skopeo sees an index of two; `pull --platform linux/arm64` gets
/// the annotated image; `inspect` reads the local list, then the registry's.
#[test]
fn manifest_lists_from_images_in_a_registry() {
    let storage = tempfile::tempdir().unwrap();
    let reg = common::RegistryServer::start(storage.path(), &["--open"]);
    let b = Berth::new();
    let tar = common::busybox_tar().to_str().unwrap().to_string();
    for (name, word) in [("one", "amd"), ("two", "arm")] {
        b.run(&[
            "import",
            "--change",
            &format!("CMD [\"echo\", \"{word}\"]"),
            &tar,
            name,
        ])
        .ok();
        let r = format!("{}/team/{name}:1", reg.addr);
        b.run(&["tag", name, &r]).ok();
        b.run(&["push", &r]).ok();
    }
    let (one, two) = (
        format!("{}/team/one:1", reg.addr),
        format!("{}/team/two:1", reg.addr),
    );
    let list = format!("{}/team/app:multi", reg.addr);
    assert!(
        b.run(&["manifest", "create", &list, &one, &two])
            .ok()
            .contains("Created manifest list")
    );
    let again = b.run(&["manifest", "create", &list, &one]).fails(1);
    assert!(again.contains("--amend"), "{again}");
    b.run(&[
        "manifest",
        "annotate",
        "--arch",
        "arm64",
        "--variant",
        "v8",
        &list,
        &two,
    ])
    .ok();
    let local: serde_json::Value =
        serde_json::from_str(&b.run(&["manifest", "inspect", &list]).ok()).unwrap();
    let ms = local["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 2);
    assert_eq!(
        ms[0]["platform"]["architecture"],
        std::env::consts::ARCH
            .replace("x86_64", "amd64")
            .replace("aarch64", "arm64")
    );
    assert_eq!(ms[1]["platform"]["architecture"], "arm64");
    assert_eq!(ms[1]["platform"]["variant"], "v8");
    let pushed = b.run(&["manifest", "push", "--purge", &list]).ok();
    assert!(pushed.trim().starts_with("sha256:"), "{pushed}");
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{list}"),
        ],
    );
    let idx: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        idx["manifests"].as_array().map(|a| a.len()),
        Some(2),
        "{raw}"
    );
    // Purged: inspect now reads the registry's index.
    let remote: serde_json::Value =
        serde_json::from_str(&b.run(&["manifest", "inspect", &list]).ok()).unwrap();
    assert_eq!(remote, idx);
    assert!(
        b.run(&["manifest", "rm", &list])
            .fails(1)
            .contains("No such manifest")
    );
    // A pull for arm64 gets the image annotated so.
    let other = Berth::new();
    other
        .run(&["pull", "--platform", "linux/arm64", &list])
        .ok();
    assert_eq!(other.run(&["run", "--rm", &list]).ok(), "arm\n");
}

//! `berth registry serve --storage s3://bucket/prefix`: replicas of the
//! registry over one bucket of a real S3-compatible store (SeaweedFS, which
//! the test starts on loopback), driven by the real `berth` client and by
//! raw HTTP where the client cannot make the case (chunked uploads that
//! hop between replicas).

mod common;

use std::path::Path;

use common::s3::{SeaweedFs, have_weed};
use common::{Berth, RegistryServer, curl, header};

const STORE: &str = "s3://team/registry";

fn replica(w: &SeaweedFs, state: &Path) -> RegistryServer {
    replica_with(w, state, &[])
}

fn replica_with(w: &SeaweedFs, state: &Path, extra: &[&str]) -> RegistryServer {
    let env = w.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut args = vec!["--open", "--state-dir", state.to_str().unwrap()];
    args.extend_from_slice(extra);
    RegistryServer::start_env(Path::new(STORE), &args, &env)
}

/// SeaweedFS with a bucket, a berth root with busybox, and two replicas of
/// the registry on the bucket; `None` (the test skipped) without `weed`.
fn two_replicas() -> Option<(SeaweedFs, Berth, RegistryServer, RegistryServer)> {
    if !have_weed() {
        return None;
    }
    let w = SeaweedFs::start("team");
    let b = Berth::new();
    let (a, r2) = (
        replica(&w, &b.path("state-a")),
        replica(&w, &b.path("state-b")),
    );
    b.import_busybox("busybox");
    Some((w, b, a, r2))
}

/// An image FROM busybox with one more layer made by `run`, tagged `tag`.
fn build(b: &Berth, tag: &str, run: &str) {
    let ctx = b.path(&format!("ctx-{}", tag.replace(['/', ':'], "-")));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM busybox\nRUN {run}\n")).unwrap();
    b.run(&["build", "-q", "-t", tag, ctx.to_str().unwrap()])
        .ok();
}

fn pushed_digest(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in push output:\n{out}"))
        .to_string()
}

fn manifest_digest(addr: &str, repo: &str, reference: &str) -> (u16, Option<String>) {
    let (status, head, _) = curl(&[
        "-I",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        &format!("http://{addr}/v2/{repo}/manifests/{reference}"),
    ]);
    (status, header(&head, "docker-content-digest"))
}

#[test]
fn replicas_share_one_bucket_push_one_pull_other_chunks_hop() {
    let Some((_w, b, a, r2)) = two_replicas() else {
        return;
    };
    // A 12 MB layer: more than one part of the multipart upload (8 MiB),
    // with a tail.
    let tag = format!("{}/team/app:1", a.addr);
    build(&b, &tag, "head -c 12000000 /dev/urandom > /big");
    let pushed = pushed_digest(&b.run(&["push", &tag]).ok());

    // Pulled through the other replica, by a machine that never had it.
    let other = Berth::new();
    let there = format!("{}/team/app:1", r2.addr);
    other.run(&["pull", "-q", &there]).ok();
    let size = other
        .run(&["run", "--rm", &there, "sh", "-c", "wc -c < /big"])
        .ok();
    assert_eq!(size.trim(), "12000000");
    assert_eq!(manifest_digest(&r2.addr, "team/app", "1").1, Some(pushed));
    let (_, _, cat) = curl(&[&format!("http://{}/v2/_catalog", r2.addr)]);
    assert!(
        String::from_utf8_lossy(&cat).contains("team/app"),
        "{}",
        String::from_utf8_lossy(&cat)
    );

    // A chunked upload that goes from one replica to the other and back:
    // 6 MiB (a part is not full yet: all of it waits as the tail), 3 MiB
    // through the other replica (a part is sent, the rest is the tail),
    // the end through the first.
    let data: Vec<u8> = (0..11_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let whole = b.path("whole");
    std::fs::write(&whole, &data).unwrap();
    let sum = common::tool("sha256sum", &[whole.to_str().unwrap()]);
    let digest = format!("sha256:{}", &sum[..64]);
    let cuts = [0usize, 6 << 20, 9 << 20, data.len()];
    let chunk = |i: usize| {
        let p = b.path(&format!("chunk{i}"));
        std::fs::write(&p, &data[cuts[i]..cuts[i + 1]]).unwrap();
        format!("@{}", p.display())
    };
    let upload = |finish_with: &str| -> (u16, String) {
        let (s, head, _) = curl(&[
            "-X",
            "POST",
            &format!("http://{}/v2/team/chunks/blobs/uploads/", a.addr),
        ]);
        assert_eq!(s, 202, "{head}");
        let loc = header(&head, "location").expect("location");
        for (i, via) in [(0, &a.addr), (1, &r2.addr)] {
            let (s, head, _) = curl(&[
                "-X",
                "PATCH",
                "-H",
                "Content-Type: application/octet-stream",
                "-H",
                &format!("Content-Range: {}-{}", cuts[i], cuts[i + 1] - 1),
                "--data-binary",
                &chunk(i),
                &format!("http://{via}{loc}"),
            ]);
            assert_eq!(s, 202, "chunk {i} via {via}: {head}");
            assert_eq!(
                header(&head, "range"),
                Some(format!("0-{}", cuts[i + 1] - 1))
            );
        }
        // Either replica reports the progress.
        let (_, head, _) = curl(&[&format!("http://{}{loc}", a.addr)]);
        assert_eq!(header(&head, "range"), Some(format!("0-{}", cuts[2] - 1)));
        let (s, head, body) = curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &chunk(2),
            &format!("http://{}{loc}?digest={finish_with}", a.addr),
        ]);
        (s, format!("{head}{}", String::from_utf8_lossy(&body)))
    };
    // The wrong digest: refused, and nothing is stored under it.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let (s, text) = upload(&wrong);
    assert_eq!(s, 400, "{text}");
    assert!(text.contains("DIGEST_INVALID"), "{text}");
    let (s, _, _) = curl(&[
        "-I",
        &format!("http://{}/v2/team/chunks/blobs/{wrong}", r2.addr),
    ]);
    assert_eq!(s, 404);
    // The right one: stored, served whole and in ranges by both replicas.
    let (s, text) = upload(&digest);
    assert_eq!(s, 201, "{text}");
    let (s, _, body) = curl(&[&format!("http://{}/v2/team/chunks/blobs/{digest}", r2.addr)]);
    assert_eq!(s, 200);
    assert!(body == data, "the blob came back different");
    let (s, head, body) = curl(&[
        "-H",
        "Range: bytes=8388600-8388615",
        &format!("http://{}/v2/team/chunks/blobs/{digest}", a.addr),
    ]);
    assert_eq!(s, 206, "{head}");
    assert_eq!(body, &data[8_388_600..8_388_616]);
}

#[test]
fn concurrent_pushes_of_one_tag_through_two_replicas_end_consistent() {
    let Some((_w, b, a, r2)) = two_replicas() else {
        return;
    };
    let (ta, tb) = (
        format!("{}/team/race:latest", a.addr),
        format!("{}/team/race:latest", r2.addr),
    );
    build(&b, &ta, "echo from-a > /which");
    build(&b, &tb, "echo from-b > /which");
    let mut digests = std::collections::BTreeSet::new();
    for round in 0..3 {
        let (pa, pb) = std::thread::scope(|s| {
            let ha = s.spawn(|| b.run(&["push", &ta]));
            let hb = s.spawn(|| b.run(&["push", &tb]));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        let (da, db) = (pushed_digest(&pa.ok()), pushed_digest(&pb.ok()));
        digests.insert(da.clone());
        digests.insert(db.clone());
        // Both replicas agree on the tag, and it names one of the two
        // manifests whole.
        let via_a = manifest_digest(&a.addr, "team/race", "latest");
        let via_b = manifest_digest(&r2.addr, "team/race", "latest");
        assert_eq!(via_a, via_b, "round {round}");
        let now = via_a.1.expect("the tag resolves");
        assert!(
            now == da || now == db,
            "round {round}: {now} is neither push"
        );
        let other = Berth::new();
        let at = format!("{}/team/race@{now}", r2.addr);
        other.run(&["pull", "-q", &at]).ok();
        let which = other.run(&["run", "--rm", &at, "cat", "/which"]).ok();
        let want = if now == da { "from-a" } else { "from-b" };
        assert_eq!(which.trim(), want, "round {round}");
    }
    assert_eq!(digests.len(), 2, "two images, pushed three times each");
}

#[test]
fn gc_with_replicas_running_removes_only_what_nothing_uses() {
    let Some((w, b, a, r2)) = two_replicas() else {
        return;
    };
    let (x, y) = (
        format!("{}/team/x:1", a.addr),
        format!("{}/team/y:1", a.addr),
    );
    build(&b, &x, "echo kept > /x");
    build(&b, &y, "head -c 300000 /dev/urandom > /y");
    b.run(&["push", &x]).ok();
    let ydigest = pushed_digest(&b.run(&["push", &y]).ok());
    let ym = common::manifest_json(&r2.addr, "team/y", &ydigest);
    let ylayer = ym["layers"][1]["digest"].as_str().unwrap().to_string();
    // y goes (through the other replica); x stays.
    let (s, head, _) = curl(&[
        "-X",
        "DELETE",
        &format!("http://{}/v2/team/y/manifests/{ydigest}", r2.addr),
    ]);
    assert_eq!(s, 202, "{head}");

    let gc = |grace: &str| {
        let mut c = b.command(&[
            "registry",
            "gc",
            "--storage",
            STORE,
            "--state-dir",
            b.path("state-gc").to_str().unwrap(),
            "--grace",
            grace,
        ]);
        c.envs(w.env());
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Within the grace period nothing goes: y's blobs may belong to a push
    // still on its way.
    let first = gc("1h");
    assert!(first.starts_with("removed 0 blobs"), "{first}");
    let second = gc("0s");
    assert!(!second.starts_with("removed 0 blobs"), "{second}");
    let (s, _, _) = curl(&[
        "-I",
        &format!("http://{}/v2/team/y/blobs/{ylayer}", r2.addr),
    ]);
    assert_eq!(s, 404, "y's own layer is gone");
    // x, sharing busybox's layer with y, is whole, through either replica.
    for via in [&a.addr, &r2.addr] {
        let other = Berth::new();
        let at = format!("{via}/team/x:1");
        other.run(&["pull", "-q", &at]).ok();
        assert_eq!(
            other.run(&["run", "--rm", &at, "cat", "/x"]).ok().trim(),
            "kept"
        );
    }
}

/// `--s3-redirect`: blob downloads answered with a redirect to a presigned
/// URL of the store (distribution's s3 driver does the same by default), so
/// the bytes bypass the registry; HEAD is still answered by the registry.
#[test]
fn a_replica_with_redirects_sends_downloads_to_the_store() {
    let Some((w, b, a, _r2)) = two_replicas() else {
        return;
    };
    let redirecting = replica_with(&w, &b.path("state-c"), &["--s3-redirect"]);
    let tag = format!("{}/team/direct:1", a.addr);
    build(&b, &tag, "head -c 2000000 /dev/urandom > /blob");
    let pushed = pushed_digest(&b.run(&["push", &tag]).ok());
    let m = common::manifest_json(&redirecting.addr, "team/direct", &pushed);
    let layer = m["layers"][1]["digest"].as_str().unwrap().to_string();
    let url = format!("http://{}/v2/team/direct/blobs/{layer}", redirecting.addr);
    let (s, head, _) = curl(&["-I", &url]);
    assert_eq!(s, 200, "HEAD is answered by the registry: {head}");
    let (s, head, _) = curl(&[&url]);
    assert_eq!(s, 307, "{head}");
    let location = header(&head, "location").expect("location");
    assert!(location.starts_with(&w.endpoint), "{location}");
    assert!(
        location.contains("X-Amz-Signature"),
        "presigned: {location}"
    );
    // Followed, the store hands over the blob's bytes.
    let out = b.path("fetched");
    common::tool("curl", &["-sfL", "-o", out.to_str().unwrap(), &url]);
    let sum = common::tool("sha256sum", &[out.to_str().unwrap()]);
    assert_eq!(format!("sha256:{}", &sum[..64]), layer);
    // And berth's client pulls through it and runs the image.
    let other = Berth::new();
    let there = format!("{}/team/direct:1", redirecting.addr);
    other.run(&["pull", "-q", &there]).ok();
    let size = other
        .run(&["run", "--rm", &there, "sh", "-c", "wc -c < /blob"])
        .ok();
    assert_eq!(size.trim(), "2000000");
}

#[test]
fn a_wrong_bucket_or_key_stops_the_server_at_start() {
    if !have_weed() {
        return;
    }
    let w = SeaweedFs::start("team");
    let b = Berth::new();
    let start = |storage: &str, env: Vec<(&'static str, String)>| {
        let mut c = b.command(&[
            "registry",
            "serve",
            "--open",
            "--addr",
            "127.0.0.1:0",
            "--storage",
            storage,
            "--state-dir",
            b.path("state").to_str().unwrap(),
        ]);
        c.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .envs(env);
        let mut child = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if child.try_wait().unwrap().is_some() {
                let out = child.wait_with_output().unwrap();
                assert!(!out.status.success());
                return String::from_utf8_lossy(&out.stderr).into_owned();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!("registry serve --storage {storage} started anyway");
    };
    let err = start("s3://no-such-bucket/x", w.env());
    assert!(
        err.contains("no-such-bucket") && err.contains("NoSuchBucket"),
        "{err}"
    );
    let mut bad = w.env();
    bad.retain(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY");
    bad.push(("AWS_SECRET_ACCESS_KEY", "not-the-secret".into()));
    let err = start(STORE, bad);
    assert!(err.contains("HTTP 403"), "a wrong secret is refused: {err}");
    let mut anonymous = w.env();
    anonymous.retain(|(k, _)| !k.starts_with("AWS_SECRET") && !k.starts_with("AWS_ACCESS"));
    let err = start(STORE, anonymous);
    assert!(err.contains("HTTP 403"), "no key, no access: {err}");
}

//! The fuzz targets over generated hostile input, on stable, in CI: a few
//! seconds each (`PROPTEST_CASES` raises the count; cargo-fuzz in `fuzz/`
//! runs the same targets for as long as one likes). Inputs are built from
//! what makes each format dangerous — `..` and absolute names, links out
//! of the root and writes through them, whiteouts of parents, hardlinks to
//! the host; references at their length and character limits; manifests
//! with wrong types and sizes; requests with hostile names, digests, ranges
//! and bodies — as well as arbitrary bytes.

use proptest::prelude::*;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n),
        ..ProptestConfig::default()
    }
}

/// One tar entry: name, type, link target, content.
fn entry() -> impl Strategy<Value = (String, u8, String, Vec<u8>)> {
    let name = prop::sample::select(vec![
        "a",
        "a/b",
        "a/b/c",
        "../escape",
        "../../secret",
        "/abs",
        "/etc/passwd",
        "a/../../secret",
        "link",
        "link/x",
        "link/../x",
        "deep/link/f",
        "hostdir",
        "up/x",
        ".wh.a",
        "a/.wh.b",
        ".wh..wh..opq",
        "a/.wh..wh..opq",
        ".wh.link",
        "dirlink/new",
        "./a",
        "a//b",
        "",
        ".",
        "..",
    ])
    .prop_map(str::to_string);
    let target = prop::sample::select(vec![
        "/",
        "..",
        "../..",
        "../secret",
        "../hostdir",
        "/secret",
        "a",
        "a/b",
        "link",
        "../../../../../../tmp",
        "dirlink",
        "../root/a",
    ])
    .prop_map(str::to_string);
    // Regular, hardlink, symlink, directory, char device, FIFO.
    let typ = prop::sample::select(vec![b'0', b'1', b'2', b'5', b'3', b'6']);
    (name, typ, target, prop::collection::vec(any::<u8>(), 0..64))
}

/// A tar archive written header by header, so names tar-rs would refuse
/// to write (`..`, absolute) are in it as an attacker would put them.
fn tar_of(entries: &[(String, u8, String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, typ, target, data) in entries {
        let mut h = tar::Header::new_ustar();
        let n = name.as_bytes();
        h.as_mut_bytes()[..n.len().min(100)].copy_from_slice(&n[..n.len().min(100)]);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::new(*typ));
        let body: &[u8] = if *typ == b'0' { data } else { &[] };
        h.set_size(body.len() as u64);
        if *typ == b'1' || *typ == b'2' {
            let t = target.as_bytes();
            h.as_old_mut().linkname[..t.len().min(100)].copy_from_slice(&t[..t.len().min(100)]);
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn reference_text() -> impl Strategy<Value = String> {
    let part = prop::sample::select(vec![
        "docker.io",
        "localhost:5000",
        "127.0.0.1:5000",
        "[::1]:5000",
        "library",
        "a",
        "A",
        "a-b",
        "a__b",
        "a..b",
        "busybox",
        ":",
        "@",
        "/",
        "//",
        "latest",
        "sha256:",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "_",
        "-",
        ".",
        "x".repeat(128).leak(),
        "é",
        " ",
    ]);
    prop::collection::vec(part, 0..8).prop_map(|v| v.concat())
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let leaf = prop_oneof![
        Just(json!(null)),
        Just(json!(-1)),
        Just(json!(1u64 << 63)),
        Just(json!("sha256:00")),
        Just(json!("application/vnd.oci.image.manifest.v1+json")),
        Just(json!("application/vnd.oci.image.index.v1+json")),
        Just(json!("")),
        Just(json!(2)),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "schemaVersion",
                    "mediaType",
                    "config",
                    "layers",
                    "manifests",
                    "digest",
                    "size",
                    "platform",
                    "architecture",
                    "os",
                    "annotations",
                    "urls",
                    "subject",
                    "artifactType",
                    "rootfs",
                    "diff_ids",
                ])
                .prop_map(str::to_string),
                inner,
                0..6,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    let name = prop::sample::select(vec![
        "a",
        "a/b",
        "A",
        "../x",
        "a/../b",
        "%2e%2e",
        "a//b",
        "_catalog",
        "x".repeat(300).leak(),
        "a/blobs",
        "a/manifests",
    ]);
    let tail = prop::sample::select(vec![
        "/",
        "/v2/",
        "/v2/_catalog?n=-1",
        "/v2/_catalog?n=99999999999999999999&last=%ff",
        "manifests/latest",
        "manifests/sha256:zz",
        "manifests/../../x",
        "blobs/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "blobs/uploads/",
        "blobs/uploads/?digest=sha256:00",
        "blobs/uploads/?mount=sha256:00&from=../x",
        "blobs/uploads/abc",
        "blobs/uploads/00000000-0000-0000-0000-000000000000?digest=x",
        "tags/list?n=0",
        "referrers/sha256:00?artifactType=%00",
        "/token?scope=repository:a:*",
        "/token?scope=x:y:z:w",
    ]);
    let header = prop::sample::select(vec![
        "",
        "Range: bytes=0-0\n",
        "Range: bytes=-1\n",
        "Range: bytes=99999999999999999999-\n",
        "Content-Range: 5-1\n",
        "Content-Range: 0-18446744073709551615\n",
        "Content-Type: application/vnd.oci.image.index.v1+json\n",
        "Authorization: Basic Og==\n",
        "Authorization: Bearer a.b.c\n",
        "Authorization: Bearer ...\n",
        "Accept: */*\n",
    ]);
    (
        0u8..6,
        name,
        tail,
        header,
        prop::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(m, n, t, h, body)| {
            let target = if t.starts_with('/') {
                t.to_string()
            } else {
                format!("/v2/{n}/{t}")
            };
            let mut v = vec![m];
            v.extend_from_slice(format!("{target}\n{h}\n").as_bytes());
            v.extend(body);
            v
        })
}

proptest! {
    #![proptest_config(cases(400))]

    #[test]
    fn hostile_layers_stay_in_their_root(entries in prop::collection::vec(entry(), 1..8)) {
        berth_fuzz::layer_apply(&tar_of(&entries));
    }

    #[test]
    fn arbitrary_bytes_as_a_layer(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        berth_fuzz::layer_apply(&data);
    }
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn references(s in reference_text()) {
        berth_fuzz::reference(s.as_bytes());
    }

    #[test]
    fn arbitrary_text_as_a_reference(s in "\\PC{0,200}") {
        berth_fuzz::reference(s.as_bytes());
    }

    #[test]
    fn manifests(v in json_value()) {
        berth_fuzz::manifest(&serde_json::to_vec(&v).unwrap());
    }

    #[test]
    fn arbitrary_bytes_as_a_manifest(data in prop::collection::vec(any::<u8>(), 0..512)) {
        berth_fuzz::manifest(&data);
    }

    #[test]
    fn arbitrary_text_as_a_dockerfile(s in "\\PC{0,400}") {
        berth_fuzz::dockerfile(s.as_bytes());
    }
}

proptest! {
    #![proptest_config(cases(1500))]

    #[test]
    fn registry_requests(r in request()) {
        berth_fuzz::registry_request(&r);
    }

    #[test]
    fn arbitrary_bytes_as_a_request(data in prop::collection::vec(any::<u8>(), 1..300)) {
        berth_fuzz::registry_request(&data);
    }
}

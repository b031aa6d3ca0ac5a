//! Image store tests: import, names, save/load round trips, gc and check.

use std::fs;
use std::path::Path;

use berth_types::{ImageConfig, Reference};

use super::archive::ArchiveFormat;
use super::import::ImportOptions;
use super::{IMAGE_LABEL, RemoveEvent};
use crate::Store;
use crate::archive::diff::{WriteOptions, changes_all, write_layer};
use crate::snapshot::Driver;

fn rootfs_tar(marker: &str) -> Vec<u8> {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::create_dir_all(d.join("bin")).unwrap();
    fs::create_dir_all(d.join("etc")).unwrap();
    fs::write(d.join("etc/marker"), marker).unwrap();
    fs::write(d.join("bin/tool"), vec![1u8; 10_000]).unwrap();
    std::os::unix::fs::symlink("tool", d.join("bin/sh")).unwrap();
    // Times clamped: two calls a second apart make the same bytes.
    write_layer(
        d,
        &changes_all(d).unwrap(),
        Vec::new(),
        &WriteOptions {
            clamp_mtime: Some(1_700_000_000),
        },
    )
    .unwrap()
}

fn store(driver: Driver) -> (tempfile::TempDir, Store) {
    let t = tempfile::tempdir().unwrap();
    crate::snapshot::Snapshotter::open_with(&t.path().join("snapshots"), Some(driver)).unwrap();
    let s = Store::open(t.path()).unwrap();
    (t, s)
}

fn import(s: &Store, name: Option<&str>, marker: &str) -> super::Image {
    let mut cfg = ImageConfig::new_for_host();
    cfg.config_mut().cmd = Some(vec!["/bin/sh".into()]);
    s.import(
        &rootfs_tar(marker)[..],
        ImportOptions {
            name: name.map(|n| Reference::parse(n).unwrap()),
            config: cfg,
            comment: "Imported from -".into(),
            created: "2026-01-01T00:00:00Z".into(),
        },
    )
    .unwrap()
}

#[test]
fn import_resolve_tag_and_remove() {
    let (_t, s) = store(Driver::Overlay);
    let img = import(&s, Some("busybox"), "one");
    assert_eq!(img.config.rootfs.diff_ids.len(), 1);
    let top = img.top_chain().unwrap();
    assert!(s.snapshots.has_layer(&top));
    assert_eq!(
        fs::read_to_string(s.snapshots.layer_fs(&top).join("etc/marker")).unwrap(),
        "one"
    );
    // Every way a docker user names it.
    for q in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        &img.id.to_string(),
        img.id.hex(),
        &img.id.hex()[..12],
    ] {
        assert_eq!(s.resolve(q).unwrap().id, img.id, "{q}");
    }
    let by_digest = format!("busybox@{}", img.manifest_desc.digest);
    assert_eq!(s.resolve(&by_digest).unwrap().id, img.id);
    assert!(matches!(
        s.resolve("nope"),
        Err(crate::StoreError::ImageNotFound(_))
    ));

    s.tag(&img, &Reference::parse("me/box:v1").unwrap())
        .unwrap();
    let img = s.resolve("busybox").unwrap();
    assert_eq!(img.names.len(), 2);
    // By id with two names: refused without force.
    assert!(s.remove_image(img.id.short(), false).is_err());
    // By name: untag only.
    let ev = s.remove_image("me/box:v1", false).unwrap();
    assert_eq!(ev, vec![RemoveEvent::Untagged("me/box:v1".into())]);
    // In use by a snapshot: refused.
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(IMAGE_LABEL.to_string(), img.id.to_string());
    s.snapshots.prepare("ctr", Some(&top), labels).unwrap();
    let err = s.remove_image("busybox", false).unwrap_err();
    assert!(
        err.to_string().contains("is using its referenced image"),
        "{err}"
    );
    s.snapshots.remove_active("ctr").unwrap();
    let ev = s.remove_image("busybox", false).unwrap();
    assert_eq!(ev[0], RemoveEvent::Untagged("busybox:latest".into()));
    assert!(ev.contains(&RemoveEvent::Deleted(img.id.clone())));
    assert!(s.images().unwrap().is_empty());
    assert!(
        s.content.list().unwrap().is_empty(),
        "gc removed every blob"
    );
    assert!(s.snapshots.layers().unwrap().is_empty());
}

#[test]
fn retag_leaves_dangling_image() {
    let (_t, s) = store(Driver::Copy);
    let a = import(&s, Some("app"), "a");
    let b = import(&s, Some("app"), "b");
    let imgs = s.images().unwrap();
    assert_eq!(imgs.len(), 2);
    let old = imgs.iter().find(|i| i.id == a.id).unwrap();
    assert!(old.names.is_empty(), "old image is dangling");
    assert_eq!(s.resolve("app").unwrap().id, b.id);
}

#[test]
fn same_input_gives_same_image() {
    let (_t, s) = store(Driver::Overlay);
    let a = import(&s, Some("x"), "same");
    let b = import(&s, Some("y"), "same");
    assert_eq!(a.id, b.id);
    assert_eq!(s.images().unwrap().len(), 1);
}

/// One image stored under two manifests (its docker-archive copy loaded
/// beside it): a name finds the image with every name and manifest it has,
/// as `images` groups them, and an id finds the same.
#[test]
fn a_name_finds_the_whole_image_across_manifests() {
    let (_t, s) = store(Driver::Overlay);
    let img = import(&s, Some("app:oci"), "twice");
    let other = import(&s, Some("unrelated"), "other");
    let bytes = s
        .save(
            &[(img.clone(), vec![Reference::parse("app:docker").unwrap()])],
            ArchiveFormat::Docker,
            Vec::new(),
        )
        .unwrap();
    s.load(&bytes[..]).unwrap();
    let listed = s.images().unwrap();
    assert_eq!(listed.len(), 2);
    let grouped = listed.iter().find(|i| i.id == img.id).unwrap();
    assert_eq!(grouped.manifests.len(), 2, "two manifests, one image");
    for q in ["app:oci", "app:docker", img.id.short()] {
        let r = s.resolve(q).unwrap();
        assert_eq!(r.id, img.id, "{q}");
        assert_eq!(r.names, grouped.names, "{q}");
        assert_eq!(r.manifests, grouped.manifests, "{q}");
        assert_eq!(r.manifest_desc, grouped.manifest_desc, "{q}");
    }
    assert_eq!(s.resolve("unrelated").unwrap().id, other.id);
}

fn save_load(format: ArchiveFormat) {
    let (_t, s) = store(Driver::Overlay);
    let img = import(&s, Some("localhost:5000/team/app:1.0"), "saved");
    let names = img.names.clone();
    let bytes = s.save(&[(img.clone(), names)], format, Vec::new()).unwrap();
    let (_t2, s2) = store(Driver::Overlay);
    let loaded = s2.load(&bytes[..]).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id, img.id, "config digest kept");
    let back = s2.resolve("localhost:5000/team/app:1.0").unwrap();
    assert_eq!(back.config.rootfs.diff_ids, img.config.rootfs.diff_ids);
    if format == ArchiveFormat::Oci {
        assert_eq!(
            back.manifest_desc.digest, img.manifest_desc.digest,
            "manifest kept"
        );
    }
    let top = back.top_chain().unwrap();
    assert_eq!(
        fs::read_to_string(s2.snapshots.layer_fs(&top).join("etc/marker")).unwrap(),
        "saved"
    );
    // Gzipped archives load too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &bytes).unwrap();
    let (_t3, s3) = store(Driver::Copy);
    s3.load(&gz.finish().unwrap()[..]).unwrap();
    assert_eq!(
        s3.resolve("localhost:5000/team/app:1.0").unwrap().id,
        img.id
    );
}

#[test]
fn docker_archive_round_trip() {
    save_load(ArchiveFormat::Docker);
}

#[test]
fn oci_archive_round_trip() {
    save_load(ArchiveFormat::Oci);
}

#[test]
fn bad_archives_leave_no_names() {
    let (_t, s) = store(Driver::Overlay);
    let img = import(&s, Some("a"), "x");
    let bytes = s
        .save(
            &[(img.clone(), img.names.clone())],
            ArchiveFormat::Docker,
            Vec::new(),
        )
        .unwrap();
    let (_t2, s2) = store(Driver::Overlay);
    // Truncated.
    assert!(s2.load(&bytes[..bytes.len() / 2]).is_err());
    // Not a tar.
    let err = s2.load(&b"hello world"[..]).unwrap_err();
    assert!(err.to_string().contains("archive"), "{err}");
    // A blob whose name lies.
    let mut tampered = bytes.clone();
    let pos = find(&tampered, b"ID=")
        .or_else(|| find(&tampered, b"saved"))
        .or_else(|| find(&tampered, &[1u8; 64]));
    let p = pos.expect("layer content visible in the plain tar");
    tampered[p] ^= 0xff;
    let err = s2.load(&tampered[..]).unwrap_err();
    assert!(
        err.to_string().contains("not sha256:") || err.to_string().contains("content is"),
        "{err}"
    );
    assert!(s2.images().unwrap().is_empty());
    let rep = s2.check(false).unwrap();
    assert!(
        rep.problems.iter().all(|p| !p.is_error()),
        "{:?}",
        rep.problems
    );
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

#[test]
fn check_finds_and_repairs_corruption() {
    let (_t, s) = store(Driver::Overlay);
    let img = import(&s, Some("victim"), "v");
    let keep = import(&s, Some("keeper"), "k");
    assert!(s.check(false).unwrap().problems.is_empty());
    // Corrupt the victim's layer blob and drop the keeper's unpacked layer.
    let blob = &img.manifest.layers[0].digest;
    let p = s.content.path(blob);
    let mut b = fs::read(&p).unwrap();
    let n = b.len();
    b[n / 2] ^= 1;
    fs::write(&p, b).unwrap();
    s.snapshots
        .remove_layer(&keep.top_chain().unwrap())
        .unwrap();
    fs::write(s.content.root().join("ingest/leftover"), "x").unwrap();
    let rep = s.check(false).unwrap();
    let errs: Vec<String> = rep
        .problems
        .iter()
        .filter(|p| p.is_error())
        .map(|p| p.to_string())
        .collect();
    assert_eq!(errs.len(), 3, "{errs:?}"); // corrupt blob, broken image, missing layer
    let rep = s.check(true).unwrap();
    assert!(!rep.repairs.is_empty());
    let rep = s.check(false).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert!(s.resolve("victim").is_err());
    assert!(s.snapshots.has_layer(&keep.top_chain().unwrap()));
}

#[test]
fn concurrent_imports_and_tags_are_safe() {
    let (_t, s) = store(Driver::Overlay);
    let root = s.root().to_path_buf();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let root = root.clone();
            std::thread::spawn(move || {
                let s = Store::open(&root).unwrap();
                let img = import(&s, Some(&format!("img{i}")), &format!("m{}", i % 3));
                s.tag(&img, &Reference::parse(&format!("shared:t{i}")).unwrap())
                    .unwrap();
                if i % 2 == 0 {
                    s.gc().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let imgs = s.images().unwrap();
    assert_eq!(imgs.len(), 3);
    let names: usize = imgs.iter().map(|i| i.names.len()).sum();
    assert_eq!(names, 16);
    assert!(s.check(false).unwrap().problems.is_empty());
    let _ = Path::new("");
}

/// An image of `arch` (its config says so), unnamed, as a multi-platform
/// build stores each platform's.
fn import_for(s: &Store, arch: &str, marker: &str) -> super::Image {
    let mut cfg = ImageConfig::new_for_host();
    cfg.architecture = arch.into();
    cfg.variant = (arch == "arm64").then(|| "v8".into());
    s.import(
        &rootfs_tar(marker)[..],
        ImportOptions {
            name: None,
            config: cfg,
            comment: String::new(),
            created: "2026-01-01T00:00:00Z".into(),
        },
    )
    .unwrap()
}

#[test]
fn a_name_on_an_index_lists_once_and_resolves_each_platform() {
    use berth_types::Platform;
    let (_t, s) = store(Driver::Overlay);
    let host = Platform::host();
    let other = if host.architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let mine = import_for(&s, &host.architecture, "mine");
    let theirs = import_for(&s, other, "theirs");
    let with_platform = |img: &super::Image| {
        let mut d = img.manifest_desc.clone();
        d.platform = Some(Platform {
            os: "linux".into(),
            architecture: img.config.architecture.clone(),
            variant: img.config.variant.clone(),
            ..Default::default()
        });
        d
    };
    // The foreign platform first: the name still runs as the host's.
    let index = s
        .put_index(
            vec![with_platform(&theirs), with_platform(&mine)],
            &[Reference::parse("app:multi").unwrap()],
        )
        .unwrap();
    let listed = s.images().unwrap();
    assert_eq!(listed.len(), 1, "one line for the index: {listed:?}");
    assert_eq!(listed[0].id, mine.id);
    let named = s.resolve("app:multi").unwrap();
    assert_eq!(named.index.as_ref().map(|d| &d.digest), Some(&index.digest));
    let other_p = Platform::parse(&format!("linux/{other}")).unwrap();
    assert_eq!(s.resolve("app:multi").unwrap().id, mine.id);
    let foreign = s.resolve_platform("app:multi", &other_p).unwrap();
    assert_eq!(foreign.id, theirs.id);
    // The other platform is found by id (a container made from it), not listed.
    assert!(s.resolve(&theirs.id.to_string()).unwrap().secondary);
    let e = s.remove_image(&theirs.id.to_string(), true).unwrap_err();
    assert!(
        e.to_string()
            .contains("one platform of a multi-platform image"),
        "{e}"
    );
    // gc keeps both platforms; check finds the index sound.
    s.gc().unwrap();
    assert!(s.content.exists(&theirs.manifest_desc.digest));
    let report = s.check(false).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // A new name follows the index; removing the names frees everything.
    s.tag(&named, &Reference::parse("app:copy").unwrap())
        .unwrap();
    assert_eq!(
        s.resolve_platform("app:copy", &other_p).unwrap().id,
        theirs.id
    );
    s.remove_image("app:copy", false).unwrap();
    s.remove_image("app:multi", false).unwrap();
    assert!(s.images().unwrap().is_empty());
    assert!(!s.content.exists(&theirs.manifest_desc.digest));
    assert!(!s.content.exists(&index.digest));
}

//! Tests for layer apply and diff, including crafted hostile tars.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::apply::{ApplyOptions, Whiteouts, apply};
use super::diff::{Change, WriteOptions, changes_dirs, changes_overlay, write_layer};
use super::{ArchiveError, decompress};

/// A tar builder that writes names byte-for-byte (the tar crate refuses `..`).
struct Raw(Vec<u8>);

impl Raw {
    fn new() -> Self {
        Raw(Vec::new())
    }

    fn entry(
        mut self,
        name: &str,
        kind: tar::EntryType,
        link: &str,
        data: &[u8],
        mode: u32,
    ) -> Self {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn file(self, name: &str, data: &str) -> Self {
        self.entry(name, tar::EntryType::Regular, "", data.as_bytes(), 0o644)
    }
    fn dir(self, name: &str) -> Self {
        self.entry(name, tar::EntryType::Directory, "", b"", 0o755)
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(name, tar::EntryType::Symlink, target, b"", 0o777)
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        self.entry(name, tar::EntryType::Link, target, b"", 0o644)
    }
    fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        self.0
    }
}

struct Fixture {
    _t: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), "original").unwrap();
    Fixture {
        _t: t,
        root,
        outside,
    }
}

impl Fixture {
    fn apply(&self, tar: &[u8]) -> Result<(), ArchiveError> {
        apply(&self.root, tar, &ApplyOptions::default()).map(|_| ())
    }

    /// The directory beside the root is untouched.
    fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("victim")]);
        assert_eq!(
            fs::read_to_string(self.outside.join("victim")).unwrap(),
            "original"
        );
    }
}

#[test]
fn dotdot_path_is_refused() {
    let f = fixture();
    let tar = Raw::new().file("../outside/victim", "pwned").finish();
    let err = f.apply(&tar).unwrap_err();
    assert!(err.to_string().contains("escapes the layer root"), "{err}");
    f.assert_outside_untouched();
}

#[test]
fn absolute_path_lands_inside() {
    let f = fixture();
    let abs = format!("{}/evil", f.outside.display());
    let tar = Raw::new()
        .file(&abs, "x")
        .file("/etc/hostname", "box")
        .finish();
    f.apply(&tar).unwrap();
    f.assert_outside_untouched();
    assert_eq!(
        fs::read_to_string(f.root.join("etc/hostname")).unwrap(),
        "box"
    );
    assert!(f.root.join(abs.trim_start_matches('/')).exists());
}

#[test]
fn file_through_absolute_symlink_stays_inside() {
    let f = fixture();
    let tar = Raw::new()
        .symlink("link", f.outside.to_str().unwrap())
        .file("link/victim", "pwned")
        .finish();
    f.apply(&tar).unwrap();
    f.assert_outside_untouched();
    // The write went to <root><outside>/victim.
    let inside = f
        .root
        .join(f.outside.strip_prefix("/").unwrap())
        .join("victim");
    assert_eq!(fs::read_to_string(inside).unwrap(), "pwned");
}

#[test]
fn file_through_relative_symlink_chain_stays_inside() {
    let f = fixture();
    let tar = Raw::new()
        .symlink("a", "b")
        .symlink("b", "../../../../../../..")
        .file("a/outside/victim", "pwned")
        .finish();
    f.apply(&tar).unwrap();
    f.assert_outside_untouched();
    assert_eq!(
        fs::read_to_string(f.root.join("outside/victim")).unwrap(),
        "pwned"
    );
}

#[test]
fn hardlink_out_of_root_is_refused() {
    let f = fixture();
    let tar = Raw::new().hardlink("h", "../outside/victim").finish();
    let err = f.apply(&tar).unwrap_err();
    assert!(err.to_string().contains("escapes the layer root"), "{err}");
    f.assert_outside_untouched();
}

#[test]
fn hardlink_through_symlink_links_inside() {
    let f = fixture();
    let tar = Raw::new()
        .symlink("s", f.outside.to_str().unwrap())
        .hardlink("h", "s/victim")
        .finish();
    // s/victim resolves to <root>/<outside>/victim, which does not exist: an error, not a link to the host file.
    assert!(f.apply(&tar).is_err());
    f.assert_outside_untouched();
    assert_eq!(fs::metadata(f.outside.join("victim")).unwrap().nlink(), 1);
}

#[test]
fn hardlink_to_symlink_links_the_symlink() {
    let f = fixture();
    let victim = f.outside.join("victim");
    let tar = Raw::new()
        .symlink("s", victim.to_str().unwrap())
        .hardlink("h", "s")
        .file("h", "overwrite")
        .finish();
    f.apply(&tar).unwrap();
    f.assert_outside_untouched();
    assert_eq!(fs::metadata(&victim).unwrap().nlink(), 1);
}

#[test]
fn regular_file_replaces_symlink_instead_of_following_it() {
    let f = fixture();
    let tar = Raw::new()
        .symlink("x", f.outside.join("victim").to_str().unwrap())
        .file("x", "inside")
        .finish();
    f.apply(&tar).unwrap();
    f.assert_outside_untouched();
    let m = fs::symlink_metadata(f.root.join("x")).unwrap();
    assert!(m.is_file());
}

#[test]
fn whiteout_through_symlink_deletes_inside_only() {
    let f = fixture();
    let tar = Raw::new()
        .symlink("l", f.outside.to_str().unwrap())
        .file("l/.wh.victim", "")
        .entry(
            "../outside/.wh.victim",
            tar::EntryType::Regular,
            "",
            b"",
            0o644,
        )
        .finish();
    assert!(f.apply(&tar).is_err());
    f.assert_outside_untouched();
}

#[test]
fn device_nodes_are_created_inside() {
    let f = fixture();
    let mut h = tar::Header::new_ustar();
    h.set_path("dev/null").unwrap();
    h.set_entry_type(tar::EntryType::Char);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_mode(0o666);
    h.set_size(0);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, std::io::empty()).unwrap();
    let mut h2 = tar::Header::new_ustar();
    h2.set_path("run/fifo").unwrap();
    h2.set_entry_type(tar::EntryType::Fifo);
    h2.set_mode(0o600);
    h2.set_size(0);
    h2.set_cksum();
    b.append(&h2, std::io::empty()).unwrap();
    f.apply(&b.into_inner().unwrap()).unwrap();
    let m = fs::symlink_metadata(f.root.join("dev/null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), rustix::fs::makedev(1, 3));
    assert!(
        fs::symlink_metadata(f.root.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn truncated_tar_is_an_error() {
    let f = fixture();
    let tar = Raw::new().file("a", &"x".repeat(2000)).finish();
    let err = f.apply(&tar[..1200]).unwrap_err();
    assert!(matches!(err, ArchiveError::Tar(_)), "{err}");
}

#[test]
fn garbage_is_an_error() {
    let f = fixture();
    let junk = vec![0x42u8; 4096];
    assert!(f.apply(&junk).is_err());
}

#[test]
fn whiteouts_delete_and_opaque() {
    let f = fixture();
    let base = Raw::new()
        .dir("a/")
        .file("a/keep", "k")
        .file("a/gone", "g")
        .dir("o/")
        .file("o/old", "o")
        .finish();
    f.apply(&base).unwrap();
    let top = Raw::new()
        .file("a/.wh.gone", "")
        .dir("o/")
        .file("o/new", "n")
        .file("o/.wh..wh..opq", "")
        .file(".wh.nothere", "")
        .finish();
    f.apply(&top).unwrap();
    assert!(f.root.join("a/keep").exists());
    assert!(!f.root.join("a/gone").exists());
    assert!(
        !f.root.join("o/old").exists(),
        "opaque dir hides lower content"
    );
    assert!(
        f.root.join("o/new").exists(),
        "opaque keeps this layer's content"
    );
}

#[test]
fn overlay_whiteouts_become_overlay_markers() {
    let f = fixture();
    let tar = Raw::new()
        .dir("a/")
        .file("a/.wh.gone", "")
        .dir("o/")
        .file("o/.wh..wh..opq", "")
        .finish();
    let opts = ApplyOptions {
        whiteouts: Whiteouts::Overlay,
        ..Default::default()
    };
    apply(&f.root, &tar[..], &opts).unwrap();
    let m = fs::symlink_metadata(f.root.join("a/gone")).unwrap();
    assert!(m.file_type().is_char_device() && m.rdev() == 0);
    let mut buf = [0u8; 2];
    let n =
        rustix::fs::lgetxattr(f.root.join("o"), "trusted.overlay.opaque", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"y");
    // And the overlay differ reads them back.
    let ch = changes_overlay(&f.root).unwrap();
    assert!(ch.contains(&Change::Delete(b"a/gone".to_vec())));
    assert!(ch.contains(&Change::Opaque(b"o".to_vec())));
}

/// fuse-overlayfs marks an opaque directory with a `.wh..wh..opq` file and a
/// `.wh..opq` whiteout beside it: the differ reads them as the directory
/// being opaque, and neither is a change of its own.
#[test]
fn fuse_overlayfs_opaque_markers_read_as_opaque() {
    let t = tempfile::tempdir().unwrap();
    let up = t.path();
    fs::create_dir_all(up.join("d")).unwrap();
    fs::write(up.join("d/.wh..wh..opq"), "").unwrap();
    fs::write(up.join("d/new"), "x").unwrap();
    let whiteout = rustix::fs::mknodat(
        rustix::fs::CWD,
        up.join("d/.wh..opq"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    );
    let ch = changes_overlay(up).unwrap();
    assert!(ch.contains(&Change::Opaque(b"d".to_vec())), "{ch:?}");
    assert!(ch.contains(&Change::Upsert(b"d/new".to_vec())));
    assert!(
        !ch.iter().any(|c| match c {
            Change::Upsert(p) | Change::Delete(p) | Change::Opaque(p) => p.starts_with(b"d/.wh."),
        }),
        "{ch:?} (whiteout made: {})",
        whiteout.is_ok()
    );
}

fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/deep/er")).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/deep/er/f"), vec![7u8; 100_000]).unwrap();
    fs::set_permissions(
        root.join("etc/deep/er/f"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("pw")).unwrap();
    fs::hard_link(root.join("etc/passwd"), root.join("etc/passwd-")).unwrap();
    let long = "l".repeat(150);
    fs::write(root.join(&long), "long name").unwrap();
    std::os::unix::fs::chown(root.join("etc/passwd"), Some(1000), Some(1000)).unwrap();
}

fn layer_bytes(src: &Path, changes: &[Change]) -> Vec<u8> {
    write_layer(src, changes, Vec::new(), &WriteOptions::default()).unwrap()
}

#[test]
fn diff_then_apply_round_trips() {
    let t = tempfile::tempdir().unwrap();
    let (empty, tree, out) = (t.path().join("e"), t.path().join("t"), t.path().join("o"));
    for d in [&empty, &tree, &out] {
        fs::create_dir(d).unwrap();
    }
    build_tree(&tree);
    let ch = changes_dirs(&empty, &tree).unwrap();
    let bytes = layer_bytes(&tree, &ch);
    assert_eq!(bytes, layer_bytes(&tree, &ch), "deterministic");
    apply(&out, &bytes[..], &ApplyOptions::default()).unwrap();
    assert_eq!(
        fs::read_to_string(out.join("etc/passwd")).unwrap(),
        "root:x:0:0::/root:/bin/sh\n"
    );
    let m = fs::metadata(out.join("etc/passwd")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.nlink()), (1000, 1000, 2));
    assert_eq!(
        fs::metadata(out.join("etc/deep/er/f")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::read_link(out.join("pw")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read_to_string(out.join("l".repeat(150))).unwrap(),
        "long name"
    );
    assert_eq!(
        fs::metadata(out.join("etc/passwd")).unwrap().mtime(),
        fs::metadata(tree.join("etc/passwd")).unwrap().mtime()
    );
    // Nothing differs between the source and the copy.
    assert_eq!(changes_dirs(&tree, &out).unwrap(), vec![]);
}

#[test]
fn diff_of_two_trees_gives_whiteouts() {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper, out) = (t.path().join("l"), t.path().join("u"), t.path().join("o"));
    fs::create_dir(&lower).unwrap();
    build_tree(&lower);
    // The upper tree starts as an exact copy (same times) of the lower one.
    fs::create_dir(&upper).unwrap();
    copy_via_layer(&lower, &upper);
    fs::remove_file(upper.join("pw")).unwrap();
    fs::remove_dir_all(upper.join("etc/deep")).unwrap();
    fs::write(upper.join("new"), "n").unwrap();
    let ch = changes_dirs(&lower, &upper).unwrap();
    assert_eq!(
        ch,
        vec![
            Change::Delete(b"etc/deep".to_vec()),
            Change::Upsert(b"new".to_vec()),
            Change::Delete(b"pw".to_vec()),
        ]
    );
    // Apply lower then the diff: equals upper.
    fs::create_dir(&out).unwrap();
    let full = changes_dirs(&t.path().join("nothing"), &lower);
    assert!(full.is_ok());
    copy_via_layer(&lower, &out);
    apply(
        &out,
        &layer_bytes(&upper, &ch)[..],
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(changes_dirs(&upper, &out).unwrap(), vec![]);
}

fn copy_via_layer(src: &Path, dst: &Path) {
    let empty = tempfile::tempdir().unwrap();
    let ch = changes_dirs(empty.path(), src).unwrap();
    apply(dst, &layer_bytes(src, &ch)[..], &ApplyOptions::default()).unwrap();
}

#[test]
fn sorted_parents_first_and_clamped_times() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path();
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("a/b/c"), "x").unwrap();
    fs::write(src.join("a-b"), "x").unwrap();
    let ch = vec![
        Change::Upsert(b"a-b".to_vec()),
        Change::Upsert(b"a/b/c".to_vec()),
    ];
    let bytes = write_layer(
        src,
        &ch,
        Vec::new(),
        &WriteOptions {
            clamp_mtime: Some(5),
        },
    )
    .unwrap();
    let mut ar = tar::Archive::new(&bytes[..]);
    let names: Vec<(String, u64)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().display().to_string(),
                e.header().mtime().unwrap(),
            )
        })
        .collect();
    let just: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(just, vec!["a/", "a/b/", "a/b/c", "a-b"]);
    assert!(names.iter().all(|(_, t)| *t <= 5));
}

#[test]
fn compressed_layers_apply() {
    let f = fixture();
    let tar = Raw::new().file("hello", "world").finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let (_, mut r) = decompress(&gz[..]).unwrap();
    let mut plain = Vec::new();
    r.read_to_end(&mut plain).unwrap();
    assert_eq!(plain, tar);
    let zs = zstd::encode_all(&tar[..], 3).unwrap();
    let (_, r) = decompress(&zs[..]).unwrap();
    apply(&f.root, r, &ApplyOptions::default()).unwrap();
    assert_eq!(fs::read_to_string(f.root.join("hello")).unwrap(), "world");
}

/// A layer may carry its files' xattrs, but not overlayfs's own metadata in
/// either namespace: `trusted.overlay.*` (root's overlay) or
/// `user.overlay.*` (a user's, mounted with `userxattr`), which would let it
/// hide the layers below or redirect lookups.
#[test]
fn a_layer_cannot_forge_overlay_metadata_in_either_namespace() {
    let f = fixture();
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("SCHILY.xattr.user.overlay.opaque", &b"y"[..]),
        ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
        ("SCHILY.xattr.user.kept", &b"yes"[..]),
    ])
    .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, "d", &[][..]).unwrap();
    let tar = b.into_inner().unwrap();
    f.apply(&tar).unwrap();
    let d = f.root.join("d");
    let mut buf = [0u8; 8];
    for forged in ["user.overlay.opaque", "trusted.overlay.opaque"] {
        assert!(
            rustix::fs::lgetxattr(&d, forged, &mut buf[..]).is_err(),
            "{forged} was set"
        );
    }
    // The filesystem here may not take user xattrs; when it does, an
    // ordinary one is kept.
    if let Ok(n) = rustix::fs::lgetxattr(&d, "user.kept", &mut buf[..]) {
        assert_eq!(&buf[..n], b"yes");
    }
}

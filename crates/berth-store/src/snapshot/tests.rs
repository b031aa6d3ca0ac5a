//! Snapshotter tests for both drivers, mounting for real where the driver is overlay.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::archive::diff::{Change, WriteOptions, changes_all, write_layer};

fn layer_from(build: impl FnOnce(&Path)) -> Vec<u8> {
    let t = tempfile::tempdir().unwrap();
    build(t.path());
    let ch = changes_all(t.path()).unwrap();
    write_layer(t.path(), &ch, Vec::new(), &WriteOptions::default()).unwrap()
}

fn base_layer() -> Vec<u8> {
    layer_from(|d| {
        fs::create_dir_all(d.join("etc")).unwrap();
        fs::write(d.join("etc/os-release"), "ID=test\n").unwrap();
        fs::write(d.join("gone"), "bye").unwrap();
    })
}

fn whiteout_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path(".wh.gone").unwrap();
    h.set_size(0);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("added").unwrap();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"hi"[..]).unwrap();
    b.into_inner().unwrap()
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

fn mount(m: &Mount, target: &Path) -> MountGuard {
    use rustix::mount::{MountFlags, mount as sys_mount, mount_bind_recursive};
    if m.typ == "bind" {
        mount_bind_recursive(Path::new(&m.source), target).unwrap();
    } else {
        let data = std::ffi::CString::new(m.options.join(",")).unwrap();
        sys_mount(
            &*m.source,
            target,
            &*m.typ,
            MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .unwrap();
    }
    MountGuard(target.to_path_buf())
}

fn two_layers(s: &Snapshotter) -> (Digest, Digest) {
    let base = base_layer();
    let ex = s.extract(None, &base[..]).unwrap();
    let d1 = ex.diff_id.clone();
    assert_eq!(d1, Digest::sha256_of(&base));
    let c1 = s.commit_extracted(ex, Some(&d1)).unwrap();
    assert_eq!(c1, d1, "the base layer's chain id is its diff id");
    let top = whiteout_layer();
    let ex = s.extract(Some(&c1), &top[..]).unwrap();
    let d2 = ex.diff_id.clone();
    let c2 = s.commit_extracted(ex, None).unwrap();
    assert_eq!(c2, berth_types::chain_ids(&[d1, d2])[1]);
    (c1, c2)
}

fn exercise(driver: Driver) {
    let t = tempfile::tempdir().unwrap();
    let s = Snapshotter::open_with(t.path(), Some(driver)).unwrap();
    assert_eq!(s.driver(), driver);
    let (c1, c2) = two_layers(&s);
    assert_eq!(
        s.layer(&c1).unwrap().unwrap().size,
        "ID=test\n".len() as u64 + 3
    );
    assert_eq!(s.layer(&c2).unwrap().unwrap().parent, Some(c1.clone()));
    assert!(s.stale_tmp().is_empty());

    let mut labels = BTreeMap::new();
    labels.insert("image".to_string(), "x".to_string());
    let mounts = s.prepare("ctr1", Some(&c2), labels).unwrap();
    assert_eq!(mounts.len(), 1);
    if driver == Driver::Overlay {
        assert_eq!(mounts[0].typ, "overlay");
        assert!(mounts[0].options[0].starts_with("lowerdir="));
        assert_eq!(
            mounts[0].options[0].matches(':').count(),
            1,
            "two lower layers"
        );
    }
    let target = t.path().join("mnt");
    fs::create_dir(&target).unwrap();
    {
        let _g = mount(&mounts[0], &target);
        assert_eq!(
            fs::read_to_string(target.join("etc/os-release")).unwrap(),
            "ID=test\n"
        );
        assert_eq!(fs::read_to_string(target.join("added")).unwrap(), "hi");
        assert!(
            !target.join("gone").exists(),
            "whiteout hides the lower file"
        );
        fs::write(target.join("etc/new"), "n").unwrap();
        fs::remove_file(target.join("added")).unwrap();
    }
    let mut ch = s.changes("ctr1").unwrap();
    ch.retain(|c| !matches!(c, Change::Upsert(p) if p == b"etc"));
    assert_eq!(
        ch,
        vec![
            Change::Delete(b"added".to_vec()),
            Change::Upsert(b"etc/new".to_vec())
        ]
    );
    let layer = write_layer(
        &s.upper_dir("ctr1"),
        &s.changes("ctr1").unwrap(),
        Vec::new(),
        &WriteOptions::default(),
    )
    .unwrap();
    let diff_id = Digest::sha256_of(&layer);
    let c3 = s.commit_active("ctr1", &diff_id).unwrap();
    assert!(s.has_layer(&c3));
    assert!(s.active("ctr1").unwrap().is_none());

    // A view of the new layer shows the container's changes.
    let mounts = s.view("v", &c3, BTreeMap::new()).unwrap();
    {
        let _g = mount(&mounts[0], &target);
        assert!(target.join("etc/new").exists());
        assert!(!target.join("added").exists());
    }
    s.remove_active("v").unwrap();
    assert!(s.actives().unwrap().is_empty());
    s.remove_layer(&c3).unwrap();
    assert!(!s.has_layer(&c3));
    assert!(s.stale_tmp().is_empty());
}

#[test]
fn overlay_driver() {
    exercise(Driver::Overlay);
}

#[test]
fn copy_driver() {
    exercise(Driver::Copy);
}

#[test]
fn diff_id_mismatch_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let s = Snapshotter::open_with(t.path(), Some(Driver::Overlay)).unwrap();
    let base = base_layer();
    let ex = s.extract(None, &base[..]).unwrap();
    let wrong = Digest::sha256_of(b"something else");
    let err = s.commit_extracted(ex, Some(&wrong)).unwrap_err();
    assert!(err.to_string().contains("diff id mismatch"), "{err}");
    assert!(s.layers().unwrap().is_empty());
    assert!(s.stale_tmp().is_empty());
}

#[test]
fn missing_parent_and_bad_keys() {
    let t = tempfile::tempdir().unwrap();
    let s = Snapshotter::open_with(t.path(), Some(Driver::Copy)).unwrap();
    let p = Digest::sha256_of(b"p");
    assert!(matches!(
        s.extract(Some(&p), &b""[..]),
        Err(SnapshotError::MissingParent(_))
    ));
    assert!(s.prepare("../x", None, BTreeMap::new()).is_err());
    s.prepare("k", None, BTreeMap::new()).unwrap();
    assert!(matches!(
        s.prepare("k", None, BTreeMap::new()),
        Err(SnapshotError::Exists(_))
    ));
}

/// A fuse-overlayfs mount that cannot be made (its directories are
/// missing) fails with the target and fuse-overlayfs's own words (not its
/// noise), and leaves nothing mounted.
#[test]
fn a_failed_fuse_mount_says_where_and_why() {
    if fuse_program().is_none() || !Path::new("/dev/fuse").exists() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let at = t.path().join("merged");
    let m = Mount {
        typ: FUSE.into(),
        source: FUSE.into(),
        options: vec![
            format!("lowerdir={}", t.path().join("no-such-lower").display()),
            format!("upperdir={}", t.path().join("u").display()),
            format!("workdir={}", t.path().join("w").display()),
        ],
    };
    let err = runtime_mounts(vec![m], &at).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("fuse-overlayfs on {}: ", at.display()))
            && err.contains("No such file or directory")
            && !err.contains("unknown argument ignored"),
        "{err}"
    );
    let mounted = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&at.display().to_string());
    assert!(!mounted);
}

/// A scratch snapshot (`run --rm`'s): its overlay is mounted `volatile`
/// (no sync of the upper filesystem, even at unmount), it mounts and works
/// like any other, and after the power loss its unsynced metadata may not
/// survive (an empty meta.json) it is listed nowhere and still removable;
/// a durable one is mounted without `volatile`.
#[test]
fn scratch_snapshots_are_volatile_and_survive_an_emptied_meta() {
    let t = tempfile::tempdir().unwrap();
    let s = Snapshotter::open_with(t.path(), Some(Driver::Overlay)).unwrap();
    let (_, c2) = two_layers(&s);
    let durable = s.prepare("kept", Some(&c2), BTreeMap::new()).unwrap();
    assert!(!durable[0].options.iter().any(|o| o == "volatile"));
    let mounts = s
        .prepare_scratch("ctr", Some(&c2), BTreeMap::new())
        .unwrap();
    assert!(s.active("ctr").unwrap().unwrap().scratch);
    assert_eq!(
        mounts[0].options.iter().any(|o| o == "volatile"),
        overlay_volatile(),
        "{:?}",
        mounts[0].options
    );
    let target = t.path().join("mnt");
    fs::create_dir(&target).unwrap();
    {
        let _g = mount(&mounts[0], &target);
        assert_eq!(fs::read_to_string(target.join("added")).unwrap(), "hi");
        fs::write(target.join("new"), "n").unwrap();
    }
    assert_eq!(
        fs::read_to_string(s.upper_dir("ctr").join("new")).unwrap(),
        "n"
    );
    fs::write(s.active_dir("ctr").join("meta.json"), b"").unwrap();
    let keys: Vec<String> = s.actives().unwrap().into_iter().map(|a| a.key).collect();
    assert_eq!(keys, vec!["kept".to_string()]);
    s.remove_active("ctr").unwrap();
    assert!(!s.active_dir("ctr").exists());
}

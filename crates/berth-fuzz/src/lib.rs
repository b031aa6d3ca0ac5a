//! berth's fuzz targets: one function per input berth takes from strangers
//! (a layer tar, a Dockerfile, an image reference, a manifest or index, a
//! registry request), each feeding the bytes to the real code and checking
//! what must hold whatever they are: no panic, and for layers, nothing
//! written outside the root. cargo-fuzz runs them with libFuzzer's coverage
//! guidance (`fuzz/`, nightly; see the README), and `tests/` runs them over
//! generated hostile inputs on stable, a few seconds each, in CI.

use std::path::Path;
use std::sync::OnceLock;

/// A layer tar applied onto a root: whatever the tar says (`..`, absolute
/// paths, links out, whiteouts of what is outside, hardlinks to the host),
/// nothing outside the root is created, changed or removed.
pub fn layer_apply(data: &[u8]) {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("root");
    let outside = t.path().join("secret");
    std::fs::create_dir(&root).expect("root");
    std::fs::write(&outside, b"host").expect("secret");
    std::fs::create_dir(t.path().join("hostdir")).expect("hostdir");
    for ws in [
        berth_store::archive::apply::Whiteouts::Delete,
        berth_store::archive::apply::Whiteouts::Overlay,
    ] {
        let opts = berth_store::archive::apply::ApplyOptions {
            whiteouts: ws,
            ..Default::default()
        };
        let _ = berth_store::archive::apply::apply(&root, data, &opts);
        assert_outside_untouched(t.path());
    }
}

fn assert_outside_untouched(dir: &Path) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["hostdir", "root", "secret"],
        "a layer wrote beside its root"
    );
    assert_eq!(
        std::fs::read(dir.join("secret")).expect("the file outside the root is gone"),
        b"host",
        "a layer changed a file outside its root"
    );
    let md = std::fs::symlink_metadata(dir.join("secret")).expect("secret");
    assert!(md.is_file(), "a layer replaced a file outside its root");
    assert_eq!(
        std::fs::read_dir(dir.join("hostdir"))
            .expect("hostdir")
            .count(),
        0,
        "a layer wrote into a directory outside its root"
    );
}

/// A Dockerfile: parsed, typed and checked as `build --check` does.
pub fn dockerfile(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(df) = berth_dockerfile::instructions::parse(src, "Dockerfile") {
        let _ = serde_json::to_string(&df.stages.len());
    }
    let _ = berth_dockerfile::parser::parse(src);
}

/// An image reference: parsed, and a parsed one prints back to a string
/// that parses to the same reference.
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = berth_types::reference::Reference::parse(s) {
        let shown = r.to_string();
        let again = berth_types::reference::Reference::parse(&shown)
            .unwrap_or_else(|e| panic!("{s:?} parsed, but its form {shown:?} does not: {e}"));
        assert_eq!(again.to_string(), shown, "{s:?}");
    }
}

/// A manifest or index from a registry or an archive, under each media type
/// a registry may claim for it; what parses serialises again.
pub fn manifest(data: &[u8]) {
    use berth_types::image::{AnyManifest, media_types};
    for ct in [
        None,
        Some(media_types::OCI_MANIFEST),
        Some(media_types::OCI_INDEX),
        Some("application/vnd.docker.distribution.manifest.v2+json"),
        Some("application/vnd.docker.distribution.manifest.list.v2+json"),
        Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    ] {
        match AnyManifest::parse(data, ct) {
            Ok(AnyManifest::Image(m)) => {
                serde_json::to_vec(&m).expect("a parsed manifest serialises");
            }
            Ok(AnyManifest::Index(i)) => {
                serde_json::to_vec(&i).expect("a parsed index serialises");
            }
            Err(_) => {}
        }
    }
    let _ = serde_json::from_slice::<berth_types::image::ImageConfig>(data);
}

struct Registry {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = berth_registry::server::Config {
            storage: dir.path().join("reg"),
            open: true,
            log_requests: false,
            ..Default::default()
        };
        let (router, _) = berth_registry::server::router(&config).expect("registry");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Registry {
            rt,
            router,
            _dir: dir,
        }
    })
}

/// A registry request: the first byte picks the method, the first line is
/// the path and query, then header lines up to an empty one, then the
/// body. Routed and answered by the real server (an open registry on a
/// scratch store): whatever the request, an answer, never a panic, and
/// never a 5xx for a request that is merely malformed.
pub fn registry_request(data: &[u8]) {
    use axum::http::{Method, Request};
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::PATCH,
        Method::DELETE,
    ][m as usize % 6]
        .clone();
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.split('\n');
    let target = lines.next().unwrap_or("/").trim_end_matches('\r');
    let uri = if target.starts_with('/') {
        target.to_string()
    } else {
        format!("/v2/{target}")
    };
    let mut b = Request::builder().method(method).uri(uri.as_str());
    let mut body = String::new();
    let mut in_body = false;
    for l in lines {
        if in_body {
            body.push_str(l);
            body.push('\n');
        } else if l.trim().is_empty() {
            in_body = true;
        } else if let Some((k, v)) = l.split_once(':') {
            b = b.header(k.trim(), v.trim());
        }
    }
    let Ok(mut req) = b.body(axum::body::Body::from(body)) else {
        return; // not a request hyper would have handed us
    };
    req.extensions_mut().insert(axum::extract::ConnectInfo(
        berth_registry::server::conn::PeerAddr(([127, 0, 0, 1], 1).into()),
    ));
    let r = registry();
    let mut svc = r.router.clone();
    let resp =
        r.rt.block_on(tower_service::Service::call(&mut svc, req))
            .expect("the router answers");
    assert!(
        resp.status().as_u16() < 500 || resp.status().as_u16() == 503,
        "{uri}: {}",
        resp.status()
    );
}

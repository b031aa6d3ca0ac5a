//! Reaching a registry: which hosts are local or declared insecure (plain
//! HTTP or unchecked TLS, as docker's `insecure-registries`), the CAs
//! trusted (the system's and `certs.d/<host>/`), the HTTP agent, and
//! ADD's URL downloads.

use super::*;

/// Whether `host` (with an optional port) is a loopback or localhost address,
/// which Docker treats as an insecure registry (plain HTTP allowed).
pub fn is_local(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    h == "localhost"
        || h == "::1"
        || h.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the user declared `host` an insecure registry (HTTPS without
/// verification, falling back to HTTP), as docker users do in
/// `/etc/docker/daemon.json` (`insecure-registries`), or in
/// `$BERTH_INSECURE_REGISTRIES` (comma-separated).
pub fn is_declared_insecure(host: &str) -> bool {
    let mut list: Vec<String> = std::env::var("BERTH_INSECURE_REGISTRIES")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if let Ok(b) = std::fs::read("/etc/docker/daemon.json")
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b)
    {
        list.extend(
            v["insecure-registries"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string)),
        );
    }
    list.iter().any(|e| {
        let e = e
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        e == host || host.split(':').next() == Some(e)
    })
}

fn system_roots() -> Vec<ureq::tls::Certificate<'static>> {
    let mut out = Vec::new();
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    if let Ok(f) = std::env::var("SSL_CERT_FILE") {
        files.push(f.into());
    }
    for f in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        files.push(f.into());
    }
    for f in files {
        if let Ok(pem) = std::fs::read(&f) {
            for item in ureq::tls::parse_pem(&pem).flatten() {
                if let ureq::tls::PemItem::Certificate(c) = item {
                    out.push(c);
                }
            }
            if !out.is_empty() {
                break;
            }
        }
    }
    out
}

/// Extra CAs for one registry, where docker looks for them:
/// `/etc/docker/certs.d/<host>/*.crt` (and berth's own `/etc/berth/certs.d`).
fn registry_cas(host: &str) -> Vec<ureq::tls::Certificate<'static>> {
    let mut out = Vec::new();
    for base in [
        "/etc/berth/certs.d",
        "/etc/docker/certs.d",
        "/etc/containers/certs.d",
    ] {
        let dir = std::path::Path::new(base).join(host);
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "crt")
                && let Ok(pem) = std::fs::read(e.path())
            {
                for item in ureq::tls::parse_pem(&pem).flatten() {
                    if let ureq::tls::PemItem::Certificate(c) = item {
                        out.push(c);
                    }
                }
            }
        }
    }
    out
}

pub(super) fn agent(host: &str, verify: bool) -> ureq::Agent {
    let mut roots = system_roots();
    roots.extend(registry_cas(host));
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(if roots.is_empty() {
            ureq::tls::RootCerts::WebPki
        } else {
            roots.into()
        })
        .disable_verification(!verify)
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .accept_encoding("identity")
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .max_idle_connections_per_host(16)
        .build()
        .into()
}

/// Downloads `url` (http or https, the system's and /etc/docker/certs.d
/// roots, redirects followed) for `ADD <url>`: the body and the
/// Last-Modified header. At most `limit` bytes.
pub fn download(url: &str, limit: u64) -> std::result::Result<(Vec<u8>, Option<String>), String> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_default();
    let resp = agent(host, true)
        .get(url)
        .call()
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}"));
    }
    let modified = resp
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .into_body()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| format!("{url}: {e}"))?;
    Ok((body, modified))
}

//! The registry client: one [`Registry`] per registry host, speaking the OCI
//! distribution spec over blocking HTTP (ureq with rustls), so pulls made by
//! `berth run` need no async runtime.
//!
//! It handles the auth flows Docker Hub style registries use: anonymous, HTTP
//! basic, and the bearer-token challenge (`WWW-Authenticate: Bearer realm=…`)
//! with tokens cached per scope until they expire. Idempotent requests are
//! retried on connection errors, 5xx and 429 (honouring `Retry-After`).

mod auth;
pub mod config;
pub mod progress;
pub mod pull;
pub mod push;
pub mod sources;
mod tls;

pub use auth::{Challenge, parse_challenge};
use tls::agent;
pub use tls::{download, is_declared_insecure, is_local};

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ureq::ResponseExt;
use ureq::http::{Method, Response};

pub use config::{AuthConfig, CredentialStore};
pub use progress::{Progress, Quiet};

/// Largest manifest accepted (docker's limit too).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Manifest types berth asks for, best first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.5";

/// What went wrong talking to a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// 401: no or wrong credentials.
    Unauthorized,
    /// 403.
    Denied,
    /// 404 or NAME_UNKNOWN/MANIFEST_UNKNOWN/BLOB_UNKNOWN.
    NotFound,
    /// 429 after retries.
    TooManyRequests,
    /// Could not connect, TLS, dropped connections after retries.
    Transport,
    /// Content did not verify, bad documents, anything else.
    Other,
}

/// A registry error with docker's wording, and as data what it concerns
/// (the URL asked, the HTTP status answered, the blob or manifest digest)
/// where known, for callers that act on them rather than print them.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{msg}")]
pub struct Error {
    /// The category.
    pub kind: ErrorKind,
    /// The message.
    pub msg: String,
    /// The URL of the request that failed.
    pub url: Option<String>,
    /// The HTTP status the registry answered with.
    pub status: Option<u16>,
    /// The digest of the blob or manifest concerned.
    pub digest: Option<berth_types::Digest>,
}

impl Error {
    /// A new error.
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Self {
        Error {
            kind,
            msg: msg.into(),
            url: None,
            status: None,
            digest: None,
        }
    }

    /// The error, about the request to `url`.
    pub fn at(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The error, about the content `digest`.
    pub fn of(mut self, digest: &berth_types::Digest) -> Self {
        self.digest = Some(digest.clone());
        self
    }
    /// A category-less error.
    pub fn other(msg: impl Into<String>) -> Self {
        Error::new(ErrorKind::Other, msg)
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// One repository found by [`Registry::search`] (Docker Hub's fields).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
pub struct SearchResult {
    /// `library/busybox`.
    pub name: String,
    /// One line.
    #[serde(default)]
    pub description: String,
    /// Stars.
    #[serde(default)]
    pub star_count: u64,
    /// An official image.
    #[serde(default)]
    pub is_official: bool,
    /// An automated build.
    #[serde(default)]
    pub is_automated: bool,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Verify TLS certificates (`--tls-verify=false` turns it off and allows HTTP).
    pub tls_verify: bool,
    /// Parallel blob transfers.
    pub max_concurrent: usize,
    /// Push uploads in chunks of this size (None: one request per blob).
    pub chunk_size: Option<u64>,
    /// Retries of a failed transfer.
    pub retries: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls_verify: true,
            max_concurrent: 3,
            chunk_size: None,
            retries: 4,
        }
    }
}

/// Credentials for a registry: a password or an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub secret: String,
}

/// The host berth talks to for a reference's domain.
pub fn api_host(domain: &str) -> &str {
    match domain {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        d => d,
    }
}

/// A connection to one registry.
pub struct Registry {
    agent: ureq::Agent,
    /// `https://host` or `http://host`.
    base: String,
    /// The registry as the user named it (`docker.io`, `localhost:5000`).
    pub domain: String,
    creds: Option<Credentials>,
    /// The registry's challenge, learnt from `/v2/` (or a later 401).
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// Settings.
    pub opts: Options,
}

/// A response body.
pub type Body = ureq::Body;

/// Makes a request body (a reader and its length) afresh for each attempt.
pub type BodySource<'b> = dyn FnMut() -> Result<(Box<dyn Read + Send + 'b>, Option<u64>)> + 'b;

fn transport(e: ureq::Error, url: &str) -> Error {
    Error::new(ErrorKind::Transport, format!("Get \"{url}\": {e}")).at(url)
}

fn retryable(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

fn retry_after(resp: &Response<Body>, attempt: u32) -> Duration {
    let backoff = Duration::from_millis(250 << attempt.min(6));
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(60)))
        .unwrap_or(backoff)
}

/// Turns a registry's error response into docker's wording.
pub fn response_error(resp: &mut Response<Body>, what: &str) -> Error {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 10)
        .read_to_string()
        .unwrap_or_default();
    let mut code = String::new();
    let mut message = String::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
        if let Some(e) = v["errors"].as_array().and_then(|a| a.first()) {
            code = e["code"].as_str().unwrap_or("").to_string();
            message = e["message"].as_str().unwrap_or("").to_string();
        } else if let Some(d) = v["details"].as_str().or(v["detail"].as_str()) {
            message = d.to_string();
        }
    } else if ct.starts_with("text/html") {
        message =
            "the registry answered with an HTML page (a captive portal or a proxy in the way?)"
                .into();
    }
    let kind = match status {
        _ if code == "DENIED" => ErrorKind::Denied,
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Denied,
        404 => ErrorKind::NotFound,
        429 => ErrorKind::TooManyRequests,
        _ => ErrorKind::Other,
    };
    let text = match (code.as_str(), message.as_str()) {
        ("", "") => match status {
            401 => "unauthorized: authentication required".to_string(),
            403 => "denied: requested access to the resource is denied".to_string(),
            404 => "not found".to_string(),
            429 => "toomanyrequests: too many requests, try again later".to_string(),
            s => format!("unexpected status {s}"),
        },
        ("", m) => m.to_string(),
        (c, "") => c.to_ascii_lowercase(),
        (c, m) => format!("{}: {m}", c.to_ascii_lowercase()),
    };
    let mut e = Error::new(kind, format!("{what}: {text}")).at(resp.get_uri().to_string());
    e.status = Some(status);
    e
}

impl Registry {
    /// Connects to the registry serving `domain` (`docker.io`, `host:port`),
    /// learning its scheme and auth challenge from `GET /v2/`.
    pub fn connect(domain: &str, creds: Option<Credentials>, opts: Options) -> Result<Registry> {
        let host = api_host(domain).to_string();
        let insecure = !opts.tls_verify || is_local(&host) || is_declared_insecure(&host);
        let secure_agent = agent(&host, !insecure);
        let mut reg = Registry {
            agent: secure_agent,
            base: format!("https://{host}"),
            domain: domain.to_string(),
            creds,
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            opts,
        };
        let first = reg.ping(insecure);
        let resp = match first {
            Ok(r) => r,
            Err(e) if insecure && e.kind == ErrorKind::Transport => {
                // Docker's insecure-registry rule: try HTTPS, then plain HTTP.
                reg.base = format!("http://{host}");
                reg.ping(false)?
            }
            Err(e) => return Err(e),
        };
        if resp.status() == 401 {
            *reg.challenge.get_mut().expect("challenge") = resp
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(parse_challenge)
                .max_by_key(|c| matches!(c, Challenge::Bearer { .. }));
        }
        Ok(reg)
    }

    /// `GET /v2/`. A `probe` (HTTPS tried first on an insecure registry) gets
    /// one short attempt, so a plain-HTTP server that never answers a TLS
    /// hello does not stall the fallback.
    fn ping(&self, probe: bool) -> Result<Response<Body>> {
        let url = format!("{}/v2/", self.base);
        let mut last = None;
        let attempts = if probe { 0 } else { self.opts.retries.min(2) };
        for attempt in 0..=attempts {
            let req = self.agent.get(&url);
            let req = if probe {
                req.config()
                    .timeout_global(Some(Duration::from_secs(3)))
                    .build()
            } else {
                req
            };
            match req.call() {
                Ok(r) if retryable(r.status().as_u16()) && attempt < 2 => {
                    std::thread::sleep(retry_after(&r, attempt));
                }
                Ok(mut r) => {
                    let ct = r
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if r.status() == 200 && ct.starts_with("text/html") {
                        return Err(Error::other(format!(
                            "{url} answered with an HTML page, not a registry (a captive portal or a proxy in the way?)"
                        )));
                    }
                    if !matches!(r.status().as_u16(), 200 | 401) {
                        return Err(response_error(&mut r, &format!("Get \"{url}\"")));
                    }
                    return Ok(r);
                }
                Err(e) => {
                    last = Some(transport(e, &url));
                    if attempt >= 1 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::new(ErrorKind::Transport, format!("Get \"{url}\": no response"))
        }))
    }

    /// The base URL (`https://host`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Checks the credentials as `login` does: a token (bearer) or `/v2/` (basic).
    /// Sends a request with auth for `scopes`; retries idempotent requests on
    /// transport errors, 5xx and 429; re-authenticates once on a 401.
    /// `body` is called anew for each attempt.
    pub fn send<'b>(
        &self,
        method: Method,
        url: &str,
        scopes: &[String],
        headers: &[(&str, String)],
        mut body: Option<&mut BodySource<'b>>,
    ) -> Result<Response<Body>> {
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE
        );
        // A request that never got an answer (a pooled connection the
        // registry had just closed) may be sent again when repeating it is
        // harmless: the idempotent methods, and the distribution API's POSTs
        // (starting an upload, mounting a blob), whose body is replayed from
        // its source. PATCH (a chunk at an offset) is not.
        let resend_on_transport_error = idempotent || method == Method::POST;
        let mut attempt = 0u32;
        let mut reauthed = false;
        loop {
            let auth = self.auth_header(scopes)?;
            let mut b = ureq::http::Request::builder()
                .method(method.clone())
                .uri(url);
            if let Some(a) = &auth {
                b = b.header("authorization", a);
            }
            for (k, v) in headers {
                b = b.header(*k, v);
            }
            let result = match body.as_mut() {
                Some(f) => {
                    let (mut reader, len) = f()?;
                    if let Some(n) = len {
                        b = b.header("content-length", n.to_string());
                    }
                    let req = b
                        .body(ureq::SendBody::from_reader(&mut reader))
                        .map_err(|e| Error::other(e.to_string()))?;
                    self.agent.run(req)
                }
                None => {
                    let req = b.body(()).map_err(|e| Error::other(e.to_string()))?;
                    self.agent.run(req)
                }
            };
            match result {
                Ok(r) if r.status() == 401 && !reauthed => {
                    // The token may have expired, or the registry wants a wider scope.
                    reauthed = true;
                    self.tokens.lock().expect("tokens").clear();
                    let fresh = r
                        .headers()
                        .get_all("www-authenticate")
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .filter_map(parse_challenge)
                        .max_by_key(|c| matches!(c, Challenge::Bearer { .. }));
                    match fresh {
                        // Registries that challenge only on repositories, or moved their realm.
                        Some(c) => *self.challenge.lock().expect("challenge") = Some(c),
                        None if self.challenge().is_none() => return Ok(r),
                        None => {}
                    }
                }
                Ok(r)
                    if retryable(r.status().as_u16())
                        && idempotent
                        && attempt < self.opts.retries =>
                {
                    std::thread::sleep(retry_after(&r, attempt));
                    attempt += 1;
                }
                Ok(r) => return Ok(r),
                Err(e) if resend_on_transport_error && attempt < self.opts.retries => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(250 << attempt));
                    attempt += 1;
                }
                Err(e) => return Err(transport(e, url)),
            }
        }
    }

    /// `GET` or `HEAD` without a body.
    pub fn get(
        &self,
        url: &str,
        scopes: &[String],
        headers: &[(&str, String)],
    ) -> Result<Response<Body>> {
        self.send(Method::GET, url, scopes, headers, None)
    }

    /// `search TERM`: docker's `/v1/search` of this registry (Docker Hub's
    /// index for docker.io): (name, description, stars, official, automated).
    pub fn search(&self, term: &str, limit: usize) -> Result<Vec<SearchResult>> {
        let base = if self.base.ends_with("registry-1.docker.io") {
            "https://index.docker.io".to_string()
        } else {
            self.base.clone()
        };
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("q", term)
            .append_pair("n", &limit.to_string())
            .finish();
        let url = format!("{base}/v1/search?{q}");
        let mut r = self.get(&url, &[], &[])?;
        if !r.status().is_success() {
            return Err(response_error(&mut r, &format!("Get \"{url}\"")));
        }
        let body = r
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()
            .map_err(|e| Error::new(ErrorKind::Transport, format!("Get \"{url}\": {e}")))?;
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            results: Vec<SearchResult>,
        }
        let p: Page = serde_json::from_slice(&body)
            .map_err(|e| Error::other(format!("search results from {base}: {e}")))?;
        Ok(p.results)
    }

    /// Full URL of a `/v2/` path.
    pub fn url(&self, path: &str) -> String {
        format!("{}/v2/{path}", self.base)
    }

    /// Resolves a `Location` header against the registry.
    pub fn location(&self, loc: &str) -> String {
        if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_string()
        } else if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            format!("{}/{loc}", self.base)
        }
    }

    /// Fetches a manifest by tag or digest: (bytes, media type, digest).
    pub fn manifest(
        &self,
        repo: &str,
        reference: &str,
        scopes: &[String],
    ) -> Result<(Vec<u8>, String, berth_types::Digest)> {
        let url = self.url(&format!("{repo}/manifests/{reference}"));
        let mut r = self.get(&url, scopes, &[("accept", MANIFEST_ACCEPT.to_string())])?;
        if r.status() != 200 {
            return Err(response_error(&mut r, &format!("{repo}:{reference}")));
        }
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if ct.starts_with("text/html") {
            return Err(Error::other(format!(
                "{repo}:{reference}: the registry answered with an HTML page, not a manifest (a captive portal or a proxy in the way?)"
            )));
        }
        if let Some(n) = r.body().content_length()
            && n > MAX_MANIFEST_SIZE
        {
            return Err(Error::other(format!(
                "{repo}:{reference}: manifest of {n} bytes is larger than the limit of {MAX_MANIFEST_SIZE}"
            )));
        }
        let bytes = r
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST_SIZE)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => Error::other(format!(
                    "{repo}:{reference}: manifest larger than the limit of {MAX_MANIFEST_SIZE} bytes"
                )),
                e => Error::new(ErrorKind::Transport, format!("reading manifest {repo}:{reference}: {e}")),
            })?;
        let digest = berth_types::Digest::sha256_of(&bytes);
        if let Ok(want) = reference.parse::<berth_types::Digest>()
            && want != digest
        {
            return Err(Error::other(format!(
                "manifest verification failed for digest {want}: the registry sent content with digest {digest}"
            ))
            .at(url)
            .of(&want));
        }
        if let Some(h) = r
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && let Ok(hd) = h.parse::<berth_types::Digest>()
            && hd.algorithm() == berth_types::digest::Algorithm::Sha256
            && hd != digest
        {
            return Err(Error::other(format!(
                "manifest verification failed for {repo}:{reference}: the registry says {hd} but sent content with digest {digest}"
            ))
            .at(url)
            .of(&hd));
        }
        Ok((bytes, ct, digest))
    }
}

impl Registry {
    /// A blob's bytes (a config), at most `max` of them, verified against
    /// its digest.
    pub fn blob_bytes(
        &self,
        repo: &str,
        digest: &berth_types::Digest,
        scopes: &[String],
        max: u64,
    ) -> Result<Vec<u8>> {
        let url = self.url(&format!("{repo}/blobs/{digest}"));
        let mut r = self.get(&url, scopes, &[])?;
        if r.status() != 200 {
            return Err(response_error(&mut r, &format!("fetching blob {digest}")).of(digest));
        }
        let bytes = r
            .body_mut()
            .with_config()
            .limit(max)
            .read_to_vec()
            .map_err(|e| {
                Error::new(ErrorKind::Transport, format!("reading blob {digest}: {e}")).of(digest)
            })?;
        if berth_types::Digest::sha256_of(&bytes) != *digest {
            return Err(
                Error::other(format!("blob {digest}: content does not match its digest"))
                    .at(url)
                    .of(digest),
            );
        }
        Ok(bytes)
    }

    /// Mounts blob `digest` of repository `from` into `repo` (the same
    /// registry): an error when the registry will not.
    pub fn mount_blob(
        &self,
        repo: &str,
        from: &str,
        digest: &berth_types::Digest,
        scopes: &[String],
    ) -> Result<()> {
        let url = self.url(&format!("{repo}/blobs/uploads/?mount={digest}&from={from}"));
        let mut r = self.send(Method::POST, &url, scopes, &[], None)?;
        match r.status().as_u16() {
            201 => Ok(()),
            202 => {
                // An upload began instead: cancel it, and say so.
                if let Some(loc) = r.headers().get("location").and_then(|v| v.to_str().ok()) {
                    let _ = self.send(Method::DELETE, &self.location(loc), scopes, &[], None);
                }
                Err(Error::other(format!(
                    "the registry would not mount {digest} from {from} into {repo}"
                ))
                .at(url)
                .of(digest))
            }
            _ => Err(response_error(&mut r, &format!("mounting {digest} from {from}")).of(digest)),
        }
    }

    /// Puts a manifest (or index) under `reference` (a tag or its digest);
    /// the digest the registry stored it as, checked against the bytes.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        scopes: &[String],
    ) -> Result<berth_types::Digest> {
        let url = self.url(&format!("{repo}/manifests/{reference}"));
        let digest = berth_types::Digest::sha256_of(bytes);
        let len = bytes.len() as u64;
        let mut body = || -> Result<(Box<dyn Read + Send + '_>, Option<u64>)> {
            Ok((Box::new(bytes), Some(len)))
        };
        let mut r = self.send(
            Method::PUT,
            &url,
            scopes,
            &[("content-type", media_type.to_string())],
            Some(&mut body),
        )?;
        if r.status() != 201 && r.status() != 200 {
            return Err(
                response_error(&mut r, &format!("pushing manifest {repo}:{reference}")).of(&digest),
            );
        }
        if let Some(h) = r
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && let Ok(d) = h.parse::<berth_types::Digest>()
            && d != digest
        {
            return Err(Error::other(format!(
                "the registry stored the manifest as {d}, but its content has digest {digest}"
            ))
            .at(url)
            .of(&digest));
        }
        Ok(digest)
    }
}

/// `repository:<repo>:<actions>`.
pub fn scope(repo: &str, actions: &str) -> String {
    format!("repository:{repo}:{actions}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry on loopback that answers each request from `answer`
    /// (path → status, headers, body), one connection a request.
    /// A canned answer: status, headers, body.
    type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

    fn tiny_registry(answer: fn(&str) -> Answer) -> String {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                // (A TLS hello first, as the client tries https: not HTTP.)
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut first = Vec::new();
                if r.read_until(b'\n', &mut first).is_err() || !first.starts_with(b"GET ") {
                    continue;
                }
                let first = String::from_utf8_lossy(&first).into_owned();
                let path = first.split(' ').nth(1).unwrap_or("/").to_string();
                let mut line = Vec::new();
                while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let (status, headers, body) = answer(&path);
                let mut w = conn;
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head += &format!("{k}: {v}\r\n");
                }
                let _ = w.write_all(format!("{head}\r\n").as_bytes());
                let _ = w.write_all(&body);
            }
        });
        addr
    }

    #[test]
    fn errors_carry_the_url_status_and_digest() {
        let host = tiny_registry(|path| match path {
            "/v2/" => (200, vec![], b"{}".to_vec()),
            "/v2/app/manifests/gone" => (
                404,
                vec![("content-type", "application/json".into())],
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                    .to_vec(),
            ),
            _ => (
                200,
                vec![
                    (
                        "content-type",
                        "application/vnd.oci.image.manifest.v1+json".into(),
                    ),
                    (
                        "docker-content-digest",
                        berth_types::Digest::sha256_of(b"other").to_string(),
                    ),
                ],
                br#"{"schemaVersion":2}"#.to_vec(),
            ),
        });
        let reg = Registry::connect(&host, None, Options::default()).unwrap();
        let e = reg.manifest("app", "gone", &[]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.status, Some(404));
        assert_eq!(
            e.url.as_deref(),
            Some(format!("http://{host}/v2/app/manifests/gone").as_str())
        );
        assert!(e.msg.contains("manifest unknown"), "{}", e.msg);
        let e = reg.manifest("app", "lies", &[]).unwrap_err();
        assert!(e.msg.contains("manifest verification failed"), "{}", e.msg);
        assert_eq!(e.digest, Some(berth_types::Digest::sha256_of(b"other")));
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("Bearer realm=http://x/token,service=x"),
            Some(Challenge::Bearer {
                realm: "http://x/token".into(),
                service: Some("x".into()),
                scope: None
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn hosts() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("index.docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("quay.io"), "quay.io");
        for l in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_local(l), "{l}");
        }
        for r in ["docker.io", "10.0.0.1:5000", "example.com:443"] {
            assert!(!is_local(r), "{r}");
        }
    }
}

//! `berth registry serve`: an OCI distribution-spec v1.1 registry.
//!
//! One axum fallback handler routes every `/v2/` request by hand, because
//! repository names contain slashes and the spec's routes are told apart by the
//! path's tail (`…/manifests/<ref>`, `…/blobs/uploads/<id>`), which a route
//! table cannot express. Storage is [`storage::Storage`]; access control is
//! [`auth::AuthStore`] with the bearer-token flow Docker Hub uses. Request
//! bodies are streamed to storage (a directory or an S3 bucket) and hashed
//! as they arrive; blobs are streamed back, with HTTP ranges.
//!
//! Access fails closed: a registry is open to everyone only when served with
//! `--open` (said in the startup line); otherwise every request is checked
//! against the accounts, and when those cannot be read the answer is 503,
//! never access. Connections are bounded ([`conn`]), password guessing is
//! slowed per address and account ([`guard`]).

pub mod accounts;
pub mod auth;
pub mod conn;
pub mod guard;
pub mod storage;

mod blobs;
mod errors;
mod manifests;
mod routes;
mod token;
mod uploads;
mod web;

use blobs::*;
use errors::*;
use manifests::*;
use routes::*;
use token::*;
use uploads::*;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_types::Digest;
use berth_types::digest::Hasher;
use berth_types::image::Index;
use futures_util::StreamExt;
use serde::Deserialize;

use auth::{Action, AuthStore, Principal, Unreadable};
use conn::PeerAddr;
use storage::{PutManifestError, Storage, valid_name, valid_tag, valid_upload_id};

/// Server settings (flags, or a TOML file with the same keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listen address.
    pub addr: String,
    /// Storage: a directory, or `s3://bucket[/prefix]` for S3-compatible
    /// object storage (several replicas may share one bucket).
    pub storage: PathBuf,
    /// Directory of accounts, tokens and keys [default: the storage
    /// directory; `/var/lib/berth-registry` with object storage].
    pub state_dir: Option<PathBuf>,
    /// Object-storage settings (`[s3]` in the file; the AWS environment
    /// fills in what is unset).
    pub s3: storage::S3Options,
    /// Anonymous pull of every repository.
    pub public: bool,
    /// No accounts at all: anyone may pull, push and delete everything (a
    /// throwaway or firewalled registry). Never inferred: asked for.
    pub open: bool,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Token endpoint URL to announce (default: this server's `/token`).
    pub realm: Option<String>,
    /// Lifetime of bearer tokens, seconds.
    pub token_ttl: i64,
    /// Largest manifest accepted, bytes.
    pub max_manifest_size: usize,
    /// Idle uploads are removed after this many seconds.
    pub upload_expiry: u64,
    /// Whether DELETE is allowed.
    pub delete_enabled: bool,
    /// Log requests to stderr.
    pub log_requests: bool,
    /// Connections open at once, in all (more are closed at once).
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_client: usize,
    /// Seconds a client has to send a request's headers (and to start its
    /// next request on a kept-alive connection; and the TLS handshake).
    pub header_timeout: u64,
    /// Seconds a request body may stall (no bytes) before the request fails.
    pub body_timeout: u64,
    /// Seconds a response may stall on a client that does not read.
    pub write_timeout: u64,
    /// Seconds requests in flight get to finish after SIGTERM.
    pub shutdown_timeout: u64,
    /// Who may make an account on the web pages: `closed` (admins only),
    /// `invite` (with a code an admin made) or `open`.
    pub signup: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: "127.0.0.1:5000".into(),
            storage: PathBuf::from("/var/lib/berth-registry"),
            state_dir: None,
            s3: storage::S3Options::default(),
            public: false,
            tls_cert: None,
            tls_key: None,
            realm: None,
            token_ttl: 300,
            max_manifest_size: 4 << 20,
            upload_expiry: 24 * 3600,
            delete_enabled: true,
            log_requests: true,
            open: false,
            max_connections: 1024,
            max_connections_per_client: 64,
            header_timeout: 30,
            body_timeout: 60,
            write_timeout: 60,
            shutdown_timeout: 30,
            signup: "closed".into(),
        }
    }
}

impl Config {
    /// The object-storage URL, when storage is `s3://…`.
    pub fn storage_url(&self) -> Option<&str> {
        self.storage.to_str().filter(|s| s.starts_with("s3://"))
    }

    /// Where accounts, tokens and keys live (a local directory, private).
    pub fn state(&self) -> PathBuf {
        match (&self.state_dir, self.storage_url()) {
            (Some(d), _) => d.clone(),
            (None, Some(_)) => PathBuf::from("/var/lib/berth-registry"),
            (None, None) => self.storage.clone(),
        }
    }

    /// Opens the storage: the directory, or the bucket.
    pub fn open_storage(&self) -> Result<Storage, String> {
        match self.storage_url() {
            Some(url) => {
                Storage::open_s3(url, &self.s3).map_err(|e| format!("opening storage {url}: {e}"))
            }
            None => Storage::open(&self.storage)
                .map_err(|e| format!("opening storage {}: {e}", self.storage.display())),
        }
    }

    /// Reads a TOML config file.
    pub fn from_file(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// An upload session's hashing state (lost on restart; then the file is hashed).
struct UploadState {
    hasher: Hasher,
}

struct App {
    config: Config,
    storage: Storage,
    auth: AuthStore,
    guard: guard::Guard,
    uploads: Mutex<HashMap<String, UploadState>>,
}

/// The next chunk of a request body, or an error when none came for
/// `stall` (a client that stopped sending must not hold the request).
async fn next_chunk<S>(s: &mut S, stall: Duration) -> Option<Result<bytes::Bytes, String>>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin,
{
    match tokio::time::timeout(stall, s.next()).await {
        Ok(c) => c.map(|r| r.map_err(|e| e.to_string())),
        Err(_) => Some(Err(format!(
            "no data for {}s: the request body stalled",
            stall.as_secs()
        ))),
    }
}

/// Why [`App::guarded`] gave no verdict.
enum Refused {
    /// The guard makes this address or account wait.
    Wait(Duration),
    /// The accounts cannot be read.
    Unavailable(Unreadable),
    /// The server is stopping, or the check panicked.
    Internal(String),
}

/// Who is asking, and what they may do.
struct Caller {
    who: Principal,
    /// For logs.
    user: String,
}

impl App {
    fn realm(&self, headers: &HeaderMap) -> (String, String) {
        let host = header_str(headers, header::HOST)
            .unwrap_or("localhost")
            .to_string();
        let scheme = if self.config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let realm = self
            .config
            .realm
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{host}/token"));
        (realm, host)
    }

    fn challenge(&self, headers: &HeaderMap, scope: Option<&str>, message: &str) -> ApiError {
        let (realm, service) = self.realm(headers);
        let mut v = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
        if let Some(s) = scope {
            v.push_str(&format!(",scope=\"{s}\""));
        }
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
            .with(header::WWW_AUTHENTICATE, v)
    }

    /// Who is asking: anyone on an open registry; else the credentials'
    /// principal (a 401 challenge when they are wrong, 503 when the accounts
    /// cannot be read, 429 while the client must wait after failures).
    async fn caller(
        self: &Arc<Self>,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Result<Caller, ApiError> {
        let anonymous = Caller {
            who: Principal::Anonymous,
            user: "-".into(),
        };
        if self.config.open {
            return Ok(anonymous);
        }
        let Some(h) = header_str(headers, header::AUTHORIZATION) else {
            return Ok(anonymous);
        };
        let who = if h.len() > 7 && h[..7].eq_ignore_ascii_case("bearer ") {
            self.auth.check_bearer(h).map_err(unavailable)?
        } else {
            self.check_basic(h, peer).await?
        };
        match who {
            Some(w) => {
                let user = match &w {
                    Principal::User { name, .. } | Principal::Granted { name, .. }
                        if !name.is_empty() =>
                    {
                        name.clone()
                    }
                    _ => "-".into(),
                };
                Ok(Caller { who: w, user })
            }
            None => Err(self.challenge(headers, None, "authentication required")),
        }
    }

    /// Checks basic credentials off the async workers, one verification per
    /// core at a time, after the guard's wait for this address and account.
    async fn check_basic(
        self: &Arc<Self>,
        header: &str,
        peer: IpAddr,
    ) -> Result<Option<Principal>, ApiError> {
        let account = AuthStore::basic_user(header);
        let h = header.to_string();
        self.guarded(peer, account.as_deref(), move |auth| auth.check_basic(&h))
            .await
            .map_err(|r| match r {
                Refused::Wait(w) => too_many(w),
                Refused::Unavailable(e) => unavailable(e),
                Refused::Internal(e) => internal(e),
            })
    }

    /// A credential check `check` (an argon2 verification: off the async
    /// workers, one per core at a time) after the guessing guard's wait for
    /// this address and account; its verdict counts for or against them.
    /// The API's basic auth and the pages' login both go through here.
    async fn guarded<T, F>(
        self: &Arc<Self>,
        peer: IpAddr,
        account: Option<&str>,
        check: F,
    ) -> Result<Option<T>, Refused>
    where
        T: Send + 'static,
        F: FnOnce(&AuthStore) -> Result<Option<T>, Unreadable> + Send + 'static,
    {
        if let Some(w) = self.guard.wait(peer, account) {
            return Err(Refused::Wait(w));
        }
        let permit = self
            .guard
            .verify
            .acquire()
            .await
            .map_err(|e| Refused::Internal(e.to_string()))?;
        let app = self.clone();
        let r = tokio::task::spawn_blocking(move || check(&app.auth))
            .await
            .map_err(|e| Refused::Internal(e.to_string()))?;
        drop(permit);
        match r {
            Ok(Some(p)) => {
                self.guard.succeeded(peer, account);
                Ok(Some(p))
            }
            Ok(None) => {
                self.guard.failed(peer, account);
                Ok(None)
            }
            Err(e) => Err(Refused::Unavailable(e)),
        }
    }

    /// What `who` may do on `repo`: everything on an open registry.
    fn allowed(&self, who: &Principal, repo: &str) -> Vec<Action> {
        if self.config.open {
            return vec![Action::Pull, Action::Push, Action::Delete];
        }
        self.auth.allowed(who, repo, self.config.public)
    }

    /// Checks `action` on `repo`; a 401 challenge asks for the needed scope.
    fn require(
        &self,
        headers: &HeaderMap,
        c: &Caller,
        repo: &str,
        action: Action,
    ) -> Result<(), ApiError> {
        if self.allowed(&c.who, repo).contains(&action) {
            return Ok(());
        }
        let actions = match action {
            Action::Pull => "pull",
            Action::Push => "pull,push",
            Action::Delete => "delete",
        };
        let scope = format!("repository:{repo}:{actions}");
        match &c.who {
            Principal::User { .. } => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "DENIED",
                "requested access to the resource is denied",
            )),
            // An authenticated token without the scope: Docker Hub's
            // `insufficient_scope`, so clients may ask again with a wider one.
            Principal::Granted { name, .. } if !name.is_empty() => {
                let mut e = self.challenge(
                    headers,
                    Some(&scope),
                    "requested access to the resource is denied",
                );
                e.code = "DENIED";
                if let Some((_, v)) = e
                    .headers
                    .iter_mut()
                    .find(|(k, _)| k == header::WWW_AUTHENTICATE)
                {
                    v.push_str(",error=\"insufficient_scope\"");
                }
                Err(e)
            }
            _ => Err(self.challenge(headers, Some(&scope), "authentication required")),
        }
    }
}

/// Runs the server until SIGTERM or SIGINT (finishing requests in flight).
pub fn serve(config: Config) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    rt.block_on(serve_async(config))
}

/// The registry as a router over `config.storage` (opened, checked and
/// made private), and what its startup line says of access. Handlers read
/// the client's address from a `ConnectInfo<conn::PeerAddr>` extension.
pub fn router(config: &Config) -> Result<(axum::Router, String), String> {
    let app = open_app(config)?;
    let mode = app.mode();
    Ok((axum::Router::new().fallback(handle).with_state(app), mode))
}

fn open_app(config: &Config) -> Result<Arc<App>, String> {
    let state = config.state();
    auth::private_dir(&state).map_err(|e| format!("storage {}: {e}", state.display()))?;
    let storage = config.open_storage()?;
    let auth =
        AuthStore::open(&state).map_err(|e| format!("opening auth in {}: {e}", state.display()))?;
    let users = auth
        .users()
        .map_err(|e| format!("{e}: fix or remove the file, or serve with --open"))?;
    if !matches!(config.signup.as_str(), "closed" | "invite" | "open") {
        return Err(format!(
            "invalid sign-up policy {:?}: use closed, invite or open",
            config.signup
        ));
    }
    if config.open && !users.is_empty() {
        return Err(format!(
            "--open lets anyone push and delete, but {} has {} account(s): remove them \
             (berth registry user rm) or serve without --open",
            state.join("auth").display(),
            users.len()
        ));
    }
    Ok(Arc::new(App {
        config: config.clone(),
        storage,
        auth,
        guard: guard::Guard::default(),
        uploads: Mutex::new(HashMap::new()),
    }))
}

impl App {
    /// What the startup line says of access.
    fn mode(&self) -> String {
        let users = self.auth.users().map(|u| u.len()).unwrap_or(0);
        let signup = match self.config.signup.as_str() {
            "open" => ", sign-up open at /signup",
            "invite" => ", sign-up with an invitation at /signup",
            _ => "",
        };
        if self.config.open {
            "OPEN: anyone may pull, push and delete (--open)".to_string()
        } else if users == 0 {
            format!("closed: no accounts yet (berth registry user add){signup}")
        } else {
            format!(
                "{users} account(s), {}{signup}",
                if self.config.public {
                    "anyone may pull"
                } else {
                    "private"
                }
            )
        }
    }
}

async fn serve_async(config: Config) -> Result<(), String> {
    let app = open_app(&config)?;
    let addr: SocketAddr = config
        .addr
        .parse()
        .map_err(|e| format!("invalid listen address {:?}: {e}", config.addr))?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Some(tls::acceptor(c, k)?),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    // Expire abandoned uploads now and every ten minutes.
    {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                let a = app.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    a.storage
                        .expire_uploads(Duration::from_secs(a.config.upload_expiry))
                })
                .await;
            }
        });
    }
    let mode = app.mode();
    let router = axum::Router::new().fallback(handle).with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listening on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "berth registry listening on {scheme}://{local} (storage {}, {mode})",
        app.storage.describe(),
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        eprintln!("berth registry: shutting down, finishing requests in flight");
    };
    let limits = conn::Limits {
        max_connections: config.max_connections.max(1),
        max_per_client: config.max_connections_per_client.max(1),
        header_timeout: Duration::from_secs(config.header_timeout.max(1)),
        write_timeout: Duration::from_secs(config.write_timeout.max(1)),
        shutdown_timeout: Duration::from_secs(config.shutdown_timeout),
    };
    conn::serve(listener, tls, router, limits, shutdown).await;
    Ok(())
}

mod tls {
    //! TLS for `serve --tls-cert/--tls-key`: the acceptor made from the
    //! certificate and key. Each connection's handshake runs on that
    //! connection's own task, under a deadline (see [`super::conn`]), so a
    //! slow client cannot hold up accepting others.

    use std::path::Path;
    use std::sync::Arc;

    use tokio_rustls::TlsAcceptor;

    pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| format!("{}: {e}", cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        let key =
            PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate: {e}"))?;
        Ok(TlsAcceptor::from(Arc::new(cfg)))
    }
}

async fn handle(
    State(app): State<Arc<App>>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    req: Request,
) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut user = "-".to_string();
    let resp = match dispatch(&app, req, &mut user, peer.ip()).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if app.config.log_requests {
        use axum::body::HttpBody as _;
        let bytes = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .or_else(|| resp.body().size_hint().exact())
            .unwrap_or(0);
        eprintln!(
            "time={} method={method} path={path} status={} bytes={bytes} duration_ms={:.1} user={user} remote={peer}",
            jiff::Timestamp::now(),
            resp.status().as_u16(),
            start.elapsed().as_secs_f64() * 1000.0
        );
    }
    resp
}

/// docker's search endpoint (`GET /v1/search?q=TERM&n=25`, what `docker
/// search` asks of an index): the repositories whose name holds the term
/// and that the caller may pull (anonymous callers: the public ones), in
/// Docker Hub's result shape. berth keeps no descriptions or stars.
async fn search(app: &Arc<App>, req: Request, peer: IpAddr) -> ApiResult {
    let headers = req.headers().clone();
    let caller = app.caller(&headers, peer).await?;
    let who = match &caller.who {
        Principal::Granted { name, .. } => app.auth.principal_of(name).map_err(unavailable)?,
        w => w.clone(),
    };
    let q = query(&req);
    let term = param(&q, "q").unwrap_or("").to_ascii_lowercase();
    let n = param(&q, "n")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(25)
        .clamp(1, 100);
    let results: Vec<serde_json::Value> = app
        .storage
        .catalog()
        .into_iter()
        .filter(|r| r.contains(&term))
        .filter(|r| app.allowed(&who, r).contains(&Action::Pull))
        .take(n)
        .map(|r| {
            serde_json::json!({
                "name": r,
                "description": "",
                "star_count": 0,
                "is_official": false,
                "is_automated": false,
            })
        })
        .collect();
    let body = serde_json::json!({
        "num_results": results.len(),
        "num_pages": 1,
        "page": 1,
        "page_size": n,
        "query": term,
        "results": results,
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response())
}

async fn dispatch(app: &Arc<App>, req: Request, user: &mut String, peer: IpAddr) -> ApiResult {
    let path = req.uri().path().to_string();
    if path == "/token" {
        return token(app, req, peer).await;
    }
    if path == "/v1/search" {
        return search(app, req, peer).await;
    }
    if path != "/v2" && !path.starts_with("/v2/") {
        return Ok(web::handle(app, req, peer, user).await);
    }
    let Some(r) = route(&path) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no such endpoint: {path}"),
        ));
    };
    let headers = req.headers().clone();
    let caller = app.caller(&headers, peer).await?;
    *user = caller.user.clone();
    let method = req.method().clone();
    let action = match method {
        Method::GET | Method::HEAD => Action::Pull,
        Method::DELETE => Action::Delete,
        _ => Action::Push,
    };
    let cx = Call {
        headers: &headers,
        caller: &caller,
        method,
        action,
    };
    match r {
        Route::Base => base(app, &cx),
        Route::Catalog => catalog(app, &req, &cx),
        Route::Tags(name) => tags(app, &req, &cx, &name),
        Route::Manifest(name, reference) => manifest_route(app, req, &cx, &name, &reference).await,
        Route::Blob(name, digest) => blob_route(app, &cx, &name, &digest).await,
        Route::UploadStart(name) => upload_start_route(app, req, &cx, &name).await,
        Route::Upload(name, id) => upload_route(app, req, &cx, &name, &id).await,
        Route::Referrers(name, digest) => referrers(app, &req, &cx, &name, &digest),
    }
}

/// One authenticated request, as the route handlers see it: its headers,
/// who asks, its method and the action that method needs.
pub(super) struct Call<'r> {
    headers: &'r HeaderMap,
    caller: &'r Caller,
    method: Method,
    action: Action,
}

impl App {
    /// `name` is a valid repository name, and the caller may do `action`
    /// in it.
    fn admit(&self, cx: &Call<'_>, name: &str, action: Action) -> Result<(), ApiError> {
        if !valid_name(name) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "NAME_INVALID",
                format!("invalid repository name {name:?}"),
            ));
        }
        self.require(cx.headers, cx.caller, name, action)
    }
}

/// `GET /v2/`: the API version check (and the challenge for anonymous
/// callers of a closed registry).
fn base(app: &Arc<App>, cx: &Call<'_>) -> ApiResult {
    if !app.config.open && cx.caller.who == Principal::Anonymous {
        return Err(app.challenge(cx.headers, None, "authentication required"));
    }
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::HeaderName::from_static("docker-distribution-api-version"),
                "registry/2.0",
            ),
        ],
        "{}",
    )
        .into_response())
}

/// `GET /v2/_catalog`: the repositories the caller may pull, paginated.
fn catalog(app: &Arc<App>, req: &Request, cx: &Call<'_>) -> ApiResult {
    if !app.config.open && cx.caller.who == Principal::Anonymous && !app.config.public {
        return Err(app.challenge(
            cx.headers,
            Some("registry:catalog:*"),
            "authentication required",
        ));
    }
    let who = match &cx.caller.who {
        Principal::Granted { name, .. } => app.auth.principal_of(name).map_err(unavailable)?,
        w => w.clone(),
    };
    let all: Vec<String> = app
        .storage
        .catalog()
        .into_iter()
        .filter(|r| app.allowed(&who, r).contains(&Action::Pull))
        .collect();
    paginate(
        &query(req),
        all,
        "/v2/_catalog",
        |page| serde_json::json!({ "repositories": page }),
    )
}

/// `GET /v2/<name>/tags/list`, paginated.
fn tags(app: &Arc<App>, req: &Request, cx: &Call<'_>, name: &str) -> ApiResult {
    app.admit(cx, name, Action::Pull)?;
    if !app.storage.repo_exists(name) {
        return Err(name_unknown(name));
    }
    let tags = app.storage.tags(name);
    paginate(
        &query(req),
        tags,
        &format!("/v2/{name}/tags/list"),
        |page| serde_json::json!({ "name": name, "tags": page }),
    )
}

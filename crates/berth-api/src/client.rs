//! The client side of the Engine API: what `berth -H HOST` uses to drive a
//! service (`berth system service`, or dockerd: the protocol is docker's)
//! instead of a local store. A blocking facade over hyper's HTTP/1 client on
//! a current-thread runtime, so the CLI stays synchronous: plain calls with
//! the body collected, streamed bodies handed over chunk by chunk, and
//! hijacked connections (attach, exec) bridged to the caller's input and
//! output, with docker's stream framing undone by [`Demux`].
//!
//! Hosts are docker's forms: `unix:///path`, `tcp://host:port` (plain
//! HTTP, as the service listens on loopback), or a bare socket path. The
//! service's error bodies (`{"message": …}`) become [`ClientError::Daemon`],
//! which reads as the docker CLI prints it ("Error response from daemon: …").

use std::io::Read;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
pub use hyper::Method;
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The API version the client asks for (the service's newest).
pub const VERSION: &str = "1.47";

/// What a call can fail with.
#[derive(Debug)]
pub enum ClientError {
    /// The host string is not one we can reach.
    Host(String),
    /// Connecting or talking to the service failed.
    Connect {
        /// The host as given.
        host: String,
        /// Why.
        reason: String,
    },
    /// The service answered with an error status.
    Daemon {
        /// The HTTP status.
        status: u16,
        /// The service's message.
        message: String,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Host(h) => write!(
                f,
                "invalid host {h:?}: expected unix:///path, tcp://host:port or a socket path"
            ),
            ClientError::Connect { host, reason } => write!(
                f,
                "Cannot connect to the berth service at {host}: {reason}. Is `berth system service` running?"
            ),
            ClientError::Daemon { message, .. } => {
                write!(f, "Error response from daemon: {message}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

type Result<T> = std::result::Result<T, ClientError>;

enum Host {
    Unix(PathBuf),
    Tcp(String),
}

/// A collected answer.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status (below 400: errors are [`ClientError::Daemon`]).
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// The body as JSON (`null` when empty).
    pub fn json(&self) -> Result<Value> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Connect {
            host: String::new(),
            reason: format!("invalid JSON in the answer: {e}"),
        })
    }

    /// Whether the body is docker's multiplexed stream (a container
    /// without a tty) rather than raw bytes.
    pub fn multiplexed(&self) -> bool {
        self.content_type
            .contains("application/vnd.docker.multiplexed-stream")
    }
}

/// A request's optional parts.
#[derive(Default)]
pub struct Call<'a> {
    /// A JSON body.
    pub json: Option<&'a Value>,
    /// A raw body (a tar for build, import or archive puts).
    pub raw: Option<Vec<u8>>,
    /// Extra headers.
    pub headers: Vec<(&'a str, String)>,
}

/// The service at one host, and the runtime its calls run on.
pub struct Client {
    host: Host,
    shown: String,
    rt: tokio::runtime::Runtime,
}

impl Client {
    /// A client for `host` (docker's `-H` forms). Nothing is connected
    /// until the first call.
    pub fn new(host: &str) -> Result<Client> {
        let h = if let Some(p) = host.strip_prefix("unix://") {
            Host::Unix(PathBuf::from(p))
        } else if let Some(a) = host.strip_prefix("tcp://") {
            let a = a.trim_end_matches('/');
            if a.is_empty() || !a.contains(':') {
                return Err(ClientError::Host(host.to_string()));
            }
            Host::Tcp(a.to_string())
        } else if host.starts_with('/') {
            Host::Unix(PathBuf::from(host))
        } else {
            return Err(ClientError::Host(host.to_string()));
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Connect {
                host: host.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Client {
            host: h,
            shown: host.to_string(),
            rt,
        })
    }

    fn connect_err(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Connect {
            host: self.shown.clone(),
            reason: e.to_string(),
        }
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>> {
        async fn handshake<T>(io: T) -> std::io::Result<SendRequest<Full<Bytes>>>
        where
            T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        {
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn.with_upgrades());
            Ok(s)
        }
        let r = match &self.host {
            Host::Unix(p) => match tokio::net::UnixStream::connect(p).await {
                Ok(s) => handshake(s).await,
                Err(e) => Err(e),
            },
            Host::Tcp(a) => match tokio::net::TcpStream::connect(a.as_str()).await {
                Ok(s) => handshake(s).await,
                Err(e) => Err(e),
            },
        };
        r.map_err(|e| self.connect_err(e))
    }

    fn request(&self, method: Method, path: &str, call: Call<'_>) -> Result<Request<Full<Bytes>>> {
        let host = match &self.host {
            Host::Unix(_) => "localhost".to_string(),
            Host::Tcp(a) => a.clone(),
        };
        let mut b = Request::builder()
            .method(method)
            .uri(format!("/v{VERSION}{path}"))
            .header(hyper::header::HOST, host)
            .header(hyper::header::USER_AGENT, "berth-cli");
        let body = if let Some(j) = call.json {
            b = b.header(hyper::header::CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(j).unwrap_or_default())
        } else if let Some(r) = call.raw {
            b = b.header(hyper::header::CONTENT_TYPE, "application/x-tar");
            Bytes::from(r)
        } else {
            Bytes::new()
        };
        for (k, v) in call.headers {
            b = b.header(k, v);
        }
        b.body(Full::new(body)).map_err(|e| self.connect_err(e))
    }

    /// One call, its body collected; an error status is an error.
    pub fn call(&self, method: Method, path: &str, call: Call<'_>) -> Result<Response> {
        let req = self.request(method, path, call)?;
        self.rt.block_on(self.exchange(req))
    }

    /// Sends `req` on a connection of its own and collects the answer; an
    /// error status is an error.
    async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<Response> {
        let mut s = self.sender().await?;
        let resp = s.send_request(req).await.map_err(|e| self.connect_err(e))?;
        let status = resp.status().as_u16();
        let content_type = content_type(resp.headers());
        let body = self.collect(resp.into_body()).await?;
        check(status, &body)?;
        Ok(Response {
            status,
            content_type,
            body,
        })
    }

    /// A whole body.
    async fn collect(&self, body: hyper::body::Incoming) -> Result<Bytes> {
        Ok(body
            .collect()
            .await
            .map_err(|e| self.connect_err(e))?
            .to_bytes())
    }

    /// `GET path`, as JSON.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, Call::default())?.json()
    }

    /// `POST path` with an optional JSON body.
    pub fn post(&self, path: &str, json: Option<&Value>) -> Result<Response> {
        self.call(
            Method::POST,
            path,
            Call {
                json,
                ..Default::default()
            },
        )
    }

    /// One call whose body is handed to `on_chunk` as it arrives (logs -f,
    /// pull and push progress, build output). An error status is an error
    /// (its body collected for the message).
    pub fn stream(
        &self,
        method: Method,
        path: &str,
        call: Call<'_>,
        on_chunk: &mut dyn FnMut(&Response, &[u8]),
    ) -> Result<Response> {
        let req = self.request(method, path, call)?;
        self.rt.block_on(async {
            let mut s = self.sender().await?;
            let resp = s.send_request(req).await.map_err(|e| self.connect_err(e))?;
            let head = Response {
                status: resp.status().as_u16(),
                content_type: content_type(resp.headers()),
                body: Bytes::new(),
            };
            let mut body = resp.into_body();
            if head.status >= 400 {
                let b = self.collect(body).await?;
                return Err(daemon_error(head.status, &b));
            }
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| self.connect_err(e))?;
                if let Some(d) = frame.data_ref() {
                    on_chunk(&head, d);
                }
            }
            Ok(head)
        })
    }

    /// A hijacked call (attach, exec start). `input`, when given, is copied
    /// to the connection from a thread of its own (its EOF half-closes the
    /// connection, as docker's CLI does); what comes back goes to
    /// `on_output` until the service closes. With `then`, the steps of
    /// docker's `run`: the wait (`then.wait`, a POST whose `StatusCode` is
    /// returned) is asked before, and the start (`then.start`, a POST) once
    /// the connection is upgraded, so no output and no exit is missed.
    /// Returns the response's head (its content type says whether the
    /// output is multiplexed) and the waited exit code.
    pub fn hijack(
        &self,
        path: &str,
        call: Call<'_>,
        then: Option<Then>,
        input: Option<Box<dyn Read + Send>>,
        on_output: &mut dyn FnMut(&[u8]),
    ) -> Result<(Response, Option<i64>)> {
        let mut req = self.request(Method::POST, path, call)?;
        let h = req.headers_mut();
        h.insert(
            hyper::header::CONNECTION,
            "Upgrade".parse().expect("header"),
        );
        h.insert(hyper::header::UPGRADE, "tcp".parse().expect("header"));
        self.rt.block_on(async {
            let mut waiting = None;
            if let Some(t) = &then {
                let mut s = self.sender().await?;
                let w = self.request(Method::POST, &t.wait, Call::default())?;
                // Sent now, answered when the container exits.
                let fut = s.send_request(w);
                waiting = Some(tokio::spawn(async move {
                    let _keep = s;
                    let resp = fut.await.map_err(|e| e.to_string())?;
                    let status = resp.status().as_u16();
                    let b = resp
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?
                        .to_bytes();
                    Ok::<_, String>((status, b))
                }));
            }
            let mut s = self.sender().await?;
            let resp = s.send_request(req).await.map_err(|e| self.connect_err(e))?;
            let head = Response {
                status: resp.status().as_u16(),
                content_type: content_type(resp.headers()),
                body: Bytes::new(),
            };
            if head.status >= 400 {
                let b = self.collect(resp.into_body()).await?;
                return Err(daemon_error(head.status, &b));
            }
            let mut out: Box<dyn AsyncRead + Unpin + Send> = if head.status == 101 {
                let up = hyper::upgrade::on(resp)
                    .await
                    .map_err(|e| self.connect_err(e))?;
                let (rd, mut wr) = tokio::io::split(TokioIo::new(up));
                if let Some(input) = input {
                    let mut rx = read_in_thread(input);
                    tokio::spawn(async move {
                        while let Some(d) = rx.recv().await {
                            if wr.write_all(&d).await.is_err() {
                                return;
                            }
                        }
                        let _ = wr.shutdown().await;
                    });
                }
                Box::new(rd)
            } else {
                // Not upgraded: the output is the body.
                use futures_util::TryStreamExt;
                let stream = resp
                    .into_body()
                    .into_data_stream()
                    .map_err(std::io::Error::other);
                Box::new(tokio_util::io::StreamReader::new(stream))
            };
            if let Some(t) = &then {
                let r = self.request(Method::POST, &t.start, Call::default())?;
                self.exchange(r).await?;
            }
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match out.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => on_output(&buf[..n]),
                }
            }
            let mut code = None;
            if let Some(w) = waiting {
                let (status, b) = w
                    .await
                    .map_err(|e| self.connect_err(e))?
                    .map_err(|e| self.connect_err(e))?;
                check(status, &b)?;
                code = serde_json::from_slice::<Value>(&b)
                    .ok()
                    .and_then(|v| v["StatusCode"].as_i64());
            }
            Ok((head, code))
        })
    }
}

/// What [`Client::hijack`] does around the attach, for `run` and `start -a`.
pub struct Then {
    /// The wait, asked before anything starts (`/containers/ID/wait?…`).
    pub wait: String,
    /// The start, once attached (`/containers/ID/start`).
    pub start: String,
}

/// A thread copying a blocking reader (stdin) into a channel, chunk by
/// chunk; the channel closes at its EOF.
fn read_in_thread(mut input: Box<dyn Read + Send>) -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

fn content_type(h: &hyper::HeaderMap) -> String {
    h.get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// An error status as [`ClientError::Daemon`], with the service's message.
fn check(status: u16, body: &[u8]) -> Result<()> {
    if status < 400 {
        return Ok(());
    }
    Err(daemon_error(status, body))
}

fn daemon_error(status: u16, body: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    ClientError::Daemon { status, message }
}

/// Undoes docker's stream multiplexing: 8-byte headers (stream, 0, 0, 0,
/// big-endian length) before each frame, frames split anywhere across
/// reads.
#[derive(Default)]
pub struct Demux {
    pending: Vec<u8>,
}

impl Demux {
    /// Feeds bytes; calls `out(stream, data)` for each whole frame's data
    /// (stream 1 stdout, 2 stderr).
    pub fn feed(&mut self, data: &[u8], out: &mut dyn FnMut(u8, &[u8])) {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        while self.pending.len() - at >= 8 {
            let h = &self.pending[at..at + 8];
            let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
            if self.pending.len() - at - 8 < len {
                break;
            }
            out(h[0], &self.pending[at + 8..at + 8 + len]);
            at += 8 + len;
        }
        self.pending.drain(..at);
    }
}

/// Percent-encodes a query value.
pub fn q(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demux_joins_frames_split_across_reads() {
        let mut d = Demux::default();
        let mut got = Vec::new();
        let mut frames = vec![1, 0, 0, 0, 0, 0, 0, 3];
        frames.extend_from_slice(b"out");
        frames.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 4]);
        frames.extend_from_slice(b"err\n");
        for chunk in frames.chunks(5) {
            d.feed(chunk, &mut |s, b| got.push((s, b.to_vec())));
        }
        assert_eq!(got, vec![(1, b"out".to_vec()), (2, b"err\n".to_vec())]);
    }

    #[test]
    fn hosts_are_docker_s_forms() {
        assert!(Client::new("unix:///run/berth.sock").is_ok());
        assert!(Client::new("/run/berth.sock").is_ok());
        assert!(Client::new("tcp://127.0.0.1:2375").is_ok());
        for bad in ["tcp://", "tcp://host", "ssh://x", "berth.sock"] {
            assert!(
                matches!(Client::new(bad), Err(ClientError::Host(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_unreachable_service_is_a_connect_error() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Client::new(&format!("unix://{}", tmp.path().join("no.sock").display())).unwrap();
        let e = c.get("/_ping").unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e}");
        assert!(e.to_string().contains("Cannot connect"), "{e}");
    }

    #[test]
    fn error_bodies_carry_the_daemon_s_message() {
        let e = check(404, br#"{"message":"No such container: x"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Error response from daemon: No such container: x"
        );
        assert!(check(304, b"").is_ok());
    }
}

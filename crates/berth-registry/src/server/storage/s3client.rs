//! A small blocking S3 client: the dozen calls the registry's object-store
//! backend makes (get, head, put, delete, list, copy, multipart uploads,
//! ranged reads).
//!
//! Requests are signed (AWS Signature V4, as presigned URLs) by `rusty-s3`,
//! which does no I/O, and sent by `ureq`, the HTTP client berth's registry
//! client already uses — so this adds no async SDK and no second TLS stack.
//! What is written here is only what neither crate does: the error mapping
//! (404 → absent, S3's XML error code and message into the error), retries
//! of transient failures for requests whose body is in memory, and the copy
//! calls (a PUT with `x-amz-copy-source`, signed like any header).
//!
//! Calls block. The server calls them from async handlers through
//! [`blocking`], which hands the worker's other tasks to another thread for
//! the duration (tokio's `block_in_place`), so a slow bucket never stalls
//! unrelated requests.

use std::io::{self, Read};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde::{Deserialize, Serialize};
use ureq::http::{Request, Response};

/// How long a signed request stays valid (it is sent at once; this only
/// bounds a clock skew and a slow body).
const SIGN_FOR: Duration = Duration::from_secs(3600);
/// Attempts for an idempotent request whose body is in memory.
const ATTEMPTS: u32 = 4;
/// The largest object read whole into memory (metadata, manifests, configs).
const MAX_SMALL_OBJECT: u64 = 64 << 20;

/// Object-store settings besides the `s3://bucket/prefix` URL (flags and
/// config keys; unset ones come from the standard AWS environment).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Options {
    /// Endpoint URL (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`; else AWS).
    pub endpoint: Option<String>,
    /// Region (`AWS_REGION`, `AWS_DEFAULT_REGION`; else `us-east-1`).
    pub region: Option<String>,
    /// Access key id (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// A file holding the secret key (`AWS_SECRET_ACCESS_KEY` otherwise);
    /// never a flag value, which `ps` would show.
    pub secret_access_key_file: Option<PathBuf>,
    /// Virtual-host addressing (`bucket.host`) instead of path style.
    pub virtual_host: bool,
    /// Answer blob GETs with a redirect to a presigned URL of the object
    /// (the clients then fetch from the store, which they must reach).
    pub redirect: bool,
}

/// An object's size and modification time.
#[derive(Debug, Clone, Copy)]
pub struct ObjectMeta {
    /// Bytes.
    pub size: u64,
    /// Last modified (as the store reports it).
    pub modified: SystemTime,
}

/// One listed object.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The key, less the client's prefix.
    pub key: String,
    /// Size and modification time.
    pub meta: ObjectMeta,
}

/// The client for one bucket and key prefix.
#[derive(Debug)]
pub struct S3Client {
    bucket: Bucket,
    creds: Option<Credentials>,
    /// `prefix/` or empty.
    prefix: String,
    agent: ureq::Agent,
    url: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Runs blocking work from wherever the caller is: on a multi-threaded
/// runtime's worker it moves that worker's other tasks away first.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn parse_http_date(s: &str) -> Option<SystemTime> {
    let z = jiff::fmt::rfc2822::parse(s.trim()).ok()?;
    SystemTime::try_from(z.timestamp()).ok()
}

fn parse_iso_date(s: &str) -> Option<SystemTime> {
    let t: jiff::Timestamp = s.trim().parse().ok()?;
    SystemTime::try_from(t).ok()
}

/// `<Code>` and `<Message>` of an S3 XML error body.
fn xml_error(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let field = |tag: &str| {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let a = s.find(&open)? + open.len();
        let b = s[a..].find(&close)? + a;
        Some(s[a..b].to_string())
    };
    match (field("Code"), field("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => s.chars().take(200).collect(),
    }
}

impl S3Client {
    /// A client for `s3://bucket[/prefix]` with `opts` and the environment.
    pub fn new(url: &str, opts: &S3Options) -> Result<S3Client, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3://bucket/prefix URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        {
            return Err(format!("{url:?}: invalid bucket name {bucket:?}"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Err(format!("{url:?}: invalid key prefix {prefix:?}"));
        }
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let region = opts
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = opts
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"));
        let virtual_host = opts.virtual_host || endpoint.is_none();
        let endpoint = endpoint.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint_url: url::Url = endpoint
            .parse()
            .map_err(|e| format!("invalid S3 endpoint {endpoint:?}: {e}"))?;
        let style = if virtual_host {
            UrlStyle::VirtualHost
        } else {
            UrlStyle::Path
        };
        let b = Bucket::new(endpoint_url, style, bucket.to_string(), region)
            .map_err(|e| format!("invalid S3 endpoint {endpoint:?}: {e}"))?;
        let key = opts
            .access_key_id
            .clone()
            .or_else(|| env("AWS_ACCESS_KEY_ID"));
        let secret = match &opts.secret_access_key_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("reading the S3 secret key {}: {e}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => env("AWS_SECRET_ACCESS_KEY"),
        };
        let creds = match (key, secret) {
            (Some(k), Some(s)) => Some(match env("AWS_SESSION_TOKEN") {
                Some(t) => Credentials::new_with_token(k, s, t),
                None => Credentials::new(k, s),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err("an S3 access key id without a secret key \
                     (set AWS_SECRET_ACCESS_KEY or --s3-secret-access-key-file)"
                    .into());
            }
            (None, Some(_)) => {
                return Err("an S3 secret key without an access key id \
                     (set AWS_ACCESS_KEY_ID or --s3-access-key-id)"
                    .into());
            }
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .accept_encoding("identity")
            .user_agent(concat!("berth-registry/", env!("CARGO_PKG_VERSION")))
            .max_idle_connections_per_host(32)
            .build()
            .into();
        Ok(S3Client {
            url: format!("s3://{bucket}/{prefix}"),
            bucket: b,
            creds,
            prefix,
            agent,
        })
    }

    /// `s3://bucket/prefix/`, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn err(&self, what: &str, key: &str, status: u16, body: &[u8]) -> io::Error {
        let kind = match status {
            403 => io::ErrorKind::PermissionDenied,
            404 => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(
            kind,
            format!(
                "S3 {what} {}{}{key}: HTTP {status} {}",
                self.url,
                if self.url.ends_with('/') { "" } else { "/" },
                xml_error(body)
            ),
        )
    }

    /// Sends a request whose body is in memory, again after a transport
    /// error or a 5xx (S3's `SlowDown` and `InternalError` ask for that).
    fn send(
        &self,
        method: &str,
        url: &url::Url,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> io::Result<(u16, ureq::http::HeaderMap, Vec<u8>)> {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100 << attempt));
            }
            let mut b = Request::builder().method(method).uri(url.as_str());
            for (k, v) in headers {
                b = b.header(*k, v.as_str());
            }
            let req = b.body(body).map_err(io::Error::other)?;
            match blocking(|| self.agent.run(req)) {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let mut out = Vec::new();
                    let read = resp
                        .into_body()
                        .into_reader()
                        .take(MAX_SMALL_OBJECT)
                        .read_to_end(&mut out);
                    match read {
                        Ok(_) if status >= 500 => {
                            last = Some(io::Error::other(format!(
                                "HTTP {status} {}",
                                xml_error(&out)
                            )))
                        }
                        Ok(_) => return Ok((status, headers, out)),
                        Err(e) => last = Some(e),
                    }
                }
                Err(e) => last = Some(io::Error::other(e)),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no attempt")))
    }

    /// An object's bytes, or `None` when there is no such object.
    pub fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        let full = self.full(key);
        let url = self
            .bucket
            .get_object(self.creds.as_ref(), &full)
            .sign(SIGN_FOR);
        let (status, _, body) = self.send("GET", &url, &[], &[])?;
        match status {
            200 => Ok(Some(body)),
            404 => Ok(None),
            s => Err(self.err("GET", key, s, &body)),
        }
    }

    /// An object's size and time, or `None` when there is no such object.
    pub fn head(&self, key: &str) -> io::Result<Option<ObjectMeta>> {
        let full = self.full(key);
        let url = self
            .bucket
            .head_object(self.creds.as_ref(), &full)
            .sign(SIGN_FOR);
        let (status, headers, body) = self.send("HEAD", &url, &[], &[])?;
        match status {
            200 => {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
                Ok(Some(ObjectMeta {
                    size: h("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    modified: h("last-modified")
                        .and_then(parse_http_date)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                }))
            }
            404 => Ok(None),
            s => Err(self.err("HEAD", key, s, &body)),
        }
    }

    /// Writes an object whole (S3 makes it visible at once or not at all).
    pub fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let full = self.full(key);
        let url = self
            .bucket
            .put_object(self.creds.as_ref(), &full)
            .sign(SIGN_FOR);
        let (status, _, body) = self.send(
            "PUT",
            &url,
            &[("content-length", data.len().to_string())],
            data,
        )?;
        match status {
            200 | 201 | 204 => Ok(()),
            s => Err(self.err("PUT", key, s, &body)),
        }
    }

    /// Deletes an object (S3 answers the same whether it existed or not).
    pub fn delete(&self, key: &str) -> io::Result<()> {
        let full = self.full(key);
        let url = self
            .bucket
            .delete_object(self.creds.as_ref(), &full)
            .sign(SIGN_FOR);
        let (status, _, body) = self.send("DELETE", &url, &[], &[])?;
        match status {
            200 | 204 | 404 => Ok(()),
            s => Err(self.err("DELETE", key, s, &body)),
        }
    }

    /// Copies an object inside the bucket, server-side (no bytes through
    /// this process); up to S3's 5 GiB limit for one copy.
    pub fn copy(&self, from: &str, to: &str) -> io::Result<()> {
        let full = self.full(to);
        let source = format!("/{}/{}", self.bucket.name(), self.full(from));
        let mut action = self.bucket.put_object(self.creds.as_ref(), &full);
        action
            .headers_mut()
            .insert("x-amz-copy-source", source.clone());
        let url = action.sign(SIGN_FOR);
        let (status, _, body) = self.send("PUT", &url, &[("x-amz-copy-source", source)], &[])?;
        // A copy can fail after its 200 has been sent: the error is the body.
        if status != 200 || body.windows(7).any(|w| w == b"<Error>") {
            return Err(self.err("COPY to", to, status, &body));
        }
        Ok(())
    }

    /// Every object under `prefix` (`delimiter` `/`: the direct children,
    /// with the "directories" as keys ending in `/`).
    pub fn list(&self, prefix: &str, delimiter: bool) -> io::Result<Vec<Listed>> {
        let full = self.full(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(self.creds.as_ref());
            action.with_prefix(full.as_str());
            if delimiter {
                action.with_delimiter("/");
            }
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(SIGN_FOR);
            let (status, _, body) = self.send("GET", &url, &[], &[])?;
            if status != 200 {
                return Err(self.err("LIST", prefix, status, &body));
            }
            let r = rusty_s3::actions::ListObjectsV2::parse_response(&body)
                .map_err(|e| io::Error::other(format!("S3 LIST {prefix}: {e}")))?;
            let strip = |k: &str| k.strip_prefix(&self.prefix).unwrap_or(k).to_string();
            for c in &r.contents {
                out.push(Listed {
                    key: strip(&c.key),
                    meta: ObjectMeta {
                        size: c.size,
                        modified: parse_iso_date(&c.last_modified)
                            .unwrap_or(SystemTime::UNIX_EPOCH),
                    },
                });
            }
            for p in &r.common_prefixes {
                out.push(Listed {
                    key: strip(&p.prefix),
                    meta: ObjectMeta {
                        size: 0,
                        modified: SystemTime::UNIX_EPOCH,
                    },
                });
            }
            match r.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// Starts a multipart upload to `key`; its upload id.
    pub fn multipart_start(&self, key: &str) -> io::Result<String> {
        let full = self.full(key);
        let url = self
            .bucket
            .create_multipart_upload(self.creds.as_ref(), &full)
            .sign(SIGN_FOR);
        let (status, _, body) = self.send("POST", &url, &[], &[])?;
        if status != 200 {
            return Err(self.err("CREATE MULTIPART", key, status, &body));
        }
        let r = rusty_s3::actions::CreateMultipartUpload::parse_response(&body)
            .map_err(|e| io::Error::other(format!("S3 CREATE MULTIPART {key}: {e}")))?;
        Ok(r.upload_id().to_string())
    }

    /// Sends part `n` (from 1) of a multipart upload; its ETag.
    pub fn multipart_part(
        &self,
        key: &str,
        upload: &str,
        n: u16,
        data: &[u8],
    ) -> io::Result<String> {
        let full = self.full(key);
        let url = self
            .bucket
            .upload_part(self.creds.as_ref(), &full, n, upload)
            .sign(SIGN_FOR);
        let (status, headers, body) = self.send(
            "PUT",
            &url,
            &[("content-length", data.len().to_string())],
            data,
        )?;
        if status != 200 {
            return Err(self.err(&format!("UPLOAD PART {n} of"), key, status, &body));
        }
        headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| io::Error::other(format!("S3 UPLOAD PART {n} of {key}: no ETag")))
    }

    /// Copies `[start, end]` of object `from` as part `n`, server-side.
    pub fn multipart_copy_part(
        &self,
        key: &str,
        upload: &str,
        n: u16,
        from: &str,
        (start, end): (u64, u64),
    ) -> io::Result<String> {
        let full = self.full(key);
        let source = format!("/{}/{}", self.bucket.name(), self.full(from));
        let range = format!("bytes={start}-{end}");
        let mut action = self
            .bucket
            .upload_part(self.creds.as_ref(), &full, n, upload);
        action
            .headers_mut()
            .insert("x-amz-copy-source", source.clone());
        action
            .headers_mut()
            .insert("x-amz-copy-source-range", range.clone());
        let url = action.sign(SIGN_FOR);
        let (status, _, body) = self.send(
            "PUT",
            &url,
            &[
                ("x-amz-copy-source", source),
                ("x-amz-copy-source-range", range),
            ],
            &[],
        )?;
        let s = String::from_utf8_lossy(&body);
        if status != 200 || s.contains("<Error>") {
            return Err(self.err(&format!("COPY PART {n} of"), key, status, &body));
        }
        let etag = s
            .split_once("<ETag>")
            .and_then(|(_, r)| r.split_once("</ETag>"))
            .map(|(e, _)| e.replace("&quot;", "\""))
            .ok_or_else(|| io::Error::other(format!("S3 COPY PART {n} of {key}: no ETag")))?;
        Ok(etag)
    }

    /// Completes a multipart upload from its parts' ETags, in order.
    pub fn multipart_complete(&self, key: &str, upload: &str, etags: &[String]) -> io::Result<()> {
        let full = self.full(key);
        let action = self.bucket.complete_multipart_upload(
            self.creds.as_ref(),
            &full,
            upload,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGN_FOR);
        let xml = action.body();
        let (status, _, body) = self.send(
            "POST",
            &url,
            &[("content-length", xml.len().to_string())],
            xml.as_bytes(),
        )?;
        if status != 200 || body.windows(7).any(|w| w == b"<Error>") {
            return Err(self.err("COMPLETE MULTIPART", key, status, &body));
        }
        Ok(())
    }

    /// Abandons a multipart upload (its parts are freed).
    pub fn multipart_abort(&self, key: &str, upload: &str) -> io::Result<()> {
        let full = self.full(key);
        let url = self
            .bucket
            .abort_multipart_upload(self.creds.as_ref(), &full, upload)
            .sign(SIGN_FOR);
        let (status, _, body) = self.send("DELETE", &url, &[], &[])?;
        match status {
            200 | 204 | 404 => Ok(()),
            s => Err(self.err("ABORT MULTIPART", key, s, &body)),
        }
    }

    /// A presigned GET URL of the object, valid for `valid`.
    pub fn presigned_get(&self, key: &str, valid: Duration) -> String {
        let full = self.full(key);
        self.bucket
            .get_object(self.creds.as_ref(), &full)
            .sign(valid)
            .to_string()
    }

    /// A reader of `len` bytes of the object from `start` (a ranged GET),
    /// streamed: nothing is held beyond the HTTP client's buffer.
    pub fn reader(&self, key: &str, start: u64, len: u64) -> io::Result<Box<dyn Read + Send>> {
        if len == 0 {
            return Ok(Box::new(io::empty()));
        }
        let full = self.full(key);
        let url = self
            .bucket
            .get_object(self.creds.as_ref(), &full)
            .sign(SIGN_FOR);
        let req = Request::builder()
            .method("GET")
            .uri(url.as_str())
            .header("range", format!("bytes={start}-{}", start + len - 1))
            .body(())
            .map_err(io::Error::other)?;
        let resp: Response<ureq::Body> =
            blocking(|| self.agent.run(req)).map_err(io::Error::other)?;
        let status = resp.status().as_u16();
        if status != 206 && !(status == 200 && start == 0) {
            let mut body = Vec::new();
            let _ = resp
                .into_body()
                .into_reader()
                .take(1 << 16)
                .read_to_end(&mut body);
            return Err(self.err("GET", key, status, &body));
        }
        Ok(Box::new(resp.into_body().into_reader().take(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_settings() {
        let o = S3Options {
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: Some("eu-west-1".into()),
            access_key_id: Some("k".into()),
            ..Default::default()
        };
        // A key id with no secret anywhere is refused, not sent unsigned.
        // SAFETY (env): this test alone reads AWS_SECRET_ACCESS_KEY.
        if env("AWS_SECRET_ACCESS_KEY").is_none() {
            let e = S3Client::new("s3://b/p", &o).unwrap_err();
            assert!(e.contains("without a secret key"), "{e}");
        }
        let anon = S3Options {
            access_key_id: None,
            ..o.clone()
        };
        if env("AWS_ACCESS_KEY_ID").is_none() && env("AWS_SECRET_ACCESS_KEY").is_none() {
            let c = S3Client::new("s3://my-bucket/a/b/", &anon).unwrap();
            assert_eq!(c.url(), "s3://my-bucket/a/b/");
            assert_eq!(c.full("x"), "a/b/x");
            let c = S3Client::new("s3://my-bucket", &anon).unwrap();
            assert_eq!(c.full("x"), "x");
        }
        for bad in ["http://x/y", "s3://", "s3://Bad_Bucket/x", "s3://b/../x"] {
            assert!(S3Client::new(bad, &anon).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_and_errors() {
        let t = parse_http_date("Mon, 07 Dec 2026 18:02:45 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_796_666_565
        );
        let t2 = parse_iso_date("2026-12-07T18:02:45.000Z").unwrap();
        assert_eq!(t, t2);
        assert_eq!(
            xml_error(b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>"),
            "NoSuchKey: gone"
        );
    }
}

//! The registry's web pages, served beside the API by `berth registry
//! serve` (everything outside `/v2/`, `/token` and `/v1/search`): sign up,
//! log in and out, the account, access tokens, repositories and their
//! tags, and an admin page — a team's Docker Hub, from the same binary.
//!
//! Plain HTML rendered here (no templates crate: a page is a few `format!`s
//! over [`esc`]aped values) and one stylesheet; no JavaScript. As a web
//! application it holds the same line as the API:
//! - sessions in `HttpOnly`, `SameSite=Lax` cookies (`Secure` under TLS),
//!   kept hashed server-side ([`session`]);
//! - a CSRF token on every form: the session's own, or before a session
//!   (log in, sign up) one in a `SameSite=Strict` cookie the form repeats;
//! - the API's password rules and guessing guard; passwords and tokens only
//!   in POST bodies, never in a URL or the request log;
//! - a strict `Content-Security-Policy` (no scripts at all), no framing, no
//!   caching of pages that show secrets;
//! - fail closed: unreadable accounts answer 503, a repository the caller
//!   may not pull is "not found".

mod pages;
mod repos;
pub mod session;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::App;
use super::auth::{Principal, Unreadable};
use session::Session;

/// The session cookie.
const SESSION: &str = "berth_session";
/// The cookie that carries the CSRF token of forms made before a session.
const PRE_CSRF: &str = "berth_csrf";
/// The largest form body accepted.
const MAX_FORM: usize = 64 << 10;

/// What every page handler gets: the app, who is asking, their session
/// and the request's form.
pub(super) struct Ctx<'a> {
    app: &'a Arc<App>,
    peer: IpAddr,
    headers: HeaderMap,
    cookies: BTreeMap<String, String>,
    /// The session's id (for its cookie) and record.
    session: Option<(String, Session)>,
    /// Whether the signed-in user is an admin.
    admin: bool,
    form: BTreeMap<String, String>,
}

impl Ctx<'_> {
    fn user(&self) -> Option<&str> {
        self.session.as_ref().map(|(_, s)| s.user.as_str())
    }

    /// Who is asking, as the API's access rules see them.
    fn principal(&self) -> Principal {
        match self.user() {
            Some(u) => Principal::User {
                name: u.to_string(),
                admin: self.admin,
                cap: None,
            },
            None => Principal::Anonymous,
        }
    }

    fn field(&self, k: &str) -> &str {
        self.form.get(k).map(String::as_str).unwrap_or("")
    }

    /// The registry's host as the browser reached it (for pull commands).
    fn host(&self) -> String {
        super::header_str(&self.headers, header::HOST)
            .unwrap_or("localhost")
            .to_string()
    }

    fn secure(&self) -> bool {
        self.app.config.tls_cert.is_some()
    }

    /// Whether the form carries the right CSRF token: the session's, or
    /// before a session the one in the pre-session cookie.
    fn csrf_ok(&self) -> bool {
        let sent = self.field("csrf");
        let want = match &self.session {
            Some((_, s)) => s.csrf.as_str(),
            None => self.cookies.get(PRE_CSRF).map(String::as_str).unwrap_or(""),
        };
        !sent.is_empty() && constant_eq(sent.as_bytes(), want.as_bytes())
    }

    /// The CSRF token a form of this page carries, and the cookie to set
    /// for it when there is no session yet.
    fn csrf_token(&self) -> (String, Option<String>) {
        if let Some((_, s)) = &self.session {
            return (s.csrf.clone(), None);
        }
        if let Some(v) = self.cookies.get(PRE_CSRF).filter(|v| v.len() == 32) {
            return (v.clone(), None);
        }
        let v = super::auth::random_hex(16);
        let cookie = format!(
            "{PRE_CSRF}={v}; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600{}",
            if self.secure() { "; Secure" } else { "" }
        );
        (v, Some(cookie))
    }

    /// The hidden input that carries the CSRF token (with a session).
    fn csrf_input(&self) -> String {
        let t = self
            .session
            .as_ref()
            .map(|(_, s)| s.csrf.clone())
            .unwrap_or_default();
        format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(&t))
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HTML-escapes `s` (text and attribute values).
pub(super) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// An RFC 3339 time as the pages show it (`2026-12-07 13:03 UTC`); empty
/// stays empty, and anything else is shown as it is.
pub(super) fn when(s: &str) -> String {
    match s.parse::<jiff::Timestamp>() {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        Err(_) => s.to_string(),
    }
}

/// A page to send.
pub(super) struct Page {
    status: StatusCode,
    title: String,
    body: String,
    cookies: Vec<String>,
}

impl Page {
    fn new(title: &str, body: String) -> Page {
        Page {
            status: StatusCode::OK,
            title: title.to_string(),
            body,
            cookies: Vec::new(),
        }
    }

    fn status(mut self, s: StatusCode) -> Page {
        self.status = s;
        self
    }

    fn cookie(mut self, c: Option<String>) -> Page {
        self.cookies.extend(c);
        self
    }
}

/// The headers every page gets: no scripts, no framing, no sniffing, no
/// caching (pages may show a token once).
fn secure_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Renders `p` in the site's layout (navigation for who is signed in).
fn render(cx: &Ctx, p: Page) -> Response {
    let nav = match cx.user() {
        Some(u) => format!(
            r#"<a href="/repositories">Repositories</a><a href="/tokens">Access tokens</a><a href="/account">{}</a>{}<form method="post" action="/logout" class="inline">{}<button type="submit" class="link">Log out</button></form>"#,
            esc(u),
            if cx.admin {
                r#"<a href="/admin">Admin</a>"#
            } else {
                ""
            },
            cx.csrf_input()
        ),
        None => format!(
            r#"<a href="/repositories">Repositories</a><a href="/login">Log in</a>{}"#,
            if cx.app.config.signup == "closed" {
                ""
            } else {
                r#"<a href="/signup">Sign up</a>"#
            }
        ),
    };
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · berth registry</title>
<link rel="stylesheet" href="/static/style.css">
</head><body>
<header><a class="brand" href="/">berth registry</a><nav>{nav}</nav></header>
<main>
<h1>{title}</h1>
{body}
</main>
</body></html>
"#,
        title = esc(&p.title),
        body = p.body,
    );
    let mut r = (p.status, html).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(&mut r);
    for c in p.cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// A 303 to `to`, setting `cookies`.
fn redirect(to: &str, cookies: &[String]) -> Response {
    let mut r = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .body(Body::empty())
        .expect("redirect");
    secure_headers(&mut r);
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// A message page with `status`.
fn message(cx: &Ctx, status: StatusCode, title: &str, text: &str) -> Response {
    render(
        cx,
        Page::new(title, format!(r#"<p class="note">{}</p>"#, esc(text))).status(status),
    )
}

fn not_found(cx: &Ctx) -> Response {
    message(
        cx,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is nothing here, or you may not see it.",
    )
}

/// What a form that failed its CSRF check gets.
fn forbidden_form(cx: &Ctx) -> Response {
    message(
        cx,
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form was not sent by a page of this registry, or it is too old: go back, reload the page and try again.",
    )
}

/// The session cookie for `id` (or one that ends it, for `None`).
fn session_cookie(cx: &Ctx, id: Option<&str>) -> String {
    let secure = if cx.secure() { "; Secure" } else { "" };
    match id {
        Some(id) => format!(
            "{SESSION}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            session::TTL
        ),
        None => format!("{SESSION}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    }
}

fn cookies_of(h: &HeaderMap) -> BTreeMap<String, String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Serves a page request. `user` is set for the request log.
pub(super) async fn handle(
    app: &Arc<App>,
    req: Request,
    peer: IpAddr,
    user: &mut String,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let cookies = cookies_of(&headers);
    // The accounts, read once for the session, the admin flag and the
    // fail-closed answer below; the session's file beside them.
    let (a, id) = (app.clone(), cookies.get(SESSION).cloned());
    let (users, session) = tokio::task::spawn_blocking(move || {
        let users = a.auth.users();
        let session = match (&users, id) {
            (Ok(u), Some(id)) => session::find(&a.auth, u, &id).map(|s| (id, s)),
            _ => None,
        };
        (users, session)
    })
    .await
    .unwrap_or_else(|e| (Err(Unreadable(e.to_string())), None));
    let admin = match (&session, &users) {
        (Some((_, s)), Ok(u)) => u.get(&s.user).is_some_and(|u| u.admin),
        _ => false,
    };
    if let Some((_, s)) = &session {
        *user = s.user.clone();
    }
    let mut cx = Ctx {
        app,
        peer,
        headers,
        cookies,
        session,
        admin,
        form: BTreeMap::new(),
    };
    if method == Method::POST {
        match axum::body::to_bytes(req.into_body(), MAX_FORM).await {
            Ok(b) => {
                cx.form = form_urlencoded::parse(&b)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
            }
            Err(_) => {
                return message(
                    &cx,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Too large",
                    "That form was too large.",
                );
            }
        }
        if !cx.csrf_ok() {
            return forbidden_form(&cx);
        }
    }
    if users.is_err() {
        return message(
            &cx,
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The registry's accounts cannot be read just now: try again later.",
        );
    }
    route(&cx, &method, &path).await
}

async fn route(cx: &Ctx<'_>, method: &Method, path: &str) -> Response {
    match (method.as_str(), path) {
        ("GET", "/") => match cx.user() {
            Some(_) => redirect("/repositories", &[]),
            None => repos::list(cx),
        },
        ("GET", "/static/style.css") => {
            let mut r = (
                [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                include_str!("style.css"),
            )
                .into_response();
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=3600"),
            );
            r
        }
        ("GET", "/login") => pages::login_page(cx, None, StatusCode::OK),
        ("POST", "/login") => pages::login(cx).await,
        ("POST", "/logout") => pages::logout(cx),
        ("GET", "/signup") => pages::signup_page(cx, None, StatusCode::OK),
        ("POST", "/signup") => pages::signup(cx).await,
        ("GET", "/account") => pages::account(cx, None),
        ("POST", "/account/password") => pages::change_password(cx).await,
        ("GET", "/tokens") => pages::tokens(cx, None),
        ("POST", "/tokens") => pages::create_token(cx),
        ("POST", "/tokens/revoke") => pages::revoke_token(cx),
        ("GET", "/admin") => pages::admin(cx, None),
        ("POST", "/admin/users") => pages::admin_add_user(cx).await,
        ("POST", "/admin/users/remove") => pages::admin_remove_user(cx),
        ("POST", "/admin/invites") => pages::admin_invite(cx),
        ("GET", "/repositories") => repos::list(cx),
        ("GET", p) if p.starts_with("/r/") => repos::repo(cx, &p[3..]),
        ("POST", p) if p.starts_with("/r/") => repos::change(cx, &p[3..]),
        _ => not_found(cx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_html_would_read() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn cookies_parse_and_compare_in_constant_time() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; berth_session=xyz"),
        );
        let c = cookies_of(&h);
        assert_eq!(c.get("berth_session").map(String::as_str), Some("xyz"));
        assert!(constant_eq(b"abc", b"abc"));
        assert!(!constant_eq(b"abc", b"abd") && !constant_eq(b"abc", b"ab"));
    }
}

//! The account pages: log in and out, sign up (by the server's policy),
//! the account and its password, access tokens (made with a name, a scope
//! and an expiry, shown once, listed with their last use, revoked), and
//! the admin page (accounts and invitations).

use super::*;

/// Docker Hub's names for the token scopes.
const SCOPES: &[(&str, &str)] = &[
    ("pull", "Read-only"),
    ("push", "Read & Write"),
    ("delete", "Read, Write, Delete"),
];

fn scope_label(s: &str) -> &str {
    SCOPES
        .iter()
        .find(|(k, _)| *k == s)
        .map(|(_, l)| *l)
        .unwrap_or(s)
}

fn error_box(e: Option<&str>) -> String {
    e.map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(e)))
        .unwrap_or_default()
}

/// The signed-in user, or the response that sends the browser to log in.
fn signed_in<'c>(cx: &'c Ctx) -> Result<&'c str, Box<Response>> {
    cx.user().ok_or_else(|| Box::new(redirect("/login", &[])))
}

/// Checks a password with the API's guessing guard ([`App::guarded`]).
async fn verify(cx: &Ctx<'_>, user: &str, password: &str) -> Result<bool, Response> {
    let (u, p) = (user.to_string(), password.to_string());
    match cx
        .app
        .guarded(cx.peer, Some(user), move |auth| {
            auth.verify_password(&u, &p)
        })
        .await
    {
        Ok(found) => Ok(found.is_some()),
        Err(crate::server::Refused::Wait(w)) => Err(pages_wait(cx, w)),
        Err(crate::server::Refused::Internal(_)) => Err(message(
            cx,
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The server is stopping.",
        )),
        Err(crate::server::Refused::Unavailable(_)) => Err(message(
            cx,
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The registry's accounts cannot be read just now: try again later.",
        )),
    }
}

fn pages_wait(cx: &Ctx, w: std::time::Duration) -> Response {
    message(
        cx,
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        &format!(
            "Too many failed attempts: try again in {} seconds.",
            w.as_secs().max(1)
        ),
    )
}

/// `GET /login`.
pub(super) fn login_page(cx: &Ctx, error: Option<&str>, status: StatusCode) -> Response {
    let (csrf, cookie) = cx.csrf_token();
    let signup = if cx.app.config.signup == "closed" {
        String::new()
    } else {
        r#"<p>No account yet? <a href="/signup">Sign up</a>.</p>"#.to_string()
    };
    let body = format!(
        r#"{err}<form method="post" action="/login" class="card">
<input type="hidden" name="csrf" value="{csrf}">
<label>Username <input name="username" id="username" autocomplete="username" required></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="login">Log in</button>
</form>{signup}"#,
        err = error_box(error),
        csrf = esc(&csrf),
    );
    render(cx, Page::new("Log in", body).status(status).cookie(cookie))
}

/// `POST /login`: a session for the right password.
pub(super) async fn login(cx: &Ctx<'_>) -> Response {
    let user = cx.field("username").trim().to_string();
    match verify(cx, &user, cx.field("password")).await {
        Ok(true) => match session::create(&cx.app.auth, &user) {
            Ok((id, _)) => redirect("/repositories", &[session_cookie(cx, Some(&id))]),
            Err(e) => message(cx, StatusCode::SERVICE_UNAVAILABLE, "Unavailable", &e),
        },
        Ok(false) => login_page(
            cx,
            Some("Incorrect username or password."),
            StatusCode::UNAUTHORIZED,
        ),
        Err(r) => r,
    }
}

/// `POST /logout`: the session ends on the server, the cookie in the browser.
pub(super) fn logout(cx: &Ctx) -> Response {
    if let Some((id, _)) = &cx.session {
        let _ = session::end(&cx.app.auth, id);
    }
    redirect("/", &[session_cookie(cx, None)])
}

/// `GET /signup`.
pub(super) fn signup_page(cx: &Ctx, error: Option<&str>, status: StatusCode) -> Response {
    let policy = cx.app.config.signup.as_str();
    if policy == "closed" {
        return message(
            cx,
            StatusCode::FORBIDDEN,
            "Sign up",
            "Sign-up is closed on this registry: ask an administrator for an account.",
        );
    }
    let (csrf, cookie) = cx.csrf_token();
    let invite = if policy == "invite" {
        r#"<label>Invitation code <input name="invite" id="invite" required></label>"#
    } else {
        ""
    };
    let body = format!(
        r#"{err}<form method="post" action="/signup" class="card">
<input type="hidden" name="csrf" value="{csrf}">
<label>Username <input name="username" id="username" autocomplete="username" required pattern="[a-z0-9]+([._-][a-z0-9]+)*"></label>
<p class="hint">Lowercase letters, digits, and . _ - between them. Your repositories are <code>your-name/…</code>.</p>
<label>Password <input name="password" id="password" type="password" autocomplete="new-password" minlength="8" required></label>
<label>Password again <input name="confirm" id="confirm" type="password" autocomplete="new-password" minlength="8" required></label>
{invite}
<button type="submit" id="signup">Sign up</button>
</form>"#,
        err = error_box(error),
        csrf = esc(&csrf),
    );
    render(cx, Page::new("Sign up", body).status(status).cookie(cookie))
}

/// `POST /signup`: a new account (never a taken or reserved name), signed in.
pub(super) async fn signup(cx: &Ctx<'_>) -> Response {
    let policy = cx.app.config.signup.clone();
    if policy == "closed" {
        return signup_page(cx, None, StatusCode::FORBIDDEN);
    }
    if let Some(w) = cx.app.guard.wait(cx.peer, None) {
        return pages_wait(cx, w);
    }
    let name = cx.field("username").trim().to_string();
    let password = cx.field("password").to_string();
    if password != cx.field("confirm") {
        return signup_page(
            cx,
            Some("The two passwords differ."),
            StatusCode::BAD_REQUEST,
        );
    }
    let (app, n, p) = (cx.app.clone(), name.clone(), password);
    let made = tokio::task::spawn_blocking(move || app.auth.create_user(&n, &p))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = made {
        return signup_page(cx, Some(&e), StatusCode::BAD_REQUEST);
    }
    if policy == "invite"
        && let Err(e) = session::use_invite(&cx.app.auth, cx.field("invite"), &name)
    {
        // A wrong code counts as a failed attempt (codes are guessed).
        cx.app.guard.failed(cx.peer, None);
        let _ = cx.app.auth.remove_user(&name);
        return signup_page(cx, Some(&e), StatusCode::FORBIDDEN);
    }
    match session::create(&cx.app.auth, &name) {
        Ok((id, _)) => redirect("/repositories", &[session_cookie(cx, Some(&id))]),
        Err(e) => message(cx, StatusCode::SERVICE_UNAVAILABLE, "Unavailable", &e),
    }
}

/// `GET /account`.
pub(super) fn account(cx: &Ctx, note: Option<(&str, bool)>) -> Response {
    let user = match signed_in(cx) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let created = cx
        .app
        .auth
        .users()
        .ok()
        .and_then(|u| u.get(user).map(|u| u.created.clone()))
        .unwrap_or_default();
    let note = match note {
        Some((t, true)) => format!(r#"<p class="ok" role="status">{}</p>"#, esc(t)),
        Some((t, false)) => error_box(Some(t)),
        None => String::new(),
    };
    let body = format!(
        r#"<dl class="facts"><dt>Username</dt><dd>{u}</dd><dt>Member since</dt><dd>{c}</dd><dt>Role</dt><dd>{role}</dd><dt>Your namespace</dt><dd><code>{host}/{u}/…</code></dd></dl>
<h2>Change password</h2>{note}
<form method="post" action="/account/password" class="card">{csrf}
<label>Current password <input name="current" type="password" autocomplete="current-password" required></label>
<label>New password <input name="password" type="password" autocomplete="new-password" minlength="8" required></label>
<label>New password again <input name="confirm" type="password" autocomplete="new-password" minlength="8" required></label>
<button type="submit">Change password</button>
</form>"#,
        u = esc(user),
        c = esc(&when(&created)),
        role = if cx.admin { "administrator" } else { "user" },
        host = esc(&cx.host()),
        csrf = cx.csrf_input(),
    );
    render(cx, Page::new("Account", body))
}

/// `POST /account/password`: after the current password; every other
/// session of the account ends.
pub(super) async fn change_password(cx: &Ctx<'_>) -> Response {
    let user = match signed_in(cx) {
        Ok(u) => u.to_string(),
        Err(r) => return *r,
    };
    let new = cx.field("password").to_string();
    if new != cx.field("confirm") {
        return account(cx, Some(("The two new passwords differ.", false)));
    }
    match verify(cx, &user, cx.field("current")).await {
        Ok(true) => {}
        Ok(false) => return account(cx, Some(("The current password is wrong.", false))),
        Err(r) => return r,
    }
    let (app, u) = (cx.app.clone(), user.clone());
    let r = tokio::task::spawn_blocking(move || app.auth.change_password(&u, &new))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = r {
        return account(cx, Some((&e, false)));
    }
    let _ = session::end_all(&cx.app.auth, &user);
    match session::create(&cx.app.auth, &user) {
        Ok((id, _)) => redirect("/account", &[session_cookie(cx, Some(&id))]),
        Err(e) => message(cx, StatusCode::SERVICE_UNAVAILABLE, "Unavailable", &e),
    }
}

/// `GET /tokens` (and the page that shows a new token once).
pub(super) fn tokens(cx: &Ctx, fresh: Option<(&str, &str)>) -> Response {
    let user = match signed_in(cx) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let mut rows = String::new();
    let mine: Vec<_> = cx
        .app
        .auth
        .list_tokens()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.user == user)
        .collect();
    for t in &mine {
        let or = |s: &str, none: &str| {
            if s.is_empty() {
                none.to_string()
            } else {
                s.to_string()
            }
        };
        rows += &format!(
            r#"<tr><td data-label="Name">{name}</td><td data-label="Scope">{scope}</td><td data-label="Created">{created}</td><td data-label="Expires">{expires}</td><td data-label="Last used">{used}</td><td><form method="post" action="/tokens/revoke" class="inline">{csrf}<input type="hidden" name="id" value="{id}"><button type="submit" class="danger" data-token="{name}">Revoke</button></form></td></tr>"#,
            name = esc(&or(&t.name, "(unnamed)")),
            scope = esc(scope_label(&t.scope)),
            created = esc(&when(&t.created)),
            expires = esc(&or(&t.expires, "never")),
            used = esc(&or(&t.last_used, "never")),
            id = esc(&t.id),
            csrf = cx.csrf_input(),
        );
    }
    let list = if mine.is_empty() {
        r#"<p class="note">No access tokens yet.</p>"#.to_string()
    } else {
        format!(
            r#"<table class="list" id="tokens"><thead><tr><th>Name</th><th>Scope</th><th>Created</th><th>Expires</th><th>Last used</th><th></th></tr></thead><tbody>{rows}</tbody></table>"#
        )
    };
    let shown = match fresh {
        Some((name, secret)) => format!(
            r#"<div class="card secret"><p>Your new token <strong>{name}</strong>. Copy it now: it is not shown again.</p>
<pre><code id="new-token">{secret}</code></pre>
<p>Use it as your password:</p><pre><code>berth login -u {user} --password-stdin {host}</code></pre></div>"#,
            name = esc(name),
            secret = esc(secret),
            user = esc(user),
            host = esc(&cx.host()),
        ),
        None => String::new(),
    };
    let scopes: String = SCOPES
        .iter()
        .map(|(k, l)| {
            format!(
                r#"<option value="{k}"{}>{l}</option>"#,
                if *k == "push" { " selected" } else { "" }
            )
        })
        .collect();
    let body = format!(
        r#"{shown}<p>Access tokens sign in <code>berth login</code>, <code>docker login</code> and CI in place of your password, with only the access they need.</p>
{list}
<h2>New access token</h2>
<form method="post" action="/tokens" class="card">{csrf}
<label>Name <input name="name" id="token-name" maxlength="100" required placeholder="laptop, CI, …"></label>
<label>Access <select name="scope" id="token-scope">{scopes}</select></label>
<label>Expires <select name="expires" id="token-expires"><option value="30">in 30 days</option><option value="90" selected>in 90 days</option><option value="365">in a year</option><option value="never">never</option></select></label>
<button type="submit" id="create-token">Generate</button>
</form>"#,
        csrf = cx.csrf_input(),
    );
    render(cx, Page::new("Access tokens", body))
}

/// `POST /tokens`.
pub(super) fn create_token(cx: &Ctx) -> Response {
    let user = match signed_in(cx) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let name = cx.field("name").trim();
    let secs = match cx.field("expires") {
        "never" => None,
        d => match d.parse::<i64>() {
            Ok(days) if (1..=3650).contains(&days) => Some(days * 86400),
            _ => {
                return message(
                    cx,
                    StatusCode::BAD_REQUEST,
                    "Access tokens",
                    "Pick an expiry.",
                );
            }
        },
    };
    match cx
        .app
        .auth
        .create_token(user, name, cx.field("scope"), secs)
    {
        Ok((_, secret)) => tokens(cx, Some((name, &secret))),
        Err(e) => message(cx, StatusCode::BAD_REQUEST, "Access tokens", &e),
    }
}

/// `POST /tokens/revoke`: one's own token (an admin's: anyone's).
pub(super) fn revoke_token(cx: &Ctx) -> Response {
    let user = match signed_in(cx) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let id = cx.field("id");
    let owned = cx
        .app
        .auth
        .list_tokens()
        .unwrap_or_default()
        .iter()
        .any(|t| t.id == id && (t.user == user || cx.admin));
    if !owned {
        return not_found(cx);
    }
    match cx.app.auth.revoke_token(id) {
        Ok(()) => redirect("/tokens", &[]),
        Err(e) => message(cx, StatusCode::BAD_REQUEST, "Access tokens", &e),
    }
}

/// The admin, or the answer for anyone else.
fn admin_only<'c>(cx: &'c Ctx) -> Result<&'c str, Box<Response>> {
    let user = signed_in(cx)?;
    if !cx.admin {
        return Err(Box::new(message(
            cx,
            StatusCode::FORBIDDEN,
            "Admin",
            "Only administrators may see this page.",
        )));
    }
    Ok(user)
}

/// `GET /admin`: accounts (add, remove) and invitations.
pub(super) fn admin(cx: &Ctx, note: Option<&str>) -> Response {
    let me = match admin_only(cx) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let users = cx.app.auth.users().unwrap_or_default();
    let mut rows = String::new();
    for (name, u) in &users {
        let remove = if name == me {
            String::new()
        } else {
            format!(
                r#"<form method="post" action="/admin/users/remove" class="inline">{}<input type="hidden" name="name" value="{}"><button type="submit" class="danger">Remove</button></form>"#,
                cx.csrf_input(),
                esc(name)
            )
        };
        rows += &format!(
            r#"<tr><td data-label="User">{}</td><td data-label="Role">{}</td><td data-label="Since">{}</td><td>{remove}</td></tr>"#,
            esc(name),
            if u.admin { "administrator" } else { "user" },
            esc(&when(&u.created)),
        );
    }
    let invites = session::open_invites(&cx.app.auth);
    let body = format!(
        r#"{note}<p>Sign-up on this registry: <strong>{policy}</strong> (<code>berth registry serve --signup closed|invite|open</code>).</p>
<table class="list" id="users"><thead><tr><th>User</th><th>Role</th><th>Since</th><th></th></tr></thead><tbody>{rows}</tbody></table>
<h2>Add an account</h2>
<form method="post" action="/admin/users" class="card">{csrf}
<label>Username <input name="username" required></label>
<label>Password <input name="password" type="password" autocomplete="new-password" minlength="8" required></label>
<label class="check"><input type="checkbox" name="admin" value="1"> Administrator</label>
<button type="submit">Add</button>
</form>
<h2>Invitations</h2>
<p>{n} unused invitation code(s).</p>
<form method="post" action="/admin/invites" class="card">{csrf}<button type="submit" id="invite">Make an invitation code</button></form>"#,
        note = note.unwrap_or_default(),
        policy = esc(&cx.app.config.signup),
        n = invites.len(),
        csrf = cx.csrf_input(),
    );
    render(cx, Page::new("Admin", body))
}

/// `POST /admin/users`.
pub(super) async fn admin_add_user(cx: &Ctx<'_>) -> Response {
    if let Err(r) = admin_only(cx) {
        return *r;
    }
    let (app, n, p, a) = (
        cx.app.clone(),
        cx.field("username").trim().to_string(),
        cx.field("password").to_string(),
        cx.field("admin") == "1",
    );
    let shown = n.clone();
    let r = tokio::task::spawn_blocking(move || app.auth.put_user(&n, &p, a, false))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match r {
        Ok(()) => admin(
            cx,
            Some(&format!(
                r#"<p class="ok" role="status">Account {} added.</p>"#,
                esc(&shown)
            )),
        ),
        Err(e) => admin(cx, Some(&error_box(Some(&e)))),
    }
}

/// `POST /admin/users/remove`: the account, its tokens and its sessions.
pub(super) fn admin_remove_user(cx: &Ctx) -> Response {
    let me = match admin_only(cx) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let name = cx.field("name");
    if name == me {
        return admin(cx, Some(&error_box(Some("You cannot remove yourself."))));
    }
    match cx.app.auth.remove_user(name) {
        Ok(()) => {
            let _ = session::end_all(&cx.app.auth, name);
            redirect("/admin", &[])
        }
        Err(e) => admin(cx, Some(&error_box(Some(&e)))),
    }
}

/// `POST /admin/invites`: a code, shown once.
pub(super) fn admin_invite(cx: &Ctx) -> Response {
    let me = match admin_only(cx) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    match session::invite(&cx.app.auth, me) {
        Ok(code) => admin(
            cx,
            Some(&format!(
                r#"<div class="card secret"><p>Invitation code (shown once; used once):</p><pre><code id="invite-code">{}</code></pre></div>"#,
                esc(&code)
            )),
        ),
        Err(e) => admin(cx, Some(&error_box(Some(&e)))),
    }
}

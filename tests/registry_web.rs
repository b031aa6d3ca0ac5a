//! The registry's web pages, the way a team uses them: in a real browser
//! (Debian's chromium, headless, over WebDriver) sign up, make an access
//! token, log in with it from `berth`, push, see the tag on the repository
//! page, revoke the token, and the next push is refused — as on Docker Hub,
//! whose flow the lecture teaches. Then each protection of the pages on its
//! own, with curl: CSRF tokens, cookie flags, sign-up policies and names,
//! revoked tokens, ended sessions, visibility, the security headers.

mod common;

use std::path::Path;

use common::browser::Browser;
use common::{Berth, RegistryServer, curl, header};

const PASSWORD: &str = "correct horse battery";

/// A berth store with busybox tagged for `ref_`.
fn pusher(addr: &str, repo: &str) -> Berth {
    let b = Berth::new();
    b.import_busybox("busybox");
    b.run(&["tag", "busybox:latest", &format!("{addr}/{repo}")])
        .ok();
    b
}

/// Saves a screenshot when `BERTH_SCREENSHOTS` names a directory (how the
/// README's pictures are made).
fn shot(b: &Browser, name: &str) {
    if let Ok(dir) = std::env::var("BERTH_SCREENSHOTS") {
        b.screenshot(&Path::new(&dir).join(format!("{name}.png")));
    }
}

#[test]
fn sign_up_token_push_and_revoke_in_a_browser() {
    let storage = tempfile::tempdir().unwrap();
    let reg = RegistryServer::start(storage.path(), &["--signup", "open"]);
    let Some(web) = Browser::start() else { return };
    let base = format!("http://{}", reg.addr);

    // Sign up: a session, and the user's (empty) repositories.
    web.goto(&format!("{base}/signup"));
    shot(&web, "signup");
    web.fill("#username", "alice");
    web.fill("#password", PASSWORD);
    web.fill("#confirm", PASSWORD);
    web.click("#signup");
    web.wait_url("/repositories");
    assert!(web.source().contains("Your repositories"));
    let session = web
        .cookies()
        .into_iter()
        .find(|c| c["name"] == "berth_session")
        .expect("a session cookie");
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Lax", "{session}");

    // A read-write token, shown once.
    web.goto(&format!("{base}/tokens"));
    web.fill("#token-name", "laptop");
    web.select("#token-scope", "push");
    web.click("#create-token");
    web.wait_count("#new-token", 1);
    let token = web.text("#new-token");
    assert!(token.starts_with("brt_"), "{token}");
    shot(&web, "token");

    // berth logs in with it and pushes, as `docker login` on Docker Hub.
    let b = pusher(&reg.addr, "alice/app:v1");
    let login = b.run_stdin(
        &["login", "-u", "alice", "--password-stdin", &reg.addr],
        format!("{token}\n").as_bytes(),
    );
    assert!(login.ok().contains("Login Succeeded"));
    b.run(&["push", &format!("{}/alice/app:v1", reg.addr)]).ok();

    // The tag on the repository page, with its pull command.
    web.goto(&format!("{base}/r/alice/app"));
    let tags = web.text("#tags");
    assert!(tags.contains("v1"), "{tags}");
    assert!(
        tags.contains(&format!("berth pull {}/alice/app:v1", reg.addr)),
        "{tags}"
    );
    assert!(tags.contains("linux/"), "the platform: {tags}");
    shot(&web, "repository");
    // On a phone the table turns into labelled rows.
    web.resize(420, 900);
    shot(&web, "repository-phone");
    web.resize(1000, 800);
    web.goto(&format!("{base}/repositories"));
    assert!(web.text("#mine").contains("alice/app"));
    shot(&web, "repositories");

    // Its last use is shown; revoking it in the browser refuses the next push.
    web.goto(&format!("{base}/tokens"));
    let listed = web.text("#tokens");
    assert!(
        listed.contains("laptop") && listed.contains("Read & Write"),
        "{listed}"
    );
    assert!(
        !listed.contains("never"),
        "its last use and expiry are shown: {listed}"
    );
    web.click("button[data-token=\"laptop\"]");
    web.wait_count("button[data-token=\"laptop\"]", 0);
    b.run(&[
        "tag",
        "busybox:latest",
        &format!("{}/alice/app:v2", reg.addr),
    ])
    .ok();
    let r = b.run(&["push", &format!("{}/alice/app:v2", reg.addr)]);
    assert_eq!(r.code(), 1, "a revoked token cannot push: {}", r.stdout());

    // Logged out, the old session cookie grants nothing.
    let cookie = format!("berth_session={}", session["value"].as_str().unwrap());
    let (code, _, _) = curl(&[
        "-H",
        &format!("Cookie: {cookie}"),
        &format!("{base}/tokens"),
    ]);
    assert_eq!(code, 200, "signed in before logging out");
    web.click("header button.link");
    web.wait_count("header button.link", 0);
    assert!(web.source().contains("Log in"));
    let (code, head, _) = curl(&[
        "-H",
        &format!("Cookie: {cookie}"),
        &format!("{base}/tokens"),
    ]);
    assert_eq!(
        (code, header(&head, "location").as_deref()),
        (303, Some("/login"))
    );
    // Neither the password nor the token ever reached the request log.
    let log = reg.log();
    assert!(!log.contains(PASSWORD) && !log.contains(&token), "{log}");
}

/// A client of the pages with its own cookie jar (curl's).
struct Client {
    base: String,
    jar: tempfile::NamedTempFile,
}

impl Client {
    fn new(addr: &str) -> Client {
        Client {
            base: format!("http://{addr}"),
            jar: tempfile::NamedTempFile::new().unwrap(),
        }
    }

    fn jar(&self) -> String {
        self.jar.path().display().to_string()
    }

    fn get(&self, path: &str) -> (u16, String, String) {
        let (c, h, b) = curl(&[
            "-b",
            &self.jar(),
            "-c",
            &self.jar(),
            &format!("{}{path}", self.base),
        ]);
        (c, h, String::from_utf8_lossy(&b).into_owned())
    }

    /// Posts `fields` (urlencoded by curl) to `path`.
    fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
        let mut args = vec!["-b".to_string(), self.jar(), "-c".to_string(), self.jar()];
        for (k, v) in fields {
            args.push("--data-urlencode".into());
            args.push(format!("{k}={v}"));
        }
        args.push(format!("{}{path}", self.base));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (c, h, b) = curl(&a);
        (c, h, String::from_utf8_lossy(&b).into_owned())
    }

    /// The CSRF token of the form on `path`.
    fn csrf(&self, path: &str) -> String {
        let (_, _, body) = self.get(path);
        body.split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no form on {path}: {body}"))
            .to_string()
    }

    fn sign_up(&self, name: &str, extra: &[(&str, &str)]) -> (u16, String, String) {
        let csrf = self.csrf("/signup");
        let mut f = vec![
            ("csrf", csrf.as_str()),
            ("username", name),
            ("password", PASSWORD),
            ("confirm", PASSWORD),
        ];
        f.extend_from_slice(extra);
        self.post("/signup", &f)
    }

    fn log_in(&self, name: &str, password: &str) -> (u16, String, String) {
        let csrf = self.csrf("/login");
        self.post(
            "/login",
            &[("csrf", &csrf), ("username", name), ("password", password)],
        )
    }
}

#[test]
fn forms_refuse_forged_requests_and_names_they_may_not_take() {
    let storage = tempfile::tempdir().unwrap();
    // Closed by default: the page says so, the form is refused.
    let closed = RegistryServer::start(storage.path(), &[]);
    let c = Client::new(&closed.addr);
    let (code, head, body) = c.get("/signup");
    assert_eq!(code, 403);
    assert!(body.contains("Sign-up is closed"), "{body}");
    let csp = header(&head, "content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(header(&head, "x-frame-options").as_deref(), Some("DENY"));
    drop(closed);

    let reg = RegistryServer::start(storage.path(), &["--signup", "open"]);
    let c = Client::new(&reg.addr);
    // A form without its CSRF token, or with another browser's, is refused.
    let (code, _, body) = c.post(
        "/signup",
        &[
            ("username", "mallory"),
            ("password", PASSWORD),
            ("confirm", PASSWORD),
        ],
    );
    assert_eq!(code, 403, "{body}");
    let other = Client::new(&reg.addr);
    let theirs = other.csrf("/signup");
    c.csrf("/signup");
    let (code, _, _) = c.post(
        "/signup",
        &[
            ("csrf", &theirs),
            ("username", "mallory"),
            ("password", PASSWORD),
            ("confirm", PASSWORD),
        ],
    );
    assert_eq!(code, 403);
    // Reserved and taken names; the password rule.
    let (code, _, body) = c.sign_up("library", &[]);
    assert_eq!(code, 400);
    assert!(body.contains("reserved"), "{body}");
    let (code, head, _) = c.sign_up("alice", &[]);
    assert_eq!(code, 303);
    let set = header(&head, "set-cookie").unwrap_or_default();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"),
        "{set}"
    );
    let d = Client::new(&reg.addr);
    let (code, _, body) = d.sign_up("alice", &[]);
    assert_eq!(code, 400);
    assert!(body.contains("taken"), "{body}");
    let csrf = d.csrf("/signup");
    let (code, _, body) = d.post(
        "/signup",
        &[
            ("csrf", &csrf),
            ("username", "shorty"),
            ("password", "short"),
            ("confirm", "short"),
        ],
    );
    assert_eq!(code, 400);
    assert!(body.contains("at least 8 characters"), "{body}");

    // Signed in, a form still needs the session's own token.
    let (code, _, _) = c.post(
        "/tokens",
        &[("name", "ci"), ("scope", "push"), ("expires", "30")],
    );
    assert_eq!(code, 403);
    let csrf = c.csrf("/tokens");
    let (code, _, body) = c.post(
        "/tokens",
        &[
            ("csrf", &csrf),
            ("name", "ci"),
            ("scope", "pull"),
            ("expires", "30"),
        ],
    );
    assert_eq!(code, 200);
    assert!(body.contains("id=\"new-token\">brt_"), "{body}");
    // Someone else's token cannot be revoked from another account.
    let (_, _, body) = d.sign_up("bob", &[]);
    let _ = body;
    let ls = common::tool(
        common::berth_bin(),
        &[
            "registry",
            "token",
            "ls",
            "--storage",
            &reg.storage.display().to_string(),
        ],
    );
    let alices = ls
        .lines()
        .find(|l| l.contains(" alice "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let bobs_csrf = d.csrf("/tokens");
    let (code, _, _) = d.post("/tokens/revoke", &[("csrf", &bobs_csrf), ("id", &alices)]);
    assert_eq!(code, 404);
    assert!(
        common::tool(
            common::berth_bin(),
            &[
                "registry",
                "token",
                "ls",
                "--storage",
                &reg.storage.display().to_string()
            ]
        )
        .contains(&alices)
    );
    // Wrong passwords at the login form are slowed like the API's.
    let e = Client::new(&reg.addr);
    let (code, _, body) = e.log_in("alice", "wrong password");
    assert_eq!(code, 401);
    assert!(body.contains("Incorrect username or password"), "{body}");
    let mut limited = false;
    for _ in 0..6 {
        let (code, _, _) = e.log_in("alice", "wrong password");
        limited |= code == 429;
    }
    assert!(limited, "repeated failures must be made to wait");
    // Logging out ends the session on the server.
    let (code, _, _) = c.get("/account");
    assert_eq!(code, 200);
    let csrf = c.csrf("/account");
    let (code, _, _) = c.post("/logout", &[("csrf", &csrf)]);
    assert_eq!(code, 303);
    let (code, head, _) = c.get("/account");
    assert_eq!(
        (code, header(&head, "location").as_deref()),
        (303, Some("/login"))
    );
    // Accounts that cannot be read grant nothing: 503, never a page as if
    // nobody were there.
    std::fs::write(reg.storage.join("auth/users.json"), b"{torn").unwrap();
    let (code, _, body) = Client::new(&reg.addr).get("/login");
    assert_eq!(code, 503, "{body}");
    let (code, _, _) = d.get("/tokens");
    assert_eq!(code, 503);
}

#[test]
fn invitations_visibility_and_admin_pages() {
    let storage = tempfile::tempdir().unwrap();
    let st = storage.path().display().to_string();
    let admin = Berth::new();
    admin
        .run_stdin(
            &[
                "registry",
                "user",
                "add",
                "--storage",
                &st,
                "--admin",
                "--password-stdin",
                "root",
            ],
            format!("{PASSWORD}\n").as_bytes(),
        )
        .ok();
    let reg = RegistryServer::start(storage.path(), &["--signup", "invite"]);
    let root = Client::new(&reg.addr);
    assert_eq!(root.log_in("root", PASSWORD).0, 303);
    let csrf = root.csrf("/admin");
    let (code, _, body) = root.post("/admin/invites", &[("csrf", &csrf)]);
    assert_eq!(code, 200);
    let code_ = body
        .split("id=\"invite-code\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap()
        .to_string();
    // Without a valid code there is no account; the code works once.
    let alice = Client::new(&reg.addr);
    let (code, _, body) = alice.sign_up("alice", &[("invite", "inv_0000")]);
    assert_eq!(code, 403, "{body}");
    let (code, _, _) = alice.sign_up("alice", &[("invite", &code_)]);
    assert_eq!(code, 303);
    let eve = Client::new(&reg.addr);
    assert_eq!(eve.sign_up("eve", &[("invite", &code_)]).0, 403);
    // Not an admin: no admin page.
    assert_eq!(alice.get("/admin").0, 403);
    // A password change needs the current one and ends her other sessions.
    let other = Client::new(&reg.addr);
    assert_eq!(other.log_in("alice", PASSWORD).0, 303);
    let csrf = alice.csrf("/account");
    let new_pw = "a new long password";
    let (code, _, body) = alice.post(
        "/account/password",
        &[
            ("csrf", &csrf),
            ("current", "not it at all"),
            ("password", new_pw),
            ("confirm", new_pw),
        ],
    );
    assert!(
        code == 200 && body.contains("current password is wrong"),
        "{code} {body}"
    );
    let (code, _, _) = alice.post(
        "/account/password",
        &[
            ("csrf", &csrf),
            ("current", PASSWORD),
            ("password", new_pw),
            ("confirm", new_pw),
        ],
    );
    assert_eq!(code, 303);
    assert_eq!(alice.get("/account").0, 200, "this browser stays signed in");
    assert_eq!(other.get("/account").0, 303, "the other session ended");
    assert_eq!(Client::new(&reg.addr).log_in("alice", PASSWORD).0, 401);
    let csrf = alice.csrf("/account");
    alice.post(
        "/account/password",
        &[
            ("csrf", &csrf),
            ("current", new_pw),
            ("password", PASSWORD),
            ("confirm", PASSWORD),
        ],
    );

    // alice pushes with her password; the repository is private: its page
    // is "not found" to others, until she makes it public.
    let b = pusher(&reg.addr, "alice/web:1");
    b.run_stdin(
        &["login", "-u", "alice", "--password-stdin", &reg.addr],
        format!("{PASSWORD}\n").as_bytes(),
    )
    .ok();
    b.run(&["push", &format!("{}/alice/web:1", reg.addr)]).ok();
    let anon = Client::new(&reg.addr);
    assert_eq!(anon.get("/r/alice/web").0, 404);
    let outsider = Berth::new();
    assert_eq!(
        outsider
            .run(&["pull", &format!("{}/alice/web:1", reg.addr)])
            .code(),
        1
    );
    let csrf = alice.csrf("/r/alice/web");
    let (code, _, _) = alice.post(
        "/r/alice/web/visibility",
        &[("csrf", &csrf), ("to", "public")],
    );
    assert_eq!(code, 303);
    let (code, _, body) = anon.get("/r/alice/web");
    assert_eq!(code, 200);
    assert!(
        body.contains("public") && body.contains("docker pull"),
        "{body}"
    );
    outsider
        .run(&["pull", &format!("{}/alice/web:1", reg.addr)])
        .ok();
    // docker search's endpoint lists it to anyone now.
    let (_, _, body) = anon.get("/v1/search?q=web");
    assert!(body.contains("\"alice/web\""), "{body}");
    // Another user may see it but not change it.
    let csrf = root.csrf("/admin");
    root.post(
        "/admin/users",
        &[("csrf", &csrf), ("username", "bob"), ("password", PASSWORD)],
    );
    let bob = Client::new(&reg.addr);
    assert_eq!(bob.log_in("bob", PASSWORD).0, 303);
    let csrf = bob.csrf("/r/alice/web");
    let (code, _, _) = bob.post("/r/alice/web/delete-tag", &[("csrf", &csrf), ("tag", "1")]);
    assert_eq!(code, 403);
    // Its owner deletes the tag from the page.
    let csrf = alice.csrf("/r/alice/web");
    let (code, _, _) = alice.post("/r/alice/web/delete-tag", &[("csrf", &csrf), ("tag", "1")]);
    assert_eq!(code, 303);
    let (_, _, body) = anon.get("/r/alice/web");
    assert!(body.contains("No tags"), "{body}");
}

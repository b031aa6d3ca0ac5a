//! Accounts, access tokens and bearer tokens of the registry.
//!
//! Users have argon2-hashed passwords; access tokens (`brt_…`, shown once) are
//! stored as sha256 hashes with a scope (`pull` or `push`) and an expiry. Clients
//! present either as basic credentials, directly or to the `/token` endpoint,
//! which answers with a short-lived HS256 JWT listing the granted actions — the
//! flow Docker Hub uses.
//!
//! Files under `<storage>/auth/` (a 0700 directory) are created 0600 from
//! their first byte, written atomically and read on each check, so `registry
//! user add` and `token create` take effect while the server runs. Reading
//! fails closed: a file that cannot be read or parsed (EMFILE under load, a
//! torn or corrupt file, a secret too short to sign with) is an
//! [`Unreadable`] error that the server answers with 503, never "no users".
//! Whether the registry is open to everyone is the server's explicit
//! `--open`, never inferred from these files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// An account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    /// argon2 PHC string.
    pub password_hash: String,
    /// May push and pull everywhere.
    #[serde(default)]
    pub admin: bool,
    /// RFC 3339.
    pub created: String,
}

/// An access token (its secret is never stored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessToken {
    /// Its id (shown in `token ls`).
    pub id: String,
    /// The owner.
    pub user: String,
    /// What its owner called it.
    #[serde(default)]
    pub name: String,
    /// sha256 of the secret.
    pub hash: String,
    /// `pull` (read), `push` (read and write) or `delete` (read, write and
    /// delete): Docker Hub's three scopes.
    pub scope: String,
    /// When it was last used (RFC 3339, to the minute), or empty.
    #[serde(default)]
    pub last_used: String,
    /// RFC 3339, or empty for none.
    pub expires: String,
    /// RFC 3339.
    pub created: String,
}

/// The auth database.
#[derive(Debug, Clone)]
pub struct AuthStore {
    dir: PathBuf,
}

/// Actions on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read.
    Pull,
    /// Write.
    Push,
    /// Delete.
    Delete,
}

impl Action {
    /// Its name in scopes.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// Who a request is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Nobody in particular.
    Anonymous,
    /// A user (with the cap of the access token used, if any).
    User {
        /// The name.
        name: String,
        /// Admin.
        admin: bool,
        /// The scope of the access token used (`pull` or `push`), `None`
        /// for a password or a token that may delete.
        cap: Option<String>,
    },
    /// A bearer token's grants.
    Granted {
        /// The subject.
        name: String,
        /// repository → actions.
        access: BTreeMap<String, Vec<String>>,
    },
}

/// The auth files could not be read: every check that needs them fails.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the registry's accounts cannot be read: {0}")]
pub struct Unreadable(pub String);

/// The smallest signing secret accepted (bytes of its hex text).
const MIN_SECRET: usize = 32;

/// Writes `p` atomically, private (0600) from its first byte.
pub(super) fn write_atomic(p: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = p.with_extension(format!("tmp{}-{}", std::process::id(), random_hex(4)));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let r = f.write_all(data).and_then(|()| f.sync_all());
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, p)?;
    if let Some(dir) = p.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Makes `dir` (and its parents) and sets it 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let md = std::fs::metadata(dir)?;
    if md.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

pub(super) fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// sha256 hex.
pub fn sha_hex(s: &[u8]) -> String {
    hex::encode(Sha256::digest(s))
}

/// `n` random bytes, as hex.
pub(super) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    hex::encode(b)
}

impl AuthStore {
    /// Opens (creating) `<storage>/auth`, private to its owner (a store made
    /// before that is made private now).
    pub fn open(storage: &Path) -> std::io::Result<AuthStore> {
        use std::os::unix::fs::PermissionsExt;
        let dir = storage.join("auth");
        private_dir(&dir)?;
        let secret = dir.join("secret");
        match std::fs::symlink_metadata(&secret) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(&secret, random_hex(32).as_bytes())?;
            }
            Err(e) => return Err(e),
            Ok(m) => {
                if !m.is_file() {
                    return Err(std::io::Error::other(format!(
                        "{} is not a regular file",
                        secret.display()
                    )));
                }
                for f in ["secret", "users.json", "tokens.json", "lock"] {
                    let p = dir.join(f);
                    if let Ok(m) = std::fs::symlink_metadata(&p)
                        && m.is_file()
                        && m.permissions().mode() & 0o077 != 0
                    {
                        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
                    }
                }
            }
        }
        Ok(AuthStore { dir })
    }

    /// A JSON file of the store; missing is empty, anything else unreadable
    /// is an error.
    pub(super) fn read_json<T: serde::de::DeserializeOwned + Default>(
        &self,
        name: &str,
    ) -> Result<T, Unreadable> {
        let p = self.dir.join(name);
        match std::fs::read(&p) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| Unreadable(format!("{}: {e}", p.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(Unreadable(format!("{}: {e}", p.display()))),
        }
    }

    /// The accounts.
    pub fn users(&self) -> Result<BTreeMap<String, User>, Unreadable> {
        self.read_json("users.json")
    }

    fn tokens(&self) -> Result<Vec<AccessToken>, Unreadable> {
        self.read_json("tokens.json")
    }

    pub(super) fn lock(&self) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .mode(0o600)
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join("lock"))?;
        f.lock()?;
        Ok(f)
    }

    /// The auth directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks the name and password rules (a valid one-component
    /// repository name; at least 8 characters) and hashes the password.
    pub(super) fn check_rules_and_hash(name: &str, password: &str) -> Result<String, String> {
        if !berth_types::reference::valid_path(name) || name.contains('/') {
            return Err(format!(
                "invalid user name {name:?}: use lowercase letters, digits and separators"
            ));
        }
        if password.len() < 8 {
            return Err("the password must have at least 8 characters".into());
        }
        if password.len() > 1024 {
            return Err("the password must have at most 1024 characters".into());
        }
        let mut salt = [0u8; 16];
        let _ = rustix::rand::getrandom(&mut salt, rustix::rand::GetRandomFlags::empty());
        let salt =
            argon2::password_hash::SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        Ok(argon2::PasswordHasher::hash_password(
            &argon2::Argon2::default(),
            password.as_bytes(),
            &salt,
        )
        .map_err(|e| e.to_string())?
        .to_string())
    }

    /// Adds or replaces a user.
    pub fn add_user(&self, name: &str, password: &str, admin: bool) -> Result<(), String> {
        self.put_user(name, password, admin, true)
    }

    /// Removes a user and their tokens.
    pub fn remove_user(&self, name: &str) -> Result<(), String> {
        let _l = self.lock().map_err(|e| e.to_string())?;
        let mut users = self.users().map_err(|e| e.to_string())?;
        if users.remove(name).is_none() {
            return Err(format!("no such user: {name}"));
        }
        let tokens: Vec<AccessToken> = self
            .tokens()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|t| t.user != name)
            .collect();
        write_atomic(
            &self.dir.join("users.json"),
            &serde_json::to_vec_pretty(&users).expect("users"),
        )
        .map_err(|e| e.to_string())?;
        write_atomic(
            &self.dir.join("tokens.json"),
            &serde_json::to_vec_pretty(&tokens).expect("tokens"),
        )
        .map_err(|e| e.to_string())
    }

    /// Every user name (admins marked).
    pub fn list_users(&self) -> Result<Vec<(String, bool)>, Unreadable> {
        Ok(self
            .users()?
            .into_iter()
            .map(|(n, u)| (n, u.admin))
            .collect())
    }

    /// Creates an access token; returns (id, secret) — the secret is not stored.
    pub fn create_token(
        &self,
        user: &str,
        name: &str,
        scope: &str,
        expires_in_secs: Option<i64>,
    ) -> Result<(String, String), String> {
        if !matches!(scope, "pull" | "push" | "delete") {
            return Err(format!("invalid scope {scope:?}: use pull, push or delete"));
        }
        if name.len() > 100 || name.chars().any(char::is_control) {
            return Err("a token's name is at most 100 printable characters".into());
        }
        let _l = self.lock().map_err(|e| e.to_string())?;
        if !self.users().map_err(|e| e.to_string())?.contains_key(user) {
            return Err(format!("no such user: {user}"));
        }
        let secret = format!("brt_{}", random_hex(24));
        let id = random_hex(6);
        let expires = expires_in_secs
            .map(|s| {
                jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + s)
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let mut tokens = self.tokens().map_err(|e| e.to_string())?;
        tokens.push(AccessToken {
            id: id.clone(),
            user: user.into(),
            name: name.into(),
            hash: sha_hex(secret.as_bytes()),
            scope: scope.into(),
            last_used: String::new(),
            expires,
            created: now(),
        });
        write_atomic(
            &self.dir.join("tokens.json"),
            &serde_json::to_vec_pretty(&tokens).expect("tokens"),
        )
        .map_err(|e| e.to_string())?;
        Ok((id, secret))
    }

    /// Access tokens (without secrets).
    pub fn list_tokens(&self) -> Result<Vec<AccessToken>, Unreadable> {
        self.tokens()
    }

    /// Revokes a token by id.
    pub fn revoke_token(&self, id: &str) -> Result<(), String> {
        let _l = self.lock().map_err(|e| e.to_string())?;
        let mut tokens = self.tokens().map_err(|e| e.to_string())?;
        let before = tokens.len();
        tokens.retain(|t| t.id != id);
        if tokens.len() == before {
            return Err(format!("no such token: {id}"));
        }
        write_atomic(
            &self.dir.join("tokens.json"),
            &serde_json::to_vec_pretty(&tokens).expect("tokens"),
        )
        .map_err(|e| e.to_string())
    }

    /// The user named in basic credentials (`None` for a malformed header).
    pub fn basic_user(header: &str) -> Option<String> {
        let (user, _) = Self::basic_parts(header)?;
        Some(user)
    }

    fn basic_parts(header: &str) -> Option<(String, String)> {
        let raw = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))?;
        let dec = STANDARD.decode(raw.trim()).ok()?;
        let s = String::from_utf8(dec).ok()?;
        let (user, pass) = s.split_once(':')?;
        Some((user.to_string(), pass.to_string()))
    }

    /// Checks basic credentials (password or access token): `Ok(None)` when
    /// they are wrong, an error when the store cannot be read. Verifying a
    /// password costs an argon2 hash: call it off the async workers.
    pub fn check_basic(&self, header: &str) -> Result<Option<Principal>, Unreadable> {
        let Some((user, pass)) = Self::basic_parts(header) else {
            return Ok(None);
        };
        let users = self.users()?;
        let Some(u) = users.get(&user) else {
            return Ok(None);
        };
        if pass.starts_with("brt_") {
            let h = sha_hex(pass.as_bytes());
            let Some(t) = self
                .tokens()?
                .into_iter()
                .find(|t| t.user == user && t.hash == h)
            else {
                return Ok(None);
            };
            if !t.expires.is_empty() {
                match t.expires.parse::<jiff::Timestamp>() {
                    Ok(when) if when >= jiff::Timestamp::now() => {}
                    _ => return Ok(None),
                }
            }
            self.touch_token(&t);
            return Ok(Some(Principal::User {
                name: user,
                admin: u.admin,
                cap: (t.scope != "delete").then(|| t.scope.clone()),
            }));
        }
        Ok(self
            .verify_password(&user, &pass)?
            .map(|u| Principal::User {
                name: user,
                admin: u.admin,
                cap: None,
            }))
    }

    /// The signing key: an error (never an empty key, with which anyone
    /// could sign) when it cannot be read or is too short.
    fn secret(&self) -> Result<Vec<u8>, Unreadable> {
        let p = self.dir.join("secret");
        let s = std::fs::read(&p).map_err(|e| Unreadable(format!("{}: {e}", p.display())))?;
        if s.len() < MIN_SECRET {
            return Err(Unreadable(format!(
                "{}: shorter than {MIN_SECRET} bytes",
                p.display()
            )));
        }
        Ok(s)
    }

    /// Issues a JWT granting `access` to `sub` for `ttl` seconds.
    pub fn issue(
        &self,
        sub: &str,
        access: &BTreeMap<String, Vec<String>>,
        ttl: i64,
    ) -> Result<String, Unreadable> {
        let now = jiff::Timestamp::now().as_second();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let acc: Vec<serde_json::Value> = access
            .iter()
            .map(|(n, a)| serde_json::json!({"type": "repository", "name": n, "actions": a}))
            .collect();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::json!({"iss": "berth-registry", "sub": sub, "iat": now, "exp": now + ttl, "access": acc}).to_string());
        let signing = format!("{header}.{payload}");
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret()?).expect("hmac key");
        mac.update(signing.as_bytes());
        Ok(format!(
            "{signing}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        ))
    }

    /// Verifies a bearer JWT: `Ok(None)` when it is not valid, an error when
    /// the signing key cannot be read.
    pub fn check_bearer(&self, header: &str) -> Result<Option<Principal>, Unreadable> {
        let key = self.secret()?;
        Ok(Self::verify_jwt(&key, header))
    }

    fn verify_jwt(key: &[u8], header: &str) -> Option<Principal> {
        let tok = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))?
            .trim();
        let mut parts = tok.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
        mac.update(format!("{h}.{p}").as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        if header["alg"] != "HS256" {
            return None;
        }
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()?;
        if payload["exp"].as_i64()? < jiff::Timestamp::now().as_second() {
            return None;
        }
        let mut access = BTreeMap::new();
        for a in payload["access"].as_array()? {
            let acts: Vec<String> = a["actions"]
                .as_array()?
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect();
            access.insert(a["name"].as_str()?.to_string(), acts);
        }
        Some(Principal::Granted {
            name: payload["sub"].as_str().unwrap_or("").to_string(),
            access,
        })
    }

    /// The principal a bearer token's subject stands for (for listings).
    pub fn principal_of(&self, name: &str) -> Result<Principal, Unreadable> {
        Ok(match self.users()?.get(name) {
            Some(u) => Principal::User {
                name: name.to_string(),
                admin: u.admin,
                cap: None,
            },
            None => Principal::Anonymous,
        })
    }

    /// What `who` may do on `repo` (as the token endpoint grants and checks
    /// it) on a registry with accounts.
    pub fn allowed(&self, who: &Principal, repo: &str, public: bool) -> Vec<Action> {
        // The repository's own flag is read only where it decides anything
        // (an owner's or admin's request needs no file read).
        let public = || public || self.is_public(repo);
        match who {
            Principal::Anonymous => {
                if public() {
                    vec![Action::Pull]
                } else {
                    vec![]
                }
            }
            Principal::User { name, admin, cap } => {
                let own = *admin || repo == name.as_str() || repo.starts_with(&format!("{name}/"));
                let mut v = Vec::new();
                if own || public() {
                    v.push(Action::Pull);
                }
                if own && cap.as_deref() != Some("pull") {
                    v.push(Action::Push);
                }
                if own && cap.is_none() {
                    v.push(Action::Delete);
                }
                v
            }
            Principal::Granted { access, .. } => {
                let mut v: Vec<Action> = access
                    .get(repo)
                    .into_iter()
                    .flatten()
                    .filter_map(|a| match a.as_str() {
                        "pull" => Some(Action::Pull),
                        "push" => Some(Action::Push),
                        "delete" => Some(Action::Delete),
                        _ => None,
                    })
                    .collect();
                if !v.contains(&Action::Pull) && public() {
                    v.push(Action::Pull);
                }
                v
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_tokens_and_jwt() {
        let t = tempfile::tempdir().unwrap();
        let a = AuthStore::open(t.path()).unwrap();
        assert!(a.users().unwrap().is_empty());
        a.add_user("alice", "correct horse", false).unwrap();
        assert!(a.add_user("bob", "short", false).is_err());
        let basic = |u: &str, p: &str| format!("Basic {}", STANDARD.encode(format!("{u}:{p}")));
        let who = a
            .check_basic(&basic("alice", "correct horse"))
            .unwrap()
            .unwrap();
        assert!(
            a.check_basic(&basic("alice", "wrong password"))
                .unwrap()
                .is_none()
        );
        assert_eq!(
            a.allowed(&who, "alice/app", false),
            vec![Action::Pull, Action::Push, Action::Delete]
        );
        assert!(
            a.allowed(&who, "bob/app", false).is_empty(),
            "private by default"
        );
        assert_eq!(a.allowed(&who, "bob/app", true), vec![Action::Pull]);
        assert_eq!(a.allowed(&Principal::Anonymous, "alice/app", false), vec![]);
        let (_, pull_tok) = a.create_token("alice", "ci", "pull", None).unwrap();
        let p = a.check_basic(&basic("alice", &pull_tok)).unwrap().unwrap();
        assert_eq!(
            a.allowed(&p, "alice/app", false),
            vec![Action::Pull],
            "a pull token cannot push"
        );
        let (id, push_tok) = a.create_token("alice", "old", "push", Some(-10)).unwrap();
        assert!(
            a.check_basic(&basic("alice", &push_tok)).unwrap().is_none(),
            "expired"
        );
        a.revoke_token(&id).unwrap();
        let mut acc = BTreeMap::new();
        acc.insert("alice/app".to_string(), vec!["pull".to_string()]);
        let jwt = a.issue("alice", &acc, 60).unwrap();
        let g = a.check_bearer(&format!("Bearer {jwt}")).unwrap().unwrap();
        assert_eq!(a.allowed(&g, "alice/app", false), vec![Action::Pull]);
        let mut forged = jwt.clone();
        forged.push('x');
        assert!(
            a.check_bearer(&format!("Bearer {forged}"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn fails_closed_and_keeps_secrets_private() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let a = AuthStore::open(t.path()).unwrap();
        a.add_user("alice", "correct horse", false).unwrap();
        let mode = |p: &str| {
            std::fs::metadata(t.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("auth"), 0o700);
        assert_eq!(mode("auth/secret"), 0o600);
        assert_eq!(mode("auth/users.json"), 0o600);
        let basic = format!("Basic {}", STANDARD.encode("alice:correct horse"));
        // A torn or corrupt users file is an error, never "no users".
        std::fs::write(t.path().join("auth/users.json"), "{\"alice\": {").unwrap();
        assert!(a.check_basic(&basic).is_err());
        assert!(a.users().is_err());
        assert!(a.add_user("bob", "correct horse", false).is_err());
        // An unreadable one too (a directory in its place: EISDIR).
        std::fs::remove_file(t.path().join("auth/users.json")).unwrap();
        std::fs::create_dir(t.path().join("auth/users.json")).unwrap();
        assert!(a.check_basic(&basic).is_err());
        // A missing or short secret signs nothing and verifies nothing: an
        // empty key would let anyone sign.
        std::fs::write(t.path().join("auth/secret"), "").unwrap();
        assert!(a.issue("alice", &BTreeMap::new(), 60).is_err());
        let forged = {
            let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
            let p = URL_SAFE_NO_PAD.encode(
                br#"{"sub":"alice","exp":9999999999,"access":[{"name":"alice/app","actions":["pull","delete"]}]}"#,
            );
            let mut mac = Hmac::<Sha256>::new_from_slice(b"").unwrap();
            mac.update(format!("{h}.{p}").as_bytes());
            format!(
                "Bearer {h}.{p}.{}",
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            )
        };
        assert!(a.check_bearer(&forged).is_err());
        // A store made loose by an older berth is made private on open.
        std::fs::write(t.path().join("auth/secret"), random_hex(32)).unwrap();
        std::fs::set_permissions(
            t.path().join("auth"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::set_permissions(
            t.path().join("auth/secret"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        AuthStore::open(t.path()).unwrap();
        assert_eq!(mode("auth"), 0o700);
        assert_eq!(mode("auth/secret"), 0o600);
    }
}

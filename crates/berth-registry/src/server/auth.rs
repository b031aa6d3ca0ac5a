//! Accounts, access tokens and bearer tokens of the registry.
//!
//! Users have argon2-hashed passwords; access tokens (`brt_…`, shown once) are
//! stored as sha256 hashes with a scope (`pull` or `push`) and an expiry. Clients
//! present either as basic credentials, directly or to the `/token` endpoint,
//! which answers with a short-lived HS256 JWT listing the granted actions — the
//! flow Docker Hub uses. With no users at all, the registry is open.
//!
//! Files under `<storage>/auth/` are written atomically and read on each check,
//! so `registry user add` and `token create` take effect while the server runs.

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
    /// sha256 of the secret.
    pub hash: String,
    /// `pull` or `push`.
    pub scope: String,
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
        /// `Some("pull")` when authenticated by a pull-only token.
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

fn write_atomic(p: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, p)
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// sha256 hex.
pub fn sha_hex(s: &[u8]) -> String {
    hex::encode(Sha256::digest(s))
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    hex::encode(b)
}

impl AuthStore {
    /// Opens (creating) `<storage>/auth`.
    pub fn open(storage: &Path) -> std::io::Result<AuthStore> {
        let dir = storage.join("auth");
        std::fs::create_dir_all(&dir)?;
        let secret = dir.join("secret");
        if !secret.exists() {
            write_atomic(&secret, random_hex(32).as_bytes())?;
            std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        }
        Ok(AuthStore { dir })
    }

    fn users(&self) -> BTreeMap<String, User> {
        std::fs::read(self.dir.join("users.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn tokens(&self) -> Vec<AccessToken> {
        std::fs::read(self.dir.join("tokens.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::io::Result<std::fs::File> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join("lock"))?;
        f.lock()?;
        Ok(f)
    }

    /// Whether any user exists (else the registry is open).
    pub fn enabled(&self) -> bool {
        !self.users().is_empty()
    }

    /// Adds or replaces a user.
    pub fn add_user(&self, name: &str, password: &str, admin: bool) -> Result<(), String> {
        if !berth_types::reference::valid_path(name) || name.contains('/') {
            return Err(format!(
                "invalid user name {name:?}: use lowercase letters, digits and separators"
            ));
        }
        if password.len() < 8 {
            return Err("the password must have at least 8 characters".into());
        }
        let _l = self.lock().map_err(|e| e.to_string())?;
        let mut users = self.users();
        let mut salt = [0u8; 16];
        let _ = rustix::rand::getrandom(&mut salt, rustix::rand::GetRandomFlags::empty());
        let salt =
            argon2::password_hash::SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        let hash = argon2::PasswordHasher::hash_password(
            &argon2::Argon2::default(),
            password.as_bytes(),
            &salt,
        )
        .map_err(|e| e.to_string())?
        .to_string();
        users.insert(
            name.to_string(),
            User {
                password_hash: hash,
                admin,
                created: now(),
            },
        );
        write_atomic(
            &self.dir.join("users.json"),
            &serde_json::to_vec_pretty(&users).expect("users"),
        )
        .map_err(|e| e.to_string())
    }

    /// Removes a user and their tokens.
    pub fn remove_user(&self, name: &str) -> Result<(), String> {
        let _l = self.lock().map_err(|e| e.to_string())?;
        let mut users = self.users();
        if users.remove(name).is_none() {
            return Err(format!("no such user: {name}"));
        }
        let tokens: Vec<AccessToken> = self
            .tokens()
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
    pub fn list_users(&self) -> Vec<(String, bool)> {
        self.users()
            .into_iter()
            .map(|(n, u)| (n, u.admin))
            .collect()
    }

    /// Creates an access token; returns (id, secret) — the secret is not stored.
    pub fn create_token(
        &self,
        user: &str,
        scope: &str,
        expires_in_secs: Option<i64>,
    ) -> Result<(String, String), String> {
        if !matches!(scope, "pull" | "push") {
            return Err(format!("invalid scope {scope:?}: use pull or push"));
        }
        let _l = self.lock().map_err(|e| e.to_string())?;
        if !self.users().contains_key(user) {
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
        let mut tokens = self.tokens();
        tokens.push(AccessToken {
            id: id.clone(),
            user: user.into(),
            hash: sha_hex(secret.as_bytes()),
            scope: scope.into(),
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
    pub fn list_tokens(&self) -> Vec<AccessToken> {
        self.tokens()
    }

    /// Revokes a token by id.
    pub fn revoke_token(&self, id: &str) -> Result<(), String> {
        let _l = self.lock().map_err(|e| e.to_string())?;
        let mut tokens = self.tokens();
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

    /// Checks basic credentials (password or access token).
    pub fn check_basic(&self, header: &str) -> Option<Principal> {
        let raw = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))?;
        let dec = STANDARD.decode(raw.trim()).ok()?;
        let s = String::from_utf8(dec).ok()?;
        let (user, pass) = s.split_once(':')?;
        let users = self.users();
        let u = users.get(user)?;
        if pass.starts_with("brt_") {
            let h = sha_hex(pass.as_bytes());
            let t = self
                .tokens()
                .into_iter()
                .find(|t| t.user == user && t.hash == h)?;
            if !t.expires.is_empty()
                && t.expires.parse::<jiff::Timestamp>().ok()? < jiff::Timestamp::now()
            {
                return None;
            }
            return Some(Principal::User {
                name: user.into(),
                admin: u.admin,
                cap: (t.scope == "pull").then(|| "pull".into()),
            });
        }
        let parsed = argon2::PasswordHash::new(&u.password_hash).ok()?;
        argon2::PasswordVerifier::verify_password(
            &argon2::Argon2::default(),
            pass.as_bytes(),
            &parsed,
        )
        .ok()?;
        Some(Principal::User {
            name: user.into(),
            admin: u.admin,
            cap: None,
        })
    }

    fn secret(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("secret")).unwrap_or_default()
    }

    /// Issues a JWT granting `access` to `sub` for `ttl` seconds.
    pub fn issue(&self, sub: &str, access: &BTreeMap<String, Vec<String>>, ttl: i64) -> String {
        let now = jiff::Timestamp::now().as_second();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let acc: Vec<serde_json::Value> = access
            .iter()
            .map(|(n, a)| serde_json::json!({"type": "repository", "name": n, "actions": a}))
            .collect();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::json!({"iss": "berth-registry", "sub": sub, "iat": now, "exp": now + ttl, "access": acc}).to_string());
        let signing = format!("{header}.{payload}");
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret()).expect("hmac key");
        mac.update(signing.as_bytes());
        format!(
            "{signing}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    /// Verifies a bearer JWT.
    pub fn check_bearer(&self, header: &str) -> Option<Principal> {
        let tok = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))?
            .trim();
        let mut parts = tok.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret()).ok()?;
        mac.update(format!("{h}.{p}").as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
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
    pub fn principal_of(&self, name: &str) -> Principal {
        match self.users().get(name) {
            Some(u) => Principal::User {
                name: name.to_string(),
                admin: u.admin,
                cap: None,
            },
            None => Principal::Anonymous,
        }
    }

    /// What `who` may do on `repo` (as the token endpoint grants and checks it).
    pub fn allowed(&self, who: &Principal, repo: &str, public: bool) -> Vec<Action> {
        if !self.enabled() {
            return vec![Action::Pull, Action::Push, Action::Delete];
        }
        match who {
            Principal::Anonymous => {
                if public {
                    vec![Action::Pull]
                } else {
                    vec![]
                }
            }
            Principal::User { name, admin, cap } => {
                let own = *admin || repo == name.as_str() || repo.starts_with(&format!("{name}/"));
                let mut v = Vec::new();
                if own || public {
                    v.push(Action::Pull);
                }
                if own && cap.as_deref() != Some("pull") {
                    v.push(Action::Push);
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
                if public && !v.contains(&Action::Pull) {
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
        assert!(!a.enabled());
        a.add_user("alice", "correct horse", false).unwrap();
        assert!(a.add_user("bob", "short", false).is_err());
        let basic = |u: &str, p: &str| format!("Basic {}", STANDARD.encode(format!("{u}:{p}")));
        let who = a.check_basic(&basic("alice", "correct horse")).unwrap();
        assert!(a.check_basic(&basic("alice", "wrong password")).is_none());
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
        let (_, pull_tok) = a.create_token("alice", "pull", None).unwrap();
        let p = a.check_basic(&basic("alice", &pull_tok)).unwrap();
        assert_eq!(
            a.allowed(&p, "alice/app", false),
            vec![Action::Pull],
            "a pull token cannot push"
        );
        let (id, push_tok) = a.create_token("alice", "push", Some(-10)).unwrap();
        assert!(
            a.check_basic(&basic("alice", &push_tok)).is_none(),
            "expired"
        );
        a.revoke_token(&id).unwrap();
        let mut acc = BTreeMap::new();
        acc.insert("alice/app".to_string(), vec!["pull".to_string()]);
        let jwt = a.issue("alice", &acc, 60);
        let g = a.check_bearer(&format!("Bearer {jwt}")).unwrap();
        assert_eq!(a.allowed(&g, "alice/app", false), vec![Action::Pull]);
        let mut forged = jwt.clone();
        forged.push('x');
        assert!(a.check_bearer(&format!("Bearer {forged}")).is_none());
    }
}

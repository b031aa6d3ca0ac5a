//! What the web pages change in the auth store besides what `auth` does:
//! sign-up (create-only, never a reserved name), password checks and
//! changes, a token's last use, and which repositories are public
//! (`<storage>/auth/repos.json`). Every change goes through
//! [`AuthStore::update_json`]: under the auth lock, written atomically, 0600.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::auth::{AccessToken, AuthStore, Unreadable, User, now, write_atomic};

/// Names sign-up never gives: they are Docker Hub's namespaces, routes of
/// the pages, or would read as the registry speaking.
pub const RESERVED: &[&str] = &[
    "library",
    "admin",
    "administrator",
    "root",
    "registry",
    "berth",
    "docker",
    "official",
    "api",
    "v1",
    "v2",
    "token",
    "tokens",
    "login",
    "logout",
    "signup",
    "account",
    "static",
    "search",
    "r",
    "repositories",
    "help",
    "support",
    "security",
    "system",
    "null",
];

/// A repository's settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RepoMeta {
    /// Anyone may pull it.
    #[serde(default)]
    pub public: bool,
}

impl AuthStore {
    /// Reads the JSON file `name`, lets `f` change it, and writes it back,
    /// under the auth lock (missing is empty; unreadable is an error).
    pub fn update_json<T, R>(
        &self,
        name: &str,
        f: impl FnOnce(&mut T) -> Result<R, String>,
    ) -> Result<R, String>
    where
        T: serde::de::DeserializeOwned + Serialize + Default,
    {
        let _l = self.lock().map_err(|e| e.to_string())?;
        let mut v: T = self.read_json(name).map_err(|e| e.to_string())?;
        let r = f(&mut v)?;
        let bytes = serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())?;
        write_atomic(&self.dir().join(name), &bytes).map_err(|e| e.to_string())?;
        Ok(r)
    }

    /// Creates the account `name` for sign-up: refused when the name is
    /// taken or reserved, with the same name and password rules as
    /// `registry user add`.
    pub fn create_user(&self, name: &str, password: &str) -> Result<(), String> {
        if RESERVED.contains(&name) {
            return Err(format!("the name {name:?} is reserved: choose another"));
        }
        if self.users().map_err(|e| e.to_string())?.contains_key(name) {
            return Err(format!("the name {name:?} is taken: choose another"));
        }
        self.put_user(name, password, false, false)
    }

    /// The account `name` if `password` is its password (an argon2 hash:
    /// call it off the async workers). `Ok(None)` for a wrong password or
    /// an unknown user.
    pub fn verify_password(&self, name: &str, password: &str) -> Result<Option<User>, Unreadable> {
        let users = self.users()?;
        let Some(u) = users.get(name) else {
            return Ok(None);
        };
        let Ok(parsed) = argon2::PasswordHash::new(&u.password_hash) else {
            return Err(Unreadable(format!("user {name}: malformed password hash")));
        };
        let ok = argon2::PasswordVerifier::verify_password(
            &argon2::Argon2::default(),
            password.as_bytes(),
            &parsed,
        )
        .is_ok();
        Ok(ok.then(|| u.clone()))
    }

    /// Records that `t` was used, at most once a minute (best effort: a
    /// failure to record never refuses the request).
    pub(super) fn touch_token(&self, t: &AccessToken) {
        let minute = jiff::Timestamp::now()
            .round(jiff::Unit::Minute)
            .map(|t| t.to_string())
            .unwrap_or_default();
        if t.last_used == minute {
            return;
        }
        let _ = self.update_json("tokens.json", |tokens: &mut Vec<AccessToken>| {
            if let Some(x) = tokens.iter_mut().find(|x| x.id == t.id) {
                x.last_used = minute.clone();
            }
            Ok(())
        });
    }

    /// Whether `repo` was made public (unreadable settings: not public).
    pub fn is_public(&self, repo: &str) -> bool {
        self.read_json::<BTreeMap<String, RepoMeta>>("repos.json")
            .map(|m| m.get(repo).is_some_and(|r| r.public))
            .unwrap_or(false)
    }

    /// Makes `repo` public or private.
    pub fn set_public(&self, repo: &str, public: bool) -> Result<(), String> {
        self.update_json("repos.json", |m: &mut BTreeMap<String, RepoMeta>| {
            m.entry(repo.to_string()).or_default().public = public;
            Ok(())
        })
    }

    /// Adds the account `name` (replacing one of that name only when
    /// `replace`).
    pub(super) fn put_user(
        &self,
        name: &str,
        password: &str,
        admin: bool,
        replace: bool,
    ) -> Result<(), String> {
        let hash = Self::check_rules_and_hash(name, password)?;
        self.update_json("users.json", |users: &mut BTreeMap<String, User>| {
            if !replace && users.contains_key(name) {
                return Err(format!("the name {name:?} is taken: choose another"));
            }
            users.insert(
                name.to_string(),
                User {
                    password_hash: hash,
                    admin,
                    created: now(),
                },
            );
            Ok(())
        })
    }

    /// Sets `name`'s password (the same rules as a new one).
    pub fn change_password(&self, name: &str, password: &str) -> Result<(), String> {
        let hash = Self::check_rules_and_hash(name, password)?;
        self.update_json("users.json", |users: &mut BTreeMap<String, User>| {
            let u = users
                .get_mut(name)
                .ok_or_else(|| format!("no such user: {name}"))?;
            u.password_hash = hash;
            Ok(())
        })
    }
}

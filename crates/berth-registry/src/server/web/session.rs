//! Web sessions and sign-up invitations, kept beside the accounts in the
//! auth directory (`sessions.json`, `invites.json`: 0600, written
//! atomically under the auth lock).
//!
//! A session's id lives only in the browser's cookie; the server keeps its
//! sha256, so a copy of the auth files logs nobody in. Each session has its
//! own CSRF token, which every form of the pages carries. Invitations are
//! kept the same way: a code's hash, who made it, and who used it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::server::auth::{AuthStore, User, now, random_hex, sha_hex};

/// How long a session lasts, seconds (12 hours).
pub const TTL: i64 = 12 * 3600;

/// A signed-in browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The account.
    pub user: String,
    /// The token every form of this session must carry.
    pub csrf: String,
    /// When it ends (Unix seconds).
    pub expires: i64,
}

/// A sign-up invitation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invite {
    /// The admin who made it.
    pub by: String,
    /// When (RFC 3339).
    pub created: String,
    /// Who signed up with it, once used.
    #[serde(default)]
    pub used_by: Option<String>,
}

type Sessions = BTreeMap<String, Session>;
type Invites = BTreeMap<String, Invite>;

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Starts a session for `user`: returns its id (for the cookie) and the
/// session. Ended sessions are dropped on the way.
pub fn create(auth: &AuthStore, user: &str) -> Result<(String, Session), String> {
    let id = random_hex(32);
    let s = Session {
        user: user.to_string(),
        csrf: random_hex(16),
        expires: unix_now() + TTL,
    };
    let stored = s.clone();
    auth.update_json("sessions.json", |m: &mut Sessions| {
        let t = unix_now();
        m.retain(|_, s| s.expires > t);
        m.insert(sha_hex(id.as_bytes()), stored);
        Ok(())
    })?;
    Ok((id, s))
}

/// The live session whose id is `id`, if any (its account still among
/// `users`).
pub fn find(auth: &AuthStore, users: &BTreeMap<String, User>, id: &str) -> Option<Session> {
    if id.len() != 64 {
        return None;
    }
    let m: Sessions = auth.read_json("sessions.json").ok()?;
    let s = m.get(&sha_hex(id.as_bytes()))?;
    if s.expires <= unix_now() || !users.contains_key(&s.user) {
        return None;
    }
    Some(s.clone())
}

/// Ends the session `id` (log out).
pub fn end(auth: &AuthStore, id: &str) -> Result<(), String> {
    auth.update_json("sessions.json", |m: &mut Sessions| {
        m.remove(&sha_hex(id.as_bytes()));
        Ok(())
    })
}

/// Ends every session of `user` (a password change, a removed account).
pub fn end_all(auth: &AuthStore, user: &str) -> Result<(), String> {
    auth.update_json("sessions.json", |m: &mut Sessions| {
        m.retain(|_, s| s.user != user);
        Ok(())
    })
}

/// Makes an invitation code (shown once).
pub fn invite(auth: &AuthStore, by: &str) -> Result<String, String> {
    let code = format!("inv_{}", random_hex(12));
    let h = sha_hex(code.as_bytes());
    auth.update_json("invites.json", |m: &mut Invites| {
        m.insert(
            h,
            Invite {
                by: by.to_string(),
                created: now(),
                used_by: None,
            },
        );
        Ok(())
    })?;
    Ok(code)
}

/// Marks `code` used by `user`; an error when it is unknown or used.
pub fn use_invite(auth: &AuthStore, code: &str, user: &str) -> Result<(), String> {
    let h = sha_hex(code.trim().as_bytes());
    auth.update_json("invites.json", |m: &mut Invites| match m.get_mut(&h) {
        Some(i) if i.used_by.is_none() => {
            i.used_by = Some(user.to_string());
            Ok(())
        }
        _ => Err("that invitation code is not valid (or was used)".to_string()),
    })
}

/// The invitations not used yet: (made by, when).
pub fn open_invites(auth: &AuthStore) -> Vec<(String, String)> {
    auth.read_json::<Invites>("invites.json")
        .map(|m| {
            m.into_values()
                .filter(|i| i.used_by.is_none())
                .map(|i| (i.by, i.created))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_kept_hashed_and_end() {
        let t = tempfile::tempdir().unwrap();
        let a = AuthStore::open(t.path()).unwrap();
        a.add_user("alice", "correct horse", false).unwrap();
        let (id, s) = create(&a, "alice").unwrap();
        let file = std::fs::read_to_string(t.path().join("auth/sessions.json")).unwrap();
        assert!(!file.contains(&id), "the id itself is never stored");
        assert_eq!(find(&a, &a.users().unwrap(), &id).unwrap().csrf, s.csrf);
        assert!(find(&a, &a.users().unwrap(), &"0".repeat(64)).is_none());
        end(&a, &id).unwrap();
        assert!(find(&a, &a.users().unwrap(), &id).is_none(), "logged out");
        let (id, _) = create(&a, "alice").unwrap();
        a.remove_user("alice").unwrap();
        assert!(
            find(&a, &a.users().unwrap(), &id).is_none(),
            "a removed account's session grants nothing"
        );
    }

    #[test]
    fn an_invitation_is_used_once() {
        let t = tempfile::tempdir().unwrap();
        let a = AuthStore::open(t.path()).unwrap();
        let code = invite(&a, "root").unwrap();
        assert_eq!(open_invites(&a).len(), 1);
        use_invite(&a, &code, "bob").unwrap();
        assert!(use_invite(&a, &code, "eve").is_err());
        assert!(use_invite(&a, "inv_nope", "eve").is_err());
        assert!(open_invites(&a).is_empty());
    }
}

//! Credentials in docker's `config.json`, so `berth login` and `docker login`
//! share them: `auths` entries with base64 `user:secret`, or a credential helper
//! (`credsStore`, `credHelpers`) spoken to with the `docker-credential-*`
//! protocol (`get`/`store`/`erase` on stdin and stdout).
//!
//! The file is found as docker finds it: `--config DIR`, else `$DOCKER_CONFIG`,
//! else `~/.docker`. Writes keep every key berth does not know, and are atomic
//! with mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{Credentials, Error, Result};

/// The key docker uses for Docker Hub in `auths`.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Where credentials live.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The config.json path.
    pub path: PathBuf,
}

/// Where a credential was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialStore {
    /// In config.json itself.
    File,
    /// In `docker-credential-<helper>`.
    Helper(String),
}

/// The `auths` key for a registry domain.
pub fn server_key(domain: &str) -> String {
    match domain {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_KEY.to_string(),
        d => d.to_string(),
    }
}

fn matches_key(key: &str, domain: &str) -> bool {
    let want = server_key(domain);
    if key == want {
        return true;
    }
    // Entries written as URLs (`https://host/v1/`) by older tools.
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    host == want || (want == DOCKER_HUB_KEY && host == "index.docker.io")
}

impl AuthConfig {
    /// Finds config.json: `dir` (from `--config`), `$DOCKER_CONFIG`, `~/.docker`.
    pub fn locate(dir: Option<&Path>) -> AuthConfig {
        let dir = dir
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("DOCKER_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/root"))
                    .join(".docker")
            });
        AuthConfig {
            path: dir.join("config.json"),
        }
    }

    fn read(&self) -> Result<Map<String, Value>> {
        match std::fs::read(&self.path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
            Ok(b) => serde_json::from_slice::<Value>(&b)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .ok_or_else(|| Error::other(format!("{}: not a JSON object", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
            Err(e) => Err(Error::other(format!(
                "reading {}: {e}",
                self.path.display()
            ))),
        }
    }

    fn write(&self, m: &Map<String, Value>) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::other(format!("creating {}: {e}", dir.display())))?;
        let tmp = dir.join(format!(".config.json.{}", std::process::id()));
        let data = serde_json::to_vec_pretty(&Value::Object(m.clone())).expect("json");
        let res = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&data)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::other(format!(
                "writing {}: {e}",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn helper_for(m: &Map<String, Value>, domain: &str) -> Option<String> {
        let key = server_key(domain);
        m.get("credHelpers")
            .and_then(|h| h.get(&key).or_else(|| h.get(domain)))
            .and_then(Value::as_str)
            .or_else(|| m.get("credsStore").and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// The credentials saved for `domain`, if any.
    pub fn get(&self, domain: &str) -> Result<Option<Credentials>> {
        let m = self.read()?;
        if let Some(h) = Self::helper_for(&m, domain) {
            return helper_get(&h, &server_key(domain));
        }
        let Some(auths) = m.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        for (k, v) in auths {
            if !matches_key(k, domain) {
                continue;
            }
            if let Some(a) = v["auth"].as_str().filter(|a| !a.is_empty()) {
                let dec = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .map_err(|_| {
                        Error::other(format!("{}: invalid auth for {k}", self.path.display()))
                    })?;
                let s = String::from_utf8_lossy(&dec).into_owned();
                let (u, p) = s.split_once(':').ok_or_else(|| {
                    Error::other(format!("{}: invalid auth for {k}", self.path.display()))
                })?;
                return Ok(Some(Credentials {
                    username: u.to_string(),
                    secret: p.to_string(),
                }));
            }
            if let (Some(u), Some(p)) = (v["username"].as_str(), v["password"].as_str()) {
                return Ok(Some(Credentials {
                    username: u.into(),
                    secret: p.into(),
                }));
            }
        }
        Ok(None)
    }

    /// Saves credentials for `domain` (in its helper when one is configured).
    pub fn store(&self, domain: &str, c: &Credentials) -> Result<CredentialStore> {
        let mut m = self.read()?;
        let key = server_key(domain);
        if let Some(h) = Self::helper_for(&m, domain) {
            helper_store(&h, &key, c)?;
            // Keep an empty entry, as docker does, so `auths` lists the registry.
            let auths = m
                .entry("auths")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(a) = auths.as_object_mut() {
                a.insert(key, Value::Object(Map::new()));
            }
            self.write(&m)?;
            return Ok(CredentialStore::Helper(h));
        }
        let auths = m
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        let a = auths.as_object_mut().ok_or_else(|| {
            Error::other(format!("{}: auths is not an object", self.path.display()))
        })?;
        let enc = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", c.username, c.secret));
        a.insert(key, serde_json::json!({ "auth": enc }));
        self.write(&m)?;
        Ok(CredentialStore::File)
    }

    /// Removes credentials for `domain`; false when there were none.
    pub fn erase(&self, domain: &str) -> Result<bool> {
        let mut m = self.read()?;
        let key = server_key(domain);
        let mut found = false;
        if let Some(h) = Self::helper_for(&m, domain) {
            found |= helper_erase(&h, &key).is_ok();
        }
        if let Some(a) = m.get_mut("auths").and_then(Value::as_object_mut) {
            let keys: Vec<String> = a
                .keys()
                .filter(|k| matches_key(k, domain))
                .cloned()
                .collect();
            for k in keys {
                a.remove(&k);
                found = true;
            }
        }
        if found {
            self.write(&m)?;
        }
        Ok(found)
    }
}

fn helper(name: &str, verb: &str, input: &str) -> Result<String> {
    let bin = format!("docker-credential-{name}");
    let mut child = Command::new(&bin)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::other(format!(
                "error getting credentials - err: exec: \"{bin}\": {e}"
            ))
        })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .map_err(|e| Error::other(format!("{bin} {verb}: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Error::other(format!("{bin} {verb}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        let msg = if stdout.is_empty() {
            String::from_utf8_lossy(&out.stderr).trim().to_string()
        } else {
            stdout
        };
        return Err(Error::other(format!("{bin} {verb}: {msg}")));
    }
    Ok(stdout)
}

fn helper_get(name: &str, key: &str) -> Result<Option<Credentials>> {
    match helper(name, "get", key) {
        Ok(out) => {
            let v: Value = serde_json::from_str(&out).map_err(|e| {
                Error::other(format!("docker-credential-{name} get: invalid answer: {e}"))
            })?;
            Ok(Some(Credentials {
                username: v["Username"].as_str().unwrap_or("").to_string(),
                secret: v["Secret"].as_str().unwrap_or("").to_string(),
            }))
        }
        Err(e) if e.msg.contains("credentials not found") => Ok(None),
        Err(e) => Err(e),
    }
}

fn helper_store(name: &str, key: &str, c: &Credentials) -> Result<()> {
    let input = serde_json::json!({ "ServerURL": key, "Username": c.username, "Secret": c.secret })
        .to_string();
    helper(name, "store", &input).map(|_| ())
}

fn helper_erase(name: &str, key: &str) -> Result<()> {
    helper(name, "erase", key).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_other_keys() {
        let t = tempfile::tempdir().unwrap();
        let cfg = AuthConfig::locate(Some(t.path()));
        std::fs::write(&cfg.path, r#"{"psFormat":"table {{.ID}}","auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#).unwrap();
        assert_eq!(
            cfg.get("docker.io").unwrap(),
            Some(Credentials {
                username: "u".into(),
                secret: "p".into()
            })
        );
        let c = Credentials {
            username: "alice".into(),
            secret: "brt_x:y".into(),
        };
        assert_eq!(
            cfg.store("localhost:5000", &c).unwrap(),
            CredentialStore::File
        );
        assert_eq!(cfg.get("localhost:5000").unwrap(), Some(c));
        let v: Value = serde_json::from_slice(&std::fs::read(&cfg.path).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "table {{.ID}}", "unknown keys survive");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&cfg.path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(cfg.erase("localhost:5000").unwrap());
        assert!(!cfg.erase("localhost:5000").unwrap());
        assert_eq!(cfg.get("localhost:5000").unwrap(), None);
        assert!(cfg.get("docker.io").unwrap().is_some());
    }
}

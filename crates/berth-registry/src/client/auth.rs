//! Registry auth: `WWW-Authenticate` challenges, HTTP basic, and the
//! bearer-token flow Docker Hub style registries use (tokens cached per
//! scope until they expire), and `login`'s credential check.

use super::*;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// Service to ask for.
        service: Option<String>,
        /// Scope the registry asked for.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params: HashMap<String, String> = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_string(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(k, v);
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

impl Registry {
    pub fn check_login(&self) -> Result<()> {
        match &self.challenge() {
            None => Ok(()),
            Some(Challenge::Basic) => {
                let url = format!("{}/v2/", self.base);
                let mut r = self
                    .agent
                    .get(&url)
                    .header("authorization", self.basic().unwrap_or_default())
                    .call()
                    .map_err(|e| transport(e, &url))?;
                if r.status() == 200 {
                    Ok(())
                } else {
                    Err(response_error(&mut r, &format!("Get \"{url}\"")))
                }
            }
            Some(Challenge::Bearer { .. }) => self.token(&[]).map(|_| ()),
        }
    }

    fn basic(&self) -> Option<String> {
        self.creds.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.secret))
            )
        })
    }

    /// How the registry asked to be authenticated, if it did.
    pub(super) fn challenge(&self) -> Option<Challenge> {
        self.challenge.lock().expect("challenge").clone()
    }

    /// A bearer token for `scopes` (cached until it expires).
    fn token(&self, scopes: &[String]) -> Result<String> {
        let Some(Challenge::Bearer { realm, service, .. }) = &self.challenge() else {
            return Err(Error::other("the registry did not ask for a bearer token"));
        };
        let key = scopes.join(" ");
        if let Some((t, exp)) = self.tokens.lock().expect("tokens").get(&key)
            && *exp > Instant::now()
        {
            return Ok(t.clone());
        }
        let mut q: Vec<(String, String)> = Vec::new();
        if let Some(s) = service {
            q.push(("service".into(), s.clone()));
        }
        for s in scopes {
            q.push(("scope".into(), s.clone()));
        }
        if let Some(c) = &self.creds {
            q.push(("account".into(), c.username.clone()));
        }
        let qs: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(q)
            .finish();
        let url = if qs.is_empty() {
            realm.clone()
        } else if realm.contains('?') {
            format!("{realm}&{qs}")
        } else {
            format!("{realm}?{qs}")
        };
        let mut attempt = 0;
        let mut resp = loop {
            let mut req = self.agent.get(&url);
            if let Some(b) = self.basic() {
                req = req.header("authorization", b);
            }
            match req.call() {
                Ok(r) if retryable(r.status().as_u16()) && attempt < self.opts.retries => {
                    std::thread::sleep(retry_after(&r, attempt));
                }
                Ok(r) => break r,
                Err(e) if attempt < self.opts.retries => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(250 << attempt));
                }
                Err(e) => return Err(transport(e, &url)),
            }
            attempt += 1;
        };
        if resp.status() != 200 {
            let mut e = response_error(&mut resp, &format!("Get \"{}\"", realm));
            if resp.status() == 401 {
                e = Error::new(
                    ErrorKind::Unauthorized,
                    if self.creds.is_some() {
                        format!(
                            "Get \"{}/v2/\": unauthorized: incorrect username or password",
                            self.base
                        )
                    } else {
                        format!(
                            "Get \"{}/v2/\": unauthorized: authentication required",
                            self.base
                        )
                    },
                );
            }
            return Err(e);
        }
        let raw = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| Error::other(format!("reading the token from {realm}: {e}")))?;
        let v: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| Error::other(format!("reading the token from {realm}: {e}")))?;
        let tok = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .ok_or_else(|| Error::other(format!("{realm} returned no token")))?
            .to_string();
        let ttl = v["expires_in"].as_u64().unwrap_or(60).max(10);
        // Refresh a little early so a token never expires mid-request.
        let exp = Instant::now() + Duration::from_secs(ttl.saturating_sub(5));
        self.tokens
            .lock()
            .expect("tokens")
            .insert(key, (tok.clone(), exp));
        Ok(tok)
    }

    pub(super) fn auth_header(&self, scopes: &[String]) -> Result<Option<String>> {
        match &self.challenge() {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.basic()),
            Some(Challenge::Bearer { .. }) => Ok(Some(format!("Bearer {}", self.token(scopes)?))),
        }
    }
}

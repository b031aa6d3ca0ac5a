//! The token endpoint: Docker Hub's bearer flow (basic credentials or a
//! refresh of them for a scoped JWT), with password guessing slowed.

use super::*;

#[derive(Deserialize)]
pub(super) struct TokenForm {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    refresh_token: String,
    #[serde(default)]
    scope: String,
}

/// The token endpoint: `GET /token?service=…&scope=…` with optional basic
/// credentials (docker, skopeo), or the OAuth2 `POST` form (containerd).
pub(super) async fn token(app: &Arc<App>, req: Request, peer: IpAddr) -> ApiResult {
    let mut scopes: Vec<String> = query(&req)
        .into_iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v)
        .collect();
    let is_post = req.method() == Method::POST;
    let basic = header_str(req.headers(), header::AUTHORIZATION).map(str::to_string);
    // The form's credentials (POST, OAuth2 style) or the Authorization header.
    let credentials = if is_post {
        let body = read_limited(app, req, 64 << 10).await?;
        let f: TokenForm = serde_urlencoded_like(&body);
        scopes.extend(
            f.scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        let (user, pass) = match f.grant_type.as_str() {
            "password" => (f.username, f.password),
            "refresh_token" => (String::new(), f.refresh_token),
            g => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    format!("unsupported grant_type {g:?}"),
                ));
            }
        };
        let hdr = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:{pass}")
            )
        );
        Some(hdr)
    } else {
        basic
    };
    let who = match credentials {
        Some(h) if !app.config.open => app.check_basic(&h, peer).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "incorrect username or password",
            )
        })?,
        _ => Principal::Anonymous,
    };
    let mut access: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in &scopes {
        let Some((typ, rest)) = s.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        if typ != "repository" || !valid_name(name) {
            continue;
        }
        let allowed = app.allowed(&who, name);
        let mut granted: Vec<String> = Vec::new();
        for a in actions.split(',') {
            for act in [Action::Pull, Action::Push, Action::Delete] {
                if (a == act.as_str() || a == "*")
                    && allowed.contains(&act)
                    && !granted.iter().any(|g| g == act.as_str())
                {
                    granted.push(act.as_str().to_string());
                }
            }
        }
        access.entry(name.to_string()).or_default().extend(granted);
    }
    let sub = match &who {
        Principal::User { name, .. } | Principal::Granted { name, .. } => name.clone(),
        Principal::Anonymous => String::new(),
    };
    let ttl = app.config.token_ttl;
    let tok = app.auth.issue(&sub, &access, ttl).map_err(unavailable)?;
    let body = serde_json::json!({
        "token": tok,
        "access_token": tok,
        "expires_in": ttl,
        "issued_at": jiff::Timestamp::now().to_string(),
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response())
}

pub(super) fn serde_urlencoded_like(body: &[u8]) -> TokenForm {
    let mut f = TokenForm {
        grant_type: String::new(),
        username: String::new(),
        password: String::new(),
        refresh_token: String::new(),
        scope: String::new(),
    };
    for (k, v) in form_urlencoded::parse(body) {
        let v = v.into_owned();
        match k.as_ref() {
            "grant_type" => f.grant_type = v,
            "username" => f.username = v,
            "password" => f.password = v,
            "refresh_token" => f.refresh_token = v,
            "scope" => {
                f.scope = if f.scope.is_empty() {
                    v
                } else {
                    format!("{} {v}", f.scope)
                }
            }
            _ => {}
        }
    }
    f
}

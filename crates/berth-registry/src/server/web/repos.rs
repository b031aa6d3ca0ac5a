//! The repository pages: the list (yours, and the public ones) and
//! `/r/<repository>` as Docker Hub spells it — tags with digest, size,
//! platforms and push time, the pull commands to copy, public/private for
//! its owner, and deleting a tag where permitted.

use super::*;
use crate::server::auth::Action;
use berth_types::Digest;

/// What the repository page shows of one tag.
struct TagRow {
    tag: String,
    digest: Digest,
    size: u64,
    platforms: Vec<String>,
    pushed: String,
}

/// The layers' and config's size of an image manifest, and its platform
/// (from its config).
fn image_facts(app: &App, bytes: &[u8]) -> (u64, Option<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return (0, None);
    };
    let size = v["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&v["config"]))
        .filter_map(|d| d["size"].as_u64())
        .sum();
    let platform = v["config"]["digest"]
        .as_str()
        .and_then(|d| d.parse::<Digest>().ok())
        .and_then(|d| app.storage.read_blob(&d).ok())
        .filter(|b| b.len() < (1 << 20))
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|c| {
            let (os, arch) = (c["os"].as_str()?, c["architecture"].as_str()?);
            Some(match c["variant"].as_str() {
                Some(var) => format!("{os}/{arch}/{var}"),
                None => format!("{os}/{arch}"),
            })
        });
    (size, platform)
}

fn tag_row(app: &App, repo: &str, tag: &str) -> Option<TagRow> {
    let m = app.storage.manifest(repo, tag)?;
    let v: serde_json::Value = serde_json::from_slice(&m.bytes).ok()?;
    let (size, platforms) = if let Some(children) = v["manifests"].as_array() {
        // An index: each platform's image, its size summed.
        let mut size = 0;
        let mut platforms = Vec::new();
        for c in children {
            let p = &c["platform"];
            if let (Some(os), Some(arch)) = (p["os"].as_str(), p["architecture"].as_str()) {
                if os == "unknown" {
                    continue; // attestations
                }
                platforms.push(match p["variant"].as_str() {
                    Some(var) => format!("{os}/{arch}/{var}"),
                    None => format!("{os}/{arch}"),
                });
            }
            if let Some(d) = c["digest"].as_str()
                && let Some(child) = app.storage.manifest(repo, d)
            {
                size += image_facts(app, &child.bytes).0;
            }
        }
        (size, platforms)
    } else {
        let (size, p) = image_facts(app, &m.bytes);
        (size, p.into_iter().collect())
    };
    let pushed = app
        .storage
        .tag_pushed(repo, tag)
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    Some(TagRow {
        tag: tag.to_string(),
        digest: m.digest,
        size,
        platforms,
        pushed,
    })
}

/// Sizes as Docker Hub shows them (`2.1 MB`).
fn size(n: u64) -> String {
    let f = n as f64;
    match n {
        0..1000 => format!("{n} B"),
        1000..1_000_000 => format!("{:.1} kB", f / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", f / 1e6),
        _ => format!("{:.2} GB", f / 1e9),
    }
}

/// `GET /repositories` (and `/` before signing in).
pub(super) fn list(cx: &Ctx) -> Response {
    let who = cx.principal();
    let me = cx.user().unwrap_or("");
    let mut mine = String::new();
    let mut public = String::new();
    for r in cx.app.storage.catalog() {
        let can = cx.app.allowed(&who, &r);
        if !can.contains(&Action::Pull) {
            continue;
        }
        let is_public = cx.app.config.public || cx.app.auth.is_public(&r);
        let item = format!(
            r#"<li><a href="/r/{r}">{r}</a> <span class="badge">{vis}</span> <span class="muted">{n} tag(s)</span></li>"#,
            r = esc(&r),
            vis = if is_public { "public" } else { "private" },
            n = cx.app.storage.tags(&r).len(),
        );
        let own = !me.is_empty() && (r.starts_with(&format!("{me}/")) || r == me);
        if own || (cx.admin && !is_public) {
            mine += &item;
        } else {
            public += &item;
        }
    }
    let mut body = String::new();
    if let Some(u) = cx.user() {
        body += &format!(
            r#"<h2>Your repositories</h2>{}<p class="hint">Push to <code>{}/{}/NAME:TAG</code> to make one.</p>"#,
            if mine.is_empty() {
                r#"<p class="note">None yet.</p>"#.to_string()
            } else {
                format!(r#"<ul class="repos" id="mine">{mine}</ul>"#)
            },
            esc(&cx.host()),
            esc(u)
        );
    } else {
        body += r#"<p>A container registry: sign in to see your repositories and make access tokens for <code>berth login</code> and <code>docker login</code>.</p>"#;
    }
    body += &format!(
        r#"<h2>Public repositories</h2>{}"#,
        if public.is_empty() {
            r#"<p class="note">None.</p>"#.to_string()
        } else {
            format!(r#"<ul class="repos" id="public">{public}</ul>"#)
        }
    );
    render(cx, Page::new("Repositories", body))
}

/// `GET /r/<repository>`: its tags; "not found" unless the caller may pull it.
pub(super) fn repo(cx: &Ctx, name: &str) -> Response {
    let name = name.trim_end_matches('/');
    if !super::super::valid_name(name) || !cx.app.storage.repo_exists(name) {
        return not_found(cx);
    }
    let can = cx.app.allowed(&cx.principal(), name);
    if !can.contains(&Action::Pull) {
        return not_found(cx);
    }
    let host = cx.host();
    let is_public = cx.app.config.public || cx.app.auth.is_public(name);
    let delete =
        can.contains(&Action::Delete) && cx.app.config.delete_enabled && cx.user().is_some();
    let mut rows = String::new();
    for t in cx.app.storage.tags(name) {
        let Some(r) = tag_row(cx.app, name, &t) else {
            continue;
        };
        let del = if delete {
            format!(
                r#"<form method="post" action="/r/{n}/delete-tag" class="inline">{csrf}<input type="hidden" name="tag" value="{t}"><button type="submit" class="danger">Delete</button></form>"#,
                n = esc(name),
                t = esc(&r.tag),
                csrf = cx.csrf_input()
            )
        } else {
            String::new()
        };
        rows += &format!(
            r#"<tr><td data-label="Tag"><strong class="tag">{tag}</strong></td><td data-label="Digest"><code title="{digest}">{short}</code></td><td data-label="Size">{size}</td><td data-label="Platforms">{platforms}</td><td data-label="Pushed">{pushed}</td><td data-label="Pull"><code class="pull">berth pull {host}/{n}:{tag}</code></td><td>{del}</td></tr>"#,
            tag = esc(&r.tag),
            digest = esc(&r.digest.to_string()),
            short = esc(&format!("{}…", &r.digest.to_string()[..19])),
            size = size(r.size),
            platforms = esc(&r.platforms.join(", ")),
            pushed = esc(&r.pushed),
            host = esc(&host),
            n = esc(name),
        );
    }
    let owner = can.contains(&Action::Push) && cx.user().is_some();
    let visibility = if owner {
        let (to, label) = if is_public {
            ("private", "Make private")
        } else {
            ("public", "Make public")
        };
        if cx.app.config.public {
            String::new()
        } else {
            format!(
                r#"<form method="post" action="/r/{n}/visibility" class="inline">{csrf}<input type="hidden" name="to" value="{to}"><button type="submit" id="visibility">{label}</button></form>"#,
                n = esc(name),
                csrf = cx.csrf_input()
            )
        }
    } else {
        String::new()
    };
    let body = format!(
        r#"<p><span class="badge">{vis}</span> {visibility}</p>
<div class="card"><p>Pull the latest tag:</p><pre><code>berth pull {host}/{n}</code></pre><pre><code>docker pull {host}/{n}</code></pre></div>
<h2>Tags</h2>
{table}"#,
        vis = if is_public { "public" } else { "private" },
        host = esc(&host),
        n = esc(name),
        table = if rows.is_empty() {
            r#"<p class="note">No tags.</p>"#.to_string()
        } else {
            format!(
                r#"<table class="list" id="tags"><thead><tr><th>Tag</th><th>Digest</th><th>Size</th><th>Platforms</th><th>Pushed</th><th>Pull</th><th></th></tr></thead><tbody>{rows}</tbody></table>"#
            )
        },
    );
    render(cx, Page::new(name, body))
}

/// `POST /r/<repository>/visibility` and `/delete-tag`, by the owner (or
/// an admin) only.
pub(super) fn change(cx: &Ctx, rest: &str) -> Response {
    let Some((name, what)) = rest.rsplit_once('/') else {
        return not_found(cx);
    };
    if cx.user().is_none() {
        return redirect("/login", &[]);
    }
    if !super::super::valid_name(name) || !cx.app.storage.repo_exists(name) {
        return not_found(cx);
    }
    let can = cx.app.allowed(&cx.principal(), name);
    if !can.contains(&Action::Pull) {
        return not_found(cx);
    }
    let back = format!("/r/{name}");
    match what {
        "visibility" if can.contains(&Action::Push) => {
            let public = cx.field("to") == "public";
            match cx.app.auth.set_public(name, public) {
                Ok(()) => redirect(&back, &[]),
                Err(e) => message(cx, StatusCode::SERVICE_UNAVAILABLE, "Unavailable", &e),
            }
        }
        "delete-tag" if can.contains(&Action::Delete) && cx.app.config.delete_enabled => {
            let tag = cx.field("tag");
            if !super::super::valid_tag(tag) {
                return not_found(cx);
            }
            match cx.app.storage.delete_manifest(name, tag) {
                Ok(_) => redirect(&back, &[]),
                Err(e) => message(
                    cx,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Error",
                    &e.to_string(),
                ),
            }
        }
        "visibility" | "delete-tag" => message(
            cx,
            StatusCode::FORBIDDEN,
            "Not permitted",
            "You may not change this repository.",
        ),
        _ => not_found(cx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_hub_s() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(2_140_000), "2.1 MB");
        assert_eq!(size(1_500), "1.5 kB");
    }
}

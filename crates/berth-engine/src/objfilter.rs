//! `--filter` for `volume ls` and `network ls` (and the Engine API's
//! `filters` of their list endpoints): docker's keys and matching rules.
//! Container filters live in [`crate::list`].

use std::collections::BTreeMap;

use crate::network::Network;
use crate::volume::Volume;
use crate::{Engine, EngineError, Result};

/// Parsed `key=value` filters (a key may repeat: any value matches).
#[derive(Debug, Clone, Default)]
pub struct ObjFilters(BTreeMap<String, Vec<String>>);

impl ObjFilters {
    /// From `--filter key=value` flags, refusing keys outside `allowed`
    /// with docker's "Invalid filter 'key'".
    pub fn from_flags(flags: &[String], allowed: &[&str]) -> Result<ObjFilters> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in flags {
            let (k, v) = f.split_once('=').ok_or_else(|| {
                EngineError::Invalid(format!("bad format of filter (expected name=value): {f}"))
            })?;
            let k = k.trim().to_ascii_lowercase();
            if !allowed.contains(&k.as_str()) {
                return Err(EngineError::Invalid(format!("Invalid filter '{k}'")));
            }
            m.entry(k).or_default().push(v.trim().to_string());
        }
        Ok(ObjFilters(m))
    }

    /// From the API's `filters` JSON (`{"name":["x"]}` or `{"name":{"x":true}}`).
    pub fn from_json(s: &str, allowed: &[&str]) -> Result<ObjFilters> {
        let mut flags = Vec::new();
        for (k, vs) in crate::list::json_map(s)? {
            for v in vs {
                flags.push(format!("{k}={v}"));
            }
        }
        ObjFilters::from_flags(&flags, allowed)
    }

    fn any(&self, key: &str, f: impl Fn(&str) -> bool) -> bool {
        self.0.get(key).is_none_or(|vs| vs.iter().any(|v| f(v)))
    }
}

/// docker's `label=key` or `label=key=value` against a label map.
fn label_matches(labels: &BTreeMap<String, String>, want: &str) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(want),
    }
}

fn truthy(v: &str) -> Option<bool> {
    match v {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// The keys `volume ls --filter` takes.
pub const VOLUME_KEYS: &[&str] = &["dangling", "driver", "label", "name"];
/// The keys `network ls --filter` takes.
pub const NETWORK_KEYS: &[&str] = &["dangling", "driver", "id", "label", "name", "scope", "type"];

impl Engine {
    /// `volume ls --filter`: dangling (no container uses it), driver,
    /// label, name (a substring, as docker matches it).
    pub fn volumes_filtered(&self, f: &ObjFilters) -> Result<Vec<Volume>> {
        for v in f.0.get("dangling").into_iter().flatten() {
            if truthy(v).is_none() {
                return Err(EngineError::Invalid(format!(
                    "invalid filter 'dangling={v}'"
                )));
            }
        }
        let used: Vec<String> = if f.0.contains_key("dangling") {
            self.volumes_in_use()?.into_iter().map(|(n, _)| n).collect()
        } else {
            Vec::new()
        };
        Ok(self
            .volumes()?
            .into_iter()
            .filter(|v| {
                f.any("dangling", |d| truthy(d) == Some(!used.contains(&v.name)))
                    && f.any("driver", |d| v.driver == d)
                    && f.any("label", |l| label_matches(&v.labels, l))
                    && f.any("name", |n| v.name.contains(n))
            })
            .collect())
    }

    /// `network ls --filter`: dangling (a custom network no container is
    /// on), driver, id (a prefix), label, name (a substring), scope
    /// (`local`), type (`builtin` or `custom`).
    pub fn networks_filtered(&self, f: &ObjFilters) -> Result<Vec<Network>> {
        const BUILTIN: &[&str] = &["bridge", "host", "none"];
        let attached: Vec<String> = if f.0.contains_key("dangling") {
            self.containers()?
                .into_iter()
                .flat_map(|c| c.network_settings.networks.into_keys())
                .collect()
        } else {
            Vec::new()
        };
        for (k, vs) in &f.0 {
            for v in vs {
                let ok = match k.as_str() {
                    "dangling" => truthy(v).is_some(),
                    "type" => matches!(v.as_str(), "builtin" | "custom"),
                    _ => true,
                };
                if !ok {
                    return Err(EngineError::Invalid(format!("invalid filter '{k}={v}'")));
                }
            }
        }
        Ok(self
            .networks()?
            .into_iter()
            .filter(|n| {
                let builtin = BUILTIN.contains(&n.name.as_str());
                f.any("dangling", |d| {
                    truthy(d) == Some(!builtin && !attached.contains(&n.name))
                }) && f.any("driver", |d| n.driver == d)
                    && f.any("id", |i| n.id.starts_with(i))
                    && f.any("label", |l| label_matches(&n.labels, l))
                    && f.any("name", |x| n.name.contains(x))
                    && f.any("scope", |s| s == "local")
                    && f.any("type", |t| (t == "builtin") == builtin)
            })
            .collect())
    }
}

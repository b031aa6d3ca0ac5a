//! What `ps` and the Engine API's `GET /containers/json` list: docker's
//! container filters (from `--filter k=v` flags or the API's JSON map), the
//! STATUS text (`Up 5 minutes`, `Exited (0) 2 hours ago`) and docker's
//! human durations — one answer for both front-ends.

use std::collections::BTreeMap;

use crate::container::{Container, Status};
use crate::{Engine, EngineError, Result};

/// docker's `units.HumanDuration`: `Less than a second`, `About a minute`,
/// `3 hours`, `2 weeks`…
pub fn human_duration(secs: i64) -> String {
    let s = secs;
    if s < 1 {
        return "Less than a second".into();
    }
    if s == 1 {
        return "1 second".into();
    }
    if s < 60 {
        return format!("{s} seconds");
    }
    let minutes = s / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (s as f64 / 3600.0).round() as i64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", s / 3600 / 24 / 365)
}

fn seconds_since(t: &str) -> i64 {
    t.parse::<jiff::Timestamp>()
        .map(|t| jiff::Timestamp::now().as_second() - t.as_second())
        .unwrap_or(0)
}

impl Container {
    /// docker's STATUS column.
    pub fn status_text(&self) -> String {
        let st = &self.state;
        match st.status {
            Status::Created => "Created".into(),
            Status::Running => {
                let up = human_duration(seconds_since(&st.started_at));
                match &st.health {
                    Some(h) if h.status == "starting" => format!("Up {up} (health: starting)"),
                    Some(h) => format!("Up {up} ({})", h.status),
                    None => format!("Up {up}"),
                }
            }
            Status::Paused => format!(
                "Up {} (Paused)",
                human_duration(seconds_since(&st.started_at))
            ),
            Status::Restarting => format!(
                "Restarting ({}) {} ago",
                st.exit_code,
                human_duration(seconds_since(&st.finished_at))
            ),
            Status::Exited => format!(
                "Exited ({}) {} ago",
                st.exit_code,
                human_duration(seconds_since(&st.finished_at))
            ),
            Status::Removing => "Removal In Progress".into(),
            Status::Dead => "Dead".into(),
        }
    }

    /// Whether it counts as running for `ps` without `-a`.
    pub fn is_up(&self) -> bool {
        matches!(
            self.state.status,
            Status::Running | Status::Paused | Status::Restarting
        )
    }
}

/// docker's container filters: each key holds values any of which may match
/// (`status=running status=paused`), and every key must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

const KEYS: &[&str] = &[
    "status", "name", "id", "label", "ancestor", "exited", "network", "volume", "health",
];

impl Filters {
    /// From `--filter k=v` flags.
    pub fn from_flags(flags: &[String]) -> Result<Filters> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in flags {
            let (k, v) = f.split_once('=').ok_or_else(|| {
                EngineError::Invalid(format!("bad format of filter (expected name=value): {f}"))
            })?;
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        Filters::checked(m)
    }

    /// From the API's `filters` parameter: `{"status":["running"]}`, or the
    /// older `{"status":{"running":true}}`.
    pub fn from_json(s: &str) -> Result<Filters> {
        Filters::checked(json_map(s)?)
    }

    fn checked(m: BTreeMap<String, Vec<String>>) -> Result<Filters> {
        if let Some(k) = m.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(EngineError::Invalid(format!("invalid filter '{k}'")));
        }
        Ok(Filters(m))
    }

    /// Whether a status filter is given (then stopped containers are listed
    /// without `-a`, as docker does).
    pub fn has_status(&self) -> bool {
        self.0.contains_key("status")
    }

    /// Whether `c` passes: every key; for `label` every value (docker
    /// ANDs labels), for the others any of its values.
    pub fn matches(&self, c: &Container) -> bool {
        self.0.iter().all(|(k, vals)| {
            let one = |v: &String| match k.as_str() {
                "status" => c.state.status.as_str() == v,
                "name" => c.name.contains(v.trim_start_matches('/')),
                "id" => c.id.starts_with(v.as_str()),
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => c.config.labels.get(lk).is_some_and(|x| x == lv),
                    None => c.config.labels.contains_key(v),
                },
                "ancestor" => c.config.image == *v || c.image_id.contains(v.as_str()),
                "exited" => c.state.status == Status::Exited && c.state.exit_code.to_string() == *v,
                "network" => {
                    c.host_config.network_mode == *v || c.network_settings.networks.contains_key(v)
                }
                "health" => {
                    c.state
                        .health
                        .as_ref()
                        .map_or("none", |h| h.status.as_str())
                        == v.as_str()
                }
                "volume" => c
                    .mounts
                    .iter()
                    .any(|m| m.name == *v || m.destination == *v || m.source == *v),
                _ => false,
            };
            if k == "label" {
                vals.iter().all(one)
            } else {
                vals.iter().any(one)
            }
        })
    }
}

/// The API's `filters` JSON as key → values: `{"name":["x"]}` or
/// `{"name":{"x":true}}` (both forms docker clients send).
pub fn json_map(s: &str) -> Result<BTreeMap<String, Vec<String>>> {
    if s.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let v: serde_json::Value = serde_json::from_str(s)
        .map_err(|e| EngineError::Invalid(format!("invalid filter: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| EngineError::Invalid("invalid filter: not an object".into()))?;
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, vals) in obj {
        let list: Vec<String> = match vals {
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            serde_json::Value::Object(o) => o
                .iter()
                .filter(|(_, b)| b.as_bool() == Some(true))
                .map(|(x, _)| x.clone())
                .collect(),
            _ => return Err(EngineError::Invalid(format!("invalid filter '{k}'"))),
        };
        m.insert(k.clone(), list);
    }
    Ok(m)
}

impl Engine {
    /// The containers `ps` lists: running ones, or all with `all` (or with a
    /// status filter), that pass `filters`; newest first.
    pub fn list(&self, all: bool, filters: &Filters) -> Result<Vec<Container>> {
        Ok(self
            .containers()?
            .into_iter()
            .filter(|c| all || filters.has_status() || c.is_up())
            .filter(|c| filters.matches(c))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_docker_s() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(30), "30 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(8 * 60), "8 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
    }

    #[test]
    fn filters_from_flags_and_json_agree() {
        let a = Filters::from_flags(&["status=running".into(), "status=exited".into()]).unwrap();
        let b = Filters::from_json(r#"{"status":["running","exited"]}"#).unwrap();
        let c = Filters::from_json(r#"{"status":{"running":true,"exited":true}}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert!(Filters::from_flags(&["nope=1".into()]).is_err());
        assert!(Filters::from_json(r#"{"status":1}"#).is_err());
        assert!(Filters::from_json("").unwrap().0.is_empty());
    }
}

//! Events (`docker events`, `GET /events`): berth has no daemon to see
//! things happen, so whoever makes them happen — the CLI, the Engine API's
//! helpers, a container's monitor — appends them to one log in the store,
//! `events.log` (a JSON line each, docker's event document; one `write`
//! with `O_APPEND`, so lines from several processes never interleave),
//! kept to a few MiB (the older half is dropped). Readers filter it and
//! follow it.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Engine;

/// The log is cut back when it grows past this.
const MAX_LOG: u64 = 4 << 20;

/// One event, as docker's `events` stream carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `container`, `image`, `volume`, `network`.
    #[serde(rename = "Type")]
    pub typ: String,
    /// `create`, `start`, `die`, `destroy`…
    #[serde(rename = "Action")]
    pub action: String,
    /// What it concerns.
    #[serde(rename = "Actor")]
    pub actor: Actor,
    /// Always `local`.
    pub scope: String,
    /// Unix seconds.
    pub time: i64,
    /// Unix nanoseconds.
    #[serde(rename = "timeNano")]
    pub time_nano: i128,
}

/// The object of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    /// Its id (a container's, a volume's name…).
    #[serde(rename = "ID")]
    pub id: String,
    /// `name`, `image`, `exitCode`, labels…
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// docker's document, with the legacy `status`, `id` and `from` of
    /// container events.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if self.typ == "container" {
            v["status"] = serde_json::json!(self.action);
            v["id"] = serde_json::json!(self.actor.id);
            if let Some(i) = self.actor.attributes.get("image") {
                v["from"] = serde_json::json!(i);
            }
        }
        v
    }
}

fn log_path(root: &Path) -> PathBuf {
    root.join("events.log")
}

/// Keeps the newer half of a log grown past [`MAX_LOG`] (under the lock
/// file beside it; a lost event at the cut is acceptable, a torn line is
/// not: the cut is at a line start).
fn trim(path: &Path) {
    let lock = path.with_extension("lock");
    let Ok(l) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
    else {
        return;
    };
    if l.lock().is_err() {
        return;
    }
    let Ok(mut f) = std::fs::File::open(path) else {
        return;
    };
    let len = f.metadata().map_or(0, |m| m.len());
    if len <= MAX_LOG {
        return;
    }
    let _ = f.seek(std::io::SeekFrom::Start(len / 2));
    let mut rest = Vec::new();
    let _ = f.read_to_end(&mut rest);
    let start = rest
        .iter()
        .position(|&b| b == b'\n')
        .map_or(rest.len(), |i| i + 1);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, &rest[start..]).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

impl Engine {
    /// Records an event (best effort: an event that cannot be written is
    /// not worth failing the operation for).
    pub fn event(&self, typ: &str, action: &str, id: &str, attributes: BTreeMap<String, String>) {
        let now = jiff::Timestamp::now();
        let e = Event {
            typ: typ.into(),
            action: action.into(),
            actor: Actor {
                id: id.into(),
                attributes,
            },
            scope: "local".into(),
            time: now.as_second(),
            time_nano: now.as_nanosecond(),
        };
        let path = log_path(self.root());
        let mut line = serde_json::to_vec(&e).unwrap_or_default();
        line.push(b'\n');
        use std::os::unix::fs::OpenOptionsExt;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
        {
            let _ = f.write_all(&line);
            if f.metadata().is_ok_and(|m| m.len() > MAX_LOG) {
                trim(&path);
            }
        }
    }

    /// A container event, with the container's name, image and labels as
    /// docker gives them.
    pub fn container_event(&self, c: &crate::Container, action: &str, extra: &[(&str, String)]) {
        let mut a: BTreeMap<String, String> = c.config.labels.clone();
        a.insert("name".into(), c.name.clone());
        a.insert("image".into(), c.config.image.clone());
        for (k, v) in extra {
            a.insert((*k).to_string(), v.clone());
        }
        self.event("container", action, &c.id, a);
    }

    /// An image event (`pull`, `push`, `tag`, `untag`, `delete`, `load`,
    /// `save`, `import`): the actor is the name when there is one, else the
    /// id, as dockerd reports them.
    pub fn image_event(&self, action: &str, id: &str, name: Option<&berth_types::Reference>) {
        let mut a = BTreeMap::new();
        let actor = match name {
            Some(n) => {
                a.insert("name".to_string(), n.familiar());
                n.familiar()
            }
            None => {
                a.insert("name".to_string(), id.to_string());
                id.to_string()
            }
        };
        self.event("image", action, &actor, a);
    }

    /// Reads the log and follows it: every event from `since` (Unix
    /// nanoseconds; without it, only what happens from now) that passes
    /// `filters`, until `until` passes. `on` gets each event, and `None`
    /// when there was nothing new for a while; it returns false to stop
    /// (its reader went away).
    pub fn follow_events(
        &self,
        since: Option<i128>,
        until: Option<i128>,
        filters: &EventFilters,
        on: &mut dyn FnMut(Option<&Event>) -> bool,
    ) -> std::io::Result<()> {
        let mut f = self.events_log()?;
        if since.is_none() {
            f.seek(std::io::SeekFrom::End(0))?;
        }
        let mut partial = String::new();
        loop {
            let mut more = String::new();
            let _ = f.read_to_string(&mut more);
            partial.push_str(&more);
            while let Some(i) = partial.find('\n') {
                let line: String = partial.drain(..=i).collect();
                let Some(ev) = parse(line.trim_end()) else {
                    continue;
                };
                if since.is_some_and(|s| ev.time_nano < s) || !filters.matches(&ev) {
                    continue;
                }
                if until.is_some_and(|u| ev.time_nano > u) {
                    return Ok(());
                }
                if !on(Some(&ev)) {
                    return Ok(());
                }
            }
            if until.is_some_and(|u| jiff::Timestamp::now().as_nanosecond() > u) || !on(None) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The events log, opened for reading from its start.
    pub fn events_log(&self) -> std::io::Result<std::fs::File> {
        let p = log_path(self.root());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(p)
    }
}

/// Parses one line of the log.
pub fn parse(line: &str) -> Option<Event> {
    serde_json::from_str(line).ok()
}

/// docker's event filters (`type`, `event`, `container`, `image`, `volume`,
/// `network`, `label`): every key must match, any of its values.
#[derive(Debug, Clone, Default)]
pub struct EventFilters(BTreeMap<String, Vec<String>>);

impl EventFilters {
    /// From `--filter key=value` flags.
    pub fn from_flags(flags: &[String]) -> crate::Result<EventFilters> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in flags {
            let (k, v) = f.split_once('=').ok_or_else(|| {
                crate::EngineError::Invalid(format!(
                    "bad format of filter (expected name=value): {f}"
                ))
            })?;
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        Ok(EventFilters(m))
    }

    /// From the API's `filters` JSON.
    pub fn from_json(s: &str) -> crate::Result<EventFilters> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let v: serde_json::Value = serde_json::from_str(s)
            .map_err(|e| crate::EngineError::Invalid(format!("invalid filter: {e}")))?;
        let mut m = BTreeMap::new();
        for (k, vals) in v.as_object().into_iter().flatten() {
            let list: Vec<String> = match vals {
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                serde_json::Value::Object(o) => o.keys().cloned().collect(),
                _ => Vec::new(),
            };
            m.insert(k.clone(), list);
        }
        Ok(EventFilters(m))
    }

    /// Whether `e` passes.
    pub fn matches(&self, e: &Event) -> bool {
        self.0.iter().all(|(k, vals)| {
            vals.iter().any(|v| match k.as_str() {
                "type" => e.typ == *v,
                "event" => e.action == *v || e.action.split(':').next() == Some(v.as_str()),
                "container" => {
                    e.typ == "container"
                        && (e.actor.id.starts_with(v.as_str())
                            || e.actor.attributes.get("name") == Some(v))
                }
                "image" => e.actor.attributes.get("image") == Some(v) || e.actor.id == *v,
                "volume" => e.typ == "volume" && e.actor.id == *v,
                "network" => {
                    e.typ == "network"
                        && (e.actor.id == *v || e.actor.attributes.get("name") == Some(v))
                }
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => e.actor.attributes.get(lk).is_some_and(|x| x == lv),
                    None => e.actor.attributes.contains_key(v),
                },
                _ => false,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_appended_read_and_filtered() {
        let t = tempfile::tempdir().unwrap();
        let e = Engine::open(t.path()).unwrap();
        let mut a = BTreeMap::new();
        a.insert("name".into(), "web".into());
        a.insert("image".into(), "busybox".into());
        e.event("container", "start", "abc", a.clone());
        e.event("volume", "create", "data", BTreeMap::new());
        let mut s = String::new();
        e.events_log().unwrap().read_to_string(&mut s).unwrap();
        let evs: Vec<Event> = s.lines().filter_map(parse).collect();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].to_json()["status"], "start");
        assert_eq!(evs[0].to_json()["from"], "busybox");
        let f = EventFilters::from_json(r#"{"type":["container"],"container":["web"]}"#).unwrap();
        assert!(f.matches(&evs[0]) && !f.matches(&evs[1]));
        let f = EventFilters::from_json(r#"{"event":["create"]}"#).unwrap();
        assert!(!f.matches(&evs[0]) && f.matches(&evs[1]));
    }
}

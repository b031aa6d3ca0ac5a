//! Builder flags (`--name=value`, `--name`), checked against what each
//! instruction allows, with BuildKit's error wording; and Go-style durations for
//! HEALTHCHECK (`1m30s`).

use std::collections::BTreeMap;

/// What a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--x` or `--x=true|false`.
    Bool,
    /// `--x=value`, once.
    Str,
    /// `--x=value`, repeatable.
    Multi,
}

/// Every flag some instruction takes.
const KNOWN: &[&str] = &[
    "checksum",
    "chmod",
    "chown",
    "device",
    "exclude",
    "from",
    "interval",
    "keep-git-dir",
    "link",
    "mount",
    "network",
    "parents",
    "platform",
    "retries",
    "security",
    "start-interval",
    "start-period",
    "timeout",
    "unpack",
];

/// Docker's `unknown flag: x`, saying more when it can: the flag belongs to
/// another instruction, or it is a typo of one this instruction takes.
fn unknown(name: &str, allowed: &[(&str, Kind)], inst: &str) -> String {
    if KNOWN.contains(&name) {
        return format!("unknown flag: {name} (the --{name} flag is not allowed on {inst})");
    }
    let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
    match super::suggest::closest(name, &names) {
        Some(s) => format!("unknown flag: {name} (did you mean --{s}?)"),
        None => format!("unknown flag: {name}"),
    }
}

/// Parsed flags.
#[derive(Debug, Default)]
pub struct Flags {
    values: BTreeMap<String, Vec<String>>,
}

impl Flags {
    /// Parses `raw` (`--from=x`) against `allowed`.
    pub fn parse(raw: &[String], allowed: &[(&str, Kind)], inst: &str) -> Result<Flags, String> {
        let mut f = Flags::default();
        for r in raw {
            let Some(body) = r.strip_prefix("--") else {
                return Err(format!("{inst}: arguments must start with '--': {r}"));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some((_, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                return Err(unknown(name, allowed, inst));
            };
            let v = match (kind, value) {
                (Kind::Bool, None) => "true".to_string(),
                (Kind::Bool, Some(v)) => {
                    let l = v.to_ascii_lowercase();
                    if l != "true" && l != "false" {
                        return Err(format!("expecting boolean value for flag {name}, not: {v}"));
                    }
                    l
                }
                (_, None) => return Err(format!("missing a value on flag: {name}")),
                (_, Some(v)) => v.to_string(),
            };
            let e = f.values.entry(name.to_string()).or_default();
            if *kind != Kind::Multi && !e.is_empty() {
                return Err(format!("duplicate flag specified: {name}"));
            }
            e.push(v);
        }
        Ok(f)
    }

    /// A string flag.
    pub fn str(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.first().cloned())
    }

    /// A repeatable flag.
    pub fn multi(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    /// A bool flag (false when absent).
    pub fn bool(&self, name: &str) -> bool {
        self.opt_bool(name).unwrap_or(false)
    }

    /// A bool flag, None when absent.
    pub fn opt_bool(&self, name: &str) -> Option<bool> {
        self.str(name).map(|v| v == "true")
    }
}

/// Go's `time.ParseDuration`, in nanoseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * mult;
    }
    let v = total.round() as i64;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(5_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("x"), None);
    }

    #[test]
    fn flag_rules() {
        let allowed = [
            ("from", Kind::Str),
            ("link", Kind::Bool),
            ("mount", Kind::Multi),
        ];
        let f = Flags::parse(
            &[
                "--from=a".into(),
                "--link".into(),
                "--mount=x".into(),
                "--mount=y".into(),
            ],
            &allowed,
            "COPY",
        )
        .unwrap();
        assert_eq!(f.str("from").as_deref(), Some("a"));
        assert!(f.bool("link"));
        assert_eq!(f.multi("mount"), vec!["x", "y"]);
        assert_eq!(
            Flags::parse(&["--nope".into()], &allowed, "COPY").unwrap_err(),
            "unknown flag: nope"
        );
        assert!(Flags::parse(&["--from".into()], &allowed, "COPY").is_err());
        assert!(Flags::parse(&["--from=a".into(), "--from=b".into()], &allowed, "COPY").is_err());
        assert!(Flags::parse(&["--link=maybe".into()], &allowed, "COPY").is_err());
    }
}

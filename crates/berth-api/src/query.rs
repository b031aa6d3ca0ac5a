//! A request's query parameters, read as dockerd reads them (`1`/`true`
//! are true, a missing one takes its default).

use std::collections::BTreeMap;

use crate::ApiError;

/// The parameters of one request (the last value of a repeated name wins,
/// except through [`Query::all`]).
#[derive(Debug, Clone, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses `a=1&b=x`.
    pub fn parse(q: Option<&str>) -> Query {
        Query {
            pairs: form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// The value of `k`.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `k`.
    pub fn all(&self, k: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// docker's boolean: `1`, `true`, `True` (anything else false).
    pub fn bool(&self, k: &str) -> bool {
        matches!(self.get(k), Some("1" | "true" | "True" | "TRUE"))
    }

    /// An integer, or `default` when absent; a malformed one is 400.
    pub fn int(&self, k: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(k) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid {k} value {v:?}"))),
        }
    }

    /// A JSON object of strings (`buildargs`, `labels`).
    pub fn json_map(&self, k: &str) -> Result<BTreeMap<String, String>, ApiError> {
        match self.get(k) {
            None | Some("") => Ok(BTreeMap::new()),
            Some(v) => serde_json::from_str(v)
                .map_err(|e| ApiError::bad_request(format!("invalid {k}: {e}"))),
        }
    }
}

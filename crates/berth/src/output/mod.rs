//! How berth prints: docker's tables (Go tabwriter with min width 10, padding 3),
//! go-units human sizes (`4.26MB`) and durations (`8 minutes ago`), `--format`
//! templates and `--format json` lines.

pub mod buildview;
pub mod progress;
pub mod template;

use std::io::Write;

use serde_json::Value;

use self::template::Template;

/// A docker-style table: header row then rows, columns aligned by a tabwriter.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            rows: vec![headers.iter().map(|s| s.to_string()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints to stdout.
    pub fn print(&self) -> std::io::Result<()> {
        let mut tw = tabwriter::TabWriter::new(std::io::stdout().lock())
            .minwidth(7) // Go's minwidth 10 includes the padding; this crate adds it after
            .padding(3);
        for r in &self.rows {
            writeln!(tw, "{}", r.join("\t"))?;
        }
        tw.flush()
    }
}

/// How a listing command should print.
pub enum Format {
    /// The default table.
    Table,
    /// `table {{.A}}\t{{.B}}`: a custom table.
    CustomTable(Template, Vec<String>),
    /// One template rendering per item.
    Template(Template),
    /// `json`: one JSON object per line.
    Json,
}

impl Format {
    /// Parses a `--format` value.
    pub fn parse(f: Option<&str>) -> anyhow::Result<Format> {
        Ok(match f {
            None | Some("") | Some("table") => Format::Table,
            Some("json") => Format::Json,
            Some(t) if t.starts_with("table ") => {
                let body = t["table ".len()..].replace("\\t", "\t");
                let headers = body.split('\t').map(|c| header_of(c.trim())).collect();
                Format::CustomTable(Template::parse(&body)?, headers)
            }
            Some(t) => Format::Template(Template::parse(
                &t.replace("\\t", "\t").replace("\\n", "\n"),
            )?),
        })
    }
}

/// `{{.CreatedSince}}` → `CREATED`, as docker names custom table columns.
fn header_of(cell: &str) -> String {
    let name = cell
        .trim_start_matches("{{")
        .trim_end_matches("}}")
        .trim()
        .trim_start_matches('.');
    match name {
        "ID" => "IMAGE ID".into(),
        "CreatedSince" | "CreatedAt" => "CREATED".into(),
        other => {
            let mut out = String::new();
            for (i, ch) in other.chars().enumerate() {
                if i > 0 && ch.is_uppercase() {
                    out.push(' ');
                }
                out.extend(ch.to_uppercase());
            }
            out
        }
    }
}

/// Prints `items` (JSON objects with docker's field names) in `format`; `table`
/// builds the default table.
pub fn print_items(
    format: &Format,
    items: &[Value],
    table: impl FnOnce(&[Value]) -> Table,
) -> anyhow::Result<()> {
    match format {
        Format::Table => table(items).print()?,
        Format::Json => {
            for i in items {
                println!("{}", serde_json::to_string(i)?);
            }
        }
        Format::Template(t) => {
            for i in items {
                println!("{}", t.render(i)?);
            }
        }
        Format::CustomTable(t, headers) => {
            let mut tab = Table::new(&headers.iter().map(String::as_str).collect::<Vec<_>>());
            for i in items {
                tab.row(t.render(i)?.split('\t').map(str::to_string).collect());
            }
            tab.print()?;
        }
    }
    Ok(())
}

/// A prune report section as docker prints it: `Deleted Containers:`, one
/// item a line, a blank line; nothing when there is nothing.
pub fn print_deleted(what: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    println!("Deleted {what}:");
    for i in items {
        println!("{i}");
    }
    println!();
}

/// go-units `HumanSizeWithPrecision(size, 3)`: decimal units, 3 significant
/// digits (what docker's `images`, `ps -s` and `history` print).
pub fn human_size(size: u64) -> String {
    human_size_precision(size, 3)
}

/// go-units `HumanSize`: 4 significant digits (what docker's `system df`
/// prints: `1.983MB` where `images` says `1.98MB`).
pub fn human_size4(size: u64) -> String {
    human_size_precision(size, 4)
}

fn human_size_precision(size: u64, precision: i32) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut s = size as f64;
    let mut i = 0;
    while s >= 1000.0 && i < UNITS.len() - 1 {
        s /= 1000.0;
        i += 1;
    }
    format!("{}{}", go_g(s, precision), UNITS[i])
}

/// Go's `%.<precision>g` for the values human sizes produce (0 ≤ v < 1000).
fn go_g(v: f64, precision: i32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = v.abs().log10().floor() as i32 + 1;
    let decimals = (precision - digits).max(0) as usize;
    let mut s = format!("{v:.decimals$}");
    // Rounding may reach 1000 (999.95 → "1000"): with 3 digits Go prints
    // 1e+03 (with 4, 1000 fits).
    if precision == 3 && (s.trim_end_matches(".0") == "1000" || s.starts_with("1000")) {
        return "1e+03".into();
    }
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    s
}

/// go-units `HumanDuration`.
pub use berth_engine::list::human_duration;

/// `8 minutes ago` for an RFC 3339 time (`N/A` when absent or unparsable).
pub fn since(rfc3339: Option<&str>) -> String {
    match rfc3339.and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(t) => {
            let secs = jiff::Timestamp::now().as_second() - t.as_second();
            format!("{} ago", human_duration(secs))
        }
        None => "N/A".into(),
    }
}

/// Docker's `CreatedAt` rendering: `2026-11-27 23:57:44 +0000 UTC`.
pub fn created_at(rfc3339: Option<&str>) -> String {
    match rfc3339.and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(t) => t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC").to_string(),
        None => String::new(),
    }
}

/// Shortens `s` to `max` characters with a trailing `…` (docker's Ellipsis).
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `--quiet`'s output: each row's `ID`, one a line.
pub fn print_ids(items: &[serde_json::Value]) {
    for i in items {
        println!("{}", i["ID"].as_str().unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_go_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(7), "7B");
        assert_eq!(human_size(811), "811B");
        assert_eq!(human_size(1234), "1.23kB");
        assert_eq!(human_size(4_261_550), "4.26MB");
        assert_eq!(human_size(96_700_000), "96.7MB");
        assert_eq!(human_size(22_800_000), "22.8MB");
        assert_eq!(human_size(1_010_000), "1.01MB");
        assert_eq!(human_size(4_000_000), "4MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(1_500_000_000), "1.5GB");
        // go-units HumanSize (docker's `system df`): 4 digits.
        assert_eq!(human_size4(1_983_000), "1.983MB");
        assert_eq!(human_size4(0), "0B");
        assert_eq!(human_size4(999_960), "1000kB");
        assert_eq!(human_size4(123_456_789), "123.5MB");
    }

    #[test]
    fn durations_match_go_units() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(30), "30 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(8 * 60), "8 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 7 * 86400), "3 weeks");
        assert_eq!(human_duration(400 * 86400), "13 months");
    }

    #[test]
    fn headers_and_ellipsis() {
        assert_eq!(header_of("{{.Repository}}"), "REPOSITORY");
        assert_eq!(header_of("{{.ID}}"), "IMAGE ID");
        assert_eq!(header_of("{{.CreatedBy}}"), "CREATED BY");
        assert_eq!(ellipsis("abcdef", 4), "abc…");
        assert_eq!(ellipsis("abc", 4), "abc");
    }
}

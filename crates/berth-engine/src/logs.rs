//! docker's json-file log driver: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2026-…Z"}`, appended by the
//! container's monitor; and the reader behind `logs` (`--tail`, `--since`,
//! `--timestamps`, `--follow`).

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One log record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The text, with its newline.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 nanoseconds.
    pub time: String,
}

/// Splits a stream into lines and appends them as records.
pub struct Writer {
    file: std::fs::File,
    stream: &'static str,
    partial: Vec<u8>,
}

impl Writer {
    /// Appends to `path` for `stream`.
    pub fn open(path: &Path, stream: &'static str) -> std::io::Result<Writer> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Writer {
            file,
            stream,
            partial: Vec::new(),
        })
    }

    /// Feeds bytes; complete lines are written.
    pub fn feed(&mut self, data: &[u8]) {
        self.partial.extend_from_slice(data);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            self.write(&line);
        }
        // Very long lines are split as docker splits them (16 KiB).
        while self.partial.len() >= 16 * 1024 {
            let chunk: Vec<u8> = self.partial.drain(..16 * 1024).collect();
            self.write(&chunk);
        }
    }

    /// Writes what is left without a newline.
    pub fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let p = std::mem::take(&mut self.partial);
            self.write(&p);
        }
    }

    fn write(&mut self, line: &[u8]) {
        let e = Entry {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: self.stream.to_string(),
            time: crate::now(),
        };
        let mut s = serde_json::to_vec(&e).expect("entry serialises");
        s.push(b'\n');
        let _ = self.file.write_all(&s);
    }
}

/// Options of [`read`].
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Only the last n lines.
    pub tail: Option<usize>,
    /// Only records at or after this time (RFC 3339).
    pub since: Option<jiff::Timestamp>,
    /// Only records before this time.
    pub until: Option<jiff::Timestamp>,
    /// Prefix each line with its time.
    pub timestamps: bool,
    /// `--details`: each line after the record's attributes and a space
    /// (berth's records carry none, so the space alone, as docker prints
    /// lines without attributes).
    pub details: bool,
}

fn emit(e: &Entry, opts: &ReadOptions, out: &mut dyn Write, err: &mut dyn Write) -> bool {
    if let Ok(t) = e.time.parse::<jiff::Timestamp>()
        && (opts.since.is_some_and(|s| t < s) || opts.until.is_some_and(|u| t >= u))
    {
        return true;
    }
    let w: &mut dyn Write = if e.stream == "stderr" { err } else { out };
    let details = if opts.details { " " } else { "" };
    let r = if opts.timestamps {
        write!(w, "{} {details}{}", e.time, e.log)
    } else {
        write!(w, "{details}{}", e.log)
    };
    r.is_ok() && w.flush().is_ok()
}

/// Prints the log at `path`; returns the offset read up to (for following).
pub fn read(
    path: &Path,
    opts: &ReadOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u64> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let entries: Vec<Entry> = BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    let start = opts
        .tail
        .map(|n| entries.len().saturating_sub(n))
        .unwrap_or(0);
    for e in &entries[start..] {
        if !emit(e, opts, out, err) {
            break;
        }
    }
    Ok(len)
}

/// Follows the log from `offset` until `done()` says the container stopped.
pub fn follow(
    path: &Path,
    mut offset: u64,
    opts: &ReadOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
    done: &dyn Fn() -> bool,
) -> std::io::Result<()> {
    let mut pending = String::new();
    loop {
        let finished = done();
        if let Ok(mut f) = std::fs::File::open(path) {
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = String::new();
            let n = f.read_to_string(&mut buf)?;
            offset += n as u64;
            pending.push_str(&buf);
            while let Some(i) = pending.find('\n') {
                let line: String = pending.drain(..=i).collect();
                if let Ok(e) = serde_json::from_str::<Entry>(line.trim_end())
                    && !emit(&e, opts, out, err)
                {
                    return Ok(());
                }
            }
        }
        if finished {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `--since` / `--until` values as docker's CLI reads them: RFC 3339
/// times, dates and times without a zone (`2020-01-01`,
/// `2020-01-01T10:00:00`, in the local zone), Unix seconds, or relative
/// (`10m`, `1h30m`).
pub fn parse_since(s: &str) -> Option<jiff::Timestamp> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t);
    }
    let local = |dt: jiff::civil::DateTime| jiff::tz::TimeZone::system().to_timestamp(dt).ok();
    if s.contains('-') {
        if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
            return local(dt);
        }
        if let Ok(d) = s.parse::<jiff::civil::Date>() {
            return local(d.to_datetime(jiff::civil::Time::midnight()));
        }
    }
    if let Ok(secs) = s.parse::<f64>() {
        return jiff::Timestamp::from_second(secs as i64).ok();
    }
    let mut total = 0i64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            let n: i64 = num.parse().ok()?;
            num.clear();
            total += n * match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                _ => return None,
            };
        }
    }
    if !num.is_empty() {
        return None;
    }
    // Relative to this instant, not to its second: `--until 0s` covers
    // what happened a moment ago.
    jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(total))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x-json.log");
        let mut w = Writer::open(&p, "stdout").unwrap();
        w.feed(b"one\ntw");
        w.feed(b"o\nthree");
        w.flush_partial();
        let mut e = Writer::open(&p, "stderr").unwrap();
        e.feed(b"oops\n");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        read(&p, &ReadOptions::default(), &mut out, &mut err).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\nthree");
        assert_eq!(String::from_utf8(err).unwrap(), "oops\n");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        read(
            &p,
            &ReadOptions {
                tail: Some(2),
                ..Default::default()
            },
            &mut out,
            &mut err,
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "three");
        let first: Entry =
            serde_json::from_str(std::fs::read_to_string(&p).unwrap().lines().next().unwrap())
                .unwrap();
        assert_eq!(first.stream, "stdout");
        assert!(first.time.ends_with('Z'));
    }

    #[test]
    fn since_forms() {
        assert!(parse_since("10m").is_some());
        assert!(parse_since("2026-01-01T00:00:00Z").is_some());
        assert!(parse_since("1700000000").is_some());
        assert!(parse_since("bogus").is_none());
        // docker's zone-less forms, in the local zone.
        let day = parse_since("2020-01-01").unwrap();
        let noon = parse_since("2020-01-01T12:00:00").unwrap();
        assert_eq!(noon.as_second() - day.as_second(), 12 * 3600);
        assert!(parse_since("2020-01-01T12:00").is_some());
        assert!(parse_since("2020-13-01").is_none());
    }
}

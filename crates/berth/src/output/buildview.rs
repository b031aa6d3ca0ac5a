//! The build's progress as BuildKit shows it, chosen by `--progress`:
//! `plain` (the builder's `#N` lines as they come), `tty` (a view redrawn
//! in place on the terminal: `[+] Building 1.2s (3/5)`, one line per step
//! with its time, the running steps' last log lines under them, finished
//! steps collapsed to their line), `rawjson` (one SolveStatus-shaped JSON
//! object per event, as `buildx --progress rawjson` prints them) and
//! `quiet`. The builder speaks only the plain protocol (`#N name`,
//! `#N 0.123 text`, `#N DONE 0.1s`, `#N CACHED`, `#N ERROR …`); the other
//! views are parsed from it, so the builder knows nothing of terminals.
//!
//! Hand-written: indicatif draws bars, not BuildKit's tree of steps with
//! their logs, and the view is small.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many log lines a running step shows (BuildKit shows 6).
const LOG_LINES: usize = 6;

/// A `--progress` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The `#N` lines.
    Plain,
    /// The live view.
    Tty,
    /// JSON events.
    RawJson,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// Parses `--progress` (`auto`: tty when stderr is a terminal).
    pub fn parse(s: &str) -> anyhow::Result<Mode> {
        Ok(match s {
            "auto" | "" => {
                if std::io::stderr().is_terminal() {
                    Mode::Tty
                } else {
                    Mode::Plain
                }
            }
            "plain" => Mode::Plain,
            "tty" => Mode::Tty,
            "rawjson" => Mode::RawJson,
            "quiet" => Mode::Quiet,
            other => anyhow::bail!(
                "invalid progress mode {other:?}: use auto, plain, tty, rawjson or quiet"
            ),
        })
    }
}

/// The writer the builder gets for `mode`: its lines go to stderr as the
/// mode shows them. Dropping it draws the final view.
pub fn writer(mode: Mode) -> Box<dyn Write + Send> {
    match mode {
        Mode::Quiet => Box::new(std::io::sink()),
        Mode::Plain => Box::new(std::io::stderr()),
        Mode::RawJson => Box::new(Lines::new(Sink::Json(Json::default()))),
        Mode::Tty => {
            let view = Arc::new(Mutex::new(View::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let ticker = {
                let (view, stop) = (view.clone(), stop.clone());
                std::thread::spawn(move || {
                    // Signals (SIGCHLD of a RUN step) are the builder's to
                    // take through its signalfd, never this thread's.
                    berth_runtime::wait::block_signals();
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(120));
                        if let Ok(mut v) = view.lock() {
                            v.draw(false);
                        }
                    }
                })
            };
            Box::new(Lines::new(Sink::Tty {
                view,
                stop,
                ticker: Some(ticker),
            }))
        }
    }
}

/// One parsed line of the plain protocol.
#[derive(Debug, PartialEq)]
enum Event<'a> {
    Step(usize, &'a str),
    Log(usize, &'a str),
    Done(usize, f64),
    Cached(usize),
    Error(usize, &'a str),
    Other(&'a str),
}

fn parse(line: &str) -> Event<'_> {
    let Some(rest) = line.strip_prefix('#') else {
        return Event::Other(line);
    };
    let (n, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let Ok(n) = n.parse::<usize>() else {
        return Event::Other(line);
    };
    if let Some(d) = rest.strip_prefix("DONE ") {
        return Event::Done(n, d.trim_end_matches('s').parse().unwrap_or(0.0));
    }
    if rest == "CACHED" {
        return Event::Cached(n);
    }
    if let Some(e) = rest.strip_prefix("ERROR") {
        return Event::Error(n, e.trim_start_matches(':').trim());
    }
    // `#N 0.123 text`: a log line at a time into the step.
    if let Some((t, text)) = rest.split_once(' ')
        && t.contains('.')
        && t.parse::<f64>().is_ok()
    {
        return Event::Log(n, text);
    }
    if rest.contains('.') && rest.parse::<f64>().is_ok() {
        return Event::Log(n, "");
    }
    Event::Step(n, rest)
}

/// Splits the builder's bytes into lines for a sink.
struct Lines {
    partial: Vec<u8>,
    sink: Sink,
}

enum Sink {
    Json(Json),
    Tty {
        view: Arc<Mutex<View>>,
        stop: Arc<AtomicBool>,
        ticker: Option<std::thread::JoinHandle<()>>,
    },
}

impl Lines {
    fn new(sink: Sink) -> Lines {
        Lines {
            partial: Vec::new(),
            sink,
        }
    }

    fn line(&mut self, l: &str) {
        match &mut self.sink {
            Sink::Json(j) => j.event(parse(l)),
            Sink::Tty { view, .. } => {
                if let Ok(mut v) = view.lock() {
                    v.event(parse(l));
                    v.draw(false);
                }
            }
        }
    }
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let l: Vec<u8> = self.partial.drain(..=i).collect();
            self.line(&String::from_utf8_lossy(&l[..l.len() - 1]));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            let l = String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned();
            self.line(&l);
        }
        if let Sink::Tty { view, stop, ticker } = &mut self.sink {
            stop.store(true, Ordering::Relaxed);
            if let Some(t) = ticker.take() {
                let _ = t.join();
            }
            if let Ok(mut v) = view.lock() {
                v.draw(true);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Running,
    Done(f64),
    Cached,
    Error,
}

struct Step {
    n: usize,
    name: String,
    start: Instant,
    state: State,
    logs: VecDeque<String>,
}

/// The live view's state and what it last drew.
struct View {
    start: Instant,
    steps: Vec<Step>,
    notes: Vec<String>,
    drawn: usize,
    last_draw: Option<Instant>,
    finished: bool,
}

impl View {
    fn new() -> View {
        View {
            start: Instant::now(),
            steps: Vec::new(),
            notes: Vec::new(),
            drawn: 0,
            last_draw: None,
            finished: false,
        }
    }

    fn step(&mut self, n: usize) -> Option<&mut Step> {
        self.steps.iter_mut().rev().find(|s| s.n == n)
    }

    fn event(&mut self, e: Event<'_>) {
        match e {
            Event::Step(n, name) => match self.step(n) {
                // A second line for a known step (`writing image …`) is a log line.
                Some(s) => push_log(s, name),
                None => self.steps.push(Step {
                    n,
                    name: name.to_string(),
                    start: Instant::now(),
                    state: State::Running,
                    logs: VecDeque::new(),
                }),
            },
            Event::Log(n, text) => {
                if let Some(s) = self.step(n) {
                    push_log(s, text);
                }
            }
            Event::Done(n, d) => {
                if let Some(s) = self.step(n) {
                    s.state = State::Done(d);
                }
            }
            Event::Cached(n) => {
                if let Some(s) = self.step(n) {
                    s.state = State::Cached;
                }
            }
            Event::Error(n, msg) => {
                if let Some(s) = self.step(n) {
                    s.state = State::Error;
                    push_log(s, msg);
                }
            }
            Event::Other(l) => self.notes.push(l.to_string()),
        }
    }

    /// Redraws in place (at most every 50 ms unless `last`, which draws the
    /// finished view and leaves it on the screen).
    fn draw(&mut self, last: bool) {
        if self.finished {
            return;
        }
        if !last
            && self
                .last_draw
                .is_some_and(|t| t.elapsed() < Duration::from_millis(50))
        {
            return;
        }
        self.last_draw = Some(Instant::now());
        let width = terminal_width();
        let done = self
            .steps
            .iter()
            .filter(|s| s.state != State::Running)
            .count();
        let mut lines = vec![format!(
            "[+] Building {:.1}s ({done}/{}){}",
            self.start.elapsed().as_secs_f64(),
            self.steps.len(),
            if last { " FINISHED" } else { "" }
        )];
        for s in &self.steps {
            let (prefix, secs) = match s.state {
                State::Running => ("", s.start.elapsed().as_secs_f64()),
                State::Done(d) => ("", d),
                State::Cached => ("CACHED ", 0.0),
                State::Error => ("ERROR ", s.start.elapsed().as_secs_f64()),
            };
            let time = format!("{secs:.1}s");
            let head = format!(" => {prefix}{}", s.name);
            lines.push(pad(&head, &time, width));
            // Running (or failed) steps show their last lines; done ones collapse.
            if (s.state == State::Running && !last) || s.state == State::Error {
                for l in &s.logs {
                    lines.push(clip(&format!(" => => # {l}"), width));
                }
            }
        }
        let mut out = String::new();
        for _ in 0..self.drawn {
            out.push_str("\x1b[1A\x1b[2K");
        }
        for l in &lines {
            out.push_str(l);
            out.push('\n');
        }
        if last {
            for n in &self.notes {
                out.push_str(n);
                out.push('\n');
            }
            self.finished = true;
        }
        self.drawn = lines.len();
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(out.as_bytes());
        let _ = e.flush();
    }
}

fn push_log(s: &mut Step, text: &str) {
    if s.logs.len() == LOG_LINES {
        s.logs.pop_front();
    }
    s.logs.push_back(text.to_string());
}

/// The terminal's width (stderr), 80 when unknown.
fn terminal_width() -> usize {
    rustix::termios::tcgetwinsize(std::io::stderr())
        .ok()
        .map(|w| w.ws_col as usize)
        .filter(|w| *w > 20)
        .unwrap_or(80)
}

/// `text` cut to `width` columns (a line that wraps would break the redraw).
fn clip(text: &str, width: usize) -> String {
    text.chars().take(width.saturating_sub(1)).collect()
}

/// `head` and `tail` on one line of `width`, the head cut to fit.
fn pad(head: &str, tail: &str, width: usize) -> String {
    let room = width.saturating_sub(tail.len() + 2);
    let head: String = head.chars().take(room).collect();
    let gap = room.saturating_sub(head.chars().count()) + 1;
    format!("{head}{}{tail}", " ".repeat(gap))
}

/// `rawjson`: SolveStatus-shaped objects, one per line.
#[derive(Default)]
struct Json {
    started: std::collections::BTreeMap<usize, (String, String)>,
}

impl Json {
    fn digest(n: usize) -> String {
        berth_types::Digest::sha256_of(format!("berth-vertex-{n}").as_bytes()).to_string()
    }

    fn event(&mut self, e: Event<'_>) {
        use base64::Engine as _;
        let now = jiff::Timestamp::now().to_string();
        let v = match e {
            Event::Step(n, name) => match self.started.entry(n) {
                std::collections::btree_map::Entry::Occupied(_) => {
                    serde_json::json!({"logs": [{"vertex": Self::digest(n), "stream": 1, "data": base64::engine::general_purpose::STANDARD.encode(format!("{name}\n")), "timestamp": now}]})
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert((name.to_string(), now.clone()));
                    serde_json::json!({"vertexes": [{"digest": Self::digest(n), "name": name, "started": now}]})
                }
            },
            Event::Log(n, text) => {
                serde_json::json!({"logs": [{"vertex": Self::digest(n), "stream": 1, "data": base64::engine::general_purpose::STANDARD.encode(format!("{text}\n")), "timestamp": now}]})
            }
            Event::Done(n, _) | Event::Cached(n) | Event::Error(n, _) => {
                let (name, started) = self.started.get(&n).cloned().unwrap_or_default();
                let mut vx = serde_json::json!({"digest": Self::digest(n), "name": name, "started": started, "completed": now});
                if matches!(e, Event::Cached(_)) {
                    vx["cached"] = true.into();
                }
                if let Event::Error(_, msg) = e {
                    vx["error"] = msg.into();
                }
                serde_json::json!({"vertexes": [vx]})
            }
            Event::Other(l) => {
                serde_json::json!({"warnings": [{"short": base64::engine::general_purpose::STANDARD.encode(l)}]})
            }
        };
        let mut e = std::io::stderr().lock();
        let _ = writeln!(e, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_plain_protocol() {
        assert_eq!(
            parse("#3 [2/2] RUN echo hi"),
            Event::Step(3, "[2/2] RUN echo hi")
        );
        assert_eq!(parse("#3 0.015 hi there"), Event::Log(3, "hi there"));
        assert_eq!(parse("#3 DONE 3.3s"), Event::Done(3, 3.3));
        assert_eq!(parse("#2 CACHED"), Event::Cached(2));
        assert_eq!(parse("#4 ERROR: boom"), Event::Error(4, "boom"));
        assert_eq!(
            parse(" JSONArgsRecommended warning"),
            Event::Other(" JSONArgsRecommended warning")
        );
    }

    #[test]
    fn a_view_collapses_what_is_done() {
        let mut v = View::new();
        for l in [
            "#1 [1/2] FROM x",
            "#1 DONE 0.0s",
            "#2 [2/2] RUN y",
            "#2 0.1 out",
        ] {
            v.event(parse(l));
        }
        assert_eq!(v.steps.len(), 2);
        assert_eq!(v.steps[0].state, State::Done(0.0));
        assert_eq!(v.steps[1].logs, ["out"]);
        // One column short of the width, so the line never wraps.
        assert_eq!(pad(" => a", "1.0s", 20).len(), 19);
    }
}

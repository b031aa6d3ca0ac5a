//! Rendering pull/push progress: per-layer bars with sizes and speed on a tty
//! (indicatif), docker's plain `<id>: <status>` lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use berth_registry::client::Progress;
use berth_types::Digest;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Picks the renderer: docker prints `pull`/`push` progress to stdout, and
/// the implicit pull of `run` to stderr (`to_stderr`), keeping stdout for the
/// container.
pub fn for_terminal(quiet: bool, to_stderr: bool) -> Box<dyn Progress> {
    let tty = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    if quiet {
        Box::new(berth_registry::client::Quiet)
    } else if tty {
        Box::new(Bars::new(to_stderr))
    } else {
        Box::new(Lines { to_stderr })
    }
}

/// Plain lines (not a tty).
pub struct Lines {
    to_stderr: bool,
}

impl Lines {
    fn say(&self, line: &str) {
        if self.to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

impl Progress for Lines {
    fn message(&self, line: &str) {
        self.say(line);
    }
    fn start(&self, _: &Digest, _: u64, _: &str) {}
    fn advance(&self, _: &Digest, _: u64) {}
    fn done(&self, id: &Digest, status: &str) {
        self.say(&format!("{}: {status}", &id.hex()[..12]));
    }
}

/// One bar per layer.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new(to_stderr: bool) -> Self {
        let target = if to_stderr {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::stdout()
        };
        Bars {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, id: &Digest) -> ProgressBar {
        let mut bars = self.bars.lock().expect("bars");
        bars.entry(id.to_string())
            .or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(0));
                b.set_prefix(id.hex()[..12].to_string());
                b.set_style(
                    ProgressStyle::with_template("{prefix}: {msg:<12} [{bar:30}] {bytes:>9}/{total_bytes:<9} {binary_bytes_per_sec}")
                        .expect("template")
                        .progress_chars("=> "),
                );
                b
            })
            .clone()
    }
}

impl Progress for Bars {
    fn message(&self, line: &str) {
        let _ = self.multi.println(line);
    }
    fn start(&self, id: &Digest, total: u64, verb: &str) {
        let b = self.bar(id);
        b.set_length(total);
        b.set_message(verb.to_string());
    }
    fn advance(&self, id: &Digest, n: u64) {
        self.bar(id).inc(n);
    }
    fn reset(&self, id: &Digest, at: u64) {
        self.bar(id).set_position(at);
    }
    fn done(&self, id: &Digest, status: &str) {
        let b = self.bar(id);
        b.set_style(ProgressStyle::with_template("{prefix}: {msg}").expect("template"));
        b.finish_with_message(status.to_string());
    }
}

/// A byte counter for `import`, `load` and `save` on a terminal (stderr):
/// a bar when the size is known, a spinner with bytes and speed when not;
/// `None` when stderr is not a terminal or `quiet` (scripts see nothing).
pub fn byte_bar(label: &str, total: Option<u64>, quiet: bool) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                .expect("template"),
        ),
    };
    bar.set_message(label.to_string());
    Some(bar)
}

//! Golden tests of the parser under `testdata/`:
//! - `parse/<case>/Dockerfile` → `parse/<case>/expected.json`, the dump that
//!   `berth build --print` shows (stages, typed instructions, warnings);
//! - `errors/<case>/Dockerfile` → `errors/<case>/error`, the exact error text;
//! - `expansion.txt`, word expansion (`INPUT<TAB>RESULT` under a fixed env);
//! - `corpus/*.Dockerfile`, real-world styles that must parse.
//!
//! `BERTH_BLESS=1 cargo test -p berth-dockerfile --test golden` rewrites the
//! expected files; review the diff before committing it.

use std::path::{Path, PathBuf};

use berth_dockerfile::instructions::{self, Dockerfile, DockerfileError};
use berth_dockerfile::shell::{Lex, env_lookup};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn cases(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(testdata().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn bless() -> bool {
    std::env::var_os("BERTH_BLESS").is_some()
}

/// Every case under `dir`: `render` turns the parse of its Dockerfile into
/// the text its `file` must hold (or says why the case failed); the text is
/// written under BERTH_BLESS, compared otherwise.
fn check_cases(
    dir: &str,
    file: &str,
    render: impl Fn(Result<Dockerfile, DockerfileError>) -> Result<String, String>,
) {
    let mut failures = Vec::new();
    let all = cases(dir);
    assert!(all.len() >= 15, "{} cases", all.len());
    for case in all {
        let src = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        let got = match render(instructions::parse(&src, "Dockerfile")) {
            Ok(got) => got,
            Err(why) => {
                failures.push(format!("{}: {why}", case.display()));
                continue;
            }
        };
        let want_path = case.join(file);
        if bless() {
            std::fs::write(&want_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&want_path).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{}:\n--- got\n{got}--- want\n{want}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn parse_cases_dump_as_expected() {
    check_cases("parse", "expected.json", |r| match r {
        Ok(df) => Ok(serde_json::to_string_pretty(&df.to_json()).unwrap() + "\n"),
        Err(e) => Err(e.to_string()),
    });
}

#[test]
fn error_cases_fail_with_the_exact_text() {
    check_cases("errors", "error", |r| match r {
        Ok(_) => Err("parsed, should fail".into()),
        Err(e) => Ok(format!("{e}\n")),
    });
}

#[test]
fn expansion_table() {
    let text = std::fs::read_to_string(testdata().join("expansion.txt")).unwrap();
    let mut env = Vec::new();
    let mut failures = Vec::new();
    let lex = Lex::new('\\');
    let mut n = 0;
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(kv) = line.strip_prefix("env ") {
            env.push(kv.to_string());
            continue;
        }
        let (input, want) = line.split_once('\t').expect("INPUT<TAB>RESULT");
        n += 1;
        let got = match lex.process_word(input, &env_lookup(&env)) {
            Ok(s) => s,
            Err(e) => format!("ERROR: {}", e.msg),
        };
        if got != want {
            failures.push(format!("{input:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(n >= 25);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn corpus_parses_without_error() {
    let all = cases("corpus");
    assert!(all.len() >= 6);
    for f in all {
        let src = std::fs::read_to_string(&f).unwrap();
        let df = instructions::parse(&src, "Dockerfile")
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(!df.stages.is_empty());
        // Every instruction's lines lie inside the file, in order.
        let lines = src.lines().count();
        let mut last = 0;
        for s in &df.stages {
            for l in std::iter::once(&s.from).chain(&s.commands) {
                assert!(l.node.start_line > last && l.node.end_line <= lines);
                last = l.node.end_line;
            }
        }
    }
}

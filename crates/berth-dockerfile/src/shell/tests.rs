//! The lexer against BuildKit's own tables (read from ../shared at test time).

use super::*;

fn testdata(name: &str) -> Option<String> {
    std::fs::read_to_string(tests_support::testdata_dir().join(name)).ok()
}

#[test]
fn envvar_table() {
    let Some(data) = testdata("envVarTest") else {
        panic!("../shared/testdata/buildkit-dockerfile/envVarTest is missing");
    };
    let env: Vec<String> = ["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let get = env_lookup(&env);
    let lex = Lex::new('\\');
    let mut n = 0;
    for line in data.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.splitn(3, '|').collect();
        assert_eq!(parts.len(), 3, "bad line {line:?}");
        let (plat, input, expected) = (parts[0].trim(), parts[1].trim(), parts[2].trim());
        if plat == "W" {
            continue;
        }
        n += 1;
        let got = lex.process_word(input, &get);
        if expected == "error" {
            assert!(got.is_err(), "{input:?} should fail, got {got:?}");
        } else {
            assert_eq!(got.as_deref(), Ok(expected), "input {input:?}");
        }
    }
    assert!(n > 200, "ran {n} cases");
}

#[test]
fn words_table() {
    let data = testdata("wordsTest").expect("../shared/testdata/buildkit-dockerfile/wordsTest");
    let mut env: Vec<String> = Vec::new();
    let lex = Lex::new('\\');
    let mut n = 0;
    for line in data.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            env.push(rest.trim_start_matches(' ').to_string());
            continue;
        }
        let (input, expected) = line.split_once('|').expect("a | in each case");
        let input = input.trim();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        let got = lex.process_words(input, &env_lookup(&env));
        n += 1;
        if expected[0] == "error" {
            assert!(got.is_err(), "{input:?}");
        } else {
            assert_eq!(got.unwrap(), expected, "input {input:?}");
        }
    }
    assert!(n > 20);
}

#[test]
fn reports_used_variables() {
    let env = vec!["A=1".to_string()];
    let e = Lex::new('\\')
        .process("$A ${B:-x}", &env_lookup(&env))
        .unwrap();
    assert_eq!(e.result, "1 x");
    assert!(e.matched.contains("A"));
    assert!(e.unmatched.contains("B"));
}

#[test]
fn backtick_escape() {
    let lex = Lex::new('`');
    assert_eq!(lex.process_word("a`$b", &|_| None).unwrap(), "a$b");
    assert_eq!(lex.process_word("c:\\dir", &|_| None).unwrap(), "c:\\dir");
}

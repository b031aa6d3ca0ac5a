//! The parser against BuildKit's own test data (read from ../shared at test time).

use super::*;
use crate::shell::tests_support::testdata_dir;

#[test]
fn buildkit_testfiles_dump_exactly() {
    let dir = testdata_dir().join("testfiles");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    let mut failures = Vec::new();
    for case in &cases {
        let src = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        let want = std::fs::read_to_string(case.join("result")).unwrap();
        match parse(&src) {
            Ok(ast) => {
                if ast.dump() != want {
                    failures.push(format!(
                        "{}:\n--- want\n{want}--- got\n{}",
                        case.display(),
                        ast.dump()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", case.display())),
        }
    }
    assert_eq!(cases.len(), 33);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn buildkit_negative_testfiles_fail() {
    let dir = testdata_dir().join("testfiles-negative");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let case = e.unwrap().path();
        let src = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        assert!(parse(&src).is_err(), "{} should fail", case.display());
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn line_numbers() {
    let src = std::fs::read_to_string(testdata_dir().join("testfile-line/Dockerfile")).unwrap();
    let ast = parse(&src).unwrap();
    let got: Vec<(usize, usize)> = ast
        .children
        .iter()
        .map(|c| (c.start_line, c.end_line))
        .collect();
    assert_eq!(got, vec![(5, 5), (11, 12), (17, 31)]);
}

#[test]
fn heredocs() {
    let src = "FROM busybox\nRUN <<EOF\necho hi\nEOF\nRUN <<-\"A\" 3<<B cat\n\tx $y\n\tA\nz\nB\nCOPY <<EOF /file\ncontent\nEOF\n";
    let ast = parse(src).unwrap();
    let run = &ast.children[1];
    assert_eq!(run.heredocs.len(), 1);
    assert_eq!(run.heredocs[0].content, "echo hi\n");
    assert!(run.heredocs[0].expand);
    assert_eq!((run.start_line, run.end_line), (2, 4));
    let two = &ast.children[2];
    assert_eq!(two.heredocs.len(), 2);
    assert_eq!(two.heredocs[0].name, "A");
    assert!(!two.heredocs[0].expand, "quoted delimiter");
    assert!(two.heredocs[0].chomp);
    assert_eq!(chomp_heredoc(&two.heredocs[0].content), "x $y\n");
    assert_eq!(two.heredocs[1].fd, 3);
    assert_eq!(two.heredocs[1].content, "z\n");
    let copy = &ast.children[3];
    assert_eq!(copy.heredocs[0].content, "content\n");
    assert_eq!(copy.args, vec!["<<EOF", "/file"]);
    let bad = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
    assert_eq!(bad.msg, "unterminated heredoc");
}

#[test]
fn directives_only_at_top() {
    let ast =
        parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM a\nRUN echo `\n  hi\n").unwrap();
    assert_eq!(ast.escape, '`');
    assert_eq!(ast.directive("syntax"), Some("docker/dockerfile:1"));
    assert_eq!(ast.children[1].args, vec!["echo   hi"]);
    let ast = parse("FROM a\n# escape=`\nRUN echo \\\n hi\n").unwrap();
    assert_eq!(ast.escape, '\\');
    assert!(parse("# escape=x\nFROM a\n").is_err());
    assert!(parse("# escape=`\n# escape=\\\nFROM a\n").is_err());
}

#[test]
fn go_quote_matches_strconv() {
    assert_eq!(go_quote("a\"b\\c\n\t\u{0}♥"), "\"a\\\"b\\\\c\\n\\t\\x00♥\"");
}

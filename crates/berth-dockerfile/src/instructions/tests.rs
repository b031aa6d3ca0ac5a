//! Instruction-level tests: typed values, stages, errors with lines, warnings.

use super::*;

fn df(src: &str) -> Dockerfile {
    parse(src, "Dockerfile").unwrap()
}

fn error(src: &str) -> String {
    parse(src, "Dockerfile").unwrap_err().to_string()
}

#[test]
fn lecture_dockerfile() {
    let d = df(
        "FROM ubuntu:latest\nRUN apt-get update\nENTRYPOINT [\"/bin/echo\", \"Hello\"]\nCMD [\"world\"]\n",
    );
    assert_eq!(d.stages.len(), 1);
    let s = &d.stages[0];
    assert_eq!(s.base, "ubuntu:latest");
    assert_eq!(s.commands.len(), 3);
    assert_eq!(
        s.commands[1].inst,
        Instruction::Entrypoint(Command {
            args: vec!["/bin/echo".into(), "Hello".into()],
            prepend_shell: false
        })
    );
    match &s.commands[0].inst {
        Instruction::Run(r) => assert_eq!(
            r.cmd.argv(&["/bin/sh".into(), "-c".into()]),
            vec!["/bin/sh", "-c", "apt-get update"]
        ),
        other => panic!("{other:?}"),
    }
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
}

#[test]
fn stages_and_meta_args() {
    let d = df(
        "ARG V=1\nFROM golang:${V} AS Build\nRUN go build\nFROM scratch\nCOPY --from=build /app /app\n",
    );
    assert_eq!(d.meta_args.len(), 1);
    assert_eq!(d.stages[0].name.as_deref(), Some("build"));
    assert!(d.warnings.iter().any(|w| w.rule == "StageNameCasing"));
    let mut from = d.stages[0].from.inst.clone();
    let env = vec!["V=1.22".to_string()];
    from.expand(&Lex::new('\\'), &crate::shell::env_lookup(&env))
        .unwrap();
    assert!(matches!(from, Instruction::From { ref image, .. } if image == "golang:1.22"));
    match &d.stages[1].commands[0].inst {
        Instruction::Copy(c) => {
            assert_eq!(c.from.as_deref(), Some("build"));
            assert_eq!(c.sources, vec!["/app"]);
            assert_eq!(c.dest, "/app");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn env_forms_expand_like_docker() {
    let d = df("FROM a\nENV A=1 B=\"x y\" C=$A\\ z\nENV OLD value with spaces\n");
    let mut env_inst = d.stages[0].commands[0].inst.clone();
    let env = vec!["A=1".to_string()];
    env_inst
        .expand(&Lex::new('\\'), &crate::shell::env_lookup(&env))
        .unwrap();
    let Instruction::Env(kvs) = env_inst else {
        panic!()
    };
    let got: Vec<(String, String)> = kvs.into_iter().map(|k| (k.key, k.value)).collect();
    assert_eq!(
        got,
        vec![
            ("A".into(), "1".into()),
            ("B".into(), "x y".into()),
            ("C".into(), "1 z".into())
        ]
    );
    let Instruction::Env(kvs) = &d.stages[0].commands[1].inst else {
        panic!()
    };
    assert_eq!(kvs[0].value, "value with spaces");
    assert!(d.warnings.iter().any(|w| w.rule == "LegacyKeyValueFormat"));
}

#[test]
fn errors_carry_file_and_line() {
    assert_eq!(
        error("FROM a\n\nRUNN echo\n"),
        "Dockerfile:3: unknown instruction: RUNN (did you mean RUN?)"
    );
    assert_eq!(
        error("FROM a\nENV =x\n"),
        "Dockerfile:2: ENV names can not be blank"
    );
    assert_eq!(
        error("RUN echo\nFROM a\n"),
        "Dockerfile:1: RUN instruction before the first FROM: no build stage in current context"
    );
    assert_eq!(
        error("FROM a\nONBUILD FROM b\n"),
        "Dockerfile:2: FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        error("FROM a\nCMD --x echo\n"),
        "Dockerfile:2: unknown flag: x"
    );
    assert_eq!(
        error("FROM a\nCOPY onlyone\n"),
        "Dockerfile:2: COPY requires at least two arguments, but only one was provided. Destination could not be determined"
    );
    assert_eq!(
        error("FROM a\nRUN <<EOF\nx\n"),
        "Dockerfile:2: unterminated heredoc"
    );
    assert_eq!(
        error("FROM a AS 1x\n"),
        "Dockerfile:1: invalid name for build stage: \"1x\", name can't start with a number or contain symbols"
    );
    assert_eq!(
        error("FROM a\nSHELL /bin/bash -c\n"),
        "Dockerfile:2: SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK --interval=5 CMD x\n"),
        "Dockerfile:2: time: invalid duration \"5\""
    );
    assert!(error("FROM a\nEXPOSE\n").contains("EXPOSE requires at least one argument"));
    assert!(error("# comment only\n").contains("file with no instructions"));
}

#[test]
fn healthcheck_and_onbuild() {
    let d = df(
        "FROM a\nHEALTHCHECK --interval=5s --retries=3 CMD curl -f http://x/\nHEALTHCHECK NONE\nONBUILD RUN make\n",
    );
    match &d.stages[0].commands[0].inst {
        Instruction::Healthcheck(Healthcheck::Cmd {
            test,
            interval,
            retries,
            ..
        }) => {
            assert_eq!(
                test,
                &vec!["CMD-SHELL".to_string(), "curl -f http://x/".into()]
            );
            assert_eq!(*interval, Some(5_000_000_000));
            assert_eq!(*retries, Some(3));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        d.stages[0].commands[1].inst,
        Instruction::Healthcheck(Healthcheck::None)
    );
    assert_eq!(
        d.stages[0].commands[2].inst,
        Instruction::Onbuild("RUN make".into())
    );
}

#[test]
fn warnings_for_soft_problems() {
    let d = df("FROM a AS x\nFROM b as x\nCMD echo hi\nMAINTAINER me\nrun true\n");
    let rules: Vec<&str> = d.warnings.iter().map(|w| w.rule).collect();
    for r in [
        "DuplicateStageName",
        "FromAsCasing",
        "JSONArgsRecommended",
        "MaintainerDeprecated",
        "ConsistentInstructionCasing",
    ] {
        assert!(rules.contains(&r), "{r} missing from {rules:?}");
    }
}

#[test]
fn single_instruction_for_changes() {
    let l = parse_instruction("CMD [\"sh\"]").unwrap();
    assert_eq!(
        l.inst,
        Instruction::Cmd(Command {
            args: vec!["sh".into()],
            prepend_shell: false
        })
    );
    assert!(parse_instruction("NOPE x").is_err());
}

/// BuildKit's parser takes a RUN with nothing to run.
#[test]
fn run_with_nothing_to_run() {
    for src in ["FROM a\nRUN\n", "FROM a\nRUN \\\n", "FROM a\nRUN []\n"] {
        let d = df(src);
        match &d.stages[0].commands[0].inst {
            Instruction::Run(r) => {
                assert!(r.cmd.prepend_shell, "{src:?}");
                assert_eq!(r.cmd.argv(&["/bin/sh".into(), "-c".into()]).len(), 3);
            }
            other => panic!("{src:?}: {other:?}"),
        }
    }
}

fn rules(src: &str) -> Vec<(&'static str, usize)> {
    df(src).warnings.iter().map(|w| (w.rule, w.line)).collect()
}

/// BuildKit's check rules where they differ from the obvious reading.
#[test]
fn check_rules_as_buildkit_applies_them() {
    // No JSONArgsRecommended once a SHELL is in force (also in a stage
    // built on one that set it).
    let r = rules(
        "FROM a AS s\nCMD echo 1\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo 2\nFROM s\nCMD echo 3\n",
    );
    assert_eq!(
        r.iter()
            .filter(|(n, _)| *n == "JSONArgsRecommended")
            .collect::<Vec<_>>(),
        [&("JSONArgsRecommended", 2)]
    );
    // WorkdirRelativePath: the first WORKDIR of a stage only, unquoted.
    let r = rules("FROM a\nWORKDIR \"app\"\nWORKDIR sub\nFROM a\nWORKDIR /abs\nWORKDIR rel\n");
    assert_eq!(
        r.iter()
            .filter(|(n, _)| *n == "WorkdirRelativePath")
            .collect::<Vec<_>>(),
        [&("WorkdirRelativePath", 2)]
    );
    // LegacyKeyValueFormat for LABEL too.
    assert!(rules("FROM a\nLABEL k v\n").contains(&("LegacyKeyValueFormat", 2)));
    // Secret names: whole `_`-separated words, `public` exempt.
    let r = rules(
        "FROM a\nARG GITHUB_TOKEN\nARG API-KEY\nARG KEY1\nARG PUBLIC_KEY\nENV DB_PASSWORD=x\n",
    );
    let lines: Vec<usize> = r
        .iter()
        .filter(|(n, _)| *n == "SecretsUsedInArgOrEnv")
        .map(|(_, l)| *l)
        .collect();
    assert_eq!(lines, [2, 6]);
}

/// InvalidDefaultArgInFrom: a global ARG whose default leaves FROM empty
/// or invalid (BuildKit's words), not one with a usable default.
#[test]
fn invalid_default_arg_in_from() {
    let r = rules("ARG TAG\nFROM busybox:${TAG}\n");
    assert!(r.contains(&("InvalidDefaultArgInFrom", 2)), "{r:?}");
    let r = rules("ARG IMG\nFROM ${IMG}\n");
    assert!(r.contains(&("InvalidDefaultArgInFrom", 2)), "{r:?}");
    let r = rules("ARG TAG=1.36\nFROM busybox:${TAG}\n");
    assert!(
        !r.iter().any(|(n, _)| *n == "InvalidDefaultArgInFrom"),
        "{r:?}"
    );
}

/// UndefinedVar: a variable no ARG or ENV in scope sets, where the stage's
/// environment is known (scratch, or a stage of the file); stages on an
/// image are left alone (its ENV is not known without its config).
#[test]
fn undefined_var() {
    let r = rules(
        "FROM scratch AS a\nARG V=1\nENV E=$V\nCOPY $NOPE /x\nWORKDIR $E\nFROM a\nLABEL l=$E$MISSING\nFROM busybox\nCOPY $WHATEVER /y\n",
    );
    let found: Vec<&(&str, usize)> = r.iter().filter(|(n, _)| *n == "UndefinedVar").collect();
    assert_eq!(found, [&("UndefinedVar", 4), &("UndefinedVar", 7)], "{r:?}");
    let d = df("FROM scratch\nCOPY $NOPE /x\n");
    assert!(
        d.warnings
            .iter()
            .any(|w| w.msg == "Usage of undefined variable '$NOPE'"),
        "{:?}",
        d.warnings
    );
}

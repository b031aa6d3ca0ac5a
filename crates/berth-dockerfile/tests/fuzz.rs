//! Property tests: whatever the input, the parser, the typed instructions and
//! word expansion give `Ok` or an error, never a panic. Inputs are built from
//! the pieces that make Dockerfiles hard (continuations, heredocs, JSON,
//! quotes, `${…}` operators, flags, directives) as well as arbitrary text.

use berth_dockerfile::instructions;
use berth_dockerfile::shell::{Lex, env_lookup};
use proptest::prelude::*;

/// Fragments a Dockerfile line is made of.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "FROM",
            "RUN",
            "CMD",
            "COPY",
            "ADD",
            "ENV",
            "ARG",
            "LABEL",
            "EXPOSE",
            "ENTRYPOINT",
            "VOLUME",
            "USER",
            "WORKDIR",
            "ONBUILD",
            "STOPSIGNAL",
            "HEALTHCHECK",
            "SHELL",
            "MAINTAINER",
            "from",
            "AS",
            "as",
            "NONE",
            "--from=x",
            "--mount=type=cache,target=/c",
            "--chown=1:1",
            "--platform=$P",
            "--interval=5s",
            "--retries=x",
            "--",
            "-",
            "\\",
            "`",
            "\\\n",
            "`\n",
            "\n",
            "\n\n",
            " ",
            "\t",
            "#",
            "# escape=`",
            "# syntax=x",
            "# check=skip=all",
            "<<EOF",
            "<<-EOF",
            "<<'EOF'",
            "3<<A",
            "EOF",
            "A",
            "[",
            "]",
            "[\"a\",",
            "\"b\"]",
            "\"",
            "'",
            "=",
            "k=v",
            "$",
            "${",
            "}",
            "${A:-x}",
            "${A#*/}",
            "${A/a/b}",
            "${A:?m}",
            "$A",
            ":",
            "/",
            "*",
            "?",
            "é",
            "\u{feff}",
            "\r\n",
            "\0",
        ])
        .prop_map(str::to_string),
        "[a-z0-9./_-]{1,8}",
    ]
}

fn dockerfile() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..60).prop_map(|v| v.join(" "))
}

fn check(src: &str) {
    if let Ok(df) = instructions::parse(src, "Dockerfile") {
        let _ = serde_json::to_string(&df.to_json()).unwrap();
        let lex = Lex::new(df.escape);
        let env = vec!["A=a/b.c".to_string(), "P=linux/amd64".to_string()];
        for s in &df.stages {
            for l in std::iter::once(&s.from).chain(&s.commands) {
                let mut inst = l.inst.clone();
                let _ = inst.expand(&lex, &env_lookup(&env));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn structured_input_never_panics(src in dockerfile()) {
        check(&src);
        check(&format!("FROM busybox\n{src}"));
    }

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,300}") {
        check(&src);
        check(&format!("FROM a\nRUN {src}\n"));
    }

    #[test]
    fn expansion_never_panics(word in prop::collection::vec(fragment(), 0..20)) {
        let w = word.concat();
        let env = vec!["A=a/b.c".to_string(), "EMPTY=".to_string()];
        for escape in ['\\', '`'] {
            let _ = Lex::new(escape).process(&w, &env_lookup(&env));
        }
    }
}

//! Build checks that need the whole Dockerfile rather than one instruction
//! (BuildKit's rules of the same names, with its messages), and the
//! `# check=skip=…;error=true` parser directive that turns rules off or makes
//! any finding fatal.
//!
//! Rules that need the base image's configuration (BuildKit's `UndefinedVar`,
//! `InvalidBaseImagePlatform`) or the build context (`CopyIgnoredFile`) are not
//! here: this crate sees only the Dockerfile.

use std::cell::RefCell;

use super::{Dockerfile, Instruction, Stage};
use crate::parser::Warning;
use crate::shell::Lex;

/// The `# check=` directive.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckConfig {
    /// Rules turned off.
    pub skip: Vec<String>,
    /// `skip=all`.
    pub skip_all: bool,
    /// `error=true`: any finding fails the build.
    pub error: bool,
}

impl CheckConfig {
    /// Parses `skip=A,B;error=true`.
    pub fn parse(v: &str) -> Result<Self, String> {
        let mut c = CheckConfig::default();
        for part in v.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, val)) = part.split_once('=') else {
                return Err(format!("invalid check directive {part:?}: want key=value"));
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for r in val.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if r.eq_ignore_ascii_case("all") {
                            c.skip_all = true;
                        } else {
                            c.skip.push(r.to_string());
                        }
                    }
                }
                "error" => {
                    c.error = match val.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => {
                            return Err(format!(
                                "invalid check directive: error={other:?} is not a boolean"
                            ));
                        }
                    }
                }
                other => return Err(format!("invalid check directive: unknown key {other:?}")),
            }
        }
        Ok(c)
    }

    /// Whether `rule` is reported.
    pub fn enabled(&self, rule: &str) -> bool {
        !self.skip_all && !self.skip.iter().any(|s| s == rule)
    }
}

/// The documentation page Docker links for a rule
/// (`JSONArgsRecommended` → `…/rule/json-args-recommended/`).
pub fn rule_url(rule: &str) -> String {
    let mut kebab = String::new();
    let chars: Vec<char> = rule.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev_lower = chars[i - 1].is_ascii_lowercase();
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev_lower || (chars[i - 1].is_ascii_uppercase() && next_lower) {
                kebab.push('-');
            }
        }
        kebab.push(c.to_ascii_lowercase());
    }
    format!("https://docs.docker.com/go/dockerfile/rule/{kebab}/")
}

const PLATFORM_ARGS: &[&str] = &[
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
];

/// Whether an ARG or ENV name looks like it holds a secret: one of BuildKit's
/// words (`token`, `password`, …) as a whole `_`-separated part of the name
/// (BuildKit's `(?:_|^)word(?:_|$)`: `API-KEY` and `KEY1` are not), unless
/// a part is one of its allowed words (`public`, `file`, `version`).
fn looks_secret(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let lower = name.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('_').collect();
    const ALLOWED: &[&str] = &["public", "file", "version"];
    !parts.iter().any(|p| ALLOWED.contains(p)) && parts.iter().any(|p| WORDS.contains(p))
}

/// Variables a word refers to (all of them, set or not).
fn referenced(lex: &Lex, word: &str) -> Vec<String> {
    let seen = RefCell::new(Vec::new());
    let env = |k: &str| {
        seen.borrow_mut().push(k.to_string());
        None
    };
    let _ = lex.process(word, &env);
    seen.into_inner()
}

/// BuildKit recommends JSON arguments only while the default shell is in
/// use: after a `SHELL` (in the stage, or in the stage it is built on) a
/// shell-form CMD or ENTRYPOINT is what the author chose.
fn drop_json_args_after_shell(df: &Dockerfile, out: &mut Vec<Warning>) {
    // Per stage: the line from which a SHELL is in force (0: all of it).
    let mut from_line: Vec<Option<usize>> = Vec::new();
    for (i, stage) in df.stages.iter().enumerate() {
        let inherited = df.stages[..i].iter().zip(&from_line).any(|(s, f)| {
            f.is_some()
                && s.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&stage.base))
        });
        let own = stage
            .commands
            .iter()
            .find(|l| matches!(l.inst, Instruction::Shell(_)))
            .map(|l| l.node.start_line);
        from_line.push(if inherited { Some(0) } else { own });
    }
    out.retain(|w| {
        if w.rule != "JSONArgsRecommended" {
            return true;
        }
        let in_force = df.stages.iter().zip(&from_line).any(|(s, f)| {
            let start = s.from.node.start_line;
            let end = s.commands.last().map_or(start, |l| l.node.end_line);
            f.is_some_and(|f| w.line >= start && w.line <= end && w.line > f.max(start))
        });
        !in_force
    });
}

/// The ARGs every build has without declaring them (BuildKit's proxy and
/// platform args).
const PREDEFINED: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// UndefinedVar: a variable an instruction expands (ENV, LABEL, COPY, ADD,
/// WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL, ARG defaults) that no ARG or
/// ENV in scope sets. Checked for stages whose environment is known
/// without the registry (`FROM scratch`, or a stage of this file); a base
/// image's own ENV would need its config, so those stages are left out
/// rather than flagged falsely.
fn undefined_vars(df: &Dockerfile, warn: &mut impl FnMut(&'static str, usize, String)) {
    let lex = Lex::new(df.escape);
    let mut finals: Vec<(Option<String>, Option<Vec<String>>)> = Vec::new();
    for stage in &df.stages {
        let base = stage.base.to_ascii_lowercase();
        let inherited: Option<Vec<String>> = if base == "scratch" {
            Some(vec!["PATH".to_string()])
        } else {
            finals
                .iter()
                .rev()
                .find(|(n, _)| n.as_deref() == Some(base.as_str()))
                .and_then(|(_, env)| env.clone())
        };
        let Some(mut defined) = inherited else {
            finals.push((stage.name.clone(), None));
            continue;
        };
        defined.extend(PLATFORM_ARGS.iter().map(|s| s.to_string()));
        defined.extend(PREDEFINED.iter().map(|s| s.to_string()));
        for l in &stage.commands {
            let env = |k: &str| defined.iter().any(|d| d == k).then(String::new);
            let mut inst = l.inst.clone();
            if !matches!(
                inst,
                Instruction::Run(_)
                    | Instruction::Cmd(_)
                    | Instruction::Entrypoint(_)
                    | Instruction::Shell(_)
                    | Instruction::Healthcheck(_)
                    | Instruction::Onbuild(_)
            ) && let Ok((_, unset)) = inst.expand_tracking(&lex, &env)
            {
                let mut seen: Vec<String> = Vec::new();
                for v in unset {
                    if !seen.contains(&v) {
                        warn(
                            "UndefinedVar",
                            l.node.start_line,
                            format!("Usage of undefined variable '${v}'"),
                        );
                        seen.push(v);
                    }
                }
            }
            match &l.inst {
                Instruction::Arg(decls) => defined.extend(decls.iter().map(|d| d.name.clone())),
                Instruction::Env(kvs) => defined.extend(kvs.iter().map(|kv| kv.key.clone())),
                _ => {}
            }
        }
        finals.push((stage.name.clone(), Some(defined)));
    }
}

/// Runs the whole-file rules; findings are appended to `out`.
pub(super) fn check(df: &Dockerfile, out: &mut Vec<Warning>) {
    drop_json_args_after_shell(df, out);
    {
        let mut warn = |rule: &'static str, line: usize, msg: String| {
            out.push(Warning { rule, msg, line });
        };
        undefined_vars(df, &mut warn);
    }
    let lex = Lex::new(df.escape);
    let meta: Vec<&str> = df
        .meta_args
        .iter()
        .flat_map(|l| match &l.inst {
            Instruction::Arg(decls) => decls.iter().map(|d| d.name.as_str()).collect(),
            _ => Vec::new(),
        })
        .collect();
    let mut warn = |rule: &'static str, line: usize, msg: String| {
        out.push(Warning { rule, msg, line });
    };
    for l in &df.meta_args {
        secrets(&l.inst, l.node.start_line, &mut warn);
    }
    // The global ARGs' defaults, for InvalidDefaultArgInFrom.
    let defaults: Vec<String> = df
        .meta_args
        .iter()
        .flat_map(|l| match &l.inst {
            Instruction::Arg(decls) => decls
                .iter()
                .filter_map(|d| d.default.as_ref().map(|v| format!("{}={v}", d.name)))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    for stage in &df.stages {
        let line = stage.from.node.start_line;
        let vars = referenced(&lex, &stage.base);
        if vars.iter().any(|v| meta.contains(&v.as_str())) {
            let base = lex
                .process_word(&stage.base, &crate::shell::env_lookup(&defaults))
                .unwrap_or_default();
            let invalid = base.is_empty()
                || base.ends_with([':', '@', '/'])
                || base.starts_with([':', '@', '/'])
                || base.contains(char::is_whitespace);
            if invalid {
                warn(
                    "InvalidDefaultArgInFrom",
                    line,
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        stage.base
                    ),
                );
            }
        }
        if let Some(n) = &stage.name
            && matches!(n.as_str(), "scratch" | "context")
        {
            warn(
                "ReservedStageName",
                line,
                format!("Stage name should not use the same name as reserved stage {n:?}"),
            );
        }
        for w in [Some(&stage.base), stage.platform.as_ref()]
            .into_iter()
            .flatten()
        {
            for v in referenced(&lex, w) {
                if !meta.contains(&v.as_str()) && !PLATFORM_ARGS.contains(&v.as_str()) {
                    warn(
                        "UndefinedArgInFrom",
                        line,
                        format!("FROM argument '{v}' is not declared"),
                    );
                }
            }
        }
        if let Some(p) = &stage.platform {
            platform_flag(stage, p, &lex, &mut warn);
        }
        stage_rules(stage, &mut warn);
    }
}

fn platform_flag(
    stage: &Stage,
    p: &str,
    lex: &Lex,
    warn: &mut impl FnMut(&'static str, usize, String),
) {
    let line = stage.from.node.start_line;
    let vars = referenced(lex, p);
    if vars.is_empty() {
        // A constant platform is fine when the stage says it is platform-specific.
        let name = stage.name.as_deref().unwrap_or("");
        let specific = p
            .split('/')
            .any(|part| !part.is_empty() && name.contains(&part.to_ascii_lowercase()));
        if !specific {
            warn(
                "FromPlatformFlagConstDisallowed",
                line,
                format!("FROM --platform flag should not use constant value {p:?}"),
            );
        }
    } else if matches!(p, "$TARGETPLATFORM" | "${TARGETPLATFORM}") {
        warn(
            "RedundantTargetPlatform",
            line,
            "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior".into(),
        );
    }
}

fn secrets(inst: &Instruction, line: usize, warn: &mut impl FnMut(&'static str, usize, String)) {
    let names: Vec<(&str, &str)> = match inst {
        Instruction::Arg(decls) => decls.iter().map(|d| ("ARG", d.name.as_str())).collect(),
        Instruction::Env(kvs) => kvs.iter().map(|kv| ("ENV", kv.key.as_str())).collect(),
        _ => return,
    };
    for (what, name) in names {
        if looks_secret(name) {
            warn(
                "SecretsUsedInArgOrEnv",
                line,
                format!("Do not use ARG or ENV instructions for sensitive data ({what} {name:?})"),
            );
        }
    }
}

fn stage_rules(stage: &Stage, warn: &mut impl FnMut(&'static str, usize, String)) {
    let mut workdir_set = false;
    for (i, l) in stage.commands.iter().enumerate() {
        let line = l.node.start_line;
        secrets(&l.inst, line, warn);
        match &l.inst {
            Instruction::Workdir(p) => {
                // BuildKit looks at the first WORKDIR of a stage only, its
                // quotes removed. Variables may well hold an absolute path;
                // only literal relative paths are flagged.
                let first = !workdir_set;
                workdir_set = true;
                let p = p.trim_matches(|c| c == '"' || c == '\'');
                let drive = p.len() >= 3
                    && p.as_bytes()[0].is_ascii_alphabetic()
                    && p.as_bytes()[1] == b':'
                    && matches!(p.as_bytes()[2], b'\\' | b'/');
                if first && !(p.starts_with('/') || p.starts_with('$') || drive) {
                    warn(
                        "WorkdirRelativePath",
                        line,
                        format!(
                            "Relative workdir {p:?} can have unexpected results if the base image changes"
                        ),
                    );
                }
            }
            Instruction::Expose(ports) => {
                for p in ports {
                    if p.contains(':') {
                        warn(
                            "ExposeInvalidFormat",
                            line,
                            format!(
                                "EXPOSE instruction should not define an IP address or host-port mapping, found '{p}'"
                            ),
                        );
                    }
                    if let Some((_, proto)) = p.split_once('/')
                        && proto != proto.to_ascii_lowercase()
                    {
                        warn(
                            "ExposeProtoCasing",
                            line,
                            format!(
                                "Defined protocol '{p}' in EXPOSE instruction should be lowercase"
                            ),
                        );
                    }
                }
            }
            Instruction::Cmd(_) | Instruction::Entrypoint(_) | Instruction::Healthcheck(_) => {
                let name = l.inst.name();
                let later = stage.commands[i + 1..]
                    .iter()
                    .any(|o| o.inst.name() == name);
                if later {
                    warn(
                        "MultipleInstructionsDisallowed",
                        line,
                        format!(
                            "Multiple {name} instructions should not be used in the same stage because only the last one will be used"
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_docker_s() {
        assert_eq!(
            rule_url("JSONArgsRecommended"),
            "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
        );
        assert_eq!(
            rule_url("WorkdirRelativePath"),
            "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/"
        );
        assert_eq!(
            rule_url("SecretsUsedInArgOrEnv"),
            "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/"
        );
    }

    #[test]
    fn secret_names() {
        for yes in ["GITHUB_TOKEN", "password", "AWS_SECRET_ACCESS_KEY", "AUTH"] {
            assert!(looks_secret(yes), "{yes}");
        }
        for no in [
            "AUTHOR",
            "TOKENIZER_DIR",
            "PUBLIC_KEY",
            "PATH",
            "KEYBOARD",
            "api-key",
            "KEY1",
            "SSH_KEY_FILE",
            "TOKEN_VERSION",
        ] {
            assert!(!looks_secret(no), "{no}");
        }
    }

    #[test]
    fn check_directive() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended,StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, ["JSONArgsRecommended", "StageNameCasing"]);
        assert!(c.error && !c.enabled("StageNameCasing") && c.enabled("FromAsCasing"));
        assert!(CheckConfig::parse("skip=all").unwrap().skip_all);
        assert!(CheckConfig::parse("error=maybe").is_err());
        assert!(CheckConfig::parse("frobnicate=1").is_err());
    }
}

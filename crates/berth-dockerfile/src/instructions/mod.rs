//! Typed instructions: the syntax tree turned into one enum, with flags checked
//! per instruction, stages split at FROM, and errors that carry `file:line`.
//!
//! Words are kept as written; [`Instruction::expand`] expands the ones Docker
//! expands (FROM, ENV, LABEL, ARG defaults, COPY/ADD paths and flags, EXPOSE,
//! USER, WORKDIR, VOLUME, STOPSIGNAL) with the environment of the moment, which
//! only the builder knows. RUN, CMD, ENTRYPOINT and SHELL are left to the shell.

mod convert;
mod flags;
pub mod lint;
mod suggest;

use std::fmt;

use crate::parser::{self, Heredoc, Node, Warning};
use crate::shell::{Lex, ShellError};
use convert::{casing_warnings, from_node};
pub use flags::parse_duration;
pub use lint::CheckConfig;

/// An error in a Dockerfile, located: `Dockerfile:7: unknown instruction: RUNN`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DockerfileError {
    /// The file name as the user gave it.
    pub file: String,
    /// First line (1-based).
    pub line: usize,
    /// Last line.
    pub end_line: usize,
    /// The message.
    pub msg: String,
}

impl fmt::Display for DockerfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.msg)
    }
}

/// A command in exec (`["a","b"]`) or shell (`a b`) form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    /// The words (one string in shell form).
    pub args: Vec<String>,
    /// True in shell form: the stage's SHELL runs it.
    pub prepend_shell: bool,
}

impl Command {
    fn from_node(n: &Node) -> Self {
        Command {
            args: n.args.clone(),
            prepend_shell: !n.json,
        }
    }

    /// The argv to run, given the shell (`["/bin/sh","-c"]`).
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        if self.prepend_shell {
            let mut v = shell.to_vec();
            v.push(self.args.join(" "));
            v
        } else {
            self.args.clone()
        }
    }
}

/// `key=value` from ENV or LABEL (value unexpanded until [`Instruction::expand`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyValue {
    /// The name.
    pub key: String,
    /// The value.
    pub value: String,
}

/// One ARG declaration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// The default, if given.
    pub default: Option<String>,
}

/// COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyArgs {
    /// Sources (paths, globs, URLs for ADD, `<<EOF` for heredocs).
    pub sources: Vec<String>,
    /// Destination.
    pub dest: String,
    /// `--from=stage|image|index`.
    pub from: Option<String>,
    /// `--chown=user:group`.
    pub chown: Option<String>,
    /// `--chmod=0755`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude=pattern`.
    pub exclude: Vec<String>,
    /// ADD `--checksum=sha256:…`.
    pub checksum: Option<String>,
    /// ADD `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// ADD `--unpack`.
    pub unpack: Option<bool>,
    /// Heredoc sources.
    pub heredocs: Vec<Heredoc>,
    /// Written in JSON form.
    pub json: bool,
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunArgs {
    /// The command.
    pub cmd: Command,
    /// `--mount=type=cache,target=/x` values, as written.
    pub mounts: Vec<String>,
    /// `--network=default|none|host`.
    pub network: Option<String>,
    /// `--security=sandbox|insecure`.
    pub security: Option<String>,
    /// Heredocs.
    pub heredocs: Vec<Heredoc>,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE", rename_all_fields = "camelCase")]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`.
    None,
    /// `HEALTHCHECK [opts] CMD …`.
    Cmd {
        /// `["CMD", …]` or `["CMD-SHELL", "…"]`.
        test: Vec<String>,
        /// Nanoseconds.
        interval: Option<i64>,
        /// Nanoseconds.
        timeout: Option<i64>,
        /// Nanoseconds.
        start_period: Option<i64>,
        /// Nanoseconds.
        start_interval: Option<i64>,
        /// Retries.
        retries: Option<i64>,
    },
}

/// Every Dockerfile instruction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "instruction", content = "args", rename_all = "UPPERCASE")]
pub enum Instruction {
    /// FROM image [AS name].
    From {
        /// Base image (or `scratch`, or a stage).
        image: String,
        /// Stage name, lower-cased.
        name: Option<String>,
        /// `--platform`.
        platform: Option<String>,
    },
    /// RUN.
    Run(RunArgs),
    /// CMD.
    Cmd(Command),
    /// ENTRYPOINT.
    Entrypoint(Command),
    /// SHELL (JSON only).
    Shell(Vec<String>),
    /// ENV.
    Env(Vec<KeyValue>),
    /// LABEL.
    Label(Vec<KeyValue>),
    /// ARG.
    Arg(Vec<ArgDecl>),
    /// EXPOSE.
    Expose(Vec<String>),
    /// USER.
    User(String),
    /// WORKDIR.
    Workdir(String),
    /// VOLUME.
    Volume(Vec<String>),
    /// STOPSIGNAL.
    StopSignal(String),
    /// MAINTAINER (deprecated).
    Maintainer(String),
    /// COPY.
    Copy(CopyArgs),
    /// ADD.
    Add(CopyArgs),
    /// ONBUILD trigger (the instruction text).
    Onbuild(String),
    /// HEALTHCHECK.
    Healthcheck(Healthcheck),
}

impl Instruction {
    /// The instruction's name in upper case.
    pub fn name(&self) -> &'static str {
        match self {
            Instruction::From { .. } => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Shell(_) => "SHELL",
            Instruction::Env(_) => "ENV",
            Instruction::Label(_) => "LABEL",
            Instruction::Arg(_) => "ARG",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Volume(_) => "VOLUME",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
        }
    }

    /// Expands the words Docker expands, with `env`; returns the variables used
    /// (for cache keys).
    pub fn expand(
        &mut self,
        lex: &Lex,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, ShellError> {
        self.expand_tracking(lex, env).map(|(used, _)| used)
    }

    /// [`Instruction::expand`], also returning the variables referenced
    /// that were not set (for the UndefinedVar check).
    pub fn expand_tracking(
        &mut self,
        lex: &Lex,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Vec<String>, Vec<String>), ShellError> {
        let mut used = Vec::new();
        let mut unset = Vec::new();
        let mut word = |w: &mut String| -> Result<(), ShellError> {
            let e = lex.process(w, env)?;
            used.extend(e.matched);
            unset.extend(e.unmatched);
            *w = e.result;
            Ok(())
        };
        match self {
            Instruction::From {
                image, platform, ..
            } => {
                word(image)?;
                if let Some(p) = platform {
                    word(p)?;
                }
            }
            Instruction::Env(kvs) | Instruction::Label(kvs) => {
                for kv in kvs {
                    word(&mut kv.key)?;
                    word(&mut kv.value)?;
                }
            }
            Instruction::Arg(decls) => {
                for d in decls {
                    if let Some(v) = &mut d.default {
                        word(v)?;
                    }
                }
            }
            Instruction::Copy(c) | Instruction::Add(c) => {
                if !c.json {
                    for s in &mut c.sources {
                        if !s.starts_with("<<") {
                            word(s)?;
                        }
                    }
                    word(&mut c.dest)?;
                } else {
                    for s in c.sources.iter_mut().chain(std::iter::once(&mut c.dest)) {
                        word(s)?;
                    }
                }
                for f in [&mut c.chown, &mut c.chmod, &mut c.from, &mut c.checksum]
                    .into_iter()
                    .flatten()
                {
                    word(f)?;
                }
            }
            Instruction::Expose(ports) | Instruction::Volume(ports) => {
                let mut out = Vec::new();
                for p in ports.iter() {
                    let e = lex.process(p, env)?;
                    used.extend(e.matched);
                    unset.extend(e.unmatched);
                    out.extend(e.words);
                }
                *ports = out;
            }
            Instruction::User(s) | Instruction::Workdir(s) | Instruction::StopSignal(s) => word(s)?,
            _ => {}
        }
        Ok((used, unset))
    }
}

/// An instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The instruction.
    pub inst: Instruction,
    /// Its syntax node (original text, lines).
    pub node: Node,
}

impl Located {
    /// `file:line`-located error about this instruction.
    pub fn error(&self, file: &str, msg: impl Into<String>) -> DockerfileError {
        DockerfileError {
            file: file.to_string(),
            line: self.node.start_line,
            end_line: self.node.end_line,
            msg: msg.into(),
        }
    }
}

/// A build stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Stage name (`AS name`), lower-cased.
    pub name: Option<String>,
    /// The base image as written (expand with the meta ARGs).
    pub base: String,
    /// `--platform`.
    pub platform: Option<String>,
    /// The FROM instruction.
    pub from: Located,
    /// The instructions after FROM.
    pub commands: Vec<Located>,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// ARGs before the first FROM.
    pub meta_args: Vec<Located>,
    /// The stages.
    pub stages: Vec<Stage>,
    /// The escape character.
    pub escape: char,
    /// Warnings, with Docker's rule names (those `# check=skip=` turns off left out).
    pub warnings: Vec<Warning>,
    /// The `# check=` directive.
    pub check: CheckConfig,
    /// The syntax tree.
    pub ast: parser::Ast,
}

const ALL: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Parses a Dockerfile (`file` names it in errors).
pub fn parse(src: &str, file: &str) -> Result<Dockerfile, DockerfileError> {
    let ast = parser::parse(src).map_err(|e| DockerfileError {
        file: file.to_string(),
        line: e.start_line,
        end_line: e.end_line,
        msg: e.msg,
    })?;
    let mut warnings = ast.warnings.clone();
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &ast.children {
        let loc = |msg: String| DockerfileError {
            file: file.to_string(),
            line: node.start_line,
            end_line: node.end_line,
            msg,
        };
        let inst = from_node(node, &mut warnings).map_err(loc)?;
        let located = Located {
            inst,
            node: node.clone(),
        };
        match &located.inst {
            Instruction::From {
                image,
                name,
                platform,
            } => {
                if let Some(n) = name
                    && stages.iter().any(|s| s.name.as_deref() == Some(n))
                {
                    warnings.push(Warning {
                        rule: "DuplicateStageName",
                        msg: format!("Duplicate stage name {n:?}, stage names should be unique"),
                        line: node.start_line,
                    });
                }
                stages.push(Stage {
                    name: name.clone(),
                    base: image.clone(),
                    platform: platform.clone(),
                    from: located.clone(),
                    commands: Vec::new(),
                });
            }
            Instruction::Arg(_) if stages.is_empty() => meta_args.push(located),
            other => match stages.last_mut() {
                Some(s) => s.commands.push(located),
                None => {
                    return Err(loc(format!(
                        "{} instruction before the first FROM: no build stage in current context",
                        other.name()
                    )));
                }
            },
        }
    }
    if stages.is_empty() {
        return Err(DockerfileError {
            file: file.to_string(),
            line: ast.children.last().map_or(1, |n| n.end_line),
            end_line: ast.children.last().map_or(1, |n| n.end_line),
            msg: "no build stage in current context: a Dockerfile needs a FROM".into(),
        });
    }
    casing_warnings(&ast, &mut warnings);
    let check = match ast.directives.iter().find(|d| d.name == "check") {
        Some(d) => CheckConfig::parse(&d.value).map_err(|msg| DockerfileError {
            file: file.to_string(),
            line: d.line,
            end_line: d.line,
            msg,
        })?,
        None => CheckConfig::default(),
    };
    let mut df = Dockerfile {
        meta_args,
        stages,
        escape: ast.escape,
        warnings: Vec::new(),
        check,
        ast,
    };
    lint::check(&df, &mut warnings);
    warnings.retain(|w| df.check.enabled(w.rule));
    warnings.sort_by_key(|w| w.line);
    df.warnings = warnings;
    Ok(df)
}

impl Located {
    /// The JSON form `build --print` shows: lines, the original text, the
    /// instruction and its arguments.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "line": self.node.start_line,
            "endLine": self.node.end_line,
            "original": self.node.original.trim(),
        });
        if let (serde_json::Value::Object(m), Ok(serde_json::Value::Object(i))) =
            (&mut v, serde_json::to_value(&self.inst))
        {
            m.extend(i);
        }
        v
    }
}

impl Dockerfile {
    /// With `# check=error=true` and findings, the error that stops a build
    /// (and `build --check`): `lint violation found for rules: A, B`.
    pub fn lint_violation(&self) -> Option<String> {
        if !self.check.error || self.warnings.is_empty() {
            return None;
        }
        let mut rules: Vec<&str> = Vec::new();
        for w in &self.warnings {
            if !rules.contains(&w.rule) {
                rules.push(w.rule);
            }
        }
        Some(format!(
            "lint violation found for rules: {}",
            rules.join(", ")
        ))
    }

    /// What the parser understood, as `build --print` shows it: directives,
    /// the ARGs before the first FROM, every stage with its instructions, and
    /// the warnings.
    pub fn to_json(&self) -> serde_json::Value {
        let directives: serde_json::Map<String, serde_json::Value> = self
            .ast
            .directives
            .iter()
            .map(|d| (d.name.clone(), d.value.clone().into()))
            .collect();
        let stages: Vec<serde_json::Value> = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                serde_json::json!({
                    "index": i,
                    "name": s.name,
                    "base": s.base,
                    "platform": s.platform,
                    "line": s.from.node.start_line,
                    "commands": s.commands.iter().map(Located::to_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({
            "directives": directives,
            "escape": self.escape.to_string(),
            "metaArgs": self.meta_args.iter().map(Located::to_json).collect::<Vec<_>>(),
            "stages": stages,
            "warnings": self.warnings,
        })
    }
}

/// Parses one instruction (`--change 'CMD ["sh"]'`, ONBUILD triggers).
pub fn parse_instruction(line: &str) -> Result<Located, DockerfileError> {
    let err = |msg: String| DockerfileError {
        file: "change".into(),
        line: 1,
        end_line: 1,
        msg,
    };
    let ast = parser::parse(line).map_err(|e| err(e.msg))?;
    let [node] = ast.children.as_slice() else {
        return Err(err(format!("expected one instruction, got {:?}", line)));
    };
    let mut w = Vec::new();
    let inst = from_node(node, &mut w).map_err(err)?;
    Ok(Located {
        inst,
        node: node.clone(),
    })
}

#[cfg(test)]
mod tests;

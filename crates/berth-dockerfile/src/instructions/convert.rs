//! A syntax node into a typed instruction: the flags each instruction
//! takes, its arguments checked (with BuildKit's messages), and the build
//! checks that are decided per instruction (casing, legacy forms, JSON
//! arguments, deprecated MAINTAINER).

use super::*;
use flags::Flags;

/// BuildKit's ConsistentInstructionCasing: instructions written in the
/// case most of the file does not use.
pub(super) fn casing_warnings(ast: &parser::Ast, warnings: &mut Vec<Warning>) {
    let (mut upper, mut lower) = (0, 0);
    for n in &ast.children {
        if n.cmd == n.cmd.to_ascii_uppercase() {
            upper += 1;
        } else if n.cmd == n.cmd.to_ascii_lowercase() {
            lower += 1;
        }
    }
    let majority_upper = upper >= lower;
    for n in &ast.children {
        let ok = if majority_upper {
            n.cmd == n.cmd.to_ascii_uppercase()
        } else {
            n.cmd == n.cmd.to_ascii_lowercase()
        };
        if !ok {
            warnings.push(Warning {
                rule: "ConsistentInstructionCasing",
                msg: format!(
                    "Command '{}' should match the case of the command majority ({})",
                    n.cmd,
                    if majority_upper {
                        "uppercase"
                    } else {
                        "lowercase"
                    }
                ),
                line: n.start_line,
            });
        }
    }
}

fn valid_stage_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, '-' | '_' | '.'))
}

fn key_values(n: &Node, what: &str) -> Result<Vec<KeyValue>, String> {
    if n.args.is_empty() {
        return Err(format!("{what} requires at least one argument"));
    }
    let mut out = Vec::new();
    for c in n.args.chunks(3) {
        let [k, v, _sep] = c else {
            return Err(format!("{what} requires at least one argument"));
        };
        if k.is_empty() {
            return Err(format!("{what} names can not be blank"));
        }
        out.push(KeyValue {
            key: k.clone(),
            value: v.clone(),
        });
    }
    Ok(out)
}

fn exactly_one(n: &Node, what: &str) -> Result<String, String> {
    match n.args.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!("{what} requires exactly one argument")),
    }
}

/// Converts a syntax node into an instruction.
pub(super) fn from_node(n: &Node, warnings: &mut Vec<Warning>) -> Result<Instruction, String> {
    let name = n.name();
    let upper = name.to_ascii_uppercase();
    let allowed = allowed_flags(&name);
    if !ALL.contains(&upper.as_str()) {
        return Err(match suggest::closest(&upper, ALL) {
            Some(s) => format!("unknown instruction: {} (did you mean {s}?)", n.cmd),
            None => format!("unknown instruction: {}", n.cmd),
        });
    }
    let f = Flags::parse(&n.flags, allowed, &upper)?;
    Ok(match name.as_str() {
        "from" => from_inst(n, &f, warnings)?,
        "run" => {
            // BuildKit takes a RUN with nothing to run (`RUN`, `RUN \` at
            // the end, `RUN []`): the shell runs an empty command.
            let cmd = if n.args.is_empty() {
                Command {
                    args: Vec::new(),
                    prepend_shell: true,
                }
            } else {
                Command::from_node(n)
            };
            Instruction::Run(RunArgs {
                cmd,
                mounts: f.multi("mount"),
                network: f.str("network"),
                security: f.str("security"),
                heredocs: n.heredocs.clone(),
            })
        }
        "cmd" | "entrypoint" => {
            if !n.json && !n.args.is_empty() {
                warnings.push(Warning {
                    rule: "JSONArgsRecommended",
                    msg: format!(
                        "JSON arguments recommended for {upper} to prevent unintended behavior related to OS signals"
                    ),
                    line: n.start_line,
                });
            }
            let c = Command::from_node(n);
            if name == "cmd" {
                Instruction::Cmd(c)
            } else {
                Instruction::Entrypoint(c)
            }
        }
        "shell" => {
            if !n.json {
                return Err("SHELL requires the arguments to be in JSON form".into());
            }
            if n.args.is_empty() {
                return Err("SHELL requires at least one argument".into());
            }
            Instruction::Shell(n.args.clone())
        }
        "env" => {
            if n.args.len() == 3 && n.args[2].is_empty() {
                warnings.push(Warning {
                    rule: "LegacyKeyValueFormat",
                    msg: "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format".into(),
                    line: n.start_line,
                });
            }
            Instruction::Env(key_values(n, "ENV")?)
        }
        "label" => {
            if n.args.len() == 3 && n.args[2].is_empty() {
                warnings.push(Warning {
                    rule: "LegacyKeyValueFormat",
                    msg: "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format".into(),
                    line: n.start_line,
                });
            }
            Instruction::Label(key_values(n, "LABEL")?)
        }
        "arg" => arg_inst(n)?,
        "expose" => {
            if n.args.is_empty() {
                return Err("EXPOSE requires at least one argument".into());
            }
            Instruction::Expose(n.args.clone())
        }
        "user" => Instruction::User(exactly_one(n, "USER")?),
        "workdir" => Instruction::Workdir(exactly_one(n, "WORKDIR")?),
        "stopsignal" => Instruction::StopSignal(exactly_one(n, "STOPSIGNAL")?),
        "maintainer" => {
            warnings.push(Warning {
                rule: "MaintainerDeprecated",
                msg: "Maintainer instruction is deprecated in favor of using label".into(),
                line: n.start_line,
            });
            Instruction::Maintainer(exactly_one(n, "MAINTAINER")?)
        }
        "volume" => {
            if n.args.is_empty() {
                return Err("VOLUME requires at least one argument".into());
            }
            if n.args.iter().any(|v| v.trim().is_empty()) {
                return Err("VOLUME specified can not be an empty string".into());
            }
            Instruction::Volume(n.args.clone())
        }
        "copy" | "add" => copy_inst(n, &f, &upper)?,
        "onbuild" => onbuild_inst(n)?,
        "healthcheck" => healthcheck_inst(n, &f)?,
        _ => unreachable!("checked against ALL"),
    })
}

/// The flags each instruction takes (BuildKit's), with their kinds.
fn allowed_flags(name: &str) -> &'static [(&'static str, flags::Kind)] {
    match name {
        "from" => &[("platform", flags::Kind::Str)],
        "run" => &[
            ("mount", flags::Kind::Multi),
            ("network", flags::Kind::Str),
            ("security", flags::Kind::Str),
            ("device", flags::Kind::Multi),
        ],
        "copy" => &[
            ("from", flags::Kind::Str),
            ("chown", flags::Kind::Str),
            ("chmod", flags::Kind::Str),
            ("link", flags::Kind::Bool),
            ("parents", flags::Kind::Bool),
            ("exclude", flags::Kind::Multi),
        ],
        "add" => &[
            ("chown", flags::Kind::Str),
            ("chmod", flags::Kind::Str),
            ("link", flags::Kind::Bool),
            ("checksum", flags::Kind::Str),
            ("keep-git-dir", flags::Kind::Bool),
            ("exclude", flags::Kind::Multi),
            ("unpack", flags::Kind::Bool),
        ],
        "healthcheck" => &[
            ("interval", flags::Kind::Str),
            ("timeout", flags::Kind::Str),
            ("start-period", flags::Kind::Str),
            ("start-interval", flags::Kind::Str),
            ("retries", flags::Kind::Str),
        ],
        _ => &[],
    }
}

/// FROM image [AS name], with BuildKit's casing checks.
fn from_inst(n: &Node, f: &Flags, warnings: &mut Vec<Warning>) -> Result<Instruction, String> {
    let (image, stage) = match n.args.as_slice() {
        [img] => (img.clone(), None),
        [img, kw, st] if kw.eq_ignore_ascii_case("as") => {
            let from_upper = n.cmd == n.cmd.to_ascii_uppercase();
            if from_upper != (*kw == kw.to_ascii_uppercase()) {
                warnings.push(Warning {
                    rule: "FromAsCasing",
                    msg: format!("'{kw}' and '{}' keywords' casing do not match", n.cmd),
                    line: n.start_line,
                });
            }
            if st != &st.to_ascii_lowercase() {
                warnings.push(Warning {
                    rule: "StageNameCasing",
                    msg: format!("Stage name '{st}' should be lowercase"),
                    line: n.start_line,
                });
            }
            let s = st.to_ascii_lowercase();
            if !valid_stage_name(&s) {
                return Err(format!(
                    "invalid name for build stage: {st:?}, name can't start with a number or contain symbols"
                ));
            }
            (img.clone(), Some(s))
        }
        _ => return Err("FROM requires either one or three arguments".into()),
    };
    Ok(Instruction::From {
        image,
        name: stage,
        platform: f.str("platform"),
    })
}

/// ARG name[=default] …
fn arg_inst(n: &Node) -> Result<Instruction, String> {
    if n.args.is_empty() {
        return Err("ARG requires at least one argument".into());
    }
    let mut decls = Vec::new();
    for w in &n.args {
        let (name, default) = match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (w.clone(), None),
        };
        if name.is_empty() {
            return Err("ARG names can not be blank".into());
        }
        decls.push(ArgDecl { name, default });
    }
    Ok(Instruction::Arg(decls))
}

/// COPY and ADD: sources and a destination (or heredocs), and their flags.
fn copy_inst(n: &Node, f: &Flags, upper: &str) -> Result<Instruction, String> {
    let heredoc_sources = n.heredocs.len();
    if n.args.len() < 2 && heredoc_sources == 0 {
        return Err(format!(
            "{upper} requires at least two arguments, but only one was provided. Destination could not be determined"
        ));
    }
    let (dest, sources) = n.args.split_last().expect("non-empty");
    if sources.is_empty() {
        return Err(format!(
            "{upper} requires at least two arguments, but only one was provided. Destination could not be determined"
        ));
    }
    let args = CopyArgs {
        sources: sources.to_vec(),
        dest: dest.clone(),
        from: f.str("from"),
        chown: f.str("chown"),
        chmod: f.str("chmod"),
        link: f.bool("link"),
        parents: f.bool("parents"),
        exclude: f.multi("exclude"),
        checksum: f.str("checksum"),
        keep_git_dir: f.bool("keep-git-dir"),
        unpack: f.opt_bool("unpack"),
        heredocs: n.heredocs.clone(),
        json: n.json,
    };
    Ok(if upper == "COPY" {
        Instruction::Copy(args)
    } else {
        Instruction::Add(args)
    })
}

/// ONBUILD: the trigger validated now and kept as text, as docker keeps it.
fn onbuild_inst(n: &Node) -> Result<Instruction, String> {
    let Some(sub) = &n.sub else {
        return Err("ONBUILD requires at least one argument".into());
    };
    match sub.name().as_str() {
        "onbuild" => {
            return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into());
        }
        "from" => return Err("FROM isn't allowed as an ONBUILD trigger".into()),
        "maintainer" => return Err("MAINTAINER isn't allowed as an ONBUILD trigger".into()),
        _ => {}
    }
    // The trigger is validated now and stored as text, as docker stores it.
    from_node(sub, &mut Vec::new())?;
    let text = n.original.trim();
    let rest = text[n.cmd.len()..].trim_start();
    Ok(Instruction::Onbuild(rest.to_string()))
}

/// HEALTHCHECK NONE, or HEALTHCHECK [flags] CMD …
fn healthcheck_inst(n: &Node, f: &Flags) -> Result<Instruction, String> {
    let Some(typ) = n.args.first() else {
        return Err("HEALTHCHECK requires an argument".into());
    };
    Ok(match typ.to_ascii_uppercase().as_str() {
        "NONE" => {
            if n.args.len() > 1 {
                return Err("HEALTHCHECK NONE takes no arguments".into());
            }
            Instruction::Healthcheck(Healthcheck::None)
        }
        "CMD" => {
            let cmd = &n.args[1..];
            if cmd.is_empty() {
                return Err("Missing command after HEALTHCHECK CMD".into());
            }
            let mut test = vec![if n.json { "CMD" } else { "CMD-SHELL" }.to_string()];
            test.extend(cmd.iter().cloned());
            let dur = |k: &str| -> Result<Option<i64>, String> {
                match f.str(k) {
                    None => Ok(None),
                    Some(v) => {
                        let d = flags::parse_duration(&v)
                            .ok_or_else(|| format!("time: invalid duration {v:?}"))?;
                        if d < 0 {
                            return Err(format!("--{k} cannot be negative"));
                        }
                        Ok(Some(d))
                    }
                }
            };
            let retries = match f.str("retries") {
                None => None,
                Some(r) => {
                    let v: i64 = r
                        .parse()
                        .map_err(|_| format!("--retries must be a number, not {r:?}"))?;
                    if v < 0 {
                        return Err("--retries cannot be negative".into());
                    }
                    Some(v)
                }
            };
            Instruction::Healthcheck(Healthcheck::Cmd {
                test,
                interval: dur("interval")?,
                timeout: dur("timeout")?,
                start_period: dur("start-period")?,
                start_interval: dur("start-interval")?,
                retries,
            })
        }
        other => return Err(format!("Unknown type {other:?} in HEALTHCHECK (try CMD)")),
    })
}

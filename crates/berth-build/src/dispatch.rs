//! Instructions that change only the image config, applied as Docker's builder
//! applies them: CMD and ENTRYPOINT with the stage's SHELL for shell form (and
//! ENTRYPOINT clearing an inherited CMD), ENV and LABEL merged, EXPOSE normalised
//! to `port/proto` with ranges expanded, WORKDIR resolved against the current one,
//! VOLUME, USER, STOPSIGNAL, SHELL, HEALTHCHECK, ONBUILD, MAINTAINER.
//!
//! Also the history text Docker's classic builder records for them
//! (`/bin/sh -c #(nop)  CMD ["world"]`), which `history` shows.

use std::collections::BTreeMap;

use berth_dockerfile::instructions::{self, Healthcheck, Instruction};
use berth_dockerfile::shell::{Lex, env_lookup};
use berth_types::ImageConfig;
use berth_types::image::HealthConfig;
use serde_json::json;

/// A metadata instruction that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The instruction text did not parse.
    #[error(transparent)]
    Parse(#[from] instructions::DockerfileError),
    /// Word expansion failed.
    #[error(transparent)]
    Shell(#[from] berth_dockerfile::shell::ShellError),
    /// Bad value (port, signal).
    #[error("{0}")]
    Invalid(String),
    /// Not allowed here.
    #[error("{0:?} is not a valid change command")]
    NotAllowed(String),
}

/// The default shell of Linux images.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}

/// The SHELL in effect for a config.
pub fn shell_of(config: &ImageConfig) -> Vec<String> {
    config
        .config
        .as_ref()
        .and_then(|c| c.shell.clone())
        .unwrap_or_else(default_shell)
}

/// Go's `%q` of a string slice: `["/bin/echo" "Hello"]`.
pub fn go_quote_list(v: &[String]) -> String {
    let q: Vec<String> = v
        .iter()
        .map(|s| berth_dockerfile::parser::go_quote(s))
        .collect();
    format!("[{}]", q.join(" "))
}

/// Per-stage state the metadata instructions need besides the config.
#[derive(Debug, Default, Clone)]
pub struct StageState {
    /// Whether CMD was set in this stage (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
}

/// Applies a metadata instruction (already expanded) to `config`; returns the
/// classic builder's history text, or `None` when `inst` is not metadata-only.
pub fn apply_metadata(
    config: &mut ImageConfig,
    state: &mut StageState,
    inst: &Instruction,
) -> Result<Option<String>, DispatchError> {
    let shell = shell_of(config);
    let nop = |s: String| format!("{} #(nop)  {s}", shell.join(" "));
    let c = config.config_mut();
    let text = match inst {
        Instruction::Cmd(cmd) => {
            let argv = cmd.argv(&shell);
            c.cmd = Some(argv.clone());
            state.cmd_set = true;
            nop(format!("CMD {}", go_quote_list(&argv)))
        }
        Instruction::Entrypoint(cmd) => {
            let argv = cmd.argv(&shell);
            c.entrypoint = Some(argv.clone());
            if !state.cmd_set {
                c.cmd = None;
            }
            nop(format!("ENTRYPOINT {}", go_quote_list(&argv)))
        }
        Instruction::Env(kvs) => {
            let mut parts = Vec::new();
            for kv in kvs {
                c.env_set(&kv.key, &kv.value);
                parts.push(format!("{}={}", kv.key, kv.value));
            }
            nop(format!("ENV {}", parts.join(" ")))
        }
        Instruction::Label(kvs) => {
            let labels = c.labels.get_or_insert_with(BTreeMap::new);
            let mut parts = Vec::new();
            for kv in kvs {
                labels.insert(kv.key.clone(), kv.value.clone());
                parts.push(format!("{}={}", kv.key, kv.value));
            }
            nop(format!("LABEL {}", parts.join(" ")))
        }
        Instruction::Expose(ports) => {
            let exposed = c.exposed_ports.get_or_insert_with(BTreeMap::new);
            let mut all = Vec::new();
            for p in ports {
                for np in expand_port(p)? {
                    exposed.insert(np.clone(), json!({}));
                    all.push(np);
                }
            }
            nop(format!("EXPOSE {}", all.join(" ")))
        }
        Instruction::User(u) => {
            c.user = Some(u.clone());
            nop(format!("USER {u}"))
        }
        Instruction::Workdir(w) => {
            let base = c.working_dir.clone().unwrap_or_else(|| "/".into());
            let dir = resolve_workdir(&base, w);
            c.working_dir = Some(dir.clone());
            nop(format!("WORKDIR {dir}"))
        }
        Instruction::Volume(vs) => {
            let vols = c.volumes.get_or_insert_with(BTreeMap::new);
            for v in vs {
                vols.insert(v.clone(), json!({}));
            }
            nop(format!("VOLUME {}", go_quote_list(vs)))
        }
        Instruction::StopSignal(s) => {
            validate_signal(s)?;
            c.stop_signal = Some(s.clone());
            nop(format!("STOPSIGNAL {s}"))
        }
        Instruction::Shell(sh) => {
            c.shell = Some(sh.clone());
            nop(format!("SHELL {}", go_quote_list(sh)))
        }
        Instruction::Onbuild(t) => {
            c.on_build.get_or_insert_with(Vec::new).push(t.clone());
            nop(format!("ONBUILD {t}"))
        }
        Instruction::Healthcheck(h) => {
            let hc = match h {
                Healthcheck::None => HealthConfig {
                    test: Some(vec!["NONE".into()]),
                    ..Default::default()
                },
                Healthcheck::Cmd {
                    test,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                } => HealthConfig {
                    test: Some(test.clone()),
                    interval: *interval,
                    timeout: *timeout,
                    start_period: *start_period,
                    start_interval: *start_interval,
                    retries: *retries,
                },
            };
            let t = hc.test.clone().unwrap_or_default();
            c.healthcheck = Some(hc);
            nop(format!("HEALTHCHECK {}", go_quote_list(&t)))
        }
        Instruction::Maintainer(m) => {
            config.author = Some(m.clone());
            nop(format!("MAINTAINER {m}"))
        }
        _ => return Ok(None),
    };
    Ok(Some(text))
}

/// `docker import --change` / `docker commit --change`: one instruction, expanded
/// with the image's environment, applied to `config`.
pub fn apply_change(config: &mut ImageConfig, change: &str) -> Result<(), DispatchError> {
    let located = instructions::parse_instruction(change)?;
    let mut inst = located.inst;
    match inst {
        Instruction::Cmd(_)
        | Instruction::Entrypoint(_)
        | Instruction::Env(_)
        | Instruction::Expose(_)
        | Instruction::Label(_)
        | Instruction::Onbuild(_)
        | Instruction::User(_)
        | Instruction::Volume(_)
        | Instruction::Workdir(_)
        | Instruction::StopSignal(_)
        | Instruction::Healthcheck(_)
        | Instruction::Shell(_) => {}
        other => return Err(DispatchError::NotAllowed(other.name().to_string())),
    }
    let env = config
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    inst.expand(&Lex::new('\\'), &env_lookup(&env))?;
    // A --change CMD never clears through ENTRYPOINT's rule: treat CMD as set.
    let mut state = StageState { cmd_set: true };
    apply_metadata(config, &mut state, &inst)?;
    Ok(())
}

/// `80` → `80/tcp`; `8000-8002/udp` → three ports.
pub fn expand_port(spec: &str) -> Result<Vec<String>, DispatchError> {
    let bad = || DispatchError::Invalid(format!("invalid containerPort: {spec}"));
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(DispatchError::Invalid(format!("invalid proto: {proto}")));
    }
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// WORKDIR semantics: absolute replaces, relative joins, result cleaned.
pub fn resolve_workdir(base: &str, w: &str) -> String {
    let joined = if w.starts_with('/') {
        w.to_string()
    } else {
        format!("{base}/{w}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Signals STOPSIGNAL accepts: names with or without SIG, or numbers.
pub fn validate_signal(s: &str) -> Result<(), DispatchError> {
    const NAMES: &[&str] = &[
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
        "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS", "POLL", "IOT",
    ];
    if let Ok(n) = s.parse::<u32>() {
        if (1..=64).contains(&n) {
            return Ok(());
        }
    } else {
        let up = s.to_ascii_uppercase();
        let name = up.strip_prefix("SIG").unwrap_or(&up);
        if NAMES.contains(&name) || name.starts_with("RTMIN") || name.starts_with("RTMAX") {
            return Ok(());
        }
    }
    Err(DispatchError::Invalid(format!("Invalid signal: {s}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_like_docker_import() {
        let mut c = ImageConfig::new_for_host();
        apply_change(&mut c, "ENV PATH=/usr/bin:/bin").unwrap();
        apply_change(&mut c, "CMD [\"sh\"]").unwrap();
        apply_change(&mut c, "ENV P2=$PATH:/x").unwrap();
        apply_change(&mut c, "EXPOSE 80 9000-9001/udp").unwrap();
        apply_change(&mut c, "WORKDIR /app").unwrap();
        apply_change(&mut c, "WORKDIR sub/../src").unwrap();
        apply_change(&mut c, "LABEL a=b \"c d\"=e").unwrap();
        let cc = c.config.as_ref().unwrap();
        assert_eq!(cc.cmd, Some(vec!["sh".into()]));
        assert_eq!(cc.env_get("P2"), Some("/usr/bin:/bin:/x"));
        let ports: Vec<&String> = cc.exposed_ports.as_ref().unwrap().keys().collect();
        assert_eq!(ports, vec!["80/tcp", "9000/udp", "9001/udp"]);
        assert_eq!(cc.working_dir.as_deref(), Some("/app/src"));
        assert_eq!(cc.labels.as_ref().unwrap()["c d"], "e");
        assert!(matches!(
            apply_change(&mut c, "RUN true"),
            Err(DispatchError::NotAllowed(_))
        ));
        assert!(apply_change(&mut c, "STOPSIGNAL SIGNOPE").is_err());
        assert!(apply_change(&mut c, "EXPOSE 99999").is_err());
    }

    #[test]
    fn entrypoint_clears_inherited_cmd_and_history_text() {
        let mut c = ImageConfig::new_for_host();
        c.config_mut().cmd = Some(vec!["/bin/bash".into()]);
        let mut st = StageState::default();
        let ep = instructions::parse_instruction("ENTRYPOINT [\"/bin/echo\", \"Hello\"]").unwrap();
        let t = apply_metadata(&mut c, &mut st, &ep.inst).unwrap().unwrap();
        assert_eq!(t, "/bin/sh -c #(nop)  ENTRYPOINT [\"/bin/echo\" \"Hello\"]");
        assert_eq!(c.config.as_ref().unwrap().cmd, None);
        let cmd = instructions::parse_instruction("CMD [\"world\"]").unwrap();
        let t = apply_metadata(&mut c, &mut st, &cmd.inst).unwrap().unwrap();
        assert_eq!(t, "/bin/sh -c #(nop)  CMD [\"world\"]");
        let sh = instructions::parse_instruction("CMD echo $HOME").unwrap();
        apply_metadata(&mut c, &mut st, &sh.inst).unwrap();
        assert_eq!(
            c.config.as_ref().unwrap().cmd,
            Some(vec!["/bin/sh".into(), "-c".into(), "echo $HOME".into()])
        );
    }
}

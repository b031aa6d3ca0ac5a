//! The stage planner and the context a step is built in: which stages the
//! target needs and in what groups they can be built at once (a stage's
//! FROM, `COPY --from` and `RUN --mount=from=` name the earlier stages it
//! uses), and the two borrowed bundles every step function takes — [`Plan`]
//! (what all stages of one build read) and [`Step`] (one instruction of
//! one stage, located for its errors).

use super::*;

/// What every stage of one build reads: the Dockerfile (and its name in
/// errors), the context, the options, the meta ARGs (before the first
/// FROM), the stages built so far, and the step counter the progress shows.
pub(super) struct Plan<'p> {
    pub(super) df: &'p Dockerfile,
    pub(super) file: &'p str,
    pub(super) ctx: &'p Context,
    pub(super) opts: &'p BuildOptions,
    pub(super) meta: &'p BTreeMap<String, String>,
    pub(super) done: &'p BTreeMap<usize, StageImage>,
    pub(super) step_no: &'p AtomicUsize,
    pub(super) total: usize,
    /// The platform asked for (`--platform`), which stages are built for
    /// unless their FROM says another; none: each stage is its base's.
    pub(super) platform: Option<&'p Platform>,
    /// Whether the build makes several platforms (steps are labelled with
    /// theirs, as BuildKit's `[linux/arm64 2/3]`).
    pub(super) several: bool,
}

impl Plan<'_> {
    /// The next step's number (of [`Plan::total`]).
    pub(super) fn next_step(&self) -> usize {
        self.step_no.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// How step `n` is shown: `2/3`, or `linux/arm64 2/3` when the build
    /// makes several platforms.
    pub(super) fn step_label(&self, n: usize) -> String {
        match self.platform.filter(|_| self.several) {
            // arm64's default variant goes unsaid, as BuildKit shows it.
            Some(p) if p.architecture == "arm64" && p.variant.as_deref() == Some("v8") => {
                format!("{}/{} {n}/{}", p.os, p.architecture, self.total)
            }
            Some(p) => format!("{p} {n}/{}", self.total),
            None => format!("{n}/{}", self.total),
        }
    }
}

/// One instruction of stage `idx`: where it is (its errors say
/// `file:line`), its text as written (the cache's step id), its number in
/// the build, and the ARGs in scope.
pub(super) struct Step<'s> {
    pub(super) plan: &'s Plan<'s>,
    pub(super) idx: usize,
    pub(super) cmd: &'s Located,
    pub(super) text: &'s str,
    pub(super) n: usize,
    pub(super) args: &'s BTreeMap<String, String>,
}

pub(super) fn step_err(file: &str, l: &Located, cause: impl Into<Cause>) -> BuildError {
    BuildError::Step {
        file: file.to_string(),
        line: l.node.start_line,
        source: cause.into(),
    }
}

/// The image (or stage name, or `scratch`) stage `idx`'s FROM names, with the
/// meta ARGs expanded.
pub(super) fn stage_base(
    df: &Dockerfile,
    idx: usize,
    meta: &BTreeMap<String, String>,
    file: &str,
) -> Result<String, BuildError> {
    let stage: &Stage = &df.stages[idx];
    let meta_env: Vec<String> = meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut from = stage.from.inst.clone();
    from.expand(
        &Lex::new(df.escape),
        &berth_dockerfile::shell::env_lookup(&meta_env),
    )
    .map_err(|e| step_err(file, &stage.from, e))?;
    let Instruction::From { image: base, .. } = from else {
        unreachable!("stage starts with FROM")
    };
    Ok(base)
}

/// The platform stage `idx` is built for: its FROM's `--platform` (with
/// the meta ARGs, `$BUILDPLATFORM` among them, expanded), else the one the
/// build asked for; none when neither says (the base's own).
pub(super) fn stage_platform(
    df: &Dockerfile,
    idx: usize,
    meta: &BTreeMap<String, String>,
    file: &str,
    asked: Option<&Platform>,
) -> Result<Option<Platform>, BuildError> {
    let stage: &Stage = &df.stages[idx];
    let Some(written) = &stage.platform else {
        return Ok(asked.cloned());
    };
    let meta_env: Vec<String> = meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let value = Lex::new(df.escape)
        .process_word(written, &berth_dockerfile::shell::env_lookup(&meta_env))
        .map_err(|e| step_err(file, &stage.from, e))?;
    Platform::parse(&value)
        .map(Some)
        .map_err(|e| step_err(file, &stage.from, format!("FROM --platform: {e}")))
}

/// The earlier stage (before `idx`) named `name`, if there is one.
pub(super) fn earlier_stage(df: &Dockerfile, idx: usize, name: &str) -> Option<usize> {
    let name = name.to_ascii_lowercase();
    df.stages
        .iter()
        .take(idx)
        .position(|s| s.name.as_deref() == Some(name.as_str()))
}

/// The earlier stages stage `i` uses: its FROM, COPY --from, RUN --mount
/// from=.
fn stage_refs(df: &Dockerfile, i: usize) -> Vec<usize> {
    let st = &df.stages[i];
    let mut refs: Vec<String> = vec![st.base.to_ascii_lowercase()];
    for c in &st.commands {
        match &c.inst {
            Instruction::Copy(a) | Instruction::Add(a) => {
                if let Some(f) = &a.from {
                    refs.push(f.to_ascii_lowercase());
                }
            }
            Instruction::Run(r) => {
                for m in &r.mounts {
                    if let Ok(crate::run_mount::RunMount::Bind { from: Some(f), .. }) =
                        crate::run_mount::parse(m)
                    {
                        refs.push(f.to_ascii_lowercase());
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for r in refs {
        for (j, s) in df.stages.iter().enumerate().take(i) {
            if (s.name.as_deref() == Some(r.as_str()) || j.to_string() == r) && !out.contains(&j) {
                out.push(j);
            }
        }
    }
    out
}

/// Stages the target needs, in order.
pub(super) fn needed_stages(df: &Dockerfile, target: usize) -> Vec<usize> {
    let mut need = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if need.insert(i) {
            todo.extend(stage_refs(df, i));
        }
    }
    need.into_iter().collect()
}

/// The needed stages grouped so that each group depends only on earlier
/// groups: the stages of a group can be built at the same time.
pub(super) fn stage_levels(df: &Dockerfile, needed: &[usize]) -> Vec<Vec<usize>> {
    let mut level: BTreeMap<usize, usize> = BTreeMap::new();
    for &i in needed {
        let l = stage_refs(df, i)
            .iter()
            .filter_map(|j| level.get(j))
            .map(|l| l + 1)
            .max()
            .unwrap_or(0);
        level.insert(i, l);
    }
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, l) in level {
        if out.len() <= l {
            out.resize(l + 1, Vec::new());
        }
        out[l].push(i);
    }
    out
}

/// The number of steps the progress counts for the stages in `needed`:
/// each FROM, and each RUN, COPY, ADD and WORKDIR.
pub(super) fn count_steps(df: &Dockerfile, needed: &[usize]) -> usize {
    needed
        .iter()
        .map(|i| {
            1 + df.stages[*i]
                .commands
                .iter()
                .filter(|c| {
                    matches!(
                        c.inst,
                        Instruction::Run(_)
                            | Instruction::Copy(_)
                            | Instruction::Add(_)
                            | Instruction::Workdir(_)
                    )
                })
                .count()
        })
        .sum()
}

/// The build's global scope: the automatic platform args, then the ARGs
/// before the first FROM, valued from the build args or their defaults
/// (expanded with what came before).
pub(super) fn meta_args(
    df: &Dockerfile,
    opts: &BuildOptions,
    target: &Platform,
) -> BTreeMap<String, String> {
    let mut meta: BTreeMap<String, String> = platform_args(target);
    for a in &df.meta_args {
        if let Instruction::Arg(decls) = &a.inst {
            for d in decls {
                let v = opts.build_args.get(&d.name).cloned().or_else(|| {
                    d.default.as_ref().map(|def| {
                        let env: Vec<String> =
                            meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        Lex::new(df.escape)
                            .process_word(def, &berth_dockerfile::shell::env_lookup(&env))
                            .unwrap_or_default()
                    })
                });
                if let Some(v) = v {
                    meta.insert(d.name.clone(), v);
                }
            }
        }
    }
    meta
}

/// The stage `--target` names (case-blind), or the last one.
pub(super) fn target_stage(df: &Dockerfile, target: Option<&str>) -> Result<usize, BuildError> {
    match target {
        Some(t) => df
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
            .ok_or_else(|| BuildError::msg(format!("target stage \"{t}\" could not be found"))),
        None => Ok(df.stages.len() - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Dockerfile {
        instructions::parse(src, "Dockerfile").unwrap()
    }

    const MULTI: &str = "\
FROM busybox AS base
RUN echo base
FROM base AS tools
RUN echo tools
FROM busybox AS docs
RUN echo docs
FROM scratch AS unused
COPY --from=docs /x /x
FROM base AS final
COPY --from=tools /t /t
RUN --mount=type=bind,from=docs,target=/d cat /d/x
WORKDIR /app
";

    #[test]
    fn the_target_needs_only_the_stages_it_names() {
        let df = parse(MULTI);
        // final (4) uses base (0) through FROM, tools (1) through COPY
        // --from, docs (2) through a RUN bind; `unused` (3) is skipped.
        assert_eq!(needed_stages(&df, 4), vec![0, 1, 2, 4]);
        assert_eq!(needed_stages(&df, 3), vec![2, 3]);
        assert_eq!(needed_stages(&df, 0), vec![0]);
    }

    #[test]
    fn independent_stages_share_a_level() {
        let df = parse(MULTI);
        let levels = stage_levels(&df, &needed_stages(&df, 4));
        // base and docs have no earlier stage: built at once; tools waits
        // for base; final for all three.
        assert_eq!(levels, vec![vec![0, 2], vec![1], vec![4]]);
    }

    #[test]
    fn stages_are_named_case_blind_or_by_index() {
        let df = parse(
            "FROM busybox AS Build\nRUN true\nFROM busybox\nCOPY --from=0 /a /a\nFROM build\n",
        );
        assert_eq!(needed_stages(&df, 1), vec![0, 1]);
        assert_eq!(needed_stages(&df, 2), vec![0, 2]);
        assert_eq!(earlier_stage(&df, 2, "BUILD"), Some(0));
        assert_eq!(earlier_stage(&df, 0, "build"), None);
    }

    #[test]
    fn the_progress_counts_from_and_the_steps_that_run() {
        let df = parse(MULTI);
        // FROM each (4) + RUN base, RUN tools, RUN docs, COPY, RUN, WORKDIR.
        assert_eq!(count_steps(&df, &needed_stages(&df, 4)), 10);
    }

    #[test]
    fn meta_args_take_build_args_then_defaults_and_the_target_is_found() {
        let df = parse("ARG A=1\nARG B=${A}2\nARG C\nFROM x AS Last\n");
        let mut opts = BuildOptions::default();
        let host = Platform::host();
        let meta = meta_args(&df, &opts, &host);
        assert_eq!(meta.get("A").map(String::as_str), Some("1"));
        assert_eq!(meta.get("B").map(String::as_str), Some("12"));
        assert!(!meta.contains_key("C"));
        assert!(meta.contains_key("TARGETARCH"));
        opts.build_args.insert("A".into(), "9".into());
        opts.build_args.insert("C".into(), "c".into());
        let meta = meta_args(&df, &opts, &host);
        assert_eq!(meta.get("B").map(String::as_str), Some("92"));
        assert_eq!(meta.get("C").map(String::as_str), Some("c"));
        assert_eq!(target_stage(&df, Some("LAST")).unwrap(), 0);
        assert_eq!(target_stage(&df, None).unwrap(), 0);
        assert!(
            target_stage(&df, Some("nope"))
                .unwrap_err()
                .to_string()
                .contains("target stage \"nope\" could not be found")
        );
    }

    #[test]
    fn target_args_name_the_platform_built_and_build_args_this_machine() {
        // BuildKit's automatic args: TARGET* for the platform being built,
        // BUILD* for the builder's own; a meta ARG can derive from them.
        let df =
            parse("ARG OUT=bin-${TARGETARCH}\nFROM --platform=$BUILDPLATFORM x AS cross\nFROM x\n");
        let arm = Platform::parse("linux/arm64").unwrap();
        let meta = meta_args(&df, &BuildOptions::default(), &arm);
        assert_eq!(meta["TARGETPLATFORM"], "linux/arm64/v8");
        assert_eq!(meta["TARGETOS"], "linux");
        assert_eq!(meta["TARGETARCH"], "arm64");
        assert_eq!(meta["TARGETVARIANT"], "v8");
        assert_eq!(meta["OUT"], "bin-arm64");
        let host = Platform::host();
        assert_eq!(meta["BUILDARCH"], host.architecture);
        assert_eq!(meta["BUILDPLATFORM"], host.to_string());
        // FROM --platform=$BUILDPLATFORM builds that stage for this machine;
        // a stage without the flag is built for the platform asked for.
        assert_eq!(
            stage_platform(&df, 0, &meta, "Dockerfile", Some(&arm)).unwrap(),
            Some(host)
        );
        assert_eq!(
            stage_platform(&df, 1, &meta, "Dockerfile", Some(&arm)).unwrap(),
            Some(arm)
        );
        assert_eq!(
            stage_platform(&df, 1, &meta, "Dockerfile", None).unwrap(),
            None
        );
        let bad = parse("FROM --platform=linux x\n");
        let e = stage_platform(&bad, 0, &meta, "Dockerfile", None).unwrap_err();
        assert!(
            e.to_string().starts_with("Dockerfile:1: FROM --platform"),
            "{e}"
        );
    }

    #[test]
    fn from_expands_the_meta_args() {
        let df = parse("ARG V=3.9\nFROM python:${V}-slim\n");
        let mut meta = BTreeMap::new();
        meta.insert("V".to_string(), "3.12".to_string());
        assert_eq!(
            stage_base(&df, 0, &meta, "Dockerfile").unwrap(),
            "python:3.12-slim"
        );
    }
}

//! One stage of a build: its base (`scratch`, an earlier stage or an image
//! in the store), the default PATH docker's builders add, the base's ONBUILD
//! triggers, then each instruction with its words expanded (build args in
//! scope, then ENV): ARG and metadata as history rows, RUN, COPY/ADD and
//! WORKDIR as steps.

use super::*;

impl<'a> Builder<'a> {
    /// Builds stage `idx` of `plan`: its base, then each instruction
    /// (ONBUILD triggers of the base first); `used_args` collects the build
    /// args it read.
    pub(super) fn build_stage(
        &mut self,
        plan: &Plan<'_>,
        idx: usize,
        used_args: &mut BTreeSet<String>,
    ) -> Result<StageImage, BuildError> {
        let (file, opts, meta) = (plan.file, plan.opts, plan.meta);
        let stage: &Stage = &plan.df.stages[idx];
        let lex = Lex::new(plan.df.escape);
        let mut st = self.stage_base_state(plan, idx)?;
        let commands = with_triggers(&mut st, stage)?;
        let mut state = StageState::default();
        // ARGs in scope for this stage, with values.
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        for cmd in &commands {
            // The environment words expand with: build args in scope, then ENV.
            let mut env: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            env.extend(
                st.config
                    .config
                    .as_ref()
                    .and_then(|c| c.env.clone())
                    .unwrap_or_default(),
            );
            let mut inst = cmd.inst.clone();
            let used = inst
                .expand(&lex, &berth_dockerfile::shell::env_lookup(&env))
                .map_err(|e| step_err(file, cmd, e))?;
            used_args.extend(used.iter().filter(|u| args.contains_key(*u)).cloned());
            let text = cmd.node.original.trim().to_string();
            match &inst {
                Instruction::Arg(decls) => {
                    arg_step(&mut st, decls, opts, meta, &mut args, used_args);
                }
                Instruction::Run(r) => {
                    let step = Step {
                        plan,
                        idx,
                        cmd,
                        text: &text,
                        n: plan.next_step(),
                        args: &args,
                    };
                    st = self.run_step(&step, r, st)?;
                }
                Instruction::Copy(c) | Instruction::Add(c) => {
                    let n_step = plan.next_step();
                    let is_add = matches!(inst, Instruction::Add(_));
                    // Unquoted heredoc delimiters expand their body, quotes kept.
                    let mut c = c.clone();
                    let hlex = Lex {
                        skip_process_quotes: true,
                        ..lex
                    };
                    for h in c.heredocs.iter_mut().filter(|h| h.expand) {
                        h.content = hlex
                            .process_word(&h.content, &berth_dockerfile::shell::env_lookup(&env))
                            .map_err(|e| step_err(file, cmd, e))?;
                    }
                    let step = Step {
                        plan,
                        idx,
                        cmd,
                        text: &text,
                        n: n_step,
                        args: &args,
                    };
                    st = self.copy_step(&step, &c, is_add, st)?;
                }
                Instruction::Workdir(w) => {
                    let n_step = plan.next_step();
                    let base_dir = st
                        .config
                        .config
                        .as_ref()
                        .and_then(|c| c.working_dir.clone())
                        .unwrap_or_else(|| "/".into());
                    let dir = dispatch::resolve_workdir(&base_dir, w);
                    let step = Step {
                        plan,
                        idx,
                        cmd,
                        text: &text,
                        n: n_step,
                        args: &args,
                    };
                    st = self.workdir_step(&step, &dir, st)?;
                    dispatch::apply_metadata(&mut st.config, &mut state, &inst)
                        .map_err(|e| step_err(file, cmd, e))?;
                }
                Instruction::From { .. } => unreachable!("FROM starts stages"),
                _ => {
                    let created_by = dispatch::apply_metadata(&mut st.config, &mut state, &inst)
                        .map_err(|e| step_err(file, cmd, e))?
                        .unwrap_or_default();
                    st.config.history.push(History {
                        created: Some(created(opts)),
                        created_by: Some(created_by.clone()),
                        empty_layer: true,
                        ..Default::default()
                    });
                    st.key = cache::key(&st.key, &created_by, &Inputs::default());
                }
            }
        }
        Ok(self.stage_finish(st, opts))
    }

    /// The state stage `idx` starts from, shown as its FROM step: scratch,
    /// an earlier stage's result, or an image of the store; with docker's
    /// default PATH when the base sets none.
    fn stage_base_state(&mut self, plan: &Plan<'_>, idx: usize) -> Result<StageImage, BuildError> {
        let (df, file, meta, done) = (plan.df, plan.file, plan.meta, plan.done);
        let stage: &Stage = &df.stages[idx];
        let base = &stage_base(df, idx, meta, file)?;
        let platform = plan::stage_platform(df, idx, meta, file, plan.platform)?;
        let n_step = plan.next_step();
        let (v, t) = self.vertex(&format!(
            "[{}{}] FROM {}",
            stage
                .name
                .as_ref()
                .map(|n| format!("{n} "))
                .unwrap_or_default(),
            plan.step_label(n_step),
            base
        ));
        let check = |arch: &str| -> Result<(), BuildError> {
            if let Some(check) = &self.platform_check {
                check(arch).map_err(|e| {
                    step_err(
                        file,
                        &stage.from,
                        format!("base image {base} is for linux/{arch}: {e}"),
                    )
                })?;
            }
            Ok(())
        };
        let st = if base == "scratch" {
            let mut config = ImageConfig::new_for_host();
            let mut key = "scratch".to_string();
            if let Some(p) = platform.as_ref().filter(|p| !p.matches(&Platform::host())) {
                config.os = p.os.clone();
                config.architecture = p.architecture.clone();
                config.variant = p.variant.clone();
                key = format!("scratch {p}");
                check(&p.architecture)?;
            }
            StageImage {
                config,
                layers: Vec::new(),
                key: Digest::sha256_of(key.as_bytes()).hex().to_string(),
            }
        } else if let Some(j) = earlier_stage(df, idx, base) {
            done.get(&j)
                .cloned()
                .ok_or_else(|| step_err(file, &stage.from, format!("stage {base} was not built")))?
        } else {
            // fetch_bases pulled it already, if it could be pulled.
            let found = match &platform {
                Some(p) => self.store.resolve_platform(base, p),
                None => self.store.resolve(base),
            };
            let img = found.map_err(|_| {
                step_err(file, &stage.from, format!("base image {base}: not found in the local store: pull, import, load or build it first"))
            })?;
            let c = &img.config;
            if let Some(p) = &platform
                && !of_platform(c, p)
            {
                return Err(step_err(
                    file,
                    &stage.from,
                    format!(
                        "base image {base} is for {}/{}, not {p}: the store has no {p} image of it (pull it for {p}, or build it with --platform {p})",
                        c.os, c.architecture
                    ),
                ));
            }
            if !c.architecture.is_empty() {
                check(&c.architecture)?;
            }
            // The base's history stays; its created time is its own.
            StageImage {
                config: img.config.clone(),
                layers: img.manifest.layers.clone(),
                key: Digest::sha256_of(format!("FROM {}", img.id).as_bytes())
                    .hex()
                    .to_string(),
            }
        };
        self.done(v, t);
        let mut st = st;
        // Layers of another compression are other results: a zstd build
        // keys its steps apart from a gzip one (an earlier stage's key has
        // it already).
        if plan.opts.compression != berth_store::compress::LayerCompression::Gzip
            && earlier_stage(df, idx, base).is_none()
        {
            st.key =
                Digest::sha256_of(format!("{} {:?}", st.key, plan.opts.compression).as_bytes())
                    .hex()
                    .to_string();
        }
        // docker's builders give every stage a PATH when its base has none.
        {
            let c = st.config.config_mut();
            let env = c.env.get_or_insert_with(Vec::new);
            if !env.iter().any(|e| e.starts_with("PATH=")) {
                env.insert(0, format!("PATH={}", berth_spec::DEFAULT_PATH));
            }
        }
        Ok(st)
    }

    /// The stage's config as the image's: created now, or, when the same
    /// chain of steps was built before (all cached, same metadata; here or
    /// where a shared cache came from), the config it had then, times
    /// included, so the same image id, as with docker.
    fn stage_finish(&self, mut st: StageImage, opts: &BuildOptions) -> StageImage {
        st.config.created = Some(created(opts));
        if !opts.no_cache && opts.source_date_epoch.is_none() {
            let shared = || self.remotes.iter().find_map(|r| r.stage(&st.key));
            match self.cache.get_stage(&st.key).or_else(shared) {
                Some(prev) if prev.rootfs.diff_ids == st.config.rootfs.diff_ids => {
                    st.config = prev;
                }
                _ => {}
            }
            let _ = self.cache.put_stage(&st.key, &st.config);
            let mut t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            t.stages.insert(st.key.clone());
        }
        st
    }
}

/// The stage's instructions after the ONBUILD triggers of its base (which
/// run first, and are not inherited further).
fn with_triggers(st: &mut StageImage, stage: &Stage) -> Result<Vec<Located>, BuildError> {
    // ONBUILD triggers of the base run first.
    let triggers: Vec<String> = st
        .config
        .config
        .as_ref()
        .and_then(|c| c.on_build.clone())
        .unwrap_or_default();
    if let Some(c) = st.config.config.as_mut() {
        c.on_build = None;
    }
    let mut commands: Vec<Located> = Vec::new();
    for tr in triggers {
        commands.push(
            instructions::parse_instruction(&tr)
                .map_err(|e| BuildError::msg(format!("ONBUILD trigger {tr:?}: {e}")))?,
        );
    }
    commands.extend(stage.commands.iter().cloned());
    Ok(commands)
}

/// ARG: a history row of its own (no layer) and the args in scope, valued
/// from the build args, the default, or the meta ARG of the same name.
fn arg_step(
    st: &mut StageImage,
    decls: &[instructions::ArgDecl],
    opts: &BuildOptions,
    meta: &BTreeMap<String, String>,
    args: &mut BTreeMap<String, String>,
    used_args: &mut BTreeSet<String>,
) {
    // docker: a history row of its own, no layer.
    let created_by = format!(
        "/bin/sh -c #(nop)  ARG {}",
        decls
            .iter()
            .map(|d| match &d.default {
                Some(v) => format!("{}={v}", d.name),
                None => d.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    st.config.history.push(History {
        created: Some(created(opts)),
        created_by: Some(created_by.clone()),
        empty_layer: true,
        ..Default::default()
    });
    st.key = cache::key(&st.key, &created_by, &Inputs::default());
    for d in decls {
        let val = opts
            .build_args
            .get(&d.name)
            .cloned()
            .or_else(|| d.default.clone())
            .or_else(|| meta.get(&d.name).cloned());
        used_args.insert(d.name.clone());
        match val {
            Some(v) => {
                args.insert(d.name.clone(), v);
            }
            None => {
                args.remove(&d.name);
            }
        }
    }
}

//! RUN steps: the step's mounts (`--mount` caches, binds, secrets, ssh),
//! its sandbox (a container with docker's defaults, BuildKit's hostname),
//! run in this process through the runtime library or, on a stage worker
//! thread, through the `berth-runtime` binary; output streamed line by line.

use super::*;

/// What a RUN step's container is made of: the step's snapshot and its
/// mounts, the command, the network asked for (`RUN --network`), and the
/// step's own mounts (caches, binds, secrets, ssh).
pub(super) struct RunSandbox<'x> {
    pub(super) snap: &'x str,
    pub(super) mounts: &'x [berth_store::snapshot::Mount],
    pub(super) argv: &'x [String],
    pub(super) network: Option<&'x str>,
    pub(super) extra: &'x crate::run_mount::StepMounts,
}

impl<'a> Builder<'a> {
    pub(super) fn run_step(
        &mut self,
        s: &Step<'_>,
        r: &RunArgs,
        st: StageImage,
    ) -> Result<StageImage, BuildError> {
        let default_shell = dispatch::default_shell();
        let args = s.args;
        let shell = st
            .config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .unwrap_or_else(|| default_shell.to_vec());
        let mut argv = r.cmd.argv(&shell);
        let only_heredoc = r.heredocs.len() == 1
            && berth_dockerfile::parser::parse_heredoc(r.cmd.args.join(" ").trim())
                .ok()
                .flatten()
                .is_some_and(|h| h.name == r.heredocs[0].name);
        if only_heredoc && r.cmd.prepend_shell {
            // `RUN <<EOF …`: the heredoc is the script.
            let h = &r.heredocs[0];
            let body = if h.chomp {
                berth_dockerfile::parser::chomp_heredoc(&h.content)
            } else {
                h.content.clone()
            };
            argv = shell.clone();
            argv.push(body);
        } else if !r.heredocs.is_empty() && r.cmd.prepend_shell {
            // The shell reads the heredocs itself: hand it the whole script.
            let mut script = r.cmd.args.join(" ");
            for h in &r.heredocs {
                script.push('\n');
                script.push_str(&h.content);
                script.push_str(&h.name);
            }
            argv = shell.clone();
            argv.push(script);
        }
        let shown = argv.join(" ");
        // ARGs are in the environment of RUN (and in its cache key).
        let mut inputs = Inputs::default();
        for (k, v) in args {
            inputs.items.insert(format!("arg:{k}"), v.clone());
        }
        // Binds from a stage or an image are mounted for this step and
        // unmounted after it, whatever happens.
        let mut froms: Vec<FromMount> = Vec::new();
        let prepared = self.prepare_run_mounts(s, r, &mut inputs, &mut froms);
        let result = match prepared {
            Ok(run_mounts) => self.run_step_inner(s, r, st, (argv, shown), inputs, run_mounts),
            Err(e) => Err(e),
        };
        for m in froms {
            self.unmount_from(m);
        }
        result
    }

    /// RUN --mount: parsed (errors name the line), in the key, and for a bind
    /// the content of what it binds (context files, or a stage's chain id).
    pub(super) fn prepare_run_mounts(
        &mut self,
        s: &Step<'_>,
        r: &RunArgs,
        inputs: &mut Inputs,
        froms: &mut Vec<FromMount>,
    ) -> Result<Vec<crate::run_mount::RunMount>, BuildError> {
        let (file, cmd, opts) = (s.plan.file, s.cmd, s.plan.opts);
        let mut run_mounts = Vec::new();
        for m in &r.mounts {
            let mut rm = crate::run_mount::parse(m).map_err(|e| step_err(file, cmd, e))?;
            if let crate::run_mount::RunMount::Bind {
                target,
                source,
                from,
                ..
            } = &mut rm
            {
                let content = match from.take() {
                    None => {
                        let (tree, real) = crate::run_mount::bind_source(
                            &opts.context,
                            source,
                            "the build context",
                        )
                        .map_err(|e| step_err(file, cmd, e))?;
                        crate::run_mount::content_hash(&tree, &real)
                    }
                    Some(f) => {
                        let fm = self.mount_from(s, &f)?;
                        let c = format!("{f} {}:{source}", fm.content);
                        *from = Some(fm.dir.path().display().to_string());
                        froms.push(fm);
                        c
                    }
                };
                inputs.items.insert(format!("mount:{target}"), content);
            }
            run_mounts.push(rm);
        }
        Ok(run_mounts)
    }

    /// The rest of a RUN step: cache, container, commit.
    pub(super) fn run_step_inner(
        &mut self,
        s: &Step<'_>,
        r: &RunArgs,
        st: StageImage,
        (argv, shown): (Vec<String>, String),
        inputs: Inputs,
        run_mounts: Vec<crate::run_mount::RunMount>,
    ) -> Result<StageImage, BuildError> {
        let (file, cmd, text, opts, args) = (s.plan.file, s.cmd, s.text, s.plan.opts, s.args);
        let n = s.n;
        let step_id = cache::step_id(text);
        let mount_text: String = r.mounts.iter().map(|m| format!("--mount={m} ")).collect();
        let key = cache::key(&st.key, &format!("RUN {mount_text}{shown}"), &inputs);
        let (v, t) = self.vertex(&format!(
            "[{}] RUN {}",
            s.plan.step_label(s.n),
            r.cmd.args.join(" ")
        ));
        if let Some(hit) = self.lookup(v, &key, &step_id, &st.key, &inputs, opts) {
            return Ok(hit);
        }
        let top = st.top_chain();
        self.ensure_unpacked(&st)?;
        let snap = crate::leftovers::step_key(
            berth_types::Digest::sha256_of(format!("{}{}{n}", self.work.display(), key).as_bytes())
                .short(),
        );
        let mounts = self
            .store
            .snapshots
            .prepare(&snap, top.as_ref(), Default::default())
            .map_err(other)?;
        // Mount points the image does not have: made for the mounts by the
        // runtime, removed again before the diff (as BuildKit does).
        let upper = self.store.snapshots.upper_dir(&snap);
        let lowers: Vec<PathBuf> = mounts
            .iter()
            .flat_map(|m| m.options.iter())
            .filter_map(|o| o.strip_prefix("lowerdir="))
            .flat_map(|l| l.split(':').map(PathBuf::from).collect::<Vec<_>>())
            .chain([upper.clone()])
            .collect();
        let cache_root = self.cache.dir().join("mounts");
        let extra = match crate::run_mount::step_mounts(
            &run_mounts,
            &cache_root,
            &opts.context,
            &opts.provided,
            &self.work,
        ) {
            Ok(x) => x,
            Err(e) => {
                let _ = self.store.snapshots.remove_active(&snap);
                return Err(step_err(file, cmd, e));
            }
        };
        // The mount points the step's mounts make where the image has none
        // (its --mount targets, /etc/hosts and the other defaults) are
        // removed after it, as BuildKit removes its mount stubs.
        let defaults = berth_spec::defaults::MOUNT_POINTS
            .iter()
            .map(|p| format!("/{p}"));
        let stubs: Vec<(String, String)> = extra
            .targets
            .iter()
            .cloned()
            .chain(defaults)
            .filter_map(|t| crate::run_mount::stub_root(&t, &lowers))
            .collect();
        let sandbox = RunSandbox {
            snap: &snap,
            mounts: &mounts,
            argv: &argv,
            network: r.network.as_deref(),
            extra: &extra,
        };
        let result = self.run_container(s, &st, sandbox, (v, t));
        let code = match result {
            Ok(c) => c,
            Err(e) => {
                let _ = self.store.snapshots.remove_active(&snap);
                return Err(step_err(file, cmd, e));
            }
        };
        if code != 0 {
            let _ = self.store.snapshots.remove_active(&snap);
            return Err(BuildError::Run {
                file: file.into(),
                line: cmd.node.start_line,
                cmd: shown,
                code,
            });
        }
        for (root, target) in &stubs {
            crate::run_mount::remove_stub(&upper, root, target);
        }
        // History reads as docker's classic builder wrote it: the command itself.
        let parent_key = st.key.clone();
        // docker: the build args in use prefix the command (`|1 V=1 …`).
        let history = if args.is_empty() {
            shown.clone()
        } else {
            let kv: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("|{} {} {shown}", kv.len(), kv.join(" "))
        };
        let mut next = self.commit_snapshot(&snap, st, &history, opts)?;
        next.key = key.clone();
        self.remember(&key, &step_id, &parent_key, &next, &inputs)?;
        self.done(v, t);
        Ok(next)
    }

    /// Runs the step's container on vertex `(v, t)`; its exit code.
    pub(super) fn run_container(
        &mut self,
        s: &Step<'_>,
        st: &StageImage,
        sandbox: RunSandbox<'_>,
        (v, t): (usize, Instant),
    ) -> Result<i32, String> {
        let (args, opts) = (s.args, s.plan.opts);
        let RunSandbox {
            snap,
            mounts,
            argv,
            network,
            extra,
        } = sandbox;
        let bundle = self.work.join(snap);
        std::fs::create_dir_all(bundle.join("rootfs")).map_err(|e| e.to_string())?;
        let cfg = st.config.config.clone().unwrap_or_default();
        let top = st.top_chain();
        let read = |p: &str| {
            top.as_ref()
                .and_then(|t| self.store.snapshots.read_file(t, p))
        };
        let berth_types::user::User {
            uid,
            gid,
            additional_gids: groups,
            home,
        } = berth_types::user::resolve(
            cfg.user.as_deref().unwrap_or(""),
            read("/etc/passwd").as_deref(),
            read("/etc/group").as_deref(),
        )?;
        let mut env: Vec<String> = vec![format!("PATH={}", berth_spec::DEFAULT_PATH)];
        for (k, val) in args {
            berth_spec::env_set(&mut env, &format!("{k}={val}"));
        }
        for e in cfg.env.clone().unwrap_or_default() {
            berth_spec::env_set(&mut env, &e);
        }
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={home}"));
        }
        for e in &extra.env {
            berth_spec::env_set(&mut env, e);
        }
        let hostname = "buildkitsandbox";
        std::fs::write(
            bundle.join("hosts"),
            berth_spec::defaults::hosts_file(hostname, &[], &[]),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(bundle.join("hostname"), format!("{hostname}\n"))
            .map_err(|e| e.to_string())?;
        std::fs::write(
            bundle.join("resolv.conf"),
            std::fs::read("/etc/resolv.conf").unwrap_or_default(),
        )
        .map_err(|e| e.to_string())?;
        let net = match network
            .map(str::to_string)
            .unwrap_or_else(|| opts.network.clone())
            .as_str()
        {
            "" | "default" | "host" => berth_spec::Net::Host,
            "none" => berth_spec::Net::Own,
            other => {
                return Err(format!(
                    "network mode {other:?} not supported (default, host, none)"
                ));
            }
        };
        // A RUN step is a container with docker's defaults (BuildKit's).
        let spec = berth_spec::spec(&berth_spec::Sandbox {
            args: argv.to_vec(),
            env,
            cwd: cfg
                .working_dir
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            user: (uid, gid, groups),
            terminal: false,
            hostname: hostname.into(),
            root: ("rootfs".into(), false),
            caps: berth_spec::capabilities(&[], &[], false),
            privileged: false,
            no_new_privileges: false,
            seccomp: berth_spec::Seccomp::Default,
            net,
            cgroup_ns: false,
            cgroups_path: format!("/berth/{snap}"),
            files: (
                bundle.join("resolv.conf").display().to_string(),
                bundle.join("hostname").display().to_string(),
                bundle.join("hosts").display().to_string(),
            ),
            mounts: extra.mounts.clone(),
            resources: json!({}),
            rlimits: Vec::new(),
            apparmor: None,
        })?;
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec).expect("spec"),
        )
        .map_err(|e| e.to_string())?;
        // Through the binary on a stage worker, or wherever other threads
        // run (a terminal's progress view): a bare clone is for a
        // single-threaded process only.
        let via_binary = self.exec_runtime.clone().or_else(|| {
            (!berth_runtime::process::single_threaded())
                .then(|| self.stage_runtime.clone())
                .flatten()
        });
        if let Some(bin) = via_binary {
            return self.run_bundle_exec(&bin, snap, &bundle, mounts, v, t);
        }
        self.run_bundle_here(snap, &bundle, mounts, (v, t))
    }

    /// Runs the step's bundle in this process through the runtime library,
    /// its output shown line by line as it comes (BuildKit's plain
    /// progress), not when the step ends; its exit code.
    fn run_bundle_here(
        &mut self,
        snap: &str,
        bundle: &Path,
        mounts: &[berth_store::snapshot::Mount],
        (v, t): (usize, Instant),
    ) -> Result<i32, String> {
        let (out_r, out_w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| e.to_string())?;
        let devnull = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
        use std::os::fd::AsRawFd;
        let (rootfs_mounts, fuse) =
            runtime_rootfs(mounts, &bundle.join("merged")).map_err(|e| e.to_string())?;
        let copts = CreateOptions {
            rootfs_mounts,
            stdio: Some([devnull.as_raw_fd(), out_w.as_raw_fd(), out_w.as_raw_fd()]),
            ..Default::default()
        };
        berth_runtime::wait::block_signals();
        let _ = self.runtime.delete(snap, true);
        let pid = self
            .runtime
            .create(snap, bundle, &copts)
            .map_err(|e| e.to_string())?;
        drop(out_w);
        self.runtime.start(snap).map_err(|e| e.to_string())?;
        let io = berth_runtime::wait::Stdio::Pipes {
            out: out_r,
            err: rustix::io::dup(&devnull).map_err(|e| e.to_string())?,
            input: None,
        };
        // Each line of output as it comes (BuildKit's plain progress), not
        // when the step ends: a long install shows what it is doing.
        let mut partial: Vec<u8> = Vec::new();
        let code = berth_runtime::wait::proxy(pid, io, false, &mut |_, data| {
            partial.extend_from_slice(data);
            while let Some(i) = partial.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = partial.drain(..=i).collect();
                self.line(&format!(
                    "#{v} {:.3} {}",
                    t.elapsed().as_secs_f64(),
                    String::from_utf8_lossy(&l[..l.len() - 1])
                ));
            }
        });
        if !partial.is_empty() {
            self.line(&format!(
                "#{v} {:.3} {}",
                t.elapsed().as_secs_f64(),
                String::from_utf8_lossy(&partial)
            ));
        }
        let _ = self.runtime.delete(snap, true);
        // Unmounted before the bundle goes, or its removal would reach
        // into the snapshot.
        drop(fuse);
        let _ = std::fs::remove_dir_all(bundle);
        Ok(code)
    }

    /// [`Builder::run_container`] on a stage worker thread: the step's
    /// snapshot is mounted where config.json's root points, and the bundle
    /// runs through the `berth-runtime` binary, its output read line by line.
    pub(super) fn run_bundle_exec(
        &mut self,
        bin: &Path,
        snap: &str,
        bundle: &Path,
        mounts: &[berth_store::snapshot::Mount],
        v: usize,
        t: Instant,
    ) -> Result<i32, String> {
        use std::io::BufRead;
        let rootfs = bundle.join("rootfs");
        let mounted = mount_snapshot(mounts, &rootfs).map_err(|e| e.to_string())?;
        let root = self.runtime.root().to_path_buf();
        // A leftover of the same name first, and the container after.
        let delete = || {
            let _ = std::process::Command::new(bin)
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", snap])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        };
        delete();
        let run = (|| -> Result<i32, String> {
            let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| e.to_string())?;
            let w2 = w.try_clone().map_err(|e| e.to_string())?;
            let mut child = std::process::Command::new(bin)
                .arg("--root")
                .arg(&root)
                .args(["run", "--bundle"])
                .arg(bundle)
                .arg(snap)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::from(w))
                .stderr(std::process::Stdio::from(w2))
                .spawn()
                .map_err(|e| format!("{}: {e}", bin.display()))?;
            let reader = std::io::BufReader::new(std::fs::File::from(r));
            for l in reader.split(b'\n') {
                let l = l.map_err(|e| e.to_string())?;
                self.line(&format!(
                    "#{v} {:.3} {}",
                    t.elapsed().as_secs_f64(),
                    String::from_utf8_lossy(&l)
                ));
            }
            let st = child.wait().map_err(|e| e.to_string())?;
            use std::os::unix::process::ExitStatusExt;
            Ok(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
        })();
        delete();
        // Unmounted before the bundle goes, or its removal would reach
        // into the snapshot.
        drop(mounted);
        let _ = std::fs::remove_dir_all(bundle);
        run
    }
}

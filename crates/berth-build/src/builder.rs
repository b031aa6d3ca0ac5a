//! The build: stages planned from the target, each instruction dispatched (RUN
//! in a container through the runtime library, COPY/ADD through the snapshot of
//! the stage mounted in the builder's private mount namespace, metadata through
//! [`crate::dispatch`]), each filesystem change committed as a layer, each step
//! looked up in and stored to the cache, and BuildKit's plain progress printed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use berth_dockerfile::instructions::{
    self, CopyArgs, Dockerfile, Instruction, Located, RunArgs, Stage,
};
use berth_dockerfile::shell::Lex;
use berth_runtime::rootfs::RootfsMount;
use berth_runtime::{CreateOptions, Runtime};
use berth_store::Store;
use berth_store::archive::diff::{Mapped, Overrides, WriteOptions, write_layer, write_mapped};
use berth_store::image::Image;
use berth_store::inroot::{self, InRoot};
use berth_types::digest::Hasher;
use berth_types::{Descriptor, Digest, History, ImageConfig, Platform, Reference, media_types};
use serde_json::json;

use crate::cache::{self, Cache, Inputs, Record};
use crate::context::Context;
use crate::dispatch::{self, StageState};

/// What went wrong in a build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile.
    #[error(transparent)]
    Dockerfile(#[from] instructions::DockerfileError),
    /// A step, located in the Dockerfile.
    #[error("{file}:{line}: {msg}")]
    Step {
        /// Dockerfile name.
        file: String,
        /// Line.
        line: usize,
        /// What failed.
        msg: String,
    },
    /// A RUN step that exited non-zero.
    #[error("{file}:{line}: process \"{cmd}\" did not complete successfully: exit code: {code}")]
    Run {
        /// Dockerfile name.
        file: String,
        /// Line.
        line: usize,
        /// The command.
        cmd: String,
        /// Its exit code.
        code: i32,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl BuildError {
    /// The exit code `build` should end with (a failing RUN's own code).
    pub fn exit_code(&self) -> i32 {
        match self {
            BuildError::Run { code, .. } => *code,
            _ => 1,
        }
    }
}

/// Build options.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Context directory.
    pub context: PathBuf,
    /// Dockerfile path (default `<context>/Dockerfile`).
    pub dockerfile: Option<PathBuf>,
    /// Dockerfile content given directly (`-f -`).
    pub dockerfile_content: Option<String>,
    /// Names.
    pub tags: Vec<Reference>,
    /// `--build-arg`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
    /// `--network`: `default`, `host`, `none`.
    pub network: String,
    /// `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<i64>,
    /// Print only errors (and the id at the end, by the caller).
    pub quiet: bool,
    /// `--pull`: fetch every base image anew, even when it is in the store.
    pub pull: bool,
    /// `--secret` and `--ssh`, for `RUN --mount=type=secret|ssh`.
    pub provided: crate::run_mount::Provided,
}

impl BuildOptions {
    fn dockerfile_path(&self) -> PathBuf {
        self.dockerfile
            .clone()
            .unwrap_or_else(|| self.context.join("Dockerfile"))
    }

    /// The Dockerfile's name as errors and warnings cite it (`Dockerfile:7`).
    pub fn dockerfile_name(&self) -> String {
        self.dockerfile_path()
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".into())
    }

    /// The Dockerfile's text: given on stdin, or read from `-f` or the context.
    pub fn dockerfile_source(&self) -> Result<String, BuildError> {
        if let Some(c) = &self.dockerfile_content {
            return Ok(c.clone());
        }
        let p = self.dockerfile_path();
        // A byte that is not UTF-8 (a Latin-1 comment) does not stop the
        // build, as it does not stop BuildKit's.
        std::fs::read(&p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| {
                BuildError::Other(format!(
                    "failed to read dockerfile: open {}: {e}",
                    p.display()
                ))
            })
    }
}

/// Fetches a base image into the store (a registry pull); `always` asks for a
/// fresh copy even when one is present.
pub type Fetcher<'a> = Box<dyn FnMut(&str, bool) -> Result<(), String> + Send + 'a>;

/// Downloads a URL for `ADD <url>`: (body, Last-Modified as a unix time).
pub type Downloader<'a> =
    Box<dyn FnMut(&str) -> Result<(Vec<u8>, Option<i64>), String> + Send + 'a>;

/// The builder.
pub struct Builder<'a> {
    store: &'a Store,
    runtime: Runtime,
    work: PathBuf,
    cache: Cache,
    out: Out<'a>,
    /// The last vertex number given out (shared with the stage workers).
    vertex: Arc<AtomicUsize>,
    mounts_made: usize,
    fetch: Option<Fetcher<'a>>,
    download: Option<Arc<Mutex<Downloader<'a>>>>,
    pull_always: bool,
    /// Context files' hashes by identity (shared with the stage workers).
    hashes: Arc<Mutex<crate::cache::HashCache>>,
    /// Set on a stage worker thread: RUN steps run through this `berth-runtime`
    /// binary as a child process (fork and exec are safe from a threaded
    /// process; the runtime library's in-process clone is not).
    exec_runtime: Option<PathBuf>,
}

/// Where progress lines go: the build's writer, or (for a stage built on a
/// worker thread) a channel the main thread writes them from.
enum Out<'a> {
    Direct(Box<dyn Write + Send + 'a>),
    Lines(mpsc::Sender<String>),
}

/// The state of a stage while it is built.
#[derive(Clone)]
struct StageImage {
    config: ImageConfig,
    layers: Vec<Descriptor>,
    key: String,
}

impl StageImage {
    fn top_chain(&self) -> Option<Digest> {
        berth_types::chain_ids(&self.config.rootfs.diff_ids).pop()
    }
}

const PREDEFINED_ARGS: &[&str] = &[
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

fn platform_args() -> BTreeMap<String, String> {
    let p = Platform::host();
    let plat = p.to_string();
    let mut m = BTreeMap::new();
    for pre in ["TARGET", "BUILD"] {
        m.insert(format!("{pre}PLATFORM"), plat.clone());
        m.insert(format!("{pre}OS"), p.os.clone());
        m.insert(format!("{pre}ARCH"), p.architecture.clone());
        m.insert(
            format!("{pre}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    m
}

/// Enters a mount namespace of our own, so the overlays the build mounts for
/// COPY are private to this process and vanish with it.
fn private_mounts() -> Result<(), BuildError> {
    // SAFETY: unshare and a propagation change in the single-threaded CLI.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(BuildError::Other(format!(
                "unshare(CLONE_NEWNS): {}",
                std::io::Error::last_os_error()
            )));
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(BuildError::Other(format!(
                "make / private: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// An earlier stage's or an image's filesystem, mounted for one step.
struct FromMount {
    /// Where it is mounted.
    dir: PathBuf,
    /// The view snapshot behind it.
    snapshot: String,
    /// Its top chain id: what it holds, for cache keys.
    content: String,
}

fn mount_snapshot(
    mounts: &[berth_store::snapshot::Mount],
    target: &Path,
) -> Result<(), BuildError> {
    let m = mounts
        .first()
        .ok_or_else(|| BuildError::Other("snapshot has no mounts".into()))?;
    let tgt = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|e| BuildError::Other(e.to_string()))?;
    let (src, typ, flags, data) = if m.typ == "bind" {
        let ro = m.options.iter().any(|o| o == "ro");
        (
            m.source.clone(),
            None,
            libc::MS_BIND | libc::MS_REC | if ro { libc::MS_RDONLY } else { 0 },
            String::new(),
        )
    } else {
        (
            m.source.clone(),
            Some(m.typ.clone()),
            0,
            m.options.join(","),
        )
    };
    let csrc = std::ffi::CString::new(src).map_err(|e| BuildError::Other(e.to_string()))?;
    let ctyp = typ.map(|t| std::ffi::CString::new(t).expect("fs type"));
    let cdata = std::ffi::CString::new(data).map_err(|e| BuildError::Other(e.to_string()))?;
    // SAFETY: mount with valid C strings.
    let r = unsafe {
        libc::mount(
            csrc.as_ptr(),
            tgt.as_ptr(),
            ctyp.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            flags,
            cdata.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(BuildError::Other(format!(
            "mount {} on {}: {}",
            m.typ,
            target.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

fn unmount(target: &Path) {
    let _ = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
}

fn other<E: std::fmt::Display>(e: E) -> BuildError {
    BuildError::Other(e.to_string())
}

/// The timestamp written into configs and history.
fn created(opts: &BuildOptions) -> String {
    match opts.source_date_epoch {
        Some(s) => jiff::Timestamp::from_second(s)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        None => jiff::Timestamp::now().to_string(),
    }
}

/// The scratch space goes with the builder, whichever way the build ended
/// (a Dockerfile that does not parse included).
impl Drop for Builder<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

impl<'a> Builder<'a> {
    /// A builder over the store, with runtime state and build scratch space under `root`.
    pub fn new(
        store: &'a Store,
        root: &Path,
        out: Box<dyn Write + Send + 'a>,
    ) -> Result<Self, BuildError> {
        let work = root.join("builds").join(crate::leftovers::work_name(
            jiff::Timestamp::now().as_nanosecond(),
        ));
        std::fs::create_dir_all(&work).map_err(other)?;
        Ok(Builder {
            store,
            runtime: Runtime::new(root.join("runtime")),
            work,
            cache: Cache::open(&root.join("buildcache")).map_err(other)?,
            out: Out::Direct(out),
            vertex: Arc::new(AtomicUsize::new(0)),
            mounts_made: 0,
            fetch: None,
            download: None,
            pull_always: false,
            hashes: Arc::new(Mutex::new(crate::cache::HashCache::load(
                &root.join("buildcache"),
            ))),
            exec_runtime: None,
        })
    }

    /// Lets `ADD <url>` download.
    pub fn with_downloader(mut self, d: Downloader<'a>) -> Self {
        self.download = Some(Arc::new(Mutex::new(d)));
        self
    }

    /// How base images missing from the store are fetched (without one, a
    /// missing base is an error).
    pub fn with_fetcher(mut self, f: Fetcher<'a>) -> Self {
        self.fetch = Some(f);
        self
    }

    fn line(&mut self, s: &str) {
        match &mut self.out {
            Out::Direct(w) => {
                let _ = writeln!(w, "{s}");
                let _ = w.flush();
            }
            Out::Lines(tx) => {
                let _ = tx.send(s.to_string());
            }
        }
    }

    fn vertex(&mut self, name: &str) -> (usize, Instant) {
        let v = self.vertex.fetch_add(1, Ordering::Relaxed) + 1;
        self.line(&format!("#{v} {name}"));
        (v, Instant::now())
    }

    fn done(&mut self, v: usize, t: Instant) {
        self.line(&format!("#{v} DONE {:.1}s", t.elapsed().as_secs_f64()));
    }

    /// Builds; returns the image (tagged).
    pub fn build(&mut self, opts: &BuildOptions) -> Result<Image, BuildError> {
        self.pull_always = opts.pull;
        let file = opts.dockerfile_name();
        let (v, t) = self.vertex(&format!("[internal] load build definition from {file}"));
        let src = opts.dockerfile_source()?;
        let df = instructions::parse(&src, &file)?;
        for w in &df.warnings {
            self.line(&format!(" {} warning: {} (line {})", w.rule, w.msg, w.line));
        }
        if let Some(msg) = df.lint_violation() {
            // `# check=error=true`: findings fail the build before any step runs.
            return Err(BuildError::Other(msg));
        }
        self.done(v, t);
        let ctx = Context::open(&opts.context, opts.dockerfile.as_deref()).map_err(|e| {
            BuildError::Other(format!(
                "unable to prepare context: path {:?} not found: {e}",
                opts.context.display().to_string()
            ))
        })?;
        private_mounts()?;
        // The build's lease: gc (prune, rmi) waits while it runs, so the
        // bases, layers and cache records it is about to reference are not
        // collected between its steps (BuildKit keeps leases for the same).
        let lease = self.store.write_lock().map_err(other)?;
        let res = self.build_stages(&df, &file, &ctx, opts);
        self.hashes.lock().unwrap_or_else(|p| p.into_inner()).save();
        let _ = std::fs::remove_dir_all(&self.work);
        let _ = self.store.set_roots("buildcache", &self.cache.referenced());
        drop(lease);
        res
    }

    fn build_stages(
        &mut self,
        df: &Dockerfile,
        file: &str,
        ctx: &Context,
        opts: &BuildOptions,
    ) -> Result<Image, BuildError> {
        // Global scope: ARGs before FROM, build args, automatic platform args.
        let mut meta: BTreeMap<String, String> = platform_args();
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
        let target = match &opts.target {
            Some(t) => df
                .stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
                .ok_or_else(|| {
                    BuildError::Other(format!("target stage \"{t}\" could not be found"))
                })?,
            None => df.stages.len() - 1,
        };
        let needed = needed_stages(df, target);
        let total_steps: usize = needed
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
            .sum();
        let mut results: BTreeMap<usize, StageImage> = BTreeMap::new();
        let step_no = AtomicUsize::new(0);
        let mut used_args = BTreeSet::new();
        // Base images first (pulled if missing, or all with --pull), so that
        // stages can then be built on worker threads, which do not pull.
        self.fetch_bases(df, &needed, &meta, file)?;
        // Stages that do not depend on each other are built at once (their
        // RUN steps go through the berth-runtime binary; without it, in turn).
        for level in stage_levels(df, &needed) {
            if level.len() == 1 || runtime_binary().is_none() {
                for &i in &level {
                    let img = self.build_stage(
                        df,
                        i,
                        file,
                        ctx,
                        opts,
                        &meta,
                        &results,
                        &step_no,
                        total_steps,
                        &mut used_args,
                    )?;
                    results.insert(i, img);
                }
                continue;
            }
            let built = self.build_in_parallel(
                df,
                &level,
                file,
                ctx,
                opts,
                &meta,
                &results,
                &step_no,
                total_steps,
            )?;
            for (i, img, used) in built {
                results.insert(i, img);
                used_args.extend(used);
            }
        }
        let unused: Vec<&String> = opts
            .build_args
            .keys()
            .filter(|k| {
                !used_args.contains(*k)
                    && !meta.contains_key(*k)
                    && !PREDEFINED_ARGS.contains(&k.as_str())
            })
            .collect();
        if !unused.is_empty() {
            self.line(&format!(
                "[Warning] One or more build-args {unused:?} were not consumed"
            ));
        }
        let mut fin = results.remove(&target).expect("target built");
        if !opts.labels.is_empty() {
            let labels = fin
                .config
                .config_mut()
                .labels
                .get_or_insert_with(BTreeMap::new);
            labels.extend(opts.labels.clone());
        }
        let (v, t) = self.vertex("exporting to image");
        let _w = self.store.write_lock().map_err(other)?;
        let first = opts.tags.first();
        let image = self
            .store
            .put_image(&fin.config, fin.layers.clone(), first)
            .map_err(other)?;
        for tag in opts.tags.iter().skip(1) {
            self.store.tag(&image, tag).map_err(other)?;
        }
        self.line(&format!("#{v} writing image {}", image.id));
        for tag in &opts.tags {
            self.line(&format!(
                "#{v} naming to {}",
                tag.clone().with_default_tag()
            ));
        }
        self.done(v, t);
        Ok(image)
    }

    /// The base image a stage's FROM names, with the meta ARGs expanded, if
    /// it is an image (not `scratch`, not an earlier stage).
    fn stage_base_image(
        df: &Dockerfile,
        idx: usize,
        meta: &BTreeMap<String, String>,
        file: &str,
    ) -> Result<Option<String>, BuildError> {
        let base = stage_base(df, idx, meta, file)?;
        Ok((base != "scratch" && earlier_stage(df, idx, &base).is_none()).then_some(base))
    }

    /// Pulls the base images of the stages to build that are missing (all of
    /// them with `--pull`), before any stage starts.
    fn fetch_bases(
        &mut self,
        df: &Dockerfile,
        needed: &[usize],
        meta: &BTreeMap<String, String>,
        file: &str,
    ) -> Result<(), BuildError> {
        let mut seen = BTreeSet::new();
        for &i in needed {
            let Some(base) = Self::stage_base_image(df, i, meta, file)? else {
                continue;
            };
            if !seen.insert(base.clone()) {
                continue;
            }
            let present = self.store.resolve(&base).is_ok();
            if (!present || self.pull_always)
                && let Some(f) = self.fetch.as_mut()
            {
                f(&base, self.pull_always).map_err(|e| {
                    step_err(file, &df.stages[i].from, format!("base image {base}: {e}"))
                })?;
            }
        }
        // Pulled once: the stages take what is in the store now.
        self.pull_always = false;
        Ok(())
    }

    /// Builds independent stages each on its own thread, with a builder of
    /// its own (scratch space, mount points) sharing the store, the cache,
    /// the vertex numbers and the downloader; their progress lines come here
    /// to be written as they arrive. The first failure in stage order is the
    /// build's.
    #[allow(clippy::too_many_arguments)]
    fn build_in_parallel(
        &mut self,
        df: &Dockerfile,
        level: &[usize],
        file: &str,
        ctx: &Context,
        opts: &BuildOptions,
        meta: &BTreeMap<String, String>,
        done: &BTreeMap<usize, StageImage>,
        step_no: &AtomicUsize,
        total: usize,
    ) -> Result<Vec<(usize, StageImage, BTreeSet<String>)>, BuildError> {
        let runtime_bin = runtime_binary().ok_or_else(|| {
            BuildError::Other("berth-runtime is not installed beside berth".into())
        })?;
        let (tx, rx) = mpsc::channel::<String>();
        let mut workers = Vec::new();
        for &i in level {
            let work = self.work.join(format!("stage{i}"));
            std::fs::create_dir_all(&work).map_err(other)?;
            workers.push((
                i,
                Builder {
                    store: self.store,
                    runtime: self.runtime.clone(),
                    work,
                    cache: self.cache.clone(),
                    out: Out::Lines(tx.clone()),
                    vertex: self.vertex.clone(),
                    mounts_made: 0,
                    fetch: None,
                    download: self.download.clone(),
                    pull_always: false,
                    hashes: self.hashes.clone(),
                    exec_runtime: Some(runtime_bin.clone()),
                },
            ));
        }
        drop(tx);
        let outcomes = std::thread::scope(|sc| {
            let handles: Vec<_> = workers
                .into_iter()
                .map(|(i, mut w)| {
                    sc.spawn(move || {
                        let mut used = BTreeSet::new();
                        let r = w.build_stage(
                            df, i, file, ctx, opts, meta, done, step_no, total, &mut used,
                        );
                        (i, r, used)
                    })
                })
                .collect();
            for l in rx {
                self.line(&l);
            }
            handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
        });
        let mut built = Vec::new();
        for o in outcomes {
            let (i, r, used) =
                o.map_err(|_| BuildError::Other("a stage's build thread panicked".into()))?;
            built.push((i, r?, used));
        }
        Ok(built)
    }

    #[allow(clippy::too_many_arguments)]
    fn build_stage(
        &mut self,
        df: &Dockerfile,
        idx: usize,
        file: &str,
        ctx: &Context,
        opts: &BuildOptions,
        meta: &BTreeMap<String, String>,
        done: &BTreeMap<usize, StageImage>,
        step_no: &AtomicUsize,
        total: usize,
        used_args: &mut BTreeSet<String>,
    ) -> Result<StageImage, BuildError> {
        let stage: &Stage = &df.stages[idx];
        let lex = Lex::new(df.escape);
        let base = &stage_base(df, idx, meta, file)?;
        let n_step = step_no.fetch_add(1, Ordering::Relaxed) + 1;
        let (v, t) = self.vertex(&format!(
            "[{}{}/{}] FROM {}",
            stage
                .name
                .as_ref()
                .map(|n| format!("{n} "))
                .unwrap_or_default(),
            n_step,
            total,
            base
        ));
        let mut st = if base == "scratch" {
            StageImage {
                config: ImageConfig::new_for_host(),
                layers: Vec::new(),
                key: Digest::sha256_of(b"scratch").hex().to_string(),
            }
        } else if let Some(j) = earlier_stage(df, idx, base) {
            done.get(&j)
                .cloned()
                .ok_or_else(|| step_err(file, &stage.from, format!("stage {base} was not built")))?
        } else {
            // fetch_bases pulled it already, if it could be pulled.
            let img = self.store.resolve(base).map_err(|_| {
                step_err(file, &stage.from, format!("base image {base}: not found in the local store: pull, import, load or build it first"))
            })?;
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
        // docker's builders give every stage a PATH when its base has none.
        {
            let c = st.config.config_mut();
            let env = c.env.get_or_insert_with(Vec::new);
            if !env.iter().any(|e| e.starts_with("PATH=")) {
                env.insert(0, format!("PATH={}", berth_spec::DEFAULT_PATH));
            }
        }
        let mut state = StageState::default();
        // ARGs in scope for this stage, with values.
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        let shell_default = || dispatch::default_shell();
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
                    .map_err(|e| BuildError::Other(format!("ONBUILD trigger {tr:?}: {e}")))?,
            );
        }
        commands.extend(stage.commands.iter().cloned());
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
                Instruction::Run(r) => {
                    let n_step = step_no.fetch_add(1, Ordering::Relaxed) + 1;
                    st = self.run_step(
                        file,
                        cmd,
                        r,
                        &text,
                        st,
                        &args,
                        opts,
                        (n_step, total),
                        &shell_default(),
                        (df, idx, done),
                    )?;
                }
                Instruction::Copy(c) | Instruction::Add(c) => {
                    let n_step = step_no.fetch_add(1, Ordering::Relaxed) + 1;
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
                    st = self.copy_step(
                        file, cmd, &c, is_add, &text, st, ctx, df, idx, done, opts, n_step, total,
                    )?;
                }
                Instruction::Workdir(w) => {
                    let n_step = step_no.fetch_add(1, Ordering::Relaxed) + 1;
                    let base_dir = st
                        .config
                        .config
                        .as_ref()
                        .and_then(|c| c.working_dir.clone())
                        .unwrap_or_else(|| "/".into());
                    let dir = dispatch::resolve_workdir(&base_dir, w);
                    st = self.workdir_step(file, cmd, &dir, &text, st, opts, n_step, total)?;
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
        st.config.created = Some(created(opts));
        // The same chain of steps as before (all cached, same metadata): the
        // same config, times included, so the same image id, as with docker.
        if !opts.no_cache && opts.source_date_epoch.is_none() {
            match self.cache.get_stage(&st.key) {
                Some(prev) if prev.rootfs.diff_ids == st.config.rootfs.diff_ids => {
                    st.config = prev;
                }
                _ => {
                    let _ = self.cache.put_stage(&st.key, &st.config);
                }
            }
        }
        Ok(st)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_step(
        &mut self,
        file: &str,
        cmd: &Located,
        r: &RunArgs,
        text: &str,
        st: StageImage,
        args: &BTreeMap<String, String>,
        opts: &BuildOptions,
        (n, total): (usize, usize),
        default_shell: &[String],
        (df, idx, done): (&Dockerfile, usize, &BTreeMap<usize, StageImage>),
    ) -> Result<StageImage, BuildError> {
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
        let prepared = self.prepare_run_mounts(
            r,
            opts,
            (df, idx, done),
            file,
            cmd,
            n,
            &mut inputs,
            &mut froms,
        );
        let result = match prepared {
            Ok(run_mounts) => self.run_step_inner(
                file,
                cmd,
                r,
                text,
                st,
                args,
                opts,
                (n, total),
                (argv, shown),
                inputs,
                run_mounts,
            ),
            Err(e) => Err(e),
        };
        for m in froms {
            self.unmount_from(m);
        }
        result
    }

    /// RUN --mount: parsed (errors name the line), in the key, and for a bind
    /// the content of what it binds (context files, or a stage's chain id).
    #[allow(clippy::too_many_arguments)]
    fn prepare_run_mounts(
        &mut self,
        r: &RunArgs,
        opts: &BuildOptions,
        (df, idx, done): (&Dockerfile, usize, &BTreeMap<usize, StageImage>),
        file: &str,
        cmd: &Located,
        n: usize,
        inputs: &mut Inputs,
        froms: &mut Vec<FromMount>,
    ) -> Result<Vec<crate::run_mount::RunMount>, BuildError> {
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
                        let fm = self.mount_from(&f, df, idx, done, file, cmd, n)?;
                        let c = format!("{f} {}:{source}", fm.content);
                        *from = Some(fm.dir.display().to_string());
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
    #[allow(clippy::too_many_arguments)]
    fn run_step_inner(
        &mut self,
        file: &str,
        cmd: &Located,
        r: &RunArgs,
        text: &str,
        st: StageImage,
        args: &BTreeMap<String, String>,
        opts: &BuildOptions,
        (n, total): (usize, usize),
        (argv, shown): (Vec<String>, String),
        inputs: Inputs,
        run_mounts: Vec<crate::run_mount::RunMount>,
    ) -> Result<StageImage, BuildError> {
        let step_id = cache::step_id(text);
        let mount_text: String = r.mounts.iter().map(|m| format!("--mount={m} ")).collect();
        let key = cache::key(&st.key, &format!("RUN {mount_text}{shown}"), &inputs);
        let (v, t) = self.vertex(&format!("[{n}/{total}] RUN {}", r.cmd.args.join(" ")));
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
        let defaults = berth_runtime::defaults::MOUNT_POINTS
            .iter()
            .map(|p| format!("/{p}"));
        let stubs: Vec<(String, String)> = extra
            .targets
            .iter()
            .cloned()
            .chain(defaults)
            .filter_map(|t| crate::run_mount::stub_root(&t, &lowers))
            .collect();
        let result = self.run_container(
            &snap,
            &mounts,
            &st,
            &argv,
            args,
            opts,
            r.network.as_deref(),
            &extra,
            v,
            t,
        );
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

    /// Records a finished step in the cache: `key` (a child of `parent`)
    /// gives `next`.
    fn remember(
        &self,
        key: &str,
        step_id: &str,
        parent: &str,
        next: &StageImage,
        inputs: &Inputs,
    ) -> Result<(), BuildError> {
        let rec = Record {
            config: next.config.clone(),
            layers: next.layers.clone(),
        };
        self.cache
            .put(key, step_id, parent, &rec, inputs)
            .map_err(other)
    }

    /// Step `key`'s cached result (said as `CACHED` on vertex `v`), unless
    /// the build is `--no-cache`; on a miss, says why, from what step
    /// `step_id` was last run with under `parent`.
    fn lookup(
        &mut self,
        v: usize,
        key: &str,
        step_id: &str,
        parent: &str,
        inputs: &Inputs,
        opts: &BuildOptions,
    ) -> Option<StageImage> {
        if opts.no_cache {
            return None;
        }
        if let Some(rec) = self.cached(key) {
            self.line(&format!("#{v} CACHED"));
            return Some(StageImage {
                config: rec.config,
                layers: rec.layers,
                key: key.to_string(),
            });
        }
        let why = self.cache.explain(step_id, parent, inputs);
        self.line(&format!("#{v} cache miss: {why}"));
        None
    }

    fn cached(&self, key: &str) -> Option<Record> {
        let rec = self.cache.get(key)?;
        // Only usable if every blob and layer is still there.
        let chains = berth_types::chain_ids(&rec.config.rootfs.diff_ids);
        let ok = rec
            .layers
            .iter()
            .all(|l| self.store.content.exists(&l.digest))
            && chains.iter().all(|c| self.store.snapshots.has_layer(c));
        ok.then_some(rec)
    }

    fn ensure_unpacked(&self, st: &StageImage) -> Result<(), BuildError> {
        let blobs: Vec<Digest> = st.layers.iter().map(|l| l.digest.clone()).collect();
        self.store
            .unpack(&blobs, &st.config.rootfs.diff_ids)
            .map_err(other)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn run_container(
        &mut self,
        snap: &str,
        mounts: &[berth_store::snapshot::Mount],
        st: &StageImage,
        argv: &[String],
        args: &BTreeMap<String, String>,
        opts: &BuildOptions,
        network: Option<&str>,
        extra: &crate::run_mount::StepMounts,
        v: usize,
        t: Instant,
    ) -> Result<i32, String> {
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
            berth_runtime::defaults::hosts_file(hostname, &[], &[]),
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
        if let Some(bin) = self.exec_runtime.clone() {
            return self.run_bundle_exec(&bin, snap, &bundle, mounts, v, t);
        }
        let (out_r, out_w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| e.to_string())?;
        let devnull = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
        use std::os::fd::AsRawFd;
        let copts = CreateOptions {
            rootfs_mounts: mounts
                .iter()
                .map(|m| RootfsMount {
                    typ: m.typ.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                })
                .collect(),
            stdio: Some([devnull.as_raw_fd(), out_w.as_raw_fd(), out_w.as_raw_fd()]),
            ..Default::default()
        };
        berth_runtime::wait::block_signals();
        let _ = self.runtime.delete(snap, true);
        let pid = self
            .runtime
            .create(snap, &bundle, &copts)
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
        let _ = std::fs::remove_dir_all(&bundle);
        Ok(code)
    }

    /// [`Builder::run_container`] on a stage worker thread: the step's
    /// snapshot is mounted where config.json's root points, and the bundle
    /// runs through the `berth-runtime` binary, its output read line by line.
    fn run_bundle_exec(
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
        mount_snapshot(mounts, &rootfs).map_err(|e| e.to_string())?;
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
        unmount(&rootfs);
        let _ = std::fs::remove_dir_all(bundle);
        run
    }

    /// Diffs an active snapshot into a layer (gzip blob + committed snapshot) and
    /// appends it, with history, to the state.
    fn commit_snapshot(
        &mut self,
        snap: &str,
        mut st: StageImage,
        created_by: &str,
        opts: &BuildOptions,
    ) -> Result<StageImage, BuildError> {
        let changes = self.store.snapshots.changes(snap).map_err(other)?;
        let upper = self.store.snapshots.upper_dir(snap);
        if changes.is_empty() {
            self.store.snapshots.remove_active(snap).map_err(other)?;
            st.config.history.push(History {
                created: Some(created(opts)),
                created_by: Some(created_by.into()),
                empty_layer: true,
                ..Default::default()
            });
            return Ok(st);
        }
        let _w = self.store.write_lock().map_err(other)?;
        let writer = self.store.content.writer().map_err(other)?;
        let gz =
            berth_store::pgzip::ParGzEncoder::new(writer, berth_store::image::import::gzip_level())
                .map_err(other)?;
        let tee = HashTee {
            h: Hasher::new(),
            w: gz,
        };
        let wopts = WriteOptions {
            clamp_mtime: opts.source_date_epoch,
        };
        let tee = write_layer(&upper, &changes, tee, &wopts).map_err(other)?;
        let diff_id = tee.h.finish();
        let blob_w = tee.w.finish().map_err(other)?;
        let size = blob_w.len();
        let blob = blob_w.commit(None, None).map_err(other)?;
        let chain = self
            .store
            .snapshots
            .commit_active(snap, &diff_id)
            .map_err(other)?;
        self.store.snapshots.vouch(&chain, &blob).map_err(other)?;
        st.config.rootfs.diff_ids.push(diff_id);
        st.layers
            .push(Descriptor::new(media_types::OCI_LAYER_GZIP, blob, size));
        st.config.history.push(History {
            created: Some(created(opts)),
            created_by: Some(created_by.into()),
            ..Default::default()
        });
        Ok(st)
    }

    #[allow(clippy::too_many_arguments)]
    fn workdir_step(
        &mut self,
        file: &str,
        cmd: &Located,
        dir: &str,
        text: &str,
        st: StageImage,
        opts: &BuildOptions,
        n: usize,
        total: usize,
    ) -> Result<StageImage, BuildError> {
        let key = cache::key(&st.key, &format!("WORKDIR {dir}"), &Inputs::default());
        let (v, t) = self.vertex(&format!("[{n}/{total}] WORKDIR {dir}"));
        if !opts.no_cache
            && let Some(rec) = self.cached(&key)
        {
            self.line(&format!("#{v} CACHED"));
            return Ok(StageImage {
                config: rec.config,
                layers: rec.layers,
                key,
            });
        }
        let _ = text;
        self.ensure_unpacked(&st)?;
        let snap = crate::leftovers::step_key(
            Digest::sha256_of(format!("{}{key}", self.work.display()).as_bytes()).short(),
        );
        let mounts = self
            .store
            .snapshots
            .prepare(&snap, st.top_chain().as_ref(), Default::default())
            .map_err(other)?;
        let mnt = self.mountpoint()?;
        mount_snapshot(&mounts, &mnt).map_err(|e| step_err(file, cmd, e))?;
        let r = pathrs::Root::open(&mnt).and_then(|root| {
            use std::os::unix::fs::PermissionsExt;
            root.mkdir_all(dir, &std::fs::Permissions::from_mode(0o755))
                .map(drop)
        });
        unmount(&mnt);
        r.map_err(|e| step_err(file, cmd, format!("mkdir {dir}: {e}")))?;
        let parent_key = st.key.clone();
        // One history row, docker's words: with the layer of the directory
        // it made, or empty.
        let mut next = self.commit_snapshot(
            &snap,
            st,
            &format!("/bin/sh -c #(nop)  WORKDIR {dir}"),
            opts,
        )?;
        next.key = key.clone();
        self.remember(
            &key,
            &cache::step_id(&format!("WORKDIR {dir}")),
            &parent_key,
            &next,
            &Inputs::default(),
        )?;
        self.done(v, t);
        Ok(next)
    }

    fn mountpoint(&mut self) -> Result<PathBuf, BuildError> {
        self.mounts_made += 1;
        let p = self.work.join(format!("mnt{}", self.mounts_made));
        std::fs::create_dir_all(&p).map_err(other)?;
        Ok(p)
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_step(
        &mut self,
        file: &str,
        cmd: &Located,
        c: &CopyArgs,
        is_add: bool,
        text: &str,
        st: StageImage,
        ctx: &Context,
        df: &Dockerfile,
        idx: usize,
        done: &BTreeMap<usize, StageImage>,
        opts: &BuildOptions,
        n: usize,
        total: usize,
    ) -> Result<StageImage, BuildError> {
        let verb = if is_add { "ADD" } else { "COPY" };
        let (v, t) = self.vertex(&format!(
            "[{n}/{total}] {verb} {}",
            cmd.node.original.trim()[verb.len()..].trim()
        ));
        let workdir = st
            .config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .unwrap_or_else(|| "/".into());
        let dest = dispatch::resolve_workdir(&workdir, &c.dest);
        let n_sources =
            c.sources.iter().filter(|s| !s.starts_with("<<")).count() + c.heredocs.len();
        let dest_is_dir = c.dest.ends_with('/') || c.dest == "." || n_sources > 1;
        if n_sources > 1 && !(c.dest.ends_with('/') || c.dest == ".") {
            return Err(step_err(
                file,
                cmd,
                format!(
                    "When using {verb} with more than one source file, the destination must be a directory and end with a /"
                ),
            ));
        }
        // Where sources come from: the context, an earlier stage, or an image.
        let from = match &c.from {
            None => None,
            Some(f) => Some(self.mount_from(f, df, idx, done, file, cmd, n)?),
        };
        let src_root: PathBuf = match &from {
            None => ctx.root.clone(),
            Some(m) => m.dir.clone(),
        };
        let result = self.copy_from(
            file,
            cmd,
            c,
            is_add,
            text,
            st,
            &src_root,
            &dest,
            dest_is_dir,
            opts,
            v,
            t,
            from.is_none().then_some(ctx),
        );
        if let Some(m) = from {
            self.unmount_from(m);
        }
        result
    }

    /// The filesystem of an earlier stage or of an image in the store (`--from`
    /// of COPY, `from=` of a RUN bind mount), mounted read-only for one step.
    #[allow(clippy::too_many_arguments)]
    fn mount_from(
        &mut self,
        f: &str,
        df: &Dockerfile,
        idx: usize,
        done: &BTreeMap<usize, StageImage>,
        file: &str,
        cmd: &Located,
        n: usize,
    ) -> Result<FromMount, BuildError> {
        let fl = f.to_ascii_lowercase();
        let stage = df
            .stages
            .iter()
            .enumerate()
            .find(|(j, s)| {
                *j < idx && (s.name.as_deref() == Some(fl.as_str()) || j.to_string() == fl)
            })
            .map(|(j, _)| j);
        let src_state = match stage {
            Some(j) => done
                .get(&j)
                .cloned()
                .ok_or_else(|| step_err(file, cmd, format!("stage {f} was not built")))?,
            None => {
                let img = self.store.resolve(f).map_err(|_| {
                    step_err(
                        file,
                        cmd,
                        format!("--from={f}: no such stage or image in the local store"),
                    )
                })?;
                StageImage {
                    config: img.config.clone(),
                    layers: img.manifest.layers.clone(),
                    key: String::new(),
                }
            }
        };
        self.ensure_unpacked(&src_state)?;
        let top = src_state
            .top_chain()
            .ok_or_else(|| step_err(file, cmd, format!("--from={f}: the stage has no files")))?;
        let key = crate::leftovers::view_key(
            Digest::sha256_of(
                format!("{}{}{n}{}", self.work.display(), top, self.mounts_made).as_bytes(),
            )
            .short(),
        );
        let mounts = self
            .store
            .snapshots
            .view(&key, &top, Default::default())
            .map_err(other)?;
        let mnt = self.mountpoint()?;
        if let Err(e) = mount_snapshot(&mounts, &mnt) {
            let _ = self.store.snapshots.remove_active(&key);
            return Err(step_err(file, cmd, e));
        }
        Ok(FromMount {
            dir: mnt,
            snapshot: key,
            content: top.to_string(),
        })
    }

    fn unmount_from(&mut self, m: FromMount) {
        unmount(&m.dir);
        let _ = self.store.snapshots.remove_active(&m.snapshot);
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_from(
        &mut self,
        file: &str,
        cmd: &Located,
        c: &CopyArgs,
        is_add: bool,
        text: &str,
        st: StageImage,
        src_root: &Path,
        dest: &str,
        dest_is_dir: bool,
        opts: &BuildOptions,
        v: usize,
        t: Instant,
        ctx: Option<&Context>,
    ) -> Result<StageImage, BuildError> {
        // Resolve sources and hash them for the cache.
        let tree = match ctx {
            Some(cx) => cx.tree.clone(),
            None => Arc::new(
                InRoot::open(src_root)
                    .map_err(|e| step_err(file, cmd, format!("{}: {e}", src_root.display())))?,
            ),
        };
        let ignore = ctx.map(|cx| &cx.ignore);
        let mut items: Vec<Source> = Vec::new();
        let mut archives: Vec<Source> = Vec::new();
        let mut downloads: Vec<(String, Vec<u8>, i64)> = Vec::new();
        // (repository, commit it names now, destination)
        let mut repos: Vec<(crate::git::GitSource, String, String)> = Vec::new();
        let mut inputs = Inputs::default();
        for s in &c.sources {
            if s.starts_with("<<") {
                continue;
            }
            if crate::git::is_git(s) {
                if !is_add {
                    return Err(step_err(file, cmd, "source can't be a URL for COPY"));
                }
                let g = crate::git::GitSource::parse(s).map_err(|e| step_err(file, cmd, e))?;
                let commit = g.resolve().map_err(|e| step_err(file, cmd, e))?;
                inputs.items.insert(format!("git:{s}"), commit.clone());
                repos.push((g, commit, dest.to_string()));
                continue;
            }
            if s.starts_with("http://") || s.starts_with("https://") {
                if !is_add {
                    return Err(step_err(file, cmd, "source can't be a URL for COPY"));
                }
                let dl = self.download.clone().ok_or_else(|| {
                    step_err(file, cmd, format!("{s}: this builder cannot download"))
                })?;
                let (data, modified) = (dl.lock().unwrap_or_else(|p| p.into_inner()))(s)
                    .map_err(|e| step_err(file, cmd, e))?;
                let sum = Digest::sha256_of(&data);
                if let Some(want) = &c.checksum
                    && *want != sum.to_string()
                {
                    return Err(step_err(
                        file,
                        cmd,
                        format!("{s}: digest mismatch: expected {want}, got {sum}"),
                    ));
                }
                // docker: the last path segment names the file in a directory
                // destination; never extracted; mode 0600.
                let name = s
                    .split(['?', '#'])
                    .next()
                    .unwrap_or_default()
                    .rsplit('/')
                    .find(|x| !x.is_empty())
                    .unwrap_or("index.html")
                    .to_string();
                let target = if dest_is_dir {
                    format!("{}/{name}", dest.trim_end_matches('/'))
                } else {
                    dest.to_string()
                };
                inputs
                    .items
                    .insert(format!("url:{target}"), sum.hex().to_string());
                downloads.push((target, data, modified.unwrap_or(0)));
                continue;
            }
            let not_found = || {
                step_err(
                    file,
                    cmd,
                    format!(
                        "failed to calculate checksum: \"/{}\": not found",
                        s.trim_start_matches("./").trim_start_matches('/')
                    ),
                )
            };
            let matches = crate::context::resolve_sources(&tree, ignore, s);
            if matches.is_empty() {
                return Err(not_found());
            }
            for rel in matches {
                // A source that is a link is followed, inside the tree (BuildKit).
                let real = tree.resolve(&rel).map_err(|_| not_found())?;
                let st = tree
                    .lstat(&real)
                    .map_err(|e| step_err(file, cmd, format!("{rel}: {e}")))?;
                let name = Path::new(&rel)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if inroot::is_dir(&st) {
                    // A directory's contents go into the destination.
                    walk(&tree, &real, dest, &mut items, ignore)
                        .map_err(|e| step_err(file, cmd, e))?;
                } else if is_add && is_archive(&tree, &real) {
                    archives.push(Source {
                        tree: tree.clone(),
                        rel: real,
                        dest: dest.to_string(),
                    });
                } else {
                    let target = if dest_is_dir {
                        format!("{}/{name}", dest.trim_end_matches('/'))
                    } else {
                        dest.to_string()
                    };
                    items.push(Source {
                        tree: tree.clone(),
                        rel: real,
                        dest: target,
                    });
                }
            }
        }
        {
            let mut known = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
            for it in items.iter().chain(archives.iter()) {
                inputs.items.insert(
                    format!("file:{}", it.dest),
                    file_hash(&it.tree, &it.rel, &mut known),
                );
            }
        }
        for h in &c.heredocs {
            inputs.items.insert(
                format!("heredoc:{}", h.name),
                Digest::sha256_of(h.content.as_bytes()).hex().to_string(),
            );
        }
        for (k, val) in [("chown", &c.chown), ("chmod", &c.chmod)] {
            if let Some(x) = val {
                inputs.items.insert(format!("flag:{k}"), x.clone());
            }
        }
        let step_id = cache::step_id(text);
        let key = cache::key(&st.key, text, &inputs);
        if let Some(hit) = self.lookup(v, &key, &step_id, &st.key, &inputs, opts) {
            return Ok(hit);
        }
        // Repositories: fetched now that the step runs; their files go into
        // the destination as a directory's contents do.
        let mut _checkouts = Vec::new();
        for (g, commit, d) in &repos {
            let tmp = tempfile::Builder::new()
                .prefix("git-")
                .tempdir_in(&self.work)
                .map_err(|e| step_err(file, cmd, format!("scratch space: {e}")))?;
            g.checkout(commit, tmp.path(), c.keep_git_dir)
                .map_err(|e| step_err(file, cmd, e))?;
            let repo =
                Arc::new(InRoot::open(tmp.path()).map_err(|e| step_err(file, cmd, e.to_string()))?);
            let sub = repo
                .resolve(g.subdir.as_deref().unwrap_or(""))
                .ok()
                .filter(|r| repo.lstat(r).is_ok_and(|st| inroot::is_dir(&st)));
            let Some(sub) = sub else {
                return Err(step_err(
                    file,
                    cmd,
                    format!(
                        "{}: no directory {:?} in the repository at {commit}",
                        g.remote,
                        g.subdir.as_deref().unwrap_or("")
                    ),
                ));
            };
            walk(&repo, &sub, d, &mut items, None).map_err(|e| step_err(file, cmd, e))?;
            _checkouts.push(tmp);
        }
        self.ensure_unpacked(&st)?;
        let snap = crate::leftovers::step_key(
            Digest::sha256_of(format!("{}{key}", self.work.display()).as_bytes()).short(),
        );
        let mounts = self
            .store
            .snapshots
            .prepare(&snap, st.top_chain().as_ref(), Default::default())
            .map_err(other)?;
        let mnt = self.mountpoint()?;
        mount_snapshot(&mounts, &mnt).map_err(|e| step_err(file, cmd, e))?;
        let applied = (|| -> Result<(), String> {
            let (uid, gid) = match &c.chown {
                Some(ch) => {
                    let pw = std::fs::read(mnt.join("etc/passwd")).ok();
                    let gr = std::fs::read(mnt.join("etc/group")).ok();
                    // BuildKit: a uid without a group means that number as
                    // the gid too; a name, its primary group from passwd.
                    let spec = match ch.parse::<u32>() {
                        Ok(_) => format!("{ch}:{ch}"),
                        Err(_) => ch.clone(),
                    };
                    let u = berth_types::user::resolve(&spec, pw.as_deref(), gr.as_deref())?;
                    (Some(u.uid), Some(u.gid))
                }
                None => (Some(0), Some(0)),
            };
            let mode = c
                .chmod
                .as_deref()
                .map(|m| u32::from_str_radix(m, 8).map_err(|_| format!("invalid chmod {m:?}")))
                .transpose()?;
            let ov = Overrides { uid, gid, mode };
            let mut mapped: Vec<Mapped> = items
                .iter()
                .map(|it| Mapped::InRoot {
                    root: it.tree.clone(),
                    rel: it.rel.as_bytes().to_vec(),
                    name: it.dest.trim_start_matches('/').as_bytes().to_vec(),
                })
                .collect();
            for (d, data, mtime) in &downloads {
                mapped.push(Mapped::Data {
                    name: d.trim_start_matches('/').as_bytes().to_vec(),
                    data: data.clone(),
                    mode: 0o600,
                    mtime: opts.source_date_epoch.unwrap_or(*mtime),
                });
            }
            for h in &c.heredocs {
                let content = if h.chomp {
                    berth_dockerfile::parser::chomp_heredoc(&h.content)
                } else {
                    h.content.clone()
                };
                let d = if dest_is_dir {
                    format!("{}/{}", dest.trim_end_matches('/'), h.name)
                } else {
                    dest.to_string()
                };
                mapped.push(Mapped::Data {
                    name: d.trim_start_matches('/').as_bytes().to_vec(),
                    data: content.into_bytes(),
                    mode: 0o644,
                    mtime: opts.source_date_epoch.unwrap_or(0),
                });
            }
            let tar = write_mapped(
                &mapped,
                &ov,
                Vec::new(),
                &WriteOptions {
                    clamp_mtime: opts.source_date_epoch,
                },
            )
            .map_err(|e| e.to_string())?;
            berth_store::archive::apply::apply(&mnt, &tar[..], &Default::default())
                .map_err(|e| e.to_string())?;
            for a in &archives {
                use std::os::unix::fs::PermissionsExt;
                let root = pathrs::Root::open(&mnt).map_err(|e| e.to_string())?;
                let h = root
                    .mkdir_all(&a.dest, &std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| e.to_string())?;
                let fd: std::os::fd::OwnedFd = h.into();
                let target = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
                let f = a
                    .tree
                    .open_file(&a.rel)
                    .map_err(|e| format!("{}: {e}", a.rel))?;
                let (_, plain) = berth_store::archive::decompress(f).map_err(|e| e.to_string())?;
                berth_store::archive::apply::apply(Path::new(&target), plain, &Default::default())
                    .map_err(|e| format!("extracting {}: {e}", a.rel))?;
            }
            Ok(())
        })();
        unmount(&mnt);
        if let Err(e) = applied {
            let _ = self.store.snapshots.remove_active(&snap);
            return Err(step_err(file, cmd, e));
        }
        let verb = if is_add { "ADD" } else { "COPY" };
        let shown = cmd.node.original.trim()[verb.len()..].trim().to_string();
        let parent_key = st.key.clone();
        let mut next = self.commit_snapshot(
            &snap,
            st,
            &format!("/bin/sh -c #(nop) {verb} {shown}"),
            opts,
        )?;
        next.key = key.clone();
        self.remember(&key, &step_id, &parent_key, &next, &inputs)?;
        self.done(v, t);
        Ok(next)
    }
}

/// A COPY/ADD source: a path inside a tree (the context, a stage, a
/// checkout) and where it goes in the image.
struct Source {
    tree: Arc<InRoot>,
    /// Its real path in the tree (links already followed, inside it).
    rel: String,
    dest: String,
}

/// Adds the contents of directory `dir` of `tree` (sorted, parents first)
/// mapped under `dest`; links inside are kept as links, never followed.
fn walk(
    tree: &Arc<InRoot>,
    dir: &str,
    dest: &str,
    out: &mut Vec<Source>,
    ignore: Option<&crate::context::Ignore>,
) -> Result<(), String> {
    let base = dest.trim_end_matches('/');
    let strip = if dir.is_empty() { 0 } else { dir.len() + 1 };
    tree.walk(dir, &mut |child, st| {
        let excluded = ignore.is_some_and(|ig| ig.excluded(child));
        if excluded && !ignore.is_some_and(|ig| ig.may_include_under(child)) {
            return Ok(false);
        }
        if !excluded {
            out.push(Source {
                tree: tree.clone(),
                rel: child.to_string(),
                dest: format!("{base}/{}", &child[strip..]),
            });
        }
        Ok(inroot::is_dir(st))
    })
    .map_err(|e| format!("{}: {e}", if dir.is_empty() { "." } else { dir }))
}

fn is_archive(tree: &InRoot, rel: &str) -> bool {
    let mut head = [0u8; 512];
    let n = tree
        .open_file(rel)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    let c = berth_store::archive::Compression::detect(&head[..n]);
    c != berth_store::archive::Compression::None || (n >= 262 && &head[257..262] == b"ustar")
}

/// The cache identity of a source: mode, owner and content (a symlink's
/// target); regular files' hashes come from `known` when their identity is
/// unchanged since they were last read.
fn file_hash(tree: &InRoot, rel: &str, known: &mut crate::cache::HashCache) -> String {
    let Ok(md) = tree.lstat(rel) else {
        return "missing".into();
    };
    let meta = format!("{:o}:{}:{}", md.st_mode, md.st_uid, md.st_gid);
    if inroot::is_file(&md) {
        return known.get(&md, || {
            let mut h = Hasher::new();
            h.update(meta.as_bytes());
            if let Ok(f) = tree.open_file(rel) {
                let mut r = std::io::BufReader::with_capacity(256 << 10, f);
                let _ = std::io::copy(&mut r, &mut h);
            }
            h.finish().hex()[..16].to_string()
        });
    }
    let mut h = Hasher::new();
    h.update(meta.as_bytes());
    if inroot::is_symlink(&md) {
        h.update(
            tree.read_link(rel)
                .map(|t| t.display().to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
    }
    h.finish().hex()[..16].to_string()
}

fn step_err(file: &str, l: &Located, msg: impl std::fmt::Display) -> BuildError {
    BuildError::Step {
        file: file.to_string(),
        line: l.node.start_line,
        msg: msg.to_string(),
    }
}

/// The image (or stage name, or `scratch`) stage `idx`'s FROM names, with the
/// meta ARGs expanded.
fn stage_base(
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

/// The earlier stage (before `idx`) named `name`, if there is one.
fn earlier_stage(df: &Dockerfile, idx: usize, name: &str) -> Option<usize> {
    let name = name.to_ascii_lowercase();
    df.stages
        .iter()
        .take(idx)
        .position(|s| s.name.as_deref() == Some(name.as_str()))
}

/// The `berth-runtime` binary beside the running program, which stage worker
/// threads run their containers through.
fn runtime_binary() -> Option<PathBuf> {
    let p = std::env::current_exe()
        .ok()?
        .with_file_name("berth-runtime");
    p.is_file().then_some(p)
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
fn needed_stages(df: &Dockerfile, target: usize) -> Vec<usize> {
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
fn stage_levels(df: &Dockerfile, needed: &[usize]) -> Vec<Vec<usize>> {
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

/// A writer that hashes what passes through (the layer's diff id) on its way
/// to the compressor.
struct HashTee<W: Write> {
    h: Hasher,
    w: W,
}

impl<W: Write> Write for HashTee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.w.write(buf)?;
        self.h.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

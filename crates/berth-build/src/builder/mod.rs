//! The build: stages planned from the target, each instruction dispatched (RUN
//! in a container through the runtime library, COPY/ADD through the snapshot of
//! the stage mounted in the builder's private mount namespace, metadata through
//! [`crate::dispatch`]), each filesystem change committed as a layer, each step
//! looked up in and stored to the cache, and BuildKit's plain progress printed.

mod copy_step;
mod error;
mod layers;
pub use error::{BuildError, Cause};
mod plan;
mod run_step;
mod stage;

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
use berth_types::{Descriptor, Digest, History, ImageConfig, Platform, Reference};
use serde_json::json;

use crate::cache::{self, Cache, Inputs, Record};
use crate::context::Context;
use crate::dispatch::{self, StageState};
use plan::{
    Plan, Step, count_steps, earlier_stage, needed_stages, stage_base, stage_levels, step_err,
};

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
    /// `--compression-format`: how new layers are compressed (gzip unless
    /// asked; steps restored from the cache of a build in the other format
    /// are not reused, their keys differ).
    pub compression: berth_store::compress::LayerCompression,
    /// `--platform`: none builds for each base's platform (this machine's
    /// for `scratch`); one builds that platform's image; several build one
    /// image each, named together by an OCI index.
    pub platforms: Vec<Platform>,
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
                BuildError::msg(format!(
                    "failed to read dockerfile: open {}: {e}",
                    p.display()
                ))
            })
    }
}

/// Fetches a base image into the store (a registry pull); `always` asks for a
/// fresh copy even when one is present; the platform (`os/arch[/variant]`)
/// is the one the stage is built for, when the build names one.
pub type Fetcher<'a> = Box<dyn FnMut(&str, bool, Option<&str>) -> Result<(), String> + Send + 'a>;

/// Called with a base image's architecture before its stage runs: makes
/// sure this machine can run its programs (an emulator), or says why not.
pub type PlatformCheck = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

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
    platform_check: Option<PlatformCheck>,
    download: Option<Arc<Mutex<Downloader<'a>>>>,
    pull_always: bool,
    /// Context files' hashes by identity (shared with the stage workers).
    hashes: Arc<Mutex<crate::cache::HashCache>>,
    /// Set on a stage worker thread: RUN steps run through this `berth-runtime`
    /// binary as a child process (fork and exec are safe from a threaded
    /// process; the runtime library's in-process clone is not).
    exec_runtime: Option<PathBuf>,
    /// The `berth-runtime` binary stage workers run their steps through,
    /// found when the builder is made: after the build enters its private
    /// mount namespace, `/proc/self/exe` may name the binary by a path
    /// outside a chroot the build runs in.
    stage_runtime: Option<PathBuf>,
    /// Shared caches read (`--cache-from`), tried after the local one.
    remotes: Vec<Arc<crate::cache_share::Remote>>,
    /// What this build's steps used or made (shared with stage workers),
    /// for `--cache-to`.
    touched: Arc<Mutex<Touched>>,
}

/// The cache records and finished stages a build used or made, and its
/// final images' layers.
#[derive(Debug, Default)]
struct Touched {
    steps: BTreeSet<String>,
    stages: BTreeSet<String>,
    finals: Vec<Vec<Descriptor>>,
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

/// BuildKit's automatic platform args: `TARGET*` for the platform being
/// built, `BUILD*` for this machine's.
fn platform_args(target: &Platform) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (pre, p) in [("TARGET", target.clone()), ("BUILD", Platform::host())] {
        let plat = p.to_string();
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

/// Whether an image config is of platform `p` (arm64's variant defaults to v8).
fn of_platform(c: &ImageConfig, p: &Platform) -> bool {
    p.matches(&Platform {
        os: c.os.clone(),
        architecture: c.architecture.clone(),
        variant: c.variant.clone(),
        ..Default::default()
    })
}

/// Enters a mount namespace of our own, so the overlays the build mounts for
/// COPY are private to this process and vanish with it.
fn private_mounts() -> Result<(), BuildError> {
    // SAFETY: unshare and a propagation change in the single-threaded CLI.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(BuildError::msg(format!(
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
            return Err(BuildError::msg(format!(
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
    dir: Mounted,
    /// The view snapshot behind it.
    snapshot: String,
    /// Its top chain id: what it holds, for cache keys.
    content: String,
}

/// A snapshot mounted for one step: unmounted when dropped, so no error
/// path of the step's work leaves the mount behind.
pub(super) struct Mounted(PathBuf);

impl Mounted {
    /// Where it is mounted.
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// The runtime's root filesystem mounts for a snapshot (see
/// [`berth_store::snapshot::runtime_mounts`]), with a guard that unmounts
/// a fuse-overlayfs root mounted on `at` when dropped.
fn runtime_rootfs(
    mounts: &[berth_store::snapshot::Mount],
    at: &Path,
) -> Result<(Vec<RootfsMount>, Option<Mounted>), BuildError> {
    let (mounts, mounted) = berth_store::snapshot::runtime_mounts(mounts.to_vec(), at)
        .map_err(|e| BuildError::msg(format!("mount {}: {e}", at.display())))?;
    let all = mounts
        .into_iter()
        .map(|m| RootfsMount {
            typ: m.typ,
            source: m.source,
            options: m.options,
        })
        .collect();
    Ok((all, mounted.then(|| Mounted(at.to_path_buf()))))
}

/// Mounts the first of a snapshot's mounts on `target`.
fn mount_snapshot(
    mounts: &[berth_store::snapshot::Mount],
    target: &Path,
) -> Result<Mounted, BuildError> {
    let m = mounts
        .first()
        .ok_or_else(|| BuildError::msg("snapshot has no mounts"))?;
    if m.typ == berth_store::snapshot::FUSE {
        berth_store::snapshot::mount_fuse(m, target).map_err(|e| BuildError::msg(e.to_string()))?;
        return Ok(Mounted(target.to_path_buf()));
    }
    let tgt = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|e| BuildError::msg(e.to_string()))?;
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
    let csrc = std::ffi::CString::new(src).map_err(|e| BuildError::msg(e.to_string()))?;
    let ctyp = typ.map(|t| std::ffi::CString::new(t).expect("fs type"));
    let cdata = std::ffi::CString::new(data).map_err(|e| BuildError::msg(e.to_string()))?;
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
        return Err(BuildError::msg(format!(
            "mount {} on {}: {}",
            m.typ,
            target.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(Mounted(target.to_path_buf()))
}

fn other<E: Into<Cause>>(e: E) -> BuildError {
    BuildError::Other(e.into())
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
            platform_check: None,
            download: None,
            pull_always: false,
            hashes: Arc::new(Mutex::new(crate::cache::HashCache::load(
                &root.join("buildcache"),
            ))),
            exec_runtime: None,
            stage_runtime: runtime_binary(),
            remotes: Vec::new(),
            touched: Arc::default(),
        })
    }

    /// Steps missing from the local cache are looked up in these shared
    /// caches (`--cache-from`), in turn.
    pub fn with_cache_from(mut self, remotes: Vec<Arc<crate::cache_share::Remote>>) -> Self {
        self.remotes = remotes;
        self
    }

    /// The cache records this build used or made, for `--cache-to`: every
    /// one (`mode=max`), or only those on the final images' layer chains
    /// (`mode=min`, BuildKit's default); and the finished stages' configs
    /// (the final ones for `min`).
    pub fn cache_records(
        &self,
        max: bool,
    ) -> (BTreeMap<String, Record>, BTreeMap<String, ImageConfig>) {
        let t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        let on_final = |layers: &[Descriptor]| {
            t.finals
                .iter()
                .any(|f| f.len() >= layers.len() && f[..layers.len()] == *layers)
        };
        let records = t
            .steps
            .iter()
            .filter_map(|k| Some((k.clone(), self.cache.get(k)?)))
            .filter(|(_, r)| max || on_final(&r.layers))
            .collect();
        let stages = t
            .stages
            .iter()
            .filter_map(|k| Some((k.clone(), self.cache.get_stage(k)?)))
            .filter(|(_, c)| max || t.finals.iter().any(|f| f.len() == c.rootfs.diff_ids.len()))
            .collect();
        (records, stages)
    }

    fn touch_step(&self, key: &str) {
        let mut t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        t.steps.insert(key.to_string());
    }

    /// Lets `ADD <url>` download.
    pub fn with_downloader(mut self, d: Downloader<'a>) -> Self {
        self.download = Some(Arc::new(Mutex::new(d)));
        self
    }

    /// What a foreign base image's architecture is checked with (see
    /// [`PlatformCheck`]; without one, its RUN steps may fail with "exec
    /// format error").
    pub fn with_platform_check(mut self, c: PlatformCheck) -> Self {
        self.platform_check = Some(c);
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
            return Err(BuildError::msg(msg));
        }
        self.done(v, t);
        let ctx = Context::open(&opts.context, opts.dockerfile.as_deref()).map_err(|e| {
            BuildError::msg(format!(
                "unable to prepare context: path {:?} not found: {e}",
                opts.context.display().to_string()
            ))
        })?;
        private_mounts()?;
        // The build's lease: gc (prune, rmi) waits while it runs, so the
        // bases, layers and cache records it is about to reference are not
        // collected between its steps (BuildKit keeps leases for the same).
        let lease = self.store.write_lock().map_err(other)?;
        let res = self.build_platforms(&df, &file, &ctx, opts);
        self.hashes.lock().unwrap_or_else(|p| p.into_inner()).save();
        let _ = std::fs::remove_dir_all(&self.work);
        let _ = self.store.set_roots("buildcache", &self.cache.referenced());
        drop(lease);
        res
    }

    /// The build for each platform asked for (or the one implied), then its
    /// export: one image, or an index over one image per platform.
    fn build_platforms(
        &mut self,
        df: &Dockerfile,
        file: &str,
        ctx: &Context,
        opts: &BuildOptions,
    ) -> Result<Image, BuildError> {
        if opts.platforms.len() <= 1 {
            let fin = self.build_stages(df, file, ctx, opts, opts.platforms.first(), false)?;
            return self.export_image(fin, opts);
        }
        let mut built = Vec::new();
        for p in &opts.platforms {
            let fin = self.build_stages(df, file, ctx, opts, Some(p), true)?;
            built.push(fin);
        }
        self.export_index(built, opts)
    }

    /// Builds the stages the target needs for `platform` (see
    /// [`Plan::platform`]); the target stage's result, labels added.
    fn build_stages(
        &mut self,
        df: &Dockerfile,
        file: &str,
        ctx: &Context,
        opts: &BuildOptions,
        platform: Option<&Platform>,
        several: bool,
    ) -> Result<StageImage, BuildError> {
        let host = Platform::host();
        let meta = plan::meta_args(df, opts, platform.unwrap_or(&host));
        let target = plan::target_stage(df, opts.target.as_deref())?;
        let needed = needed_stages(df, target);
        let total = count_steps(df, &needed);
        let mut results: BTreeMap<usize, StageImage> = BTreeMap::new();
        let step_no = AtomicUsize::new(0);
        let mut used_args = BTreeSet::new();
        // Base images first (pulled if missing, or all with --pull), so that
        // stages can then be built on worker threads, which do not pull.
        self.fetch_bases(df, &needed, &meta, file, platform)?;
        // Stages that do not depend on each other are built at once (their
        // RUN steps go through the berth-runtime binary; without it, in turn).
        for level in stage_levels(df, &needed) {
            let plan = Plan {
                df,
                file,
                ctx,
                opts,
                meta: &meta,
                done: &results,
                step_no: &step_no,
                total,
                platform,
                several,
            };
            let built = if level.len() == 1 || self.stage_runtime.is_none() {
                let mut out = Vec::new();
                for &i in &level {
                    let img = self.build_stage(&plan, i, &mut used_args)?;
                    out.push((i, img, BTreeSet::new()));
                }
                out
            } else {
                self.build_in_parallel(&plan, &level)?
            };
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
        Ok(fin)
    }

    /// Stores the built image under the build's names.
    fn export_image(&mut self, fin: StageImage, opts: &BuildOptions) -> Result<Image, BuildError> {
        let (v, t) = self.vertex("exporting to image");
        let _w = self.store.write_lock().map_err(other)?;
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finals
            .push(fin.layers.clone());
        let first = opts.tags.first();
        let image = self
            .store
            .put_image(&fin.config, fin.layers.clone(), first)
            .map_err(other)?;
        for tag in opts.tags.iter().skip(1) {
            self.store.tag(&image, tag).map_err(other)?;
        }
        self.line(&format!("#{v} writing image {}", image.id));
        self.naming(v, opts);
        self.done(v, t);
        Ok(image)
    }

    /// Stores each platform's image and an OCI index over them, which the
    /// build's names point at; the image returned is the one the index runs
    /// as here, with the index.
    fn export_index(
        &mut self,
        built: Vec<StageImage>,
        opts: &BuildOptions,
    ) -> Result<Image, BuildError> {
        let (v, t) = self.vertex("exporting to image");
        let _w = self.store.write_lock().map_err(other)?;
        let mut children = Vec::new();
        let mut images = Vec::new();
        for fin in built {
            self.touched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .finals
                .push(fin.layers.clone());
            let image = self
                .store
                .put_image(&fin.config, fin.layers.clone(), None)
                .map_err(other)?;
            let c = &image.config;
            let mut desc = image.manifest_desc.clone();
            desc.platform = Some(Platform {
                os: c.os.clone(),
                architecture: c.architecture.clone(),
                variant: c.variant.clone(),
                ..Default::default()
            });
            self.line(&format!(
                "#{v} exporting manifest {} for {}",
                desc.digest,
                desc.platform.as_ref().expect("set")
            ));
            children.push(desc);
            images.push(image);
        }
        let index = self
            .store
            .put_index(children.clone(), &opts.tags)
            .map_err(other)?;
        self.line(&format!("#{v} exporting manifest list {}", index.digest));
        self.naming(v, opts);
        self.done(v, t);
        let host = Platform::host();
        let pick = children
            .iter()
            .position(|d| d.platform.as_ref().is_some_and(|p| host.matches(p)))
            .unwrap_or(0);
        let mut image = images.swap_remove(pick);
        image.index = Some(index);
        image.names = opts
            .tags
            .iter()
            .map(|t| t.clone().with_default_tag())
            .collect();
        Ok(image)
    }

    fn naming(&mut self, v: usize, opts: &BuildOptions) {
        for tag in &opts.tags {
            self.line(&format!(
                "#{v} naming to {}",
                tag.clone().with_default_tag()
            ));
        }
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
    /// them with `--pull`), for the platform each stage is built for, before
    /// any stage starts.
    fn fetch_bases(
        &mut self,
        df: &Dockerfile,
        needed: &[usize],
        meta: &BTreeMap<String, String>,
        file: &str,
        asked: Option<&Platform>,
    ) -> Result<(), BuildError> {
        let mut seen = BTreeSet::new();
        let always = self.pull_always;
        for &i in needed {
            let Some(base) = Self::stage_base_image(df, i, meta, file)? else {
                continue;
            };
            let platform = plan::stage_platform(df, i, meta, file, asked)?;
            if !seen.insert((base.clone(), platform.as_ref().map(Platform::to_string))) {
                continue;
            }
            let present = match &platform {
                Some(p) => self
                    .store
                    .resolve_platform(&base, p)
                    .is_ok_and(|img| of_platform(&img.config, p)),
                None => self.store.resolve(&base).is_ok(),
            };
            if (!present || always)
                && let Some(f) = self.fetch.as_mut()
            {
                let p = platform.as_ref().map(Platform::to_string);
                f(&base, always, p.as_deref()).map_err(|e| {
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
    fn build_in_parallel(
        &mut self,
        plan: &Plan<'_>,
        level: &[usize],
    ) -> Result<Vec<(usize, StageImage, BTreeSet<String>)>, BuildError> {
        let runtime_bin = self
            .stage_runtime
            .clone()
            .ok_or_else(|| BuildError::msg("berth-runtime is not installed beside berth"))?;
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
                    platform_check: self.platform_check.clone(),
                    download: self.download.clone(),
                    pull_always: false,
                    hashes: self.hashes.clone(),
                    exec_runtime: Some(runtime_bin.clone()),
                    stage_runtime: None,
                    remotes: self.remotes.clone(),
                    touched: self.touched.clone(),
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
                        let r = w.build_stage(plan, i, &mut used);
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
            let (i, r, used) = o.map_err(|_| BuildError::msg("a stage's build thread panicked"))?;
            built.push((i, r?, used));
        }
        Ok(built)
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
        self.touch_step(key);
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
        if let Some(rec) = self.hit(v, key, step_id, parent, inputs) {
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

    /// Step `key`'s result from the local cache (said as `CACHED`), else
    /// from a shared one ([`Builder::restore_shared`]).
    fn hit(
        &mut self,
        v: usize,
        key: &str,
        step_id: &str,
        parent: &str,
        inputs: &Inputs,
    ) -> Option<Record> {
        if let Some(rec) = self.cached(key) {
            self.line(&format!("#{v} CACHED"));
            self.touch_step(key);
            return Some(rec);
        }
        self.restore_shared(v, key, step_id, parent, inputs)
    }

    /// Step `key`'s result from the first shared cache that has it (its
    /// layers fetched and unpacked, then kept in the local cache), said as
    /// `CACHED (from …)`. A shared cache that fails to give it is said and
    /// passed over: the step then runs.
    fn restore_shared(
        &mut self,
        v: usize,
        key: &str,
        step_id: &str,
        parent: &str,
        inputs: &Inputs,
    ) -> Option<Record> {
        for r in self.remotes.clone() {
            match r.restore(self.store, key) {
                None => continue,
                Some(Ok(rec)) => {
                    let _ = self.cache.put(key, step_id, parent, &rec, inputs);
                    self.touch_step(key);
                    self.line(&format!("#{v} CACHED (from {})", r.describe()));
                    return Some(rec);
                }
                Some(Err(e)) => self.line(&format!("#{v} cache from {}: {e}", r.describe())),
            }
        }
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
}

/// The `berth-runtime` binary beside the running program, which stage worker
/// threads run their containers through.
fn runtime_binary() -> Option<PathBuf> {
    let p = std::env::current_exe()
        .ok()?
        .with_file_name("berth-runtime");
    p.is_file().then_some(p)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_error_keeps_its_line_and_its_cause() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = BuildError::Step {
            file: "Dockerfile".into(),
            line: 3,
            source: Cause::from(full),
        };
        assert!(
            e.to_string()
                .starts_with("Dockerfile:3: No space left on device"),
            "{e}"
        );
        let cause = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<Cause>())
            .expect("the cause is kept as an error");
        assert!(
            matches!(cause, Cause::Io(io) if io.raw_os_error() == Some(libc::ENOSPC)),
            "{cause:?}"
        );
        // A build error met inside a step keeps its own cause.
        let inner = BuildError::Other(Cause::from(std::io::Error::from_raw_os_error(libc::EIO)));
        assert!(matches!(Cause::from(inner), Cause::Io(_)));
        assert!(matches!(
            Cause::from(BuildError::msg("plain")),
            Cause::Message(m) if m == "plain"
        ));
    }
}

//! COPY and ADD: sources from the context (read inside it), from a stage or
//! an image (`--from`), URLs and git repositories; globs, `.dockerignore`,
//! `--chown`/`--chmod`/`--link`, archives ADD unpacks, and the cache key
//! made of the content hashes.

use super::*;

/// Where a COPY's sources are read and where they go: the root they are
/// resolved in (the context's, or a mounted stage's or image's), the
/// destination (a directory when it ends in `/` or there are several
/// sources), and the context itself when reading from it (for
/// `.dockerignore` and its open tree).
#[derive(Clone, Copy)]
pub(super) struct CopyInto<'x> {
    pub(super) src_root: &'x Path,
    pub(super) dest: &'x str,
    pub(super) dest_is_dir: bool,
    pub(super) ctx: Option<&'x Context>,
}

impl<'a> Builder<'a> {
    pub(super) fn copy_step(
        &mut self,
        s: &Step<'_>,
        c: &CopyArgs,
        is_add: bool,
        st: StageImage,
    ) -> Result<StageImage, BuildError> {
        let (file, cmd, ctx) = (s.plan.file, s.cmd, s.plan.ctx);
        let verb = if is_add { "ADD" } else { "COPY" };
        let (v, t) = self.vertex(&format!(
            "[{}] {verb} {}",
            s.plan.step_label(s.n),
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
            Some(f) => Some(self.mount_from(s, f)?),
        };
        let src_root: PathBuf = match &from {
            None => ctx.root.clone(),
            Some(m) => m.dir.path().to_path_buf(),
        };
        let into = CopyInto {
            src_root: &src_root,
            dest: &dest,
            dest_is_dir,
            ctx: from.is_none().then_some(ctx),
        };
        let result = self.copy_from(s, c, is_add, st, into, (v, t));
        if let Some(m) = from {
            self.unmount_from(m);
        }
        result
    }

    /// The filesystem of an earlier stage or of an image in the store (`--from`
    /// of COPY, `from=` of a RUN bind mount), mounted read-only for one step.
    pub(super) fn mount_from(&mut self, s: &Step<'_>, f: &str) -> Result<FromMount, BuildError> {
        let (df, idx, done) = (s.plan.df, s.idx, s.plan.done);
        let (file, cmd, n) = (s.plan.file, s.cmd, s.n);
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
        let mounted = match mount_snapshot(&mounts, &mnt) {
            Ok(m) => m,
            Err(e) => {
                let _ = self.store.snapshots.remove_active(&key);
                return Err(step_err(file, cmd, e));
            }
        };
        Ok(FromMount {
            dir: mounted,
            snapshot: key,
            content: top.to_string(),
        })
    }

    /// Unmounts a [`FromMount`] and removes its view snapshot.
    pub(super) fn unmount_from(&mut self, m: FromMount) {
        drop(m.dir);
        let _ = self.store.snapshots.remove_active(&m.snapshot);
    }

    /// Copies the sources of `c` into `into`'s destination, on vertex
    /// `(v, t)`: cached by their content, committed as a layer.
    pub(super) fn copy_from(
        &mut self,
        s: &Step<'_>,
        c: &CopyArgs,
        is_add: bool,
        st: StageImage,
        into: CopyInto<'_>,
        (v, t): (usize, Instant),
    ) -> Result<StageImage, BuildError> {
        let (file, cmd, text, opts) = (s.plan.file, s.cmd, s.text, s.plan.opts);
        let Resolved {
            mut items,
            archives,
            downloads,
            repos,
            inputs,
        } = self.resolve_sources(s, c, is_add, &into)?;
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
        let (snap, mnt) = self
            .mount_step(&st, &key)
            .map_err(|e| step_err(file, cmd, e))?;
        let applied = write_sources(
            mnt.path(),
            c,
            &Sources {
                items: &items,
                archives: &archives,
                downloads: &downloads,
            },
            &into,
            opts,
        );
        drop(mnt);
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
    /// ADD's URL source `s`, downloaded and checked against `--checksum`:
    /// where it goes (docker: the URL's last path segment names the file
    /// in a directory destination; never extracted; mode 0600), its bytes,
    /// its Last-Modified time, and its hash for the cache.
    fn download_source(
        &mut self,
        s: &str,
        c: &CopyArgs,
        dest: &str,
        dest_is_dir: bool,
    ) -> Result<(String, Vec<u8>, Option<i64>, String), String> {
        let dl = self
            .download
            .clone()
            .ok_or_else(|| format!("{s}: this builder cannot download"))?;
        let (data, modified) = (dl.lock().unwrap_or_else(|p| p.into_inner()))(s)?;
        let sum = Digest::sha256_of(&data);
        if let Some(want) = &c.checksum
            && *want != sum.to_string()
        {
            return Err(format!("{s}: digest mismatch: expected {want}, got {sum}"));
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
        Ok((target, data, modified, sum.hex().to_string()))
    }

    /// COPY/ADD's sources resolved, each inside its tree (the context, a
    /// stage, an image; links followed as if the tree were `/`), URLs
    /// downloaded and git references resolved to commits, and every one
    /// hashed into the step's cache inputs.
    fn resolve_sources(
        &mut self,
        s: &Step<'_>,
        c: &CopyArgs,
        is_add: bool,
        into: &CopyInto<'_>,
    ) -> Result<Resolved, BuildError> {
        let (file, cmd) = (s.plan.file, s.cmd);
        let CopyInto {
            src_root,
            dest,
            dest_is_dir,
            ctx,
        } = *into;
        // Resolve sources and hash them for the cache.
        let tree = match ctx {
            Some(cx) => cx.tree.clone(),
            None => Arc::new(
                InRoot::open(src_root)
                    .map_err(|e| step_err(file, cmd, format!("{}: {e}", src_root.display())))?,
            ),
        };
        let ignore = ctx.map(|cx| &cx.ignore);
        let mut r = Resolved::default();
        for s in &c.sources {
            if s.starts_with("<<") {
                continue;
            }
            let url = s.starts_with("http://") || s.starts_with("https://");
            if (url || crate::git::is_git(s)) && !is_add {
                return Err(step_err(file, cmd, "source can't be a URL for COPY"));
            }
            if crate::git::is_git(s) {
                let g = crate::git::GitSource::parse(s).map_err(|e| step_err(file, cmd, e))?;
                let commit = g.resolve().map_err(|e| step_err(file, cmd, e))?;
                r.inputs.items.insert(format!("git:{s}"), commit.clone());
                r.repos.push((g, commit, dest.to_string()));
            } else if url {
                let (target, data, modified, sum) = self
                    .download_source(s, c, dest, dest_is_dir)
                    .map_err(|e| step_err(file, cmd, e))?;
                r.inputs.items.insert(format!("url:{target}"), sum);
                r.downloads.push((target, data, modified.unwrap_or(0)));
            } else {
                r.add_local(&tree, ignore, s, into, is_add)
                    .map_err(|e| step_err(file, cmd, e))?;
            }
        }
        {
            let mut known = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
            for it in r.items.iter().chain(r.archives.iter()) {
                r.inputs.items.insert(
                    format!("file:{}", it.dest),
                    file_hash(&it.tree, &it.rel, &mut known),
                );
            }
        }
        for h in &c.heredocs {
            r.inputs.items.insert(
                format!("heredoc:{}", h.name),
                Digest::sha256_of(h.content.as_bytes()).hex().to_string(),
            );
        }
        for (k, val) in [("chown", &c.chown), ("chmod", &c.chmod)] {
            if let Some(x) = val {
                r.inputs.items.insert(format!("flag:{k}"), x.clone());
            }
        }
        Ok(r)
    }
}

impl Resolved {
    /// A path source (a glob) in `tree`: each match, a link followed inside
    /// the tree (BuildKit's rule); a directory's contents go into the
    /// destination, an archive ADD unpacks is kept apart, a file goes into
    /// the destination directory or becomes the destination.
    fn add_local(
        &mut self,
        tree: &Arc<InRoot>,
        ignore: Option<&crate::context::Ignore>,
        s: &str,
        into: &CopyInto<'_>,
        is_add: bool,
    ) -> Result<(), String> {
        let dest = into.dest;
        let not_found = || {
            format!(
                "failed to calculate checksum: \"/{}\": not found",
                s.trim_start_matches("./").trim_start_matches('/')
            )
        };
        let matches = crate::context::resolve_sources(tree, ignore, s);
        if matches.is_empty() {
            return Err(not_found());
        }
        for rel in matches {
            let real = tree.resolve(&rel).map_err(|_| not_found())?;
            let st = tree.lstat(&real).map_err(|e| format!("{rel}: {e}"))?;
            if inroot::is_dir(&st) {
                walk(tree, &real, dest, &mut self.items, ignore)?;
                continue;
            }
            let target = if is_add && is_archive(tree, &real) {
                self.archives.push(Source {
                    tree: tree.clone(),
                    rel: real,
                    dest: dest.to_string(),
                });
                continue;
            } else if into.dest_is_dir {
                let name = Path::new(&rel)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                format!("{}/{name}", dest.trim_end_matches('/'))
            } else {
                dest.to_string()
            };
            self.items.push(Source {
                tree: tree.clone(),
                rel: real,
                dest: target,
            });
        }
        Ok(())
    }
}

/// A COPY/ADD source: a path inside a tree (the context, a stage, a
/// checkout) and where it goes in the image.
pub(super) struct Source {
    tree: Arc<InRoot>,
    /// Its real path in the tree (links already followed, inside it).
    rel: String,
    dest: String,
}

/// Adds the contents of directory `dir` of `tree` (sorted, parents first)
/// mapped under `dest`; links inside are kept as links, never followed.
pub(super) fn walk(
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

pub(super) fn is_archive(tree: &InRoot, rel: &str) -> bool {
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
pub(super) fn file_hash(tree: &InRoot, rel: &str, known: &mut crate::cache::HashCache) -> String {
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

/// What a COPY/ADD writes: the sources resolved, the files downloaded.
struct Sources<'x> {
    items: &'x [Source],
    archives: &'x [Source],
    downloads: &'x [(String, Vec<u8>, i64)],
}

/// A COPY/ADD's sources, as resolved before the cache lookup.
#[derive(Default)]
pub(super) struct Resolved {
    items: Vec<Source>,
    archives: Vec<Source>,
    downloads: Vec<(String, Vec<u8>, i64)>,
    /// (repository, commit it names now, destination)
    repos: Vec<(crate::git::GitSource, String, String)>,
    inputs: Inputs,
}

/// Writes the sources into the stage's snapshot mounted at `mnt`: files
/// (owned and moded as `--chown`/`--chmod` say, else root's), downloads
/// (0600), heredocs, and archives ADD unpacks into their destination.
fn write_sources(
    mnt: &Path,
    c: &CopyArgs,
    src: &Sources<'_>,
    into: &CopyInto<'_>,
    opts: &BuildOptions,
) -> Result<(), String> {
    let (items, archives, downloads) = (src.items, src.archives, src.downloads);
    let (dest, dest_is_dir) = (into.dest, into.dest_is_dir);

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
    for (d, data, mtime) in downloads {
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
    berth_store::archive::apply::apply(mnt, &tar[..], &Default::default())
        .map_err(|e| e.to_string())?;
    for a in archives {
        use std::os::unix::fs::PermissionsExt;
        let root = pathrs::Root::open(mnt).map_err(|e| e.to_string())?;
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
}

//! `ADD <git URL>`: what BuildKit accepts as a git source
//! (`https://…/repo.git`, `git://…`, `ssh://…`, `git@host:path`, each with an
//! optional `#ref:subdir` fragment), resolved to a commit with `git ls-remote`
//! (the commit is the step's cache input, so a moved branch reruns the step
//! and an unchanged one does not even fetch) and fetched shallowly into
//! scratch space. The `git` program does the talking, as with BuildKit: the
//! protocols (smart HTTP, ssh, git://) and credential helpers are its job, and
//! no Rust crate covers them as well.

use std::path::Path;
use std::process::Command;

/// A parsed git source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// What `git` is given (without the fragment).
    pub remote: String,
    /// Branch, tag or commit (`None`: the remote's HEAD).
    pub reference: Option<String>,
    /// The directory of the repository to add (`None`: all of it).
    pub subdir: Option<String>,
}

/// Whether `s` names a git repository rather than a file to download
/// (BuildKit's rules: a git scheme, `git@`, or an http(s) URL ending in
/// `.git` before any fragment).
pub fn is_git(s: &str) -> bool {
    let base = s.split('#').next().unwrap_or_default();
    s.starts_with("git://")
        || s.starts_with("git@")
        || s.starts_with("ssh://")
        || ((s.starts_with("https://") || s.starts_with("http://")) && base.ends_with(".git"))
}

impl GitSource {
    /// Parses `URL[#ref[:subdir]]`.
    pub fn parse(s: &str) -> Result<GitSource, String> {
        let (remote, frag) = match s.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (s, None),
        };
        if remote.is_empty() || remote.starts_with('-') {
            return Err(format!("{s}: not a git repository URL"));
        }
        let (reference, subdir) = match frag {
            None | Some("") => (None, None),
            Some(f) => match f.split_once(':') {
                Some((r, d)) => (
                    (!r.is_empty()).then(|| r.to_string()),
                    (!d.is_empty()).then(|| d.trim_matches('/').to_string()),
                ),
                None => (Some(f.to_string()), None),
            },
        };
        if let Some(r) = &reference
            && (r.starts_with('-') || r.contains(".."))
        {
            return Err(format!("{s}: invalid git reference {r:?}"));
        }
        if let Some(d) = &subdir
            && d.split('/').any(|c| c == "..")
        {
            return Err(format!("{s}: subdirectory {d:?} leaves the repository"));
        }
        Ok(GitSource {
            remote: remote.to_string(),
            reference,
            subdir,
        })
    }

    fn git() -> Command {
        let mut c = Command::new("git");
        // Never wait for a password on a terminal nobody watches.
        c.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
            .stdin(std::process::Stdio::null());
        c
    }

    fn run(c: &mut Command, what: &str) -> Result<String, String> {
        let out = c
            .output()
            .map_err(|e| format!("{what}: cannot run git (is it installed?): {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!("{what}: {}", err.trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The commit the reference names now.
    pub fn resolve(&self) -> Result<String, String> {
        let r = self.reference.as_deref().unwrap_or("HEAD");
        if r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(r.to_ascii_lowercase());
        }
        let what = format!("git ls-remote {} {r}", self.remote);
        let out = Self::run(
            Self::git().args(["ls-remote", "--", &self.remote, r]),
            &what,
        )?;
        // A tag's peeled commit (`^{}`) wins over the tag object; an exact
        // ref over a partial match.
        let lines: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('\t')).collect();
        let pick = |want: &dyn Fn(&str) -> bool| {
            lines
                .iter()
                .find(|(_, name)| want(name))
                .map(|(sha, _)| sha.to_string())
        };
        pick(&|n| n == format!("refs/tags/{r}^{{}}"))
            .or_else(|| {
                pick(&|n| n == r || n == format!("refs/heads/{r}") || n == format!("refs/tags/{r}"))
            })
            .or_else(|| pick(&|_| true))
            .ok_or_else(|| format!("{what}: no such reference"))
    }

    /// Fetches `commit` (shallow) into the empty directory `dir` and checks it
    /// out; keeps `.git` only when asked.
    pub fn checkout(&self, commit: &str, dir: &Path, keep_git_dir: bool) -> Result<(), String> {
        let d = dir.to_str().ok_or("scratch path is not UTF-8")?;
        let what = format!("git fetch {}", self.remote);
        Self::run(Self::git().args(["init", "-q", d]), "git init")?;
        Self::run(
            Self::git().args(["-C", d, "remote", "add", "origin", "--", &self.remote]),
            "git remote add",
        )?;
        // By commit where the server allows it; else by the reference, then
        // checked against the commit resolved for the cache key.
        let by_commit = Self::run(
            Self::git().args(["-C", d, "fetch", "-q", "--depth", "1", "origin", commit]),
            &what,
        );
        if by_commit.is_err() {
            let r = self.reference.as_deref().unwrap_or("HEAD");
            Self::run(
                Self::git().args(["-C", d, "fetch", "-q", "--depth", "1", "origin", r]),
                &what,
            )?;
        }
        let got = Self::run(
            Self::git().args(["-C", d, "rev-parse", "FETCH_HEAD"]),
            "git rev-parse",
        )?;
        if got.trim() != commit {
            return Err(format!(
                "{what}: the reference moved to {} while building (wanted {commit})",
                got.trim()
            ));
        }
        Self::run(
            Self::git().args([
                "-C",
                d,
                "-c",
                "advice.detachedHead=false",
                "checkout",
                "-q",
                "FETCH_HEAD",
            ]),
            "git checkout",
        )?;
        Self::run(
            Self::git().args([
                "-C",
                d,
                "submodule",
                "update",
                "-q",
                "--init",
                "--recursive",
                "--depth",
                "1",
            ]),
            "git submodule update",
        )?;
        if !keep_git_dir {
            std::fs::remove_dir_all(dir.join(".git")).map_err(|e| format!("remove .git: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_buildkit_s_git_sources() {
        for g in [
            "https://github.com/moby/buildkit.git",
            "https://github.com/moby/buildkit.git#v0.10.1",
            "git@github.com:moby/buildkit.git",
            "git://127.0.0.1:9418/repo.git#main:docs",
            "ssh://git@host/repo",
        ] {
            assert!(is_git(g), "{g}");
        }
        for u in [
            "https://example.com/file.tar.gz",
            "http://x/y.git.txt",
            "https://x/a#b.git",
        ] {
            assert!(!is_git(u), "{u}");
        }
    }

    #[test]
    fn fragments() {
        let g = GitSource::parse("https://h/r.git#v1.2:docs/api/").unwrap();
        assert_eq!(g.remote, "https://h/r.git");
        assert_eq!(g.reference.as_deref(), Some("v1.2"));
        assert_eq!(g.subdir.as_deref(), Some("docs/api"));
        let g = GitSource::parse("git@h:r.git#:sub").unwrap();
        assert_eq!((g.reference, g.subdir.as_deref()), (None, Some("sub")));
        let g = GitSource::parse("git://h/r.git").unwrap();
        assert_eq!((g.reference, g.subdir), (None, None));
        assert!(GitSource::parse("git://h/r.git#--upload-pack=x").is_err());
        assert!(GitSource::parse("git://h/r.git#main:../..").is_err());
    }
}

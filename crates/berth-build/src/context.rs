//! The build context: a directory whose files COPY and ADD may read, filtered by
//! `.dockerignore` (or `<Dockerfile>.dockerignore`) with docker's pattern rules
//! (`*`, `?`, `[…]`, `**` for any number of directories, `!` exceptions, the last
//! matching pattern wins), and source globs resolved against it.
//!
//! Sources are resolved inside the context as BuildKit does: a symlink is
//! followed as if the context were `/` (through [`InRoot`]), never out of it,
//! and the ignore rules apply both to the path as written and to the real path
//! a link leads to, so a link cannot bring an ignored file back in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_store::inroot::InRoot;

/// One `.dockerignore` pattern.
#[derive(Debug, Clone)]
struct Pattern {
    parts: Vec<String>,
    exclusion: bool,
}

/// Ignore rules.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// Go's `filepath.Match` for one path component (`*`, `?`, `[a-z]`, `[!x]`, `\` escapes).
pub fn match_component(pat: &str, s: &str) -> bool {
    fn m(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len()).any(|i| m(&p[1..], &s[i..])),
            Some('?') => !s.is_empty() && m(&p[1..], &s[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(1).position(|&c| c == ']').map(|i| i + 1) else {
                    return !s.is_empty() && s[0] == '[' && m(&p[1..], &s[1..]);
                };
                let Some(&c) = s.first() else { return false };
                let class = &p[1..end];
                let (neg, class) = match class.first() {
                    Some('!') | Some('^') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        if class[i] <= c && c <= class[i + 2] {
                            hit = true;
                        }
                        i += 3;
                    } else {
                        if class[i] == c {
                            hit = true;
                        }
                        i += 1;
                    }
                }
                hit != neg && m(&p[end + 1..], &s[1..])
            }
            Some('\\') if p.len() > 1 => !s.is_empty() && s[0] == p[1] && m(&p[2..], &s[1..]),
            Some(&c) => !s.is_empty() && s[0] == c && m(&p[1..], &s[1..]),
        }
    }
    let p: Vec<char> = pat.chars().collect();
    let s: Vec<char> = s.chars().collect();
    m(&p, &s)
}

/// Matches a component-split pattern (with `**`) against a component-split path.
fn match_parts(p: &[String], s: &[&str]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(x) if x == "**" => (0..=s.len()).any(|i| match_parts(&p[1..], &s[i..])),
        Some(x) => !s.is_empty() && match_component(x, s[0]) && match_parts(&p[1..], &s[1..]),
    }
}

impl Ignore {
    /// Parses a `.dockerignore` body.
    pub fn parse(body: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in body.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (exclusion, l) = match l.strip_prefix('!') {
                Some(r) => (true, r.trim()),
                None => (false, l),
            };
            let c = clean(l);
            if c.is_empty() {
                continue;
            }
            patterns.push(Pattern {
                parts: c.split('/').map(str::to_string).collect(),
                exclusion,
            });
        }
        Ignore { patterns }
    }

    /// Whether `rel` (a path relative to the context) is excluded. A path is also
    /// excluded when a parent directory is (patterns match directories too).
    pub fn excluded(&self, rel: &str) -> bool {
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        let mut out = false;
        for p in &self.patterns {
            // The path or any of its parents matching counts.
            let hit = (1..=comps.len()).any(|n| match_parts(&p.parts, &comps[..n]));
            if hit {
                out = !p.exclusion;
            }
        }
        out
    }

    /// Whether an exception pattern might re-include something under `dir`.
    pub fn may_include_under(&self, dir: &str) -> bool {
        let prefix: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| p.parts.len() > prefix.len() || p.parts.iter().any(|x| x == "**"))
    }
}

/// A build context directory with its ignore rules.
#[derive(Debug, Clone)]
pub struct Context {
    /// The directory.
    pub root: PathBuf,
    /// The directory, as the root its sources are resolved in.
    pub tree: Arc<InRoot>,
    /// Ignore rules.
    pub ignore: Ignore,
}

impl Context {
    /// Opens `root`, reading `<dockerfile>.dockerignore` next to the Dockerfile or
    /// `.dockerignore` at the context root.
    pub fn open(root: &Path, dockerfile: Option<&Path>) -> std::io::Result<Context> {
        let root = std::fs::canonicalize(root)?;
        let mut ignore = Ignore::default();
        let specific = dockerfile.map(|d| {
            let mut p = d.as_os_str().to_owned();
            p.push(".dockerignore");
            PathBuf::from(p)
        });
        for cand in specific
            .into_iter()
            .chain(std::iter::once(root.join(".dockerignore")))
        {
            if let Ok(b) = std::fs::read_to_string(&cand) {
                ignore = Ignore::parse(&b);
                break;
            }
        }
        let tree = Arc::new(InRoot::open(&root)?);
        Ok(Context { root, tree, ignore })
    }

    /// Expands a COPY source (relative to the context, globs allowed) into
    /// context-relative paths that exist and are not ignored.
    pub fn resolve(&self, src: &str) -> Vec<String> {
        resolve_sources(&self.tree, Some(&self.ignore), src)
    }
}

/// Expands a COPY source (globs allowed) into the paths under `tree` that
/// it names (as written, symlinks not yet followed), each of which exists
/// inside the tree and, with `ignore`, is not ignored by the path as written
/// nor by the real path its links lead to.
pub fn resolve_sources(tree: &InRoot, ignore: Option<&Ignore>, src: &str) -> Vec<String> {
    let c = clean(src);
    if c.is_empty() {
        return vec![String::new()];
    }
    let join = |base: &str, n: &str| {
        if base.is_empty() {
            n.to_string()
        } else {
            format!("{base}/{n}")
        }
    };
    let mut found = vec![String::new()];
    for part in c.split('/') {
        let mut next = Vec::new();
        for base in &found {
            if !part.contains(['*', '?', '[']) {
                let cand = join(base, part);
                if tree.lstat(&cand).is_ok() {
                    next.push(cand);
                }
                continue;
            }
            let Ok(names) = tree.resolve(base).and_then(|real| tree.read_dir(real)) else {
                continue;
            };
            for n in names {
                let n = n.to_string_lossy();
                if match_component(part, &n) {
                    next.push(join(base, &n));
                }
            }
        }
        found = next;
    }
    if let Some(ig) = ignore {
        found.retain(|f| {
            !ig.excluded(f) && tree.resolve(f).map_or(true, |real| !ig.excluded(&real))
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let i = Ignore::parse(
            "# comment\n*.log\n/tmp\nbuild/**\n!build/keep.txt\n**/secret\nnode_modules\n",
        );
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("dir/a.log"), "* does not cross directories");
        assert!(i.excluded("tmp/x"));
        assert!(i.excluded("build/out/x.o"));
        assert!(!i.excluded("build/keep.txt"), "exception");
        assert!(i.excluded("a/b/secret"));
        assert!(i.excluded("node_modules/x/y.js"));
        assert!(!i.excluded("src/main.rs"));
    }

    #[test]
    fn component_matching() {
        assert!(match_component("*.txt", "a.txt"));
        assert!(match_component("file?.c", "file1.c"));
        assert!(match_component("[a-c]x", "bx"));
        assert!(!match_component("[!a-c]x", "bx"));
        assert!(!match_component("*.txt", "a.md"));
    }

    #[test]
    fn resolves_globs() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("src/sub")).unwrap();
        for f in ["a.txt", "b.txt", "c.md", "src/x.rs", "src/sub/y.rs"] {
            std::fs::write(t.path().join(f), "x").unwrap();
        }
        std::fs::write(t.path().join(".dockerignore"), "b.txt\n").unwrap();
        let c = Context::open(t.path(), None).unwrap();
        assert_eq!(c.resolve("*.txt"), vec!["a.txt"]);
        assert_eq!(c.resolve("src/*.rs"), vec!["src/x.rs"]);
        assert_eq!(c.resolve("./src"), vec!["src"]);
        assert!(c.resolve("nope").is_empty());
        assert_eq!(c.resolve("."), vec![""]);
    }
}

//! `build --output` (`-o`), BuildKit's exporters: where the built result
//! goes besides the store.
//!
//! - `type=local,dest=DIR` (or a bare path): the final stage's files, in DIR;
//! - `type=tar,dest=FILE` (or `-` for stdout, also `-o -`): those files as one tar;
//! - `type=docker,dest=FILE`: the image as a `docker load` archive;
//! - `type=oci,dest=FILE`: the image as an OCI layout archive.
//!
//! The image is built into the store as always (its layers are the cache);
//! the outputs are written from it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use berth_engine::Engine;

/// One `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The final stage's files into a directory.
    Local(PathBuf),
    /// The final stage's files as a tar (`None`: stdout).
    Tar(Option<PathBuf>),
    /// The image as a docker (`true`) or OCI archive (`None`: stdout).
    Archive(bool, Option<PathBuf>),
}

impl Output {
    /// Parses BuildKit's CSV form (`type=local,dest=out`), a bare path
    /// (local) or `-` (a tar on stdout).
    pub fn parse(s: &str) -> anyhow::Result<Output> {
        if s == "-" {
            return Ok(Output::Tar(None));
        }
        if !s.contains('=') {
            return Ok(Output::Local(PathBuf::from(s)));
        }
        let mut typ = None;
        let mut dest = None;
        for kv in s.split(',') {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--output {s:?}: {kv:?} is not key=value"))?;
            match k.trim() {
                "type" => typ = Some(v.trim().to_string()),
                "dest" => dest = Some(v.trim().to_string()),
                // BuildKit's options berth has no use for yet are refused,
                // not ignored: a misspelt option must not pass silently.
                other => {
                    bail!("--output {s:?}: unknown option {other:?} (berth knows type and dest)")
                }
            }
        }
        let file = |d: Option<String>| d.filter(|d| d != "-").map(PathBuf::from);
        Ok(match typ.as_deref() {
            Some("local") => {
                Output::Local(PathBuf::from(dest.with_context(|| {
                    format!("--output {s:?}: type=local needs dest=DIR")
                })?))
            }
            Some("tar") => Output::Tar(file(dest)),
            Some("docker") => Output::Archive(true, file(dest)),
            Some("oci") => Output::Archive(false, file(dest)),
            Some(t) => bail!(
                "--output {s:?}: unknown type {t:?} (berth writes local, tar, docker and oci)"
            ),
            None => bail!("--output {s:?}: type= is missing"),
        })
    }

    /// Whether it writes to stdout (then nothing else may).
    pub fn to_stdout(&self) -> bool {
        matches!(self, Output::Tar(None) | Output::Archive(_, None))
    }

    /// Writes `image` (an id) out; an archive names it `tags` where the
    /// build gave some (`docker load` then tags it).
    pub fn write(&self, engine: &Engine, image: &str, tags: &[String]) -> anyhow::Result<()> {
        match self {
            Output::Local(dir) => engine
                .image_to_dir(image, dir)
                .with_context(|| format!("--output type=local,dest={}", dir.display())),
            Output::Tar(Some(file)) => super::image::write_whole(file, |w| {
                engine.image_to_tar(image, w)?;
                Ok(())
            }),
            Output::Tar(None) => {
                let mut out = std::io::stdout().lock();
                engine.image_to_tar(image, &mut out)?;
                Ok(())
            }
            Output::Archive(docker, dest) => super::image::save(
                &engine.store,
                super::image::SaveArgs {
                    images: if tags.is_empty() {
                        vec![image.to_string()]
                    } else {
                        tags.to_vec()
                    },
                    output: dest.clone(),
                    format: if *docker { "docker" } else { "oci" }.to_string(),
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildkit_s_forms() {
        assert_eq!(
            Output::parse("type=local,dest=out").unwrap(),
            Output::Local("out".into())
        );
        assert_eq!(Output::parse("out").unwrap(), Output::Local("out".into()));
        assert_eq!(Output::parse("-").unwrap(), Output::Tar(None));
        assert_eq!(Output::parse("type=tar,dest=-").unwrap(), Output::Tar(None));
        assert_eq!(
            Output::parse("type=oci,dest=o.tar").unwrap(),
            Output::Archive(false, Some("o.tar".into()))
        );
        assert!(Output::parse("type=registry").is_err());
        assert!(Output::parse("type=local").is_err());
        assert!(Output::parse("type=local,dest=x,compression=zstd").is_err());
    }
}

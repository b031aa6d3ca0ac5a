//! Layer archives: applying a layer tar onto a directory ([`apply`]) and turning a
//! set of filesystem changes back into a layer tar ([`diff`]), plus compression
//! detection and encoders.
//!
//! Extraction is our own code on top of the `tar` crate's format parser, because
//! `tar::Archive::unpack` is not safe against hostile layers and knows nothing of
//! whiteouts: every path is resolved inside the root with `openat2(RESOLVE_IN_ROOT)`,
//! and only the final component is created with `*at` calls that never follow it.

pub mod apply;
pub mod diff;
#[cfg(test)]
mod layer_tests;
pub mod overlay_meta;

use std::io::{self, BufRead, BufReader, Read};

use berth_fs::PathError;

/// Errors from reading or writing layer archives.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An I/O error on a path outside the archive.
    #[error(transparent)]
    Io(#[from] PathError),
    /// The tar stream itself is broken (truncated, bad header, bad compression).
    #[error("invalid layer tar: {0}")]
    Tar(#[source] io::Error),
    /// An entry that may not be applied, with its name inside the tar.
    #[error("layer entry {path:?}: {msg}")]
    Entry {
        /// The entry's path as written in the tar.
        path: String,
        /// What is wrong with it.
        msg: String,
    },
}

impl ArchiveError {
    pub(crate) fn entry(path: &[u8], msg: impl Into<String>) -> Self {
        ArchiveError::Entry {
            path: String::from_utf8_lossy(path).into_owned(),
            msg: msg.into(),
        }
    }
}

/// How a layer stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Recognises the compression from the first bytes of a stream.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps `r` in the decoder its first bytes call for.
pub fn decompress<'a, R: Read + 'a>(r: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut br = BufReader::with_capacity(256 * 1024, r);
    let c = Compression::detect(br.fill_buf()?);
    let out: Box<dyn Read> = match c {
        Compression::None => Box::new(br),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(br)?),
    };
    Ok((c, out))
}

/// Clean a tar entry path into components: leading `/` and `./` dropped, `.`
/// removed, `..` popped. `None` when `..` would leave the root.
pub fn clean_components(raw: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(clean_components(b"./a/b/"), Some(vec![&b"a"[..], b"b"]));
        assert_eq!(
            clean_components(b"/etc/passwd"),
            Some(vec![&b"etc"[..], b"passwd"])
        );
        assert_eq!(clean_components(b"a/../b"), Some(vec![&b"b"[..]]));
        assert_eq!(clean_components(b"../x"), None);
        assert_eq!(clean_components(b"a/../../x"), None);
        assert_eq!(clean_components(b"."), Some(vec![]));
    }

    #[test]
    fn detects_compression() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"ustar"), Compression::None);
    }
}

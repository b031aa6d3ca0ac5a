//! Content digests (`sha256:<hex>`), as the OCI image spec defines them, and a
//! streaming hasher that produces them.
//!
//! berth's images use `sha256`; `sha512` is supported too, for registries that
//! store content pushed with it (the distribution spec allows both).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256, Sha512};

/// Errors from parsing a digest string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    /// The string has no `algorithm:` prefix.
    #[error("invalid digest {0:?}: expected <algorithm>:<hex>")]
    Format(String),
    /// The algorithm is not one we know.
    #[error("invalid digest {0:?}: unsupported digest algorithm")]
    Algorithm(String),
    /// The hex part has the wrong length or characters.
    #[error("invalid digest {0:?}: invalid checksum digest length or characters")]
    Hex(String),
}

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the only algorithm berth writes.
    Sha256,
    /// SHA-512, accepted when parsing.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as it appears in a digest string.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex part.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest such as `sha256:e3b0…`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Builds a sha256 digest from its 32 raw bytes.
    pub fn from_sha256_bytes(bytes: &[u8]) -> Self {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(bytes),
        }
    }

    /// Hashes `data` with sha256.
    pub fn sha256_of(data: &[u8]) -> Self {
        Self::from_sha256_bytes(&Sha256::digest(data))
    }

    /// The `algorithm` digest of `data`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Self {
        let mut h = Hasher::for_algorithm(algorithm);
        h.update(data);
        h.finish()
    }

    /// The digest algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex string, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, as docker shows image ids.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    /// Whether `hex_prefix` is a prefix of this digest's hex (for `docker rmi 3f5`-style lookups).
    pub fn has_hex_prefix(&self, hex_prefix: &str) -> bool {
        self.hex.starts_with(hex_prefix)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Format(s.to_string()))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(DigestError::Algorithm(s.to_string())),
        };
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::Hex(s.to_string()));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A streaming hasher (sha256 unless asked otherwise) that also counts bytes.
#[derive(Clone)]
pub struct Hasher {
    inner: Inner,
    len: u64,
}

#[derive(Clone)]
enum Inner {
    Sha256(Sha256),
    Sha512(Box<Sha512>),
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher {
            inner: Inner::Sha256(Sha256::new()),
            len: 0,
        }
    }
}

impl Hasher {
    /// A fresh sha256 hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh hasher for `algorithm`.
    pub fn for_algorithm(algorithm: Algorithm) -> Self {
        Hasher {
            inner: match algorithm {
                Algorithm::Sha256 => Inner::Sha256(Sha256::new()),
                Algorithm::Sha512 => Inner::Sha512(Box::new(Sha512::new())),
            },
            len: 0,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.inner {
            Inner::Sha256(h) => h.update(data),
            Inner::Sha512(h) => h.update(data),
        }
        self.len += data.len() as u64;
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            Inner::Sha256(_) => Algorithm::Sha256,
            Inner::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        match self.inner {
            Inner::Sha256(h) => Digest::from_sha256_bytes(&h.finalize()),
            Inner::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A reader adapter that hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(),
        }
    }

    /// Bytes read so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// Whether nothing was read yet.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Returns the inner reader and the digest of what was read.
    pub fn finish(self) -> (R, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.finish(), len)
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha512() {
        let d = Digest::of(Algorithm::Sha512, b"");
        assert_eq!(
            d.to_string(),
            "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        let mut h = Hasher::for_algorithm(Algorithm::Sha512);
        h.update(b"");
        assert_eq!(h.finish(), d);
    }

    #[test]
    fn parses_and_prints() {
        let s = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d: Digest = s.parse().unwrap();
        assert_eq!(d.to_string(), s);
        assert_eq!(d.short(), "e3b0c44298fc");
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn rejects_bad_digests() {
        assert!(matches!(
            "abc".parse::<Digest>(),
            Err(DigestError::Format(_))
        ));
        assert!(matches!(
            "md5:abc".parse::<Digest>(),
            Err(DigestError::Algorithm(_))
        ));
        assert!(matches!(
            "sha256:ABC".parse::<Digest>(),
            Err(DigestError::Hex(_))
        ));
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(upper.parse::<Digest>().is_err());
    }

    #[test]
    fn hasher_matches_oneshot() {
        let mut h = Hasher::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.len(), 11);
        assert_eq!(h.finish(), Digest::sha256_of(b"hello world"));
    }
}

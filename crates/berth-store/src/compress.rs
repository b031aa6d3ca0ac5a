//! The compression of the layer blobs berth writes: gzip (the default:
//! what docker, every registry and every client read; written by the
//! parallel encoder of [`crate::pgzip`]) or zstd (`build
//! --compression-format zstd`, as buildah's and BuildKit's `compression=zstd`:
//! smaller and faster to make and to unpack, read by containerd 1.5+,
//! podman, BuildKit and docker 23+, not by older clients).

use std::io::{self, Write};

use berth_types::image::media_types;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LayerCompression {
    /// gzip (`tar+gzip`).
    #[default]
    Gzip,
    /// zstd (`tar+zstd`).
    Zstd,
}

impl LayerCompression {
    /// Parses `gzip` or `zstd`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "gzip" => Ok(LayerCompression::Gzip),
            "zstd" => Ok(LayerCompression::Zstd),
            other => Err(format!(
                "unknown compression format {other:?}: gzip or zstd"
            )),
        }
    }

    /// The OCI media type of a layer so compressed.
    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => media_types::OCI_LAYER_GZIP,
            LayerCompression::Zstd => media_types::OCI_LAYER_ZSTD,
        }
    }

    /// An encoder writing into `w`.
    pub fn encoder<W: Write>(self, w: W) -> io::Result<LayerEncoder<W>> {
        Ok(match self {
            LayerCompression::Gzip => LayerEncoder::Gzip(crate::pgzip::ParGzEncoder::new(
                w,
                crate::image::import::gzip_level(),
            )?),
            LayerCompression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(w, 3)?;
                // zstd's own worker threads, one per core.
                let n = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
                if n > 1 {
                    e.multithread(n)?;
                }
                LayerEncoder::Zstd(e)
            }
        })
    }
}

/// A layer blob being compressed; [`LayerEncoder::finish`] must be called.
pub enum LayerEncoder<W: Write> {
    /// gzip.
    Gzip(crate::pgzip::ParGzEncoder<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> LayerEncoder<W> {
    /// Ends the stream and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            LayerEncoder::Gzip(g) => g.finish(),
            LayerEncoder::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for LayerEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LayerEncoder::Gzip(g) => g.write(buf),
            LayerEncoder::Zstd(z) => z.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            LayerEncoder::Gzip(g) => g.flush(),
            LayerEncoder::Zstd(z) => z.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_decompress_to_the_input() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for c in [LayerCompression::Gzip, LayerCompression::Zstd] {
            let mut e = c.encoder(Vec::new()).unwrap();
            e.write_all(&data).unwrap();
            let blob = e.finish().unwrap();
            assert!(blob.len() < data.len() / 10, "{c:?} compresses");
            let (kind, mut r) = crate::archive::decompress(&blob[..]).unwrap();
            let mut back = Vec::new();
            std::io::Read::read_to_end(&mut r, &mut back).unwrap();
            assert_eq!(back, data, "{c:?} ({kind:?})");
        }
        assert_eq!(
            LayerCompression::parse("zstd").unwrap().media_type(),
            media_types::OCI_LAYER_ZSTD
        );
        assert!(LayerCompression::parse("lz4").is_err());
    }
}

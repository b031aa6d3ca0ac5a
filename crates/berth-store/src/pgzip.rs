//! A parallel gzip writer (the pigz layout): the input is cut into 1 MiB
//! blocks deflated on worker threads, each ending in a sync flush (byte
//! aligned, not final) and the last one final, so the output is one ordinary
//! gzip member any reader takes — flate2's `GzDecoder`, Go's `compress/gzip`,
//! `zcat`. Blocks whose sample does not compress (already-compressed files:
//! archives, images, wheels) are written as stored deflate blocks instead of
//! being put through the compressor, which is where a single-threaded gzip
//! spends most of its time on such layers and gains nothing. The output
//! depends only on the input and the level, never on thread timing.
//!
//! Written here because the crates that parallelise gzip either write
//! multi-member streams (which `GzDecoder` and some registries' tooling read
//! only in part) or bring their own deflate backend; this one uses flate2's.

use std::io::{self, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress};

/// Input bytes per block.
const BLOCK: usize = 1 << 20;
/// Bytes of a block tried at level 1 to decide whether it compresses.
const SAMPLE: usize = 64 << 10;

type Job = (u64, Vec<u8>, bool);

/// The writer. [`ParGzEncoder::finish`] must be called; it returns the inner
/// writer.
pub struct ParGzEncoder<W: Write> {
    inner: Option<W>,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    next_seq: u64,
    next_out: u64,
    pending: std::collections::BTreeMap<u64, Vec<u8>>,
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<(u64, Vec<u8>)>,
    workers: Vec<JoinHandle<()>>,
    in_flight: usize,
    max_in_flight: usize,
}

impl<W: Write> ParGzEncoder<W> {
    /// A writer compressing at `level` with one worker per core.
    pub fn new(inner: W, level: Compression) -> io::Result<Self> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let jobs_rx = std::sync::Arc::new(std::sync::Mutex::new(jobs_rx));
        let (done_tx, done_rx) = mpsc::channel();
        let mut workers = Vec::new();
        for _ in 0..n {
            let rx = jobs_rx.clone();
            let tx = done_tx.clone();
            workers.push(std::thread::spawn(move || {
                loop {
                    let job = rx.lock().map(|r| r.recv());
                    let Ok(Ok((seq, data, last))) = job else {
                        break;
                    };
                    let out = deflate_block(&data, level, last);
                    if tx.send((seq, out)).is_err() {
                        break;
                    }
                }
            }));
        }
        let mut inner = inner;
        // The gzip header: no name, no mtime (reproducible), OS unknown.
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
        Ok(ParGzEncoder {
            inner: Some(inner),
            buf: Vec::with_capacity(BLOCK),
            crc: crc32fast::Hasher::new(),
            total: 0,
            next_seq: 0,
            next_out: 0,
            pending: Default::default(),
            jobs: Some(jobs_tx),
            done: done_rx,
            workers,
            in_flight: 0,
            max_in_flight: 2 * n + 2,
        })
    }

    fn send(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let seq = self.next_seq;
        self.next_seq += 1;
        self.jobs
            .as_ref()
            .expect("open")
            .send((seq, data, last))
            .map_err(|_| io::Error::other("gzip worker gone"))?;
        self.in_flight += 1;
        // Bounded memory: wait for the oldest blocks while too many are out.
        while self.in_flight >= self.max_in_flight {
            self.collect_one()?;
        }
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let (seq, out) = self
            .done
            .recv()
            .map_err(|_| io::Error::other("gzip worker gone"))?;
        self.in_flight -= 1;
        self.pending.insert(seq, out);
        let w = self.inner.as_mut().expect("open");
        while let Some(out) = self.pending.remove(&self.next_out) {
            w.write_all(&out)?;
            self.next_out += 1;
        }
        Ok(())
    }

    /// Ends the stream (last block, CRC and size) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.send(true)?;
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        drop(self.jobs.take());
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        let mut w = self.inner.take().expect("open");
        let crc = std::mem::take(&mut self.crc).finalize();
        w.write_all(&crc.to_le_bytes())?;
        w.write_all(&(self.total as u32).to_le_bytes())?;
        Ok(w)
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        self.crc.update(&data[..n]);
        self.total += n as u64;
        if self.buf.len() == BLOCK {
            self.send(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParGzEncoder<W> {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Whether a level-1 pass over a sample of `data` saves at least 2%.
fn compresses(data: &[u8]) -> bool {
    let sample = &data[..data.len().min(SAMPLE)];
    if sample.len() < 4096 {
        return true;
    }
    let mut c = Compress::new(Compression::fast(), false);
    let mut out = Vec::with_capacity(sample.len() + 1024);
    let _ = c.compress_vec(sample, &mut out, FlushCompress::Finish);
    (out.len() as u64) * 100 < (sample.len() as u64) * 98
}

/// One block as raw deflate: compressed at `level` (stored when it does not
/// compress), ending byte aligned (sync flush) or, for the last, final.
fn deflate_block(data: &[u8], level: Compression, last: bool) -> Vec<u8> {
    let level = if compresses(data) {
        level
    } else {
        Compression::none()
    };
    let mut c = Compress::new(level, false);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 1024);
    let mut consumed = 0;
    loop {
        let before_in = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .expect("deflate of an in-memory block");
        consumed += c.total_in() as usize - before_in;
        let finished = match flush {
            FlushCompress::Finish => status == flate2::Status::StreamEnd,
            _ => consumed == data.len() && out.len() < out.capacity(),
        };
        if finished {
            return out;
        }
        out.reserve(out.capacity().max(4096));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn round_trip(data: &[u8]) -> Vec<u8> {
        let mut e = ParGzEncoder::new(Vec::new(), Compression::new(6)).unwrap();
        // Odd write sizes, across block boundaries.
        for chunk in data.chunks(77_777) {
            e.write_all(chunk).unwrap();
        }
        let gz = e.finish().unwrap();
        let mut back = Vec::new();
        // One gzip member: the single-member decoder reads all of it.
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        gz
    }

    #[test]
    fn one_member_that_any_decoder_reads() {
        assert!(round_trip(b"").len() > 10);
        round_trip(b"hello");
        // Compressible text over several blocks compresses.
        let text: Vec<u8> = (0..3_500_000u32)
            .flat_map(|i| format!("line {} of a layer\n", i % 1000).into_bytes())
            .take(3 * BLOCK + 12345)
            .collect();
        let gz = round_trip(&text);
        assert!(gz.len() < text.len() / 10, "{} of {}", gz.len(), text.len());
        // Random bytes are stored, not bigger than the input by much.
        let mut rnd = vec![0u8; 2 * BLOCK + 999];
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for b in rnd.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let gz = round_trip(&rnd);
        assert!(gz.len() < rnd.len() + rnd.len() / 100, "{}", gz.len());
    }

    #[test]
    fn the_same_input_gives_the_same_bytes() {
        let data: Vec<u8> = (0..5 * BLOCK).map(|i| (i * 31 % 251) as u8).collect();
        assert_eq!(round_trip(&data), round_trip(&data));
    }

    #[test]
    fn zcat_reads_it() {
        let data: Vec<u8> = (0..BLOCK + 5).map(|i| (i % 13) as u8).collect();
        let mut e = ParGzEncoder::new(Vec::new(), Compression::new(6)).unwrap();
        e.write_all(&data).unwrap();
        let gz = e.finish().unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.gz");
        std::fs::write(&p, gz).unwrap();
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&p)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }
}

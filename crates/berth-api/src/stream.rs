//! Bridges between the engine's blocking `Read`/`Write` streams and HTTP
//! bodies, so an export, a save or a load of gigabytes flows through in
//! bounded chunks instead of being held in memory.
//!
//! A failure after the response headers went out cannot change the status
//! any more; the body then ends with an error, which aborts the transfer
//! (the client sees a truncated stream, never a short archive passed off as
//! whole).

use std::io::{self, Read, Write};

use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::route::{Req, Res};
use crate::{ApiError, Ctx};

/// Chunks queued between the producer and the connection (each up to
/// [`CHUNK`] bytes).
const QUEUE: usize = 8;
/// The size of one chunk.
const CHUNK: usize = 256 << 10;

type Chunk = Result<Bytes, io::Error>;

/// The body of a response fed from a channel.
pub fn channel_body(mut rx: mpsc::Receiver<Chunk>) -> Body {
    Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// A `Write` that sends what it gets, in chunks, to a response body.
struct ChanWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChanWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A 200 response whose body `produce` writes on the blocking pool.
pub fn produce(
    ctx: &Ctx,
    content_type: &'static str,
    produce: impl FnOnce(&berth_engine::Engine, &mut dyn Write) -> Result<(), ApiError> + Send + 'static,
) -> Res {
    let (tx, rx) = mpsc::channel(QUEUE);
    let e = ctx.engine.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = ChanWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let r = produce(&e, &mut w).and_then(|()| {
            w.flush()
                .map_err(|e| ApiError::internal(format!("writing the response: {e}")))
        });
        if let Err(err) = r {
            let _ = tx.blocking_send(Err(io::Error::other(err.message)));
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(channel_body(rx))
        .expect("response"))
}

/// A `Read` over a request body, for the blocking pool: frames arrive
/// through a small channel, so a slow consumer holds back the client
/// instead of buffering its upload.
pub struct BodyReader {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    cur: Bytes,
}

impl BodyReader {
    /// Starts forwarding `req`'s body.
    pub fn new(req: Req) -> BodyReader {
        use http_body_util::BodyExt;
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut body = req.into_body();
        tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                let item = match frame {
                    Ok(f) => match f.into_data() {
                        Ok(d) => Ok(d),
                        Err(_) => continue, // trailers
                    },
                    Err(e) => Err(io::Error::other(format!("reading the request body: {e}"))),
                };
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return;
                }
            }
        });
        BodyReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(r) => self.cur = r?,
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

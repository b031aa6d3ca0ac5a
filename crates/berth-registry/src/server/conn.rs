//! Serving connections within bounds, so no client can hold the server's
//! resources: a cap on connections in all and per client address (one over
//! either is closed at once), a deadline for each request's headers that is
//! also the idle limit of a kept-alive connection (hyper's
//! `header_read_timeout`, which needs the timer axum's own `serve` does not
//! give it; and the same deadline for a connection's first bytes, which
//! hyper-util reads itself to tell HTTP/1 from HTTP/2), a limit on how long
//! a write may stall on a client that does not read ([`Stalls`]), a
//! deadline for the TLS handshake, and a graceful
//! shutdown that lets requests in flight finish for a bounded time and then
//! exits whatever clients are still stalled. Request bodies have their own
//! stall limit where handlers read them (see `next_chunk`).
//!
//! Written over hyper-util's connection builder rather than `axum::serve`
//! because that one exposes none of these limits.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The client's address, as handlers see it (`ConnectInfo<PeerAddr>`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The bounds (see the module doc).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_per_client: usize,
    /// Time to send a request's headers, and to start the next one on a
    /// kept-alive connection; also the TLS handshake's.
    pub header_timeout: Duration,
    /// How long a write may make no progress.
    pub write_timeout: Duration,
    /// How long requests in flight may take to finish after SIGTERM.
    pub shutdown_timeout: Duration,
}

/// A connection slot of one client address, given back on drop.
struct ClientSlot {
    table: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl ClientSlot {
    fn take(table: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// A stream with deadlines: its writes fail with `TimedOut` once they have
/// made no progress for `write_limit` (a client that stopped reading), and
/// its reads once `first_read` passes before any byte came (a client that
/// connects and says nothing).
pub struct Stalls<T> {
    inner: T,
    write_limit: Option<Duration>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    first_read: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Stalls<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, write_limit: Option<Duration>, first_read: Option<Duration>) -> Self {
        Stalls {
            inner,
            write_limit,
            deadline: None,
            first_read: first_read.map(|d| Box::pin(tokio::time::sleep(d))),
        }
    }

    fn pending<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        let Some(limit) = self.write_limit else {
            return r;
        };
        match r {
            Poll::Ready(x) => {
                self.deadline = None;
                Poll::Ready(x)
            }
            Poll::Pending => {
                let d = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match d.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stalls<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        match (&r, self.first_read.as_mut()) {
            (_, None) => r,
            (Poll::Ready(_), Some(_)) => {
                if buf.filled().len() > before {
                    self.first_read = None;
                }
                r
            }
            (Poll::Pending, Some(d)) => match d.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stalls<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.pending(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.pending(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.pending(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts and serves connections on `listener` until `shutdown` resolves,
/// then drains (see the module doc).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let global = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let clients: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tracker = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    // Out of descriptors or similar: refuse nothing already
                    // open, try again shortly.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = global.clone().try_acquire_owned() else {
            continue; // over the cap: closed at once
        };
        let Some(slot) = ClientSlot::take(&clients, peer.ip(), limits.max_per_client) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, router, limits, stop) =
            (tls.clone(), router.clone(), limits.clone(), stop_rx.clone());
        tracker.spawn(async move {
            let _held = (permit, slot);
            let (w, h) = (Some(limits.write_timeout), Some(limits.header_timeout));
            match tls {
                None => serve_conn(Stalls::new(tcp, w, h), peer, router, &limits, stop).await,
                Some(acceptor) => {
                    let io = Stalls::new(tcp, w, None);
                    let hs = tokio::time::timeout(limits.header_timeout, acceptor.accept(io));
                    if let Ok(Ok(s)) = hs.await {
                        let s = Stalls::new(s, None, h);
                        serve_conn(s, peer, router, &limits, stop).await
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tracker.close();
    if tokio::time::timeout(limits.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        eprintln!(
            "berth registry: {} connection(s) still open after {}s; exiting",
            tracker.len(),
            limits.shutdown_timeout.as_secs()
        );
    }
}

async fn serve_conn<I>(
    io: I,
    peer: SocketAddr,
    router: axum::Router,
    limits: &Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
        let mut r = router.clone();
        async move { tower_service::Service::call(&mut r, req.map(axum::body::Body::new)).await }
    });
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(64);
    let conn = b.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_slots_are_counted_and_given_back() {
        let t: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let a = ClientSlot::take(&t, ip, 2).unwrap();
        let _b = ClientSlot::take(&t, ip, 2).unwrap();
        assert!(ClientSlot::take(&t, ip, 2).is_none());
        drop(a);
        assert!(ClientSlot::take(&t, ip, 2).is_some());
    }
}

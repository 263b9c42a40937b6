//! The HTTP server: hyper's HTTP/1.1 connections around the axum router, with a cap on
//! connections, a header-read timeout, an idle timeout and graceful shutdown.
//!
//! - At most [`Limits::max_connections`] connections are served at once. Beyond that the
//!   server stops accepting: new connections wait in the kernel's accept queue (their
//!   TCP handshake completes, no byte is answered) until a served one closes. Nothing is
//!   refused, so a burst of scrapes or queries is delayed rather than failed; what bounds
//!   the wait is how long a connection may hold its slot (the two timeouts below).
//! - [`Limits::header_timeout`]: from the moment a connection is ready for a request (just
//!   opened, or its previous response written) to the end of that request's head. A
//!   client that sends half a head, or keeps an idle keep-alive connection open, is
//!   disconnected after it (hyper closes without an answer: there is no request to answer).
//! - [`Limits::idle_timeout`]: a connection on which no byte moves either way for this
//!   long while no request is being worked on is closed — a client that stops reading
//!   its answer or stops sending a body.
//! - On shutdown the server stops accepting, idle connections close, requests in flight
//!   finish within [`SHUTDOWN_GRACE`].
//!
//! hyper answers a request it cannot parse (400, 414, 431) by itself, with an empty body,
//! before the router sees anything. On a connection's first request [`Tracked`] replaces
//! that answer with the same status and a JSON body: nothing else can have been written
//! on the connection yet, so the bytes are certainly hyper's error. On a later request of
//! a keep-alive connection hyper's answer goes out as it is (telling it apart from a
//! response body there would mean parsing our own output).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::limit;

/// How long requests in flight at shutdown may take to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Timeouts and the connection cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { header_timeout: Duration::from_secs(10), idle_timeout: Duration::from_secs(60), max_connections: 256 }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(listener: tokio::net::TcpListener, router: Router, limits: Limits, shutdown: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limit::HYPER_MAX_BUF)
        .max_headers(limit::HYPER_MAX_HEADERS);
    loop {
        // A slot first: at the cap, connections wait in the accept queue.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept an http connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let http = http.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            connection(stream, &http, router, limits.idle_timeout, shutdown).await;
            tracing::trace!(%peer, "http connection closed");
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

/// Serves one connection until it closes, times out idle, or shutdown's grace runs out.
async fn connection<I>(
    io: I,
    http: &hyper::server::conn::http1::Builder,
    router: Router,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked { io, activity: Arc::clone(&activity), rewrite: Rewrite::Watching });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let working = Working::new(Arc::clone(&activity));
            let mut router = router.clone();
            async move {
                let response = tower::Service::call(&mut router, request.map(axum::body::Body::new)).await;
                drop(working);
                Ok::<_, Infallible>(response.unwrap_or_else(|e| match e {}))
            }
        })
    };
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let mut grace_until: Option<Instant> = None;
    loop {
        // While a handler works the connection is not idle: look again a timeout later.
        let idle_deadline = if activity.working.load(Ordering::Relaxed) > 0 {
            Instant::now() + idle_timeout
        } else {
            activity.last() + idle_timeout
        };
        let wake = grace_until.map_or(idle_deadline, |g| g.min(idle_deadline));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "http connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if grace_until.is_none() => {
                conn.as_mut().graceful_shutdown();
                grace_until = Some(Instant::now() + SHUTDOWN_GRACE);
            }
            _ = tokio::time::sleep_until(wake) => {
                if grace_until.is_some_and(|g| Instant::now() >= g) {
                    tracing::debug!("http connection still busy after the shutdown grace; closed");
                    return;
                }
                if activity.idle_since(idle_timeout) {
                    tracing::debug!("http connection idle; closed");
                    return;
                }
            }
        }
    }
}

/// When a connection last moved a byte or finished a request, and how many of its
/// requests are being worked on.
#[derive(Debug)]
struct Activity {
    base: Instant,
    /// Milliseconds since `base`.
    last_ms: AtomicU64,
    working: AtomicUsize,
    /// Requests handed to the router so far.
    dispatched: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            working: AtomicUsize::new(0),
            dispatched: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// No request worked on, and nothing moved for `timeout`.
    fn idle_since(&self, timeout: Duration) -> bool {
        self.working.load(Ordering::Relaxed) == 0 && self.last().elapsed() >= timeout
    }
}

/// A request being worked on (its handler has not answered yet).
struct Working(Arc<Activity>);

impl Working {
    fn new(activity: Arc<Activity>) -> Working {
        activity.dispatched.fetch_add(1, Ordering::Relaxed);
        activity.working.fetch_add(1, Ordering::Relaxed);
        Working(activity)
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.0.touch();
        self.0.working.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's socket, noting every byte moved in [`Activity`], and replacing
/// hyper's own error answer to a first request with a JSON one.
struct Tracked<I> {
    io: I,
    activity: Arc<Activity>,
    rewrite: Rewrite,
}

/// Where the first-answer rewrite stands.
enum Rewrite {
    /// Nothing written yet.
    Watching,
    /// Writing the JSON answer (bytes, how many are written); then the rest of hyper's
    /// answer is swallowed and the connection closed.
    Replacing(Vec<u8>, usize),
    /// Past the first answer: bytes pass through.
    Passing,
}

/// hyper's answer to a request it could not parse, as the API's JSON error.
fn json_answer(head: &[u8]) -> Option<Vec<u8>> {
    let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let (line, message) = match status {
        b"400" => (
            "400 Bad Request",
            "not a valid HTTP/1.1 request: a malformed request line, header or target \
             (the target must be ASCII: percent-encode other bytes)",
        ),
        b"414" => ("414 URI Too Long", "the request target is too long"),
        b"431" => (
            "431 Request Header Fields Too Large",
            "the request head is too large (at most 64 KiB and 128 header fields are read)",
        ),
        _ => return None,
    };
    let body = serde_json::json!({ "error": message, "parameter": null }).to_string();
    Some(
        format!(
            "HTTP/1.1 {line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<I: AsyncWrite + Unpin> Tracked<I> {
    /// Writes what is left of a replacement answer; Ready(Ok) once all of it is out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Rewrite::Replacing(bytes, done) = &mut self.rewrite {
            let Some(rest) = bytes.get(*done..).filter(|r| !r.is_empty()) else { return Poll::Ready(Ok(())) };
            match Pin::new(&mut self.io).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if matches!(self.rewrite, Rewrite::Watching) && !buf.is_empty() {
            // Nothing handed to the router, yet hyper writes: its own error answer.
            self.rewrite = match self.activity.dispatched.load(Ordering::Relaxed) {
                0 => json_answer(buf).map_or(Rewrite::Passing, |json| Rewrite::Replacing(json, 0)),
                _ => Rewrite::Passing,
            };
        }
        if matches!(self.rewrite, Rewrite::Replacing(..)) {
            // The replacement stands for all of hyper's bytes, which are dropped.
            return self.poll_replacement(cx).map_ok(|()| buf.len());
        }
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        // hyper then gathers each answer's head into one write, which the rewrite reads.
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

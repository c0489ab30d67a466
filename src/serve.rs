//! The accept loops of every port, where slow and hostile clients are
//! bounded and shutdown has a deadline.
//!
//! - **HTTP (webhooks, and the admin console on its own port).** At most `max_connections` at once (further
//!   clients wait in the kernel's accept queue); a request's headers must
//!   arrive within `header_timeout`, including the first request on a new
//!   connection and the next one on a kept-alive connection; the body is
//!   bounded by the webhook handler (see [`crate::http`]).
//! - **gRPC.** At most `max_connections` at once, HTTP/2 limits set on the
//!   tonic server in [`crate::startup`].
//! - **Shutdown.** When `stop` fires, listeners close at once, in-flight
//!   requests get up to `shutdown_timeout` to finish, then whatever is
//!   still open is cut and counted in `tollgate_connections_dropped_total`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Limits of the HTTP port's connections.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// How long a client may take to send a request's headers (and how
    /// long an idle kept-alive connection stays open).
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Largest request head (request line and headers) accepted on the HTTP
/// port; Stripe's are about 1 KiB.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

fn dropped(port: &'static str, cause: &'static str, n: u64) {
    metrics::counter!(crate::metrics::CONNECTIONS_DROPPED, "port" => port, "cause" => cause)
        .increment(n);
}

/// Serves `router` on `listener` until `stop`, then drains for at most
/// `shutdown_timeout`.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    stop: CancellationToken,
    shutdown_timeout: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("BUG: the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        // Handlers that need the client's address (the console's login
        // rate limit) read it as axum's `ConnectInfo`.
        let service = TowerToHyperService::new(tower::util::MapRequest::new(
            router.clone(),
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(tcp), service));
        connections.spawn(async move {
            let _permit = permit;
            if let Err(e) = connection.await {
                if e.is_timeout() {
                    dropped("http", "header_timeout", 1);
                    tracing::debug!("http connection closed: headers too slow");
                } else {
                    tracing::debug!(error = %e, "http connection ended with an error");
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    drain(
        "http",
        graceful.shutdown(),
        &mut connections,
        shutdown_timeout,
    )
    .await;
}

/// Waits for `finished` (every connection done) for at most `timeout`,
/// then aborts what is left of `connections`.
async fn drain(
    port: &'static str,
    finished: impl std::future::Future<Output = ()>,
    connections: &mut tokio::task::JoinSet<()>,
    timeout: Duration,
) {
    if tokio::time::timeout(timeout, finished).await.is_err() {
        while connections.try_join_next().is_some() {}
        let left = connections.len();
        tracing::warn!(
            port,
            connections = left,
            "shutdown deadline reached; closing connections still open"
        );
        dropped(port, "shutdown_deadline", left as u64);
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
}

/// A TCP connection that holds one of the port's connection permits until
/// it closes.
pub struct CappedStream {
    tcp: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for CappedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp.connect_info()
    }
}

/// The gRPC port's connections, at most `max_connections` at once (the
/// rest wait in the accept queue), with TCP_NODELAY set: tonic sets none on
/// a listener it did not bind, and without it a client multiplexing on one
/// connection sees ~40 ms stalls.
pub fn capped_incoming(
    listener: TcpListener,
    max_connections: usize,
) -> impl Stream<Item = std::io::Result<CappedStream>> {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    futures::stream::unfold((listener, permits), |(listener, permits)| async move {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("BUG: the semaphore is never closed");
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "could not set TCP_NODELAY");
                    }
                    let stream = CappedStream {
                        tcp,
                        _permit: permit,
                    };
                    return Some((Ok(stream), (listener, permits)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "grpc accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    })
}

/// Runs the gRPC server future until it drains, but no longer than
/// `shutdown_timeout` after `stop` fires.
pub async fn with_deadline<F, T>(
    server: F,
    stop: CancellationToken,
    shutdown_timeout: Duration,
) -> Option<T>
where
    F: std::future::Future<Output = T>,
{
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(shutdown_timeout).await;
    };
    tokio::select! {
        result = server => Some(result),
        () = deadline => {
            // tonic does not say how many connections were still open, so
            // this is logged, not counted (the HTTP port counts its own).
            tracing::warn!(port = "grpc", "shutdown deadline reached; closing connections still open");
            None
        }
    }
}

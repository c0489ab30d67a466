//! Slow and hostile clients: every connection is bounded in time and number,
//! and shutdown finishes by its deadline whoever is still connected.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, Backend, ServerProcess, TestApp, TestDatabase};

const PARTIAL_HEAD: &[u8] = b"POST /webhooks/stripe HTTP/1.1\r\nHost: tollgate\r\n";

/// Reads until the server closes the connection; returns what it sent and
/// how long that took, or panics after `within`.
async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), tcp.read(&mut buf)).await {
            Err(_) => panic!(
                "connection still open after {within:?}: {}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(Ok(0) | Err(_)) => {
                return (String::from_utf8_lossy(&seen).into(), started.elapsed())
            }
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

async fn app_with_limits(
    configure: impl FnOnce(&mut tollgate::config::ConnectionLimits),
) -> TestApp {
    spawn_app_with(Backend::Sqlite, |c| configure(&mut c.limits)).await
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let app = app_with_limits(|l| l.http_header_timeout = Duration::from_millis(500)).await;
    let mut partial = TcpStream::connect(app.http_addr).await.unwrap();
    partial.write_all(PARTIAL_HEAD).await.unwrap();
    let mut silent = TcpStream::connect(app.http_addr).await.unwrap();
    for tcp in [&mut partial, &mut silent] {
        let (_, took) = read_until_closed(tcp, Duration::from_secs(5)).await;
        assert!(took < Duration::from_secs(3), "closed after {took:?}");
    }
    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .contains("tollgate_connections_dropped_total{port=\"http\",cause=\"header_timeout\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_and_the_connection_closes() {
    let app = app_with_limits(|l| l.http_body_timeout = Duration::from_secs(1)).await;
    let mut tcp = TcpStream::connect(app.http_addr).await.unwrap();
    tcp.write_all(
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n{\"id\":",
    )
    .await
    .unwrap();
    let (answer, took) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn bodies_over_one_mib_are_refused_whether_announced_or_streamed() {
    let app = app_with_limits(|_| {}).await;
    // Announced: refused before a byte of the body is read.
    let mut tcp = TcpStream::connect(app.http_addr).await.unwrap();
    tcp.write_all(b"POST /webhooks/stripe HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Streamed without a length: refused once it passes the limit.
    let mut tcp = TcpStream::connect(app.http_addr).await.unwrap();
    tcp.write_all(
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = [b"10000\r\n".as_slice(), &[b' '; 0x10000], b"\r\n"].concat();
    for _ in 0..20 {
        // The server may close before all of it is sent.
        if tcp.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let (answer, _) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let app = app_with_limits(|l| {
        l.http_max_connections = 2;
        l.http_header_timeout = Duration::from_secs(1);
    })
    .await;
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(app.http_addr).await.unwrap();
        tcp.write_all(PARTIAL_HEAD).await.unwrap();
        hogs.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let r = app
        .http
        .get(format!("http://{}/healthz", app.http_addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("served once a slot frees");
    assert_eq!(r.status(), 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "served at once ({waited:?}) although both slots were taken"
    );
}

#[tokio::test]
async fn shutdown_finishes_by_its_deadline_with_slow_clients_connected() {
    let app = app_with_limits(|l| {
        l.http_header_timeout = Duration::from_secs(60);
        l.shutdown_timeout = Duration::from_secs(1);
    })
    .await;
    let mut partial = TcpStream::connect(app.http_addr).await.unwrap();
    partial.write_all(PARTIAL_HEAD).await.unwrap();
    // A gRPC stream that never ends: server reflection, request side open.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    let (_keep_open, requests) = tokio::sync::mpsc::channel(1);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let _stream = reflection
        .server_reflection_info(tokio_stream_from(requests))
        .await
        .unwrap();

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), app.stop())
        .await
        .expect("stopped within the deadline")
        .expect("clean stop");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "waited for in-flight work: {took:?}"
    );
    let (_, _) = read_until_closed(&mut partial, Duration::from_secs(2)).await;
    // The port is closed now; the recorder is this process's.
    let metrics = tollgate::metrics::handle().render();
    let cut = "tollgate_connections_dropped_total{port=\"http\",cause=\"shutdown_deadline\"}";
    assert!(metrics.contains(cut), "{metrics}");
}

/// A stream over an mpsc receiver, without another dependency.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_slow_client_connected_exits_zero_by_the_deadline() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let stripe = crate::fake_stripe::FakeStripe::start().await;
    let env = [
        ("TOLLGATE_SHUTDOWN_TIMEOUT", "1s"),
        ("TOLLGATE_HTTP_HEADER_TIMEOUT", "60s"),
    ];
    let server = ServerProcess::start(&db.url, &stripe.base_url(), &env).await;
    let mut partial = TcpStream::connect(server.http_addr).await.unwrap();
    partial.write_all(PARTIAL_HEAD).await.unwrap();
    let mut body = TcpStream::connect(server.http_addr).await.unwrap();
    body.write_all(b"POST /webhooks/stripe HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let code = tokio::time::timeout(Duration::from_secs(8), server.terminate())
        .await
        .expect("exited within the deadline");
    assert_eq!(code, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

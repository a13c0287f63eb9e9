//! The HTTP server's bounds, on a small router of its own (no AWS): slow
//! headers and bodies are cut off, oversized bodies refused, and at the
//! connection cap the connection idle the longest makes room for a new
//! one, while a connection whose request is being handled is never shed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use jitvm_local::serve::{Limits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Bound on waiting for an answer or a close that should come at once (or
/// after a 1 s timeout).
const PATIENCE: Duration = Duration::from_secs(10);

fn limits(max_connections: usize) -> Limits {
    Limits {
        max_connections,
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
    }
}

/// Serves `router` within `limits` on a loopback port.
async fn start(router: Router, limits: Limits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(serve(listener, router, limits, std::future::pending()));
    addr
}

fn echo() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/echo", post(|body: String| async move { body }))
}

/// Sends `bytes` on a new connection and leaves it open.
async fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}

/// Everything the server sends until it closes the connection.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether the server has closed `stream` (looking for up to 200 ms).
/// Whether `stream` is still open and has been sent nothing: a read waits.
async fn is_open_and_silent(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte))
        .await
        .is_err()
}

async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn get_healthz(addr: SocketAddr) -> String {
    let mut stream = send(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    until_closed(&mut stream).await
}

#[tokio::test]
async fn a_request_whose_headers_stop_is_closed_after_the_header_timeout() {
    let addr = start(echo(), limits(8)).await;
    let mut stream = send(addr, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Le").await;
    let answer = until_closed(&mut stream).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_body_that_stops_is_answered_408_after_the_body_timeout() {
    let addr = start(echo(), limits(8)).await;
    let mut stream = send(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf",
    )
    .await;
    let answer = until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("RequestTimeout"), "{answer}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_answered_413_without_reading_it() {
    let addr = start(echo(), limits(8)).await;
    let mut stream = send(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n",
    )
    .await;
    let answer = until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn a_whole_request_is_answered() {
    let addr = start(echo(), limits(8)).await;
    let mut stream = send(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    let answer = until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
}

#[tokio::test]
async fn a_body_just_under_the_limit_is_read_whole() {
    let addr = start(echo(), limits(8)).await;
    let body = "x".repeat(jitvm_core::api::MAX_BODY_BYTES);
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = send(addr, head.as_bytes()).await;
    stream.write_all(body.as_bytes()).await.expect("write");
    let answer = until_closed(&mut stream).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        answer.chars().take(80).collect::<String>()
    );
    assert!(answer.ends_with(&body), "the whole body came back");
}

#[tokio::test]
async fn at_the_cap_the_connection_idle_the_longest_makes_room() {
    let addr = start(echo(), limits(2)).await;
    // Accepted in the order they connect, so the first is the older.
    let mut oldest = send(addr, b"GET /heal").await;
    let mut newer = send(addr, b"POST /echo HTTP/1.1\r\nContent-Length: 9\r\n\r\nab").await;
    assert!(is_open_and_silent(&mut newer).await);

    let answer = get_healthz(addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(is_closed(&mut oldest).await, "the oldest idle one was shed");
    assert!(
        is_open_and_silent(&mut newer).await,
        "the newer one is still open"
    );
}

#[tokio::test]
async fn a_connection_whose_request_is_being_handled_is_not_shed() {
    let release = Arc::new(Notify::new());
    let held = Arc::clone(&release);
    let router = echo().route(
        "/slow",
        get(move || {
            let held = Arc::clone(&held);
            async move {
                held.notified().await;
                "done"
            }
        }),
    );
    let addr = start(router, limits(1)).await;
    let mut busy = send(
        addr,
        b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(is_open_and_silent(&mut busy).await);

    let mut refused = send(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    // Refused: told 503, or (when its request arrived just after the
    // answer) reset.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, refused.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        read.is_err() || answer.starts_with("HTTP/1.1 503"),
        "{answer}"
    );
    assert!(
        is_open_and_silent(&mut busy).await,
        "the busy one is still open"
    );
    release.notify_one();
    let answer = until_closed(&mut busy).await;
    assert!(answer.ends_with("done"), "{answer}");
    let answer = get_healthz(addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

//! Serving the HTTP routes so that a flood of slow or half-sent requests
//! cannot take the host down.
//!
//! `axum::serve` reads a request's headers and body for as long as the
//! client likes and accepts connections until the process runs out of file
//! handles; then the host can neither answer `/healthz` nor reach AWS to
//! close an expired grant. Here every connection is served by hyper's own
//! HTTP/1 connection with:
//!
//! - a header read timeout (which also ends a keep-alive connection that
//!   sends nothing more) and a body read timeout (408), with the body
//!   capped at [`MAX_BODY_BYTES`] (413);
//! - a cap on connections held at once, kept under the process's open-file
//!   limit with [`FILE_RESERVE`] left for outbound calls and files;
//! - shedding: when a connection arrives at the cap, the one idle the
//!   longest (no complete request being handled) is closed for it, so a
//!   fresh client is served at once; if every connection is busy, the new
//!   one is told 503 and closed;
//! - an idle timeout closing connections idle longer than it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use jitvm_core::api::{MAX_BODY_BYTES, json_response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

/// Open files kept out of the connection cap: outbound connections to AWS,
/// Azure and Slack (each sweep scope and each timer batch holds some), the
/// listener, the runtime's own handles and standard streams.
pub const FILE_RESERVE: u64 = 128;

/// The cap when `JITVM_MAX_CONNECTIONS` is not set, if the open-file limit
/// leaves room for it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// The fewest connections the default cap may come to: below that the
/// open-file limit is too low to run the host and start-up says so.
pub const MIN_CONNECTIONS: usize = 16;

/// The most connections a configured cap may allow: far beyond any file
/// limit, and within what the semaphore that counts them can hold.
pub const MAX_CONNECTIONS_CAP: u64 = 1 << 20;

/// How long a shutdown waits for the requests being handled.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How the HTTP side is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once (`JITVM_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, and how
    /// long a keep-alive connection may wait for its next request
    /// (`JITVM_HEADER_TIMEOUT_SECS`, default 10).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body
    /// (`JITVM_BODY_TIMEOUT_SECS`, default 10).
    pub body_timeout: Duration,
    /// How long a connection may be idle (no request being handled)
    /// before it is closed (`JITVM_IDLE_TIMEOUT_SECS`, default 30).
    pub idle_timeout: Duration,
}

impl Limits {
    /// Reads the limits from the environment, against this process's
    /// open-file limit.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok(), open_file_limit())
    }

    /// Reads the limits through `lookup`, against an open-file limit of
    /// `open_files`. Fails when the connection cap does not fit under it.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        open_files: u64,
    ) -> Result<Self, String> {
        let room = open_files.saturating_sub(FILE_RESERVE);
        let max_connections = match lookup("JITVM_MAX_CONNECTIONS") {
            Some(text) => {
                let cap = whole_number("JITVM_MAX_CONNECTIONS", &text)?;
                if cap > MAX_CONNECTIONS_CAP {
                    return Err(format!(
                        "JITVM_MAX_CONNECTIONS={cap} is more than the host can count; at most {MAX_CONNECTIONS_CAP}"
                    ));
                }
                if cap > room {
                    return Err(format!(
                        "JITVM_MAX_CONNECTIONS={cap} does not fit under the open-file limit: \
                         the limit (RLIMIT_NOFILE, `ulimit -n`) is {open_files}, of which \
                         {FILE_RESERVE} are kept for outbound connections and files, leaving \
                         {room}; lower JITVM_MAX_CONNECTIONS or raise the limit"
                    ));
                }
                cap
            }
            None => {
                let cap = room.min(DEFAULT_MAX_CONNECTIONS as u64);
                if cap < MIN_CONNECTIONS as u64 {
                    return Err(format!(
                        "the open-file limit (RLIMIT_NOFILE, `ulimit -n`) is {open_files}: \
                         with {FILE_RESERVE} kept for outbound connections and files, that \
                         leaves {room} for HTTP connections; raise it to at least {}",
                        FILE_RESERVE + MIN_CONNECTIONS as u64
                    ));
                }
                cap
            }
        };
        Ok(Self {
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            header_timeout: seconds(&lookup, "JITVM_HEADER_TIMEOUT_SECS", 10)?,
            body_timeout: seconds(&lookup, "JITVM_BODY_TIMEOUT_SECS", 10)?,
            idle_timeout: seconds(&lookup, "JITVM_IDLE_TIMEOUT_SECS", 30)?,
        })
    }
}

/// This process's open-file limit (the soft one, which is what counts);
/// `u64::MAX` when unlimited.
pub fn open_file_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Serves `router` on `listener` within `limits` until `shutdown`
/// completes; then stops accepting, lets the requests being handled finish
/// (for up to [`DRAIN_TIMEOUT`]) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let server = Server::new(router, limits);
    let reaper = tokio::spawn(Arc::clone(&server.registry).reap(limits.idle_timeout));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, peer)) => server.admit(stream, peer).await,
            Err(e) => server.after_accept_error(e).await,
        }
    }
    drop(listener);
    reaper.abort();
    server.drain().await;
}

/// How long accepting pauses after it failed for want of file handles or
/// memory, so that a failure that repeats does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How long a connection arriving at the cap waits for the one shed for it
/// to close.
const SHED_WAIT: Duration = Duration::from_secs(1);

/// The answer to a connection arriving when every connection is busy.
fn busy_answer() -> String {
    let body =
        r#"{"error":{"code":"Busy","message":"every connection is busy; try again shortly"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

struct Server {
    router: Router,
    limits: Limits,
    http: http1::Builder,
    slots: Arc<Semaphore>,
    registry: Arc<Registry>,
    stopping: watch::Sender<bool>,
}

impl Server {
    fn new(router: Router, limits: Limits) -> Self {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            // Headers are small here; a client may not make the host buffer
            // hyper's default of about 400 KB on every connection.
            .max_buf_size(32 * 1024);
        Self {
            router,
            limits,
            http,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            registry: Arc::default(),
            stopping: watch::channel(false).0,
        }
    }

    /// Serves `stream` if there is room for it or an idle connection can
    /// be shed for it; otherwise answers 503 and closes it.
    async fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        let permit = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if self.registry.shed_oldest_idle() => {
                // The shed connection gives its slot back as soon as its
                // task drops it.
                tokio::time::timeout(SHED_WAIT, Arc::clone(&self.slots).acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(permit) = permit else {
            tracing::warn!(%peer, "no connection could make room for a new one; refused it");
            refuse(&stream);
            return;
        };
        let connection = Connection {
            tracked: self.registry.track(),
            peer,
            body_timeout: self.limits.body_timeout,
            app: TowerToHyperService::new(self.router.clone()),
        };
        let http = self.http.clone();
        let stopping = self.stopping.subscribe();
        tokio::spawn(connection.run(stream, http, stopping, permit));
    }

    /// After a failed accept: a failure of that one connection is passed
    /// over; anything else (out of file handles or memory) sheds the
    /// oldest idle connection to free a handle, and pauses.
    async fn after_accept_error(&self, e: std::io::Error) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        if matches!(
            e.kind(),
            ConnectionAborted | ConnectionRefused | ConnectionReset
        ) {
            return;
        }
        let shed = self.registry.shed_oldest_idle();
        tracing::warn!(error = %e, shed, "accepting a connection failed; pausing");
        tokio::time::sleep(ACCEPT_PAUSE).await;
    }

    /// Asks every connection to finish its request and close, and waits
    /// for them (for up to [`DRAIN_TIMEOUT`]).
    async fn drain(self) {
        let _ = self.stopping.send(true);
        let all = u32::try_from(self.limits.max_connections).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, self.slots.acquire_many(all)).await;
        if drained.is_err() {
            tracing::warn!("requests still being handled at shutdown were dropped");
        }
    }
}

/// Answers 503 on a connection that will not be served, without waiting
/// for it: what the client sent already is read first (a close with unread
/// data resets the connection, and the client may lose the answer), and
/// the socket is new, so its send buffer has room for the answer.
fn refuse(stream: &TcpStream) {
    let mut scratch = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(stream.try_read(&mut scratch), Ok(n) if n > 0) {
            break;
        }
    }
    let _ = stream.try_write(busy_answer().as_bytes());
}

/// One connection and what its requests need.
struct Connection {
    tracked: Tracked,
    peer: SocketAddr,
    body_timeout: Duration,
    app: TowerToHyperService<Router>,
}

impl Connection {
    /// Serves the connection until it ends, is shed, or the server stops;
    /// then gives back its slot.
    async fn run(
        self,
        stream: TcpStream,
        http: http1::Builder,
        stopping: watch::Receiver<bool>,
        permit: OwnedSemaphorePermit,
    ) {
        // The socket is closed when `serve` returns (or unwinds), before
        // the slot is given back, so the cap counts open sockets; the slot
        // is given back even when a handler panics.
        let _slot = Held {
            tracked: self.tracked.clone(),
            _permit: permit,
        };
        self.serve(stream, http, stopping).await;
    }

    async fn serve(
        self,
        stream: TcpStream,
        http: http1::Builder,
        mut stopping: watch::Receiver<bool>,
    ) {
        let close = Arc::clone(&self.tracked.close);
        let this = Arc::new(self);
        let service = hyper::service::service_fn(move |request| {
            let this = Arc::clone(&this);
            async move { Ok::<_, Infallible>(this.handle(request).await) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended");
                    }
                    return;
                }
                () = close.notified() => return,
                _ = stopping.changed(), if !draining => {
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }

    /// Reads the body (bounded in time and size), then hands the request
    /// to the router with the connection marked busy.
    async fn handle(&self, request: hyper::Request<Incoming>) -> Response {
        let (mut parts, body) = request.into_parts();
        if body.size_hint().lower() > MAX_BODY_BYTES as u64 {
            // Its Content-Length says so already: no need to wait for it.
            return too_large();
        }
        let read = Limited::new(body, MAX_BODY_BYTES).collect();
        let bytes = match tokio::time::timeout(self.body_timeout, read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
            Ok(Err(_)) => return refusal(400, "BadBody", "the body could not be read"),
            Err(_) => {
                return refusal(408, "RequestTimeout", "the body did not arrive in time");
            }
        };
        let Some(_busy) = self.tracked.busy() else {
            // Shed in the instant between reading the body and now.
            return refusal(503, "Busy", "the connection was closed for a newer one");
        };
        parts.extensions.insert(ConnectInfo(self.peer));
        let request = http::Request::from_parts(parts, Body::from(bytes));
        match self.app.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// An error answer in the API's shape, after which the connection closes
/// (its request may not have been read to the end). Not logged one by one:
/// under a flood there would be one line per connection.
fn refusal(status: u16, code: &str, message: &str) -> Response {
    tracing::debug!(status, code, message, "request refused by the HTTP server");
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let mut response = json_response(status, &body).into_response();
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

fn too_large() -> Response {
    let message = format!("the body is larger than {MAX_BODY_BYTES} bytes");
    refusal(413, "BodyTooLarge", &message)
}

/// The connections held, and since when each has been idle.
#[derive(Default)]
struct Registry {
    slots: Mutex<HashMap<u64, Slot>>,
    next: AtomicU64,
}

struct Slot {
    /// When it last went idle; `None` while a request is being handled.
    idle_since: Option<Instant>,
    close: Arc<Notify>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Slot>> {
        // A panic elsewhere while holding the lock leaves the map whole
        // (every change is one insert, remove or field write).
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection, idle from now.
    fn track(self: &Arc<Self>) -> Tracked {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let slot = Slot {
            idle_since: Some(Instant::now()),
            close: Arc::clone(&close),
        };
        self.lock().insert(id, slot);
        Tracked {
            id,
            registry: Arc::clone(self),
            close,
        }
    }

    /// Closes the connection idle the longest, if any is idle.
    fn shed_oldest_idle(&self) -> bool {
        let mut slots = self.lock();
        let oldest = slots
            .iter()
            .filter_map(|(id, slot)| slot.idle_since.map(|since| (since, *id)))
            .min();
        let Some(slot) = oldest.and_then(|(_, id)| slots.remove(&id)) else {
            return false;
        };
        // `notify_one` keeps the wake-up if the task is not waiting yet.
        slot.close.notify_one();
        true
    }

    /// Closes, every quarter of `idle_timeout`, the connections idle
    /// longer than it.
    async fn reap(self: Arc<Self>, idle_timeout: Duration) {
        let mut tick = tokio::time::interval((idle_timeout / 4).max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(cutoff) = Instant::now().checked_sub(idle_timeout) else {
                continue;
            };
            let mut slots = self.lock();
            slots.retain(|_, slot| {
                let stale = slot.idle_since.is_some_and(|since| since < cutoff);
                if stale {
                    slot.close.notify_one();
                }
                !stale
            });
        }
    }
}

/// A connection's entry in the [`Registry`].
#[derive(Clone)]
struct Tracked {
    id: u64,
    registry: Arc<Registry>,
    close: Arc<Notify>,
}

impl Tracked {
    /// Marks the connection busy until the guard is dropped; `None` when
    /// it was shed already (it must not start handling a request then).
    fn busy(&self) -> Option<Busy<'_>> {
        let mut slots = self.registry.lock();
        slots.get_mut(&self.id)?.idle_since = None;
        Some(Busy(self))
    }

    fn forget(&self) {
        self.registry.lock().remove(&self.id);
    }
}

/// A connection's place under the cap: its registry entry, then its
/// permit, given back when dropped.
struct Held {
    tracked: Tracked,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.tracked.forget();
    }
}

/// A request being handled: its connection cannot be shed meanwhile.
struct Busy<'a>(&'a Tracked);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.0.registry.lock().get_mut(&self.0.id) {
            slot.idle_since = Some(Instant::now());
        }
    }
}

fn whole_number(name: &str, text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{name} must be a whole number above 0, not {text:?}"))
}

/// A duration in seconds from `name` (`default` when unset), 1 to 3600.
fn seconds(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
) -> Result<Duration, String> {
    let secs = match lookup(name) {
        Some(text) => whole_number(name, &text)?,
        None => default,
    };
    if secs > 3600 {
        return Err(format!("{name} must be at most 3600 seconds, not {secs}"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(vars: &[(&str, &str)], open_files: u64) -> Result<Limits, String> {
        Limits::from_lookup(
            |name| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            },
            open_files,
        )
    }

    #[test]
    fn the_default_cap_leaves_the_reserve_under_the_file_limit() {
        let low = limits(&[], 256).unwrap();
        assert_eq!(low.max_connections, 256 - FILE_RESERVE as usize);
        assert_eq!(low.header_timeout, Duration::from_secs(10));
        assert_eq!(low.body_timeout, Duration::from_secs(10));
        assert_eq!(low.idle_timeout, Duration::from_secs(30));
        let high = limits(&[], u64::MAX).unwrap();
        assert_eq!(high.max_connections, DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn a_file_limit_too_low_for_the_default_cap_stops_start_up() {
        let e = limits(&[], 100).unwrap_err();
        assert!(e.contains("is 100") && e.contains("at least 144"), "{e}");
    }

    #[test]
    fn a_configured_cap_must_fit_under_the_file_limit() {
        let fits = limits(&[("JITVM_MAX_CONNECTIONS", "128")], 256).unwrap();
        assert_eq!(fits.max_connections, 128);
        let e = limits(&[("JITVM_MAX_CONNECTIONS", "129")], 256).unwrap_err();
        assert!(
            e.starts_with("JITVM_MAX_CONNECTIONS=129 does not fit")
                && e.contains("is 256")
                && e.contains("leaving 128"),
            "{e}"
        );
    }

    #[test]
    fn timeouts_and_caps_are_whole_numbers_in_range() {
        let set = limits(
            &[
                ("JITVM_HEADER_TIMEOUT_SECS", "3"),
                ("JITVM_BODY_TIMEOUT_SECS", "4"),
                ("JITVM_IDLE_TIMEOUT_SECS", "5"),
            ],
            1024,
        )
        .unwrap();
        assert_eq!(
            (set.header_timeout, set.body_timeout, set.idle_timeout),
            (
                Duration::from_secs(3),
                Duration::from_secs(4),
                Duration::from_secs(5)
            )
        );
        for (name, value) in [
            ("JITVM_MAX_CONNECTIONS", "0"),
            ("JITVM_MAX_CONNECTIONS", "many"),
            ("JITVM_HEADER_TIMEOUT_SECS", "0"),
            ("JITVM_BODY_TIMEOUT_SECS", "-1"),
            ("JITVM_IDLE_TIMEOUT_SECS", "3601"),
        ] {
            let e = limits(&[(name, value)], 1024).unwrap_err();
            assert!(e.starts_with(name), "{name}={value}: {e}");
        }
    }

    #[test]
    fn shedding_takes_the_connection_idle_the_longest_and_never_a_busy_one() {
        let registry = Arc::new(Registry::default());
        let (first, second, third) = (registry.track(), registry.track(), registry.track());
        let _busy = first.busy().unwrap();
        assert!(registry.shed_oldest_idle());
        assert!(second.busy().is_none(), "the oldest idle one went");
        assert!(third.busy().is_some(), "the newer one stays");
        assert!(registry.shed_oldest_idle());
        assert!(!registry.shed_oldest_idle(), "only the busy one is left");
        assert!(first.busy().is_some());
    }
}

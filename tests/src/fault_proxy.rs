//! A fault-injecting HTTP/1.1 reverse proxy in front of moto: tests point
//! an SDK client (or a whole [`Stack`](crate::stack::Stack), see
//! [`Stack::start_behind`](crate::stack::Stack::start_behind)) at
//! [`FaultProxy::endpoint`], and the proxy forwards every request to moto
//! unchanged (method, path, query, headers, `Host` and the SigV4
//! `Authorization` included, body) and hands back moto's answer, unless a
//! fault says otherwise.
//!
//! # Matching
//!
//! A [`ProxyFault`] names an AWS action:
//!
//! - query protocol (EC2): the `Action` field of the form body, or of the
//!   query string;
//! - JSON protocols (DynamoDB, SQS): the part of the `X-Amz-Target` header
//!   after its last dot (`DynamoDB_20120810.UpdateItem` is `UpdateItem`).
//!
//! A fault fires on `times` matching requests (1 unless told), then is
//! spent; faults are tried in the order injected, and one request meets at
//! most one fault. [`FaultProxy::hits`] counts every request of an action
//! that arrived, faulted or not.
//!
//! # Kinds ([`FaultKind`])
//!
//! Error bodies take the shape of the request's protocol, so the SDK reads
//! the code: for the query protocol EC2's
//! `<Response><Errors><Error><Code>…</Code><Message>…</Message></Error></Errors><RequestID>…</RequestID></Response>`
//! (`text/xml`), for JSON `{"__type":"…","message":"…"}`
//! (`application/x-amz-json-1.0`).
//!
//! - `Throttle`: query 503 `RequestLimitExceeded` (what EC2 answers when
//!   throttling); JSON 400 `ThrottlingException`. The SDK retries both as
//!   throttling.
//! - `ServerError`: query 500 `InternalError`; JSON 500
//!   `InternalServerError`. The SDK retries both as transient.
//! - `Error { status, code, message }`: that status and error, in the
//!   request's protocol (e.g. 400 `RulesPerSecurityGroupLimitExceeded`).
//! - `Stall(d)`: reads the request, answers nothing for `d`, then closes
//!   the connection; a client with a shorter timeout gives up first.
//! - `Drop`: closes the connection without any response.
//! - `Latency(d)`: waits `d`, then forwards as usual.
//!
//! # After forwarding
//!
//! [`ProxyFault::after_forward`] makes the fault strike once moto has
//! handled the request, so the change happened but the caller does not
//! learn it: `Drop` after forwarding is the classic "did it happen?"
//! fault; an error kind answers that error instead of moto's answer;
//! `Stall` forwards, then answers nothing; `Latency` delays moto's answer.
//!
//! # Not emulated
//!
//! HTTPS, HTTP/2, `Expect: 100-continue` beyond what hyper does by itself,
//! streaming (bodies are read whole before forwarding), and matching on
//! anything but the action (region, path, resource).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

/// A fault to inject: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyFault {
    /// The AWS action it matches (`AuthorizeSecurityGroupIngress`,
    /// `PutItem`), compared exactly.
    pub action: String,
    pub kind: FaultKind,
    /// How many matching requests it fires on before it is spent.
    pub times: u32,
    /// Strike once moto has handled the request, not before.
    pub after_forward: bool,
}

impl ProxyFault {
    /// A fault of `kind` on the next request of `action`.
    pub fn on(action: &str, kind: FaultKind) -> ProxyFault {
        ProxyFault {
            action: action.to_owned(),
            kind,
            times: 1,
            after_forward: false,
        }
    }

    /// Fires on the next `times` requests of its action instead of one.
    pub fn times(self, times: u32) -> ProxyFault {
        ProxyFault { times, ..self }
    }

    /// Strikes after moto has handled the request (see the module
    /// documentation).
    pub fn after_forward(self) -> ProxyFault {
        ProxyFault {
            after_forward: true,
            ..self
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Query: 503 `RequestLimitExceeded`; JSON: 400 `ThrottlingException`.
    Throttle,
    /// Query: 500 `InternalError`; JSON: 500 `InternalServerError`.
    ServerError,
    /// This status and error, in the request's protocol.
    Error {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer for this long, then the connection closes.
    Stall(Duration),
    /// The connection closes without any response.
    Drop,
    /// Waits this long, then serves normally.
    Latency(Duration),
}

/// The proxy: an HTTP server on a loopback port. Dropping it stops the
/// server and every connection it holds (stalled ones too).
pub struct FaultProxy {
    endpoint: String,
    upstream: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    /// Dropped with the proxy, which ends the requests still in hand
    /// (stalled ones too).
    _stop: tokio::sync::watch::Sender<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FaultProxy {
    /// Starts on a free port of 127.0.0.1, forwarding to `upstream` (moto's
    /// endpoint, `http://127.0.0.1:PORT`), serving on the current tokio
    /// runtime.
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("the fault proxy binds a free loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let upstream = upstream.trim_end_matches('/').to_owned();
        let shared = Arc::new(Shared {
            upstream: upstream.clone(),
            // Straight to moto: never through a proxy from the environment,
            // and redirects are the caller's business.
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a plain HTTP client builds"),
            state: Mutex::default(),
        });
        let (stop, stopped) = tokio::sync::watch::channel(());
        let server = tokio::spawn(serve(listener, shared.clone(), stopped));
        FaultProxy {
            endpoint: format!("http://{addr}"),
            upstream,
            shared,
            server,
            _stop: stop,
        }
    }

    /// Where clients send requests: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Where it forwards them.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    pub fn inject(&self, fault: ProxyFault) {
        self.shared.state().faults.push(fault);
    }

    /// Drops every fault not yet spent: requests pass through again.
    pub fn clear_faults(&self) {
        self.shared.state().faults.clear();
    }

    /// How many requests of `action` arrived so far, faulted or not.
    pub fn hits(&self, action: &str) -> usize {
        self.shared.state().hits.get(action).copied().unwrap_or(0)
    }
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    faults: Vec<ProxyFault>,
    hits: HashMap<String, usize>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding it left nothing half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request of `action` and takes one firing of the first
    /// fault that matches it.
    fn arrived(&self, action: &str) -> Option<ProxyFault> {
        let mut state = self.state();
        *state.hits.entry(action.to_owned()).or_default() += 1;
        let at = state
            .faults
            .iter()
            .position(|f| f.action == action && f.times > 0)?;
        let fault = &mut state.faults[at];
        fault.times -= 1;
        let fired = fault.clone();
        if fault.times == 0 {
            state.faults.remove(at);
        }
        Some(fired)
    }
}

/// The service's error, which makes hyper close the connection without
/// writing a response.
#[derive(Debug)]
struct HangUp;

impl std::fmt::Display for HangUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the fault proxy hangs up without answering")
    }
}

impl std::error::Error for HangUp {}

type Answer = Result<Response<Full<Bytes>>, HangUp>;

/// Accepts connections until aborted; the connections are aborted with
/// it, and the requests in hand end when `stopped` says so.
async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stopped: tokio::sync::watch::Receiver<()>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: try again shortly.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let shared = shared.clone();
        let stopped = stopped.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                // On a task of its own: a client that gives up (its timeout
                // fired) closes the connection, and that must not cancel a
                // request on its way to moto, as it would not on a network.
                let shared = shared.clone();
                let mut stopped = stopped.clone();
                let handled = tokio::spawn(async move {
                    tokio::select! {
                        answer = handle(&shared, req) => answer,
                        _ = stopped.changed() => Err(HangUp),
                    }
                });
                async move { handled.await.unwrap_or(Err(HangUp)) }
            });
            // A hang-up or a client going away ends the connection; that is
            // all there is to do with the error.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The protocol of a request, which decides the shape of an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Query,
    Json,
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        // The client went away mid-request: nothing to answer.
        Err(_) => return Err(HangUp),
    };
    let (protocol, action) = action_of(&parts.headers, parts.uri.query(), &body);
    let Some(fault) = action.as_deref().and_then(|a| shared.arrived(a)) else {
        return Ok(forward(shared, &parts, body).await);
    };
    let answered = if fault.after_forward {
        Some(forward(shared, &parts, body.clone()).await)
    } else {
        None
    };
    let error = |status, code: &str, message: &str| -> Answer {
        Ok(error_response(protocol, status, code, message))
    };
    match (fault.kind, protocol) {
        (FaultKind::Latency(d), _) => {
            tokio::time::sleep(d).await;
            match answered {
                Some(answer) => Ok(answer),
                None => Ok(forward(shared, &parts, body).await),
            }
        }
        (FaultKind::Stall(d), _) => {
            tokio::time::sleep(d).await;
            Err(HangUp)
        }
        (FaultKind::Drop, _) => Err(HangUp),
        (FaultKind::Throttle, Protocol::Query) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "RequestLimitExceeded",
            "Request limit exceeded.",
        ),
        (FaultKind::Throttle, Protocol::Json) => error(
            StatusCode::BAD_REQUEST,
            "ThrottlingException",
            "Rate of requests exceeds the allowed throughput.",
        ),
        (FaultKind::ServerError, Protocol::Query) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "An internal error has occurred.",
        ),
        (FaultKind::ServerError, Protocol::Json) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Internal server error.",
        ),
        (
            FaultKind::Error {
                status,
                code,
                message,
            },
            _,
        ) => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            &code,
            &message,
        ),
    }
}

/// The request's protocol and AWS action, when it names one.
fn action_of(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> (Protocol, Option<String>) {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let action = target.rsplit('.').next().unwrap_or(target);
        return (Protocol::Json, Some(action.to_owned()));
    }
    let action = form_urlencoded::parse(body)
        .chain(form_urlencoded::parse(query.unwrap_or("").as_bytes()))
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.into_owned());
    (Protocol::Query, action)
}

/// Headers that belong to one connection, not to the message, and those
/// the forwarding client sets itself from the body.
const NOT_FORWARDED: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
    header::CONTENT_LENGTH,
];

fn forwarded(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for name in &NOT_FORWARDED {
        out.remove(name);
    }
    out
}

/// Sends the request to moto as it came (its `Host` included, so moto
/// builds URLs, such as SQS queue URLs, that point back at the proxy) and
/// returns moto's answer; 502 when moto cannot be reached.
async fn forward(
    shared: &Shared,
    parts: &http::request::Parts,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let sent = shared
        .client
        .request(parts.method.clone(), format!("{}{path}", shared.upstream))
        .headers(forwarded(&parts.headers))
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => return bad_gateway(&e),
    };
    let status = answer.status();
    let headers = forwarded(answer.headers());
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(e) => return bad_gateway(&e),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn bad_gateway(e: &reqwest::Error) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "the fault proxy cannot reach moto: {e}"
    ))));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// An AWS error answer in `protocol`'s shape.
fn error_response(
    protocol: Protocol,
    status: StatusCode,
    code: &str,
    message: &str,
) -> Response<Full<Bytes>> {
    let request_id = uuid::Uuid::now_v7().to_string();
    let (content_type, body) = match protocol {
        Protocol::Query => (
            "text/xml;charset=UTF-8",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>",
                xml_escape(code),
                xml_escape(message)
            ),
        ),
        Protocol::Json => (
            "application/x-amz-json-1.0",
            serde_json::json!({"__type": code, "message": message}).to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

//! Fakes of the two chat services jitvm posts to, served over plain HTTP
//! on one loopback port, recording what they receive:
//!
//! - Slack's Web API method `chat.postMessage` at `POST /api/chat.postMessage`
//!   ([`ChatFake::slack_base`] is the API base, `…/api/`). As Slack
//!   documents it: the bot token comes as `Authorization: Bearer xoxb-…`
//!   (else HTTP 200 `{"ok": false, "error": "not_authed"}`), the body is
//!   JSON with `channel` and `text` or `blocks` (else `channel_not_found`,
//!   `no_text`), success is HTTP 200 `{"ok": true, "channel": …, "ts": …}`,
//!   and rate limiting is HTTP 429 with `Retry-After` in seconds.
//! - Microsoft Teams webhooks at `POST /teams/{name}`
//!   ([`ChatFake::teams_url`]), answering as a Workflows trigger does:
//!   HTTP 202 with an empty body for a JSON body with `attachments`, 400
//!   otherwise.
//!
//! Faults are queued per service and used by the next posts, in order:
//! an HTTP status, a 429 with `Retry-After`, a Slack `ok: false` error
//! code, a redirect (which a client must not follow), or a webhook that
//! never answers ([`ChatFake::hang_teams`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// A post Slack accepted.
#[derive(Debug, Clone)]
pub struct SlackPost {
    pub channel: String,
    /// The bearer token it came with.
    pub token: String,
    /// The JSON body as sent.
    pub body: Value,
}

/// A post a Teams webhook accepted.
#[derive(Debug, Clone)]
pub struct TeamsPost {
    /// The webhook's name (the last segment of its URL).
    pub webhook: String,
    pub body: Value,
}

/// What the next post to a service gets instead of success.
#[derive(Debug, Clone)]
enum Fault {
    Status(u16),
    RateLimited { retry_after: u64 },
    SlackError(String),
    Redirect,
}

#[derive(Default)]
struct World {
    slack: Vec<SlackPost>,
    teams: Vec<TeamsPost>,
    slack_faults: VecDeque<Fault>,
    teams_faults: VecDeque<Fault>,
    /// Every post that arrived, accepted or not, per service.
    slack_arrivals: usize,
    teams_arrivals: usize,
    /// Teams posts waiting for an answer that never comes.
    teams_hanging: usize,
    hang_teams: bool,
}

struct Shared {
    world: Mutex<World>,
    changed: tokio::sync::Notify,
}

impl Shared {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Slack and Teams on one loopback port, for one test.
pub struct ChatFake {
    base: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ChatFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ChatFake {
    pub async fn start() -> ChatFake {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("the chat fake binds a free loopback port");
        let base = format!("http://{}", listener.local_addr().expect("bound address"));
        let shared = Arc::new(Shared {
            world: Mutex::new(World::default()),
            changed: tokio::sync::Notify::new(),
        });
        let app = Router::new()
            .route("/api/chat.postMessage", post(slack))
            .route("/teams/{name}", post(teams))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ChatFake {
            base,
            shared,
            server,
        }
    }

    /// The Slack API base to configure (`JITVM_SLACK_API_URL`).
    pub fn slack_base(&self) -> String {
        format!("{}/api/", self.base)
    }

    /// The URL of the Teams webhook `name`.
    pub fn teams_url(&self, name: &str) -> String {
        format!("{}/teams/{name}", self.base)
    }

    /// The next `n` Slack posts answer HTTP `status`.
    pub fn fail_next_slack(&self, n: usize, status: u16) {
        let mut w = self.shared.world();
        w.slack_faults.extend((0..n).map(|_| Fault::Status(status)));
    }

    /// The next `n` Teams posts answer HTTP `status`.
    pub fn fail_next_teams(&self, n: usize, status: u16) {
        let mut w = self.shared.world();
        w.teams_faults.extend((0..n).map(|_| Fault::Status(status)));
    }

    /// The next Slack post answers HTTP 200 `{"ok": false, "error": code}`.
    pub fn slack_error_next(&self, code: &str) {
        let mut w = self.shared.world();
        w.slack_faults.push_back(Fault::SlackError(code.to_owned()));
    }

    /// The next Slack post is rate limited: 429 with `Retry-After: secs`.
    pub fn ratelimit_next_slack(&self, secs: u64) {
        let mut w = self.shared.world();
        w.slack_faults
            .push_back(Fault::RateLimited { retry_after: secs });
    }

    /// The next Teams post answers 302 to another host.
    pub fn redirect_next_teams(&self) {
        self.shared.world().teams_faults.push_back(Fault::Redirect);
    }

    /// While `on`, Teams posts get no answer at all.
    pub fn hang_teams(&self, on: bool) {
        self.shared.world().hang_teams = on;
        self.shared.changed.notify_waiters();
    }

    pub fn slack_posts(&self) -> Vec<SlackPost> {
        self.shared.world().slack.clone()
    }

    pub fn teams_posts(&self) -> Vec<TeamsPost> {
        self.shared.world().teams.clone()
    }

    /// Posts that reached Slack and Teams, accepted or not.
    pub fn arrivals(&self) -> (usize, usize) {
        let w = self.shared.world();
        (w.slack_arrivals, w.teams_arrivals)
    }

    /// Teams posts that are waiting for an answer now.
    pub fn teams_hanging(&self) -> usize {
        self.shared.world().teams_hanging
    }

    /// Waits until a Slack post satisfies `pred`, for at most `limit`.
    pub async fn wait_for_slack(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&SlackPost) -> bool,
    ) -> SlackPost {
        self.wait(what, limit, |w| w.slack.iter().find(|p| pred(p)).cloned())
            .await
    }

    /// Waits until a Teams post satisfies `pred`, for at most `limit`.
    pub async fn wait_for_teams(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&TeamsPost) -> bool,
    ) -> TeamsPost {
        self.wait(what, limit, |w| w.teams.iter().find(|p| pred(p)).cloned())
            .await
    }

    /// Waits until `arrived` holds of the arrival counts (Slack, Teams).
    pub async fn wait_for_arrivals(
        &self,
        what: &str,
        limit: Duration,
        arrived: impl Fn(usize, usize) -> bool,
    ) {
        self.wait(what, limit, |w| {
            arrived(w.slack_arrivals, w.teams_arrivals).then_some(())
        })
        .await
    }

    async fn wait<T>(&self, what: &str, limit: Duration, found: impl Fn(&World) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.shared.changed.notified();
            if let Some(hit) = found(&self.shared.world()) {
                return hit;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let w = self.shared.world();
                panic!(
                    "{what}: not seen within {limit:?}; Slack got {:#?}, Teams got {:#?}",
                    w.slack.iter().map(|p| &p.body["text"]).collect::<Vec<_>>(),
                    w.teams.iter().map(|p| &p.webhook).collect::<Vec<_>>()
                );
            }
        }
    }
}

async fn slack(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = {
        let mut w = shared.world();
        w.slack_arrivals += 1;
        w.slack_faults.pop_front()
    };
    shared.changed.notify_waiters();
    if let Some(fault) = fault {
        return answer_fault(fault);
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| t.starts_with("xoxb-"));
    let Some(token) = token else {
        return slack_error("not_authed");
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return slack_error("invalid_json");
    };
    let Some(channel) = body["channel"].as_str().filter(|c| !c.is_empty()) else {
        return slack_error("channel_not_found");
    };
    if body["text"].as_str().is_none_or(str::is_empty) && !body["blocks"].is_array() {
        return slack_error("no_text");
    }
    let channel = channel.to_owned();
    let ts = {
        let mut w = shared.world();
        w.slack.push(SlackPost {
            channel: channel.clone(),
            token: token.to_owned(),
            body,
        });
        format!("1700000000.{:06}", w.slack.len())
    };
    shared.changed.notify_waiters();
    axum::Json(json!({"ok": true, "channel": channel, "ts": ts})).into_response()
}

async fn teams(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let (fault, hang) = {
        let mut w = shared.world();
        w.teams_arrivals += 1;
        let hang = w.hang_teams;
        if hang {
            w.teams_hanging += 1;
        }
        (w.teams_faults.pop_front(), hang)
    };
    shared.changed.notify_waiters();
    if hang {
        // No answer: the client's own timeout must end the post.
        let _guard = Hanging(shared.clone());
        std::future::pending::<()>().await;
    }
    if let Some(fault) = fault {
        return answer_fault(fault);
    }
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(b) if b["attachments"].is_array() => b,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "the body must be a message with attachments",
            )
                .into_response();
        }
    };
    shared.world().teams.push(TeamsPost {
        webhook: name,
        body,
    });
    shared.changed.notify_waiters();
    StatusCode::ACCEPTED.into_response()
}

/// Counts a hanging Teams post until its client gives up.
struct Hanging(Arc<Shared>);

impl Drop for Hanging {
    fn drop(&mut self) {
        self.0.world().teams_hanging -= 1;
        self.0.changed.notify_waiters();
    }
}

fn answer_fault(fault: Fault) -> Response {
    match fault {
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, "injected failure").into_response()
        }
        Fault::RateLimited { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after.to_string())],
            "rate limited",
        )
            .into_response(),
        Fault::SlackError(code) => slack_error(&code),
        Fault::Redirect => (
            StatusCode::FOUND,
            [(header::LOCATION, "http://127.0.0.2:9/elsewhere")],
            "",
        )
            .into_response(),
    }
}

fn slack_error(code: &str) -> Response {
    axum::Json(json!({"ok": false, "error": code})).into_response()
}

//! The local host: the same handlers as the Lambda functions, on one
//! machine.
//!
//! - Serves the HTTP routes of API Gateway on `JITVM_LISTEN` (default
//!   `127.0.0.1:8080`) plus `GET /healthz`. Callers authenticate with
//!   `Authorization: Bearer <token>`; `JITVM_LOCAL_TOKENS="alice=tok1,bob=tok2"`
//!   maps tokens to the principals `local:alice`, `local:bob`.
//! - Polls the request queue like Lambda's event source mapping: batches of
//!   up to 10, long polling, partial batch failures retried.
//! - Polls the expiry queue the same way and hands each grant's timer to
//!   the expire function's handler when it comes back.
//! - Runs the expiry sweep every `JITVM_SWEEP_INTERVAL_SECS` (default 60).
//! - Reads the requests table's stream and polls the notify queue, and
//!   hands both to the notify function's handlers (events, notices,
//!   retries, reminders).
//! - With `JITVM_SLACK_SIGNING_SECRET`, serves the Slack app's routes
//!   (`/v1/chatops/slack`, `/v1/chatops/slack/interactive`), which Slack
//!   authenticates with its signature instead of a bearer token.
//! - Bounds the HTTP side ([`serve`]): header, body and idle timeouts, and
//!   a cap on connections under the open-file limit, shedding the
//!   connection idle the longest for a new one, so that a flood of slow
//!   requests leaves `/healthz`, the pollers and the sweep working.

pub mod serve;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use jiff::Timestamp;
use jitvm_core::api::{ApiError, Caller, MAX_BODY_BYTES, json_response};
use jitvm_core::aws::events::EventBus;
use jitvm_core::aws::sqs::{Received, SqsQueue};
use jitvm_core::aws::streams::ChangeStream;
use jitvm_core::config::{Secret, Settings};
use jitvm_core::notify::{ChannelNames, ChatChannels};
use jitvm_core::ports::AdapterError;
use jitvm_core::stack::Stack;
use jitvm_core::{Principal, PrincipalError};
use jitvm_expire::{ExpireApp, SCOPE_DEADLINE, SweepSummary};
use jitvm_grant::GrantApp;
use jitvm_notify::{NotifyApp, Tally};
use jitvm_policy::PolicyApi;
use jitvm_request::RequestApi;
use jitvm_request::chatops::SlackApp;

/// Bearer tokens and the principals they stand for. Clones share one map,
/// so that a token can be added while the host serves (a test's stand-in
/// identity provider adds each ID token it issues).
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<RwLock<HashMap<String, Principal>>>);

impl Tokens {
    /// Parses `JITVM_LOCAL_TOKENS`: `name=token` pairs separated by commas;
    /// `name` becomes the principal `local:<name>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let tokens = Self::default();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, token)) = pair.split_once('=') else {
                return Err(format!("JITVM_LOCAL_TOKENS: {pair:?} is not name=token"));
            };
            tokens.add(name, token)?;
        }
        Ok(tokens)
    }

    /// Adds `token` for the principal `local:<name>`: at least 8
    /// characters, and not one already given.
    pub fn add(&self, name: &str, token: &str) -> Result<(), String> {
        let (name, token) = (name.trim(), token.trim());
        if token.len() < 8 {
            return Err(format!(
                "JITVM_LOCAL_TOKENS: the token of {name:?} is shorter than 8 characters"
            ));
        }
        let principal = Principal::parse(&format!("local:{name}"))
            .map_err(|e: PrincipalError| format!("JITVM_LOCAL_TOKENS: {name:?}: {e}"))?;
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if map.contains_key(token) {
            return Err(format!(
                "JITVM_LOCAL_TOKENS: a token is given twice (for {name:?})"
            ));
        }
        map.insert(token.to_owned(), principal);
        Ok(())
    }

    fn principal(&self, token: &str) -> Option<Principal> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }
}

/// The host's clock: the real one, or one a test sets.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Everything the host runs.
pub struct Host {
    pub settings: Settings,
    pub stack: Stack,
    pub queue: SqsQueue,
    /// The expiry queue, where each grant's timer waits.
    pub timers: SqsQueue,
    /// How long the sweep of one scope may take.
    pub scope_deadline: Duration,
    pub tokens: Tokens,
    pub clock: Clock,
    /// The Slack app, when `JITVM_SLACK_SIGNING_SECRET` is set.
    pub slack: Option<SlackApp>,
    /// The notify function's queue (retries, reminders), bus, channels
    /// and counts.
    pub notify: Notifier,
}

/// What the host's notify function uses.
pub struct Notifier {
    pub jobs: SqsQueue,
    pub events: EventBus,
    pub channels: ChatChannels,
    pub tally: Tally,
    /// What a policy's `notify` may name.
    pub names: ChannelNames,
}

/// What one poll of the queue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollReport {
    pub received: usize,
    pub done: usize,
    pub retried: usize,
}

impl Host {
    /// Builds the host and creates the tables and the queues when missing.
    pub async fn start(
        settings: Settings,
        stack: Stack,
        tokens: Tokens,
        clock: Clock,
    ) -> Result<Self, AdapterError> {
        stack.store.ensure_tables().await?;
        let queue = SqsQueue::ensure(&stack.config, &settings.request_queue).await?;
        let timers = SqsQueue::ensure_standard(&stack.config, &settings.expiry_queue).await?;
        let notify = Notifier::start(&stack).await?;
        let slack = match &stack.settings.slack_signing_secret {
            Some(Secret::Value(secret)) => Some(
                SlackApp::local(secret.clone(), settings.slack_workspaces.clone())
                    .map_err(|e| AdapterError::permanent("SlackClient", e.to_string()))?,
            ),
            Some(Secret::Arn(arn)) => {
                return Err(AdapterError::permanent(
                    "SecretUnresolved",
                    format!(
                        "the Slack signing secret {arn} was not read; build the stack with Stack::connect"
                    ),
                ));
            }
            None => None,
        };
        Ok(Self {
            settings,
            stack,
            queue,
            timers,
            scope_deadline: SCOPE_DEADLINE,
            tokens,
            clock,
            slack,
            notify,
        })
    }

    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// The HTTP routes: API Gateway's, plus `GET /healthz`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(serve_http).with_state(self)
    }

    /// Receives one batch (up to 10, waiting up to `wait_seconds`) and hands
    /// it to the grant handler, as Lambda's event source mapping does:
    /// finished messages are deleted, failed ones made visible again.
    pub async fn poll_once(&self, wait_seconds: i32) -> Result<PollReport, AdapterError> {
        let received = self.queue.receive(10, wait_seconds).await?;
        if received.is_empty() {
            return Ok(PollReport::default());
        }
        let response =
            jitvm_grant::handle_batch(&self.grant_app(), sqs_event(&received), self.now()).await;
        settle(&self.queue, &received, &response).await
    }

    /// Hands a batch of timers from the expiry queue to the expire
    /// function's timer handler, as Lambda's event source mapping does.
    async fn handle_timers(&self, received: &[Received]) -> Result<PollReport, AdapterError> {
        let response =
            jitvm_expire::handle_timers(&self.expire_app(), sqs_event(received), &*self.clock)
                .await;
        settle(&self.timers, received, &response).await
    }

    /// Runs the expiry sweep once, at `now`.
    pub async fn sweep_once(&self, now: Timestamp) -> Result<SweepSummary, AdapterError> {
        jitvm_expire::sweep(&self.expire_app(), now).await
    }

    /// The grant function as the host runs it.
    pub fn grant_app(&self) -> GrantApp<'_> {
        GrantApp {
            policies: &self.stack.store,
            requests: &self.stack.store,
            firewall: &self.stack.firewall,
            timers: &self.timers,
            approval_timeout: self.settings.approval_timeout,
        }
    }

    /// The expire function as the host runs it.
    pub fn expire_app(&self) -> ExpireApp<'_> {
        ExpireApp {
            firewall: &self.stack.firewall,
            requests: &self.stack.store,
            timers: &self.timers,
            approval_timeout: self.settings.approval_timeout,
            scope_deadline: self.scope_deadline,
        }
    }

    /// The notify function as the host runs it.
    pub fn notify_app(&self) -> NotifyApp<'_> {
        let settings = &self.stack.settings.notify;
        NotifyApp {
            requests: &self.stack.store,
            policies: &self.stack.store,
            events: &self.notify.events,
            jobs: &self.notify.jobs,
            channels: &self.notify.channels,
            defaults: settings.defaults(),
            retry_after: settings.retry_after,
            attempts: settings.attempts,
            tally: &self.notify.tally,
        }
    }

    /// Reads the requests table's stream forever and hands each batch of
    /// writes to the notify function, as Lambda's event source mapping
    /// does; a batch that fails is handed over again.
    pub async fn run_notifier(self: Arc<Self>) {
        let table = &self.settings.requests_table;
        let mut stream = loop {
            match ChangeStream::open(&self.stack.config, table).await {
                Ok(stream) => break stream,
                Err(e) => {
                    tracing::error!(error = %e, "opening the requests table's stream failed");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        loop {
            let changes = match stream.next().await {
                Ok(changes) => changes,
                Err(e) => {
                    tracing::error!(error = %e, "reading the requests table's stream failed");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            if changes.is_empty() {
                // A stream has no long polling: Lambda reads each shard
                // about four times a second.
                tokio::time::sleep(STREAM_POLL).await;
                continue;
            }
            while let Err(e) =
                jitvm_notify::on_changes(&self.notify_app(), &changes, self.now()).await
            {
                tracing::error!(error = %e, "a batch of changes failed; handing it over again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Polls the notify queue forever (long polling, 20 s), each batch on
    /// its own task, as the expiry queue is polled.
    pub async fn run_notify_poller(self: Arc<Self>) {
        poll_forever(
            self,
            |host| &host.notify.jobs,
            "the notify queue",
            |host, received| async move {
                let response =
                    jitvm_notify::on_jobs(&host.notify_app(), sqs_event(&received), host.now())
                        .await;
                settle(&host.notify.jobs, &received, &response)
                    .await
                    .map(|_| ())
            },
        )
        .await
    }

    /// Polls the queue forever (long polling, 20 s).
    pub async fn run_poller(self: Arc<Self>) {
        loop {
            match self.poll_once(20).await {
                Ok(r) if r.retried > 0 => tokio::time::sleep(Duration::from_secs(1)).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "polling the request queue failed");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }

    /// Polls the expiry queue forever (long polling, 20 s). Each batch is
    /// handled on its own task, as Lambda runs batches side by side, so a
    /// timer waiting out its last second or a slow cloud never holds up
    /// the next batch.
    pub async fn run_timer_poller(self: Arc<Self>) {
        poll_forever(
            self,
            |host| &host.timers,
            "the expiry queue",
            |host, received| async move { host.handle_timers(&received).await.map(|_| ()) },
        )
        .await
    }

    /// Sweeps every `interval`, forever.
    pub async fn run_sweeper(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.sweep_once(self.now()).await {
                tracing::error!(error = %e, "sweep failed");
            }
        }
    }
}

/// Polls `queue` of `host` forever (long polling, 20 s) and hands each
/// batch to `handle` on a task of its own, as Lambda runs batches side by
/// side: a slow batch never holds up the next.
async fn poll_forever<Q, H, F>(host: Arc<Host>, queue: Q, name: &'static str, handle: H)
where
    Q: Fn(&Host) -> &SqsQueue,
    H: Fn(Arc<Host>, Vec<Received>) -> F,
    F: std::future::Future<Output = Result<(), AdapterError>> + Send + 'static,
{
    loop {
        let received = match queue(&host).receive(10, 20).await {
            Ok(received) => received,
            Err(e) => {
                tracing::error!(error = %e, queue = name, "polling a queue failed");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if received.is_empty() {
            continue;
        }
        let batch = handle(Arc::clone(&host), received);
        tokio::spawn(async move {
            if let Err(e) = batch.await {
                tracing::error!(error = %e, queue = name, "settling a batch failed");
            }
        });
    }
}

/// How often the host reads the requests table's stream.
const STREAM_POLL: Duration = Duration::from_millis(250);

impl Notifier {
    /// The notify queue (created when missing), the bus, and the channels,
    /// whose webhook URLs and bot token are checked now.
    async fn start(stack: &Stack) -> Result<Self, AdapterError> {
        let settings = &stack.settings.notify;
        let channels = ChatChannels::from_settings(settings)
            .map_err(|e| AdapterError::permanent("NotifySettings", e.to_string()))?;
        Ok(Self {
            jobs: stack.notify_jobs(&stack.settings).await?,
            events: EventBus::new(&stack.config, &settings.event_bus),
            names: channels.names(),
            channels,
            tally: Tally::default(),
        })
    }
}

/// The SQS event Lambda would deliver for `received`.
fn sqs_event(received: &[Received]) -> SqsEvent {
    let mut event = SqsEvent::default();
    for r in received {
        let mut m = SqsMessage::default();
        m.message_id = Some(r.message_id.clone());
        m.receipt_handle = Some(r.receipt_handle.clone());
        m.body = Some(r.body.clone());
        m.attributes = r.attributes.clone();
        m.event_source = Some("aws:sqs".into());
        event.records.push(m);
    }
    event
}

/// Deletes the messages a handler finished and makes the failed ones
/// visible again, as Lambda's event source mapping does.
async fn settle(
    queue: &SqsQueue,
    received: &[Received],
    response: &SqsBatchResponse,
) -> Result<PollReport, AdapterError> {
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    let mut done = Vec::new();
    let mut unreleased = None;
    for r in received {
        if !failed.contains(&r.message_id.as_str()) {
            done.push(r.receipt_handle.clone());
        } else if let Err(e) = queue.release(&r.receipt_handle).await {
            // It comes back after the visibility timeout instead.
            unreleased = Some(e);
        }
    }
    queue.delete_batch(&done).await?;
    if let Some(e) = unreleased {
        return Err(e);
    }
    Ok(PollReport {
        received: received.len(),
        done: done.len(),
        retried: failed.len(),
    })
}

async fn serve_http(
    State(host): State<Arc<Host>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if path == "/healthz" {
        return json_response(200, &serde_json::json!({"status": "ok"})).into_response();
    }
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            let error = ApiError::new(
                413,
                "BodyTooLarge",
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            );
            return error.into_response().into_response();
        }
    };
    let caller = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| host.tokens.principal(t.trim()))
        .map(|principal| Caller {
            principal,
            address: Some(peer.ip()),
            reported: None,
        });
    let request = http::Request::from_parts(parts, bytes);
    let now = host.now();
    let response = if path.starts_with("/v1/policies") || path == "/v1/vms" || path == "/v1/vms/" {
        let api = PolicyApi {
            firewall: &host.stack.firewall,
            policies: &host.stack.store,
            requests: &host.stack.store,
            admins: &host.settings.admins,
            trust: &host.settings.trusted_session_roles,
            channels: &host.notify.names,
        };
        jitvm_policy::handle(&api, caller, request, now).await
    } else if path.starts_with("/v1/requests")
        || path.starts_with("/v1/chatops/")
        || path == "/v1/audit.csv"
        || path == "/v1/whoami"
        || jitvm_core::console::ConsoleConfig::owns(&path)
    {
        let api = RequestApi {
            policies: &host.stack.store,
            requests: &host.stack.store,
            queue: &host.queue,
            firewall: &host.stack.firewall,
            timers: &host.timers,
            admins: &host.settings.admins,
            auditors: &host.settings.auditors,
            approval_timeout: host.settings.approval_timeout,
            slack: host.slack.as_ref(),
            console: &host.settings.console,
        };
        jitvm_request::handle(&api, caller, request, now).await
    } else {
        jitvm_core::api::no_route(&path).into_response()
    };
    response.into_response()
}

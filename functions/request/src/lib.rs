//! The request function: people and systems ask for access here.
//!
//! - `POST /v1/requests`: validated synchronously against the VM's policy
//!   (the domain's `evaluate`), recorded, and put on the FIFO request queue
//!   for the grant function; answers 202 with the record, or the refusal
//!   with the status and the rule it broke. Nothing is opened here.
//! - `GET /v1/requests/{id}`: the record (requestor, approvers, admins,
//!   auditors).
//! - `GET /v1/requests?vm=&requestor=&since=&until=&limit=&nextToken=`:
//!   records newest first, a page at a time.
//! - `POST /v1/requests/{id}/approve` and `.../deny` (optional body
//!   `{"reason": "..."}`): an approver of the VM's policy, never the
//!   requestor, decides on a `PendingApproval` request; an approval checks it against the current policy again and
//!   its window starts then.
//! - `POST /v1/requests/{id}/revoke`: closes the grant early
//!   (`UserRequested`); the requestor or an admin.
//! - `GET /v1/audit.csv?since=&until=`: every state change in the window,
//!   for admins and auditors.
//! - `GET /v1/whoami`: the caller's principal and what it may do.
//! - `POST /v1/chatops/slack` and `/v1/chatops/slack/interactive`: the Slack
//!   app's slash command and buttons, authenticated by Slack's signature
//!   instead of API Gateway.

pub mod actions;
pub mod audit;
pub mod chatops;
pub mod whoami;

use bytes::Bytes;
use http::{Method, Request, Response};
use jiff::{SignedDuration, Timestamp};
use jitvm_core::api::{
    ApiError, Caller, check_body, json_response, method_not_allowed, no_route, parse_vm,
    query_param, segments,
};
use jitvm_core::console::ConsoleConfig;
use jitvm_core::ports::{
    ExpiryTimers, Firewall, PageCursor, PolicyStore, RequestQuery, RequestQueue, RequestStore,
};
use jitvm_core::{InitiateBody, Principal, PrincipalPattern, RequestId};
use serde::Deserialize;
use serde_json::json;

/// The answer to a revoke: 200 with the record, or 202 with the record and
/// a `warning` saying what happens to a rule that could not be removed yet.
fn revoked(revocation: actions::Revocation) -> Result<Response<String>, ApiError> {
    let Some(warning) = revocation.still_open else {
        return Ok(json_response(200, &revocation.record));
    };
    let mut body = serde_json::to_value(&revocation.record)
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
    body["warning"] = json!(warning);
    Ok(json_response(202, &body))
}

/// What the request function needs, and only that.
pub struct RequestApi<'a> {
    pub policies: &'a dyn PolicyStore,
    pub requests: &'a dyn RequestStore,
    pub queue: &'a dyn RequestQueue,
    pub firewall: &'a dyn Firewall,
    /// Where a revoke hands over rules the cloud would not remove at once.
    pub timers: &'a dyn ExpiryTimers,
    pub admins: &'a [PrincipalPattern],
    /// Who may read every request and export the audit trail.
    pub auditors: &'a [PrincipalPattern],
    /// How long a request waits for an approver before it is denied.
    pub approval_timeout: SignedDuration,
    /// The Slack app, when it is configured.
    pub slack: Option<&'a chatops::SlackApp>,
    /// The web console, served at `/` without a caller.
    pub console: &'a ConsoleConfig,
}

impl RequestApi<'_> {
    /// Admins and auditors read every request.
    pub fn sees_everything(&self, caller: &Caller) -> bool {
        caller.is_admin(self.admins) || self.is_auditor(caller)
    }

    pub fn is_auditor(&self, caller: &Caller) -> bool {
        self.auditors.iter().any(|a| a.matches(&caller.principal))
    }
}

/// The most records one listing page returns.
pub const MAX_LIST: usize = 200;

/// Answers one HTTP request. Never panics on input.
pub async fn handle(
    api: &RequestApi<'_>,
    caller: Option<Caller>,
    request: Request<Bytes>,
    now: Timestamp,
) -> Response<String> {
    route(api, caller, request, now)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn route(
    api: &RequestApi<'_>,
    caller: Option<Caller>,
    request: Request<Bytes>,
    now: Timestamp,
) -> Result<Response<String>, ApiError> {
    // The console's page and assets are public; the API calls it makes
    // are not.
    if ConsoleConfig::owns(request.uri().path()) {
        return match *request.method() {
            Method::GET | Method::HEAD => api
                .console
                .serve(request.uri().path())
                .ok_or_else(|| no_route(request.uri().path())),
            _ => Err(method_not_allowed("GET")),
        };
    }
    let path = segments(request.uri().path())?;
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    // Slack authenticates its calls with a signature, not through API
    // Gateway: these two routes are the only ones without a caller.
    match (path.as_slice(), request.method()) {
        (["v1", "chatops", "slack"], &Method::POST) => {
            return chatops::slash_command(api, &request, now).await;
        }
        (["v1", "chatops", "slack", "interactive"], &Method::POST) => {
            return chatops::interaction(api, &request, now).await;
        }
        (["v1", "chatops", "slack", ..], _) => return Err(method_not_allowed("POST")),
        _ => {}
    }
    let caller = caller.ok_or_else(ApiError::unauthenticated)?;
    caller.audit_derivation(&request);
    let query = request.uri().query();
    match (path.as_slice(), request.method()) {
        (["v1", "requests"], &Method::POST) => {
            let body = InitiateBody::from_json(check_body(request.body())?)?;
            let record = actions::submit(api, &caller, &body, new_request_id(), now).await?;
            Ok(json_response(202, &record))
        }
        (["v1", "requests"], &Method::GET) => list(api, &caller, query, now).await,
        (["v1", "requests"], _) => Err(method_not_allowed("GET and POST")),
        (["v1", "requests", id], &Method::GET) => read(api, &caller, &parse_id(id)?).await,
        (["v1", "requests", _], _) => Err(method_not_allowed("GET")),
        (["v1", "requests", id, verb], &Method::POST) => {
            let id = parse_id(id)?;
            let record = match *verb {
                "revoke" => return revoked(actions::revoke(api, &caller, &id, now).await?),
                "approve" => {
                    let reason = decision_reason(request.body())?;
                    actions::approve(api, &caller, &id, reason.as_deref(), now).await?
                }
                "deny" => {
                    let reason = decision_reason(request.body())?;
                    actions::deny(api, &caller, &id, reason.as_deref(), now).await?
                }
                _ => return Err(no_route(request.uri().path())),
            };
            Ok(json_response(200, &record))
        }
        (["v1", "requests", _, "revoke" | "approve" | "deny"], _) => {
            Err(method_not_allowed("POST"))
        }
        (["v1", "whoami"], &Method::GET) => whoami::whoami(api, &caller).await,
        (["v1", "whoami"], _) => Err(method_not_allowed("GET")),
        (["v1", "audit.csv"], &Method::GET) => audit::export(api, &caller, query, now).await,
        (["v1", "audit.csv"], _) => Err(method_not_allowed("GET")),
        _ => Err(no_route(request.uri().path())),
    }
}

fn parse_id(text: &str) -> Result<RequestId, ApiError> {
    RequestId::parse(text).map_err(ApiError::from)
}

/// The optional body of an approve or a deny: `{"reason": "..."}`.
fn decision_reason(body: &Bytes) -> Result<Option<String>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DecisionBody {
        reason: Option<String>,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let body = check_body(body)?;
    let parsed: DecisionBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "InvalidBody",
            format!("the body of an approve or a deny is {{\"reason\": \"...\"}} or empty: {e}"),
        )
    })?;
    Ok(parsed.reason)
}

/// A fresh request id: a UUIDv7 (time-ordered), 32 hex digits.
pub fn new_request_id() -> RequestId {
    let text = uuid::Uuid::now_v7().simple().to_string();
    // A UUID's simple form is 32 hex digits, always a valid request id.
    RequestId::parse(&text).unwrap_or_else(|_| unreachable!("uuid {text} is a valid request id"))
}

async fn read(
    api: &RequestApi<'_>,
    caller: &Caller,
    id: &RequestId,
) -> Result<Response<String>, ApiError> {
    let record = actions::load(api, id).await?.value;
    if record.requestor() != &caller.principal
        && !actions::is_overseer(api, caller, record.vm()).await?
    {
        return Err(ApiError::forbidden(format!(
            "request {id} is not yours; only its requestor, the VM's approvers, admins and auditors may read it"
        )));
    }
    Ok(json_response(200, &record))
}

/// A time query parameter, RFC 3339.
pub fn time_param(query: Option<&str>, name: &str) -> Result<Option<Timestamp>, ApiError> {
    query_param(query, name)
        .map(|t| {
            t.parse::<Timestamp>().map_err(|_| {
                ApiError::new(
                    400,
                    "InvalidTime",
                    format!("{name} {t:?} is not an RFC 3339 time such as 2026-11-23T00:00:00Z"),
                )
            })
        })
        .transpose()
}

/// How far back a listing without `vm` or `requestor` looks when `since`
/// is not given.
pub const DEFAULT_LOOKBACK: SignedDuration = SignedDuration::from_hours(24 * 30);

async fn list(
    api: &RequestApi<'_>,
    caller: &Caller,
    query: Option<&str>,
    now: Timestamp,
) -> Result<Response<String>, ApiError> {
    let vm = query_param(query, "vm").map(|v| parse_vm(&v)).transpose()?;
    let requestor = query_param(query, "requestor")
        .map(|r| {
            Principal::parse(&r).map_err(|e| {
                ApiError::new(400, "InvalidRequestor", format!("requestor {r:?}: {e}"))
            })
        })
        .transpose()?;
    let mut since = time_param(query, "since")?;
    let until = time_param(query, "until")?;
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        return Err(ApiError::new(
            400,
            "InvalidTime",
            format!("since {s} must be before until {u}"),
        ));
    }
    let limit = match query_param(query, "limit") {
        None => 50,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIST).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    "InvalidLimit",
                    format!("limit must be a number from 1 to {MAX_LIST}"),
                )
            })?,
    };
    let after = query_param(query, "nextToken")
        .map(|t| PageCursor::parse(&t).map_err(|e| ApiError::new(400, "InvalidNextToken", e)))
        .transpose()?;
    // Who may see whose: admins and auditors everything; a VM's approvers
    // that VM's requests; everyone else only their own.
    let overseer = match &vm {
        Some(vm) => actions::is_overseer(api, caller, vm).await?,
        None => api.sees_everything(caller),
    };
    let requestor = match requestor {
        Some(r) if !overseer && r != caller.principal => {
            return Err(ApiError::forbidden(format!(
                "only admins, auditors and the VM's approvers may list the requests of {r}"
            )));
        }
        Some(r) => Some(r),
        None if overseer => None,
        None => Some(caller.principal.clone()),
    };
    if vm.is_none() && requestor.is_none() && since.is_none() {
        since = Some(
            until
                .unwrap_or(now)
                .checked_sub(DEFAULT_LOOKBACK)
                .unwrap_or(now),
        );
    }
    let page = api
        .requests
        .query_requests(&RequestQuery {
            vm,
            requestor,
            since,
            until,
            after,
            limit,
        })
        .await?;
    let mut body = json!({"value": page.records});
    if let Some(next) = page.next {
        body["nextToken"] = json!(next.as_str());
    }
    Ok(json_response(200, &body))
}

//! The Slack app: `POST /v1/chatops/slack` (the `/jit` slash command) and
//! `POST /v1/chatops/slack/interactive` (its Approve and Deny buttons).
//!
//! API Gateway lets these two routes through unauthenticated; each call is
//! checked here against the app's signing secret (v0 HMAC-SHA256 over
//! `v0:{timestamp}:{body}`, timestamp within 5 minutes) before anything
//! else is read, and a call that fails the check gets 401 and does nothing.
//! The caller is then `slack:<team_id>/<user_id>`, and every command goes
//! through the same actions as the HTTP API ([`crate::actions`]).
//!
//! A person gets every answer, including refusals, as an ephemeral Slack
//! message with HTTP 200: Slack shows the body of a 4xx only as "failed".

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use jiff::Timestamp;
use jitvm_core::api::{ApiError, Caller, json_response};
use jitvm_core::ports::RequestQuery;
use jitvm_core::slack::{
    self, Command, Interaction, Origin, RequestCommand, SigningSecret, SlackError, SlashCommand,
    Verb,
};
use jitvm_core::telemetry::Audit;
use jitvm_core::{InitiateBody, Policy, Principal, RequestId, RequestRecord, RequestStatus, VmId};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{RequestApi, actions};

/// The Slack app's secret and the client that posts answers to Slack.
pub struct SlackApp {
    secret: SigningSecret,
    client: reqwest::Client,
    local: bool,
    /// The team and enterprise ids whose members may use the app.
    workspaces: Vec<String>,
}

impl SlackApp {
    /// The app on Lambda, for the members of `workspaces` (team ids and
    /// Enterprise Grid ids): answers go to `https://hooks.slack.com/` only.
    pub fn new(signing_secret: String, workspaces: Vec<String>) -> Result<Self, SlackError> {
        Ok(Self {
            secret: SigningSecret::new(signing_secret),
            client: slack::response_client()?,
            local: false,
            workspaces,
        })
    }

    /// The app on the local host, which may also answer a `response_url` on
    /// `http://127.0.0.1:<port>` (a stand-in for Slack in tests). On Lambda
    /// that address is the runtime's own API, so it is never allowed there.
    pub fn local(signing_secret: String, workspaces: Vec<String>) -> Result<Self, SlackError> {
        Ok(Self {
            local: true,
            ..Self::new(signing_secret, workspaces)?
        })
    }

    /// A refusal for a call from a workspace not let in (see
    /// [`slack::first_stranger`]), audited; `None` when every workspace the
    /// call names is let in.
    fn refuse_strangers(&self, origins: &[Origin<'_>], caller: &Caller) -> Option<Value> {
        let stranger = slack::first_stranger(&self.workspaces, origins)?;
        let workspace = match stranger.enterprise {
            Some(enterprise) => format!("{} (organisation {enterprise})", stranger.team),
            None => stranger.team.to_owned(),
        };
        let message = format!(
            "the Slack workspace {workspace} may not use jitvm; the people who run jitvm can add its team id (or its organisation's enterprise id) to JITVM_SLACK_WORKSPACES"
        );
        Audit {
            event: "slack.refused",
            actor: Some(caller.principal.as_str()),
            reason: Some("WorkspaceNotAllowed"),
            message: Some(&message),
            ..Audit::default()
        }
        .emit();
        Some(slack::refused("WorkspaceNotAllowed", &message))
    }
}

/// The most requests one `status` or `pending` answer looks at.
const MAX_LISTED: usize = 200;

fn app<'a>(api: &'a RequestApi<'_>) -> Result<&'a SlackApp, ApiError> {
    api.slack.ok_or_else(|| {
        ApiError::new(
            404,
            "SlackNotConfigured",
            "the Slack app is not set up on this deployment: set JITVM_SLACK_SIGNING_SECRET (or the SlackSigningSecretArn parameter)",
        )
    })
}

/// Checks Slack's signature on `request`; the signature, when it passed,
/// in one canonical form (trimmed, hex digits in lower case). The check
/// accepts the hex digits in either case, so the header as sent is not a
/// key for "the same command": a replay with the digits in upper case would
/// otherwise be a second request.
fn verified(app: &SlackApp, request: &Request<Bytes>, now: Timestamp) -> Result<String, ApiError> {
    let header = |name: &str| header(request.headers(), name);
    let signature = header("x-slack-signature");
    slack::verify(
        &app.secret,
        header("x-slack-request-timestamp"),
        signature,
        request.body(),
        now,
    )
    .map_err(|e| ApiError::new(e.http_status(), e.code(), e.to_string()))?;
    // `verify` refuses a missing signature, so it is there.
    Ok(signature.unwrap_or_default().trim().to_ascii_lowercase())
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn slack_error(e: SlackError) -> ApiError {
    ApiError::new(e.http_status(), e.code(), e.to_string())
}

/// The Slack user who signed the call, as a caller with no address: the
/// address Slack calls from is Slack's, not the person's.
fn caller(principal: Result<Principal, SlackError>) -> Result<Caller, ApiError> {
    Ok(Caller {
        principal: principal.map_err(slack_error)?,
        address: None,
        reported: None,
    })
}

/// The slash command.
pub async fn slash_command(
    api: &RequestApi<'_>,
    request: &Request<Bytes>,
    now: Timestamp,
) -> Result<Response<String>, ApiError> {
    let app = app(api)?;
    let signature = verified(app, request, now)?;
    let command = SlashCommand::parse(request.body()).map_err(slack_error)?;
    let caller = caller(command.principal())?;
    if let Some(refusal) = app.refuse_strangers(&command.origins(), &caller) {
        return Ok(json_response(200, &refusal));
    }
    let message = match slack::parse_command(&command.text) {
        Err(e) => slack::refused(e.code(), &e.describe(&command.command)),
        Ok(parsed) => answer(api, &caller, &command.command, parsed, &signature, now).await,
    };
    Ok(json_response(200, &message))
}

/// A button click: the outcome replaces the message that held the button,
/// posted to the interaction's `response_url` (Slack does not read the body
/// of the answer to a click).
pub async fn interaction(
    api: &RequestApi<'_>,
    request: &Request<Bytes>,
    now: Timestamp,
) -> Result<Response<String>, ApiError> {
    let app = app(api)?;
    let signature = verified(app, request, now)?;
    let interaction = Interaction::parse(request.body()).map_err(slack_error)?;
    let caller = caller(interaction.principal())?;
    if let Some(refusal) = app.refuse_strangers(&interaction.origins(), &caller) {
        let message = slack::replace_original(refusal);
        post(app, &interaction, &message).await;
        return Ok(json_response(200, &message));
    }
    let message = match interaction.actions.first().map(|a| a.command()) {
        None => slack::refused("InvalidSlackRequest", "the click carried no action"),
        Some(Err(e)) => slack::refused(e.code(), &e.describe("/jit")),
        Some(Ok(command)) => answer(api, &caller, "/jit", command, &signature, now).await,
    };
    let message = slack::replace_original(message);
    post(app, &interaction, &message).await;
    Ok(json_response(200, &message))
}

async fn post(app: &SlackApp, interaction: &Interaction, message: &Value) {
    let url = &interaction.response_url;
    if let Err(e) = slack::post_response(&app.client, url, message, app.local).await {
        tracing::warn!(error = %e, "could not post the answer to Slack's response_url");
    }
}

/// Carries out one command for `caller`, answering with a Slack message;
/// a refusal is a message too, saying why.
async fn answer(
    api: &RequestApi<'_>,
    caller: &Caller,
    name: &str,
    command: Command,
    signature: &str,
    now: Timestamp,
) -> Value {
    carry_out(api, caller, name, command, signature, now)
        .await
        .unwrap_or_else(|e| slack::refused(&e.code, &e.message))
}

/// [`answer`], with a refusal as the error.
async fn carry_out(
    api: &RequestApi<'_>,
    caller: &Caller,
    name: &str,
    command: Command,
    signature: &str,
    now: Timestamp,
) -> Result<Value, ApiError> {
    Ok(match command {
        Command::Help => with_identity(slack::help(name), caller),
        Command::Status => slack::status(&my_requests(api, caller, now).await?, now),
        Command::Pending => slack::pending_list(&awaiting(api, caller, now).await?, now),
        Command::Request(ask) => submit(api, caller, &ask, signature, now).await?,
        Command::Approve { id } => slack::decided(
            &actions::approve(api, caller, &id, None, now).await?,
            Verb::Approved,
        ),
        Command::Deny { id, reason } => slack::decided(
            &actions::deny(api, caller, &id, reason.as_deref(), now).await?,
            Verb::Denied,
        ),
        Command::Extend { id } => extend(api, caller, &id, signature, now).await?,
        Command::Revoke { id } => {
            let revocation = actions::revoke(api, caller, &id, now).await?;
            match &revocation.still_open {
                Some(warning) => slack::revoke_pending(&revocation.record, warning),
                None => slack::decided(&revocation.record, Verb::Revoked),
            }
        }
    })
}

/// `message` with a line saying who the caller is to jitvm: the principal
/// an admin puts in a policy's `requesters` or `approvers`.
fn with_identity(mut message: Value, caller: &Caller) -> Value {
    let line = serde_json::json!({"type": "context", "elements": [{"type": "mrkdwn",
        "text": format!("You are `{}` to jitvm: the name to put in a policy's requesters or approvers.",
            slack::escape(caller.principal.as_str()))}]});
    if let Some(blocks) = message.get_mut("blocks").and_then(Value::as_array_mut) {
        blocks.push(line);
    }
    message
}

async fn submit(
    api: &RequestApi<'_>,
    caller: &Caller,
    ask: &RequestCommand,
    signature: &str,
    now: Timestamp,
) -> Result<Value, ApiError> {
    let vm = resolve(api, &ask.vm).await?;
    submit_once(api, caller, &ask.to_initiate_body(&vm), signature, now).await
}

/// Submits `body` under an id made from Slack's signature, so the same
/// signed command or click sent twice (a replay within the five minutes,
/// a retry of Slack's) is the same request: the second finds the record
/// and opens nothing more.
async fn submit_once(
    api: &RequestApi<'_>,
    caller: &Caller,
    body: &InitiateBody,
    signature: &str,
    now: Timestamp,
) -> Result<Value, ApiError> {
    let id = id_from_signature(signature);
    match actions::submit(api, caller, body, id.clone(), now).await {
        Ok(record) => Ok(slack::accepted(&record, now)),
        Err(e) if e.code == "Conflict" => Err(ApiError::new(
            409,
            "AlreadyReceived",
            format!("this was already received as request {id}; nothing more was done"),
        )),
        Err(e) => Err(e),
    }
}

/// The Extend button of a reminder: the requestor asks again for the same
/// access, as a new request that passes every check a new one does.
async fn extend(
    api: &RequestApi<'_>,
    caller: &Caller,
    id: &RequestId,
    signature: &str,
    now: Timestamp,
) -> Result<Value, ApiError> {
    let record = actions::load(api, id).await?.value;
    if record.requestor() != &caller.principal {
        return Err(ApiError::new(
            403,
            "NotYourRequest",
            format!(
                "only {} may extend request {id}; ask for access with /jit request",
                record.requestor()
            ),
        ));
    }
    submit_once(api, caller, &slack::extension_of(&record), signature, now).await
}

/// The VM a person named: a full id as it is, else a short name matched
/// against the VMs that have policies.
async fn resolve(api: &RequestApi<'_>, reference: &str) -> Result<VmId, ApiError> {
    if let Ok(vm) = VmId::parse(reference) {
        return Ok(vm);
    }
    let policies: Vec<Policy> = api
        .policies
        .list_policies()
        .await?
        .into_iter()
        .map(|e| e.policy)
        .collect();
    slack::resolve_vm(reference, &policies).map_err(|m| ApiError::new(404, "UnknownVm", m))
}

/// A request id made from a Slack signature: 32 hex digits of its SHA-256.
pub fn id_from_signature(signature: &str) -> RequestId {
    let digest = Sha256::digest(signature.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    // 32 hex digits are always a valid request id.
    RequestId::parse(&hex).unwrap_or_else(|_| unreachable!("{hex} is a valid request id"))
}

/// The caller's recent requests: enough to hold every grant still open
/// and every request still waiting.
async fn my_requests(
    api: &RequestApi<'_>,
    caller: &Caller,
    now: Timestamp,
) -> Result<Vec<RequestRecord>, ApiError> {
    let since = jitvm_core::earliest_live_start(now, api.approval_timeout);
    let page = api
        .requests
        .query_requests(&RequestQuery {
            vm: None,
            requestor: Some(caller.principal.clone()),
            since: Some(since),
            until: None,
            after: None,
            limit: MAX_LISTED,
        })
        .await?;
    Ok(page.records)
}

/// The requests waiting for the caller's decision: pending, not timed out,
/// not the caller's own, on the VMs whose policy names the caller an
/// approver. Only requests younger than the approval timeout can still be
/// pending, so each such VM's recent requests are all there is to read.
async fn awaiting(
    api: &RequestApi<'_>,
    caller: &Caller,
    now: Timestamp,
) -> Result<Vec<RequestRecord>, ApiError> {
    let since = now.checked_sub(api.approval_timeout).unwrap_or(now);
    let mut mine = Vec::new();
    for entry in api.policies.list_policies().await? {
        if !entry.policy.allows_approver(&caller.principal) {
            continue;
        }
        let mut after = None;
        loop {
            let page = api
                .requests
                .query_requests(&RequestQuery {
                    vm: Some(entry.policy.vm().clone()),
                    requestor: None,
                    since: Some(since),
                    until: None,
                    after: after.take(),
                    limit: MAX_LISTED,
                })
                .await?;
            mine.extend(page.records.into_iter().filter(|r| {
                r.status() == RequestStatus::PendingApproval
                    && !r.requestor().same_identity(&caller.principal)
                    && r.approval_deadline_passed(api.approval_timeout, now)
                        .is_none()
            }));
            match page.next {
                Some(next) if mine.len() < MAX_LISTED => after = Some(next),
                _ => break,
            }
        }
    }
    // Oldest first: the request closest to timing out comes first.
    mine.sort_by_key(RequestRecord::start_time_utc);
    Ok(mine)
}

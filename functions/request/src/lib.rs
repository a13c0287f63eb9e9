//! The request function: people and systems ask for access here.
//!
//! - `POST /v1/requests`: validated synchronously against the VM's policy
//!   (the domain's `evaluate`), recorded, and put on the FIFO request queue
//!   for the grant function; answers 202 with the record, or the refusal
//!   with the status and the rule it broke. Nothing is opened here.
//! - `GET /v1/requests/{id}`: the record (requestor, admins, approvers).
//! - `GET /v1/requests?vm=<vm>[&since=<RFC 3339>][&limit=<n>]`: a VM's
//!   requests, newest first; admins and approvers see all, others their own.
//! - `POST /v1/requests/{id}/approve`: an approver of the VM's policy, never
//!   the requestor, approves a `PendingApproval` request; it is checked
//!   against the current policy again and its window starts now.
//! - `POST /v1/requests/{id}/revoke`: closes the grant early
//!   (`UserRequested`); the requestor or an admin.

use bytes::Bytes;
use http::{Method, Request, Response};
use jiff::Timestamp;
use jitvm_core::api::{
    ApiError, Caller, check_body, json_response, method_not_allowed, no_route, query_param,
    segments, vm_from_segment,
};
use jitvm_core::ports::{
    Firewall, PolicyStore, RequestQueue, RequestStore, Revised, close_request_rules,
};
use jitvm_core::telemetry::Audit;
use jitvm_core::{
    AccessRequest, Decision, InitiateBody, PrincipalPattern, RequestId, RequestMessage,
    RequestRecord, RequestStatus, StatusReason, Transition, evaluate, records,
};
use serde_json::json;

/// What the request function needs, and only that.
pub struct RequestApi<'a> {
    pub policies: &'a dyn PolicyStore,
    pub requests: &'a dyn RequestStore,
    pub queue: &'a dyn RequestQueue,
    pub firewall: &'a dyn Firewall,
    pub admins: &'a [PrincipalPattern],
}

/// The most records one listing returns.
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
    let caller = caller.ok_or_else(ApiError::unauthenticated)?;
    let path = segments(request.uri().path())?;
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match (path.as_slice(), request.method()) {
        (["v1", "requests"], &Method::POST) => submit(api, &caller, request.body(), now).await,
        (["v1", "requests"], &Method::GET) => list(api, &caller, request.uri().query()).await,
        (["v1", "requests"], _) => Err(method_not_allowed("GET and POST")),
        (["v1", "requests", id], &Method::GET) => read(api, &caller, &parse_id(id)?).await,
        (["v1", "requests", _], _) => Err(method_not_allowed("GET")),
        (["v1", "requests", id, "revoke"], &Method::POST) => {
            revoke(api, &caller, &parse_id(id)?, now).await
        }
        (["v1", "requests", _, "revoke"], _) => Err(method_not_allowed("POST")),
        (["v1", "requests", id, "approve"], &Method::POST) => {
            approve(api, &caller, &parse_id(id)?, now).await
        }
        (["v1", "requests", _, "approve"], _) => Err(method_not_allowed("POST")),
        _ => Err(no_route(request.uri().path())),
    }
}

fn parse_id(text: &str) -> Result<RequestId, ApiError> {
    RequestId::parse(text).map_err(ApiError::from)
}

/// A fresh request id: a UUIDv7 (time-ordered), 32 hex digits.
pub fn new_request_id() -> RequestId {
    let text = uuid::Uuid::now_v7().simple().to_string();
    // A UUID's simple form is 32 hex digits, always a valid request id.
    RequestId::parse(&text).unwrap_or_else(|_| unreachable!("uuid {text} is a valid request id"))
}

async fn submit(
    api: &RequestApi<'_>,
    caller: &Caller,
    body: &Bytes,
    now: Timestamp,
) -> Result<Response<String>, ApiError> {
    let body = InitiateBody::from_json(check_body(body)?)?;
    let request = AccessRequest::parse(new_request_id(), &body)?;
    let policy = api.policies.get_policy(request.vm()).await?;
    let decision = evaluate(
        policy.as_ref().map(|e| &e.policy),
        &request,
        &caller.principal,
        caller.address,
        now,
    );
    let vm = request.vm().to_string();
    let (grants, approvers) = match decision {
        Decision::Refused { refusals } => {
            let status = refusals
                .first()
                .map(|r| r.reason.http_status())
                .unwrap_or(403);
            let code = refusals
                .first()
                .map(|r| r.reason.code())
                .unwrap_or("Refused");
            let message = jitvm_core::describe(&refusals);
            Audit {
                event: "request.refused",
                request_id: Some(request.id().as_str()),
                vm: Some(&vm),
                requestor: Some(caller.principal.as_str()),
                status: Some("Denied"),
                reason: Some(code),
                message: Some(&message),
                ..Audit::default()
            }
            .emit();
            return Err(ApiError::new(status, code, message));
        }
        Decision::Approved { grants } => (grants, Vec::new()),
        Decision::PendingApproval { grants, approvers } => (grants, approvers),
    };
    let record = RequestRecord::accepted(&request, &caller.principal, &grants, &approvers, now);
    api.requests.create_request(&record).await?;
    Audit {
        event: "request.accepted",
        request_id: Some(request.id().as_str()),
        vm: Some(&vm),
        requestor: Some(caller.principal.as_str()),
        status: Some(if approvers.is_empty() {
            "Approved"
        } else {
            "PendingApproval"
        }),
        message: request.justification().map(|j| j.as_str()),
        ..Audit::default()
    }
    .emit();
    if approvers.is_empty() {
        let message = RequestMessage::accepted(&request, &caller.principal, &grants);
        if let Err(e) = api.queue.enqueue(&message).await {
            // Nothing will open this request: say so in its record.
            let reason = format!("the request could not be queued: {e}");
            if let Err(e) = records::update(api.requests, request.id(), |r| {
                r.fail_pending_ports(StatusReason::Error, &reason, now)
            })
            .await
            {
                tracing::error!(request_id = %request.id(), error = %e, "could not record the failure");
            }
            tracing::error!(request_id = %request.id(), error = %e, "enqueue failed");
            return Err(e.into());
        }
    }
    Ok(json_response(202, &record))
}

/// Whether `caller` may see every request of the VM of `record`: admins and
/// the approvers of its current policy.
async fn is_overseer(
    api: &RequestApi<'_>,
    caller: &Caller,
    vm: &jitvm_core::VmId,
) -> Result<bool, ApiError> {
    if caller.is_admin(api.admins) {
        return Ok(true);
    }
    let policy = api.policies.get_policy(vm).await?;
    Ok(policy.is_some_and(|e| e.policy.approvers().contains(&caller.principal)))
}

/// The record `id`, or 404.
async fn load(api: &RequestApi<'_>, id: &RequestId) -> Result<Revised<RequestRecord>, ApiError> {
    api.requests
        .get_request(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no request {id}")))
}

async fn read(
    api: &RequestApi<'_>,
    caller: &Caller,
    id: &RequestId,
) -> Result<Response<String>, ApiError> {
    let record = load(api, id).await?.value;
    if record.requestor() != &caller.principal && !is_overseer(api, caller, record.vm()).await? {
        return Err(ApiError::forbidden(format!(
            "request {id} is not yours; only its requestor, the VM's approvers and admins may read it"
        )));
    }
    Ok(json_response(200, &record))
}

async fn list(
    api: &RequestApi<'_>,
    caller: &Caller,
    query: Option<&str>,
) -> Result<Response<String>, ApiError> {
    let vm = query_param(query, "vm").ok_or_else(|| {
        ApiError::new(400, "MissingVm", "name the VM: GET /v1/requests?vm=<vm id>")
    })?;
    let vm = vm_from_segment(&vm)?;
    let since = match query_param(query, "since") {
        None => None,
        Some(t) => Some(t.parse::<Timestamp>().map_err(|_| {
            ApiError::new(
                400,
                "InvalidSince",
                format!("since {t:?} is not an RFC 3339 time such as 2026-11-23T00:00:00Z"),
            )
        })?),
    };
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
    let overseer = is_overseer(api, caller, &vm).await?;
    let records = api.requests.requests_for_vm(&vm, since, limit).await?;
    let value: Vec<_> = records
        .into_iter()
        .filter(|r| overseer || r.requestor() == &caller.principal)
        .collect();
    Ok(json_response(200, &json!({"value": value})))
}

async fn revoke(
    api: &RequestApi<'_>,
    caller: &Caller,
    id: &RequestId,
    now: Timestamp,
) -> Result<Response<String>, ApiError> {
    let current = load(api, id).await?;
    let vm = current.value.vm().clone();
    if current.value.requestor() != &caller.principal && !caller.is_admin(api.admins) {
        return Err(ApiError::forbidden(format!(
            "only the requestor of {id} or an admin may revoke it"
        )));
    }
    // Close the rules, then the record, then the rules again: a grant being
    // opened at this moment either is closed by the second pass or, finding
    // its port Revoked when it writes, closes its own rule.
    let closed = close_request_rules(api.firewall, &vm, id, None).await?;
    let record = records::update(api.requests, id, |r| {
        let mut changed = false;
        if r.status() == RequestStatus::PendingApproval {
            changed |= r
                .set_status(RequestStatus::Denied, Some(&caller.principal), now)
                .is_ok_and(|t| t == Transition::Changed);
        }
        changed |= r.revoke_ports(|_| true, StatusReason::UserRequested, None, now);
        changed
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no request {id}")))?;
    let closed = closed + close_request_rules(api.firewall, &vm, id, None).await?;
    Audit {
        event: "request.revoked",
        request_id: Some(id.as_str()),
        vm: Some(&vm.to_string()),
        requestor: Some(record.requestor().as_str()),
        actor: Some(caller.principal.as_str()),
        status: Some("Revoked"),
        reason: Some("UserRequested"),
        message: Some(&format!("{closed} rules removed")),
        ..Audit::default()
    }
    .emit();
    Ok(json_response(200, &record))
}

async fn approve(
    api: &RequestApi<'_>,
    caller: &Caller,
    id: &RequestId,
    now: Timestamp,
) -> Result<Response<String>, ApiError> {
    let record = load(api, id).await?.value;
    let entry = api.policies.get_policy(record.vm()).await?;
    let approvers = entry
        .as_ref()
        .map(|e| e.policy.approvers().to_vec())
        .unwrap_or_default();
    if !approvers.contains(&caller.principal) {
        return Err(ApiError::forbidden(format!(
            "{} is not an approver of this VM's policy",
            caller.principal
        )));
    }
    if record.requestor() == &caller.principal {
        return Err(ApiError::forbidden(
            "a requestor cannot approve their own request; another approver must",
        ));
    }
    if record.status() != RequestStatus::PendingApproval {
        return Err(ApiError::new(
            409,
            "NotPending",
            format!("request {id} is {:?}, not PendingApproval", record.status()),
        ));
    }
    // The same ports, sources and durations, checked against the policy as
    // it is now, with the window starting at the approval.
    let request = AccessRequest::parse(id.clone(), &pending_body(&record))?;
    let decision = evaluate(
        entry.as_ref().map(|e| &e.policy),
        &request,
        record.requestor(),
        None,
        now,
    );
    let grants = match decision {
        Decision::PendingApproval { grants, .. } | Decision::Approved { grants } => grants,
        Decision::Refused { refusals } => {
            let message = jitvm_core::describe(&refusals);
            return Err(ApiError::new(
                403,
                refusals.first().map_or("Refused", |r| r.reason.code()),
                format!("the request no longer fits the policy: {message}"),
            ));
        }
    };
    let updated = records::update(api.requests, id, |r| {
        let changed = r
            .set_status(RequestStatus::Approved, Some(&caller.principal), now)
            .is_ok_and(|t| t == Transition::Changed);
        if changed {
            r.reschedule(&grants);
        }
        changed
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no request {id}")))?;
    if updated.decided_by() != Some(&caller.principal) {
        return Err(ApiError::new(
            409,
            "NotPending",
            format!("request {id} was decided meanwhile"),
        ));
    }
    Audit {
        event: "request.approved",
        request_id: Some(id.as_str()),
        vm: Some(&updated.vm().to_string()),
        requestor: Some(updated.requestor().as_str()),
        actor: Some(caller.principal.as_str()),
        status: Some("Approved"),
        ..Audit::default()
    }
    .emit();
    let message = RequestMessage::accepted(&request, updated.requestor(), &grants);
    api.queue.enqueue(&message).await?;
    Ok(json_response(200, &updated))
}

/// The body of a pending request as recorded: each port with its source and
/// the duration it was asked for.
fn pending_body(record: &RequestRecord) -> InitiateBody {
    InitiateBody {
        virtual_machines: vec![jitvm_core::InitiateVm {
            id: record.vm().to_string(),
            ports: record
                .ports()
                .iter()
                .map(|p| jitvm_core::InitiatePort {
                    number: i64::from(p.number.get()),
                    duration: Some(format!(
                        "PT{}S",
                        p.end_time_utc
                            .duration_since(record.start_time_utc())
                            .as_secs()
                            .max(1)
                    )),
                    end_time_utc: None,
                    allowed_source_address_prefix: Some(
                        p.allowed_source_address_prefix.to_string(),
                    ),
                })
                .collect(),
        }],
        justification: record.justification().map(|j| j.as_str().to_owned()),
    }
}

//! What the request function does, whoever asked: the HTTP API and the
//! Slack command call the same actions, so a request from Slack is checked,
//! recorded and audited exactly as one from the API.

use jiff::Timestamp;
use jitvm_core::api::{ApiError, Caller};
use jitvm_core::expiry::{Timer, retry_delay};
use jitvm_core::ports::{AdapterError, Revised, close_request_rules};
use jitvm_core::rule::rfc3339;
use jitvm_core::telemetry::Audit;
use jitvm_core::{
    AccessRequest, Decision, InitiateBody, Justification, RequestId, RequestMessage, RequestRecord,
    RequestStatus, StatusReason, Transition, VmId, evaluate, records,
};

use crate::RequestApi;

/// Checks `body` against the VM's policy, records it as request `id`, and
/// queues it for the grant function when no approval is needed.
pub async fn submit(
    api: &RequestApi<'_>,
    caller: &Caller,
    body: &InitiateBody,
    id: RequestId,
    now: Timestamp,
) -> Result<RequestRecord, ApiError> {
    let request = AccessRequest::parse(id, body)?;
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
            let first = refusals.first().map(|r| &r.reason);
            let status = first.map_or(403, |r| r.http_status());
            let code = first.map_or("Refused", |r| r.code());
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
        // A break-glass request opens at once, and its record keeps the
        // policy's approvers: they are who is told, and who may look.
        Decision::Approved { grants } if request.break_glass() => {
            let approvers = policy.as_ref().map(|e| e.policy.approvers().to_vec());
            (grants, approvers.unwrap_or_default())
        }
        Decision::Approved { grants } => (grants, Vec::new()),
        Decision::PendingApproval { grants, approvers } => (grants, approvers),
    };
    let record = RequestRecord::accepted(&request, &caller.principal, &grants, &approvers, now);
    records::create(api.requests, &record).await?;
    if record.status() == RequestStatus::PendingApproval {
        return Ok(record);
    }
    let message = RequestMessage::accepted(&request, &caller.principal, &grants);
    enqueue_or_fail(api, &message, request.id(), now).await?;
    Ok(record)
}

/// Queues an accepted request for the grant function. When the queue
/// refuses, nothing will open it, so its ports are marked `Failed` with the
/// reason and the caller gets the error (and may ask again).
async fn enqueue_or_fail(
    api: &RequestApi<'_>,
    message: &RequestMessage,
    id: &RequestId,
    now: Timestamp,
) -> Result<(), ApiError> {
    let Err(e) = api.queue.enqueue(message).await else {
        return Ok(());
    };
    let reason = format!("the request could not be queued: {e}");
    if let Err(e) = records::update(api.requests, id, |r| {
        r.fail_pending_ports(StatusReason::Error, &reason, now)
    })
    .await
    {
        tracing::error!(request_id = %id, error = %e, "could not record the failure");
    }
    tracing::error!(request_id = %id, error = %e, "enqueue failed");
    Err(e.into())
}

/// The record `id`, or 404.
pub async fn load(
    api: &RequestApi<'_>,
    id: &RequestId,
) -> Result<Revised<RequestRecord>, ApiError> {
    api.requests
        .get_request(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no request {id}")))
}

/// Whether `caller` may see every request of `vm`: admins, auditors and
/// the approvers of its current policy.
pub async fn is_overseer(
    api: &RequestApi<'_>,
    caller: &Caller,
    vm: &VmId,
) -> Result<bool, ApiError> {
    if api.sees_everything(caller) {
        return Ok(true);
    }
    let policy = api.policies.get_policy(vm).await?;
    Ok(policy.is_some_and(|e| e.policy.allows_approver(&caller.principal)))
}

/// Checks that `caller` may decide on `record` (an approver of the VM's
/// current policy, never its requestor) and that it still waits for a
/// decision. A request that waited too long is denied here and then, so
/// the answer is the same whether or not the sweep has got to it.
async fn check_decider(
    api: &RequestApi<'_>,
    caller: &Caller,
    record: &RequestRecord,
    now: Timestamp,
) -> Result<Option<jitvm_core::ports::PolicyEntry>, ApiError> {
    let id = record.id();
    let entry = api.policies.get_policy(record.vm()).await?;
    if !entry
        .as_ref()
        .is_some_and(|e| e.policy.allows_approver(&caller.principal))
    {
        return Err(ApiError::forbidden(format!(
            "{} is not an approver of this VM's policy",
            caller.principal
        )));
    }
    if caller.principal.same_identity(record.requestor()) {
        return Err(ApiError::forbidden(format!(
            "{} asked for request {id} (as {}), and nobody decides on their own request; another approver must",
            caller.principal,
            record.requestor()
        )));
    }
    if let Some(deadline) = record.approval_deadline_passed(api.approval_timeout, now) {
        records::update(api.requests, id, |r| r.time_out(api.approval_timeout, now)).await?;
        return Err(ApiError::new(
            409,
            "ApprovalTimedOut",
            format!(
                "request {id} waited for an approver until {deadline} and was denied; the requestor must ask again"
            ),
        ));
    }
    if record.status() != RequestStatus::PendingApproval {
        return Err(ApiError::new(
            409,
            "NotPending",
            format!("request {id} is {:?}, not PendingApproval", record.status()),
        ));
    }
    Ok(entry)
}

/// An approver approves a pending request: it is checked against the
/// policy as it is now, its window starts now, and it is queued.
pub async fn approve(
    api: &RequestApi<'_>,
    caller: &Caller,
    id: &RequestId,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<RequestRecord, ApiError> {
    let message = decision_message("approved", caller, reason)?;
    let record = load(api, id).await?.value;
    let entry = check_decider(api, caller, &record, now).await?;
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
    // What was asked is what opens: a policy that changed a port's protocol
    // since would open something the requestor did not ask for.
    for grant in &grants {
        if let Some(asked) = record.port(grant.port())
            && asked.protocol != grant.protocol()
        {
            return Err(ApiError::new(
                403,
                "PolicyChanged",
                format!(
                    "the policy now gives port {} as {}, not {} as requested; the requestor must ask again",
                    grant.port(),
                    grant.protocol(),
                    asked.protocol
                ),
            ));
        }
    }
    let updated = records::update(api.requests, id, |r| {
        let changed = r
            .decide(
                RequestStatus::Approved,
                Some(&caller.principal),
                message.as_deref(),
                now,
            )
            .is_ok_and(|t| t == Transition::Changed);
        if changed {
            r.reschedule(&grants);
        }
        changed
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no request {id}")))?;
    if updated.decided_by() != Some(&caller.principal)
        || updated.status() != RequestStatus::Approved
    {
        return Err(ApiError::new(
            409,
            "NotPending",
            format!("request {id} was decided meanwhile"),
        ));
    }
    let message = RequestMessage::accepted(&request, updated.requestor(), &grants);
    enqueue_or_fail(api, &message, id, now).await?;
    Ok(updated)
}

/// An approver denies a pending request, optionally saying why.
pub async fn deny(
    api: &RequestApi<'_>,
    caller: &Caller,
    id: &RequestId,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<RequestRecord, ApiError> {
    let message = decision_message("denied", caller, reason)?
        .unwrap_or_else(|| format!("denied by {}", caller.principal));
    let record = load(api, id).await?.value;
    check_decider(api, caller, &record, now).await?;
    let updated = records::update(api.requests, id, |r| {
        r.deny(Some(&caller.principal), &message, now)
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no request {id}")))?;
    if updated.decided_by() != Some(&caller.principal) || updated.status() != RequestStatus::Denied
    {
        return Err(ApiError::new(
            409,
            "NotPending",
            format!("request {id} was decided meanwhile"),
        ));
    }
    Ok(updated)
}

/// "approved by <caller>: <reason>" for the history, when a reason is given;
/// a reason is bounded and checked as a justification is.
fn decision_message(
    verb: &str,
    caller: &Caller,
    reason: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let reason = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(Justification::parse)
        .transpose()
        .map_err(|e| ApiError::new(400, "InvalidReason", format!("reason: {e}")))?;
    Ok(reason.map(|r| format!("{verb} by {}: {}", caller.principal, r.as_str())))
}

/// What an early revoke did.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub record: RequestRecord,
    /// Set when a rule could not be removed at once (the cloud failed even
    /// after retries): what happens to it now, for the caller to read.
    pub still_open: Option<String>,
}

/// The requestor or an admin closes a grant early (`UserRequested`); a
/// request still pending is withdrawn (`Denied`). A rule the cloud would
/// not remove is handed to an expiry timer that keeps trying, and to the
/// sweep at its end time; the caller is told so.
pub async fn revoke(
    api: &RequestApi<'_>,
    caller: &Caller,
    id: &RequestId,
    now: Timestamp,
) -> Result<Revocation, ApiError> {
    let current = load(api, id).await?;
    let vm = current.value.vm().clone();
    if current.value.requestor() != &caller.principal
        && !caller.is_admin(api.admins)
        && !may_revoke_break_glass(api, caller, &current.value).await?
    {
        return Err(ApiError::forbidden(format!(
            "only the requestor of {id} or an admin may revoke it (or, for a break-glass request, an approver of the VM)"
        )));
    }
    // Close the rules, then the record, then the rules again: a grant being
    // opened at this moment either is closed by the second pass or, finding
    // its port Revoked when it writes, closes its own rule.
    let mut closed = 0;
    let mut failed = match close_pass(api, &vm, id).await {
        Ok(n) => {
            closed += n;
            None
        }
        Err(e) if e.is_retryable() => Some(e),
        Err(e) => return Err(e.into()),
    };
    let record = records::update(api.requests, id, |r| {
        let mut changed = false;
        if r.status() == RequestStatus::PendingApproval {
            changed |= r.withdraw(&caller.principal, now);
        }
        changed |= r.revoke_ports(|_| true, StatusReason::UserRequested, None, now);
        changed
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no request {id}")))?;
    // After a failure the timer takes over both passes: it closes whatever
    // the request has on the VM when it goes off.
    if failed.is_none() {
        match close_pass(api, &vm, id).await {
            Ok(n) => closed += n,
            Err(e) if e.is_retryable() => failed = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    let still_open = match failed {
        None => None,
        Some(e) => Some(hand_over(api, &record, &e, now).await),
    };
    Audit {
        event: "request.revoked",
        request_id: Some(id.as_str()),
        vm: Some(&vm.to_string()),
        requestor: Some(record.requestor().as_str()),
        actor: Some(caller.principal.as_str()),
        status: Some("Revoked"),
        reason: Some("UserRequested"),
        message: Some(&match &still_open {
            None => format!("{closed} rules removed"),
            Some(why) => format!("{closed} rules removed; {why}"),
        }),
        ..Audit::default()
    }
    .emit();
    Ok(Revocation { record, still_open })
}

/// Whether `caller` may close a break-glass `record` as an approver: it
/// opened without them, so each approver it names, and each of the VM's
/// current policy, may close it (from the notice they were sent, say).
async fn may_revoke_break_glass(
    api: &RequestApi<'_>,
    caller: &Caller,
    record: &RequestRecord,
) -> Result<bool, ApiError> {
    if !record.break_glass() {
        return Ok(false);
    }
    if record
        .approvers()
        .iter()
        .any(|a| a.matches(&caller.principal))
    {
        return Ok(true);
    }
    let policy = api.policies.get_policy(record.vm()).await?;
    Ok(policy.is_some_and(|e| e.policy.allows_approver(&caller.principal)))
}

/// How long one pass over a request's rules may take before they are
/// handed to a timer: two passes and the record stay well within the 30 s
/// API Gateway gives the caller.
pub const REVOKE_PASS: std::time::Duration = std::time::Duration::from_secs(8);

/// Removes every rule of request `id` on `vm`, within [`REVOKE_PASS`].
async fn close_pass(
    api: &RequestApi<'_>,
    vm: &VmId,
    id: &RequestId,
) -> Result<usize, AdapterError> {
    tokio::time::timeout(REVOKE_PASS, close_request_rules(api.firewall, vm, id, None))
        .await
        .unwrap_or_else(|_| {
            Err(AdapterError::timed_out(
                "the cloud did not answer",
                REVOKE_PASS,
            ))
        })
}

/// Hands the rules of a revoked request that the cloud would not remove
/// (`e`) to an expiry timer, which tries again with backoff; says what
/// happens now.
async fn hand_over(
    api: &RequestApi<'_>,
    record: &RequestRecord,
    e: &AdapterError,
    now: Timestamp,
) -> String {
    let timer = Timer::revoked(record.id().clone(), record.vm().clone(), now);
    let end = record
        .ports()
        .iter()
        .map(|p| p.end_time_utc)
        .max()
        .map_or_else(String::new, |t| format!(" ({})", rfc3339(t)));
    let backstop =
        format!("the sweep removes any rule still open at its end time{end} at the latest");
    match api.timers.arm(&timer, retry_delay(timer.attempt)).await {
        Ok(()) => format!(
            "its rules could not be removed yet ({e}); jitvm keeps trying in the background, and {backstop}"
        ),
        Err(timer_error) => {
            tracing::error!(request_id = %record.id(), error = %timer_error, "could not hand the rules to an expiry timer");
            format!("its rules could not be removed yet ({e}); {backstop}")
        }
    }
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
        // Only a request waiting for approval is approved: never one that
        // broke glass.
        break_glass: false,
    }
}

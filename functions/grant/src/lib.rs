//! The grant function: reads the FIFO request queue, checks each request
//! against the VM's current policy again, opens the firewall rules, and
//! records the outcome.
//!
//! The queue's sender is trusted for the requestor's name only; everything
//! else is re-checked. A message that can never succeed (malformed, unknown
//! VM, refused by the policy) is recorded and dropped, never retried
//! forever. A failure that may pass (throttling, a timeout) is reported in
//! `batchItemFailures`, and so are the later messages of the same message
//! group in the batch, to keep each VM's requests in order.
//!
//! Each rule it opens gets its own expiry timer, set for the rule's end
//! time (see [`jitvm_core::expiry`]); the sweep closes it if the timer is
//! lost.

use std::collections::HashSet;
use std::time::Instant;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use jiff::{SignedDuration, Timestamp};
use jitvm_core::expiry::{Timer, arm_delay};
use jitvm_core::ports::{
    AdapterError, ExpiryTimers, Firewall, Opened, PolicyStore, RequestQuery, RequestStore, RuleKey,
    close_request_rules,
};
use jitvm_core::rule::{rfc3339, to_the_second};
use jitvm_core::telemetry::Audit;
use jitvm_core::{
    AccessRequest, Decision, Grant, Port, PortRecord, PortStatus, RefusalReason, RequestId,
    RequestMessage, RequestRecord, RequestStatus, StatusReason, Transition, evaluate, records,
};

/// What the grant function needs, and only that.
pub struct GrantApp<'a> {
    pub policies: &'a dyn PolicyStore,
    pub requests: &'a dyn RequestStore,
    pub firewall: &'a dyn Firewall,
    /// Where each opened rule's expiry timer is set.
    pub timers: &'a dyn ExpiryTimers,
    /// How long a request may have waited for an approver: an approved one
    /// opens that much after it started.
    pub approval_timeout: jiff::SignedDuration,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Finished (opened, refused, or not processable): delete the message.
    Done,
    /// Try again later: keep the message.
    Retry(String),
}

/// Handles one SQS batch, reporting only the messages to retry.
pub async fn handle_batch(app: &GrantApp<'_>, event: SqsEvent, now: Timestamp) -> SqsBatchResponse {
    let started = Instant::now();
    let mut failed_groups: HashSet<String> = HashSet::new();
    let mut response = SqsBatchResponse::default();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let group = message.attributes.get("MessageGroupId").cloned();
        if let Some(g) = &group
            && failed_groups.contains(g)
        {
            response.batch_item_failures.push(failure(&id));
            continue;
        }
        let outcome = match message.body.as_deref() {
            Some(body) => process_since(app, body, now, started).await,
            None => {
                reject(None, "the message has no body");
                Outcome::Done
            }
        };
        if let Outcome::Retry(reason) = outcome {
            tracing::warn!(message_id = %id, reason = %reason, "message will be retried");
            response.batch_item_failures.push(failure(&id));
            if let Some(g) = group {
                failed_groups.insert(g);
            }
        }
    }
    response
}

fn failure(id: &str) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id.to_owned();
    f
}

fn reject(id: Option<&str>, why: &str) {
    Audit {
        event: "message.rejected",
        request_id: id,
        status: Some("Failed"),
        message: Some(why),
        ..Audit::default()
    }
    .emit();
}

fn retry(e: AdapterError) -> Outcome {
    Outcome::Retry(e.to_string())
}

/// Processes one queued request, accepted at `now`.
pub async fn process(app: &GrantApp<'_>, body: &str, now: Timestamp) -> Outcome {
    process_since(app, body, now, Instant::now()).await
}

/// Processes one queued request of a batch that started at `now` (the
/// instant `started`): the batch's time decides, and timers are set from
/// the time it is when they are set.
async fn process_since(
    app: &GrantApp<'_>,
    body: &str,
    now: Timestamp,
    started: Instant,
) -> Outcome {
    let message = match RequestMessage::from_json(body) {
        Ok(m) => m,
        Err(e) => {
            reject(None, &e.to_string());
            return Outcome::Done;
        }
    };
    let (request, requestor) = match message.parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            let why = format!("the queued request is malformed: {e}");
            if let Ok(id) = message.request_id()
                && let Err(e) = fail_ports(app, &id, StatusReason::Error, &why, now).await
            {
                return retry(e);
            }
            reject(Some(&message.id), &why);
            return Outcome::Done;
        }
    };
    let id = request.id().clone();
    let policy = match app.policies.get_policy(request.vm()).await {
        Ok(p) => p,
        Err(e) => return retry(e),
    };
    let existing = match app.requests.get_request(&id).await {
        Ok(r) => r.map(|r| r.value),
        Err(e) => return retry(e),
    };
    if let Some(record) = &existing
        && (record.requestor() != &requestor || record.vm() != request.vm())
    {
        reject(
            Some(id.as_str()),
            "the message's requestor or VM differs from the recorded request with this id",
        );
        return Outcome::Done;
    }
    let decision = evaluate(
        policy.as_ref().map(|e| &e.policy),
        &request,
        &requestor,
        None,
        now,
    );
    let grants = match decision {
        Decision::Refused { refusals } => {
            let why = jitvm_core::describe(&refusals);
            let expired = refusals
                .iter()
                .all(|r| matches!(r.reason, RefusalReason::EndTimeNotInFuture { .. }));
            let reason = if expired {
                StatusReason::Expired
            } else {
                StatusReason::PolicyChanged
            };
            if let Err(e) = fail_ports(app, &id, reason, &why, now).await {
                return retry(e);
            }
            Audit {
                event: "request.refused",
                request_id: Some(id.as_str()),
                vm: Some(&request.vm().to_string()),
                requestor: Some(requestor.as_str()),
                status: Some("Failed"),
                reason: refusals.first().map(|r| r.reason.code()),
                message: Some(&why),
                ..Audit::default()
            }
            .emit();
            return Outcome::Done;
        }
        Decision::Approved { grants } => grants,
        Decision::PendingApproval { grants, approvers } => match &existing {
            // Opened only once an approver other than the requestor approved.
            Some(r)
                if r.status() == RequestStatus::Approved
                    && r.decided_by()
                        .is_some_and(|d| approvers.contains(d) && d != &requestor) =>
            {
                grants
            }
            Some(_) => {
                Audit {
                    event: "grant.waiting",
                    request_id: Some(id.as_str()),
                    vm: Some(&request.vm().to_string()),
                    requestor: Some(requestor.as_str()),
                    status: Some("PendingApproval"),
                    message: Some("the policy needs an approver's approval before this opens"),
                    ..Audit::default()
                }
                .emit();
                return Outcome::Done;
            }
            None => {
                let record =
                    RequestRecord::accepted(&request, &requestor, &grants, &approvers, now);
                return match records::create(app.requests, &record).await {
                    Ok(()) | Err(AdapterError::Conflict(_)) => Outcome::Done,
                    Err(e) => retry(e),
                };
            }
        },
    };
    let record = match existing {
        Some(record) => record,
        None => {
            // Sent straight to the queue by another system: record it first.
            let record = RequestRecord::accepted(&request, &requestor, &grants, &[], now);
            match records::create(app.requests, &record).await {
                Ok(()) => record,
                // Created meanwhile by a concurrent delivery: use that one.
                Err(AdapterError::Conflict(_)) => match app.requests.get_request(&id).await {
                    Ok(Some(r)) => r.value,
                    Ok(None) => {
                        return Outcome::Retry(format!(
                            "request {id} vanished while being granted"
                        ));
                    }
                    Err(e) => return retry(e),
                },
                Err(e) => return retry(e),
            }
        }
    };
    open_all(app, &record, &grants, &request, now, started).await
}

/// Opens every grant whose port is still `Initiating`, then records the
/// results. A port that is no longer `Initiating` (already open, revoked,
/// failed) is never opened again.
async fn open_all(
    app: &GrantApp<'_>,
    record: &RequestRecord,
    grants: &[Grant],
    request: &AccessRequest,
    now: Timestamp,
    started: Instant,
) -> Outcome {
    let id = record.id().clone();
    let mut results: Vec<(Grant, Result<Opened, String>)> = Vec::new();
    let mut retry_reason = None;
    let mut finished = Vec::new();
    for grant in grants {
        let Some(port) = record.port(grant.port()) else {
            tracing::warn!(request_id = %id, port = grant.port().get(), "port not in the record; skipped");
            continue;
        };
        if port.status.is_final() {
            finished.push(grant.port());
            continue;
        }
        if port.status != PortStatus::Initiating {
            continue;
        }
        // The policy now gives the port another protocol than the one
        // recorded: the request no longer fits it, so its port fails with
        // that reason rather than wait for a rule that will never open.
        if port.protocol != grant.protocol() && port.allowed_source_address_prefix == grant.source()
        {
            let why = format!(
                "the policy now gives port {} as {}, not {} as requested; ask again",
                grant.port(),
                grant.protocol(),
                port.protocol
            );
            if let Err(e) = fail_port(
                app,
                &id,
                grant.port(),
                StatusReason::PolicyChanged,
                why,
                now,
            )
            .await
            {
                retry_reason = Some(e.to_string());
            }
            continue;
        }
        let relative = !request.names_end_time(grant.port());
        let grant = &match against_record(grant, port, relative, now) {
            Recorded::Open(grant) => grant,
            Recorded::Untrusted(why) => {
                reject(Some(id.as_str()), &why);
                continue;
            }
            Recorded::Ended(why) => {
                if let Err(e) =
                    fail_port(app, &id, grant.port(), StatusReason::Expired, why, now).await
                {
                    retry_reason = Some(e.to_string());
                }
                continue;
            }
        };
        match replace_older(app, grant, now).await {
            Ok(()) => {}
            Err(e) if e.is_retryable() => {
                retry_reason = Some(e.to_string());
                continue;
            }
            Err(e) => {
                let why = format!(
                    "the older grant of port {} could not be replaced: {e}",
                    grant.port()
                );
                results.push((grant.clone(), Err(why)));
                continue;
            }
        }
        match app.firewall.open(grant, request.justification()).await {
            Ok(opened) => results.push((grant.clone(), Ok(opened))),
            Err(e) if e.is_retryable() => retry_reason = Some(e.to_string()),
            Err(e) => results.push((grant.clone(), Err(e.to_string()))),
        }
    }
    if !finished.is_empty() {
        // A port revoked (or failed) while its rule was being opened: if an
        // earlier attempt opened the rule and then could not record it, the
        // rule is closed here rather than left to its end time.
        if let Err(e) = close_rules(app, record, &finished).await {
            return retry(e);
        }
    }
    if results.is_empty() {
        return retry_reason.map_or(Outcome::Done, Outcome::Retry);
    }
    // Rules opened for ports that were revoked meanwhile must close again.
    let mut to_close: Vec<RuleKey> = Vec::new();
    let updated = records::update(app.requests, &id, |r| {
        to_close.clear();
        let mut changed = false;
        for (grant, result) in &results {
            let (to, reason, message) = match result {
                Ok(_) => (PortStatus::Initiated, StatusReason::UserRequested, None),
                Err(why) => (PortStatus::Failed, StatusReason::Error, Some(why.clone())),
            };
            match r.set_port(grant.port(), to, reason, message, now) {
                Ok(Transition::Changed) => changed = true,
                Ok(Transition::Unchanged) => {}
                Err(_) => {
                    if let Ok(opened) = result {
                        to_close.extend(opened.rules.iter().cloned());
                    }
                }
            }
        }
        changed
    })
    .await;
    if let Err(e) = updated {
        // The rules stay open with their end time in their tags: the sweep
        // closes them even if this record is never written.
        return retry(e);
    }
    if !to_close.is_empty() {
        if let Err(e) = app.firewall.revoke(&to_close).await {
            return retry(e);
        }
        Audit {
            event: "grant.closed",
            request_id: Some(id.as_str()),
            vm: Some(&record.vm().to_string()),
            status: Some("Revoked"),
            reason: Some("UserRequested"),
            message: Some("revoked while it was being opened"),
            ..Audit::default()
        }
        .emit();
    }
    for (grant, result) in &results {
        let vm = grant.vm().to_string();
        let source = grant.source().to_string();
        let end = rfc3339(grant.end());
        let (event, status, message) = match result {
            Ok(o) if o.already_open => (
                "grant.opened",
                "Initiated",
                Some(format!("already open until {end}")),
            ),
            Ok(_) => (
                "grant.opened",
                "Initiated",
                Some(format!("open until {end}")),
            ),
            Err(why) => ("grant.failed", "Failed", Some(why.clone())),
        };
        Audit {
            event,
            request_id: Some(id.as_str()),
            vm: Some(&vm),
            port: Some(grant.port().get()),
            source: Some(&source),
            requestor: Some(grant.requestor().as_str()),
            status: Some(status),
            message: message.as_deref(),
            ..Audit::default()
        }
        .emit();
    }
    set_timers(app, &results, &to_close, now, started).await;
    retry_reason.map_or(Outcome::Done, Outcome::Retry)
}

/// Sets the expiry timer of every rule opened (again, for a redelivered
/// message: a second timer for the same rule does nothing more). A timer
/// that cannot be set is logged, not retried: the sweep closes the rule.
/// The batch began at `now` (the instant `started`); opening took a while
/// (seconds on Azure), so the delays count from the time it is now.
async fn set_timers(
    app: &GrantApp<'_>,
    results: &[(Grant, Result<Opened, String>)],
    closed: &[RuleKey],
    now: Timestamp,
    started: Instant,
) {
    let elapsed = SignedDuration::try_from(started.elapsed()).unwrap_or(SignedDuration::ZERO);
    let now = now.checked_add(elapsed).unwrap_or(now);
    for (grant, result) in results {
        let Ok(opened) = result else { continue };
        let rules: Vec<RuleKey> = opened
            .rules
            .iter()
            .filter(|k| !closed.contains(k))
            .cloned()
            .collect();
        if rules.is_empty() {
            continue;
        }
        // The rule's own end time, as its tag or name says it.
        let close_at = to_the_second(grant.end());
        let timer = Timer::expiry(
            grant.request_id().clone(),
            grant.vm().clone(),
            rules,
            close_at,
        );
        if let Err(e) = app.timers.arm(&timer, arm_delay(close_at, now)).await {
            tracing::error!(request_id = %grant.request_id(), error = %e, "could not set the expiry timer; the sweep closes the rule at its end time");
        }
    }
}

/// A newer request replaces the open grant: before `grant` opens, the
/// rules that the same requestor's other requests opened on the same VM,
/// port and source are closed, and those requests' ports become `Revoked`
/// with `NewerRequestInitiated` (afterwards there is one rule, the new one,
/// with its own end time). Another requestor's grant is never replaced. Only the [`Firewall`] trait and the records are
/// used, so it works the same on every cloud; on EC2 it is also what makes
/// room for the new rule, since EC2 refuses a second identical rule.
///
/// The order is what makes a crash (or a lost write) at any point safe, and
/// a redelivered message converge:
///
/// 1. The requestor's records of the VM name the candidates (requests with
///    the same port and source opening, open, or marked replaced); only
///    then is the firewall read (`rules_of`), and the rules found by the
///    request id each carries: the cloud, not the database, says what is
///    open.
/// 2. Their requests' ports are marked `Revoked` first. The rule is how the
///    older request is found, so it must outlive the mark: were
///    the rule revoked first and the process stopped, a redelivery would
///    find nothing left to name that request, and its record would say
///    `Initiated` forever. Marked first, a crash leaves a record that says
///    `Revoked` while its rule is still open until the next step or, at the
///    latest, its own end time (the sweep needs no record).
/// 3. The rules are revoked. A redelivery after a crash between 2 and 3
///    finds them again, marks nothing new (the transition is a repeat) and
///    revokes them; a revoke of rules already gone is not an error.
/// 4. The new grant opens as before. A crash between 3 and 4 leaves neither
///    rule open (never two), and the retried message opens the new one.
///
/// Rules of `grant`'s own request are never touched, so a redelivered
/// message of the newer request changes nothing; a request from another
/// source, or for another port, leaves older grants alone, and so does a
/// rule jitvm did not make (on EC2 the adapter then refuses the duplicate).
/// If the new grant cannot open after the older one was closed, the older
/// one stays closed: it was replaced at the requestor's asking. Messages of
/// one VM are processed in order (FIFO group = VM), so two requests of the
/// same VM never replace each other concurrently; an older request's own
/// message arriving later finds its port final and closes, never reopens.
async fn replace_older(
    app: &GrantApp<'_>,
    grant: &Grant,
    now: Timestamp,
) -> Result<(), AdapterError> {
    // Only the requestor's own grant is replaced: someone else's stays open
    // until its own end, so nobody can cut another person's access short by
    // asking for the same source for five minutes. The requestor's recent
    // records of this VM say whether there is one (a database query, so the
    // common case costs the cloud nothing); the firewall then says which
    // rules are really open.
    let holders = own_open_grants(app, grant, now).await?;
    if holders.is_empty() {
        return Ok(());
    }
    let rules = app.firewall.rules_of(grant.vm()).await?;
    let replaced: std::collections::BTreeMap<RequestId, Vec<RuleKey>> =
        records::replaced_rules(&rules, grant.request_id(), grant.port(), grant.source())
            .into_iter()
            .filter(|(older, _)| holders.contains(older))
            .collect();
    if replaced.is_empty() {
        return Ok(());
    }
    let message = format!("replaced by newer request {}", grant.request_id());
    let mut requestors = std::collections::BTreeMap::new();
    for older in replaced.keys() {
        let marked = records::mark_closed(
            app.requests,
            older,
            &[Some(grant.port())],
            StatusReason::NewerRequestInitiated,
            Some(&message),
            now,
        )
        .await?;
        match marked {
            Some(r) => {
                requestors.insert(older.clone(), r.requestor().to_string());
            }
            None => tracing::warn!(request_id = %older, "a replaced rule with no request record"),
        }
    }
    let keys: Vec<RuleKey> = replaced.values().flatten().cloned().collect();
    app.firewall.revoke(&keys).await?;
    let vm = grant.vm().to_string();
    let source = grant.source().to_string();
    for (older, keys) in &replaced {
        let rules = keys
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Audit {
            event: "grant.replaced",
            request_id: Some(older.as_str()),
            vm: Some(&vm),
            port: Some(grant.port().get()),
            source: Some(&source),
            requestor: requestors.get(older).map(String::as_str),
            actor: Some(grant.requestor().as_str()),
            status: Some("Revoked"),
            reason: Some("NewerRequestInitiated"),
            message: Some(&message),
            rule: Some(&rules),
        }
        .emit();
    }
    Ok(())
}

/// The requestor's other requests of `grant`'s VM whose record shows the
/// same port from the same source opening or open (or already marked
/// replaced, in case their rule outlived the mark), among those recent
/// enough to be open still.
async fn own_open_grants(
    app: &GrantApp<'_>,
    grant: &Grant,
    now: Timestamp,
) -> Result<std::collections::BTreeSet<RequestId>, AdapterError> {
    let since = jitvm_core::earliest_live_start(now, app.approval_timeout);
    let page = app
        .requests
        .query_requests(&RequestQuery {
            vm: Some(grant.vm().clone()),
            requestor: Some(grant.requestor().clone()),
            since: Some(since),
            until: None,
            after: None,
            limit: 200,
        })
        .await?;
    Ok(page
        .records
        .iter()
        .filter(|r| r.id() != grant.request_id())
        .filter(|r| {
            r.ports().iter().any(|p| {
                p.number == grant.port()
                    && p.allowed_source_address_prefix == grant.source()
                    && (matches!(p.status, PortStatus::Initiating | PortStatus::Initiated)
                        // Marked replaced by a delivery that stopped before
                        // revoking: its rule may still be open.
                        || p.status_reason == StatusReason::NewerRequestInitiated)
            })
        })
        .map(|r| r.id().clone())
        .collect())
}

/// Removes any rule of `record`'s request on `ports`.
async fn close_rules(
    app: &GrantApp<'_>,
    record: &RequestRecord,
    ports: &[jitvm_core::Port],
) -> Result<(), AdapterError> {
    let removed = close_request_rules(app.firewall, record.vm(), record.id(), Some(ports)).await?;
    if removed == 0 {
        return Ok(());
    }
    Audit {
        event: "grant.closed",
        request_id: Some(record.id().as_str()),
        vm: Some(&record.vm().to_string()),
        status: Some("Revoked"),
        message: Some(&format!(
            "{removed} rules of a port already closed in the record were removed"
        )),
        ..Audit::default()
    }
    .emit();
    Ok(())
}

/// What may open for a grant, held against what was recorded for its port.
enum Recorded {
    /// This: the recorded source and protocol, ending no later than
    /// recorded.
    Open(Grant),
    /// The recorded end has passed: nothing opens, for this reason.
    Ended(String),
    /// The message asks for more than the record: not trusted.
    Untrusted(String),
}

/// Opens what was recorded, never more. A window the message gives as a
/// duration (or leaves to the policy's maximum) counts from when the
/// request was accepted, so a message that comes again later asks for a
/// later end than recorded: it gets the recorded one, and nothing once
/// that has passed. A message naming another source or protocol, or a
/// named end time later than the record's, is not trusted.
fn against_record(grant: &Grant, port: &PortRecord, relative: bool, now: Timestamp) -> Recorded {
    let grant = if relative {
        grant.capped_at(port.end_time_utc)
    } else {
        grant.clone()
    };
    if port.allowed_source_address_prefix != grant.source()
        || port.protocol != grant.protocol()
        || grant.end() > port.end_time_utc
    {
        return Recorded::Untrusted(format!(
            "port {}: the message asks for {} until {}, but the record says {} until {}",
            grant.port(),
            grant.source(),
            rfc3339(grant.end()),
            port.allowed_source_address_prefix,
            rfc3339(port.end_time_utc)
        ));
    }
    if grant.end() <= now {
        return Recorded::Ended(format!(
            "port {} was to be open until {}, which passed before it could open",
            grant.port(),
            rfc3339(grant.end())
        ));
    }
    Recorded::Open(grant)
}

/// Marks one port that is still `Initiating` as `Failed` for `reason`.
async fn fail_port(
    app: &GrantApp<'_>,
    id: &RequestId,
    port: Port,
    reason: StatusReason,
    why: String,
    now: Timestamp,
) -> Result<(), AdapterError> {
    records::update(app.requests, id, |r| {
        r.set_port(port, PortStatus::Failed, reason, Some(why.clone()), now)
            .is_ok_and(|t| t == Transition::Changed)
    })
    .await
    .map(|_| ())
}

/// Marks the record's `Initiating` ports `Failed` for `reason`, if there is
/// a record.
async fn fail_ports(
    app: &GrantApp<'_>,
    id: &RequestId,
    reason: StatusReason,
    why: &str,
    now: Timestamp,
) -> Result<(), AdapterError> {
    records::update(app.requests, id, |r| r.fail_pending_ports(reason, why, now))
        .await
        .map(|_| ())
}

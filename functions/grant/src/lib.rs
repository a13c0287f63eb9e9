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
use jitvm_core::policy_fit::{Refused, close_outside_policy, close_refused};
use jitvm_core::ports::{
    AdapterError, ExpiryTimers, Firewall, Opened, PolicyStore, RequestQuery, RequestStore, RuleKey,
    close_request_rules,
};
use jitvm_core::rule::{rfc3339, to_the_second};
use jitvm_core::telemetry::Audit;
use jitvm_core::{
    AccessRequest, Decision, Grant, HeldGrant, Port, PortRecord, PortStatus, RefusalReason,
    RequestId, RequestMessage, RequestRecord, RequestStatus, StatusReason, Transition, evaluate,
    records,
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
    let (request, requestor) = match parse(app, body, now).await {
        Ok(parsed) => parsed,
        Err(outcome) => return outcome,
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
        && (record.requestor() != &requestor
            || record.vm() != request.vm()
            || record.break_glass() != request.break_glass())
    {
        reject(
            Some(id.as_str()),
            "the message's requestor, VM or breakGlass differs from the recorded request with this id",
        );
        return Outcome::Done;
    }
    let policy = policy.map(|e| e.policy);
    let decision = evaluate(policy.as_ref(), &request, &requestor, None, now);
    let grants = match decision {
        Decision::Refused { refusals } => {
            let held = existing
                .as_ref()
                .filter(|r| r.ports().iter().any(|p| p.status == PortStatus::Initiated));
            return refuse(
                app,
                &request,
                &requestor,
                held,
                policy.as_ref(),
                &refusals,
                now,
            )
            .await;
        }
        Decision::Approved { grants } => grants,
        Decision::PendingApproval { grants, approvers } => {
            let asked = (&request, &requestor);
            match approved(app, asked, existing.as_ref(), grants, &approvers, now).await {
                Ok(grants) => grants,
                Err(outcome) => return outcome,
            }
        }
    };
    // A break-glass request sent straight to the queue keeps the policy's
    // approvers on record, as one sent to the API does.
    let approvers = match &policy {
        Some(p) if request.break_glass() => p.approvers(),
        _ => &[],
    };
    let record = match recorded(
        app,
        (&request, &requestor),
        &grants,
        approvers,
        existing,
        now,
    )
    .await
    {
        Ok(record) => record,
        Err(outcome) => return outcome,
    };
    let checked = policy.as_ref().map_or(0, jitvm_core::Policy::version);
    open_all(app, &record, &grants, &request, checked, now, started).await
}

/// The message's request and requestor; a message that can never be
/// processed is rejected (and its record's pending ports failed, when it
/// names one).
async fn parse(
    app: &GrantApp<'_>,
    body: &str,
    now: Timestamp,
) -> Result<(AccessRequest, jitvm_core::Principal), Outcome> {
    let message = RequestMessage::from_json(body).map_err(|e| {
        reject(None, &e.to_string());
        Outcome::Done
    })?;
    match message.parse() {
        Ok(parsed) => Ok(parsed),
        Err(e) => {
            let why = format!("the queued request is malformed: {e}");
            if let Ok(id) = message.request_id()
                && let Err(e) = fail_ports(app, &id, StatusReason::Error, &why, now).await
            {
                return Err(retry(e));
            }
            reject(Some(&message.id), &why);
            Err(Outcome::Done)
        }
    }
}

/// The grants of a request the policy says needs approval: they open only
/// once an approver other than the requestor approved. Until then the
/// message is done (a request sent straight to the queue is recorded,
/// pending).
async fn approved(
    app: &GrantApp<'_>,
    (request, requestor): (&AccessRequest, &jitvm_core::Principal),
    existing: Option<&RequestRecord>,
    grants: Vec<Grant>,
    approvers: &[jitvm_core::PrincipalPattern],
    now: Timestamp,
) -> Result<Vec<Grant>, Outcome> {
    match existing {
        Some(r)
            if r.status() == RequestStatus::Approved
                && r.decided_by()
                    .is_some_and(|d| jitvm_core::may_decide(approvers, d, requestor)) =>
        {
            Ok(grants)
        }
        Some(_) => {
            Audit {
                event: "grant.waiting",
                request_id: Some(request.id().as_str()),
                vm: Some(&request.vm().to_string()),
                requestor: Some(requestor.as_str()),
                status: Some("PendingApproval"),
                message: Some("the policy needs an approver's approval before this opens"),
                ..Audit::default()
            }
            .emit();
            Err(Outcome::Done)
        }
        None => {
            let record = RequestRecord::accepted(request, requestor, &grants, approvers, now);
            Err(match records::create(app.requests, &record).await {
                Ok(()) | Err(AdapterError::Conflict(_)) => Outcome::Done,
                Err(e) => retry(e),
            })
        }
    }
}

/// The request's record: the one found, or, for a request sent straight
/// to the queue by another system, one recorded now.
async fn recorded(
    app: &GrantApp<'_>,
    (request, requestor): (&AccessRequest, &jitvm_core::Principal),
    grants: &[Grant],
    approvers: &[jitvm_core::PrincipalPattern],
    existing: Option<RequestRecord>,
    now: Timestamp,
) -> Result<RequestRecord, Outcome> {
    if let Some(record) = existing {
        return Ok(record);
    }
    let record = RequestRecord::accepted(request, requestor, grants, approvers, now);
    match records::create(app.requests, &record).await {
        Ok(()) => Ok(record),
        // Created meanwhile by a concurrent delivery: use that one.
        Err(AdapterError::Conflict(_)) => match app.requests.get_request(request.id()).await {
            Ok(Some(r)) => Ok(r.value),
            Ok(None) => Err(Outcome::Retry(format!(
                "request {} vanished while being granted",
                request.id()
            ))),
            Err(e) => Err(retry(e)),
        },
        Err(e) => Err(retry(e)),
    }
}

/// The policy refuses the request now: its ports still `Initiating` fail
/// for that reason. If an earlier delivery opened some of them (`held`:
/// the record, when it shows a port `Initiated`) and then could not hold
/// them against the policy that changed meanwhile, that is done here.
async fn refuse(
    app: &GrantApp<'_>,
    request: &AccessRequest,
    requestor: &jitvm_core::Principal,
    held: Option<&RequestRecord>,
    policy: Option<&jitvm_core::Policy>,
    refusals: &[jitvm_core::Refusal],
    now: Timestamp,
) -> Outcome {
    let id = request.id();
    let why = jitvm_core::describe(refusals);
    let expired = refusals
        .iter()
        .all(|r| matches!(r.reason, RefusalReason::EndTimeNotInFuture { .. }));
    let reason = if expired {
        StatusReason::Expired
    } else {
        StatusReason::PolicyChanged
    };
    if let Err(e) = fail_ports(app, id, reason, &why, now).await {
        return retry(e);
    }
    if let Some(record) = held
        && let Err(e) =
            close_outside_policy(app.firewall, app.requests, record.vm(), policy, None, now).await
    {
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
    Outcome::Done
}

/// Why a grant could not open, as the cloud said it: its error code, when
/// it gave one, and its message.
#[derive(Debug, Clone)]
struct Failure {
    code: Option<String>,
    message: String,
}

impl Failure {
    fn from_error(context: Option<&str>, e: &AdapterError) -> Self {
        let code = match e {
            AdapterError::Permanent { code, .. } if !code.is_empty() => Some(code.clone()),
            _ => None,
        };
        let message = match context {
            Some(context) => format!("{context}: {e}"),
            None => e.to_string(),
        };
        Self { code, message }
    }
}

/// What became of one grant in this delivery.
type Attempt = (Grant, Result<Opened, Failure>);

/// What one grant's turn came to.
enum Step {
    /// The cloud was asked: opened, or refused for good.
    Tried(Box<Attempt>),
    /// The port is already final in the record: any rule left of it closes.
    Finished(Port),
    /// A failure that may pass: the message is retried.
    Retry(String),
    /// Nothing to do for this port now.
    Skipped,
}

/// Opens every grant whose port is still `Initiating`, then records the
/// results, audits them, holds what opened against the policy once more if
/// it moved meanwhile (`policy_version` is the one the request was checked
/// against), and sets the timers. A port that is no longer `Initiating`
/// (already open, revoked, failed) is never opened again.
async fn open_all(
    app: &GrantApp<'_>,
    record: &RequestRecord,
    grants: &[Grant],
    request: &AccessRequest,
    policy_version: u64,
    now: Timestamp,
    started: Instant,
) -> Outcome {
    let mut results: Vec<Attempt> = Vec::new();
    let mut finished = Vec::new();
    let mut retry_reason = None;
    for grant in grants {
        match open_one(app, record, grant, request, now).await {
            Step::Tried(attempt) => results.push(*attempt),
            Step::Finished(port) => finished.push(port),
            Step::Retry(why) => retry_reason = Some(why),
            Step::Skipped => {}
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
        // A redelivery of a request an earlier delivery opened: what it
        // opened is held against the policy as it is now.
        if let Err(e) = hold_against_policy(app, record, &[], policy_version, now).await {
            return retry(e);
        }
        return retry_reason.map_or(Outcome::Done, Outcome::Retry);
    }
    let closed = match record_results(app, record, &results, now).await {
        Ok(closed) => closed,
        // The rules stay open with their end time in their tags: the sweep
        // closes them even if this record is never written.
        Err(e) => return retry(e),
    };
    audit_results(record, &results);
    if let Err(e) = hold_against_policy(app, record, &results, policy_version, now).await {
        retry_reason = Some(e.to_string());
    }
    set_timers(app, &results, &closed, now, started).await;
    retry_reason.map_or(Outcome::Done, Outcome::Retry)
}

/// One grant's turn: checked against its record, the older grant it
/// replaces closed, then opened.
async fn open_one(
    app: &GrantApp<'_>,
    record: &RequestRecord,
    grant: &Grant,
    request: &AccessRequest,
    now: Timestamp,
) -> Step {
    let id = record.id();
    let Some(port) = record.port(grant.port()) else {
        tracing::warn!(request_id = %id, port = grant.port().get(), "port not in the record; skipped");
        return Step::Skipped;
    };
    if port.status.is_final() {
        return Step::Finished(grant.port());
    }
    if port.status != PortStatus::Initiating {
        return Step::Skipped;
    }
    let relative = !request.names_end_time(grant.port());
    let grant = match against_record(grant, port, relative, now) {
        Recorded::Open(grant) => grant,
        Recorded::Untrusted(why) => {
            reject(Some(id.as_str()), &why);
            return Step::Skipped;
        }
        Recorded::Fails(reason, why) => {
            return match fail_port(app, id, grant.port(), reason, why, now).await {
                Ok(()) => Step::Skipped,
                Err(e) => Step::Retry(e.to_string()),
            };
        }
    };
    match replace_older(app, &grant, now).await {
        Ok(()) => {}
        Err(e) if e.is_retryable() => return Step::Retry(e.to_string()),
        Err(e) => {
            let context = format!(
                "the older grant of port {} could not be replaced",
                grant.port()
            );
            let failure = Failure::from_error(Some(&context), &e);
            return Step::Tried(Box::new((grant, Err(failure))));
        }
    }
    match app.firewall.open(&grant, request.justification()).await {
        Ok(opened) => Step::Tried(Box::new((grant, Ok(opened)))),
        Err(e) if e.is_retryable() => Step::Retry(e.to_string()),
        Err(e) => Step::Tried(Box::new((grant, Err(Failure::from_error(None, &e))))),
    }
}

/// Writes what the cloud did into the record: `Initiated` for what opened,
/// `Failed` with the cloud's code and message for what it refused. Rules
/// opened for ports that were revoked meanwhile are closed again; their
/// keys are returned.
async fn record_results(
    app: &GrantApp<'_>,
    record: &RequestRecord,
    results: &[Attempt],
    now: Timestamp,
) -> Result<Vec<RuleKey>, AdapterError> {
    let mut to_close: Vec<RuleKey> = Vec::new();
    records::update(app.requests, record.id(), |r| {
        to_close.clear();
        let mut changed = false;
        for (grant, result) in results {
            let moved = match result {
                Ok(_) => r.set_port(
                    grant.port(),
                    PortStatus::Initiated,
                    StatusReason::UserRequested,
                    None,
                    now,
                ),
                Err(f) => r.fail_port(
                    grant.port(),
                    StatusReason::Error,
                    f.code.as_deref(),
                    f.message.clone(),
                    now,
                ),
            };
            match moved {
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
    .await?;
    if !to_close.is_empty() {
        app.firewall.revoke(&to_close).await?;
        Audit {
            event: "grant.closed",
            request_id: Some(record.id().as_str()),
            vm: Some(&record.vm().to_string()),
            status: Some("Revoked"),
            reason: Some("UserRequested"),
            message: Some("revoked while it was being opened"),
            ..Audit::default()
        }
        .emit();
    }
    Ok(to_close)
}

/// One audit event per grant tried: opened (or found open), or failed with
/// the cloud's code.
fn audit_results(record: &RequestRecord, results: &[Attempt]) {
    for (grant, result) in results {
        let vm = grant.vm().to_string();
        let source = grant.source().to_string();
        let end = rfc3339(grant.end());
        let (event, status, message, code) = match result {
            Ok(o) if o.already_open => (
                "grant.opened",
                "Initiated",
                format!("already open until {end}"),
                None,
            ),
            Ok(_) => (
                "grant.opened",
                "Initiated",
                format!("open until {end}"),
                None,
            ),
            Err(f) => (
                "grant.failed",
                "Failed",
                f.message.clone(),
                f.code.as_deref(),
            ),
        };
        Audit {
            event,
            request_id: Some(record.id().as_str()),
            vm: Some(&vm),
            port: Some(grant.port().get()),
            source: Some(&source),
            requestor: Some(grant.requestor().as_str()),
            status: Some(status),
            message: Some(&message),
            code,
            ..Audit::default()
        }
        .emit();
    }
}

/// Reads the policy again after the rules opened and were recorded. If it
/// moved since the request was checked against version `checked` (an admin
/// changed it while the rules were being written), what this delivery
/// opened is held against it as the policy function holds open grants
/// after a write: whichever of the two saw the other's write closes what
/// the new policy refuses. The rules are the ones this delivery wrote (a
/// listing may not show a rule written a moment ago). A redelivery that
/// finds ports an earlier delivery opened (`record` says `Initiated`) holds
/// the VM's open grants as the policy function does, since the earlier
/// delivery may have stopped before this step.
async fn hold_against_policy(
    app: &GrantApp<'_>,
    record: &RequestRecord,
    results: &[Attempt],
    checked: u64,
    now: Timestamp,
) -> Result<(), AdapterError> {
    let earlier = record
        .ports()
        .iter()
        .any(|p| p.status == PortStatus::Initiated);
    if !earlier && results.is_empty() {
        return Ok(());
    }
    let current = app.policies.get_policy(record.vm()).await?;
    let policy = current.as_ref().map(|e| &e.policy);
    if earlier {
        close_outside_policy(app.firewall, app.requests, record.vm(), policy, None, now).await?;
    }
    if policy.map(jitvm_core::Policy::version) == Some(checked) {
        return Ok(());
    }
    let refused: Vec<Refused> = results
        .iter()
        .filter_map(|(grant, result)| {
            let opened = result.as_ref().ok()?;
            let source = grant.source();
            let held = HeldGrant {
                requestor: Some(grant.requestor()),
                break_glass: grant.break_glass(),
                port: grant.port(),
                protocol: Some(grant.protocol()),
                source: &source,
                end: grant.end(),
            };
            let why = match policy {
                Some(p) => p.refusal_of(&held, now)?,
                None => "JIT is no longer enabled on this VM".to_owned(),
            };
            Some(opened.rules.iter().map(move |key| Refused {
                key: key.clone(),
                request: grant.request_id().clone(),
                port: Some(grant.port()),
                why: why.clone(),
            }))
        })
        .flatten()
        .collect();
    close_refused(app.firewall, app.requests, record.vm(), &refused, None, now).await?;
    Ok(())
}

/// Sets the expiry timer of every rule opened (again, for a redelivered
/// message: a second timer for the same rule does nothing more). A timer
/// that cannot be set is logged, not retried: the sweep closes the rule.
/// The batch began at `now` (the instant `started`); opening took a while
/// (seconds on Azure), so the delays count from the time it is now.
async fn set_timers(
    app: &GrantApp<'_>,
    results: &[Attempt],
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
            ..Audit::default()
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
    /// Nothing opens: the port fails for this reason (its end passed, or
    /// the policy now gives the port another protocol).
    Fails(StatusReason, String),
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
    // The policy now gives the port another protocol than the one
    // recorded: the request no longer fits it, so its port fails with that
    // reason rather than wait for a rule that will never open.
    if port.protocol != grant.protocol() && port.allowed_source_address_prefix == grant.source() {
        return Recorded::Fails(
            StatusReason::PolicyChanged,
            format!(
                "the policy now gives port {} as {}, not {} as requested; ask again",
                grant.port(),
                grant.protocol(),
                port.protocol
            ),
        );
    }
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
        return Recorded::Fails(
            StatusReason::Expired,
            format!(
                "port {} was to be open until {}, which passed before it could open",
                grant.port(),
                rfc3339(grant.end())
            ),
        );
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

//! The minute sweep, the backstop of the timers: every jitvm rule whose end
//! time has passed, on every jitvm firewall, is removed, and drift with it.
//!
//! Each scope (an AWS region, an Azure subscription) is listed and cleaned
//! on its own, all at once, each within [`ExpireApp::scope_deadline`]: one
//! cloud hung or failing never holds another's expired rules open.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use jiff::Timestamp;
use jitvm_core::expiry::Closing;
use jitvm_core::ports::{AdapterError, FoundRule, Scope};
use jitvm_core::rule::plan_sweep;
use jitvm_core::{RequestRecord, RequestStatus, records};
use serde::Serialize;

use crate::ExpireApp;
use crate::close::{Closed, close};
use crate::reconcile::{Reconciled, live_records, reconcile};

/// The live records, once read (shared by the scopes), or why they could
/// not be.
type Live = Option<Arc<Result<Vec<RequestRecord>, String>>>;

/// The most timed-out requests one sweep denies; the rest wait for the
/// next sweep, a minute later.
pub const MAX_TIMEOUTS_PER_SWEEP: usize = 200;

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepSummary {
    pub examined: usize,
    pub active: usize,
    pub expired: usize,
    pub drift: usize,
    pub revoked: usize,
    pub records_updated: usize,
    /// Records that could not be updated this time (the rules are gone all
    /// the same); the next sweep does not retry them, the log has them.
    pub record_errors: usize,
    /// Requests denied because no approver decided in time.
    pub approvals_timed_out: usize,
    /// jitvm groups taken off interfaces that are not their VM's.
    pub groups_detached: usize,
    /// Live records held against the rules of their scope.
    pub records_checked: usize,
    /// Records brought in line with the cloud: a port whose rule was gone,
    /// or that never opened in time.
    pub records_reconciled: usize,
    /// Rules closed because their port's record was already closed.
    pub closed_by_record: usize,
    /// The scopes swept (regions, subscriptions).
    pub scopes: usize,
    /// The scopes that failed or ran out of time, with why: the next sweep
    /// finds what they left, since it is still expired.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_scopes: Vec<String>,
}

/// What the sweep of one scope found and did, and why it stopped short.
#[derive(Debug, Default)]
struct ScopeSweep {
    examined: usize,
    active: usize,
    expired: usize,
    drift: usize,
    closed: Closed,
    groups_detached: usize,
    reconciled: Reconciled,
    failure: Option<AdapterError>,
}

/// Rules closed per step of a scope's sweep: the deadline is checked
/// between steps, never inside one, so what a step removed is always
/// audited and recorded.
const STEP: usize = 25;

/// Sweeps once at `now`. Fails only when every scope failed.
pub async fn sweep(app: &ExpireApp<'_>, now: Timestamp) -> Result<SweepSummary, AdapterError> {
    let scopes = app.firewall.scopes();
    // The records are read while the scopes are listed, and each scope
    // waits for them only once its expired rules are closed.
    let (tx, live) = watch::channel(Live::None);
    let read_live = async move {
        // Bounded well inside a scope's deadline, since each scope waits
        // for it once its expired rules are closed.
        let limit = app.scope_deadline / 2;
        let read = match tokio::time::timeout(limit, live_records(app, now)).await {
            Ok(read) => read.map_err(|e| e.to_string()),
            Err(_) => Err(format!("not read within {} s", limit.as_secs_f64())),
        };
        let failed = read.is_err();
        if let Err(e) = &read {
            tracing::error!(error = %e, "cannot read the records to bring them in line with the cloud; the next sweep tries again");
        }
        let _ = tx.send(Some(Arc::new(read)));
        failed
    };
    let (swept, timed_out, unread) = futures_util::join!(
        futures_util::future::join_all(scopes.iter().map(|s| sweep_scope(
            app,
            s,
            live.clone(),
            now
        ))),
        time_out_pending(app, now),
        read_live,
    );
    let (approvals_timed_out, pending_errors) = timed_out;
    let mut summary = SweepSummary {
        approvals_timed_out,
        record_errors: pending_errors + usize::from(unread),
        scopes: scopes.len(),
        ..SweepSummary::default()
    };
    let mut first_failure = None;
    for (scope, s) in scopes.iter().zip(swept) {
        summary.examined += s.examined;
        summary.active += s.active;
        summary.expired += s.expired;
        summary.drift += s.drift;
        summary.revoked += s.closed.revoked;
        summary.records_updated += s.closed.records_updated;
        summary.record_errors += s.closed.record_errors;
        summary.groups_detached += s.groups_detached;
        summary.records_checked += s.reconciled.records_checked;
        summary.records_reconciled += s.reconciled.records_updated;
        summary.closed_by_record += s.reconciled.rules_closed;
        summary.record_errors += s.reconciled.record_errors;
        if let Some(e) = s.failure {
            tracing::error!(scope = %scope, error = %e, "the sweep of this scope stopped short; the others went on");
            summary.failed_scopes.push(format!("{scope}: {e}"));
            first_failure.get_or_insert(e);
        }
    }
    tracing::info!(
        approvals_timed_out = summary.approvals_timed_out,
        examined = summary.examined,
        expired = summary.expired,
        drift = summary.drift,
        revoked = summary.revoked,
        groups_detached = summary.groups_detached,
        failed_scopes = summary.failed_scopes.len(),
        "sweep done"
    );
    match first_failure {
        Some(e) if summary.failed_scopes.len() == scopes.len() => Err(e),
        _ => Ok(summary),
    }
}

/// Lists one scope's rules, closes the expired ones and drift a step at a
/// time, then brings the scope's records in line with what is left, all
/// within the scope's deadline. What is left when the deadline comes is
/// still expired, or still out of line, so the next sweep finds it.
async fn sweep_scope(
    app: &ExpireApp<'_>,
    scope: &Scope,
    live: watch::Receiver<Live>,
    now: Timestamp,
) -> ScopeSweep {
    let deadline = Instant::now() + app.scope_deadline;
    let out_of_time = || {
        AdapterError::timed_out(
            format_args!("the sweep of {scope} did not finish"),
            app.scope_deadline,
        )
    };
    let mut swept = ScopeSweep::default();
    let rules = match tokio::time::timeout_at(deadline, app.firewall.rules_in(scope)).await {
        Ok(Ok(rules)) => rules,
        Ok(Err(e)) => {
            return ScopeSweep {
                failure: Some(e),
                ..swept
            };
        }
        Err(_) => {
            return ScopeSweep {
                failure: Some(out_of_time()),
                ..swept
            };
        }
    };
    swept.examined = rules.len();
    let plan = plan_sweep(
        rules.into_iter().map(|r| {
            let decoded = r.decoded.clone();
            (r, decoded)
        }),
        now,
    );
    (swept.active, swept.expired, swept.drift) =
        (plan.active.len(), plan.expired.len(), plan.drift.len());
    let steps = plan
        .expired
        .chunks(STEP)
        .map(|due| (due, &[][..]))
        .chain(plan.drift.chunks(STEP).map(|drift| (&[][..], drift)));
    for (due, drift) in steps {
        if Instant::now() >= deadline {
            swept.failure = Some(out_of_time());
            break;
        }
        match tokio::time::timeout_at(deadline, close(app, due, drift, Closing::Expired, now)).await
        {
            Ok(Ok(closed)) => swept.closed += closed,
            Ok(Err(e)) => {
                swept.failure = Some(e);
                break;
            }
            Err(_) => {
                // Only a cloud hung in mid-step gets here.
                let requests: Vec<String> =
                    due.iter().map(|(_, m)| m.request_id.to_string()).collect();
                tracing::error!(scope = %scope, ?requests, "the deadline cut a step short: some of these rules may be gone while their records still say Initiated");
                swept.failure = Some(out_of_time());
                break;
            }
        }
    }
    let expiry_done = swept.failure.is_none();
    // After the expired rules, so a failure here never keeps them open.
    match crate::exclusive::keep_exclusive(app, scope, deadline).await {
        Ok(n) => swept.groups_detached = n,
        Err(e) => _ = swept.failure.get_or_insert(e),
    }
    if !expiry_done {
        // What a failed step left is still expired: the next sweep, with
        // the records, finds it.
        return swept;
    }
    let seen: Vec<&FoundRule> = plan
        .expired
        .iter()
        .map(|(r, _)| r)
        .chain(plan.active.iter().map(|(r, _)| r))
        .collect();
    let left: Vec<&FoundRule> = plan.active.iter().map(|(r, _)| r).collect();
    let reconciled = reconcile_scope(app, scope, &seen, &left, live, now);
    match tokio::time::timeout_at(deadline, reconciled).await {
        Ok(Ok(done)) => swept.reconciled = done,
        Ok(Err(e)) => _ = swept.failure.get_or_insert(e),
        Err(_) => _ = swept.failure.get_or_insert_with(out_of_time),
    }
    swept
}

/// Waits for the live records, then reconciles the scope's share of them.
/// Records that could not be read are the sweep's to report once (see
/// [`sweep`]), not this scope's failure: its cloud answered.
async fn reconcile_scope(
    app: &ExpireApp<'_>,
    scope: &Scope,
    seen: &[&FoundRule],
    left: &[&FoundRule],
    mut live: watch::Receiver<Live>,
    now: Timestamp,
) -> Result<Reconciled, AdapterError> {
    let read = live
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|r| r.clone());
    match read.as_deref() {
        Some(Ok(records)) => reconcile(app, scope, seen, left, records, now).await,
        _ => Ok(Reconciled::default()),
    }
}

/// Denies the requests still pending after the approval timeout; returns
/// how many it denied and how many failed. Failures are logged: the next
/// sweep finds the same requests again.
async fn time_out_pending(app: &ExpireApp<'_>, now: Timestamp) -> (usize, usize) {
    let Some(cutoff) = now.checked_sub(app.approval_timeout).ok() else {
        return (0, 0);
    };
    let stale = match app
        .requests
        .pending_requests(cutoff, MAX_TIMEOUTS_PER_SWEEP)
        .await
    {
        Ok(stale) => stale,
        Err(e) => {
            tracing::error!(error = %e, "could not list the requests waiting for approval");
            return (0, 1);
        }
    };
    let (mut denied, mut errors) = (0, 0);
    for record in stale {
        let id = record.id();
        let result =
            records::update(app.requests, id, |r| r.time_out(app.approval_timeout, now)).await;
        match result {
            Ok(Some(r)) if r.status() == RequestStatus::Denied => denied += 1,
            Ok(_) => {}
            Err(e) => {
                errors += 1;
                tracing::error!(request_id = %id, error = %e, "could not deny a timed-out request");
            }
        }
    }
    (denied, errors)
}

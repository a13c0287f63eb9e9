//! The expire function: every minute, removes every jitvm rule whose end
//! time has passed, on every jitvm firewall, and marks the requests
//! `Revoked`/`Expired`.
//!
//! It works from the rules' own tags (or names), not from the database, so a
//! lost write, a lost message or a restarted host never leaves a rule open.
//! A rule on a jitvm firewall that is not a valid grant (added by hand, tags
//! missing or edited) is drift: it is removed too, with an audit event.
//!
//! It also denies the requests that waited longer than the approval timeout
//! for an approver (`Denied`, with that reason), so a request nobody looked
//! at cannot be approved days later.

use jiff::{SignedDuration, Timestamp};
use jitvm_core::ports::{AdapterError, Firewall, RequestStore, RuleKey};
use jitvm_core::rule::{plan_sweep, rfc3339};
use jitvm_core::telemetry::Audit;
use jitvm_core::{Port, StatusReason, records};
use serde::Serialize;

/// What the expire function needs, and only that.
pub struct ExpireApp<'a> {
    pub firewall: &'a dyn Firewall,
    pub requests: &'a dyn RequestStore,
    /// How long a request may wait for an approver.
    pub approval_timeout: SignedDuration,
}

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
}

/// Sweeps once at `now`.
pub async fn sweep(app: &ExpireApp<'_>, now: Timestamp) -> Result<SweepSummary, AdapterError> {
    let rules = app.firewall.rules().await?;
    let examined = rules.len();
    let plan = plan_sweep(
        rules.into_iter().map(|r| {
            let decoded = r.decoded.clone();
            (r, decoded)
        }),
        now,
    );
    let mut keys: Vec<RuleKey> = plan.expired.iter().map(|(r, _)| r.key.clone()).collect();
    keys.extend(plan.drift.iter().map(|(r, _)| r.key.clone()));
    let revoked = if keys.is_empty() {
        0
    } else {
        app.firewall.revoke(&keys).await?
    };
    for (rule, reason) in &plan.drift {
        let vm = rule.vm.as_ref().map(ToString::to_string);
        Audit {
            event: "rule.drift",
            vm: vm.as_deref(),
            port: rule.port.map(Port::get),
            source: Some(&rule.source),
            rule: Some(&rule.key.to_string()),
            status: Some("Removed"),
            message: Some(&format!("not a valid jitvm grant: {reason}")),
            ..Audit::default()
        }
        .emit();
    }
    for (rule, meta) in &plan.expired {
        let vm = rule.vm.as_ref().map(ToString::to_string);
        Audit {
            event: "grant.expired",
            request_id: Some(meta.request_id.as_str()),
            vm: vm.as_deref(),
            port: rule.port.map(Port::get),
            source: Some(&rule.source),
            requestor: meta.requester.as_deref(),
            rule: Some(&rule.key.to_string()),
            status: Some("Revoked"),
            reason: Some("Expired"),
            message: Some(&format!("end time {} passed", rfc3339(meta.expires))),
            ..Audit::default()
        }
        .emit();
    }
    let mut summary = SweepSummary {
        examined,
        active: plan.active.len(),
        expired: plan.expired.len(),
        drift: plan.drift.len(),
        revoked,
        ..SweepSummary::default()
    };
    // One record update per request, for all its expired ports.
    let expired = records::closed_ports(plan.expired.iter().map(|(rule, _)| rule));
    for (id, ports) in expired {
        let result =
            records::mark_closed(app.requests, &id, &ports, StatusReason::Expired, None, now).await;
        match result {
            Ok(Some(_)) => summary.records_updated += 1,
            Ok(None) => tracing::warn!(request_id = %id, "expired rule with no request record"),
            Err(e) => {
                summary.record_errors += 1;
                tracing::error!(request_id = %id, error = %e, "could not mark the request expired");
            }
        }
    }
    summary.approvals_timed_out = time_out_pending(app, now, &mut summary.record_errors).await;
    tracing::info!(
        approvals_timed_out = summary.approvals_timed_out,
        examined = summary.examined,
        expired = summary.expired,
        drift = summary.drift,
        revoked = summary.revoked,
        "sweep done"
    );
    Ok(summary)
}

/// Denies the requests still pending after the approval timeout; returns
/// how many it denied. Failures are logged and counted in `errors`: the
/// next sweep finds the same requests again.
async fn time_out_pending(app: &ExpireApp<'_>, now: Timestamp, errors: &mut usize) -> usize {
    let Some(cutoff) = now.checked_sub(app.approval_timeout).ok() else {
        return 0;
    };
    let stale = match app
        .requests
        .pending_requests(cutoff, MAX_TIMEOUTS_PER_SWEEP)
        .await
    {
        Ok(stale) => stale,
        Err(e) => {
            *errors += 1;
            tracing::error!(error = %e, "could not list the requests waiting for approval");
            return 0;
        }
    };
    let mut denied = 0;
    for record in stale {
        let id = record.id();
        let result =
            records::update(app.requests, id, |r| r.time_out(app.approval_timeout, now)).await;
        match result {
            Ok(Some(r)) if r.status() == jitvm_core::RequestStatus::Denied => denied += 1,
            Ok(_) => {}
            Err(e) => {
                *errors += 1;
                tracing::error!(request_id = %id, error = %e, "could not deny a timed-out request");
            }
        }
    }
    denied
}

/// A failed sweep, as the Lambda runtime reports it: its `errorType` is
/// `SweepError`, so alarms can tell it from a crash.
#[derive(Debug, thiserror::Error)]
#[error("the sweep failed: {0}")]
pub struct SweepError(#[from] pub AdapterError);

impl From<SweepError> for lambda_runtime::Diagnostic {
    fn from(e: SweepError) -> Self {
        let kind = if e.0.is_retryable() {
            "SweepError.Transient"
        } else {
            "SweepError.Permanent"
        };
        lambda_runtime::Diagnostic {
            error_type: kind.to_owned(),
            error_message: e.to_string(),
        }
    }
}

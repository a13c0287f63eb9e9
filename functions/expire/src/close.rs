//! The one way a rule is closed, for the timer and the sweep alike: remove
//! the rules, write one audit event each, bring their records in line.

use jiff::Timestamp;
use jitvm_core::expiry::Closing;
use jitvm_core::ports::{AdapterError, FoundRule, RuleKey};
use jitvm_core::rule::{DriftReason, RuleMeta, rfc3339};
use jitvm_core::telemetry::Audit;
use jitvm_core::{Port, records};

use crate::ExpireApp;

/// What closing some rules did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Closed {
    pub revoked: usize,
    pub records_updated: usize,
    /// Records that could not be updated (the rules are gone all the same);
    /// the log has them.
    pub record_errors: usize,
}

impl std::ops::AddAssign for Closed {
    fn add_assign(&mut self, other: Closed) {
        self.revoked += other.revoked;
        self.records_updated += other.records_updated;
        self.record_errors += other.record_errors;
    }
}

/// Removes the `due` grant rules (their end time passed, or their request
/// was revoked: `closing` says which) and the `drift` rules, then marks the
/// grants' ports `Revoked` for that reason.
pub async fn close(
    app: &ExpireApp<'_>,
    due: &[(FoundRule, RuleMeta)],
    drift: &[(FoundRule, DriftReason)],
    closing: Closing,
    now: Timestamp,
) -> Result<Closed, AdapterError> {
    let keys: Vec<RuleKey> = due
        .iter()
        .map(|(r, _)| r.key.clone())
        .chain(drift.iter().map(|(r, _)| r.key.clone()))
        .collect();
    if keys.is_empty() {
        return Ok(Closed::default());
    }
    let revoked = app.firewall.revoke(&keys).await?;
    audit(due, drift, closing);
    let mut closed = Closed {
        revoked,
        ..Closed::default()
    };
    // One record update per request, for all its closed ports.
    for (id, ports) in records::closed_ports(due.iter().map(|(rule, _)| rule)) {
        match records::mark_closed(app.requests, &id, &ports, closing.reason(), None, now).await {
            Ok(Some(_)) => closed.records_updated += 1,
            Ok(None) => tracing::warn!(request_id = %id, "closed a rule with no request record"),
            Err(e) => {
                closed.record_errors += 1;
                tracing::error!(request_id = %id, error = %e, "could not mark the request's ports closed");
            }
        }
    }
    Ok(closed)
}

fn audit(due: &[(FoundRule, RuleMeta)], drift: &[(FoundRule, DriftReason)], closing: Closing) {
    for (rule, why) in drift {
        let vm = rule.vm.as_ref().map(ToString::to_string);
        Audit {
            event: "rule.drift",
            vm: vm.as_deref(),
            port: rule.port.map(Port::get),
            source: Some(&rule.source),
            rule: Some(&rule.key.to_string()),
            status: Some("Removed"),
            message: Some(&format!("not a valid jitvm grant: {why}")),
            ..Audit::default()
        }
        .emit();
    }
    let (event, reason_text) = match closing {
        Closing::Expired => ("grant.expired", "Expired"),
        Closing::Revoked => ("grant.closed", "UserRequested"),
    };
    for (rule, meta) in due {
        let message = match closing {
            Closing::Expired => format!("end time {} passed", rfc3339(meta.expires)),
            Closing::Revoked => "removed after the revoke could not remove it at once".to_owned(),
        };
        audit_rule_closed(event, rule, meta, Some(reason_text), &message);
    }
}

/// One audit event for a grant rule that was removed: `event`, with why.
pub(crate) fn audit_rule_closed(
    event: &str,
    rule: &FoundRule,
    meta: &RuleMeta,
    reason: Option<&str>,
    message: &str,
) {
    let vm = rule.vm.as_ref().map(ToString::to_string);
    Audit {
        event,
        request_id: Some(meta.request_id.as_str()),
        vm: vm.as_deref(),
        port: rule.port.map(Port::get),
        source: Some(&rule.source),
        requestor: meta.requester.as_deref(),
        rule: Some(&rule.key.to_string()),
        status: Some("Revoked"),
        reason,
        message: Some(message),
        ..Audit::default()
    }
    .emit();
}

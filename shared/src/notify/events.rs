//! Every audit event, as an event for other systems (EventBridge): the
//! rows of the audit trail, each with a detail-type a rule can match.

use jiff::Timestamp;
use serde_json::Value;

use crate::domain::{AuditRow, RequestRecord, changes_from};

/// The `source` of every event jitvm puts on a bus.
pub const SOURCE: &str = "jitvm";

/// One event for a bus: the detail-type, when it happened, and the audit
/// row as its detail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub detail_type: String,
    pub time: Timestamp,
    /// The audit row (the CSV export's fields, camelCase) plus `eventId`
    /// (`<request id>/<n>`, the same for a redelivered event, so a
    /// consumer can drop repeats).
    pub detail: Value,
}

/// Every detail-type, as the README documents them.
pub const DETAIL_TYPES: [&str; 7] = [
    "JIT Request Pending Approval",
    "JIT Request Approved",
    "JIT Request Denied",
    "JIT Break-Glass Access",
    "JIT Access Opened",
    "JIT Access Closed",
    "JIT Access Failed",
];

/// The events of what one write changed (`before` as the record was,
/// `None` for a new record).
pub fn audit_events(before: Option<&RequestRecord>, after: &RequestRecord) -> Vec<AuditEvent> {
    let seen = before.map_or(0, |b| b.history().len());
    changes_from(after, seen)
        .into_iter()
        .enumerate()
        .map(|(i, row)| event(after, &row, seen + i))
        .collect()
}

fn event(record: &RequestRecord, row: &AuditRow, index: usize) -> AuditEvent {
    let mut detail = serde_json::to_value(row).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut detail {
        map.insert(
            "eventId".into(),
            format!("{}/{index}", row.request_id).into(),
        );
    }
    AuditEvent {
        detail_type: detail_type(record, row).to_owned(),
        time: row.time,
        detail,
    }
}

fn detail_type(record: &RequestRecord, row: &AuditRow) -> &'static str {
    match (row.port.is_some(), row.status.as_str()) {
        (false, "PendingApproval") => "JIT Request Pending Approval",
        (false, "Approved") if record.break_glass() => "JIT Break-Glass Access",
        (false, "Approved") => "JIT Request Approved",
        (false, _) => "JIT Request Denied",
        // A port's own rows are its opening, its closing or its failure (it
        // starts as Initiating under the request's row).
        (true, "Initiated") => "JIT Access Opened",
        (true, "Revoked") => "JIT Access Closed",
        (true, _) => "JIT Access Failed",
    }
}

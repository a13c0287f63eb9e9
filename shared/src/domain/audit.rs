//! The audit trail of a request: one row per state change, derived from
//! the record's history. The CSV export and the audit log events are both
//! made of these rows, so the two always say the same thing.

use jiff::Timestamp;
use serde::Serialize;

use super::port::{Port, Protocol};
use super::prefix::SourcePrefix;
use super::principal::Principal;
use super::record::{RequestRecord, StatusChange};
use super::request::RequestId;
use super::status::StatusReason;
use super::text::Justification;
use super::vm::VmId;

/// One state change of one request (or of one of its ports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRow {
    pub time: Timestamp,
    pub request_id: RequestId,
    pub vm: VmId,
    /// The port that changed; `None` when the request as a whole did
    /// (accepted, approved, denied).
    pub port: Option<Port>,
    pub protocol: Option<Protocol>,
    pub source: Option<SourcePrefix>,
    pub requestor: Principal,
    /// Who approved or denied the request, on the rows from that decision
    /// on; `None` while it waits and for requests approved automatically.
    pub approver: Option<Principal>,
    /// Who made this change, when a person did.
    pub actor: Option<Principal>,
    pub status: String,
    pub reason: Option<StatusReason>,
    /// The port's end time, on port rows.
    pub end_time_utc: Option<Timestamp>,
    pub justification: Option<Justification>,
    pub message: Option<String>,
    /// Whether the request was opened without approval, by breaking glass.
    pub break_glass: bool,
}

/// The CSV header, in the order of [`AuditRow::cells`]. New columns go at
/// the end, so that the position of every earlier one never moves.
pub const AUDIT_COLUMNS: [&str; 15] = [
    "time",
    "requestId",
    "vm",
    "port",
    "protocol",
    "source",
    "requestor",
    "approver",
    "actor",
    "status",
    "reason",
    "endTimeUtc",
    "justification",
    "message",
    "breakGlass",
];

impl AuditRow {
    /// The row's values as text, in the order of [`AUDIT_COLUMNS`]; empty
    /// where a value is absent, `true` or `false` for `breakGlass`. Not yet
    /// safe for a spreadsheet: see `jitvm_core::audit` for the export.
    pub fn cells(&self) -> [String; 15] {
        fn opt<T: ToString>(v: &Option<T>) -> String {
            v.as_ref().map(ToString::to_string).unwrap_or_default()
        }
        [
            self.time.to_string(),
            self.request_id.to_string(),
            self.vm.to_string(),
            opt(&self.port.map(Port::get)),
            self.protocol
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            opt(&self.source),
            self.requestor.to_string(),
            opt(&self.approver),
            opt(&self.actor),
            self.status.clone(),
            self.reason.map(|r| format!("{r:?}")).unwrap_or_default(),
            opt(&self.end_time_utc),
            self.justification
                .as_ref()
                .map(|j| j.as_str().to_owned())
                .unwrap_or_default(),
            self.message.clone().unwrap_or_default(),
            self.break_glass.to_string(),
        ]
    }
}

/// Every state change of `record`, oldest first.
pub fn audit_rows(record: &RequestRecord) -> Vec<AuditRow> {
    changes_from(record, 0)
}

/// The state changes of `record` from its `first`-th history entry on:
/// what a write that found `first` entries added.
pub fn changes_from(record: &RequestRecord, first: usize) -> Vec<AuditRow> {
    let decision = record
        .history()
        .iter()
        .find(|c| c.port.is_none() && (c.status == "Approved" || c.status == "Denied"))
        .map(|c| c.at);
    record
        .history()
        .iter()
        .skip(first)
        .map(|change| row(record, change, decision))
        .collect()
}

fn row(record: &RequestRecord, change: &StatusChange, decision: Option<Timestamp>) -> AuditRow {
    let port = change.port.and_then(|n| record.port(n));
    let decided = decision.is_some_and(|at| change.at >= at) && !record.approvers().is_empty();
    AuditRow {
        time: change.at,
        request_id: record.id().clone(),
        vm: record.vm().clone(),
        port: change.port,
        protocol: port.map(|p| p.protocol),
        source: port.map(|p| p.allowed_source_address_prefix),
        requestor: record.requestor().clone(),
        approver: if decided {
            record.decided_by().cloned()
        } else {
            None
        },
        actor: change.by.clone(),
        status: change.status.clone(),
        reason: change.reason,
        end_time_utc: port.map(|p| p.end_time_utc),
        justification: record.justification().cloned(),
        // A failure's code leads its message, so the export and the log
        // line carry it without a column of their own.
        message: match (&change.code, &change.message) {
            (Some(code), Some(m)) => Some(format!("{code}: {m}")),
            (Some(code), None) => Some(code.clone()),
            (None, m) => m.clone(),
        },
        break_glass: record.break_glass(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::{Policy, PolicyDocument};
    use crate::domain::request::{AccessRequest, InitiateBody};
    use crate::domain::status::{PortStatus, RequestStatus};
    use crate::domain::{Decision, evaluate};
    use serde_json::json;

    const VM: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn pending() -> RequestRecord {
        let vm = VmId::parse(VM).unwrap();
        let policy = Policy::parse(
            vm,
            &PolicyDocument::from_value(json!({"ports": [22], "approvers": ["local:bob"]}))
                .unwrap(),
        )
        .unwrap();
        let body: InitiateBody = serde_json::from_value(json!({"virtualMachines": [{"id": VM,
            "ports": [{"number": 22, "duration": "PT1H", "allowedSourceAddressPrefix": "198.51.100.7"}]}],
            "justification": "=HYPERLINK(\"x\")"}))
        .unwrap();
        let req = AccessRequest::parse(RequestId::parse("r1").unwrap(), &body).unwrap();
        let alice = Principal::parse("local:alice").unwrap();
        let Decision::PendingApproval { grants, approvers } =
            evaluate(Some(&policy), &req, &alice, None, t("2026-11-23T12:00:00Z"))
        else {
            panic!()
        };
        RequestRecord::accepted(&req, &alice, &grants, &approvers, t("2026-11-23T12:00:00Z"))
    }

    #[test]
    fn one_row_per_change_with_the_approver_from_the_decision_on() {
        let mut r = pending();
        let bob = Principal::parse("local:bob").unwrap();
        let p22 = Port::parse(22).unwrap();
        r.set_status(
            RequestStatus::Approved,
            Some(&bob),
            t("2026-11-23T12:05:00Z"),
        )
        .unwrap();
        r.set_port(
            p22,
            PortStatus::Initiated,
            StatusReason::UserRequested,
            None,
            t("2026-11-23T12:05:02Z"),
        )
        .unwrap();
        let rows = audit_rows(&r);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].status, "PendingApproval");
        assert_eq!(rows[0].approver, None);
        assert_eq!(rows[0].actor.as_ref().unwrap().as_str(), "local:alice");
        assert_eq!(rows[1].status, "Approved");
        assert_eq!(rows[1].approver.as_ref(), Some(&bob));
        assert_eq!(rows[2].port, Some(p22));
        assert_eq!(rows[2].source.unwrap().to_string(), "198.51.100.7/32");
        assert_eq!(rows[2].approver.as_ref(), Some(&bob));
        let cells = rows[2].cells();
        assert_eq!(cells[3], "22");
        assert_eq!(cells[9], "Initiated");
        assert_eq!(cells[12], "=HYPERLINK(\"x\")");
        assert_eq!(cells[14], "false");
        assert_eq!(AUDIT_COLUMNS[14], "breakGlass");
        assert_eq!(changes_from(&r, 2), rows[2..].to_vec());
        assert!(changes_from(&r, 3).is_empty());
    }
}

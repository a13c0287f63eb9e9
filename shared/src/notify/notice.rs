//! What a person is told: one [`Notice`] per kind of change a write made
//! to a request, addressed to its approvers or to its requestor.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::domain::{
    Port, PortStatus, Principal, Protocol, RequestId, RequestRecord, SourcePrefix, StatusChange,
    StatusReason, VmId,
};

/// How long before its end a requestor is reminded that access ends.
pub const REMIND_BEFORE: SignedDuration = SignedDuration::from_mins(5);

/// What happened, as a person is told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NoticeKind {
    /// A request waits for an approver.
    Pending,
    /// A named principal opened access without approval: approvers are
    /// told at once and may revoke it.
    BreakGlass,
    /// The requestor withdrew a request before anyone decided.
    Withdrawn,
    /// An approver approved the request.
    Approved,
    /// An approver denied the request.
    Denied,
    /// Nobody approved the request in time.
    TimedOut,
    /// Ports are open.
    Opened,
    /// Access ends in [`REMIND_BEFORE`] or less.
    EndingSoon,
    /// Access was closed before its end time; `reason` says why.
    ClosedEarly,
    /// A port could not be opened; `message` says why.
    Failed,
}

/// Who a notice is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The request's approvers (the policy's channel).
    Approvers,
    /// The person who asked.
    Requestor,
}

impl NoticeKind {
    pub fn audience(self) -> Audience {
        match self {
            NoticeKind::Pending | NoticeKind::BreakGlass | NoticeKind::Withdrawn => {
                Audience::Approvers
            }
            _ => Audience::Requestor,
        }
    }
}

/// One port a notice is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NoticePort {
    pub number: Port,
    pub protocol: Protocol,
    pub source: SourcePrefix,
    pub end_time_utc: Timestamp,
}

/// One thing to tell about one request. Everything in it came from the
/// record; the text a person typed (`justification`, `message`) is
/// hostile and every channel escapes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    pub kind: NoticeKind,
    pub request_id: RequestId,
    pub vm: VmId,
    pub requestor: Principal,
    /// Who made the change, when a person did (the approver, whoever
    /// revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Principal>,
    /// The ports the change concerns; every port of the request for
    /// request-wide changes.
    pub ports: Vec<NoticePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<StatusReason>,
    /// The record's words for the change (a denial's reason, a failure's
    /// cause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub break_glass: bool,
    pub at: Timestamp,
}

/// The notices for what one write changed: `after` is the record as
/// written, `before` as it was (`None` for a new record).
pub fn notices(before: Option<&RequestRecord>, after: &RequestRecord) -> Vec<Notice> {
    let seen = before.map_or(0, |b| b.history().len());
    let changes = after.history().get(seen..).unwrap_or_default();
    let mut out: Vec<Notice> = Vec::new();
    for change in changes {
        let Some(kind) = kind_of(after, change) else {
            continue;
        };
        // A write that changes several ports the same way (opens both 22
        // and 3389) is one notice naming both.
        if let Some(port) = change.port
            && let Some(same) = out
                .iter_mut()
                .find(|n| n.kind == kind && n.reason == change.reason)
        {
            if let Some(p) = notice_port(after, port) {
                same.ports.push(p);
            }
            continue;
        }
        let ports = match change.port {
            Some(port) => notice_port(after, port).into_iter().collect(),
            None => after.ports().iter().map(port_of).collect(),
        };
        out.push(notice(after, kind, change, ports));
    }
    out
}

/// The reminder for `record` at `now`: its open ports that end within
/// [`REMIND_BEFORE`] (and have not ended), or `None` when none do.
pub fn ending_soon(record: &RequestRecord, now: Timestamp) -> Option<Notice> {
    let soon = now.checked_add(REMIND_BEFORE).ok()?;
    let ports: Vec<NoticePort> = record
        .ports()
        .iter()
        .filter(|p| p.status == PortStatus::Initiated && p.end_time_utc > now)
        .filter(|p| p.end_time_utc <= soon)
        .map(port_of)
        .collect();
    if ports.is_empty() {
        return None;
    }
    Some(Notice {
        kind: NoticeKind::EndingSoon,
        request_id: record.id().clone(),
        vm: record.vm().clone(),
        requestor: record.requestor().clone(),
        actor: None,
        ports,
        justification: record.justification().map(|j| j.as_str().to_owned()),
        reason: None,
        message: None,
        break_glass: is_break_glass(record),
        at: now,
    })
}

/// What a person is told about `change`, if anything: a port that is
/// being opened, or that closed at its end time, is not news.
fn kind_of(record: &RequestRecord, change: &StatusChange) -> Option<NoticeKind> {
    let by_requestor = change.by.as_ref() == Some(record.requestor());
    match (change.port, change.status.as_str()) {
        (None, "PendingApproval") => Some(NoticeKind::Pending),
        (None, "Approved") if is_break_glass(record) => Some(NoticeKind::BreakGlass),
        // Approved with no approvers in the policy: the opening says it.
        (None, "Approved") if record.approvers().is_empty() => None,
        (None, "Approved") => Some(NoticeKind::Approved),
        (None, "Denied") if change.by.is_none() => Some(NoticeKind::TimedOut),
        (None, "Denied") if by_requestor => Some(NoticeKind::Withdrawn),
        (None, "Denied") => Some(NoticeKind::Denied),
        (Some(_), "Initiated") => Some(NoticeKind::Opened),
        (Some(_), "Failed") => Some(NoticeKind::Failed),
        // A denial revokes the ports that never opened; the denial says it.
        (Some(_), "Revoked") => match change.reason {
            Some(StatusReason::Expired | StatusReason::Denied) => None,
            _ => Some(NoticeKind::ClosedEarly),
        },
        _ => None,
    }
}

fn notice(
    record: &RequestRecord,
    kind: NoticeKind,
    change: &StatusChange,
    ports: Vec<NoticePort>,
) -> Notice {
    Notice {
        kind,
        request_id: record.id().clone(),
        vm: record.vm().clone(),
        requestor: record.requestor().clone(),
        actor: change.by.clone(),
        ports,
        justification: record.justification().map(|j| j.as_str().to_owned()),
        reason: change.reason,
        message: match (&change.code, &change.message) {
            (Some(code), Some(m)) => Some(format!("{code}: {m}")),
            (Some(code), None) => Some(code.clone()),
            (None, m) => m.clone(),
        },
        break_glass: is_break_glass(record),
        at: change.at,
    }
}

fn notice_port(record: &RequestRecord, port: Port) -> Option<NoticePort> {
    record.port(port).map(port_of)
}

fn port_of(p: &crate::domain::PortRecord) -> NoticePort {
    NoticePort {
        number: p.number,
        protocol: p.protocol,
        source: p.allowed_source_address_prefix,
        end_time_utc: p.end_time_utc,
    }
}

pub(super) fn is_break_glass(_record: &RequestRecord) -> bool {
    false
}

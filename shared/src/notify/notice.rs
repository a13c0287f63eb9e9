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
    Some(about(record, NoticeKind::EndingSoon, ports, now))
}

/// What a person is told about `change`, if anything: a port that is
/// being opened, or that closed at its end time, is not news.
fn kind_of(record: &RequestRecord, change: &StatusChange) -> Option<NoticeKind> {
    let by_requestor = change.by.as_ref() == Some(record.requestor());
    match (change.port, change.status.as_str()) {
        (None, "PendingApproval") => Some(NoticeKind::Pending),
        (None, "Approved") if record.break_glass() => Some(NoticeKind::BreakGlass),
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

/// A notice of `kind` about `ports` of `record`, at `at`, made by nobody.
fn about(
    record: &RequestRecord,
    kind: NoticeKind,
    ports: Vec<NoticePort>,
    at: Timestamp,
) -> Notice {
    Notice {
        kind,
        request_id: record.id().clone(),
        vm: record.vm().clone(),
        requestor: record.requestor().clone(),
        actor: None,
        ports,
        justification: record.justification().map(|j| j.as_str().to_owned()),
        reason: None,
        message: None,
        break_glass: record.break_glass(),
        at,
    }
}

/// The notice of `change`: who made it, why, and the record's words.
fn notice(
    record: &RequestRecord,
    kind: NoticeKind,
    change: &StatusChange,
    ports: Vec<NoticePort>,
) -> Notice {
    Notice {
        actor: change.by.clone(),
        reason: change.reason,
        message: match (&change.code, &change.message) {
            (Some(code), Some(m)) => Some(format!("{code}: {m}")),
            (Some(code), None) => Some(code.clone()),
            (None, m) => m.clone(),
        },
        ..about(record, kind, ports, change.at)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::{Policy, PolicyDocument};
    use crate::domain::request::{AccessRequest, InitiateBody};
    use crate::domain::status::RequestStatus;
    use crate::domain::{Decision, evaluate};
    use serde_json::json;

    const VM: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn who(name: &str) -> Principal {
        Principal::parse(name).unwrap()
    }

    /// A request of Alice for ports 22 and 3389, waiting for Bob when
    /// `approvers`, else approved at once.
    fn asked(approvers: bool) -> RequestRecord {
        let vm = VmId::parse(VM).unwrap();
        let approvers: Vec<&str> = if approvers { vec!["local:bob"] } else { vec![] };
        let document = json!({"ports": [22, 3389], "approvers": approvers});
        let policy = Policy::parse(vm, &PolicyDocument::from_value(document).unwrap()).unwrap();
        let port = |n: u16| json!({"number": n, "duration": "PT1H", "allowedSourceAddressPrefix": "198.51.100.7"});
        let body: InitiateBody = serde_json::from_value(json!({"virtualMachines": [{"id": VM,
            "ports": [port(22), port(3389)]}], "justification": "deploy"}))
        .unwrap();
        let req = AccessRequest::parse(RequestId::parse("r1").unwrap(), &body).unwrap();
        let at = t("2026-12-01T12:00:00Z");
        let (grants, approvers) = match evaluate(Some(&policy), &req, &who("local:alice"), None, at)
        {
            Decision::PendingApproval { grants, approvers } => (grants, approvers),
            Decision::Approved { grants } => (grants, Vec::new()),
            other => panic!("{other:?}"),
        };
        RequestRecord::accepted(&req, &who("local:alice"), &grants, &approvers, at)
    }

    fn kinds(before: Option<&RequestRecord>, after: &RequestRecord) -> Vec<NoticeKind> {
        notices(before, after).into_iter().map(|n| n.kind).collect()
    }

    fn open_both(r: &mut RequestRecord, at: &str) {
        for port in [22, 3389] {
            let port = Port::parse(port).unwrap();
            r.set_port(
                port,
                PortStatus::Initiated,
                StatusReason::UserRequested,
                None,
                t(at),
            )
            .unwrap();
        }
    }

    #[test]
    fn a_pending_request_is_news_for_approvers_then_each_decision_for_the_requestor() {
        let r = asked(true);
        let pending = notices(None, &r);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].kind, NoticeKind::Pending);
        assert_eq!(pending[0].kind.audience(), Audience::Approvers);
        assert_eq!(pending[0].ports.len(), 2);
        assert_eq!(pending[0].justification.as_deref(), Some("deploy"));

        let mut approved = r.clone();
        approved
            .set_status(
                RequestStatus::Approved,
                Some(&who("local:bob")),
                t("2026-12-01T12:01:00Z"),
            )
            .unwrap();
        let told = notices(Some(&r), &approved);
        assert_eq!(
            told.iter().map(|n| n.kind).collect::<Vec<_>>(),
            [NoticeKind::Approved]
        );
        assert_eq!(
            told[0].actor.as_ref().map(Principal::as_str),
            Some("local:bob")
        );
        assert_eq!(told[0].kind.audience(), Audience::Requestor);

        let mut denied = r.clone();
        assert!(denied.deny(
            Some(&who("local:bob")),
            "use the bastion",
            t("2026-12-01T12:01:00Z")
        ));
        let told = notices(Some(&r), &denied);
        // The ports a denial revokes are the denial's news, not closings.
        assert_eq!(
            told.iter().map(|n| n.kind).collect::<Vec<_>>(),
            [NoticeKind::Denied]
        );
        assert!(
            told[0]
                .message
                .as_deref()
                .unwrap()
                .contains("use the bastion")
        );

        let mut timed_out = r.clone();
        assert!(timed_out.deny(
            None,
            "no approver decided in time",
            t("2026-12-01T13:00:00Z")
        ));
        assert_eq!(kinds(Some(&r), &timed_out), [NoticeKind::TimedOut]);

        let mut withdrawn = r.clone();
        assert!(withdrawn.withdraw(&who("local:alice"), t("2026-12-01T12:02:00Z")));
        assert_eq!(kinds(Some(&r), &withdrawn), [NoticeKind::Withdrawn]);
        assert_eq!(NoticeKind::Withdrawn.audience(), Audience::Approvers);
    }

    #[test]
    fn an_opening_of_several_ports_is_one_notice_and_only_an_early_close_is_news() {
        let r = asked(false);
        // Approved at once (no approvers): the opening says it.
        assert!(kinds(None, &r).is_empty(), "{:?}", notices(None, &r));
        let mut open = r.clone();
        open_both(&mut open, "2026-12-01T12:00:02Z");
        let told = notices(Some(&r), &open);
        assert_eq!(told.len(), 1, "{told:?}");
        assert_eq!(told[0].kind, NoticeKind::Opened);
        assert_eq!(
            told[0]
                .ports
                .iter()
                .map(|p| p.number.get())
                .collect::<Vec<_>>(),
            [22, 3389]
        );
        // Nothing new, nothing told: a stream that hands a write over again
        // with the same history tells nothing twice.
        assert!(notices(Some(&open), &open).is_empty());

        let mut expired = open.clone();
        expired.revoke_ports(
            |_| true,
            StatusReason::Expired,
            None,
            t("2026-12-01T13:00:00Z"),
        );
        assert!(kinds(Some(&open), &expired).is_empty());

        let mut revoked = open.clone();
        let p22 = Port::parse(22).unwrap();
        revoked.revoke_ports(
            |p| p == p22,
            StatusReason::UserRequested,
            None,
            t("2026-12-01T12:10:00Z"),
        );
        let told = notices(Some(&open), &revoked);
        assert_eq!(
            told.iter().map(|n| n.kind).collect::<Vec<_>>(),
            [NoticeKind::ClosedEarly]
        );
        assert_eq!(told[0].reason, Some(StatusReason::UserRequested));
        assert_eq!(told[0].ports.len(), 1);
    }

    #[test]
    fn break_glass_is_news_for_approvers_at_once() {
        let vm = VmId::parse(VM).unwrap();
        let document = json!({"ports": [22], "approvers": ["local:bob"],
            "breakGlass": {"principals": ["local:alice"], "maxRequestAccessDuration": "PT1H"}});
        let policy = Policy::parse(vm, &PolicyDocument::from_value(document).unwrap()).unwrap();
        let body: InitiateBody = serde_json::from_value(json!({"virtualMachines": [{"id": VM,
            "ports": [{"number": 22, "duration": "PT30M", "allowedSourceAddressPrefix": "198.51.100.7"}]}],
            "justification": "prod is down", "breakGlass": true}))
        .unwrap();
        let req = AccessRequest::parse(RequestId::parse("r2").unwrap(), &body).unwrap();
        let at = t("2026-12-01T12:00:00Z");
        let Decision::Approved { grants } =
            evaluate(Some(&policy), &req, &who("local:alice"), None, at)
        else {
            panic!("break-glass opens without approval");
        };
        let r = RequestRecord::accepted(&req, &who("local:alice"), &grants, policy.approvers(), at);
        let told = notices(None, &r);
        assert_eq!(
            told.iter().map(|n| n.kind).collect::<Vec<_>>(),
            [NoticeKind::BreakGlass]
        );
        assert_eq!(told[0].kind.audience(), Audience::Approvers);
        assert!(told[0].break_glass);
        assert_eq!(told[0].justification.as_deref(), Some("prod is down"));
        let events = crate::notify::audit_events(None, &r);
        assert_eq!(events[0].detail_type, "JIT Break-Glass Access");
        assert_eq!(events[0].detail["breakGlass"], true);
    }

    #[test]
    fn the_reminder_names_the_open_ports_that_end_within_five_minutes() {
        let mut r = asked(false);
        open_both(&mut r, "2026-12-01T12:00:02Z");
        let end = r.ports()[0].end_time_utc;
        let early = end.checked_sub(SignedDuration::from_mins(6)).unwrap();
        assert!(ending_soon(&r, early).is_none());
        let due = end.checked_sub(REMIND_BEFORE).unwrap();
        let notice = ending_soon(&r, due).expect("a reminder when due");
        assert_eq!(notice.kind, NoticeKind::EndingSoon);
        assert_eq!(notice.ports.len(), 2);
        assert_eq!(notice.kind.audience(), Audience::Requestor);
        assert!(ending_soon(&r, end).is_none(), "ended already");
        let mut closed = r.clone();
        closed.revoke_ports(|_| true, StatusReason::UserRequested, None, due);
        assert!(ending_soon(&closed, due).is_none());
    }
}

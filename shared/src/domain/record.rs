//! The record of one access request: what was asked, what was decided, what
//! happened to each port, and the history of every change, for audit.
//!
//! It serialises in the shape of Azure's initiate response
//! (`virtualMachines[].ports[]` with `status`, `statusReason`, `endTimeUtc`),
//! with jitvm's `id`, `status` and `history` beside it.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::duration::MaxAccessDuration;

use super::evaluate::Grant;
use super::port::{Port, Protocol};
use super::prefix::SourcePrefix;
use super::principal::{Principal, PrincipalPattern};
use super::request::{AccessRequest, RequestId};
use super::status::{IllegalTransition, PortStatus, RequestStatus, StatusReason, Transition};
use super::text::Justification;
use super::vm::VmId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RecordWire", into = "RecordWire")]
pub struct RequestRecord {
    id: RequestId,
    requestor: Principal,
    justification: Option<Justification>,
    start_time_utc: Timestamp,
    status: RequestStatus,
    vm: VmId,
    ports: Vec<PortRecord>,
    approvers: Vec<PrincipalPattern>,
    decided_by: Option<Principal>,
    history: Vec<StatusChange>,
    break_glass: bool,
}

/// The record on the wire and in storage, in Azure's shape.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordWire {
    id: RequestId,
    requestor: Principal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    justification: Option<Justification>,
    start_time_utc: Timestamp,
    status: RequestStatus,
    virtual_machines: Vec<VmRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    approvers: Vec<PrincipalPattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decided_by: Option<Principal>,
    #[serde(default)]
    history: Vec<StatusChange>,
    /// Opened without approval; absent (false) in records from before
    /// break-glass existed, and left out when false.
    #[serde(default, skip_serializing_if = "super::request::is_false")]
    break_glass: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VmRecord {
    id: VmId,
    ports: Vec<PortRecord>,
}

impl TryFrom<RecordWire> for RequestRecord {
    type Error = String;
    fn try_from(w: RecordWire) -> Result<Self, Self::Error> {
        let mut vms = w.virtual_machines;
        if vms.len() != 1 {
            return Err(format!(
                "a request record names exactly one VM, not {}",
                vms.len()
            ));
        }
        let vm = vms.remove(0);
        Ok(Self {
            id: w.id,
            requestor: w.requestor,
            justification: w.justification,
            start_time_utc: w.start_time_utc,
            status: w.status,
            vm: vm.id,
            ports: vm.ports,
            approvers: w.approvers,
            decided_by: w.decided_by,
            history: w.history,
            break_glass: w.break_glass,
        })
    }
}

impl From<RequestRecord> for RecordWire {
    fn from(r: RequestRecord) -> Self {
        Self {
            id: r.id,
            requestor: r.requestor,
            justification: r.justification,
            start_time_utc: r.start_time_utc,
            status: r.status,
            virtual_machines: vec![VmRecord {
                id: r.vm,
                ports: r.ports,
            }],
            approvers: r.approvers,
            decided_by: r.decided_by,
            history: r.history,
            break_glass: r.break_glass,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRecord {
    pub number: Port,
    pub protocol: Protocol,
    pub allowed_source_address_prefix: SourcePrefix,
    pub end_time_utc: Timestamp,
    pub status: PortStatus,
    pub status_reason: StatusReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The cloud's error code when the port failed (such as
    /// `SecurityRuleCountLimitReached`), beside its message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

/// One entry of a record's history: the request's or one port's new status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusChange {
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<StatusReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Principal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The cloud's error code of a failure, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// How late the sweep may close a grant after its end time, with room to
/// spare: it runs every minute.
const SWEEP_SLACK: SignedDuration = SignedDuration::from_hours(1);

/// The earliest `startTimeUtc` of a request that may still change at `now`
/// (be approved, open, expire): it may wait `approval_timeout` for an
/// approver, then hold a grant for the longest any policy allows, and the
/// sweep may close that a little late. Listings of what is still open, or
/// of what changed since a time, need read no further back.
pub fn earliest_live_start(now: Timestamp, approval_timeout: SignedDuration) -> Timestamp {
    let lifetime = approval_timeout + MaxAccessDuration::MAX + SWEEP_SLACK;
    now.checked_sub(lifetime).unwrap_or(now)
}

impl RequestRecord {
    /// The record of a request that [`super::evaluate`] accepted with
    /// `grants`: `Approved` with every port `Initiating`, or
    /// `PendingApproval` when `approvers` is not empty. A break-glass
    /// request is `Approved` at once and marked so, keeping `approvers` (the
    /// policy's) so that who could have approved it is on record.
    pub fn accepted(
        request: &AccessRequest,
        requestor: &Principal,
        grants: &[Grant],
        approvers: &[PrincipalPattern],
        now: Timestamp,
    ) -> Self {
        let break_glass = request.break_glass();
        let status = if approvers.is_empty() || break_glass {
            RequestStatus::Approved
        } else {
            RequestStatus::PendingApproval
        };
        let ports = grants
            .iter()
            .map(|g| PortRecord {
                number: g.port(),
                protocol: g.protocol(),
                allowed_source_address_prefix: g.source(),
                end_time_utc: g.end(),
                status: PortStatus::Initiating,
                status_reason: StatusReason::UserRequested,
                message: None,
                error_code: None,
            })
            .collect();
        let start = grants.first().map(Grant::start).unwrap_or(now);
        Self {
            id: request.id().clone(),
            requestor: requestor.clone(),
            justification: request.justification().cloned(),
            start_time_utc: start,
            status,
            vm: request.vm().clone(),
            ports,
            approvers: approvers.to_vec(),
            decided_by: None,
            history: vec![StatusChange {
                at: now,
                port: None,
                status: format!("{status:?}"),
                reason: None,
                by: Some(requestor.clone()),
                message: break_glass
                    .then(|| "break glass: opened without waiting for an approver".to_owned()),
                code: None,
            }],
            break_glass,
        }
    }

    pub fn id(&self) -> &RequestId {
        &self.id
    }
    pub fn requestor(&self) -> &Principal {
        &self.requestor
    }
    pub fn justification(&self) -> Option<&Justification> {
        self.justification.as_ref()
    }
    pub fn start_time_utc(&self) -> Timestamp {
        self.start_time_utc
    }
    pub fn status(&self) -> RequestStatus {
        self.status
    }
    pub fn vm(&self) -> &VmId {
        &self.vm
    }
    pub fn ports(&self) -> &[PortRecord] {
        &self.ports
    }
    pub fn port(&self, number: Port) -> Option<&PortRecord> {
        self.ports().iter().find(|p| p.number == number)
    }
    pub fn approvers(&self) -> &[PrincipalPattern] {
        &self.approvers
    }
    pub fn decided_by(&self) -> Option<&Principal> {
        self.decided_by.as_ref()
    }
    pub fn history(&self) -> &[StatusChange] {
        &self.history
    }
    /// Whether the request was opened without approval, by breaking glass.
    pub fn break_glass(&self) -> bool {
        self.break_glass
    }

    /// Moves the request to `to`, decided by `by`.
    pub fn set_status(
        &mut self,
        to: RequestStatus,
        by: Option<&Principal>,
        now: Timestamp,
    ) -> Result<Transition, IllegalTransition> {
        self.decide(to, by, None, now)
    }

    /// Moves the request to `to`, decided by `by`, with `message` (why it
    /// was denied, say) in its history.
    pub fn decide(
        &mut self,
        to: RequestStatus,
        by: Option<&Principal>,
        message: Option<&str>,
        now: Timestamp,
    ) -> Result<Transition, IllegalTransition> {
        let t = self.status.transition(to)?;
        if t == Transition::Changed {
            self.status = to;
            self.decided_by = by.cloned();
            self.history.push(StatusChange {
                at: now,
                port: None,
                status: format!("{to:?}"),
                reason: (to == RequestStatus::Denied).then_some(StatusReason::Denied),
                by: by.cloned(),
                message: message.map(str::to_owned),
                code: None,
            });
        }
        Ok(t)
    }

    /// Denies a `PendingApproval` request: the request becomes `Denied`
    /// and its ports, never opened, `Revoked` with reason `Denied` and
    /// `message`. `by` is the approver who denied it, `None` when it timed
    /// out. Returns whether anything changed.
    pub fn deny(&mut self, by: Option<&Principal>, message: &str, now: Timestamp) -> bool {
        let changed = self
            .decide(RequestStatus::Denied, by, Some(message), now)
            .is_ok_and(|t| t == Transition::Changed);
        if changed {
            self.revoke_ports(|_| true, StatusReason::Denied, Some(message), now);
        }
        changed
    }

    /// The requestor withdraws a request still `PendingApproval`: it
    /// becomes `Denied` with nobody as its decider (the history says who
    /// withdrew it), so an audit never shows a requestor deciding on their
    /// own request. Returns whether anything changed.
    pub fn withdraw(&mut self, by: &Principal, now: Timestamp) -> bool {
        let changed = self
            .decide(
                RequestStatus::Denied,
                None,
                Some("withdrawn before a decision"),
                now,
            )
            .is_ok_and(|t| t == Transition::Changed);
        if let Some(last) = self.history.last_mut().filter(|_| changed) {
            last.by = Some(by.clone());
        }
        changed
    }

    /// When the request is still `PendingApproval` and has waited
    /// `timeout` or longer at `now`: the time it ran out.
    pub fn approval_deadline_passed(
        &self,
        timeout: jiff::SignedDuration,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let deadline = self.start_time_utc.checked_add(timeout).ok()?;
        (self.status == RequestStatus::PendingApproval && now >= deadline).then_some(deadline)
    }

    /// Denies the request if it waited for an approver for `timeout` or
    /// longer. Returns whether it did.
    pub fn time_out(&mut self, timeout: jiff::SignedDuration, now: Timestamp) -> bool {
        if self.approval_deadline_passed(timeout, now).is_none() {
            return false;
        }
        let message = format!(
            "no approver decided within {}; ask again",
            crate::domain::duration::iso(timeout)
        );
        self.deny(None, &message, now)
    }

    /// Moves one port to `to` for `reason`. A port the record does not hold
    /// is an illegal transition.
    pub fn set_port(
        &mut self,
        number: Port,
        to: PortStatus,
        reason: StatusReason,
        message: Option<String>,
        now: Timestamp,
    ) -> Result<Transition, IllegalTransition> {
        let port = self
            .ports
            .iter_mut()
            .find(|p| p.number == number)
            .ok_or_else(|| IllegalTransition {
                from: format!("missing port {number}"),
                to: format!("{to:?}"),
            })?;
        let t = port.status.transition(to)?;
        if t == Transition::Changed {
            port.status = to;
            port.status_reason = reason;
            port.message.clone_from(&message);
            port.error_code = None;
            self.history.push(StatusChange {
                at: now,
                port: Some(number),
                status: format!("{to:?}"),
                reason: Some(reason),
                by: None,
                message,
                code: None,
            });
        }
        Ok(t)
    }

    /// Marks one port `Failed` for `reason`, with the cloud's error `code`
    /// (when it gave one) kept beside the message, in the port and in its
    /// history entry.
    pub fn fail_port(
        &mut self,
        number: Port,
        reason: StatusReason,
        code: Option<&str>,
        message: String,
        now: Timestamp,
    ) -> Result<Transition, IllegalTransition> {
        let t = self.set_port(number, PortStatus::Failed, reason, Some(message), now)?;
        if t == Transition::Changed {
            let code = code.map(str::to_owned);
            if let Some(port) = self.ports.iter_mut().find(|p| p.number == number) {
                port.error_code.clone_from(&code);
            }
            if let Some(last) = self.history.last_mut() {
                last.code = code;
            }
        }
        Ok(t)
    }

    /// Marks every port still `Initiating` (accepted, never opened) as
    /// `Failed` for `reason`. Returns whether anything changed.
    pub fn fail_pending_ports(
        &mut self,
        reason: StatusReason,
        message: &str,
        now: Timestamp,
    ) -> bool {
        self.move_ports(
            |p| p.status == PortStatus::Initiating,
            PortStatus::Failed,
            reason,
            Some(message),
            now,
        )
    }

    /// Marks every port that is not final (`Initiating` or `Initiated`) and
    /// that `which` selects as `Revoked` for `reason`. Returns whether
    /// anything changed.
    pub fn revoke_ports(
        &mut self,
        which: impl Fn(Port) -> bool,
        reason: StatusReason,
        message: Option<&str>,
        now: Timestamp,
    ) -> bool {
        self.move_ports(
            |p| !p.status.is_final() && which(p.number),
            PortStatus::Revoked,
            reason,
            message,
            now,
        )
    }

    fn move_ports(
        &mut self,
        select: impl Fn(&PortRecord) -> bool,
        to: PortStatus,
        reason: StatusReason,
        message: Option<&str>,
        now: Timestamp,
    ) -> bool {
        let numbers: Vec<Port> = self
            .ports
            .iter()
            .filter(|p| select(p))
            .map(|p| p.number)
            .collect();
        let mut changed = false;
        for n in numbers {
            changed |= self
                .set_port(n, to, reason, message.map(str::to_owned), now)
                .is_ok_and(|t| t == Transition::Changed);
        }
        changed
    }

    /// Updates the end time of a port still `Initiating`: an approval
    /// re-evaluates the request and the window starts then.
    pub fn reschedule(&mut self, grants: &[Grant]) {
        for g in grants {
            if let Some(p) = self
                .ports
                .iter_mut()
                .find(|p| p.number == g.port() && p.status == PortStatus::Initiating)
            {
                p.end_time_utc = g.end();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::{Policy, PolicyDocument};
    use crate::domain::request::InitiateBody;
    use crate::domain::{Decision, evaluate};
    use serde_json::json;

    const VM: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";

    fn record(approvers: &[&str]) -> RequestRecord {
        let vm = VmId::parse(VM).unwrap();
        let policy = Policy::parse(
            vm,
            &PolicyDocument::from_value(json!({"ports": [22, 3389], "approvers": approvers}))
                .unwrap(),
        )
        .unwrap();
        let body: InitiateBody = serde_json::from_value(json!({"virtualMachines": [{"id": VM,
            "ports": [{"number": 22, "duration": "PT1H", "allowedSourceAddressPrefix": "198.51.100.7"},
                      {"number": 3389, "duration": "PT1H", "allowedSourceAddressPrefix": "198.51.100.7"}]}],
            "justification": "deploy"})).unwrap();
        let req = AccessRequest::parse(RequestId::parse("r1").unwrap(), &body).unwrap();
        let alice = Principal::parse("local:alice").unwrap();
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        match evaluate(Some(&policy), &req, &alice, None, now) {
            Decision::Approved { grants } => {
                RequestRecord::accepted(&req, &alice, &grants, &[], now)
            }
            Decision::PendingApproval { grants, approvers } => {
                RequestRecord::accepted(&req, &alice, &grants, &approvers, now)
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn serialises_in_azure_shape() {
        let r = record(&[]);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "Approved");
        assert_eq!(v["requestor"], "local:alice");
        assert_eq!(v["startTimeUtc"], "2026-11-23T12:00:00Z");
        let port = &v["virtualMachines"][0]["ports"][0];
        assert_eq!(port["number"], 22);
        assert_eq!(port["status"], "Initiating");
        assert_eq!(port["statusReason"], "UserRequested");
        assert_eq!(port["endTimeUtc"], "2026-11-23T13:00:00Z");
        assert_eq!(port["allowedSourceAddressPrefix"], "198.51.100.7/32");
        let back: RequestRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn port_lifecycle_with_history_and_repeats_ignored() {
        let mut r = record(&[]);
        let p22 = Port::parse(22).unwrap();
        let t0: Timestamp = "2026-11-23T12:00:05Z".parse().unwrap();
        assert_eq!(
            r.set_port(
                p22,
                PortStatus::Initiated,
                StatusReason::UserRequested,
                None,
                t0
            ),
            Ok(Transition::Changed)
        );
        // A redelivered grant message changes nothing.
        assert_eq!(
            r.set_port(
                p22,
                PortStatus::Initiated,
                StatusReason::UserRequested,
                None,
                t0
            ),
            Ok(Transition::Unchanged)
        );
        let t1: Timestamp = "2026-11-23T13:00:20Z".parse().unwrap();
        assert_eq!(
            r.set_port(p22, PortStatus::Revoked, StatusReason::Expired, None, t1),
            Ok(Transition::Changed)
        );
        // A late grant message cannot reopen it.
        assert!(
            r.set_port(
                p22,
                PortStatus::Initiated,
                StatusReason::UserRequested,
                None,
                t1
            )
            .is_err()
        );
        assert_eq!(r.port(p22).unwrap().status_reason, StatusReason::Expired);
        assert_eq!(r.history().len(), 3);
        assert!(
            r.set_port(
                Port::parse(80).unwrap(),
                PortStatus::Initiated,
                StatusReason::UserRequested,
                None,
                t1
            )
            .is_err()
        );
    }

    #[test]
    fn bulk_moves_touch_only_what_they_may() {
        let mut r = record(&[]);
        let (p22, p3389) = (Port::parse(22).unwrap(), Port::parse(3389).unwrap());
        let now: Timestamp = "2026-11-23T12:00:05Z".parse().unwrap();
        r.set_port(
            p22,
            PortStatus::Initiated,
            StatusReason::UserRequested,
            None,
            now,
        )
        .unwrap();
        // Only the port never opened fails.
        assert!(r.fail_pending_ports(StatusReason::Error, "queue down", now));
        assert_eq!(r.port(p3389).unwrap().status, PortStatus::Failed);
        assert_eq!(
            r.port(p3389).unwrap().message.as_deref(),
            Some("queue down")
        );
        assert_eq!(r.port(p22).unwrap().status, PortStatus::Initiated);
        assert!(!r.fail_pending_ports(StatusReason::Error, "again", now));
        // Revoking leaves the failed port failed.
        assert!(!r.revoke_ports(|p| p == p3389, StatusReason::Expired, None, now));
        assert!(r.revoke_ports(|_| true, StatusReason::Expired, None, now));
        assert_eq!(r.port(p22).unwrap().status_reason, StatusReason::Expired);
        assert_eq!(r.port(p3389).unwrap().status, PortStatus::Failed);
        assert!(!r.revoke_ports(|_| true, StatusReason::UserRequested, None, now));
    }

    #[test]
    fn a_record_names_exactly_one_vm() {
        let mut v = serde_json::to_value(record(&[])).unwrap();
        v["virtualMachines"] = serde_json::json!([]);
        assert!(serde_json::from_value::<RequestRecord>(v).is_err());
    }

    #[test]
    fn pending_then_decided() {
        let mut r = record(&["local:bob"]);
        assert_eq!(r.status(), RequestStatus::PendingApproval);
        assert_eq!(r.approvers().len(), 1);
        let bob = Principal::parse("local:bob").unwrap();
        let now: Timestamp = "2026-11-23T12:10:00Z".parse().unwrap();
        assert_eq!(
            r.set_status(RequestStatus::Approved, Some(&bob), now),
            Ok(Transition::Changed)
        );
        assert_eq!(r.decided_by(), Some(&bob));
        assert!(
            r.set_status(RequestStatus::Denied, Some(&bob), now)
                .is_err()
        );
    }

    #[test]
    fn a_break_glass_record_is_approved_at_once_and_marked() {
        let vm = VmId::parse(VM).unwrap();
        let policy = Policy::parse(
            vm,
            &PolicyDocument::from_value(json!({"ports": [22], "approvers": ["local:bob"],
                "breakGlass": {"principals": ["local:alice"], "maxRequestAccessDuration": "PT30M"}}))
            .unwrap(),
        )
        .unwrap();
        let body: InitiateBody = serde_json::from_value(json!({"virtualMachines": [{"id": VM,
            "ports": [{"number": 22, "allowedSourceAddressPrefix": "198.51.100.7"}]}],
            "justification": "prod is down", "breakGlass": true}))
        .unwrap();
        let req = AccessRequest::parse(RequestId::parse("r-bg").unwrap(), &body).unwrap();
        let alice = Principal::parse("local:alice").unwrap();
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let Decision::Approved { grants } = evaluate(Some(&policy), &req, &alice, None, now) else {
            panic!()
        };
        let r = RequestRecord::accepted(&req, &alice, &grants, policy.approvers(), now);
        assert_eq!(r.status(), RequestStatus::Approved);
        assert!(r.break_glass());
        assert_eq!(r.approvers(), policy.approvers());
        assert_eq!(r.decided_by(), None);
        let [first] = r.history() else { panic!() };
        assert_eq!(first.status, "Approved");
        assert_eq!(first.by.as_ref(), Some(&alice));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["breakGlass"], true);
        assert_eq!(v["approvers"], json!(["local:bob"]));
        let back: RequestRecord = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, r);
        // Records from before break-glass have no field and are not marked;
        // ordinary records leave it out.
        let mut old = v;
        old.as_object_mut().unwrap().remove("breakGlass");
        assert!(
            !serde_json::from_value::<RequestRecord>(old)
                .unwrap()
                .break_glass()
        );
        let plain = serde_json::to_value(record(&["local:bob"])).unwrap();
        assert!(plain.get("breakGlass").is_none(), "{plain}");
    }
}

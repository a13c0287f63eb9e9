//! The request status model, in Defender for Cloud's vocabulary, and the
//! transitions it allows.
//!
//! A request is `PendingApproval`, then `Approved` or `Denied`. Each of its
//! ports is `Initiating` (accepted, rule not yet open), then `Initiated`
//! (rule open) or `Failed` (the rule could not be opened), and an open port
//! ends `Revoked` with a reason. Redelivered messages and retried writes may
//! repeat a transition already made; that is reported as
//! [`Transition::Unchanged`] and must change nothing. Anything else, such as
//! moving a revoked port back to initiated, is refused.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestStatus {
    PendingApproval,
    Approved,
    Denied,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PortStatus {
    Initiating,
    Initiated,
    Revoked,
    Failed,
}

/// Why a port is in its status. The first three are Defender's; the rest
/// say why a port never opened or was closed for a reason of jitvm's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StatusReason {
    /// The end time passed and the sweep removed the rule.
    Expired,
    /// The requestor or an admin revoked the grant early; also the reason
    /// of a port that is being opened on the requestor's behalf.
    UserRequested,
    /// A newer request for the same VM, port and source replaced this one.
    NewerRequestInitiated,
    /// An approver denied the request, or it waited too long for approval.
    Denied,
    /// The policy no longer allows the request, or JIT was disabled on the VM.
    PolicyChanged,
    /// The cloud refused to open the rule; the record's message says why.
    Error,
    /// The rule was no longer on the firewall before its end time: removed
    /// outside jitvm, or its closing was never recorded. The sweep found
    /// it so.
    RuleRemoved,
}

impl RequestStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, RequestStatus::PendingApproval)
    }

    /// Checks a move from `self` to `to`.
    pub fn transition(self, to: RequestStatus) -> Result<Transition, IllegalTransition> {
        use RequestStatus::*;
        match (self, to) {
            (a, b) if a == b => Ok(Transition::Unchanged),
            (PendingApproval, Approved | Denied) => Ok(Transition::Changed),
            _ => Err(IllegalTransition {
                from: format!("{self:?}"),
                to: format!("{to:?}"),
            }),
        }
    }
}

impl PortStatus {
    pub fn is_final(self) -> bool {
        matches!(self, PortStatus::Revoked | PortStatus::Failed)
    }

    /// Checks a move from `self` to `to`. A port still `Initiating` may be
    /// revoked (revoked before the rule opened, or denied) as well as
    /// opened or failed; an open port may only be revoked.
    pub fn transition(self, to: PortStatus) -> Result<Transition, IllegalTransition> {
        use PortStatus::*;
        match (self, to) {
            (a, b) if a == b => Ok(Transition::Unchanged),
            (Initiating, Initiated | Failed | Revoked) | (Initiated, Revoked) => {
                Ok(Transition::Changed)
            }
            _ => Err(IllegalTransition {
                from: format!("{self:?}"),
                to: format!("{to:?}"),
            }),
        }
    }
}

/// The outcome of an allowed transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The status moves on.
    Changed,
    /// The status is already the target: a repeat, to be ignored.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {from} request or port cannot become {to}")]
pub struct IllegalTransition {
    pub from: String,
    pub to: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use PortStatus::*;
    use RequestStatus::*;

    #[test]
    fn port_transitions() {
        let all = [Initiating, Initiated, Revoked, Failed];
        let allowed = [
            (Initiating, Initiated),
            (Initiating, Failed),
            (Initiating, Revoked),
            (Initiated, Revoked),
        ];
        for from in all {
            for to in all {
                let got = from.transition(to);
                if from == to {
                    assert_eq!(got, Ok(Transition::Unchanged));
                } else if allowed.contains(&(from, to)) {
                    assert_eq!(got, Ok(Transition::Changed), "{from:?} -> {to:?}");
                } else {
                    assert!(got.is_err(), "{from:?} -> {to:?} must be refused");
                }
            }
        }
        assert_eq!(
            Revoked.transition(Initiated).unwrap_err().to_string(),
            "a Revoked request or port cannot become Initiated"
        );
        assert!(Revoked.is_final() && Failed.is_final() && !Initiated.is_final());
    }

    #[test]
    fn request_transitions() {
        assert_eq!(
            PendingApproval.transition(Approved),
            Ok(Transition::Changed)
        );
        assert_eq!(PendingApproval.transition(Denied), Ok(Transition::Changed));
        assert_eq!(Approved.transition(Approved), Ok(Transition::Unchanged));
        assert!(Approved.transition(Denied).is_err());
        assert!(Denied.transition(Approved).is_err());
        assert!(Approved.transition(PendingApproval).is_err());
        assert!(Approved.is_final() && !PendingApproval.is_final());
    }

    #[test]
    fn azure_spellings() {
        assert_eq!(
            serde_json::to_string(&PendingApproval).unwrap(),
            "\"PendingApproval\""
        );
        assert_eq!(
            serde_json::to_string(&StatusReason::NewerRequestInitiated).unwrap(),
            "\"NewerRequestInitiated\""
        );
        let s: StatusReason = serde_json::from_str("\"UserRequested\"").unwrap();
        assert_eq!(s, StatusReason::UserRequested);
    }
}

//! The jitvm domain model. Every type that holds input from outside has a
//! `parse` constructor and a private field, so a value past the edge is
//! already valid.

pub mod audit;
pub mod duration;
pub mod evaluate;
pub mod policy;
pub mod port;
pub mod prefix;
pub mod principal;
pub mod record;
pub mod request;
pub mod rule;
pub mod status;
pub mod text;
pub mod vm;

pub use audit::{AUDIT_COLUMNS, AuditRow, audit_rows, changes_from};
pub use duration::{AccessDuration, DurationError, MaxAccessDuration};
pub use evaluate::{Decision, Grant, Refusal, RefusalReason, describe, evaluate};
pub use policy::{
    BreakGlass, HeldGrant, NotifyTargets, Policy, PolicyDocument, PolicyError, PortRule,
};
pub use port::{Port, PortError, Protocol};
pub use prefix::{PrefixError, SourcePrefix};
pub use principal::{Principal, PrincipalError, PrincipalPattern, SessionTrust, may_decide};
pub use record::{PortRecord, RequestRecord, StatusChange, earliest_live_start};
pub use request::{
    AccessRequest, InitiateBody, InitiatePort, InitiateVm, PortAsk, RequestError, RequestId,
    RequestMessage, Window,
};
pub use status::{IllegalTransition, PortStatus, RequestStatus, StatusReason, Transition};
pub use text::{Justification, TextError};
pub use vm::{AwsInstance, AzureVm, Cloud, VmId, VmIdError};

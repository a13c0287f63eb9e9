//! The expire function: closes each grant when its end time comes, and
//! sweeps every minute as the backstop.
//!
//! - **Timers** ([`handle_timers`]): each rule jitvm opens sets a timer on
//!   the expiry queue for its end time; when it goes off, that rule closes
//!   (see [`jitvm_core::expiry`]).
//! - **The sweep** ([`sweep`]): every minute, removes every jitvm rule whose
//!   end time has passed, on every jitvm firewall, and marks the requests
//!   `Revoked`/`Expired`. It works from the rules' own tags (or names), not
//!   from the database, so a lost timer, write or message, or a restarted
//!   host, never leaves a rule open. A rule on a jitvm firewall that is not
//!   a valid grant (added by hand, tags missing or edited) is drift: it is
//!   removed too, with an audit event. It also denies the requests that
//!   waited longer than the approval timeout for an approver. And it takes
//!   each jitvm firewall off any interface that is not its VM's
//!   ([`jitvm_core::ports::Firewall::keep_exclusive`]).
//!
//! Both close rules the same way ([`close`]).

mod close;
mod exclusive;
mod reconcile;
mod sweep;
mod timer;

use std::time::Duration;

use jiff::SignedDuration;
use jitvm_core::ports::{AdapterError, ExpiryTimers, Firewall, RequestStore};

pub use close::{Closed, close};
pub use reconcile::{MAX_LIVE_RECORDS, SETTLE, STUCK_AFTER};
pub use sweep::{MAX_TIMEOUTS_PER_SWEEP, SweepSummary, sweep};
pub use timer::{Clock, fire, handle_timers};

/// How long the sweep of one scope (a region, a subscription) may take by
/// default; scopes are swept at once, so this bounds the rules' part of a
/// sweep (denying timed-out approvals runs beside it, on DynamoDB).
pub const SCOPE_DEADLINE: Duration = Duration::from_secs(45);

/// What the expire function needs, and only that.
pub struct ExpireApp<'a> {
    pub firewall: &'a dyn Firewall,
    pub requests: &'a dyn RequestStore,
    /// Where timers are set again (a hop, a retry).
    pub timers: &'a dyn ExpiryTimers,
    /// How long a request may wait for an approver.
    pub approval_timeout: SignedDuration,
    /// How long the sweep of one scope may take.
    pub scope_deadline: Duration,
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

//! Each jitvm firewall stays its VM's alone: the sweep takes it off any
//! other interface that carries it (a launch template or "launch more like
//! this" copies an instance's groups), so a grant never opens a VM it was
//! not asked for. Exclusivity is also checked when a rule opens; this
//! closes the gap until then, and for grants already open.

use jitvm_core::ports::{AdapterError, Scope};
use tokio::time::Instant;

use crate::ExpireApp;

/// Keeps the firewalls of `scope` exclusive, within `deadline`; returns
/// how many firewalls it took off an interface. A failure is logged here
/// and returned, for the sweep to record against the scope.
pub(crate) async fn keep_exclusive(
    app: &ExpireApp<'_>,
    scope: &Scope,
    deadline: Instant,
) -> Result<usize, AdapterError> {
    let result = match tokio::time::timeout_at(deadline, app.firewall.keep_exclusive(scope)).await {
        Ok(result) => result,
        Err(_) => Err(AdapterError::timed_out(
            format_args!("keeping the jitvm firewalls of {scope} exclusive did not finish"),
            app.scope_deadline,
        )),
    };
    match result {
        Ok(detached) => Ok(detached.len()),
        Err(e) => {
            tracing::error!(scope = %scope, error = %e, "could not keep jitvm firewalls exclusive; the next sweep tries again");
            Err(e)
        }
    }
}

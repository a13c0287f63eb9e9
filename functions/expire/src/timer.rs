//! Each grant's own timer going off (see [`jitvm_core::expiry`]): a batch
//! of timers from the expiry queue, each handled at once and on its own, so
//! one cloud being slow never delays a timer of another.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use jiff::Timestamp;
use jitvm_core::expiry::{Closing, Due, Timer};
use jitvm_core::ports::{AdapterError, FoundRule};
use jitvm_core::rule::RuleMeta;

use crate::ExpireApp;
use crate::close::{Closed, close};

/// How long one timer may take to close its rules before it is set again
/// to try later: a batch of timers, each within this, stays inside the
/// expire function's timeout.
pub const TIMER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// A clock the handler reads when a timer is due (the local host's can be
/// set by tests).
pub type Clock<'a> = &'a (dyn Fn() -> Timestamp + Send + Sync);

/// Handles a batch of timers. A timer that comes back early is set again
/// for what is left; one that is due closes its rules, and if that fails it
/// is set again to try later. Only a timer that cannot even be set again is
/// reported failed, for SQS to deliver again.
pub async fn handle_timers(
    app: &ExpireApp<'_>,
    event: SqsEvent,
    clock: Clock<'_>,
) -> SqsBatchResponse {
    let outcomes =
        futures_util::future::join_all(event.records.iter().map(|m| on_timer(app, m, clock))).await;
    jitvm_core::lambda::batch_response(
        &event.records,
        outcomes,
        "a timer could not be handled or set again",
    )
}

async fn on_timer(
    app: &ExpireApp<'_>,
    message: &SqsMessage,
    clock: Clock<'_>,
) -> Result<(), AdapterError> {
    let body = message.body.as_deref().unwrap_or("");
    let timer: Timer = match serde_json::from_str(body) {
        Ok(timer) => timer,
        Err(e) => {
            // Retrying cannot make it readable; the sweep covers its rule.
            tracing::error!(error = %e, body = %body.chars().take(200).collect::<String>(), "not an expiry timer; dropped");
            return Ok(());
        }
    };
    let due = timer.due(clock());
    tracing::debug!(request_id = %timer.request_id, close_at = %timer.close_at, ?due, "timer back");
    match due {
        Due::Later(delay) => app.timers.arm(&timer, delay).await,
        Due::CloseIn(wait) => {
            tokio::time::sleep(wait).await;
            let fired = tokio::time::timeout(TIMER_DEADLINE, fire(app, &timer, clock()))
                .await
                .unwrap_or_else(|_| {
                    Err(AdapterError::timed_out(
                        "closing did not finish",
                        TIMER_DEADLINE,
                    ))
                });
            match fired {
                Ok(_) => Ok(()),
                Err(e) => try_later(app, &timer, &e).await,
            }
        }
    }
}

/// Closes what `timer` is for, at `now`: its rules that are still there,
/// still say its request and (for an expiry) an end time that has passed.
pub async fn fire(
    app: &ExpireApp<'_>,
    timer: &Timer,
    now: Timestamp,
) -> Result<Closed, AdapterError> {
    let found = match timer.closing {
        Closing::Expired => app.firewall.rules_at(&timer.rules).await?,
        Closing::Revoked => app.firewall.rules_of(&timer.vm).await?,
    };
    let due: Vec<(FoundRule, RuleMeta)> = found
        .into_iter()
        .filter_map(|mut rule| {
            let meta = rule.decoded.clone().ok()?;
            let is_due = meta.request_id == timer.request_id
                && (timer.closing == Closing::Revoked || meta.expires <= now);
            rule.vm.get_or_insert_with(|| timer.vm.clone());
            is_due.then_some((rule, meta))
        })
        .collect();
    if due.is_empty() {
        tracing::debug!(request_id = %timer.request_id, "timer went off with nothing left to close");
        return Ok(Closed::default());
    }
    close(app, &due, &[], timer.closing, now).await
}

/// Sets a timer whose closing failed to try again later, or leaves it to
/// the sweep once it has been tried often enough.
async fn try_later(
    app: &ExpireApp<'_>,
    timer: &Timer,
    e: &AdapterError,
) -> Result<(), AdapterError> {
    match timer.retried() {
        Some((next, delay)) => {
            tracing::warn!(request_id = %timer.request_id, attempt = next.attempt, retry_in_secs = delay.as_secs(), error = %e, "closing failed; trying again");
            app.timers.arm(&next, delay).await
        }
        None => {
            tracing::error!(request_id = %timer.request_id, attempts = timer.attempt, error = %e, "closing kept failing; the sweep closes the rules at their end time");
            Ok(())
        }
    }
}

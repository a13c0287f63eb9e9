//! The notify function: tells people, and other systems, what happened.
//!
//! - **Changes** ([`on_changes`]): every write to the requests table, from
//!   its stream. Each audit event goes on the EventBridge bus; each
//!   [`Notice`] (a request waits for approval, was decided, opened, closed
//!   early, broke glass) is posted to its channels; an opening sets a
//!   reminder for five minutes before the end.
//! - **Jobs** ([`on_jobs`]): the notify queue. A delivery or a publish that
//!   failed for now is tried again with backoff; a reminder that comes
//!   back tells the requestor that access is about to end.
//!
//! Nothing here changes a request: it runs after the write, on its own,
//! so a dead webhook or a slow bus never delays nor undoes a grant. A
//! failure is logged, counted ([`Tally`]) and tried again, never raised.

mod deliver;
mod stream;
mod tally;

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use jiff::Timestamp;
use jitvm_core::notify::{
    AuditEvent, Destinations, Job, Notice, RecordChange, audit_events, notices, retry_delay,
};
use jitvm_core::ports::{
    AdapterError, EventSink, NoticeChannels, NotifyJobs, PolicyStore, RequestStore,
};

pub use deliver::{announce, deliver};
pub use stream::{changes_of, is_stream};
pub use tally::{Outcome, Tally};

/// What the notify function needs, and only that.
pub struct NotifyApp<'a> {
    pub requests: &'a dyn RequestStore,
    pub policies: &'a dyn PolicyStore,
    pub events: &'a dyn EventSink,
    pub jobs: &'a dyn NotifyJobs,
    pub channels: &'a dyn NoticeChannels,
    /// The deployment's channels, for policies that name none.
    pub defaults: Destinations<'a>,
    /// The wait before the first retry; each retry waits twice as long.
    pub retry_after: Duration,
    /// How many tries a delivery or a publish gets.
    pub attempts: u32,
    pub tally: &'a Tally,
}

/// Handles the writes of one stream batch, at `now`. An error only when a
/// failure could not even be queued to try again: the stream then
/// delivers the batch again.
pub async fn on_changes(
    app: &NotifyApp<'_>,
    changes: &[RecordChange],
    now: Timestamp,
) -> Result<(), AdapterError> {
    let events: Vec<AuditEvent> = changes
        .iter()
        .filter_map(|c| {
            c.after
                .as_ref()
                .map(|after| audit_events(c.before.as_ref(), after))
        })
        .flatten()
        .collect();
    let notices: Vec<Notice> = changes
        .iter()
        .filter_map(|c| {
            c.after
                .as_ref()
                .map(|after| notices(c.before.as_ref(), after))
        })
        .flatten()
        .collect();
    let told = futures_util::future::join_all(notices.iter().map(|n| announce(app, n, now)));
    let (published, told) = futures_util::future::join(publish(app, events, 0), told).await;
    told.into_iter().collect::<Result<Vec<()>, _>>()?;
    published
}

/// Puts `events` on the bus; when that fails, queues them to try again
/// (try `attempt + 1`), until they have had their tries.
async fn publish(
    app: &NotifyApp<'_>,
    events: Vec<AuditEvent>,
    attempt: u32,
) -> Result<(), AdapterError> {
    if events.is_empty() {
        return Ok(());
    }
    let Err(e) = app.events.publish(&events).await else {
        app.tally.count("eventbridge", Outcome::Delivered);
        return Ok(());
    };
    let next = attempt + 1;
    if next >= app.attempts {
        app.tally.count("eventbridge", Outcome::GaveUp);
        tracing::error!(error = %e, events = events.len(), attempts = next, "events could not be put on the bus; given up");
        return Ok(());
    }
    app.tally.count("eventbridge", Outcome::Retried);
    tracing::warn!(error = %e, events = events.len(), attempt = next, "events could not be put on the bus; trying again");
    let delay = retry_delay(app.retry_after, next, None);
    let job = Job::Publish {
        events,
        attempt: next,
    };
    app.jobs.put(&job, delay).await
}

/// Handles a batch from the notify queue at `now`, each job at once and on
/// its own. Only a job that could not be handled nor queued again is
/// reported failed, for SQS to deliver again.
pub async fn on_jobs(app: &NotifyApp<'_>, event: SqsEvent, now: Timestamp) -> SqsBatchResponse {
    let outcomes =
        futures_util::future::join_all(event.records.iter().map(|m| on_job(app, m, now))).await;
    jitvm_core::lambda::batch_response(&event.records, outcomes, "a notify job failed")
}

async fn on_job(
    app: &NotifyApp<'_>,
    message: &SqsMessage,
    now: Timestamp,
) -> Result<(), AdapterError> {
    let body = message.body.as_deref().unwrap_or("");
    let job: Job = match serde_json::from_str(body) {
        Ok(job) => job,
        Err(e) => {
            tracing::error!(error = %e, body = %body.chars().take(200).collect::<String>(), "not a notify job; dropped");
            return Ok(());
        }
    };
    match job {
        Job::Deliver {
            target,
            notice,
            attempt,
        } => deliver(app, &target, &notice, attempt).await,
        Job::Publish { events, attempt } => publish(app, events, attempt).await,
        Job::Remind { request_id, at } => deliver::remind(app, &request_id, at, now).await,
    }
}

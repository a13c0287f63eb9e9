//! Posting one notice to its channels, trying again later when a channel
//! fails for now, and the reminder before access ends.

use jiff::Timestamp;
use jitvm_core::notify::{
    DeliveryError, Destinations, Job, Notice, NoticeKind, REMIND_BEFORE, Target, ending_soon,
    retry_delay, targets, wait_until,
};
use jitvm_core::ports::AdapterError;
use jitvm_core::{PortStatus, RequestId, RequestRecord};

use crate::{NotifyApp, Outcome};

/// Posts `notice` to each of its channels at once, and sets the reminder
/// an opening needs. An error only when a failure could not be queued.
pub async fn announce(
    app: &NotifyApp<'_>,
    notice: &Notice,
    now: Timestamp,
) -> Result<(), AdapterError> {
    let told = tell(app, notice).await;
    if notice.kind == NoticeKind::Opened {
        remind_later(
            app,
            &notice.request_id,
            notice.ports.iter().map(|p| p.end_time_utc),
            now,
        )
        .await?;
    }
    told
}

/// Posts `notice` to each channel of its VM's policy (each falling back to
/// the deployment's), all at once. When the policy cannot be read, the
/// deployment's: a notice is never lost for want of a policy (JIT may have
/// been disabled meanwhile).
async fn tell(app: &NotifyApp<'_>, notice: &Notice) -> Result<(), AdapterError> {
    let policy = app
        .policies
        .get_policy(&notice.vm)
        .await
        .inspect_err(|e| tracing::warn!(vm = %notice.vm, error = %e, "the policy could not be read; using the deployment's channels"))
        .ok()
        .flatten();
    let own = policy
        .as_ref()
        .map(|e| Destinations::of(e.policy.notify()))
        .unwrap_or_default();
    let targets = targets(notice, own.or(app.defaults), app.channels.slack_on());
    if targets.is_empty() {
        tracing::debug!(request_id = %notice.request_id, kind = ?notice.kind, "no channel to tell");
    }
    let posts = targets.iter().map(|t| deliver(app, t, notice, 0));
    futures_util::future::join_all(posts)
        .await
        .into_iter()
        .collect()
}

/// Posts `notice` to `target` (try `attempt + 1`). A failure for now is
/// queued to try again after a backoff, until the tries run out; a
/// refusal for good is logged and counted. Never an error for the
/// channel's sake: only when the retry could not be queued.
pub async fn deliver(
    app: &NotifyApp<'_>,
    target: &Target,
    notice: &Notice,
    attempt: u32,
) -> Result<(), AdapterError> {
    let channel = channel_name(target);
    let request_id = notice.request_id.as_str();
    let kind = notice.kind;
    let (why, after) = match app.channels.send(target, notice).await {
        Ok(()) => {
            app.tally.count(channel, Outcome::Delivered);
            tracing::info!(request_id, ?kind, channel, "notice delivered");
            return Ok(());
        }
        Err(DeliveryError::Permanent { why }) => {
            app.tally.count(channel, Outcome::Failed);
            tracing::error!(request_id, ?kind, channel, error = %why, "notice refused by the channel; not tried again");
            return Ok(());
        }
        Err(DeliveryError::Retry { why, after }) => (why, after),
    };
    let next = attempt + 1;
    if next >= app.attempts {
        app.tally.count(channel, Outcome::GaveUp);
        tracing::error!(request_id, ?kind, channel, attempts = next, error = %why, "notice could not be delivered; given up");
        return Ok(());
    }
    let delay = retry_delay(app.retry_after, next, after);
    app.tally.count(channel, Outcome::Retried);
    tracing::warn!(request_id, ?kind, channel, attempt = next, retry_in_secs = delay.as_secs(), error = %why, "notice not delivered; trying again");
    let job = Job::Deliver {
        target: target.clone(),
        notice: Box::new(notice.clone()),
        attempt: next,
    };
    app.jobs.put(&job, delay).await
}

/// A reminder came back: when it is due, tells the requestor which ports
/// end within five minutes and sets the next reminder for those that end
/// later; else waits again.
pub async fn remind(
    app: &NotifyApp<'_>,
    request_id: &RequestId,
    at: Timestamp,
    now: Timestamp,
) -> Result<(), AdapterError> {
    let wait = wait_until(at, now);
    if !wait.is_zero() {
        let job = Job::Remind {
            request_id: request_id.clone(),
            at,
        };
        return app.jobs.put(&job, wait).await;
    }
    let Some(record) = app.requests.get_request(request_id).await? else {
        return Ok(());
    };
    let record = record.value;
    if let Some(notice) = ending_soon(&record, now) {
        tell(app, &notice).await?;
    }
    remind_later(app, request_id, open_ends(&record), now).await
}

/// Sets the reminder for the earliest of `ends` that is more than five
/// minutes away; an access that is shorter than that is not reminded of.
async fn remind_later(
    app: &NotifyApp<'_>,
    request_id: &RequestId,
    ends: impl Iterator<Item = Timestamp>,
    now: Timestamp,
) -> Result<(), AdapterError> {
    let Some(at) = ends
        .filter_map(|end| end.checked_sub(REMIND_BEFORE).ok())
        .filter(|at| *at > now)
        .min()
    else {
        return Ok(());
    };
    let job = Job::Remind {
        request_id: request_id.clone(),
        at,
    };
    app.jobs.put(&job, wait_until(at, now)).await
}

/// The end times of the open ports of `record` (those already reminded
/// of are too close for [`remind_later`] to set another).
fn open_ends(record: &RequestRecord) -> impl Iterator<Item = Timestamp> + '_ {
    record
        .ports()
        .iter()
        .filter(|p| p.status == PortStatus::Initiated)
        .map(|p| p.end_time_utc)
}

fn channel_name(target: &Target) -> &'static str {
    match target {
        Target::Slack { .. } => "slack",
        Target::Teams { .. } => "teams",
    }
}

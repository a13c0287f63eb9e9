//! The notify queue's messages: a delivery to try again, events to put on
//! the bus again, and a reminder that access is about to end. All wait on a
//! standard SQS queue with a per-message delay, hopping when they must wait longer than SQS allows,
//! as the expiry timers do.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{AuditEvent, Notice, Target};
use crate::domain::RequestId;
use crate::expiry::MAX_HOP;

/// One message on the notify queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "camelCase")]
pub enum Job {
    /// Post `notice` to `target`; `attempt` tries were made already.
    #[serde(rename_all = "camelCase")]
    Deliver {
        target: Target,
        notice: Box<Notice>,
        attempt: u32,
    },
    /// Remind the requestor of `request_id`, at `at`, that access ends.
    #[serde(rename_all = "camelCase")]
    Remind {
        request_id: RequestId,
        at: Timestamp,
    },
    /// Put `events` on the bus; `attempt` tries were made already.
    #[serde(rename_all = "camelCase")]
    Publish {
        events: Vec<AuditEvent>,
        attempt: u32,
    },
}

/// How long to wait before try number `attempt + 1`, after `attempt`
/// failed: `first`, doubling each time, at least what the channel asked
/// for (`asked`), at most [`MAX_HOP`].
pub fn retry_delay(first: Duration, attempt: u32, asked: Option<Duration>) -> Duration {
    let doubled = first.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    doubled.max(asked.unwrap_or_default()).min(MAX_HOP)
}

/// How long a job due at `at` still waits at `now`, cut to one hop; zero
/// when it is due.
pub fn wait_until(at: Timestamp, now: Timestamp) -> Duration {
    let left = now.duration_until(at);
    if left.is_negative() || left.is_zero() {
        return Duration::ZERO;
    }
    Duration::try_from(left).unwrap_or(MAX_HOP).min(MAX_HOP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_honour_retry_after() {
        let first = Duration::from_secs(10);
        assert_eq!(retry_delay(first, 1, None), Duration::from_secs(10));
        assert_eq!(retry_delay(first, 2, None), Duration::from_secs(20));
        assert_eq!(retry_delay(first, 3, None), Duration::from_secs(40));
        assert_eq!(retry_delay(first, 40, None), MAX_HOP);
        assert_eq!(
            retry_delay(first, 1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn a_reminder_waits_at_most_one_hop() {
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let soon: Timestamp = "2026-12-01T12:00:30Z".parse().unwrap();
        let later: Timestamp = "2026-12-01T14:00:00Z".parse().unwrap();
        assert_eq!(wait_until(soon, now), Duration::from_secs(30));
        assert_eq!(wait_until(later, now), MAX_HOP);
        assert_eq!(wait_until(now, soon), Duration::ZERO);
    }
}

//! Each grant's own end: when a rule opens, a timer is set for its end
//! time, and when it goes off the expire function closes that rule.
//!
//! A timer is a message on the expiry queue (standard SQS) that comes back
//! after a delay. SQS delays a message 900 s at most, so a longer wait is
//! a chain of hops: each time the timer comes back early it is set again
//! for what is left. It is set to come back [`LEAD`] early and the handler
//! waits out the rest, so the rule closes at its end time, not up to a
//! second or a receive later.
//!
//! A timer names its request and the rules opened for it, and closes them
//! only if they still say that request and an end time that has passed
//! (read from the cloud when it goes off): a grant extended, replaced or
//! revoked meanwhile is never closed by an old timer, and a timer whose
//! rules are gone does nothing. The minute sweep stays as the backstop for
//! a timer that is lost.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::domain::{RequestId, StatusReason, VmId};
use crate::ports::RuleKey;

/// The longest delay SQS gives one message.
pub const MAX_HOP: Duration = Duration::from_secs(900);
/// How early a timer comes back; the handler waits out the rest.
pub const LEAD: Duration = Duration::from_secs(2);
/// How many times a timer whose closing failed is tried again before it is
/// left to the sweep (about an hour with [`retry_delay`]).
pub const MAX_ATTEMPTS: u32 = 60;

/// Why a timer closes its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Closing {
    /// The grant's end time came: close its rules whose end time passed.
    Expired,
    /// Someone revoked the grant and removing its rules failed then: close
    /// every rule of the request.
    Revoked,
}

impl Closing {
    /// The reason the closed ports' records get.
    pub fn reason(self) -> StatusReason {
        match self {
            Closing::Expired => StatusReason::Expired,
            Closing::Revoked => StatusReason::UserRequested,
        }
    }
}

/// One timer, as it travels on the expiry queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timer {
    pub request_id: RequestId,
    pub vm: VmId,
    /// The rules to read and close when it goes off; empty for
    /// [`Closing::Revoked`], which closes whatever the request has on the VM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleKey>,
    /// When the rules are due to close.
    pub close_at: Timestamp,
    pub closing: Closing,
    /// Closings tried and failed so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What to do with a timer that went off at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Too early: set it again, to come back after this delay.
    Later(Duration),
    /// Close its rules after waiting this long (zero: now).
    CloseIn(Duration),
}

impl Timer {
    /// A timer closing `rules` of `request_id` on `vm` when `close_at`
    /// (the rules' own end time) comes.
    pub fn expiry(
        request_id: RequestId,
        vm: VmId,
        rules: Vec<RuleKey>,
        close_at: Timestamp,
    ) -> Self {
        Self {
            request_id,
            vm,
            rules,
            close_at,
            closing: Closing::Expired,
            attempt: 0,
        }
    }

    /// A timer retrying the removal of a revoked request's rules on `vm`.
    pub fn revoked(request_id: RequestId, vm: VmId, now: Timestamp) -> Self {
        Self {
            request_id,
            vm,
            rules: Vec::new(),
            close_at: now,
            closing: Closing::Revoked,
            attempt: 1,
        }
    }

    /// What the timer should do when it comes back at `now`: wait out the
    /// rest when that is less than a whole second of SQS delay away.
    pub fn due(&self, now: Timestamp) -> Due {
        let delay = arm_delay(self.close_at, now);
        if delay < Duration::from_secs(1) {
            Due::CloseIn(left(self.close_at, now))
        } else {
            Due::Later(delay)
        }
    }

    /// The timer to set after a closing failed, and its delay; `None` once
    /// it has been tried [`MAX_ATTEMPTS`] times (the sweep then has it).
    pub fn retried(&self) -> Option<(Timer, Duration)> {
        if self.attempt >= MAX_ATTEMPTS {
            return None;
        }
        let next = Timer {
            attempt: self.attempt + 1,
            ..self.clone()
        };
        Some((next, retry_delay(self.attempt + 1)))
    }
}

/// The delay to set a timer with at `now` so that it comes back [`LEAD`]
/// before `close_at`, or after [`MAX_HOP`] if that is sooner.
pub fn arm_delay(close_at: Timestamp, now: Timestamp) -> Duration {
    left(close_at, now).saturating_sub(LEAD).min(MAX_HOP)
}

/// The wait before closing attempt `attempt` (the second is 1): doubling
/// from 1 s, at most a minute.
pub fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// How long from `now` until `at`; zero once it has passed.
fn left(at: Timestamp, now: Timestamp) -> Duration {
    let d: SignedDuration = at.duration_since(now);
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(close_at: Timestamp) -> Timer {
        Timer::expiry(
            RequestId::parse("req-0123456789abcdef").unwrap(),
            VmId::parse("arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0").unwrap(),
            Vec::new(),
            close_at,
        )
    }

    #[test]
    fn a_timer_comes_back_early_and_waits_out_the_rest() {
        let now: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let at = |s: i64| now + SignedDuration::from_secs(s);
        // An hour away: hops of 900 s.
        assert_eq!(timer(at(3600)).due(now), Due::Later(MAX_HOP));
        // A minute away: back 2 s early.
        assert_eq!(timer(at(60)).due(now), Due::Later(Duration::from_secs(58)));
        // Within the lead (and the second SQS rounds to): wait, then close.
        assert_eq!(timer(at(1)).due(now), Due::CloseIn(Duration::from_secs(1)));
        let soon = now + SignedDuration::from_millis(2900);
        assert_eq!(
            timer(soon).due(now),
            Due::CloseIn(Duration::from_millis(2900))
        );
        assert_eq!(timer(at(-5)).due(now), Due::CloseIn(Duration::ZERO));
        assert_eq!(arm_delay(at(-5), now), Duration::ZERO);
    }

    #[test]
    fn failed_closings_back_off_then_go_to_the_sweep() {
        let mut t = timer("2026-12-01T10:00:00Z".parse().unwrap());
        let mut waits = Vec::new();
        while let Some((next, wait)) = t.retried() {
            waits.push(wait.as_secs());
            t = next;
        }
        assert_eq!(&waits[..8], &[1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(waits.len() as u32, MAX_ATTEMPTS);
        assert_eq!(t.attempt, MAX_ATTEMPTS);
    }

    #[test]
    fn timers_travel_as_json() {
        let t = timer("2026-12-01T10:00:00Z".parse().unwrap());
        let text = serde_json::to_string(&t).unwrap();
        assert!(text.contains("\"closing\":\"expired\""), "{text}");
        assert_eq!(serde_json::from_str::<Timer>(&text).unwrap(), t);
    }
}

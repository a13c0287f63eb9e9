//! Counting what became of each delivery: kept in the process (the local
//! host and tests read it) and written as a CloudWatch embedded-metric log
//! line, so a deployment gets the metrics `jitvm/NotificationsDelivered`,
//! `…Retried`, `…Failed` and `…GaveUp` by channel without an API call.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// What became of one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Delivered,
    /// Failed for now; queued to try again.
    Retried,
    /// Refused for good by the channel.
    Failed,
    /// Failed for now on its last try.
    GaveUp,
}

impl Outcome {
    fn metric(self) -> &'static str {
        match self {
            Outcome::Delivered => "NotificationsDelivered",
            Outcome::Retried => "NotificationsRetried",
            Outcome::Failed => "NotificationsFailed",
            Outcome::GaveUp => "NotificationsGaveUp",
        }
    }
}

/// The counts by channel (`slack`, `teams`, `eventbridge`) and outcome.
#[derive(Debug, Default)]
pub struct Tally {
    counts: Mutex<BTreeMap<(&'static str, Outcome), u64>>,
    /// Whether to write embedded-metric lines (on Lambda).
    pub metrics: bool,
}

impl Tally {
    /// A tally that also writes embedded-metric lines to stdout.
    pub fn with_metrics() -> Self {
        Self {
            counts: Mutex::default(),
            metrics: true,
        }
    }

    pub fn count(&self, channel: &'static str, outcome: Outcome) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry((channel, outcome)).or_default() += 1;
        }
        if self.metrics {
            println!("{}", metric_line(channel, outcome, jiff::Timestamp::now()));
        }
    }

    /// How many tries on `channel` ended in `outcome`.
    pub fn get(&self, channel: &str, outcome: Outcome) -> u64 {
        self.counts
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|((ch, o), _)| *ch == channel && *o == outcome)
                    .map(|(_, n)| n)
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// One CloudWatch embedded-metric-format line counting `outcome`.
fn metric_line(channel: &str, outcome: Outcome, now: jiff::Timestamp) -> serde_json::Value {
    let metric = outcome.metric();
    serde_json::json!({
        "_aws": {
            "Timestamp": now.as_millisecond(),
            "CloudWatchMetrics": [{
                "Namespace": "jitvm",
                "Dimensions": [["Channel"]],
                "Metrics": [{"Name": metric, "Unit": "Count"}],
            }],
        },
        "Channel": channel,
        metric: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_channel_and_outcome() {
        let tally = Tally::default();
        tally.count("slack", Outcome::Delivered);
        tally.count("slack", Outcome::Delivered);
        tally.count("teams", Outcome::Retried);
        assert_eq!(tally.get("slack", Outcome::Delivered), 2);
        assert_eq!(tally.get("teams", Outcome::Retried), 1);
        assert_eq!(tally.get("teams", Outcome::Delivered), 0);
    }

    #[test]
    fn the_metric_line_is_embedded_metric_format() {
        let line = metric_line(
            "teams",
            Outcome::GaveUp,
            "2026-12-01T12:00:00Z".parse().unwrap(),
        );
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "jitvm");
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "NotificationsGaveUp"
        );
        assert_eq!(line["Channel"], "teams");
        assert_eq!(line["NotificationsGaveUp"], 1);
        assert_eq!(line["_aws"]["Timestamp"], 1_796_126_400_000_i64);
    }
}

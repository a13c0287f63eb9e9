//! Where notices and events go, from the environment (`JITVM_NOTIFY_*`,
//! `JITVM_SLACK_BOT_TOKEN*`, `JITVM_TEAMS_WEBHOOKS*`, `JITVM_EVENT_BUS`).
//! Secrets may be given by value (the local host) or by the ARN of a
//! Secrets Manager secret (a deployment), as the other secrets are.

use std::time::Duration;

use crate::config::{ConfigError, Secret, secret_setting};

/// How notices are delivered and events published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySettings {
    /// The Slack bot token (`xoxb-…`) that posts with `chat.postMessage`.
    pub slack_bot_token: Option<Secret>,
    /// Slack's Web API base; `https://slack.com/api/` unless set (the
    /// local stack's fake).
    pub slack_api_url: Option<String>,
    /// The Teams webhooks by name: a JSON object of name to Workflows or
    /// incoming-webhook URL, or one bare URL (named `default`).
    pub teams_webhooks: Option<Secret>,
    /// The Slack conversation a policy without its own is announced in.
    pub default_slack: Option<String>,
    /// The Teams webhook (by name) a policy without its own uses.
    pub default_teams: Option<String>,
    /// The EventBridge bus every audit event goes on.
    pub event_bus: String,
    /// The queue of retries and reminders (a standard queue).
    pub queue: String,
    pub queue_url: Option<String>,
    /// The console's address, for links in messages.
    pub console_url: Option<String>,
    /// The wait before the first retry of a failed delivery; each retry
    /// waits twice as long as the one before.
    pub retry_after: Duration,
    /// How many times a delivery is tried before it is given up.
    pub attempts: u32,
}

impl NotifySettings {
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let set = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let default_slack = set("JITVM_NOTIFY_SLACK");
        if let Some(id) = &default_slack
            && !is_conversation_id(id)
        {
            return Err(ConfigError {
                name: "JITVM_NOTIFY_SLACK",
                message: format!(
                    "{id:?} is not a Slack conversation id (such as C0123ABCD for a channel or U0123ABCD for a direct message)"
                ),
            });
        }
        let queue = set("JITVM_NOTIFY_QUEUE").unwrap_or_else(|| "jitvm-notify".into());
        if queue.ends_with(".fifo") {
            return Err(ConfigError {
                name: "JITVM_NOTIFY_QUEUE",
                message: format!(
                    "{queue:?} must name a standard queue (not .fifo): retries need per-message delays"
                ),
            });
        }
        let retry_after = number(lookup, "JITVM_NOTIFY_RETRY_SECONDS", 10, 1..=900)?;
        let attempts = number(lookup, "JITVM_NOTIFY_ATTEMPTS", 6, 1..=20)?;
        Ok(Self {
            slack_bot_token: secret_setting(
                lookup,
                "JITVM_SLACK_BOT_TOKEN",
                "JITVM_SLACK_BOT_TOKEN_ARN",
            )?,
            slack_api_url: set("JITVM_SLACK_API_URL"),
            teams_webhooks: secret_setting(
                lookup,
                "JITVM_TEAMS_WEBHOOKS",
                "JITVM_TEAMS_WEBHOOKS_ARN",
            )?,
            default_slack,
            default_teams: set("JITVM_NOTIFY_TEAMS"),
            event_bus: set("JITVM_EVENT_BUS").unwrap_or_else(|| "default".into()),
            queue,
            queue_url: set("JITVM_NOTIFY_QUEUE_URL"),
            console_url: set("JITVM_CONSOLE_URL"),
            retry_after: Duration::from_secs(u64::from(retry_after)),
            attempts,
        })
    }
}

impl NotifySettings {
    /// The deployment's channels, for policies that name none.
    pub fn defaults(&self) -> super::Destinations<'_> {
        super::Destinations {
            slack: self.default_slack.as_deref(),
            teams: self.default_teams.as_deref(),
        }
    }
}

/// Whether `id` looks like a Slack conversation: a channel (`C…`, `G…`),
/// a direct message (`D…`) or a user (`U…`, `W…`, for a direct message
/// from the bot), written as Slack writes ids (upper-case letters and
/// digits, at most 32).
pub fn is_conversation_id(id: &str) -> bool {
    id.starts_with(['C', 'G', 'D', 'U', 'W']) && crate::slack::is_slack_id(id)
}

fn number(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ConfigError> {
    let Some(text) = lookup(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
    else {
        return Ok(default);
    };
    text.parse::<u32>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| ConfigError {
            name,
            message: format!(
                "{text:?} is not a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<NotifySettings, ConfigError> {
        NotifySettings::from_lookup(&|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn nothing_set_means_the_default_bus_and_no_channels() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.event_bus, "default");
        assert_eq!(s.queue, "jitvm-notify");
        assert!(s.slack_bot_token.is_none() && s.teams_webhooks.is_none());
        assert_eq!(s.retry_after, Duration::from_secs(10));
        assert_eq!(s.attempts, 6);
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        for (pairs, name) in [
            (vec![("JITVM_NOTIFY_SLACK", "#ops")], "JITVM_NOTIFY_SLACK"),
            (vec![("JITVM_NOTIFY_QUEUE", "n.fifo")], "JITVM_NOTIFY_QUEUE"),
            (
                vec![("JITVM_NOTIFY_ATTEMPTS", "0")],
                "JITVM_NOTIFY_ATTEMPTS",
            ),
            (
                vec![("JITVM_NOTIFY_RETRY_SECONDS", "soon")],
                "JITVM_NOTIFY_RETRY_SECONDS",
            ),
            (
                vec![
                    ("JITVM_SLACK_BOT_TOKEN", "xoxb-1"),
                    ("JITVM_SLACK_BOT_TOKEN_ARN", "arn:aws:secretsmanager:x"),
                ],
                "JITVM_SLACK_BOT_TOKEN",
            ),
            (
                vec![("JITVM_TEAMS_WEBHOOKS_ARN", "teams")],
                "JITVM_TEAMS_WEBHOOKS_ARN",
            ),
        ] {
            assert_eq!(parse(&pairs).unwrap_err().name, name, "{pairs:?}");
        }
    }

    #[test]
    fn conversation_ids() {
        for good in ["C0123ABCD", "U0123ABCD", "G01234567", "D0123456789ABCDEF"] {
            assert!(is_conversation_id(good), "{good}");
        }
        for bad in [
            "#ops",
            "c0123abcd",
            "X0123ABCD",
            "C0123ABCD<@",
            "",
            "C0123456789012345678901234567890123",
        ] {
            assert!(!is_conversation_id(bad), "{bad}");
        }
    }
}

//! Where each notice goes: the policy's channels (or the deployment's),
//! and for the requestor's own news a direct message when they asked from
//! Slack.

use serde::{Deserialize, Serialize};

use super::{Audience, Notice};
use crate::domain::NotifyTargets;

/// One place a notice is posted to. Names only: the secrets that reach
/// them (the bot token, the webhook URL) stay in the function.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "camelCase")]
pub enum Target {
    /// A Slack conversation, posted to with the bot token.
    Slack { conversation: String },
    /// A Teams channel, by the name of its webhook.
    Teams { webhook: String },
}

/// The channels of a policy, or of the deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Destinations<'a> {
    pub slack: Option<&'a str>,
    pub teams: Option<&'a str>,
}

impl<'a> Destinations<'a> {
    /// The channels a policy's `notify` names.
    pub fn of(named: &'a NotifyTargets) -> Self {
        Destinations {
            slack: named.slack(),
            teams: named.teams(),
        }
    }

    /// Each channel of `self`, or of `fallback` where `self` names none.
    pub fn or(self, fallback: Destinations<'a>) -> Destinations<'a> {
        Destinations {
            slack: self.slack.or(fallback.slack),
            teams: self.teams.or(fallback.teams),
        }
    }
}

/// Where `notice` goes: approvers' news to the channels; the requestor's
/// to the Teams channel and, in Slack, as a direct message when they are
/// a Slack user (else to the Slack channel). Slack targets only when a
/// bot token is configured.
pub fn targets(notice: &Notice, channels: Destinations<'_>, slack_on: bool) -> Vec<Target> {
    let mut out = Vec::new();
    if slack_on {
        let dm = match notice.kind.audience() {
            Audience::Requestor => slack_user(notice.requestor.as_str()),
            Audience::Approvers => None,
        };
        if let Some(conversation) = dm.or(channels.slack) {
            out.push(Target::Slack {
                conversation: conversation.to_owned(),
            });
        }
    }
    if let Some(webhook) = channels.teams {
        out.push(Target::Teams {
            webhook: webhook.to_owned(),
        });
    }
    out
}

/// The Slack user id of a `slack:<team>/<user>` principal.
fn slack_user(principal: &str) -> Option<&str> {
    principal
        .strip_prefix("slack:")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, user)| user)
        .filter(|user| super::settings::is_conversation_id(user))
}

//! Slack and Teams behind one call: the deployment's bot token and named
//! webhooks, checked once at start-up, and a notice rendered for each.

use std::collections::BTreeMap;

use async_trait::async_trait;
use reqwest::Url;

use super::render::{slack_message, teams_message};
use super::slack_bot::SlackBot;
use super::teams::TeamsWebhook;
use super::{DeliveryError, Notice, NotifySettings, Target};
use crate::config::{ConfigError, Secret};
use crate::ports::NoticeChannels;

/// The channels of a deployment.
pub struct ChatChannels {
    slack: Option<SlackBot>,
    teams: BTreeMap<String, TeamsWebhook>,
    console: Option<Url>,
}

impl ChatChannels {
    /// Builds the channels of `settings` (secrets already read): the bot
    /// token's shape, each webhook URL and the default webhook's name are
    /// checked here, so a mistake stops start-up with its setting named.
    /// A configured URL may be plain `http://127.0.0.1:<port>`, as the
    /// ARM URL may: the local stack's fakes.
    pub fn from_settings(settings: &NotifySettings) -> Result<Self, ConfigError> {
        let slack = match &settings.slack_bot_token {
            None => None,
            Some(Secret::Value(token)) => Some(
                SlackBot::new(token, settings.slack_api_url.as_deref(), true).map_err(|message| {
                    ConfigError {
                        name: "JITVM_SLACK_BOT_TOKEN",
                        message,
                    }
                })?,
            ),
            Some(Secret::Arn(arn)) => return Err(unread("JITVM_SLACK_BOT_TOKEN_ARN", arn)),
        };
        let teams = match &settings.teams_webhooks {
            None => BTreeMap::new(),
            Some(Secret::Value(text)) => webhooks(text)?,
            Some(Secret::Arn(arn)) => return Err(unread("JITVM_TEAMS_WEBHOOKS_ARN", arn)),
        };
        if let Some(name) = &settings.default_teams
            && !teams.contains_key(name)
        {
            return Err(ConfigError {
                name: "JITVM_NOTIFY_TEAMS",
                message: format!(
                    "{name:?} is not among the Teams webhooks configured ({})",
                    names(&teams)
                ),
            });
        }
        if settings.default_slack.is_some() && slack.is_none() {
            return Err(ConfigError {
                name: "JITVM_NOTIFY_SLACK",
                message: "a default Slack channel needs a bot token (JITVM_SLACK_BOT_TOKEN or JITVM_SLACK_BOT_TOKEN_ARN)".into(),
            });
        }
        let console = match &settings.console_url {
            None => None,
            Some(url) => Some(Url::parse(url).ok().filter(|u| matches!(u.scheme(), "https" | "http")).ok_or_else(|| ConfigError {
                name: "JITVM_CONSOLE_URL",
                message: format!("{url:?} is not an http(s) URL"),
            })?),
        };
        Ok(Self {
            slack,
            teams,
            console,
        })
    }

    /// The names of the Teams webhooks, which a policy's `notify.teams`
    /// must be one of.
    pub fn teams_names(&self) -> Vec<&str> {
        self.teams.keys().map(String::as_str).collect()
    }
}

#[async_trait]
impl NoticeChannels for ChatChannels {
    fn slack_on(&self) -> bool {
        self.slack.is_some()
    }

    async fn send(&self, target: &Target, notice: &Notice) -> Result<(), DeliveryError> {
        match target {
            Target::Slack { conversation } => {
                let bot = self.slack.as_ref().ok_or_else(|| DeliveryError::Permanent {
                    why: "Slack is not configured (no bot token)".into(),
                })?;
                let message = slack_message(notice, self.console.as_ref());
                bot.post(conversation, &message).await.map(|_| ())
            }
            Target::Teams { webhook } => {
                let hook = self.teams.get(webhook).ok_or_else(|| DeliveryError::Permanent {
                    why: format!("no Teams webhook is named {webhook:?}"),
                })?;
                hook.post(&teams_message(notice, self.console.as_ref())).await
            }
        }
    }
}

/// The webhooks of `JITVM_TEAMS_WEBHOOKS`: a JSON object of name to URL,
/// or one bare URL (named `default`). Errors never show a URL, which is
/// the secret.
pub fn webhooks(text: &str) -> Result<BTreeMap<String, TeamsWebhook>, ConfigError> {
    let bad = |message: String| ConfigError {
        name: "JITVM_TEAMS_WEBHOOKS",
        message,
    };
    let text = text.trim();
    let named: BTreeMap<String, String> = if text.starts_with('{') {
        serde_json::from_str(text).map_err(|_| {
            bad("is not a JSON object of webhook names to URLs (such as {\"ops\": \"https://…\"})".into())
        })?
    } else {
        BTreeMap::from([("default".to_owned(), text.to_owned())])
    };
    let mut out = BTreeMap::new();
    for (name, url) in named {
        if !is_webhook_name(&name) {
            return Err(bad(format!(
                "{:?} is not a webhook name: letters, digits, - and _, at most 64",
                name.chars().take(64).collect::<String>()
            )));
        }
        let hook = TeamsWebhook::parse(&name, &url, true).map_err(bad)?;
        out.insert(name, hook);
    }
    Ok(out)
}

/// Whether `name` may name a Teams webhook (in a policy's `notify.teams`).
pub fn is_webhook_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn names(teams: &BTreeMap<String, TeamsWebhook>) -> String {
    if teams.is_empty() {
        return "none".into();
    }
    teams.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn unread(name: &'static str, arn: &str) -> ConfigError {
    ConfigError {
        name,
        message: format!("the secret {arn} was not read; build the stack with Stack::connect"),
    }
}

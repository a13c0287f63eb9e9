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
                SlackBot::new(token, settings.slack_api_url.as_deref(), true).map_err(
                    |message| ConfigError {
                        name: "JITVM_SLACK_BOT_TOKEN",
                        message,
                    },
                )?,
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
            Some(url) => Some(
                Url::parse(url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "https" | "http"))
                    .ok_or_else(|| ConfigError {
                        name: "JITVM_CONSOLE_URL",
                        message: format!("{url:?} is not an http(s) URL"),
                    })?,
            ),
        };
        Ok(Self {
            slack,
            teams,
            console,
        })
    }

    /// What a policy's `notify` may name: these Teams webhooks.
    pub fn names(&self) -> ChannelNames {
        ChannelNames {
            teams: self.teams.keys().cloned().collect(),
        }
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
                let bot = self
                    .slack
                    .as_ref()
                    .ok_or_else(|| DeliveryError::Permanent {
                        why: "Slack is not configured (no bot token)".into(),
                    })?;
                let message = slack_message(notice, self.console.as_ref());
                bot.post(conversation, &message).await.map(|_| ())
            }
            Target::Teams { webhook } => {
                let hook = self
                    .teams
                    .get(webhook)
                    .ok_or_else(|| DeliveryError::Permanent {
                        why: format!("no Teams webhook is named {webhook:?}"),
                    })?;
                hook.post(&teams_message(notice, self.console.as_ref()))
                    .await
            }
        }
    }
}

/// The Teams webhooks a policy's `notify.teams` may name in this
/// deployment. Checked when a policy is written, so a typo is a 400 then
/// rather than a notice lost later. (A Slack conversation is checked for
/// its form only: whether the app was invited shows when it posts.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelNames {
    pub teams: Vec<String>,
}

impl ChannelNames {
    /// The names of `settings` (secrets already read); a webhook URL that
    /// is not acceptable stops start-up here too.
    pub fn from_settings(settings: &NotifySettings) -> Result<Self, ConfigError> {
        let teams = match &settings.teams_webhooks {
            None => Vec::new(),
            Some(Secret::Value(text)) => webhooks(text)?.into_keys().collect(),
            Some(Secret::Arn(arn)) => return Err(unread("JITVM_TEAMS_WEBHOOKS_ARN", arn)),
        };
        Ok(Self { teams })
    }

    /// Whether a policy may name the Teams webhook `name`; else why not.
    pub fn check_teams(&self, name: &str) -> Result<(), String> {
        if self.teams.iter().any(|t| t == name) {
            return Ok(());
        }
        let known = if self.teams.is_empty() {
            "none are configured (the TeamsWebhooksSecretArn parameter)".to_owned()
        } else {
            format!("the configured ones are {}", self.teams.join(", "))
        };
        Err(format!(
            "notify.teams names the Teams webhook {name:?}, which this deployment does not have: {known}"
        ))
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
            bad(
                "is not a JSON object of webhook names to URLs (such as {\"ops\": \"https://…\"})"
                    .into(),
            )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> NotifySettings {
        NotifySettings::from_lookup(&|name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .expect("the settings parse")
    }

    const GOOD: &str = "https://contoso.webhook.office.com/webhookb2/s3cr3t";

    #[test]
    fn a_bad_channel_stops_start_up_naming_its_setting_never_the_url() {
        for (pairs, name) in [
            (
                vec![(
                    "JITVM_TEAMS_WEBHOOKS",
                    "{\"ops\": \"https://evil.example/s3cr3t\"}",
                )],
                "JITVM_TEAMS_WEBHOOKS",
            ),
            (
                vec![(
                    "JITVM_TEAMS_WEBHOOKS",
                    "http://contoso.webhook.office.com/s3cr3t",
                )],
                "JITVM_TEAMS_WEBHOOKS",
            ),
            (
                vec![(
                    "JITVM_TEAMS_WEBHOOKS",
                    "{\"bad name\": \"https://a.webhook.office.com/s3cr3t\"}",
                )],
                "JITVM_TEAMS_WEBHOOKS",
            ),
            (
                vec![("JITVM_TEAMS_WEBHOOKS", "[\"s3cr3t\"]")],
                "JITVM_TEAMS_WEBHOOKS",
            ),
            (
                vec![
                    ("JITVM_TEAMS_WEBHOOKS", GOOD),
                    ("JITVM_NOTIFY_TEAMS", "ops"),
                ],
                "JITVM_NOTIFY_TEAMS",
            ),
            (
                vec![("JITVM_NOTIFY_SLACK", "C0123ABCD")],
                "JITVM_NOTIFY_SLACK",
            ),
            (
                vec![("JITVM_SLACK_BOT_TOKEN", "xoxp-s3cr3t-user-token")],
                "JITVM_SLACK_BOT_TOKEN",
            ),
            (
                vec![("JITVM_CONSOLE_URL", "javascript:alert(1)")],
                "JITVM_CONSOLE_URL",
            ),
        ] {
            let e = ChatChannels::from_settings(&settings(&pairs))
                .err()
                .unwrap_or_else(|| panic!("{pairs:?} was accepted"));
            assert_eq!(e.name, name, "{pairs:?}");
            assert!(!e.to_string().contains("s3cr3t"), "{e}");
        }
        let fine = settings(&[
            ("JITVM_TEAMS_WEBHOOKS", GOOD),
            ("JITVM_NOTIFY_TEAMS", "default"),
            ("JITVM_SLACK_BOT_TOKEN", "xoxb-1234-5678-abcd"),
            ("JITVM_NOTIFY_SLACK", "C0123ABCD"),
        ]);
        let channels = ChatChannels::from_settings(&fine).expect("valid channels");
        assert!(channels.slack_on());
        assert_eq!(channels.names().teams, ["default"]);
    }

    #[test]
    fn a_policy_may_name_only_a_configured_webhook() {
        let names = ChannelNames::from_settings(&settings(&[(
            "JITVM_TEAMS_WEBHOOKS",
            "{\"ops\": \"https://a.webhook.office.com/x\", \"sec\": \"https://b.webhook.office.com/y\"}",
        )]))
        .unwrap();
        assert!(names.check_teams("ops").is_ok() && names.check_teams("sec").is_ok());
        let e = names.check_teams("nosuch").unwrap_err();
        assert!(e.contains("\"nosuch\"") && e.contains("ops, sec"), "{e}");
        let none = ChannelNames::default().check_teams("ops").unwrap_err();
        assert!(none.contains("TeamsWebhooksSecretArn"), "{none}");
    }
}

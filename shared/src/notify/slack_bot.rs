//! Posting to Slack as the jitvm app: `chat.postMessage` with the bot
//! token, answers read as Slack documents them (HTTP 429 with
//! `Retry-After`; HTTP 200 with `"ok": false` and an error code).

use reqwest::{Client, Url};
use serde_json::Value;

use super::DeliveryError;
use super::http::{client, is_loopback, retry_after, status_error, unanswered};

/// Slack's Web API.
pub const SLACK_API: &str = "https://slack.com/api/";

/// The error codes of `chat.postMessage` that say "try again later".
const TRANSIENT: [&str; 5] = [
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

/// The bot that posts; its token never shows in `Debug` or in an error.
pub struct SlackBot {
    client: Client,
    post_url: Url,
    token: String,
}

impl std::fmt::Debug for SlackBot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackBot")
            .field("post_url", &self.post_url.as_str())
            .finish_non_exhaustive()
    }
}

impl SlackBot {
    /// A bot with `token` (`xoxb-…`) posting to `api` (Slack's own unless
    /// given; another base only as `http://127.0.0.1:<port>/…` and when
    /// `allow_loopback`, for the local fake).
    pub fn new(token: &str, api: Option<&str>, allow_loopback: bool) -> Result<Self, String> {
        let token = token.trim();
        if !token.starts_with("xoxb-") || token.len() < 12 || token.chars().any(char::is_whitespace)
        {
            return Err(
                "is not a Slack bot token (xoxb-…); the app's Bot User OAuth Token is needed"
                    .into(),
            );
        }
        let base = api.unwrap_or(SLACK_API);
        let parsed = Url::parse(base)
            .ok()
            .filter(|u| u.username().is_empty() && u.password().is_none())
            .filter(|u| u.as_str() == SLACK_API || (allow_loopback && is_loopback(u)))
            .ok_or_else(|| {
                format!(
                    "the Slack API URL {:?} must be {SLACK_API} (or http://127.0.0.1:<port>/ for the local fake)",
                    base.chars().take(100).collect::<String>()
                )
            })?;
        let base = if parsed.path().ends_with('/') {
            parsed
        } else {
            Url::parse(&format!("{parsed}/")).map_err(|e| e.to_string())?
        };
        let post_url = base.join("chat.postMessage").map_err(|e| e.to_string())?;
        Ok(Self {
            client: client()?,
            post_url,
            token: token.to_owned(),
        })
    }

    /// Posts `message` (`text` and `blocks`) to `conversation`. Returns
    /// the `ts` of the posted message.
    pub async fn post(&self, conversation: &str, message: &Value) -> Result<String, DeliveryError> {
        let mut body = message.clone();
        if let Value::Object(map) = &mut body {
            map.insert("channel".into(), conversation.into());
        }
        let response = self
            .client
            .post(self.post_url.clone())
            .bearer_auth(&self.token)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| unanswered("Slack", &e))?;
        let status = response.status();
        let after = retry_after(&response);
        if !status.is_success() {
            return Err(status_error("Slack", status, after));
        }
        let answer: Value = response.json().await.map_err(|e| unanswered("Slack", &e))?;
        if answer["ok"] == true {
            return Ok(answer["ts"].as_str().unwrap_or_default().to_owned());
        }
        let code: String = answer["error"]
            .as_str()
            .unwrap_or("unknown_error")
            .chars()
            .take(60)
            .collect();
        let why = format!("Slack refused the message to {conversation}: {code}");
        if TRANSIENT.contains(&code.as_str()) {
            Err(DeliveryError::Retry { why, after })
        } else {
            Err(DeliveryError::Permanent { why })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_slack_or_a_local_fake_and_only_a_bot_token() {
        assert!(SlackBot::new("xoxb-1234-5678-abc", None, false).is_ok());
        assert!(SlackBot::new("xoxb-1234-5678-abc", Some("http://127.0.0.1:9/api/"), true).is_ok());
        for (token, api, loopback) in [
            ("xoxp-1234-5678-abc", None, true),
            ("xoxb-1234-5678-abc", Some("http://127.0.0.1:9/api/"), false),
            (
                "xoxb-1234-5678-abc",
                Some("https://slack.com.evil.example/api/"),
                true,
            ),
            (
                "xoxb-1234-5678-abc",
                Some("https://user:pw@slack.com/api/"),
                true,
            ),
            ("xoxb-1234-5678-abc", Some("http://10.0.0.1:9/api/"), true),
        ] {
            let e = SlackBot::new(token, api, loopback).unwrap_err();
            assert!(!e.contains("1234-5678"), "{e}");
        }
        let bot = SlackBot::new("xoxb-1234-5678-abc", None, false).unwrap();
        assert!(!format!("{bot:?}").contains("xoxb"));
    }
}

//! Posting to a Microsoft Teams channel through its webhook: a Teams
//! Workflows (Power Automate) URL or a legacy incoming webhook. The URL is
//! the secret, so it is checked once (https, a host of the providers'
//! documented domains) and never shown: errors and `Debug` name the
//! webhook and its host only.

use reqwest::{Client, Url};
use serde_json::Value;

use super::DeliveryError;
use super::http::{client, is_loopback, retry_after, status_error, unanswered};

/// The host suffixes Teams webhooks live under: incoming webhooks
/// (`<tenant>.webhook.office.com`) and Workflows (`prod-NN.<region>.logic.azure.com`,
/// `<environment>.environment.api.powerplatform.com`).
const HOSTS: [&str; 3] = [
    ".webhook.office.com",
    ".logic.azure.com",
    ".api.powerplatform.com",
];

/// One Teams webhook, by its name in the deployment.
pub struct TeamsWebhook {
    name: String,
    url: Url,
    client: Client,
}

impl std::fmt::Debug for TeamsWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamsWebhook")
            .field("name", &self.name)
            .field("host", &self.url.host_str().unwrap_or_default())
            .finish_non_exhaustive()
    }
}

impl TeamsWebhook {
    /// The webhook `name` at `url`: `https` on the default port, no user
    /// name, a host under one of the Teams webhook domains; or
    /// `http://127.0.0.1:<port>/…` when `allow_loopback` (the local fake).
    pub fn parse(name: &str, url: &str, allow_loopback: bool) -> Result<Self, String> {
        let refused = |host: &str| {
            format!(
                "the Teams webhook {name:?} ({host}) must be an https URL on {} (a Workflows or incoming-webhook URL), without a port or user name",
                HOSTS.map(|h| format!("*{h}")).join(", ")
            )
        };
        let parsed = Url::parse(url.trim()).map_err(|_| refused("not a URL"))?;
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        let shown = format!("{}://{host}", parsed.scheme());
        let documented = parsed.scheme() == "https"
            && parsed.port().is_none()
            && HOSTS.iter().any(|suffix| {
                host.strip_suffix(suffix)
                    .is_some_and(|label| !label.is_empty() && !label.ends_with('.'))
            });
        let allowed = parsed.username().is_empty()
            && parsed.password().is_none()
            && (documented || (allow_loopback && is_loopback(&parsed)));
        if !allowed {
            return Err(refused(&shown));
        }
        Ok(Self {
            name: name.to_owned(),
            url: parsed,
            client: client()?,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Posts `message` (a message with an Adaptive Card attachment).
    /// Workflows answer 202, incoming webhooks 200 with the body `1`; an
    /// incoming webhook may also answer 200 with an error text.
    pub async fn post(&self, message: &Value) -> Result<(), DeliveryError> {
        let channel = format!("Teams webhook {:?}", self.name);
        let response = self
            .client
            .post(self.url.clone())
            .json(message)
            .send()
            .await
            .map_err(|e| unanswered(&channel, &e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(&channel, status, retry_after(&response)));
        }
        let body = response.text().await.unwrap_or_default();
        let body = body.trim();
        if status.as_u16() == 200 && !body.is_empty() && body != "1" {
            return Err(DeliveryError::Permanent {
                why: format!(
                    "{channel} answered: {}",
                    body.chars().take(200).collect::<String>()
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_hosts_over_https() {
        for good in [
            "https://contoso.webhook.office.com/webhookb2/abc@def/IncomingWebhook/123/456",
            "https://prod-12.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=s3cr3t",
            "https://default123.ab.environment.api.powerplatform.com/powerautomate/automations/direct/workflows/abc",
        ] {
            assert!(TeamsWebhook::parse("ops", good, false).is_ok(), "{good}");
        }
        for bad in [
            "http://contoso.webhook.office.com/webhookb2/s3cr3t",
            "https://webhook.office.com/webhookb2/s3cr3t",
            "https://webhook.office.com.evil.example/s3cr3t",
            "https://evilwebhook.office.com/s3cr3t",
            "https://contoso.webhook.office.com:8443/s3cr3t",
            "https://user:pw@contoso.webhook.office.com/s3cr3t",
            "https://hooks.slack.com/services/s3cr3t",
            "http://127.0.0.1:9/teams/s3cr3t",
            "not a url s3cr3t",
        ] {
            let e = TeamsWebhook::parse("ops", bad, false).unwrap_err();
            assert!(!e.contains("s3cr3t") && e.contains("\"ops\""), "{bad}: {e}");
        }
        assert!(TeamsWebhook::parse("ops", "http://127.0.0.1:9/teams/ops", true).is_ok());
        let hook =
            TeamsWebhook::parse("ops", "https://a.webhook.office.com/s3cr3t", false).unwrap();
        assert!(!format!("{hook:?}").contains("s3cr3t"));
    }
}

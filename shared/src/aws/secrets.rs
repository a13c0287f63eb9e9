//! Secrets Manager: the secrets a deployment names by ARN, read once at
//! start-up so they are never in a function's environment.

use crate::ports::AdapterError;

/// `settings` with the secrets given by ARN (the Azure client secret, the
/// Slack signing secret and bot token, the Teams webhooks) read from
/// Secrets Manager, so they are never in the function's environment. Each
/// function is given only the ARNs it needs.
pub async fn resolve_secrets(
    config: &aws_config::SdkConfig,
    settings: &crate::config::Settings,
) -> Result<crate::config::Settings, AdapterError> {
    let mut settings = settings.clone();
    if let Some(azure) = settings.azure.as_mut()
        && let crate::config::AzureCredential::SecretArn(arn) = &azure.credential
    {
        let secret = read_secret(config, arn, "Azure client secret").await?;
        azure.credential = crate::config::AzureCredential::Secret(secret);
    }
    if let Some(crate::config::Secret::Arn(arn)) = &settings.slack_signing_secret {
        let secret = read_secret(config, arn, "Slack signing secret").await?;
        settings.slack_signing_secret = Some(crate::config::Secret::Value(secret));
    }
    let notify = &mut settings.notify;
    for (slot, what) in [
        (&mut notify.slack_bot_token, "Slack bot token"),
        (&mut notify.teams_webhooks, "Teams webhooks"),
    ] {
        if let Some(crate::config::Secret::Arn(arn)) = slot {
            let secret = read_secret(config, arn, what).await?;
            *slot = Some(crate::config::Secret::Value(secret));
        }
    }
    Ok(settings)
}

/// The `SecretString` of a Secrets Manager secret.
async fn read_secret(
    config: &aws_config::SdkConfig,
    arn: &str,
    what: &str,
) -> Result<String, AdapterError> {
    let answer = aws_sdk_secretsmanager::Client::new(config)
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| super::sdk_error(&format!("reading the {what} {arn}"), e))?;
    answer
        .secret_string()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            AdapterError::permanent(
                "SecretUnreadable",
                format!("secret {arn} has no SecretString: store the {what} as plain text"),
            )
        })
}

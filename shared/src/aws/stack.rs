//! The AWS side of a deployment, wired once at start-up.

use std::sync::Arc;

use super::{CallCounter, dynamo, ec2, sqs};
use crate::ports::AdapterError;

/// The AWS side of a deployment, built once at start-up from the
/// environment: the SDK config, the firewall over every configured cloud,
/// and the DynamoDB store.
pub struct AwsStack {
    pub config: aws_config::SdkConfig,
    pub firewall: crate::cloud::Clouds,
    pub store: dynamo::DynamoStore,
    /// The settings it was built from, with secrets given by ARN already
    /// read (see [`resolve_secrets`]).
    pub settings: crate::config::Settings,
}

impl AwsStack {
    /// Loads the SDK config (region, credentials, `AWS_ENDPOINT_URL`),
    /// reads the Azure client secret and the Slack signing secret from
    /// Secrets Manager when they are given by ARN, and builds the clients.
    pub async fn connect(settings: &crate::config::Settings) -> Result<Self, AdapterError> {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let settings = resolve_secrets(&config, settings).await?;
        Ok(Self::with_config(config, &settings, None))
    }

    /// Builds the clients from an existing config (tests, the local host),
    /// optionally counting EC2 calls. Azure is wired in when the settings
    /// configure it, with the default retry policy.
    pub fn with_config(
        config: aws_config::SdkConfig,
        settings: &crate::config::Settings,
        counter: Option<CallCounter>,
    ) -> Self {
        Self::with_azure_retry(
            config,
            settings,
            counter,
            crate::azure::RetryPolicy::default(),
        )
    }

    /// As [`AwsStack::with_config`], with the Azure client's patience given
    /// (tests shorten the waits).
    pub fn with_azure_retry(
        config: aws_config::SdkConfig,
        settings: &crate::config::Settings,
        counter: Option<CallCounter>,
        retry: crate::azure::RetryPolicy,
    ) -> Self {
        let ec2 = ec2::Ec2Firewall::new(
            &config,
            ec2::Ec2Settings {
                regions: settings.regions.clone(),
                max_groups_per_interface: settings.max_groups_per_interface,
                counter,
            },
        );
        let store = dynamo::DynamoStore::new(
            &config,
            dynamo::TableNames {
                policies: settings.policies_table.clone(),
                requests: settings.requests_table.clone(),
            },
        );
        let azure = settings.azure.as_ref().map(|azure| {
            let policies: Arc<dyn crate::ports::PolicyStore> = Arc::new(store.clone());
            Arc::new(crate::azure::AzureFirewall::new(
                azure,
                retry,
                Some(policies),
            )) as Arc<dyn crate::ports::Firewall>
        });
        Self {
            firewall: crate::cloud::Clouds {
                aws: Some(Arc::new(ec2)),
                azure,
            },
            store,
            config,
            settings: settings.clone(),
        }
    }

    /// The request queue: by URL when configured, else looked up (and, for
    /// the local stack, created) by name.
    pub async fn queue(
        &self,
        settings: &crate::config::Settings,
    ) -> Result<sqs::SqsQueue, AdapterError> {
        match &settings.request_queue_url {
            Some(url) => Ok(sqs::SqsQueue::new(&self.config, url.clone())),
            None => sqs::SqsQueue::ensure(&self.config, &settings.request_queue).await,
        }
    }
}

/// `settings` with the Azure client secret and the Slack signing secret
/// read from Secrets Manager when they are given by ARN (so they are never
/// in the function's environment).
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

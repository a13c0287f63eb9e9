//! A deployment, wired once at start-up: the state on AWS (DynamoDB, SQS)
//! and the firewall of every configured cloud.
//!
//! This is the one place where the clouds meet: [`crate::aws`] knows only
//! AWS, [`crate::azure`] only Azure, and [`crate::cloud::Clouds`] routes
//! each call to one of them.

use std::sync::Arc;

use crate::aws::{CallCounter, dynamo, ec2, sqs};
use crate::ports::{AdapterError, Firewall, PolicyStore};

/// A deployment built from the environment: the SDK config, the firewall
/// over every configured cloud, the DynamoDB store.
pub struct Stack {
    pub config: aws_config::SdkConfig,
    pub firewall: crate::cloud::Clouds,
    pub store: dynamo::DynamoStore,
    /// The settings it was built from, with secrets given by ARN already
    /// read (see [`crate::aws::resolve_secrets`]).
    pub settings: crate::config::Settings,
}

impl Stack {
    /// Loads the SDK config (region, credentials, `AWS_ENDPOINT_URL`),
    /// reads the Azure client secret and the Slack signing secret from
    /// Secrets Manager when they are given by ARN, and builds the clients.
    pub async fn connect(settings: &crate::config::Settings) -> Result<Self, AdapterError> {
        let config = crate::aws::bounded(
            aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
        );
        let settings = crate::aws::resolve_secrets(&config, settings).await?;
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

    /// As [`Stack::with_config`], with the Azure client's patience given
    /// (tests shorten the waits). Every AWS call gets the deployment's
    /// connect and total timeouts ([`crate::aws::bounded`]).
    pub fn with_azure_retry(
        config: aws_config::SdkConfig,
        settings: &crate::config::Settings,
        counter: Option<CallCounter>,
        retry: crate::azure::RetryPolicy,
    ) -> Self {
        let config = crate::aws::bounded(config);
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
            let policies: Arc<dyn PolicyStore> = Arc::new(store.clone());
            Arc::new(crate::azure::AzureFirewall::new(
                azure,
                retry,
                Some(policies),
            )) as Arc<dyn Firewall>
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

    /// The notify queue (retries and reminders): by URL when configured,
    /// else looked up (and, for the local stack, created) by name.
    pub async fn notify_jobs(
        &self,
        settings: &crate::config::Settings,
    ) -> Result<sqs::SqsQueue, AdapterError> {
        let notify = &settings.notify;
        match &notify.queue_url {
            Some(url) => Ok(sqs::SqsQueue::new(&self.config, url.clone())),
            None => sqs::SqsQueue::ensure_standard(&self.config, &notify.queue).await,
        }
    }

    /// The expiry queue each grant's timer waits on: by URL when
    /// configured, else looked up (and, for the local stack, created) by
    /// name.
    pub async fn timers(
        &self,
        settings: &crate::config::Settings,
    ) -> Result<sqs::SqsQueue, AdapterError> {
        match &settings.expiry_queue_url {
            Some(url) => Ok(sqs::SqsQueue::new(&self.config, url.clone())),
            None => sqs::SqsQueue::ensure_standard(&self.config, &settings.expiry_queue).await,
        }
    }
}

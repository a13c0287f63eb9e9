//! SQS as the [`RequestQueue`] and the [`ExpiryTimers`], and what the local
//! host's pollers need to play Lambda's event source mapping (receive,
//! delete, release).
//!
//! The expiry queue is a standard queue: a timer is a message with its own
//! `DelaySeconds`, which FIFO queues do not allow. Its dead-letter queue is
//! `<name>-dlq`.
//!
//! The queue is FIFO: the message group is the VM, so one VM's requests are
//! granted in order while different VMs proceed in parallel; the
//! deduplication id is the request id, so a request sent twice (a retried
//! API call, a bot that resends) is delivered once. After
//! [`MAX_RECEIVE_COUNT`] receives a message goes to the dead-letter queue,
//! `<name>-dlq.fifo`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::operation::create_queue::CreateQueueError;
use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use sha2::{Digest, Sha256};

use super::{ATTEMPT_TIMEOUT, error_code, sdk_error};
use crate::domain::{RequestMessage, VmId};
use crate::expiry::{MAX_HOP, Timer};
use crate::notify::Job;
use crate::ports::{AdapterError, ExpiryTimers, NotifyJobs, RequestQueue};

/// How long a received message stays hidden from other consumers: longer
/// than a grant takes, shorter than a person waits.
pub const VISIBILITY_TIMEOUT_SECS: u32 = 180;
/// Receives after which a message moves to the dead-letter queue.
pub const MAX_RECEIVE_COUNT: u32 = 5;
/// Receives after which a timer moves to the dead-letter queue (a timer
/// whose closing fails is set again by the handler, so this is for one
/// that cannot even be set again).
pub const TIMER_MAX_RECEIVE_COUNT: u32 = 10;
/// How long the dead-letter queue keeps messages (the SQS maximum, 14 days).
const DEAD_LETTER_RETENTION_SECS: u32 = 14 * 24 * 3600;
/// The longest message group id SQS accepts.
const MAX_GROUP_ID: usize = 128;
/// The longest queue name SQS accepts, `.fifo` included.
const MAX_QUEUE_NAME: usize = 80;
/// The message group of a message that names no VM.
const UNKNOWN_GROUP: &str = "unknown";
/// The codes SQS gives for a queue that does not exist.
const NO_QUEUE: &[&str] = &[
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
];

/// The FIFO request queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// SQS's system attributes by name: `SentTimestamp`,
    /// `ApproximateReceiveCount`, `MessageGroupId`, `MessageDeduplicationId`,
    /// `SequenceNumber`, ...
    pub attributes: HashMap<String, String>,
}

/// The message group of a VM: the id itself when SQS accepts it as one (at
/// most 128 ASCII letters, digits and punctuation), otherwise `vm-` and the
/// lowercase hex SHA-256 of the id.
pub fn group_id(vm: &str) -> String {
    let usable = !vm.is_empty()
        && vm.len() <= MAX_GROUP_ID
        && vm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c.is_ascii_punctuation());
    if usable {
        return vm.to_owned();
    }
    let digest = Sha256::digest(vm.as_bytes());
    let mut group = String::with_capacity(3 + 2 * digest.len());
    group.push_str("vm-");
    for byte in digest {
        group.push_str(&format!("{byte:02x}"));
    }
    group.truncate(MAX_GROUP_ID);
    group
}

/// The dead-letter queue of the FIFO queue `name`.
pub fn dead_letter_name(name: &str) -> Result<String, AdapterError> {
    let Some(base) = name.strip_suffix(".fifo").filter(|b| !b.is_empty()) else {
        return Err(AdapterError::permanent(
            "InvalidQueueName",
            format!(
                "queue name {name:?} must end with .fifo: the request queue is a FIFO queue \
                 (one message group per VM, deduplicated by request id)"
            ),
        ));
    };
    let dead = format!("{base}-dlq.fifo");
    if dead.len() > MAX_QUEUE_NAME {
        return Err(AdapterError::permanent(
            "InvalidQueueName",
            format!(
                "queue name {name:?} is too long: its dead-letter queue {dead:?} would exceed \
                 {MAX_QUEUE_NAME} characters; use a name of at most {} characters",
                MAX_QUEUE_NAME - "-dlq".len()
            ),
        ));
    }
    Ok(dead)
}

impl SqsQueue {
    pub fn new(config: &SdkConfig, queue_url: String) -> Self {
        Self {
            client: Client::new(config),
            url: queue_url,
        }
    }

    /// The queue named `name` (which must end with `.fifo`), created when
    /// missing together with its dead-letter queue and redrive policy.
    /// Calling it again, or from two places at once, is harmless.
    pub async fn ensure(config: &SdkConfig, name: &str) -> Result<SqsQueue, AdapterError> {
        let dead = dead_letter_name(name)?;
        ensure_with_dead_letter(config, name, &dead, true, MAX_RECEIVE_COUNT).await
    }

    /// The standard queue named `name` (the expiry queue), created when
    /// missing together with its dead-letter queue `<name>-dlq`.
    pub async fn ensure_standard(config: &SdkConfig, name: &str) -> Result<SqsQueue, AdapterError> {
        let dead = format!("{name}-dlq");
        if name.ends_with(".fifo") || dead.len() > MAX_QUEUE_NAME {
            return Err(AdapterError::permanent(
                "InvalidQueueName",
                format!(
                    "expiry queue name {name:?} must be a standard queue's (not ending in .fifo) of at most {} characters",
                    MAX_QUEUE_NAME - "-dlq".len()
                ),
            ));
        }
        ensure_with_dead_letter(config, name, &dead, false, TIMER_MAX_RECEIVE_COUNT).await
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Up to `max` messages (1 to 10), waiting up to `wait_seconds` (0 to
    /// 20) for one to arrive, with every system attribute.
    pub async fn receive(
        &self,
        max: i32,
        wait_seconds: i32,
    ) -> Result<Vec<Received>, AdapterError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait_seconds.clamp(0, 20))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(
                super::timeouts(
                    Duration::from_secs(wait_seconds.clamp(0, 20) as u64) + ATTEMPT_TIMEOUT,
                ),
            ))
            .send()
            .await
            .map_err(|e| sdk_error(&format!("receiving from queue {}", self.url), e))?;
        let mut received = Vec::new();
        for m in out.messages.unwrap_or_default() {
            let (Some(message_id), Some(receipt_handle)) = (m.message_id, m.receipt_handle) else {
                tracing::warn!(queue = %self.url, "SQS returned a message without an id or receipt handle; skipped");
                continue;
            };
            received.push(Received {
                message_id,
                receipt_handle,
                body: m.body.unwrap_or_default(),
                attributes: m
                    .attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect(),
            });
        }
        Ok(received)
    }

    /// Deletes one message (done with). Deleting it again is not an error.
    pub async fn delete(&self, receipt_handle: &str) -> Result<(), AdapterError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("deleting a message from queue {}", self.url), e))?;
        Ok(())
    }

    /// Deletes messages, ten per call. Every batch is tried; the error, if
    /// any, says how many could not be deleted and why.
    pub async fn delete_batch(&self, handles: &[String]) -> Result<(), AdapterError> {
        let mut failed = Vec::new();
        let mut all_sender_fault = true;
        for chunk in handles.chunks(10) {
            let mut batch = self.client.delete_message_batch().queue_url(&self.url);
            for (i, handle) in chunk.iter().enumerate() {
                batch = batch.entries(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .build()
                        .map_err(|e| AdapterError::permanent("InvalidRequest", e.to_string()))?,
                );
            }
            let out = batch
                .send()
                .await
                .map_err(|e| sdk_error(&format!("deleting messages from queue {}", self.url), e))?;
            for f in out.failed() {
                all_sender_fault &= f.sender_fault();
                failed.push(format!(
                    "{}: {}",
                    f.code(),
                    f.message().unwrap_or("no message")
                ));
            }
        }
        match failed.first() {
            None => Ok(()),
            Some(first) => {
                let message = format!(
                    "{} of {} messages could not be deleted from queue {}; the first: {first}",
                    failed.len(),
                    handles.len(),
                    self.url
                );
                if all_sender_fault {
                    Err(AdapterError::permanent("DeleteMessageBatchFailed", message))
                } else {
                    Err(AdapterError::Transient {
                        message,
                        source: None,
                    })
                }
            }
        }
    }

    /// Makes a received message visible again now, so that a failed item is
    /// retried promptly rather than after the visibility timeout. A message
    /// that is already visible again is not an error.
    pub async fn release(&self, receipt_handle: &str) -> Result<(), AdapterError> {
        let result = self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(0)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_message_not_inflight()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error(
                &format!("releasing a message of queue {}", self.url),
                e,
            )),
        }
    }
}

impl SqsQueue {
    /// Sends `message` (as JSON) to come back after `delay`, cut to the
    /// longest SQS allows ([`MAX_HOP`]); `what` names it in errors.
    async fn send_later(
        &self,
        message: &impl serde::Serialize,
        delay: Duration,
        what: &str,
    ) -> Result<u64, AdapterError> {
        let body = serde_json::to_string(message).map_err(|e| {
            AdapterError::permanent(
                "SerializationFailed",
                format!("{what} cannot be written as JSON: {e}"),
            )
        })?;
        let delay = delay.min(MAX_HOP).as_secs();
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(i32::try_from(delay).unwrap_or(0))
            .send()
            .await
            .map_err(|e| sdk_error(&format!("queueing {what}"), e))?;
        Ok(delay)
    }
}

#[async_trait]
impl ExpiryTimers for SqsQueue {
    async fn arm(&self, timer: &Timer, delay: Duration) -> Result<(), AdapterError> {
        let what = format!("the expiry timer of {}", timer.request_id);
        let delay = self.send_later(timer, delay, &what).await?;
        tracing::debug!(request_id = %timer.request_id, delay_secs = delay, "expiry timer set");
        Ok(())
    }
}

#[async_trait]
impl NotifyJobs for SqsQueue {
    async fn put(&self, job: &Job, delay: Duration) -> Result<(), AdapterError> {
        let delay = self.send_later(job, delay, "a notify job").await?;
        tracing::debug!(delay_secs = delay, "notify job queued");
        Ok(())
    }
}

#[async_trait]
impl RequestQueue for SqsQueue {
    async fn enqueue(&self, message: &RequestMessage) -> Result<(), AdapterError> {
        let id = message
            .request_id()
            .map_err(|e| AdapterError::permanent(e.code(), e.to_string()))?;
        // Two spellings of one VM (Azure ids are case-insensitive) are one group.
        let group = match message.virtual_machines.first() {
            Some(vm) => match VmId::parse(&vm.id) {
                Ok(parsed) => group_id(&parsed.to_string()),
                Err(_) => group_id(&vm.id),
            },
            None => UNKNOWN_GROUP.to_owned(),
        };
        let body = serde_json::to_string(message).map_err(|e| {
            AdapterError::permanent(
                "SerializationFailed",
                format!("request {id} cannot be written as JSON: {e}"),
            )
        })?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .message_group_id(&group)
            .message_deduplication_id(id.as_str())
            .send()
            .await
            .map_err(|e| sdk_error(&format!("queueing request {id}"), e))?;
        tracing::debug!(request_id = %id, group, "request queued");
        Ok(())
    }
}

/// Queue `name` (FIFO, deduplicated by id, when `fifo`), its dead-letter
/// queue `dead` of the same kind and a redrive policy of `max_receives`;
/// found when it exists.
async fn ensure_with_dead_letter(
    config: &SdkConfig,
    name: &str,
    dead: &str,
    fifo: bool,
    max_receives: u32,
) -> Result<SqsQueue, AdapterError> {
    let client = Client::new(config);
    if let Some(url) = queue_url(&client, name).await? {
        return Ok(SqsQueue { client, url });
    }
    let kind: Vec<(QueueAttributeName, String)> = if fifo {
        vec![(QueueAttributeName::FifoQueue, "true".to_owned())]
    } else {
        Vec::new()
    };
    let mut dead_attributes = vec![(
        QueueAttributeName::MessageRetentionPeriod,
        DEAD_LETTER_RETENTION_SECS.to_string(),
    )];
    dead_attributes.extend(kind.iter().cloned());
    let dead_url = create_queue(&client, dead, &dead_attributes).await?;
    let dead_arn = client
        .get_queue_attributes()
        .queue_url(&dead_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| sdk_error(&format!("reading the ARN of queue {dead}"), e))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| {
            AdapterError::permanent(
                "MissingQueueArn",
                format!("SQS gave no ARN for queue {dead}"),
            )
        })?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dead_arn,
        "maxReceiveCount": max_receives,
    });
    let mut all = kind;
    if fifo {
        all.push((
            QueueAttributeName::ContentBasedDeduplication,
            "false".to_owned(),
        ));
    }
    all.push((
        QueueAttributeName::VisibilityTimeout,
        VISIBILITY_TIMEOUT_SECS.to_string(),
    ));
    all.push((QueueAttributeName::RedrivePolicy, redrive.to_string()));
    let url = create_queue(&client, name, &all).await?;
    tracing::info!(queue = name, dead_letter_queue = dead, "created SQS queue");
    Ok(SqsQueue { client, url })
}

/// The URL of queue `name`, `None` when it does not exist.
async fn queue_url(client: &Client, name: &str) -> Result<Option<String>, AdapterError> {
    match client.get_queue_url().queue_name(name).send().await {
        Ok(out) => Ok(out.queue_url),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(sdk_error(&format!("looking queue {name} up"), e)),
    }
}

fn is_missing<R>(err: &SdkError<GetQueueUrlError, R>) -> bool {
    err.as_service_error()
        .is_some_and(GetQueueUrlError::is_queue_does_not_exist)
        || error_code(err).is_some_and(|c| NO_QUEUE.contains(&c))
}

/// Creates queue `name` with `attributes`, or finds it when it exists
/// (made meanwhile by someone else, possibly with other attributes).
async fn create_queue(
    client: &Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> Result<String, AdapterError> {
    let mut create = client.create_queue().queue_name(name);
    for (k, v) in attributes {
        create = create.attributes(k.clone(), v);
    }
    let missing_url = || {
        AdapterError::permanent(
            "MissingQueueUrl",
            format!("SQS gave no URL for queue {name}"),
        )
    };
    match create.send().await {
        Ok(out) => out.queue_url.ok_or_else(missing_url),
        Err(e)
            if e.as_service_error()
                .is_some_and(CreateQueueError::is_queue_name_exists) =>
        {
            tracing::warn!(
                queue = name,
                "queue exists with other attributes than jitvm's; using it"
            );
            queue_url(client, name).await?.ok_or_else(missing_url)
        }
        Err(e) => Err(sdk_error(&format!("creating queue {name}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_their_own_group() {
        let arn = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";
        assert_eq!(group_id(arn), arn);
        let punctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
        assert_eq!(group_id(punctuation), punctuation);
        assert_eq!(group_id(&"a".repeat(128)), "a".repeat(128));
    }

    #[test]
    fn long_or_unusual_ids_are_hashed() {
        let long = format!("/subscriptions/x/{}", "a".repeat(200));
        let g = group_id(&long);
        assert!(g.starts_with("vm-"));
        assert_eq!(g.len(), 3 + 64);
        assert!(
            g[3..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(g, group_id(&long));
        assert_ne!(g, group_id(&format!("{long}b")));
        assert!(group_id(&"a".repeat(129)).starts_with("vm-"));
        assert!(group_id("has space").starts_with("vm-"));
        assert!(group_id("é").starts_with("vm-"));
        assert_eq!(
            group_id(""),
            "vm-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn dead_letter_names() {
        assert_eq!(dead_letter_name("jitvm.fifo").unwrap(), "jitvm-dlq.fifo");
        assert!(dead_letter_name("jitvm").is_err());
        assert!(dead_letter_name(".fifo").is_err());
        assert!(dead_letter_name(&format!("{}.fifo", "a".repeat(71))).is_ok());
        assert!(dead_letter_name(&format!("{}.fifo", "a".repeat(72))).is_err());
    }
}

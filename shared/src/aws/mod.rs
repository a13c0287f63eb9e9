//! AWS adapters: EC2 security groups as the [`Firewall`](crate::ports::Firewall),
//! DynamoDB as the policy and request stores, SQS as the request queue and
//! the expiry timers and notify jobs, Secrets Manager for secrets given by
//! ARN, EventBridge for events, and the requests table's stream for the
//! local host.
//!
//! Clients are built once from `aws-config`; endpoints come from the
//! standard `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_EC2`, ...), so the same
//! code runs against AWS and against moto. Every call has a connect and a
//! total timeout ([`bounded`]).

pub mod dynamo;
pub mod ec2;
pub mod events;
mod secrets;
pub mod sqs;
pub mod streams;

pub use secrets::resolve_secrets;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::ports::AdapterError;

/// How long connecting to an AWS endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one attempt of a call may take (a hung endpoint fails it).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call may take, its retries included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// `config` with the deployment's timeouts: a slow or hung AWS endpoint
/// fails the call that needs it, never the work that does not.
pub fn bounded(config: aws_config::SdkConfig) -> aws_config::SdkConfig {
    config
        .to_builder()
        .timeout_config(timeouts(ATTEMPT_TIMEOUT))
        .build()
}

/// The timeouts with attempts of `attempt` at most; the call as a whole,
/// its retries included, gets [`CALL_TIMEOUT`] or one attempt if longer.
pub(crate) fn timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt.max(CALL_TIMEOUT))
        .build()
}

/// Error codes that say "try again later" whatever the operation.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionConflictException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
];

/// The provider's error code of an SDK error, when it is a service error.
pub fn error_code<E, R>(err: &SdkError<E, R>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

/// Sorts an SDK error into retryable or not, keeping the cause. `what`
/// says what was being done, for the message.
pub fn sdk_error<E, R>(what: &str, err: SdkError<E, R>) -> AdapterError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: Debug + Send + Sync + 'static,
{
    let (code, message) = match &err {
        SdkError::ServiceError(e) => (
            e.err().code().map(str::to_owned),
            e.err().message().map(str::to_owned),
        ),
        _ => (None, None),
    };
    match code {
        Some(code) if !TRANSIENT_CODES.contains(&code.as_str()) => AdapterError::Permanent {
            message: format!(
                "{what}: {code}: {}",
                message.unwrap_or_else(|| "no message".into())
            ),
            code,
        },
        _ => AdapterError::transient(format!("{what}: {}", DisplayChain(&err)), err),
    }
}

/// An error and its causes on one line.
struct DisplayChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// Counts API calls per operation, for benchmarks ("EC2 calls per grant").
/// Attach it to a client config with `.interceptor(counter.clone())`.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl CallCounter {
    /// Calls so far, per operation name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// All calls so far.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    pub fn reset(&self) {
        if let Ok(mut c) = self.counts.lock() {
            c.clear();
        }
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "jitvm-call-counter"
    }

    // Counted before serialization: the operation's name is in the config
    // bag by then, which it is not yet at `read_before_execution`.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let name = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_owned())
            .unwrap_or_else(|| "unknown".into());
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(name).or_default() += 1;
        }
        Ok(())
    }
}

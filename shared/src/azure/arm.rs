//! A small Azure Resource Manager client: the calls the NSG adapter makes,
//! with ARM's conventions handled once.
//!
//! - Every call carries a bearer token ([`TokenSource`]); a 401 saying the
//!   token expired or is invalid drops the cached token and retries once.
//! - 429 (throttled), 409 `AnotherOperationInProgress` (the NSG is being
//!   changed by another call) and 5xx are retried, waiting what
//!   `Retry-After` says (capped), a bounded number of times.
//! - PUT answers 200/201 with `Azure-AsyncOperation`: the operation is
//!   polled until `Succeeded`, `Failed` or `Canceled`, honouring
//!   `Retry-After`. DELETE answers 200/204 (done), 404 (already gone), or
//!   202 with `Azure-AsyncOperation` and/or `Location`, polled likewise.
//! - Lists follow `nextLink`.
//! - Tokens are only ever sent to the configured ARM base URL: a `nextLink`
//!   or operation URL pointing elsewhere is refused.
//!
//! Errors keep ARM's `error.code`, so the adapter can tell a taken priority
//! (`SecurityRuleConflict`) from a full NSG (`SecurityRuleCountLimitReached`).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::token::TokenSource;
use crate::ports::AdapterError;

/// The Microsoft.Network api-version every network call pins.
pub const NETWORK_API_VERSION: &str = "2024-05-01";
/// The Microsoft.Compute api-version every compute call pins.
pub const COMPUTE_API_VERSION: &str = "2024-07-01";

/// How many times a delete whose operation failed is sent, the first
/// included (each send has its own retries): an early revoke is answered
/// while the caller waits.
pub const OPERATION_ATTEMPTS: u32 = 3;

/// How patient the client is.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per call, the first included, for throttling, conflicts
    /// with another operation and server errors.
    pub attempts: u32,
    /// The longest single wait, whatever `Retry-After` says.
    pub max_wait: Duration,
    /// The wait before the first retry when ARM gives no `Retry-After`;
    /// doubled each time.
    pub backoff: Duration,
    /// The poll interval of a long-running operation without `Retry-After`.
    pub poll: Duration,
    /// How long a long-running operation may take before the call fails.
    pub operation_timeout: Duration,
    /// Timeout of one HTTP exchange.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            max_wait: Duration::from_secs(20),
            backoff: Duration::from_millis(500),
            poll: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// An ARM error answer, as ARM spelled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmError {
    /// The HTTP status, or 0 when no answer came.
    pub status: u16,
    pub code: String,
    pub message: String,
    /// No token could be had: the call never reached ARM.
    pub token: Option<TokenFailure>,
}

/// Why no token could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFailure {
    /// It may pass (the endpoint is down or throttling).
    Transient,
    /// It will not pass until someone fixes the credential.
    Permanent,
}

impl ArmError {
    pub fn is(&self, code: &str) -> bool {
        self.code.eq_ignore_ascii_case(code)
    }

    /// The adapter error for this answer, `doing` saying what was tried.
    pub fn into_adapter(self, doing: &str) -> AdapterError {
        match self.token {
            Some(TokenFailure::Transient) => {
                return AdapterError::Transient {
                    message: self.message,
                    source: None,
                };
            }
            Some(TokenFailure::Permanent) => {
                return AdapterError::permanent(self.code, self.message);
            }
            None => {}
        }
        let message = format!(
            "{doing}: Azure answered {} {}: {}",
            self.status, self.code, self.message
        );
        match self.status {
            404 => AdapterError::NotFound(message),
            0 if !self.is("ConnectionFailed") && !self.is("OperationTimedOut") => {
                AdapterError::permanent(self.code, message)
            }
            0 | 408 | 429 | 500..=599 => AdapterError::Transient {
                message,
                source: None,
            },
            409 if self.is("AnotherOperationInProgress") => AdapterError::Transient {
                message,
                source: None,
            },
            401 | 403 => AdapterError::permanent(
                self.code,
                format!(
                    "{message} (check that jitvm's app registration holds a role on this scope that may read VMs and NICs and write NSG rules)"
                ),
            ),
            _ => AdapterError::permanent(self.code, message),
        }
    }
}

/// The client.
pub struct Arm {
    http: reqwest::Client,
    base: String,
    tokens: TokenSource,
    retry: RetryPolicy,
}

/// A finished call: status, headers, JSON body (`Null` when empty).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Arm {
    pub fn new(http: reqwest::Client, base: &str, tokens: TokenSource, retry: RetryPolicy) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            tokens,
            retry,
        }
    }

    /// GETs a resource by id (a path from the subscription on).
    pub async fn get(&self, id: &str, api_version: &str) -> Result<Value, ArmError> {
        let answer = self
            .call(Method::GET, &self.url(id, api_version)?, None)
            .await?;
        Ok(answer.body)
    }

    /// GETs every item of a list, following `nextLink`.
    pub async fn list(&self, path: &str, api_version: &str) -> Result<Vec<Value>, ArmError> {
        let mut url = self.url(path, api_version)?;
        let mut items = Vec::new();
        for _ in 0..10_000 {
            let mut body = self.call(Method::GET, &url, None).await?.body;
            if let Some(Value::Array(page)) = body.get_mut("value").map(Value::take) {
                items.extend(page);
            }
            match body.get("nextLink").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => url = self.own(next)?,
                _ => return Ok(items),
            }
        }
        Err(local_error(
            "ListTooLong",
            format!("{path}: more than 10000 pages"),
        ))
    }

    /// PUTs a resource and waits for its operation to finish. Returns
    /// the body of the PUT's answer.
    pub async fn put(&self, id: &str, api_version: &str, body: &Value) -> Result<Value, ArmError> {
        let answer = self
            .call(Method::PUT, &self.url(id, api_version)?, Some(body))
            .await?;
        if let Some(op) = header(&answer.headers, "azure-asyncoperation") {
            match self.await_operation(&op, &answer.headers).await {
                Ok(()) => {}
                Err(Failed::Operation(e)) => return Err(e),
                // The write was accepted, and whether it took is unknown:
                // the rule may be in the NSG, so this is never a refusal.
                // Tried again, the PUT finds it there (or writes it).
                Err(Failed::Call(e)) => return Err(unconfirmed(id, e)),
            }
        }
        Ok(answer.body)
    }

    /// DELETEs a resource and waits for it to be gone. `Ok(false)` when it
    /// was not there. A delete whose operation ended failed in a way that
    /// may pass (`InternalServerError`, canceled by an overlapping write)
    /// is sent again, up to [`OPERATION_ATTEMPTS`] times in all.
    pub async fn delete(&self, id: &str, api_version: &str) -> Result<bool, ArmError> {
        let mut backoff = self.retry.backoff;
        let mut attempt = 1;
        loop {
            match self.delete_once(id, api_version).await {
                Err(Failed::Operation(e)) if e.status >= 500 && attempt < OPERATION_ATTEMPTS => {
                    tracing::warn!(code = %e.code, resource = id, attempt, "the delete operation failed; deleting again");
                    attempt += 1;
                    tokio::time::sleep(backoff.min(self.retry.max_wait)).await;
                    backoff *= 2;
                }
                Err(Failed::Operation(e) | Failed::Call(e)) => return Err(e),
                Ok(gone) => return Ok(gone),
            }
        }
    }

    async fn delete_once(&self, id: &str, api_version: &str) -> Result<bool, Failed> {
        let answer = match self
            .call(
                Method::DELETE,
                &self.url(id, api_version).map_err(Failed::Call)?,
                None,
            )
            .await
        {
            Ok(answer) => answer,
            Err(e) if e.status == 404 => return Ok(false),
            Err(e) => return Err(Failed::Call(e)),
        };
        if answer.status == StatusCode::NO_CONTENT {
            return Ok(false);
        }
        if answer.status != StatusCode::ACCEPTED {
            return Ok(true);
        }
        let waited = if let Some(op) = header(&answer.headers, "azure-asyncoperation") {
            self.await_operation(&op, &answer.headers).await
        } else if let Some(location) = header(&answer.headers, "location") {
            self.await_location(&location, &answer.headers).await
        } else {
            Ok(())
        };
        waited.map_err(|f| match f {
            Failed::Call(e) | Failed::Operation(e) => Failed::Operation(e),
        })?;
        Ok(true)
    }

    /// The URL of a resource id on the ARM base. Ids come from ARM answers
    /// and stored policies: one that is not a path from the root (such as
    /// `@other.host/...`) could move the request, token and all, to
    /// another host, so it is refused.
    fn url(&self, path: &str, api_version: &str) -> Result<String, ArmError> {
        if !path.starts_with('/') || path.starts_with("//") || path.contains(['@', '\\']) {
            return Err(local_error(
                "InvalidResourceId",
                format!("{path:?} is not an ARM resource id"),
            ));
        }
        let sep = if path.contains('?') { '&' } else { '?' };
        Ok(format!("{}{path}{sep}api-version={api_version}", self.base))
    }

    /// `url` if it is on the ARM base URL (so the token never leaves it).
    fn own(&self, url: &str) -> Result<String, ArmError> {
        let rest = url.get(self.base.len()..).unwrap_or("");
        let same_origin = url
            .get(..self.base.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(&self.base))
            && (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'));
        if same_origin {
            Ok(url.to_owned())
        } else {
            Err(local_error(
                "UnexpectedUrl",
                format!(
                    "ARM pointed at {url}, outside {}; not following it",
                    self.base
                ),
            ))
        }
    }

    /// Polls an `Azure-AsyncOperation` URL until the operation ends:
    /// `Failed::Operation` when it ended failed, `Failed::Call` when how it
    /// ended could not be read.
    async fn await_operation(
        &self,
        url: &str,
        first: &reqwest::header::HeaderMap,
    ) -> Result<(), Failed> {
        self.poll(url, first, |answer| {
            let status = answer
                .body
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("");
            match status.to_ascii_lowercase().as_str() {
                "succeeded" => Some(Ok(())),
                "failed" | "canceled" | "cancelled" => {
                    let err = answer.body.get("error").cloned().unwrap_or_default();
                    let code = text(&err, "code").unwrap_or_default();
                    // A canceled operation, or one that failed inside Azure,
                    // may pass when tried again (overlapping writes to one
                    // NSG cancel each other); anything else is the request's.
                    let transient = !status.eq_ignore_ascii_case("failed")
                        || [
                            "InternalServerError",
                            "RetryableError",
                            "Canceled",
                            "OperationPreempted",
                        ]
                        .iter()
                        .any(|c| code.eq_ignore_ascii_case(c));
                    Some(Err(ArmError {
                        status: if transient { 503 } else { 200 },
                        code: text(&err, "code").unwrap_or_else(|| format!("Operation{status}")),
                        message: text(&err, "message")
                            .unwrap_or_else(|| format!("the operation ended {status}")),
                        token: None,
                    }))
                }
                _ => None,
            }
        })
        .await
    }

    /// Polls a `Location` URL until it stops answering 202.
    async fn await_location(
        &self,
        url: &str,
        first: &reqwest::header::HeaderMap,
    ) -> Result<(), Failed> {
        self.poll(url, first, |answer| {
            (answer.status != StatusCode::ACCEPTED).then_some(Ok(()))
        })
        .await
    }

    /// GETs `url` (after the wait `Retry-After` asks for) until `done` says
    /// how it ended, or the operation timeout passes.
    async fn poll(
        &self,
        url: &str,
        first: &reqwest::header::HeaderMap,
        done: impl Fn(&Answer) -> Option<Result<(), ArmError>>,
    ) -> Result<(), Failed> {
        let url = self.own(url).map_err(Failed::Call)?;
        let deadline = Instant::now() + self.retry.operation_timeout;
        let mut wait = self.poll_wait(first);
        loop {
            self.sleep_until_or_fail(deadline, wait, &url)
                .await
                .map_err(Failed::Call)?;
            let answer = self
                .call(Method::GET, &url, None)
                .await
                .map_err(Failed::Call)?;
            if let Some(outcome) = done(&answer) {
                return outcome.map_err(Failed::Operation);
            }
            wait = self.poll_wait(&answer.headers);
        }
    }

    async fn sleep_until_or_fail(
        &self,
        deadline: Instant,
        wait: Duration,
        url: &str,
    ) -> Result<(), ArmError> {
        if Instant::now() + wait > deadline {
            return Err(ArmError {
                token: None,
                status: 0,
                code: "OperationTimedOut".into(),
                message: format!(
                    "the operation {url} did not finish within {} s",
                    self.retry.operation_timeout.as_secs()
                ),
            });
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn poll_wait(&self, headers: &reqwest::header::HeaderMap) -> Duration {
        retry_after(headers)
            .unwrap_or(self.retry.poll)
            .min(self.retry.max_wait)
    }

    /// One call, with the retries ARM calls for. An error answer becomes
    /// `Err` with ARM's code.
    async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ArmError> {
        let mut backoff = self.retry.backoff;
        let mut renewed = false;
        let mut attempt = 1;
        loop {
            let token = self.tokens.token().await.map_err(|e| {
                let (failure, code) = match &e {
                    AdapterError::Permanent { code, .. } => (TokenFailure::Permanent, code.clone()),
                    _ => (TokenFailure::Transient, "AzureTokenUnavailable".to_owned()),
                };
                ArmError {
                    status: 0,
                    code,
                    message: e.to_string(),
                    token: Some(failure),
                }
            })?;
            let mut request = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token)
                .timeout(self.retry.request_timeout);
            if let Some(body) = body {
                request = request.json(body);
            }
            let (status, headers, bytes) = match exchange(request).await {
                Ok(answer) => answer,
                Err(e) if attempt < self.retry.attempts => {
                    tracing::warn!(error = %e, url = %strip_query(url), "no answer from ARM; retrying");
                    attempt += 1;
                    tokio::time::sleep(backoff.min(self.retry.max_wait)).await;
                    backoff *= 2;
                    continue;
                }
                Err(e) => {
                    return Err(local_error(
                        "ConnectionFailed",
                        format!("{method} {}: {e}", strip_query(url)),
                    ));
                }
            };
            let json: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            };
            if status.is_success() {
                return Ok(Answer {
                    status,
                    headers,
                    body: json,
                });
            }
            let err = ArmError {
                token: None,
                status: status.as_u16(),
                code: json
                    .get("error")
                    .and_then(|e| text(e, "code"))
                    .unwrap_or_else(|| {
                        status
                            .canonical_reason()
                            .unwrap_or("Error")
                            .replace(' ', "")
                    }),
                message: json
                    .get("error")
                    .and_then(|e| text(e, "message"))
                    .unwrap_or_else(|| format!("{method} {}", strip_query(url))),
            };
            let expired_token = status == StatusCode::UNAUTHORIZED
                && (err.is("ExpiredAuthenticationToken") || err.is("InvalidAuthenticationToken"));
            if expired_token && !renewed {
                renewed = true;
                self.tokens.invalidate().await;
                continue;
            }
            let retryable = status == StatusCode::TOO_MANY_REQUESTS
                || status.is_server_error()
                || (status == StatusCode::CONFLICT && err.is("AnotherOperationInProgress"));
            if retryable && attempt < self.retry.attempts {
                attempt += 1;
                let wait = retry_after(&headers)
                    .unwrap_or(backoff)
                    .min(self.retry.max_wait);
                tracing::warn!(status = status.as_u16(), code = %err.code, wait_ms = wait.as_millis() as u64, url = %strip_query(url), "ARM asked to retry");
                tokio::time::sleep(wait).await;
                backoff *= 2;
                continue;
            }
            return Err(err);
        }
    }
}

/// How a long-running call failed: the call itself (already retried), or
/// the operation it started.
enum Failed {
    Call(ArmError),
    Operation(ArmError),
}

/// Sends a request and reads its whole answer; a transport failure at
/// either step is one error, retried alike.
async fn exchange(
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, reqwest::header::HeaderMap, bytes::Bytes), reqwest::Error> {
    let response = request.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    Ok((status, headers, response.bytes().await?))
}

/// A write whose operation could not be read to its end (`e` says why):
/// a failure that may pass, since the write may well have taken.
fn unconfirmed(id: &str, e: ArmError) -> ArmError {
    ArmError {
        status: 503,
        code: "OperationStatusUnknown".into(),
        message: format!(
            "the write of {id} was accepted, but how it ended could not be read ({}: {})",
            e.code, e.message
        ),
        token: None,
    }
}

fn local_error(code: &str, message: String) -> ArmError {
    ArmError {
        status: 0,
        code: code.to_owned(),
        message,
        token: None,
    }
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// `Retry-After` in seconds (ARM does not send the HTTP-date form).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    header(headers, "retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(base: &str) -> Arm {
        let config = crate::config::AzureConfig {
            tenant_id: "t".into(),
            client_id: "c".into(),
            credential: crate::config::AzureCredential::Secret("s".into()),
            authority_url: base.into(),
            arm_url: base.into(),
            scope: "https://management.azure.com/.default".into(),
            subscriptions: Vec::new(),
            allow_priorities: crate::config::PriorityBand {
                first: 100,
                last: 199,
            },
            deny_priorities: crate::config::PriorityBand {
                first: 200,
                last: 299,
            },
        };
        let http = reqwest::Client::new();
        let tokens = TokenSource::new(http.clone(), &config, Duration::from_secs(5));
        Arm::new(http, base, tokens, RetryPolicy::default())
    }

    #[test]
    fn the_token_never_leaves_the_arm_url() {
        let a = arm("https://management.azure.com/");
        for ok in [
            "https://management.azure.com/subscriptions/x?$skiptoken=1",
            "https://MANAGEMENT.azure.com/subscriptions/x/operations/1",
        ] {
            assert_eq!(a.own(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "https://management.azure.com.evil.example/subscriptions/x",
            "https://management.azure.com@evil.example/x",
            "https://evil.example/https://management.azure.com/",
            "http://management.azure.com/subscriptions/x",
        ] {
            assert_eq!(
                a.own(bad).map_err(|e| e.code),
                Err("UnexpectedUrl".to_owned()),
                "{bad}"
            );
        }
        assert_eq!(
            a.url("/subscriptions/s/x", "2024-05-01").as_deref(),
            Ok("https://management.azure.com/subscriptions/s/x?api-version=2024-05-01")
        );
        for bad in [
            "@evil.example/x",
            "//evil.example/x",
            "subscriptions/x",
            "/x@y",
        ] {
            assert_eq!(
                a.url(bad, "v").map_err(|e| e.code),
                Err("InvalidResourceId".to_owned()),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_map_to_what_the_caller_should_do() {
        let e = |status, code: &str| ArmError {
            status,
            code: code.into(),
            message: "m".into(),
            token: None,
        };
        assert!(matches!(
            e(404, "NotFound").into_adapter("x"),
            AdapterError::NotFound(_)
        ));
        assert!(e(429, "TooManyRequests").into_adapter("x").is_retryable());
        assert!(
            e(409, "AnotherOperationInProgress")
                .into_adapter("x")
                .is_retryable()
        );
        assert!(
            e(503, "ServiceUnavailable")
                .into_adapter("x")
                .is_retryable()
        );
        match e(400, "SecurityRuleConflict").into_adapter("opening") {
            AdapterError::Permanent { code, message } => {
                assert_eq!(code, "SecurityRuleConflict");
                assert!(message.starts_with("opening: Azure answered 400"));
            }
            other => panic!("{other:?}"),
        }
        match e(403, "AuthorizationFailed").into_adapter("x") {
            AdapterError::Permanent { message, .. } => assert!(message.contains("role")),
            other => panic!("{other:?}"),
        }
    }
}

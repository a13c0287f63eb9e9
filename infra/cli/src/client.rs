//! The one way this tool talks to the API: a bounded HTTP call,
//! authenticated as configured, whose error answers become [`CliError::Api`].

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, Url};
use serde_json::Value;

use crate::config::{Auth, Config};
use crate::error::CliError;
use crate::sigv4;

/// How long to wait for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take in all.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one deployment's API.
pub struct Api {
    http: reqwest::Client,
    endpoint: String,
    auth: Authenticator,
}

/// A successful answer: its status and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The body as JSON (`Null` when empty).
    pub fn json(&self) -> Result<Value, CliError> {
        if self.body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&self.body).map_err(|e| {
            CliError::Unexpected(format!(
                "the API answered {} with no JSON ({e}); is the endpoint jitvm's API?",
                self.status
            ))
        })
    }
}

enum Authenticator {
    Bearer(String),
    SigV4 {
        credentials: SharedCredentialsProvider,
        /// The credentials last found, kept until they near their expiry:
        /// a role or SSO profile is not asked again for every call.
        cached: Mutex<Option<Credentials>>,
        region: String,
    },
}

/// Credentials this close to their expiry are fetched again.
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

impl Authenticator {
    /// The credentials to sign with, from the cache while they last.
    async fn credentials(
        credentials: &SharedCredentialsProvider,
        cached: &Mutex<Option<Credentials>>,
    ) -> Result<Credentials, CliError> {
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|at| at > SystemTime::now() + REFRESH_BEFORE)
        };
        if let Some(c) = cached.lock().ok().and_then(|c| c.clone()).filter(fresh) {
            return Ok(c);
        }
        let found = tokio::time::timeout(CALL_TIMEOUT, credentials.provide_credentials())
            .await
            .map_err(|_| {
                CliError::Config(format!(
                    "finding AWS credentials took longer than {} s",
                    CALL_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| CliError::Config(format!("no AWS credentials to sign with: {e}")))?;
        if let Ok(mut slot) = cached.lock() {
            *slot = Some(found.clone());
        }
        Ok(found)
    }
}

impl Api {
    /// A client for `config`; for SigV4 it finds the credentials and the
    /// region through the AWS SDK's default chains.
    pub async fn connect(config: &Config) -> Result<Api, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("jitvm-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Config(format!("cannot build the HTTP client: {e}")))?;
        let auth = match &config.auth {
            Auth::Bearer(token) => Authenticator::Bearer(token.clone()),
            Auth::SigV4 { region } => sigv4_authenticator(region.clone()).await?,
        };
        Ok(Api {
            http,
            endpoint: config.endpoint.clone(),
            auth,
        })
    }

    /// Calls `method path` with `query` pairs and a JSON `body`; an answer
    /// of 400 or more is the API's error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, CliError> {
        let mut url = Url::parse(&format!("{}{path}", self.endpoint))
            .map_err(|e| CliError::Config(format!("the endpoint makes no URL: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut req = self.http.request(method.clone(), url.clone());
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        match &self.auth {
            Authenticator::Bearer(token) => req = req.bearer_auth(token),
            Authenticator::SigV4 {
                credentials,
                cached,
                region,
            } => {
                let creds = Authenticator::credentials(credentials, cached).await?;
                let headers = sigv4::signing_headers(
                    method.as_str(),
                    url.as_str(),
                    &bytes,
                    creds,
                    region,
                    sigv4::SERVICE,
                    SystemTime::now(),
                )?;
                for (name, value) in headers {
                    req = req.header(name, value);
                }
            }
        }
        if body.is_some() {
            req = req.body(bytes);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CliError::Unreachable(describe(&e)))?;
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .await
            .map_err(|e| CliError::Unreachable(describe(&e)))?;
        if status >= 400 {
            return Err(api_error(status, &body));
        }
        Ok(Answer { status, body })
    }

    /// `call` for a JSON answer.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        self.call(method, path, query, body).await?.json()
    }
}

/// The characters a request id keeps in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` percent-encoded as one path segment.
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

async fn sigv4_authenticator(region: Option<String>) -> Result<Authenticator, CliError> {
    // STS, SSO and IMDS calls of the credential chain are bounded too.
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_timeout(CALL_TIMEOUT)
        .build();
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r));
    }
    let sdk = loader.load().await;
    let region = sdk.region().map(ToString::to_string).ok_or_else(|| {
        CliError::Config(
            "SigV4 needs the API's region: set `region` in the config file or AWS_REGION".into(),
        )
    })?;
    let credentials = sdk.credentials_provider().ok_or_else(|| {
        CliError::Config("no AWS credentials provider found in the default chain".into())
    })?;
    Ok(Authenticator::SigV4 {
        credentials,
        cached: Mutex::new(None),
        region,
    })
}

/// The API's `{"error": {"code", "message"}}`, or what the answer was when
/// it is not one (a gateway's own error page, say).
fn api_error(status: u16, body: &str) -> CliError {
    let parsed: Option<(String, String)> = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let e = v.get("error")?;
        Some((
            e.get("code")?.as_str()?.to_owned(),
            e.get("message")?.as_str()?.to_owned(),
        ))
    });
    let (code, message) = parsed.unwrap_or_else(|| {
        // API Gateway's own refusals are `{"message": "..."}`.
        let message = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| body.chars().take(300).collect());
        (format!("Http{status}"), message)
    });
    CliError::Api {
        status,
        code,
        message,
    }
}

/// A transport error as a sentence, with its causes, never a Debug dump.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "the call timed out".to_owned()
    } else if e.is_connect() {
        "the connection failed".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_keep_the_api_code_and_message() {
        let e = api_error(403, r#"{"error":{"code":"NotRequester","message":"no"}}"#);
        assert_eq!(e.to_string(), "NotRequester (403): no");
        let e = api_error(403, r#"{"message":"Forbidden"}"#);
        assert_eq!(e.to_string(), "Http403 (403): Forbidden");
        let e = api_error(502, "<html>bad gateway</html>");
        assert_eq!(e.exit_code(), crate::error::exit::UNAVAILABLE);
    }

    #[test]
    fn request_ids_are_one_segment() {
        assert_eq!(segment("abc-1.2_~"), "abc-1.2_~");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
    }
}

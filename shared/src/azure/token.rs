//! Access tokens for Azure Resource Manager: the OAuth 2.0 client
//! credentials grant of the Microsoft identity platform (v2 endpoint),
//! `POST {authority}/{tenant}/oauth2/v2.0/token`.
//!
//! The app registration proves itself with a client secret, or with a
//! signed client assertion read from a file for each token (the shape
//! workload identity federation uses: the platform writes and rotates the
//! file). A token is reused until shortly before it expires; one refresh at
//! a time, however many calls are waiting.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::{AzureConfig, AzureCredential};
use crate::ports::AdapterError;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Tokens are renewed this long before they expire (or at half their life,
/// if that is shorter), so no call goes out with a token about to lapse.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// How long a token request may take, from connecting to the last byte: an
/// endpoint that accepts and never answers fails the calls that need a
/// token, not everything behind them.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after a failed token request no other is made: the calls that
/// need a token fail at once meanwhile (a sweep, a batch of timers), and
/// their own retries come after it.
pub const FAILED_FOR: Duration = Duration::from_secs(5);

/// A source of ARM access tokens, cached.
pub struct TokenSource {
    http: reqwest::Client,
    endpoint: String,
    client_id: String,
    credential: AzureCredential,
    scope: String,
    timeout: Duration,
    cached: Mutex<Option<Cached>>,
    /// When the last fetch failed, and how: for [`FAILED_FOR`] after it,
    /// callers fail at once rather than each waiting out a timeout.
    failed: Mutex<Option<(Instant, String)>>,
}

struct Cached {
    token: String,
    renew_at: Instant,
    /// When the token itself lapses: until then it is used if renewing
    /// fails.
    expires_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize, Default)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl TokenSource {
    /// A source asking `config`'s endpoint, each request given `timeout`
    /// at most (the client's connect timeout applies within it).
    pub fn new(http: reqwest::Client, config: &AzureConfig, timeout: Duration) -> Self {
        Self {
            http,
            endpoint: format!(
                "{}/{}/oauth2/v2.0/token",
                config.authority_url, config.tenant_id
            ),
            client_id: config.client_id.clone(),
            credential: config.credential.clone(),
            scope: config.scope.clone(),
            timeout,
            cached: Mutex::new(None),
            failed: Mutex::new(None),
        }
    }

    /// A valid token: the cached one, or a new one. While renewing fails,
    /// the cached token serves until it lapses.
    pub async fn token(&self) -> Result<String, AdapterError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.renew_at) {
            return Ok(c.token.clone());
        }
        let still_valid = cached
            .as_ref()
            .filter(|c| Instant::now() < c.expires_at)
            .map(|c| c.token.clone());
        if let Some((at, why)) = self.failed.lock().await.as_ref()
            && at.elapsed() < FAILED_FOR
        {
            return still_valid.ok_or_else(|| AdapterError::Transient {
                message: why.clone(),
                source: None,
            });
        }
        let fresh = match self.fetch().await {
            Ok(fresh) => fresh,
            Err(e) => {
                *self.failed.lock().await = Some((Instant::now(), e.to_string()));
                if let Some(token) = still_valid {
                    tracing::warn!(error = %e, "cannot renew the Azure token; using the current one until it lapses");
                    return Ok(token);
                }
                return Err(e);
            }
        };
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forgets the cached token (ARM said it was expired or revoked).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<Cached, AdapterError> {
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", self.client_id.clone()),
            ("scope", self.scope.clone()),
        ];
        match &self.credential {
            AzureCredential::Secret(secret) => form.push(("client_secret", secret.clone())),
            AzureCredential::SecretArn(arn) => {
                return Err(AdapterError::permanent(
                    "AzureCredentialUnresolved",
                    format!("the client secret in {arn} was not read at start-up"),
                ));
            }
            AzureCredential::AssertionFile(path) => {
                let assertion = tokio::fs::read_to_string(path).await.map_err(|e| {
                    AdapterError::permanent(
                        "AzureCredentialUnreadable",
                        format!(
                            "cannot read the client assertion file {}: {e}",
                            path.display()
                        ),
                    )
                })?;
                form.push(("client_assertion_type", ASSERTION_TYPE.into()));
                form.push(("client_assertion", assertion.trim().to_owned()));
            }
        }
        let started = Instant::now();
        let response = self
            .http
            .post(&self.endpoint)
            .form(&form)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| {
                AdapterError::transient(
                    format!("cannot reach the Azure token endpoint {}", self.endpoint),
                    e,
                )
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| AdapterError::transient("reading the Azure token endpoint's answer", e))?;
        if status.is_success() {
            let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
                AdapterError::transient("the Azure token endpoint answered without a token", e)
            })?;
            // A day at most, whatever the endpoint says: the arithmetic
            // below stays in range, and a token is never trusted for long.
            let life = Duration::from_secs(t.expires_in.min(24 * 3600));
            let renew_at = started + life.saturating_sub(RENEW_BEFORE.min(life / 2));
            return Ok(Cached {
                token: t.access_token,
                renew_at,
                expires_at: started + life,
            });
        }
        let err: TokenError = serde_json::from_slice(&body).unwrap_or_default();
        let description = err
            .error_description
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        let message = format!(
            "Azure refused a token for client {} ({} {}): {description}",
            self.client_id,
            status.as_u16(),
            err.error
        );
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(AdapterError::Transient {
                message,
                source: None,
            });
        }
        Err(AdapterError::permanent(
            "AzureAuthenticationFailed",
            message,
        ))
    }
}

//! What the Slack and Teams clients share: one HTTP client that follows no
//! redirect and gives up in time, the loopback rule for the local fakes,
//! and reading an HTTP answer as "try again" or "refused for good".

use std::net::Ipv4Addr;
use std::time::Duration;

use reqwest::redirect::Policy;
use reqwest::{Client, Response, StatusCode, Url};

use super::DeliveryError;

/// How long connecting to a channel may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one post may take, answer included.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(900);

/// A client that follows no redirects (one could lead past the URL
/// checks) and bounds each post.
pub fn client() -> Result<Client, String> {
    Client::builder()
        .redirect(Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(POST_TIMEOUT)
        .build()
        .map_err(|e| format!("the HTTP client could not be built: {e}"))
}

/// Whether `url` is `http://127.0.0.1:<port>/…` (a local fake).
pub fn is_loopback(url: &Url) -> bool {
    url.scheme() == "http"
        && url.host_str() == Some(&Ipv4Addr::LOCALHOST.to_string())
        && url.port().is_some()
}

/// A post that did not get an answer: a timeout or a connection error is
/// worth trying again. The error's text names no URL (it may be secret).
pub fn unanswered(channel: &str, e: &reqwest::Error) -> DeliveryError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    DeliveryError::Retry {
        why: format!("{channel}: the post {what}"),
        after: None,
    }
}

/// The `Retry-After` of `response`, in seconds, at most 15 minutes.
pub fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// What a non-success HTTP status means: 429 → try again after
/// `Retry-After`; 408 and 5xx → try again; anything else (a redirect
/// included, never followed) → refused for good.
pub fn status_error(channel: &str, status: StatusCode, after: Option<Duration>) -> DeliveryError {
    let why = format!("{channel} answered HTTP {}", status.as_u16());
    if status == StatusCode::TOO_MANY_REQUESTS {
        DeliveryError::Retry { why, after }
    } else if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
        DeliveryError::Retry { why, after: None }
    } else {
        DeliveryError::Permanent { why }
    }
}

//! Posting an answer to a Slack `response_url`.
//!
//! The URL arrives inside the request, so it is checked before anything is
//! sent: only Slack's own `https://hooks.slack.com/` (and, on the local host
//! and in tests, a server on `http://127.0.0.1:<port>/`) is ever posted to.
//! On Lambda loopback is the runtime's own API, so it is allowed only when
//! the caller says it runs locally. Otherwise a
//! forged or mistaken URL would make the function call into the VPC or the
//! instance metadata service on someone's behalf.

use std::net::Ipv4Addr;
use std::time::Duration;

use reqwest::redirect::Policy;
use reqwest::{Client, Url};
use serde_json::Value;

use super::form::SlackError;

/// How long one post may take. Slack answers in well under a second; the
/// bound keeps a slow answer from eating the Lambda's time.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for [`post_response`]: it follows no redirects (a redirect
/// could lead anywhere, past the URL check) and gives up after
/// [`POST_TIMEOUT`]. Build it once, at start-up.
pub fn response_client() -> Result<Client, SlackError> {
    Client::builder()
        .redirect(Policy::none())
        .timeout(POST_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .map_err(SlackError::Transport)
}

/// `url` if it is one jitvm may post to: `https://hooks.slack.com/...` on
/// the default port, or `http://127.0.0.1:<port>/...` when `allow_loopback`;
/// never with a user name or password in it.
pub fn check_response_url(url: &str, allow_loopback: bool) -> Result<Url, SlackError> {
    let refused = || SlackError::UrlRefused(url.chars().take(100).collect());
    let parsed = Url::parse(url).map_err(|_| refused())?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refused());
    }
    let loopback = Ipv4Addr::LOCALHOST.to_string();
    let allowed = match (parsed.scheme(), parsed.host_str(), parsed.port()) {
        // `port()` is `None` for the scheme's default port, also when it
        // was written out as `:443`.
        ("https", Some("hooks.slack.com"), None) => true,
        ("http", Some(host), Some(_)) => allow_loopback && host == loopback,
        _ => false,
    };
    if !allowed {
        return Err(refused());
    }
    Ok(parsed)
}

/// Posts `message` to `url` (a `response_url` from Slack), after
/// [`check_response_url`]. Use a client from [`response_client`], so that
/// no redirect is followed; a redirect answer is an error.
pub async fn post_response(
    client: &Client,
    url: &str,
    message: &Value,
    allow_loopback: bool,
) -> Result<(), SlackError> {
    post_within(client, url, message, allow_loopback, POST_TIMEOUT).await
}

async fn post_within(
    client: &Client,
    url: &str,
    message: &Value,
    allow_loopback: bool,
    timeout: Duration,
) -> Result<(), SlackError> {
    let target = check_response_url(url, allow_loopback)?;
    let response = client
        .post(target.clone())
        .timeout(timeout)
        .json(message)
        .send()
        .await
        .map_err(SlackError::Transport)?;
    let status = response.status();
    // A client that follows redirects may have ended somewhere else; the
    // post already happened then, but at least it is not reported as done.
    if response.url() != &target || status.is_redirection() {
        return Err(SlackError::PostRejected {
            status: status.as_u16(),
            body: "Slack's response URL redirected; redirects are not followed".to_owned(),
        });
    }
    if !status.is_success() {
        // Slack's error answers are a word or two (`invalid_payload`); only
        // the start is kept, whatever a server sends.
        let body = response.text().await.unwrap_or_default();
        return Err(SlackError::PostRejected {
            status: status.as_u16(),
            body: body.chars().take(200).collect(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::State;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use serde_json::json;

    type Seen = Arc<Mutex<Vec<Value>>>;

    async fn ok(State(seen): State<Seen>, axum::Json(body): axum::Json<Value>) -> &'static str {
        if let Ok(mut seen) = seen.lock() {
            seen.push(body);
        }
        "ok"
    }

    async fn fail() -> impl IntoResponse {
        (StatusCode::NOT_FOUND, "expired_url")
    }

    async fn redirect() -> impl IntoResponse {
        (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, "/ok")],
            "",
        )
    }

    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_secs(3)).await;
        "ok"
    }

    /// A stand-in for hooks.slack.com on loopback, and what it was sent.
    async fn fake_slack() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let app = Router::new()
            .route("/ok", post(ok))
            .route("/fail", post(fail))
            .route("/redirect", post(redirect))
            .route("/slow", post(slow))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (base, seen)
    }

    fn seen(s: &Seen) -> Vec<Value> {
        s.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn posts_the_message() {
        let (base, got) = fake_slack().await;
        let client = response_client().unwrap();
        let message = json!({"replace_original": true, "text": "approved"});
        post_response(&client, &format!("{base}/ok"), &message, true)
            .await
            .unwrap();
        assert_eq!(seen(&got), vec![message]);
    }

    #[tokio::test]
    async fn a_refusal_is_reported_with_slacks_words() {
        let (base, _) = fake_slack().await;
        let client = response_client().unwrap();
        let err = post_response(&client, &format!("{base}/fail"), &json!({}), true)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SlackError::PostRejected { status: 404, body } if body == "expired_url"),
            "{err:?}"
        );
        assert_eq!(err.http_status(), 502);
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (base, got) = fake_slack().await;
        let client = response_client().unwrap();
        let err = post_response(
            &client,
            &format!("{base}/redirect"),
            &json!({"text": "x"}),
            true,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, SlackError::PostRejected { status: 307, .. }),
            "{err:?}"
        );
        assert!(seen(&got).is_empty());
        // Even a client that follows redirects does not report success.
        let following = Client::new();
        let err = post_response(
            &following,
            &format!("{base}/redirect"),
            &json!({"text": "x"}),
            true,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SlackError::PostRejected { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_slow_answer_times_out() {
        let (base, _) = fake_slack().await;
        let client = response_client().unwrap();
        let err = post_within(
            &client,
            &format!("{base}/slow"),
            &json!({}),
            true,
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, SlackError::Transport(e) if e.is_timeout()),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn only_slack_and_loopback_are_posted_to() {
        let client = response_client().unwrap();
        for url in [
            "https://hooks.slack.com.evil.example/commands/1",
            "https://evil.example/hooks.slack.com/commands/1",
            "http://hooks.slack.com/commands/1",
            "https://hooks.slack.com:8443/commands/1",
            "https://user:pw@hooks.slack.com/commands/1",
            "https://hooks.slack.com./commands/1",
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1/commands/1",
            "http://localhost:8080/commands/1",
            "http://127.0.0.2:8080/commands/1",
            "http://[::1]:8080/commands/1",
            "https://127.0.0.1:8080/commands/1",
            "file:///etc/passwd",
            "hooks.slack.com/commands/1",
            "",
        ] {
            let err = post_response(&client, url, &json!({}), true)
                .await
                .unwrap_err();
            assert!(matches!(err, SlackError::UrlRefused(_)), "{url}: {err:?}");
        }
        for url in [
            "https://hooks.slack.com/commands/T1/2/abc",
            "https://HOOKS.slack.com:443/actions/T1/2/abc",
            "http://127.0.0.1:8080/x",
        ] {
            assert!(check_response_url(url, true).is_ok(), "{url}");
        }
        // On Lambda, loopback is the runtime's API: refused there.
        assert!(check_response_url("https://hooks.slack.com/commands/T1/2/abc", false).is_ok());
        assert!(matches!(
            check_response_url(
                "http://127.0.0.1:9001/2018-06-01/runtime/invocation/next",
                false
            ),
            Err(SlackError::UrlRefused(_))
        ));
    }
}

//! SigV4 as the binary sends it: a server of the test's own records each
//! call exactly as it arrived, and each is signed again from what arrived
//! (method, path and query as on the wire, body bytes, the `x-amz-date`
//! sent) with the same credentials. The two signatures agree only if the
//! binary signed the very request it sent, for `execute-api` in the
//! configured region, with the session token of the default chain. The
//! signing itself is checked against AWS's published vectors in the
//! library's unit tests.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::IntoResponse;
use serde_json::json;

const KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SESSION: &str = "session-token-example";
const REGION: &str = "eu-central-1";
const ARN: &str = "arn:aws:ec2:eu-central-1:123456789012:instance/i-0abc1234def567890";

/// One call as the server received it.
struct Seen {
    method: String,
    target: String,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn record(State(log): State<Log>, req: Request) -> impl IntoResponse {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    let answer = match target.as_str() {
        "/v1/whoami" => {
            json!({"principal": "arn:aws:iam::123456789012:user/alice", "approverOf": []})
        }
        "/v1/requests" => json!({"id": "r1", "status": "Approved", "virtualMachines": []}),
        _ => json!({"value": []}),
    };
    log.lock().expect("log").push(Seen {
        method: parts.method.to_string(),
        target,
        headers: parts.headers,
        body,
    });
    axum::Json(answer)
}

fn run(endpoint: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_jitvm"))
        .args(args)
        .env_clear()
        .env("HOME", "/nonexistent/jitvm-cli-test")
        .env("XDG_CONFIG_HOME", "/nonexistent/jitvm-cli-test")
        .env("JITVM_ENDPOINT", endpoint)
        .env("JITVM_AUTH", "sigv4")
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_SESSION_TOKEN", SESSION)
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_signed_as_it_was_sent() {
    let log: Log = Arc::default();
    let app = Router::new().fallback(record).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let commands: &[&[&str]] = &[
        &["whoami"],
        &["policy", "get", ARN],
        &["list", "--vm", ARN, "--mine"],
        &[
            "request",
            ARN,
            "22,3389",
            "--for",
            "1h",
            "--from",
            "198.51.100.0/28",
            "-m",
            "fix: a+b & c",
        ],
    ];
    for args in commands {
        let endpoint = endpoint.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let out = tokio::task::spawn_blocking(move || {
            run(
                &endpoint,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
        .await
        .expect("runner");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let seen = std::mem::take(&mut *log.lock().expect("log"));
    // whoami; policy get; whoami and list; request.
    assert_eq!(
        seen.len(),
        5,
        "{:?}",
        seen.iter().map(|s| &s.target).collect::<Vec<_>>()
    );
    assert!(
        seen.iter()
            .any(|s| s.target.starts_with("/v1/policies/arn:aws:ec2:"))
    );
    assert!(
        seen.iter()
            .any(|s| s.target.contains("requestor=arn%3Aaws%3Aiam"))
    );
    assert!(
        seen.iter()
            .any(|s| s.method == "POST" && !s.body.is_empty())
    );
    for s in &seen {
        let header = |name: &str| {
            s.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{} has no {name}", s.target))
                .to_owned()
        };
        assert_eq!(header("x-amz-security-token"), SESSION);
        let date = header("x-amz-date");
        let at = jiff::fmt::strtime::parse("%Y%m%dT%H%M%SZ", &date)
            .and_then(|t| t.to_datetime())
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC))
            .expect("an x-amz-date");
        let time = SystemTime::from(at.timestamp());
        let again = jitvm_cli::sigv4::signing_headers(
            &s.method,
            &format!("{endpoint}{}", s.target),
            &s.body,
            Credentials::new(KEY, SECRET, Some(SESSION.into()), None, "test"),
            REGION,
            "execute-api",
            time,
        )
        .expect("signs");
        let expected = again
            .iter()
            .find(|(n, _)| n == "authorization")
            .map(|(_, v)| v.clone());
        assert_eq!(Some(header("authorization")), expected, "{}", s.target);
    }
}

#[test]
fn sigv4_without_a_region_says_how_to_set_one() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitvm"))
        .arg("whoami")
        .env_clear()
        .env("HOME", "/nonexistent/jitvm-cli-test")
        .env("XDG_CONFIG_HOME", "/nonexistent/jitvm-cli-test")
        .env("JITVM_ENDPOINT", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("AWS_REGION"), "{stderr}");
}

//! The Slack app end to end: slash commands and button clicks signed as
//! Slack signs them, sent to the local host's real HTTP listener, with
//! moto behind it. Each test has its own moto region.

use std::sync::{Arc, Mutex};

use jitvm_tests::stack::{
    ADMIN, Instance, SLACK_SECRET, SLACK_TEAM, Stack, azure_vm, click_body, drain, enable, encode,
    port0, record, records_of, slack_signature, slash_body,
};
use reqwest::Method;
use serde_json::{Value, json};

const SLASH: &str = "/v1/chatops/slack";
const INTERACTIVE: &str = "/v1/chatops/slack/interactive";
const RESPONSE_URL: &str = "https://hooks.slack.com/commands/T0TEAM/1/x";

const ALICE: &str = "U0ALICE";
const BOB: &str = "U0BOB";
const CAROL: &str = "U0CAROL";

fn principal(user: &str) -> String {
    format!("slack:{SLACK_TEAM}/{user}")
}

/// Port 22 from 198.51.100.0/24 for at most an hour, for Alice, approved
/// by `approvers`.
fn ssh_policy(approvers: &[&str]) -> Value {
    json!({"ports": [{"number": 22, "protocol": "tcp",
        "allowedSourceAddressPrefixes": ["198.51.100.0/24"],
        "maxRequestAccessDuration": "PT1H"}],
        "requesters": [principal(ALICE)],
        "approvers": approvers.iter().map(|u| principal(u)).collect::<Vec<_>>()})
}

/// An instance with JIT enabled under `policy`, and its jitvm group.
async fn protected(stack: &Stack, policy: Value) -> (Instance, String) {
    let vm = stack.instance(&[]).await;
    let enabled = enable(stack, &vm.arn, policy).await;
    let group = enabled["firewall"]
        .as_str()
        .expect("the dedicated group")
        .to_owned();
    (vm, group)
}

/// Every piece of text a Slack message shows: its `text`, and the text of
/// each block and of each block's elements.
fn shown(message: &Value) -> String {
    fn text_of(v: &Value) -> Option<&str> {
        v.as_str().or_else(|| v["text"].as_str())
    }
    let mut out = vec![message["text"].as_str().unwrap_or_default().to_owned()];
    for block in message["blocks"].as_array().into_iter().flatten() {
        out.extend(text_of(&block["text"]).map(str::to_owned));
        for element in block["elements"].as_array().into_iter().flatten() {
            out.extend(text_of(&element["text"]).map(str::to_owned));
        }
    }
    out.join("\n")
}

/// Asserts a 200 answer shown only to the caller, and returns its text.
fn ephemeral(status: u16, message: &Value) -> String {
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["response_type"], "ephemeral", "{message}");
    shown(message)
}

/// Asserts an ephemeral refusal (the `:warning:` answer with its code) and
/// returns its text.
fn refusal(status: u16, message: &Value) -> String {
    let text = ephemeral(status, message);
    assert!(text.starts_with(":warning:"), "not a refusal: {text}");
    text
}

/// The request records of a Slack user, read as the admin.
async fn records_by(stack: &Stack, user: &str) -> Vec<Value> {
    let (status, body) = stack
        .call(
            Method::GET,
            &format!("/v1/requests?requestor={}", encode(&principal(user))),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["value"].as_array().cloned().unwrap_or_default()
}

/// The id of the only record of `vm`.
async fn only_record(stack: &Stack, vm: &str) -> Value {
    let records = records_of(stack, vm).await;
    assert_eq!(records.len(), 1, "{records:?}");
    records[0].clone()
}

fn id_of(record: &Value) -> String {
    record["id"].as_str().expect("a request id").to_owned()
}

/// Posts `body` with exactly `headers` (no Slack headers added), as a
/// caller that is not Slack might.
async fn post_raw(
    stack: &Stack,
    path: &str,
    body: &str,
    headers: &[(&str, String)],
) -> (u16, Value) {
    let mut req = stack
        .http
        .post(format!("{}{path}", stack.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned());
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let resp = req.send().await.expect("the host answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("a body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Asserts a 401 that is a JSON error naming the bad signature.
fn unauthorised(what: &str, status: u16, body: &Value) {
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(
        body["error"]["code"], "InvalidSlackSignature",
        "{what}: {body}"
    );
}

/// A stand-in for Slack's `response_url` on loopback: the URL to give, and
/// every JSON message posted to it.
async fn response_catcher() -> (String, Arc<Mutex<Vec<Value>>>) {
    use axum::extract::State;
    type Seen = Arc<Mutex<Vec<Value>>>;
    async fn catch(State(seen): State<Seen>, axum::Json(body): axum::Json<Value>) -> &'static str {
        seen.lock().expect("not poisoned").push(body);
        "ok"
    }
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/actions/T0TEAM/1/x", axum::routing::post(catch))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!(
        "http://{}/actions/T0TEAM/1/x",
        listener.local_addr().expect("bound address")
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

fn caught(seen: &Arc<Mutex<Vec<Value>>>) -> Vec<Value> {
    seen.lock().expect("not poisoned").clone()
}

// 1. Signatures.

#[tokio::test]
async fn only_commands_signed_with_the_apps_secret_within_five_minutes_are_obeyed() {
    let stack = Stack::start("eu-south-2").await;
    let (vm, group) = protected(&stack, ssh_policy(&[])).await;
    let iid = &vm.world.instance_id;
    let body = slash_body(
        SLACK_TEAM,
        ALICE,
        &format!("22 {iid} 1h from 198.51.100.7 -- fixing the deploy"),
        RESPONSE_URL,
    );
    let now = stack.now().as_second();
    let good = slack_signature(SLACK_SECRET, now, &body);

    let wrong = format!("v0={}", "0123456789abcdef".repeat(4));
    let (status, answer) = stack.slack_at(SLASH, &body, now, Some(wrong)).await;
    unauthorised("a wrong signature", status, &answer);

    let other_secret = slack_signature("another-apps-signing-secret-0000", now, &body);
    let (status, answer) = stack.slack_at(SLASH, &body, now, Some(other_secret)).await;
    unauthorised("another app's secret", status, &answer);

    let ts = ("x-slack-request-timestamp", now.to_string());
    let sig = ("x-slack-signature", good.clone());
    let (status, answer) = post_raw(&stack, SLASH, &body, std::slice::from_ref(&ts)).await;
    unauthorised("no signature header", status, &answer);
    let (status, answer) = post_raw(&stack, SLASH, &body, std::slice::from_ref(&sig)).await;
    unauthorised("no timestamp header", status, &answer);
    let (status, answer) = post_raw(&stack, SLASH, &body, &[]).await;
    unauthorised("no Slack headers at all", status, &answer);

    for (what, at) in [("6 minutes old", now - 360), ("6 minutes ahead", now + 360)] {
        // Correctly signed for its own timestamp, but outside the window.
        let (status, answer) = stack.slack_at(SLASH, &body, at, None).await;
        unauthorised(what, status, &answer);
    }

    // A captured command replayed with a fresh timestamp but the signature
    // it came with.
    let (status, answer) = stack
        .slack_at(SLASH, &body, now + 30, Some(good.clone()))
        .await;
    unauthorised("a replay with a new timestamp", status, &answer);
    // The same signature on a body that was changed on the way.
    let tampered = body.replace("198.51.100.7", "198.51.100.8");
    let (status, answer) = stack
        .slack_at(SLASH, &tampered, now, Some(good.clone()))
        .await;
    unauthorised("a changed body", status, &answer);

    assert!(records_of(&stack, &vm.arn).await.is_empty());
    drain(&stack).await;
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());

    // The genuine command, as Slack sent it.
    let (status, answer) = stack.slack_at(SLASH, &body, now, Some(good)).await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("granted"), "{text}");
    let accepted = only_record(&stack, &vm.arn).await;
    assert_eq!(accepted["requestor"], principal(ALICE));
    assert_eq!(accepted["status"], "Approved");
    assert!(text.contains(&id_of(&accepted)), "{text}");
    drain(&stack).await;
    assert_eq!(stack.ingress_rules_of_group(&group).await.len(), 1);
}

#[tokio::test]
async fn the_same_signed_command_twice_is_one_request() {
    let stack = Stack::start("eu-central-2").await;
    let (vm, group) = protected(&stack, ssh_policy(&[])).await;
    let body = slash_body(
        SLACK_TEAM,
        ALICE,
        &format!("22 {} 1h from 198.51.100.7", vm.world.instance_id),
        RESPONSE_URL,
    );
    let now = stack.now().as_second();
    let signature = slack_signature(SLACK_SECRET, now, &body);

    let (status, first) = stack
        .slack_at(SLASH, &body, now, Some(signature.clone()))
        .await;
    let text = ephemeral(status, &first);
    assert!(text.contains("granted"), "{text}");
    let id = id_of(&only_record(&stack, &vm.arn).await);

    // Slack retries, or someone replays the captured call within the window.
    let (status, second) = stack
        .slack_at(SLASH, &body, now, Some(signature.clone()))
        .await;
    let text = refusal(status, &second);
    assert!(text.contains("already received"), "{text}");
    assert!(text.contains(&id), "{text}");
    // The signature's hex digits in upper case are the same signature (and
    // pass the check): still the same command, not a second request.
    let shouted = format!("v0={}", signature["v0=".len()..].to_ascii_uppercase());
    let (status, third) = stack.slack_at(SLASH, &body, now, Some(shouted)).await;
    let text = refusal(status, &third);
    assert!(text.contains("already received"), "{text}");
    assert!(text.contains(&id), "{text}");

    assert_eq!(only_record(&stack, &vm.arn).await["id"], id.as_str());
    drain(&stack).await;
    let rules = stack.ingress_rules_of_group(&group).await;
    assert_eq!(rules.len(), 1, "{rules:?}");

    // Another command sent five times at once: one request, four answers
    // that it was already received.
    let body = slash_body(
        SLACK_TEAM,
        ALICE,
        &format!("22 {} 30m from 198.51.100.9", vm.world.instance_id),
        RESPONSE_URL,
    );
    let now = stack.now().as_second();
    let answers = futures_join(
        (0..5)
            .map(|_| stack.slack_at(SLASH, &body, now, None))
            .collect(),
    )
    .await;
    let mut granted = 0;
    for (status, answer) in &answers {
        let text = ephemeral(*status, answer);
        if text.contains("granted") {
            granted += 1;
        } else {
            assert!(text.contains("already received"), "{text}");
        }
    }
    assert_eq!(granted, 1, "{answers:?}");
    assert_eq!(records_of(&stack, &vm.arn).await.len(), 2);
    drain(&stack).await;
    let rules = stack.ingress_rules_of_group(&group).await;
    assert_eq!(rules.len(), 2, "{rules:?}");
}

/// Runs `futures` at the same time and returns their outputs in order.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

// 2. The command parser, through HTTP.

#[tokio::test]
async fn help_and_both_ways_of_naming_the_vm() {
    let stack = Stack::start("ap-south-2").await;
    let (vm, group) = protected(&stack, ssh_policy(&[])).await;

    for text in ["help", "", "  HELP "] {
        let (status, answer) = stack.slash(ALICE, text).await;
        let shown = ephemeral(status, &answer);
        assert!(
            shown.contains("Just-in-time VM access"),
            "{text:?}: {shown}"
        );
        assert!(shown.contains("/jit status"), "{shown}");
        assert!(shown.contains("from"), "{shown}");
    }

    // By instance id.
    let (status, answer) = stack
        .slash(
            ALICE,
            &format!("22 {} 1h from 198.51.100.7", vm.world.instance_id),
        )
        .await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("granted"), "{text}");
    // By the full ARN, from another address.
    let (status, answer) = stack
        .slash(ALICE, &format!("22 {} 30m from 198.51.100.8", vm.arn))
        .await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("granted"), "{text}");

    let records = records_of(&stack, &vm.arn).await;
    assert_eq!(records.len(), 2, "{records:?}");
    for r in &records {
        assert_eq!(r["virtualMachines"][0]["id"], vm.arn.as_str());
        assert_eq!(r["requestor"], principal(ALICE));
    }
    drain(&stack).await;
    let mut sources: Vec<String> = stack
        .ingress_rules_of_group(&group)
        .await
        .iter()
        .map(|r| r.cidr_ipv4().unwrap_or_default().to_owned())
        .collect();
    sources.sort();
    assert_eq!(sources, ["198.51.100.7/32", "198.51.100.8/32"]);
}

#[tokio::test]
async fn a_request_without_a_source_is_refused_and_says_why() {
    let stack = Stack::start("ap-southeast-3").await;
    let (vm, group) = protected(&stack, ssh_policy(&[])).await;
    let (status, answer) = stack
        .slash(ALICE, &format!("22 {} 1h", vm.world.instance_id))
        .await;
    let text = refusal(status, &answer);
    assert!(text.contains("address is required"), "{text}");
    assert!(text.contains("from 198.51.100.7"), "an example: {text}");
    assert!(text.contains("InvalidCommand"), "{text}");
    assert!(records_of(&stack, &vm.arn).await.is_empty());
    drain(&stack).await;
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
}

#[tokio::test]
async fn hostile_text_gets_an_escaped_refusal() {
    let stack = Stack::start("ap-southeast-4").await;
    let (vm, group) = protected(&stack, ssh_policy(&[])).await;
    let iid = &vm.world.instance_id;
    let texts = [
        "a".repeat(5000),
        format!("22 {iid} 1h from 198.51.100.7 {}", "w".repeat(3900)),
        format!("22 {} 1h from 198.51.100.7", "v".repeat(3000)),
        format!("22 {iid} 1h from 198.51.100.7 -- fix\u{0}it"),
        format!("22 {iid}\u{1b}[31m 1h from 198.51.100.7"),
        format!("22 {iid} 1h from 198.51.100.7\r\u{7}"),
        "<!channel> open 22 now".to_owned(),
        "22 <!channel> 1h from 198.51.100.7".to_owned(),
        "&lt;!channel&gt; 22 1h from 198.51.100.7".to_owned(),
        format!("22 {iid} &lt;!here&gt; 1h from 198.51.100.7"),
        format!("@here 22 {iid} 1h from 198.51.100.7"),
        "22 <@U0BOB> 1h from 198.51.100.7".to_owned(),
        "22 &lt;https://evil.example|click me&gt; 1h from 198.51.100.7".to_owned(),
        "22 ウェブサーバー 1h from 198.51.100.7 -- 🚀 日本語".to_owned(),
        "; rm -rf /".to_owned(),
        format!("22 {iid};rm -rf / 1h from 198.51.100.7"),
        format!("22 {iid} 1h from 198.51.100.7; rm -rf /"),
        "approve ../../etc/passwd".to_owned(),
        "deny \u{202e}abc".to_owned(),
        "revoke <!everyone>".to_owned(),
        format!("99999 {iid} 1h from 198.51.100.7"),
        format!("22 {iid} 10 years from 198.51.100.7"),
        format!("22 {iid} 1h from 0.0.0.0/-1"),
        "<<<>>> &amp;&amp; <|> -- -- --".to_owned(),
    ];
    for text in &texts {
        let (status, answer) = stack.slash(ALICE, text).await;
        let shown = refusal(status, &answer);
        let raw = answer.to_string();
        for markup in [
            "<!channel>",
            "<!here>",
            "<!everyone>",
            "<@U0BOB>",
            "<https://",
        ] {
            assert!(!raw.contains(markup), "{text:?} -> {markup} in {raw}");
        }
        for c in ['\u{0}', '\u{7}', '\u{1b}', '\u{202e}'] {
            assert!(!raw.contains(c), "{text:?} -> {c:?} in {raw}");
        }
        assert!(shown.chars().count() < 8000, "{text:?}: {shown}");
    }
    // The text a person typed comes back escaped, not dropped.
    let (_, answer) = stack
        .slash(ALICE, "&lt;!channel&gt; 22 1h from 198.51.100.7")
        .await;
    assert!(shown(&answer).contains("&lt;!channel&gt;"), "{answer}");

    // The host is still there, and nothing was asked for or opened.
    let (status, answer) = stack.slash(ALICE, "help").await;
    ephemeral(status, &answer);
    assert!(records_by(&stack, ALICE).await.is_empty());
    drain(&stack).await;
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
}

// 3. The policy refuses.

#[tokio::test]
async fn requests_the_policy_refuses_name_the_reason_and_open_nothing() {
    let stack = Stack::start("il-central-1").await;
    let (vm, group) = protected(&stack, ssh_policy(&[])).await;
    let iid = &vm.world.instance_id;
    let cases = [
        (
            ALICE,
            format!("3389 {iid} 1h from 198.51.100.7"),
            "PortNotInPolicy",
            "does not cover this port",
        ),
        (
            ALICE,
            format!("22 {iid} 1h from 203.0.113.5"),
            "SourceNotAllowed",
            "not inside the allowed source prefixes",
        ),
        (
            ALICE,
            format!("22 {iid} 1h from 198.51.0.0/16"),
            "SourceNotAllowed",
            "not inside the allowed source prefixes",
        ),
        (
            ALICE,
            format!("22 {iid} 2h from 198.51.100.7"),
            "DurationExceedsMaximum",
            "longer than the policy's maximum",
        ),
        (
            CAROL,
            format!("22 {iid} 1h from 198.51.100.7"),
            "NotRequester",
            "not among the requesters",
        ),
    ];
    for (user, text, code, reason) in &cases {
        let (status, answer) = stack.slash(user, text).await;
        let shown = refusal(status, &answer);
        assert!(shown.contains(code), "{text}: {shown}");
        assert!(shown.contains(reason), "{text}: {shown}");
    }
    // A VM nobody enabled is not found by its short name.
    let (status, answer) = stack
        .slash(ALICE, "22 i-0123456789abcdef0 1h from 198.51.100.7")
        .await;
    let shown = refusal(status, &answer);
    assert!(shown.contains("no VM"), "{shown}");

    assert!(records_of(&stack, &vm.arn).await.is_empty());
    drain(&stack).await;
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
}

// 4. Granted, listed, revoked.

#[tokio::test]
async fn a_granted_request_opens_shows_in_status_and_revokes() {
    let stack = Stack::start("me-central-1").await;
    let (vm, group) = protected(&stack, ssh_policy(&[])).await;
    let iid = &vm.world.instance_id;

    let (status, answer) = stack.slash(ALICE, "status").await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("no open access"), "{text}");

    let (status, answer) = stack
        .slash(
            ALICE,
            &format!("22 {iid} 1h from 198.51.100.7 -- fixing the deploy"),
        )
        .await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("granted"), "{text}");
    assert!(text.contains(iid.as_str()), "{text}");
    let accepted = only_record(&stack, &vm.arn).await;
    let id = id_of(&accepted);
    assert!(text.contains(&id), "{text}");
    assert_eq!(accepted["status"], "Approved");
    assert_eq!(accepted["requestor"], principal(ALICE));
    assert_eq!(accepted["justification"], "fixing the deploy");

    drain(&stack).await;
    let opened = record(&stack, &id).await;
    assert_eq!(port0(&opened)["status"], "Initiated", "{opened}");
    let rules = stack.ingress_rules_of_group(&group).await;
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].cidr_ipv4(), Some("198.51.100.7/32"));
    assert_eq!(
        (rules[0].from_port(), rules[0].to_port()),
        (Some(22), Some(22))
    );

    let (status, answer) = stack.slash(ALICE, "status").await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("1 open, 0 waiting"), "{text}");
    assert!(text.contains(iid.as_str()) && text.contains(&id), "{text}");
    assert!(text.contains("198.51.100.7/32"), "{text}");
    assert!(
        text.contains("1 h left") || text.contains("59 min left") || text.contains("60 min left"),
        "{text}"
    );
    // Twenty minutes later, the time left is shorter.
    stack.advance(20 * 60);
    let (status, answer) = stack.slash(ALICE, "status").await;
    let text = ephemeral(status, &answer);
    assert!(
        text.contains("40 min left") || text.contains("39 min left"),
        "{text}"
    );

    // Bob is neither the requestor nor an admin.
    let (status, answer) = stack.slash(BOB, &format!("revoke {id}")).await;
    let text = refusal(status, &answer);
    assert!(text.contains("only the requestor"), "{text}");
    assert_eq!(stack.ingress_rules_of_group(&group).await.len(), 1);

    let (status, answer) = stack.slash(ALICE, &format!("revoke {id}")).await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("revoked"), "{text}");
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
    let closed = record(&stack, &id).await;
    assert_eq!(port0(&closed)["status"], "Revoked");
    assert_eq!(port0(&closed)["statusReason"], "UserRequested");

    let (status, answer) = stack.slash(ALICE, "status").await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("no open access"), "{text}");
}

// 5. Approvals from Slack.

#[tokio::test]
async fn approvals_and_denials_from_slack() {
    let stack = Stack::start("ca-west-1").await;
    let (vm, group) = protected(&stack, ssh_policy(&[BOB])).await;
    let iid = &vm.world.instance_id;
    let (hook, seen) = response_catcher().await;

    let (status, answer) = stack
        .slash(
            ALICE,
            &format!("22 {iid} 1h from 198.51.100.7 -- urgent &lt;!channel&gt; fix"),
        )
        .await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("waits for approval"), "{text}");
    assert!(text.contains("<@U0BOB>"), "{text}");
    let first = only_record(&stack, &vm.arn).await;
    let id = id_of(&first);
    assert_eq!(first["status"], "PendingApproval");
    drain(&stack).await;
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());

    // Alice may not approve her own request.
    let (status, answer) = stack.slash(ALICE, &format!("approve {id}")).await;
    let text = refusal(status, &answer);
    assert!(text.contains("not an approver"), "{text}");
    assert_eq!(record(&stack, &id).await["status"], "PendingApproval");
    // Her own request waits for someone else, not for her.
    let (status, answer) = stack.slash(ALICE, "pending").await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("No request is waiting"), "{text}");
    let (status, answer) = stack.slash(ALICE, "status").await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("0 open, 1 waiting"), "{text}");

    // Bob sees it with its buttons.
    let (status, answer) = stack.slash(BOB, "pending").await;
    let text = ephemeral(status, &answer);
    assert!(
        text.contains("<@U0ALICE>") && text.contains(iid.as_str()),
        "{text}"
    );
    assert!(text.contains("urgent &lt;!channel&gt; fix"), "{text}");
    assert!(!answer.to_string().contains("<!channel>"), "{answer}");
    let buttons: Vec<&Value> = answer["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().into_iter().flatten())
        .collect();
    let pairs: Vec<(&str, &str)> = buttons
        .iter()
        .map(|b| {
            (
                b["action_id"].as_str().unwrap_or_default(),
                b["value"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [("approve", id.as_str()), ("deny", id.as_str())],
        "{answer}"
    );

    // A click that Slack did not sign changes nothing and posts nothing.
    let click = click_body(SLACK_TEAM, BOB, "approve", &id, &hook);
    let now = stack.now().as_second();
    let forged = slack_signature("not-the-apps-secret", now, &click);
    let (status, body) = stack.slack_at(INTERACTIVE, &click, now, Some(forged)).await;
    unauthorised("a forged click", status, &body);
    let (status, body) = stack.slack_at(INTERACTIVE, &click, now - 400, None).await;
    unauthorised("a stale click", status, &body);
    assert_eq!(record(&stack, &id).await["status"], "PendingApproval");
    assert!(caught(&seen).is_empty());

    // Bob clicks Approve.
    let (status, body) = stack.slack_at(INTERACTIVE, &click, now, None).await;
    assert_eq!(status, 200, "{body}");
    let posted = caught(&seen);
    assert_eq!(posted.len(), 1, "{posted:?}");
    let message = &posted[0];
    assert_eq!(message["replace_original"], true, "{message}");
    let text = shown(message);
    assert!(text.contains("approved"), "{text}");
    assert!(text.contains(&id), "{text}");
    let approved = record(&stack, &id).await;
    assert_eq!(approved["status"], "Approved", "{approved}");
    assert_eq!(approved["decidedBy"], principal(BOB));
    drain(&stack).await;
    let rules = stack.ingress_rules_of_group(&group).await;
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].cidr_ipv4(), Some("198.51.100.7/32"));
    // What Alice typed reaches the rule's description only in the
    // characters EC2 accepts there.
    let description = rules[0].description().unwrap_or_default();
    assert!(description.contains(&id), "{description}");
    assert!(
        description
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c)),
        "{description}"
    );
    assert_eq!(port0(&record(&stack, &id).await)["status"], "Initiated");

    // Clicking again finds it decided.
    let click_again = click_body(SLACK_TEAM, BOB, "approve", &id, &hook);
    let (status, _) = stack
        .slack_at(INTERACTIVE, &click_again, stack.now().as_second() + 1, None)
        .await;
    assert_eq!(status, 200);
    let posted = caught(&seen);
    assert_eq!(posted.len(), 2, "{posted:?}");
    assert_eq!(posted[1]["replace_original"], true);
    assert!(shown(&posted[1]).contains("NotPending"), "{}", posted[1]);

    // A second request, denied by command with a reason.
    let (status, answer) = stack
        .slash(ALICE, &format!("22 {iid} 30m from 198.51.100.8"))
        .await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("waits for approval"), "{text}");
    let second = records_of(&stack, &vm.arn)
        .await
        .into_iter()
        .find(|r| r["id"] != id.as_str())
        .expect("the second request");
    let second_id = id_of(&second);
    let (status, answer) = stack
        .slash(BOB, &format!("deny {second_id} -- not now"))
        .await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("denied"), "{text}");
    let denied = record(&stack, &second_id).await;
    assert_eq!(denied["status"], "Denied", "{denied}");
    assert_eq!(denied["decidedBy"], principal(BOB));
    assert_eq!(port0(&denied)["status"], "Revoked");
    assert_eq!(port0(&denied)["statusReason"], "Denied");
    assert!(denied.to_string().contains("not now"), "{denied}");
    drain(&stack).await;
    let rules = stack.ingress_rules_of_group(&group).await;
    assert_eq!(rules.len(), 1, "only the approved grant: {rules:?}");

    // A third, denied with the button.
    let (status, answer) = stack
        .slash(ALICE, &format!("22 {iid} 15m from 198.51.100.9"))
        .await;
    assert!(ephemeral(status, &answer).contains("waits for approval"));
    let third = records_of(&stack, &vm.arn)
        .await
        .into_iter()
        .find(|r| r["id"] != id.as_str() && r["id"] != second_id.as_str())
        .expect("the third request");
    let third_id = id_of(&third);
    let click = click_body(SLACK_TEAM, BOB, "deny", &third_id, &hook);
    let (status, _) = stack
        .slack_at(INTERACTIVE, &click, stack.now().as_second(), None)
        .await;
    assert_eq!(status, 200);
    let posted = caught(&seen);
    assert_eq!(posted.len(), 3, "{posted:?}");
    assert_eq!(posted[2]["replace_original"], true);
    assert!(shown(&posted[2]).contains("denied"), "{}", posted[2]);
    let denied = record(&stack, &third_id).await;
    assert_eq!(denied["status"], "Denied", "{denied}");
    assert_eq!(port0(&denied)["statusReason"], "Denied");

    drain(&stack).await;
    let rules = stack.ingress_rules_of_group(&group).await;
    assert_eq!(rules.len(), 1, "only the approved grant: {rules:?}");
    let (status, answer) = stack.slash(BOB, "pending").await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("No request is waiting"), "{text}");
}

// The short names of Azure VMs.

#[tokio::test]
async fn an_azure_vm_is_named_by_its_name_or_group_and_name() {
    let stack = Stack::start("mx-central-1").await;
    let (vm, nsg) = azure_vm(&stack.arm, "rg-chat", "web-1", "10.0.0.4");
    let (twin, _) = azure_vm(&stack.arm, "rg-other", "web-1", "10.0.0.5");
    for id in [&vm, &twin] {
        enable(&stack, id, ssh_policy(&[])).await;
    }
    let allows = |arm: &jitvm_tests::arm_fake::ArmFake| -> Vec<Value> {
        arm.rules(&nsg)
            .into_iter()
            .filter(|r| r["properties"]["access"] == "Allow")
            .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with("jitvm-")))
            .collect()
    };

    // Two VMs are called web-1: the answer lists both and opens nothing.
    let (status, answer) = stack.slash(ALICE, "22 web-1 1h from 198.51.100.7").await;
    let text = refusal(status, &answer);
    assert!(text.contains("names 2 VMs"), "{text}");
    assert!(
        text.contains("rg-chat") && text.contains("rg-other"),
        "{text}"
    );
    assert!(records_by(&stack, ALICE).await.is_empty());

    let (status, answer) = stack
        .slash(
            ALICE,
            "22 RG-CHAT/web-1 1h from 198.51.100.7 -- fix &amp; ship",
        )
        .await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("granted"), "{text}");
    assert!(text.contains("web-1"), "{text}");
    let accepted = only_record(&stack, &vm).await;
    assert_eq!(accepted["justification"], "fix & ship");
    assert!(records_of(&stack, &twin).await.is_empty());
    drain(&stack).await;
    let opened = allows(&stack.arm);
    assert_eq!(opened.len(), 1, "{opened:?}");
    let p = &opened[0]["properties"];
    assert_eq!(p["destinationPortRange"], "22");
    assert!(
        p["sourceAddressPrefix"]
            .as_str()
            .is_some_and(|s| s.starts_with("198.51.100.7")),
        "{p}"
    );
    assert_eq!(p["destinationAddressPrefix"], "10.0.0.4");

    let id = id_of(&accepted);
    let (status, answer) = stack.slash(ALICE, &format!("revoke {id}")).await;
    assert!(ephemeral(status, &answer).contains("revoked"));
    assert!(allows(&stack.arm).is_empty());
}

#[tokio::test]
async fn pending_lists_what_waits_for_this_approver_on_every_vm_they_approve() {
    let stack = Stack::start("ap-northeast-3").await;
    let (a, _) = protected(&stack, ssh_policy(&[CAROL])).await;
    let (b, _) = protected(&stack, ssh_policy(&[BOB])).await;
    let ask = |vm: &Instance| {
        format!(
            "22 {} 30m from 198.51.100.7 -- pending",
            vm.world.instance_id
        )
    };
    let mut on_a = Vec::new();
    for _ in 0..3 {
        let (status, answer) = stack.slash(ALICE, &ask(&a)).await;
        assert!(ephemeral(status, &answer).contains("approval"), "{answer}");
        on_a.push(answer);
        // Distinct signatures (a new timestamp) make distinct requests.
        stack.advance(1);
    }
    let (status, answer) = stack.slash(ALICE, &ask(&b)).await;
    assert!(ephemeral(status, &answer).contains("approval"), "{answer}");
    let waiting = |user: &'static str| {
        let stack = &stack;
        async move {
            let (status, answer) = stack.slash(user, "pending").await;
            assert_eq!(status, 200, "{answer}");
            answer["blocks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| b["type"] == "actions")
                .flat_map(|b| b["elements"].as_array().into_iter().flatten())
                .filter(|e| e["action_id"] == "approve")
                .filter_map(|e| e["value"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };
    let ids_of = |vm: &Instance| {
        let stack = &stack;
        let arn = vm.arn.clone();
        async move {
            records_of(stack, &arn)
                .await
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect::<std::collections::BTreeSet<_>>()
        }
    };
    let for_bob: std::collections::BTreeSet<String> = waiting(BOB).await.into_iter().collect();
    assert_eq!(for_bob, ids_of(&b).await, "Bob approves B only");
    let for_carol: std::collections::BTreeSet<String> = waiting(CAROL).await.into_iter().collect();
    assert_eq!(for_carol, ids_of(&a).await, "Carol approves A only");
    assert_eq!(for_carol.len(), 3);
    assert!(waiting(ALICE).await.is_empty(), "Alice approves nothing");
    // Past the approval timeout nothing waits any more.
    stack.advance(3600);
    assert!(waiting(CAROL).await.is_empty());
}

// 7. Workspaces, and who a Slack member is.

/// A slash command typed by `user` in workspace `team` of Enterprise Grid
/// organisation `enterprise`, as Slack posts it.
fn grid_slash(team: &str, enterprise: &str, user: &str, text: &str) -> String {
    let mut body = slash_body(team, user, text, RESPONSE_URL);
    body.push_str(&format!(
        "&enterprise_id={enterprise}&is_enterprise_install=false"
    ));
    body
}

/// A click on `action` of request `id` by `user` of `team` in
/// organisation `enterprise`, on a message of workspace `host`.
fn grid_click(
    host: &str,
    team: &str,
    enterprise: &str,
    user: &str,
    action: &str,
    id: &str,
) -> String {
    jitvm_tests::stack::interaction_body(&json!({
        "type": "block_actions",
        "enterprise": {"id": enterprise, "name": "Grid"},
        "team": {"id": host, "domain": "example"},
        "user": {"id": user, "team_id": team, "username": "someone"},
        "response_url": "https://hooks.slack.com/actions/T0TEAM/1/x",
        "actions": [{"type": "button", "action_id": action, "value": id}],
    }))
}

#[tokio::test]
async fn forged_or_missing_team_and_user_fields_are_refused_and_write_nothing() {
    let stack = Stack::start("af-south-1").await;
    let anyone = json!({"ports": [{"number": 22, "protocol": "tcp",
        "allowedSourceAddressPrefix": "*", "maxRequestAccessDuration": "PT3H"}]});
    let (vm, group) = protected(&stack, anyone).await;
    let iid = &vm.world.instance_id;
    let text = format!("22 {iid} 3h from 0.0.0.0/0 -- in");
    let ask = slash_body(SLACK_TEAM, ALICE, &text, RESPONSE_URL);
    let without = |field: &str| {
        ask.split('&')
            .filter(|pair| !pair.starts_with(&format!("{field}=")))
            .collect::<Vec<_>>()
            .join("&")
    };
    let with = |field: &str, value: &str| {
        format!(
            "{}&{field}={}",
            without(field),
            encode(value).replace("%2D", "-")
        )
    };
    let hostile = [
        ("no team_id", without("team_id")),
        ("no user_id", without("user_id")),
        ("an empty team_id", with("team_id", "")),
        ("an empty user_id", with("user_id", "")),
        // Two workspaces in one command: ours first, a stranger's second.
        ("team_id twice", format!("{ask}&team_id=T0STRANGER")),
        ("user_id twice", format!("{ask}&user_id=U0ADMIN")),
        (
            "a team_id with a user in it",
            with("team_id", "T0TEAM/U0ADMIN"),
        ),
        (
            "a user_id climbing out",
            with("user_id", "U0ALICE/../U0ADMIN"),
        ),
        ("a team_id in lower case", with("team_id", "t0team")),
        ("a user_id with a space", with("user_id", "U0ALICE U0ADMIN")),
    ];
    for (what, body) in hostile {
        let now = stack.now().as_second();
        let (status, answer) = stack.slack_at(SLASH, &body, now, None).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {answer}"
        );
    }
    // A workspace of an organisation nobody let in is a stranger too.
    let mixed = format!(
        "{}&enterprise_id=E0STRANGER",
        slash_body("T0STRANGER", "U0GUEST", &text, RESPONSE_URL)
    );
    let now = stack.now().as_second();
    let (status, answer) = stack.slack_at(SLASH, &mixed, now, None).await;
    let refused = refusal(status, &answer);
    assert!(refused.contains("WorkspaceNotAllowed"), "{refused}");

    assert!(records_of(&stack, &vm.arn).await.is_empty(), "no record");
    drain(&stack).await;
    assert!(
        stack.ingress_rules_of_group(&group).await.is_empty(),
        "nothing opened"
    );
}

#[tokio::test]
async fn a_grid_member_is_one_person_in_every_workspace_of_the_organisation() {
    let stack = Stack::start("ap-east-1").await;
    let (vm, _) = protected(
        &stack,
        json!({"ports": [{"number": 22, "protocol": "tcp",
            "allowedSourceAddressPrefixes": ["198.51.100.0/24"]}],
            "approvers": ["slack:T0TEAM/*"]}),
    )
    .await;
    let iid = &vm.world.instance_id;
    // Alice asks from another workspace of the organisation the stack lets
    // in whole.
    let ask = grid_slash(
        "T0OTHER",
        "E0GRID",
        "W0ALICE",
        &format!("22 {iid} 1h from 198.51.100.7 -- grid"),
    );
    let (status, answer) = stack
        .slack_at(SLASH, &ask, stack.now().as_second(), None)
        .await;
    let text = ephemeral(status, &answer);
    assert!(text.contains("waits for approval"), "{text}");
    let pending = only_record(&stack, &vm.arn).await;
    assert_eq!(pending["requestor"], "slack:T0OTHER/W0ALICE");
    let id = id_of(&pending);

    // From the approvers' workspace she matches `slack:T0TEAM/*`, and is
    // still the one who asked.
    for click in [
        grid_click("T0TEAM", "T0TEAM", "E0GRID", "W0ALICE", "approve", &id),
        click_body(SLACK_TEAM, "W0ALICE", "approve", &id, RESPONSE_URL),
    ] {
        let (status, answer) = stack
            .slack_at(INTERACTIVE, &click, stack.now().as_second(), None)
            .await;
        assert_eq!(status, 200, "{answer}");
        assert!(shown(&answer).contains("own request"), "{answer}");
        assert_eq!(record(&stack, &id).await["status"], "PendingApproval");
    }

    // A member of another organisation is refused before anything is read.
    let stranger = grid_click("T0TEAM", "T0ELSE", "E0ELSE", "W0MALLORY", "approve", &id);
    let (status, answer) = stack
        .slack_at(INTERACTIVE, &stranger, stack.now().as_second(), None)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(shown(&answer).contains("WorkspaceNotAllowed"), "{answer}");
    assert_eq!(record(&stack, &id).await["status"], "PendingApproval");

    // A guest of a shared channel clicks in our organisation's workspace:
    // the payload's organisation is where the click happened, not theirs.
    let guest = jitvm_tests::stack::interaction_body(&json!({
        "type": "block_actions",
        "enterprise": {"id": "E0GRID", "name": "Grid"},
        "team": {"id": "T0TEAM", "domain": "example", "enterprise_id": "E0GRID"},
        "user": {"id": "U0GUEST", "team_id": "T0GUESTS", "username": "guest"},
        "response_url": "https://hooks.slack.com/actions/T0TEAM/1/x",
        "actions": [{"type": "button", "action_id": "approve", "value": id}],
    }));
    let (status, answer) = stack
        .slack_at(INTERACTIVE, &guest, stack.now().as_second(), None)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(shown(&answer).contains("WorkspaceNotAllowed"), "{answer}");
    assert!(shown(&answer).contains("T0GUESTS"), "{answer}");
    assert_eq!(record(&stack, &id).await["status"], "PendingApproval");

    // Bob, of the approvers' workspace, approves.
    let click = click_body(SLACK_TEAM, BOB, "approve", &id, RESPONSE_URL);
    let (status, answer) = stack
        .slack_at(INTERACTIVE, &click, stack.now().as_second(), None)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(record(&stack, &id).await["status"], "Approved");
}

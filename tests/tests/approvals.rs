//! Approvals end to end (moto, through the HTTP API): who may decide, what
//! a denial records, requests that wait too long, and an approval checked
//! against the policy as it is when it is given.

use jitvm_tests::stack::{
    ADMIN, ALICE, AUDITOR, BOB, CAROL, Stack, act, ask, drain, enable, port0, put_policy, record,
    request,
};
use reqwest::Method;
use serde_json::{Value, json};

fn policy(approvers: &[&str]) -> Value {
    json!({"ports": [{"number": 22, "protocol": "tcp",
        "allowedSourceAddressPrefixes": ["198.51.100.0/24"],
        "maxRequestAccessDuration": "PT3H"}],
        "requesters": ["local:alice", "local:bob"],
        "approvers": approvers})
}

fn ssh(source: &str) -> Value {
    json!({"number": 22, "duration": "PT30M", "allowedSourceAddressPrefix": source})
}

async fn decide(
    stack: &Stack,
    id: &str,
    verb: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    stack
        .call(
            Method::POST,
            &format!("/v1/requests/{id}/{verb}"),
            Some(token),
            body.map(|b| b.to_string()),
        )
        .await
}

async fn pending(stack: &Stack, token: &str, vm: &str) -> String {
    let (status, body) = request(stack, token, ask(vm, ssh("198.51.100.7"))).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("PendingApproval")),
        "{body}"
    );
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn only_another_approver_decides_and_a_denial_records_why() {
    let stack = Stack::start("ap-southeast-3").await;
    let vm = stack.instance(&[]).await;
    let group = enable(&stack, &vm.arn, policy(&["local:bob", "local:carol"])).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();

    let id = pending(&stack, ALICE, &vm.arn).await;
    // The requestor, an admin and an auditor are not approvers of it.
    for token in [ALICE, ADMIN, AUDITOR] {
        let (status, body) = decide(&stack, &id, "approve", token, None).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(decide(&stack, &id, "deny", token, None).await.0, 403);
    }
    let (status, denied) = decide(
        &stack,
        &id,
        "deny",
        BOB,
        Some(json!({"reason": "not during the change freeze"})),
    )
    .await;
    assert_eq!(
        (status, denied["status"].as_str()),
        (200, Some("Denied")),
        "{denied}"
    );
    assert_eq!(denied["decidedBy"], "local:bob");
    assert_eq!(port0(&denied)["status"], "Revoked");
    assert_eq!(port0(&denied)["statusReason"], "Denied");
    assert!(
        port0(&denied)["message"]
            .as_str()
            .is_some_and(|m| m.contains("not during the change freeze")),
        "{denied}"
    );
    // Decided once: neither a second denial nor an approval changes it.
    assert_eq!(decide(&stack, &id, "approve", CAROL, None).await.0, 409);
    assert_eq!(decide(&stack, &id, "deny", CAROL, None).await.0, 409);
    drain(&stack).await;
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());

    // A requestor who is also an approver needs the other approver.
    let id = pending(&stack, BOB, &vm.arn).await;
    assert_eq!(decide(&stack, &id, "approve", BOB, None).await.0, 403);
    let (status, approved) = decide(&stack, &id, "approve", CAROL, None).await;
    assert_eq!(
        (status, approved["decidedBy"].as_str()),
        (200, Some("local:carol"))
    );
    drain(&stack).await;
    assert_eq!(port0(&record(&stack, &id).await)["status"], "Initiated");
    assert_eq!(stack.ingress_rules_of_group(&group).await.len(), 1);

    // A deny body is checked like any other input.
    let id = pending(&stack, ALICE, &vm.arn).await;
    let (status, body) = decide(&stack, &id, "deny", BOB, Some(json!({"why": "x"}))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("InvalidBody"))
    );
    let (status, body) = decide(&stack, &id, "deny", BOB, Some(json!({"reason": "a\u{7}b"}))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("InvalidReason"))
    );
    assert_eq!(record(&stack, &id).await["status"], "PendingApproval");
}

#[tokio::test]
async fn a_policy_whose_only_approver_is_the_requestor_refuses_at_once() {
    let stack = Stack::start("ap-southeast-4").await;
    let vm = stack.instance(&[]).await;
    enable(&stack, &vm.arn, policy(&["local:alice"])).await;
    let (status, body) = request(&stack, ALICE, ask(&vm.arn, ssh("198.51.100.7"))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "NoOtherApprover");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another approver")
    );
    // Bob is not the approver, so his request waits for Alice.
    pending(&stack, BOB, &vm.arn).await;
}

#[tokio::test]
async fn a_request_nobody_decides_on_is_denied_after_the_timeout() {
    let stack = Stack::start("eu-central-2").await;
    let vm = stack.instance(&[]).await;
    enable(&stack, &vm.arn, policy(&["local:bob"])).await;
    let swept = pending(&stack, ALICE, &vm.arn).await;
    let asked_late = pending(&stack, ALICE, &vm.arn).await;

    // Not yet: 59 minutes in, the sweep leaves both alone.
    stack.advance(59 * 60);
    let summary = stack.host.sweep_once(stack.now()).await.unwrap();
    assert_eq!(summary.approvals_timed_out, 0);
    assert_eq!(record(&stack, &swept).await["status"], "PendingApproval");

    // An hour in (the default JITVM_APPROVAL_TIMEOUT), an approval comes
    // too late even before the sweep has run, and says so.
    stack.advance(60);
    let (status, body) = decide(&stack, &asked_late, "approve", BOB, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("ApprovalTimedOut")),
        "{body}"
    );
    let late = record(&stack, &asked_late).await;
    assert_eq!(late["status"], "Denied");
    assert_eq!(port0(&late)["statusReason"], "Denied");

    let summary = stack.host.sweep_once(stack.now()).await.unwrap();
    assert_eq!(summary.approvals_timed_out, 1, "{summary:?}");
    let timed_out = record(&stack, &swept).await;
    assert_eq!(timed_out["status"], "Denied");
    assert!(
        timed_out.get("decidedBy").is_none(),
        "nobody decided: {timed_out}"
    );
    assert_eq!(port0(&timed_out)["status"], "Revoked");
    assert_eq!(port0(&timed_out)["statusReason"], "Denied");
    assert!(
        port0(&timed_out)["message"]
            .as_str()
            .unwrap()
            .contains("no approver decided within PT1H"),
        "{timed_out}"
    );
    let (status, body) = decide(&stack, &swept, "approve", BOB, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("NotPending"))
    );
    // Once denied, a request leaves the sweep's list.
    assert_eq!(
        stack
            .host
            .sweep_once(stack.now())
            .await
            .unwrap()
            .approvals_timed_out,
        0
    );
}

#[tokio::test]
async fn an_approval_is_checked_against_the_policy_as_it_is_then() {
    let stack = Stack::start("eu-south-2").await;
    let vm = stack.instance(&[]).await;
    let stored = enable(&stack, &vm.arn, policy(&["local:bob"])).await;
    let id = pending(&stack, ALICE, &vm.arn).await;

    // The admin narrows the allowed sources; the pending request's source
    // is no longer inside them.
    let mut narrower = policy(&["local:bob"]);
    narrower["ports"][0]["allowedSourceAddressPrefixes"] = json!(["203.0.113.0/24"]);
    let (status, body) = stack
        .call(
            Method::PUT,
            &Stack::policy_path(&vm.arn),
            Some(ADMIN),
            Some(narrower.to_string()),
        )
        .await;
    assert!(
        status == 200 || status == 201,
        "{status} {body} (was {stored})"
    );
    let (status, body) = decide(&stack, &id, "approve", BOB, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("SourceNotAllowed")),
        "{body}"
    );
    assert_eq!(record(&stack, &id).await["status"], "PendingApproval");

    // Removed as an approver, Bob can no longer decide at all.
    let (status, _) = put_policy(&stack, &vm.arn, policy(&["local:carol"])).await;
    assert!(status == 200 || status == 201);
    assert_eq!(decide(&stack, &id, "approve", BOB, None).await.0, 403);
}

#[tokio::test]
async fn an_approval_never_opens_another_protocol_and_a_withdrawal_has_no_decider() {
    let stack = Stack::start("ap-south-2").await;
    let vm = stack.instance(&[]).await;
    let group = enable(&stack, &vm.arn, policy(&["local:bob"])).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = pending(&stack, ALICE, &vm.arn).await;
    // The port becomes UDP; Alice asked for TCP.
    let mut udp = policy(&["local:bob"]);
    udp["ports"][0]["protocol"] = json!("udp");
    let (status, body) = put_policy(&stack, &vm.arn, udp).await;
    assert!(status == 200 || status == 201, "{body}");
    let (status, body) = decide(&stack, &id, "approve", BOB, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("PolicyChanged")),
        "{body}"
    );
    drain(&stack).await;
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());

    // Alice withdraws it: Denied, decided by nobody, withdrawn by her.
    let (status, withdrawn) = act(&stack, ALICE, &id, "revoke").await;
    assert_eq!(
        (status, withdrawn["status"].as_str()),
        (200, Some("Denied"))
    );
    assert!(withdrawn.get("decidedBy").is_none(), "{withdrawn}");
    let last = withdrawn["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["status"] == "Denied")
        .cloned()
        .unwrap();
    assert_eq!(last["by"], "local:alice");
    assert_eq!(last["message"], "withdrawn before a decision");
}

#[tokio::test]
async fn approvers_are_patterns_and_never_a_session_anyone_could_name() {
    let stack = Stack::start("eu-north-1").await;
    let vm = stack.instance(&[]).await;
    // A session of a role whose session names the caller chooses matches
    // nobody: the policy is refused, saying what to write instead, and
    // nothing is stored or prepared.
    let carol = "arn:aws:sts::123456789012:assumed-role/Platform/carol";
    let (status, body) = put_policy(&stack, &vm.arn, policy(&["local:carol", carol])).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "InvalidApprovers", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("approvers[1]:"), "{message}");
    assert!(
        message.contains("arn:aws:sts::123456789012:assumed-role/Platform/*"),
        "{message}"
    );
    let (status, _) = stack
        .call(Method::GET, &Stack::policy_path(&vm.arn), Some(ADMIN), None)
        .await;
    assert_eq!(status, 404, "no policy was stored");
    assert!(
        stack
            .group_id(&format!("jitvm-{}", vm.world.instance_id))
            .await
            .is_none()
    );

    // A prefix names a group of approvers, as it does requesters and admins.
    enable(&stack, &vm.arn, policy(&["local:c*"])).await;
    let (status, body) = request(&stack, ALICE, ask(&vm.arn, ssh("198.51.100.7"))).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("an id").to_owned();
    let (status, body) = decide(&stack, &id, "approve", BOB, None).await;
    assert_eq!(status, 403, "bob is no approver: {body}");
    let (status, body) = decide(&stack, &id, "approve", CAROL, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decidedBy"], "local:carol");
}

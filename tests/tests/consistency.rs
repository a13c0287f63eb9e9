//! What is open is what the policy allows, and the records say so: a
//! policy change closes every grant the new policy would refuse (also one
//! being opened while it changes, in either order), and the sweep brings
//! records in line with the cloud (a rule gone, a port stuck opening, a
//! closed port whose rule is still there). Failures keep the cloud's error
//! code. EC2 runs on moto, Azure on the ARM fake; each test has its own
//! region.

use std::time::Duration;

use jitvm_core::RequestId;
use jitvm_core::ports::RequestStore;
use jitvm_tests::arm_fake::{Fault, FaultKind};
use jitvm_tests::stack::{
    ALICE, BOB, RG_STACK, Stack, ask, azure_vm, drain, enable, eventually, grant_rule_names,
    granted_requests, port0, put_policy, record, request,
};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);

fn ssh(protocol: &str, requesters: &[&str]) -> Value {
    json!({"ports": [{"number": 22, "protocol": protocol, "allowedSourceAddressPrefix": "*",
        "maxRequestAccessDuration": "PT3H"}], "requesters": requesters})
}

/// Asks for port 22 of `vm` from `source` for an hour as `token`; returns
/// the request id (the grant function has not run yet).
async fn ask_for_ssh(stack: &Stack, token: &str, vm: &str, source: &str) -> String {
    let port = json!({"number": 22, "duration": "PT1H", "allowedSourceAddressPrefix": source});
    let (status, accepted) = request(stack, token, ask(vm, port)).await;
    assert_eq!(status, 202, "{accepted}");
    accepted["id"].as_str().unwrap().to_owned()
}

/// Asks as `token` and runs the grant function: the port is `Initiated`.
async fn granted(stack: &Stack, token: &str, vm: &str, source: &str) -> String {
    let id = ask_for_ssh(stack, token, vm, source).await;
    drain(stack).await;
    let opened = record(stack, &id).await;
    assert_eq!(port0(&opened)["status"], "Initiated", "{opened}");
    id
}

fn assert_port(record: &Value, status: &str, reason: &str) {
    assert_eq!(
        (
            port0(record)["status"].as_str(),
            port0(record)["statusReason"].as_str()
        ),
        (Some(status), Some(reason)),
        "{record}"
    );
}

/// An EC2 instance with JIT enabled by `policy`: (ARN, jitvm group).
async fn ec2_vm(stack: &Stack, policy: Value) -> (String, String) {
    let vm = stack.instance(&[]).await;
    let group = enable(stack, &vm.arn, policy).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    (vm.arn, group)
}

/// An Azure VM with JIT enabled by `policy`: (VM id, NSG id).
async fn az_vm(stack: &Stack, name: &str, policy: Value) -> (String, String) {
    let (vm, nsg) = azure_vm(&stack.arm, RG_STACK, name, "10.0.0.4");
    enable(stack, &vm, policy).await;
    (vm, nsg)
}

fn az_rules_of(stack: &Stack, nsg: &str, id: &str) -> usize {
    grant_rule_names(&stack.arm, nsg)
        .iter()
        .filter(|n| n.ends_with(id))
        .count()
}

// A policy change closes what the new policy would refuse.

#[tokio::test(flavor = "multi_thread")]
async fn narrowing_the_protocol_to_tcp_closes_a_grant_of_both() {
    let stack = Stack::start("eu-west-1").await;
    let (vm, group) = ec2_vm(&stack, ssh("*", &["local:alice"])).await;
    let id = granted(&stack, ALICE, &vm, "198.51.100.7").await;
    assert_eq!(
        stack.ingress_rules_of_group(&group).await.len(),
        2,
        "TCP and UDP"
    );
    let (status, body) = put_policy(&stack, &vm, ssh("tcp", &["local:alice"])).await;
    assert_eq!(status, 200, "{body}");
    assert!(granted_requests(&stack.ec2, &group).await.is_empty());
    let closed = record(&stack, &id).await;
    assert_port(&closed, "Revoked", "PolicyChanged");
    let why = port0(&closed)["message"].as_str().unwrap_or_default();
    assert!(why.contains("tcp"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_requester_closes_their_grants_and_only_theirs() {
    let stack = Stack::start("eu-west-2").await;
    let (vm, group) = ec2_vm(&stack, ssh("tcp", &["local:alice", "local:bob"])).await;
    let alices = granted(&stack, ALICE, &vm, "198.51.100.7").await;
    let bobs = granted(&stack, BOB, &vm, "198.51.100.8").await;
    let (status, body) = put_policy(&stack, &vm, ssh("tcp", &["local:bob"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(granted_requests(&stack.ec2, &group).await, [bobs.as_str()]);
    let closed = record(&stack, &alices).await;
    assert_port(&closed, "Revoked", "PolicyChanged");
    assert!(
        port0(&closed)["message"]
            .as_str()
            .is_some_and(|m| m.contains("local:alice")),
        "{closed}"
    );
    assert_port(&record(&stack, &bobs).await, "Initiated", "UserRequested");
}

#[tokio::test(flavor = "multi_thread")]
async fn adding_approvers_leaves_an_approved_grant_open() {
    let stack = Stack::start("eu-west-3").await;
    let (vm, nsg) = az_vm(&stack, "web-approvers", ssh("tcp", &["local:alice"])).await;
    let id = granted(&stack, ALICE, &vm, "198.51.100.7").await;
    let mut stricter = ssh("tcp", &["local:alice"]);
    stricter["approvers"] = json!(["local:bob"]);
    let (status, body) = put_policy(&stack, &vm, stricter).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(az_rules_of(&stack, &nsg, &id), 1);
    assert_port(&record(&stack, &id).await, "Initiated", "UserRequested");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_accepted_while_a_policy_is_written_keeps_its_full_window() {
    let stack = Stack::start("sa-east-1").await;
    let mut policy = ssh("tcp", &["local:alice"]);
    policy["ports"][0]["maxRequestAccessDuration"] = json!("PT1H");
    let (vm, nsg) = az_vm(&stack, "web-slow-put", policy.clone()).await;
    // The admin adds bob; the PUT is slow (its VM lookup is held).
    stack.arm.inject(Fault::new(
        Some("GET"),
        "/virtualMachines/web-slow-put",
        1,
        FaultKind::Latency(Duration::from_secs(4)),
    ));
    policy["requesters"] = json!(["local:alice", "local:bob"]);
    let admin = {
        let (stack, vm, policy) = (&stack, vm.clone(), policy.clone());
        async move { put_policy(stack, &vm, policy).await }
    };
    let alice = async {
        eventually("the PUT to be held", PATIENCE, || async {
            stack.arm.faults_left() == 0
        })
        .await;
        // Accepted a second or more after the PUT began, for the whole
        // hour the policy allows (before and after the change).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let port = json!({"number": 22, "allowedSourceAddressPrefix": "198.51.100.7"});
        let (status, accepted) = request(&stack, ALICE, ask(&vm, port)).await;
        assert_eq!(status, 202, "{accepted}");
        let id = accepted["id"].as_str().unwrap().to_owned();
        drain(&stack).await;
        id
    };
    let ((status, body), id) = tokio::join!(admin, alice);
    assert_eq!(status, 200, "{body}");
    assert_port(&record(&stack, &id).await, "Initiated", "UserRequested");
    assert_eq!(az_rules_of(&stack, &nsg, &id), 1);
}

/// Runs the grant function in the background while `change` narrows the
/// policy of `vm`, `fault` holding the grant at one step; the grant must
/// end closed, whichever saw the other's write.
async fn narrow_while_opening(stack: &Stack, vm: &str, nsg: &str, fault: Fault) {
    let id = ask_for_ssh(stack, ALICE, vm, "198.51.100.7").await;
    stack.arm.inject(fault);
    let host = stack.host.clone();
    let grant = tokio::spawn(async move { host.poll_once(1).await });
    eventually("the grant to reach the held step", PATIENCE, || async {
        stack.arm.faults_left() == 0
    })
    .await;
    // Alice is no longer a requester: her grant must not stay open.
    let (status, body) = put_policy(stack, vm, ssh("tcp", &["local:bob"])).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !grant.is_finished(),
        "the policy changed while the grant was held, not after"
    );
    let report = grant.await.expect("the grant task").expect("poll");
    assert_eq!(report.received, 1);
    drain(stack).await;
    assert_eq!(
        az_rules_of(stack, nsg, &id),
        0,
        "the rule outlived the change"
    );
    assert_port(&record(stack, &id).await, "Revoked", "PolicyChanged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_narrowed_while_the_rule_is_written_closes_it() {
    let stack = Stack::start("eu-central-1").await;
    let (vm, nsg) = az_vm(&stack, "web-race-1", ssh("tcp", &["local:alice"])).await;
    // The rule's PUT is held: the policy's close pass finds nothing yet.
    let held = Fault::new(
        Some("PUT"),
        "/securityRules/",
        1,
        FaultKind::Latency(Duration::from_secs(3)),
    );
    narrow_while_opening(&stack, &vm, &nsg, held).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_narrowed_after_the_rule_is_written_but_before_it_is_recorded_closes_it() {
    let stack = Stack::start("eu-north-1").await;
    let (vm, nsg) = az_vm(&stack, "web-race-2", ssh("tcp", &["local:alice"])).await;
    // The rule is in the NSG; the grant waits on its operation's status.
    let held = Fault::new(
        Some("GET"),
        "/operations/",
        1,
        FaultKind::Latency(Duration::from_secs(3)),
    );
    narrow_while_opening(&stack, &vm, &nsg, held).await;
}

// Records follow the cloud.

#[tokio::test(flavor = "multi_thread")]
async fn a_port_whose_rule_was_removed_by_hand_is_revoked_by_the_next_sweep() {
    let stack = Stack::start("ap-south-1").await;
    let (vm, group) = ec2_vm(&stack, ssh("tcp", &["local:alice"])).await;
    let id = granted(&stack, ALICE, &vm, "198.51.100.7").await;
    let rules: Vec<String> = stack
        .ingress_rules_of_group(&group)
        .await
        .iter()
        .filter_map(|r| r.security_group_rule_id().map(str::to_owned))
        .collect();
    stack
        .ec2
        .revoke_security_group_ingress()
        .group_id(&group)
        .set_security_group_rule_ids(Some(rules))
        .send()
        .await
        .expect("revoke by hand");
    // A rule gone moments after it opened may be EC2 listing it late.
    let summary = stack.host.sweep_once(stack.now()).await.expect("sweep");
    assert_eq!(summary.records_reconciled, 0, "{summary:?}");
    stack.advance(jitvm_expire::SETTLE.as_secs() + 1);
    let summary = stack.host.sweep_once(stack.now()).await.expect("sweep");
    assert_eq!(summary.records_reconciled, 1, "{summary:?}");
    let closed = record(&stack, &id).await;
    assert_port(&closed, "Revoked", "RuleRemoved");
    // Once in line, the next sweep leaves it alone.
    let again = stack.host.sweep_once(stack.now()).await.expect("sweep");
    assert_eq!(again.records_reconciled, 0, "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_whose_rule_went_at_its_end_unrecorded_is_expired_by_the_sweep() {
    let stack = Stack::start("ap-northeast-1").await;
    let (vm, nsg) = az_vm(&stack, "web-gone", ssh("tcp", &["local:alice"])).await;
    let id = granted(&stack, ALICE, &vm, "198.51.100.7").await;
    // The rule was closed at its end, and the record's update was lost.
    let name = grant_rule_names(&stack.arm, &nsg)
        .into_iter()
        .find(|n| n.ends_with(&id))
        .unwrap();
    assert!(stack.arm.remove_rule(&nsg, &name));
    stack.advance(2 * 3600);
    stack.host.sweep_once(stack.now()).await.expect("sweep");
    assert_port(&record(&stack, &id).await, "Revoked", "Expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_stuck_initiating_fails_and_never_opens_afterwards() {
    let stack = Stack::start("ap-northeast-2").await;
    let (vm, group) = ec2_vm(&stack, ssh("tcp", &["local:alice"])).await;
    // Accepted; its message is not handled (the grant function is down).
    let id = ask_for_ssh(&stack, ALICE, &vm, "198.51.100.7").await;
    let summary = stack.host.sweep_once(stack.now()).await.expect("sweep");
    assert_eq!(summary.records_reconciled, 0, "not stuck yet: {summary:?}");
    stack.advance(jitvm_expire::STUCK_AFTER.as_secs() + 60);
    let summary = stack.host.sweep_once(stack.now()).await.expect("sweep");
    assert_eq!(summary.records_reconciled, 1, "{summary:?}");
    let failed = record(&stack, &id).await;
    assert_port(&failed, "Failed", "Error");
    assert!(
        port0(&failed)["message"]
            .as_str()
            .is_some_and(|m| m.contains("dead-letter")),
        "{failed}"
    );
    // The message comes at last: the port is final, nothing opens.
    drain(&stack).await;
    assert!(granted_requests(&stack.ec2, &group).await.is_empty());
    assert_port(&record(&stack, &id).await, "Failed", "Error");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_port_whose_rule_is_there_has_the_rule_closed() {
    let stack = Stack::start("ap-southeast-1").await;
    let (vm, group) = ec2_vm(&stack, ssh("tcp", &["local:alice"])).await;
    let id = granted(&stack, ALICE, &vm, "198.51.100.7").await;
    // The record says Failed (a write that raced the cloud), the rule is open.
    let store = &stack.host.stack.store;
    let rid = RequestId::parse(&id).unwrap();
    let current = store.get_request(&rid).await.unwrap().unwrap();
    let mut raced = serde_json::to_value(&current.value).unwrap();
    raced["virtualMachines"][0]["ports"][0]["status"] = json!("Failed");
    raced["virtualMachines"][0]["ports"][0]["statusReason"] = json!("Error");
    let failed: jitvm_core::RequestRecord = serde_json::from_value(raced).unwrap();
    store
        .update_request(&failed, current.revision)
        .await
        .expect("write the raced record");
    assert_eq!(granted_requests(&stack.ec2, &group).await, [id.as_str()]);
    let summary = stack.host.sweep_once(stack.now()).await.expect("sweep");
    assert_eq!(summary.closed_by_record, 1, "{summary:?}");
    assert!(granted_requests(&stack.ec2, &group).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_azure_write_whose_outcome_is_unknown_is_not_recorded_failed() {
    let stack = Stack::start("ap-southeast-2").await;
    let (vm, nsg) = az_vm(&stack, "web-unknown", ssh("tcp", &["local:alice"])).await;
    let id = ask_for_ssh(&stack, ALICE, &vm, "198.51.100.7").await;
    // The rule's PUT is accepted; its operation's status cannot be read.
    stack.arm.inject(Fault::new(
        Some("GET"),
        "/operations/",
        1,
        FaultKind::Error {
            status: 404,
            code: "NotFound".into(),
        },
    ));
    drain(&stack).await;
    let opened = record(&stack, &id).await;
    assert_port(&opened, "Initiated", "UserRequested");
    assert_eq!(az_rules_of(&stack, &nsg, &id), 1, "one rule, not two");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_keeps_the_clouds_error_code_in_the_record() {
    let stack = Stack::start("ca-central-1").await;
    let (vm, nsg) = az_vm(&stack, "web-full", ssh("tcp", &["local:alice"])).await;
    stack.arm.set_rule_limit(stack.arm.rules(&nsg).len());
    let id = ask_for_ssh(&stack, ALICE, &vm, "198.51.100.7").await;
    drain(&stack).await;
    let failed = record(&stack, &id).await;
    assert_port(&failed, "Failed", "Error");
    assert_eq!(
        port0(&failed)["errorCode"],
        "SecurityRuleCountLimitReached",
        "{failed}"
    );
    let history = failed["history"].as_array().expect("history");
    assert!(
        history
            .iter()
            .any(|h| h["code"] == "SecurityRuleCountLimitReached"),
        "{failed}"
    );
}

//! Faults between jitvm and AWS: first the fault proxy itself (each kind
//! does what it says, seen by a real SDK client against moto), then the
//! grant path and the expiry path of the whole local stack with its AWS
//! calls going through the proxy. The test's own look at EC2 goes straight
//! to moto, so no fault hits an assertion. Each stack test has its own
//! moto region.

use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::authorize_security_group_ingress::{
    AuthorizeSecurityGroupIngressError, AuthorizeSecurityGroupIngressOutput,
};
use jiff::Timestamp;
use jitvm_tests::fault_proxy::{FaultKind, FaultProxy, ProxyFault};
use jitvm_tests::stack::{
    ALICE, Stack, ask, enable, granted_requests, ingress_rules, port0, record, request, timer_of,
};
use jitvm_tests::{Moto, config_at, create_group, create_vpc, unique};
use serde_json::{Value, json};

const AUTHORIZE: &str = "AuthorizeSecurityGroupIngress";
const REVOKE: &str = "RevokeSecurityGroupIngress";

/// How long a stack test waits for a request to settle: the host's AWS
/// attempt timeout (10 s) plus retries, with room to spare.
const PATIENCE: Duration = Duration::from_secs(60);

// The proxy on its own: a real EC2 client through it, a direct one to look.

/// A fresh security group of the shared moto server in `region`, and a
/// client going straight to moto.
async fn group_in(region: &str) -> (aws_sdk_ec2::Client, String) {
    let direct = aws_sdk_ec2::Client::new(&Moto::shared().config_in(region).await);
    let vpc = create_vpc(&direct).await;
    let group = create_group(&direct, &vpc, &unique("faults")).await;
    (direct, group)
}

/// An EC2 client through `proxy` making at most `attempts` attempts of
/// `attempt_timeout` each, with almost no backoff between them.
async fn ec2_through(
    proxy: &FaultProxy,
    region: &str,
    attempts: u32,
    attempt_timeout: Duration,
) -> aws_sdk_ec2::Client {
    let config = config_at(proxy.endpoint(), region).await;
    aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(&config)
            .retry_config(patience(attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(attempt_timeout)
                    .build(),
            )
            .build(),
    )
}

fn patience(attempts: u32) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(Duration::from_millis(10))
}

/// Opens TCP 22 from `cidr` on `group`.
async fn authorize(
    ec2: &aws_sdk_ec2::Client,
    group: &str,
    cidr: &str,
) -> Result<AuthorizeSecurityGroupIngressOutput, SdkError<AuthorizeSecurityGroupIngressError>> {
    ec2.authorize_security_group_ingress()
        .group_id(group)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(aws_sdk_ec2::types::IpRange::builder().cidr_ip(cidr).build())
                .build(),
        )
        .send()
        .await
}

/// The CIDRs of `group`'s ingress rules, as moto has them.
async fn cidrs(direct: &aws_sdk_ec2::Client, group: &str) -> Vec<String> {
    ingress_rules(direct, group)
        .await
        .into_iter()
        .filter_map(|r| r.cidr_ipv4)
        .collect()
}

const SHORT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_throttle_outlasting_the_retries_surfaces_as_request_limit_exceeded() {
    let (direct, group) = group_in("us-east-1").await;
    let proxy = FaultProxy::start(Moto::shared().endpoint()).await;
    let ec2 = ec2_through(&proxy, "us-east-1", 3, SHORT).await;
    proxy.inject(ProxyFault::on(AUTHORIZE, FaultKind::Throttle).times(3));
    let err = authorize(&ec2, &group, "198.51.100.7/32")
        .await
        .expect_err("throttled on every attempt");
    assert_eq!(err.code(), Some("RequestLimitExceeded"), "{err:?}");
    assert_eq!(proxy.hits(AUTHORIZE), 3, "the SDK retried it as throttling");
    assert!(cidrs(&direct, &group).await.is_empty());
}

#[tokio::test]
async fn one_throttle_is_retried_and_the_call_succeeds() {
    let (direct, group) = group_in("us-east-1").await;
    let proxy = FaultProxy::start(Moto::shared().endpoint()).await;
    let ec2 = ec2_through(&proxy, "us-east-1", 3, SHORT).await;
    proxy.inject(ProxyFault::on(AUTHORIZE, FaultKind::Throttle));
    authorize(&ec2, &group, "198.51.100.7/32")
        .await
        .expect("the second attempt passes");
    assert_eq!(proxy.hits(AUTHORIZE), 2);
    assert_eq!(cidrs(&direct, &group).await, ["198.51.100.7/32"]);
}

#[tokio::test]
async fn a_server_error_is_retried_and_one_that_lasts_says_internal_error() {
    let (direct, group) = group_in("us-east-1").await;
    let proxy = FaultProxy::start(Moto::shared().endpoint()).await;
    let ec2 = ec2_through(&proxy, "us-east-1", 3, SHORT).await;
    proxy.inject(ProxyFault::on(AUTHORIZE, FaultKind::ServerError));
    authorize(&ec2, &group, "198.51.100.7/32")
        .await
        .expect("the second attempt passes");
    assert_eq!(proxy.hits(AUTHORIZE), 2);

    proxy.inject(ProxyFault::on(AUTHORIZE, FaultKind::ServerError).times(3));
    let err = authorize(&ec2, &group, "198.51.100.8/32")
        .await
        .expect_err("a 500 on every attempt");
    assert_eq!(err.code(), Some("InternalError"), "{err:?}");
    assert_eq!(proxy.hits(AUTHORIZE), 5);
    assert_eq!(cidrs(&direct, &group).await, ["198.51.100.7/32"]);
}

#[tokio::test]
async fn an_error_fault_answers_that_ec2_error_and_is_not_retried() {
    let (direct, group) = group_in("us-east-1").await;
    let proxy = FaultProxy::start(Moto::shared().endpoint()).await;
    let ec2 = ec2_through(&proxy, "us-east-1", 3, SHORT).await;
    proxy.inject(ProxyFault::on(
        AUTHORIZE,
        FaultKind::Error {
            status: 400,
            code: "RulesPerSecurityGroupLimitExceeded".into(),
            message: "The maximum number of rules per security group has been reached.".into(),
        },
    ));
    let err = authorize(&ec2, &group, "198.51.100.7/32")
        .await
        .expect_err("refused");
    assert_eq!(
        err.code(),
        Some("RulesPerSecurityGroupLimitExceeded"),
        "{err:?}"
    );
    assert_eq!(
        err.message(),
        Some("The maximum number of rules per security group has been reached.")
    );
    assert_eq!(proxy.hits(AUTHORIZE), 1, "a client error is not retried");
    assert!(cidrs(&direct, &group).await.is_empty());
}

#[tokio::test]
async fn a_drop_fails_the_call_without_an_answer_and_nothing_happens() {
    let (direct, group) = group_in("us-east-1").await;
    let proxy = FaultProxy::start(Moto::shared().endpoint()).await;
    let ec2 = ec2_through(&proxy, "us-east-1", 1, SHORT).await;
    proxy.inject(ProxyFault::on(AUTHORIZE, FaultKind::Drop));
    let err = authorize(&ec2, &group, "198.51.100.7/32")
        .await
        .expect_err("no answer");
    assert!(
        matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
        ),
        "a connection error, not an answer: {err:?}"
    );
    assert!(cidrs(&direct, &group).await.is_empty());
    authorize(&ec2, &group, "198.51.100.7/32")
        .await
        .expect("the fault is spent");
}

#[tokio::test]
async fn a_drop_after_forwarding_fails_the_call_though_the_rule_was_made() {
    let (direct, group) = group_in("us-east-1").await;
    let proxy = FaultProxy::start(Moto::shared().endpoint()).await;
    let ec2 = ec2_through(&proxy, "us-east-1", 1, SHORT).await;
    proxy.inject(ProxyFault::on(AUTHORIZE, FaultKind::Drop).after_forward());
    let err = authorize(&ec2, &group, "198.51.100.7/32")
        .await
        .expect_err("no answer");
    assert!(
        matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
        ),
        "a connection error, not an answer: {err:?}"
    );
    assert_eq!(cidrs(&direct, &group).await, ["198.51.100.7/32"]);
}

#[tokio::test]
async fn an_error_after_forwarding_is_answered_though_the_rule_was_made() {
    let (direct, group) = group_in("us-east-1").await;
    let proxy = FaultProxy::start(Moto::shared().endpoint()).await;
    let ec2 = ec2_through(&proxy, "us-east-1", 1, SHORT).await;
    proxy.inject(ProxyFault::on(AUTHORIZE, FaultKind::ServerError).after_forward());
    let err = authorize(&ec2, &group, "198.51.100.7/32")
        .await
        .expect_err("a 500");
    assert_eq!(err.code(), Some("InternalError"), "{err:?}");
    assert_eq!(cidrs(&direct, &group).await, ["198.51.100.7/32"]);
}

#[tokio::test]
async fn a_stall_outlasting_the_client_timeout_fails_the_call_as_a_timeout() {
    let (direct, group) = group_in("us-east-1").await;
    let proxy = FaultProxy::start(Moto::shared().endpoint()).await;
    let ec2 = ec2_through(&proxy, "us-east-1", 1, Duration::from_secs(1)).await;
    proxy.inject(ProxyFault::on(
        AUTHORIZE,
        FaultKind::Stall(Duration::from_secs(30)),
    ));
    let err = authorize(&ec2, &group, "198.51.100.7/32")
        .await
        .expect_err("no answer in time");
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
    assert!(cidrs(&direct, &group).await.is_empty());
    authorize(&ec2, &group, "198.51.100.7/32")
        .await
        .expect("the fault is spent");
}

#[tokio::test]
async fn latency_delays_the_request_but_still_forwards_it() {
    let (direct, group) = group_in("us-east-1").await;
    let proxy = FaultProxy::start(Moto::shared().endpoint()).await;
    let ec2 = ec2_through(&proxy, "us-east-1", 1, Duration::from_secs(1)).await;
    proxy.inject(ProxyFault::on(
        AUTHORIZE,
        FaultKind::Latency(Duration::from_secs(2)),
    ));
    // Longer than the client waits: unlike a stall, the rule is made
    // once the wait is over.
    let err = authorize(&ec2, &group, "198.51.100.7/32")
        .await
        .expect_err("no answer in time");
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
    jitvm_tests::stack::eventually("the delayed rule", SHORT, || async {
        cidrs(&direct, &group).await == ["198.51.100.7/32"]
    })
    .await;
}

#[tokio::test]
async fn json_protocols_match_on_the_target_and_get_json_errors() {
    let proxy = FaultProxy::start(Moto::shared().endpoint()).await;
    let config = config_at(proxy.endpoint(), "us-east-1").await;
    let dynamo = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .retry_config(patience(3))
            .build(),
    );
    proxy.inject(ProxyFault::on("ListTables", FaultKind::Throttle).times(3));
    let err = dynamo
        .list_tables()
        .send()
        .await
        .expect_err("throttled on every attempt");
    assert_eq!(err.code(), Some("ThrottlingException"), "{err:?}");
    assert_eq!(proxy.hits("ListTables"), 3, "the SDK retried it");

    proxy.inject(ProxyFault::on("ListTables", FaultKind::ServerError));
    dynamo
        .list_tables()
        .send()
        .await
        .expect("the second attempt passes");
    assert_eq!(proxy.hits("ListTables"), 5);
}

#[tokio::test]
async fn cleared_faults_let_requests_through_and_every_request_is_counted() {
    let (direct, group) = group_in("us-east-1").await;
    let proxy = FaultProxy::start(Moto::shared().endpoint()).await;
    let ec2 = ec2_through(&proxy, "us-east-1", 1, SHORT).await;
    proxy.inject(ProxyFault::on(AUTHORIZE, FaultKind::Drop).times(5));
    proxy.inject(ProxyFault::on("DescribeSecurityGroups", FaultKind::Drop));
    proxy.clear_faults();
    authorize(&ec2, &group, "198.51.100.7/32")
        .await
        .expect("no fault left");
    ec2.describe_security_groups()
        .group_ids(&group)
        .send()
        .await
        .expect("no fault left");
    assert_eq!(proxy.hits(AUTHORIZE), 1);
    assert_eq!(proxy.hits("DescribeSecurityGroups"), 1);
    assert_eq!(proxy.hits(REVOKE), 0);
    assert_eq!(cidrs(&direct, &group).await, ["198.51.100.7/32"]);
}

// The grant and expiry paths of the whole stack, its AWS calls through the
// proxy.

fn ssh_for_alice() -> Value {
    json!({"ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefix": "*",
        "maxRequestAccessDuration": "PT3H"}], "requesters": ["local:alice"]})
}

/// A stack in `region` behind a proxy of its own, with one instance JIT is
/// enabled on for alice: (proxy, stack, instance ARN, jitvm group).
async fn stack_in(region: &str) -> (FaultProxy, Stack, String, String) {
    let proxy = FaultProxy::start(Moto::shared().endpoint()).await;
    let stack = Stack::start_behind(&proxy, region).await;
    let vm = stack.instance(&[]).await;
    let group = enable(&stack, &vm.arn, ssh_for_alice()).await["firewall"]
        .as_str()
        .expect("the jitvm group")
        .to_owned();
    (proxy, stack, vm.arn, group)
}

/// Alice asks for port 22 of `vm` from 198.51.100.7 for an hour; the
/// request id (nothing is opened yet).
async fn ask_for_ssh(stack: &Stack, vm: &str) -> String {
    let port =
        json!({"number": 22, "duration": "PT1H", "allowedSourceAddressPrefix": "198.51.100.7"});
    let (status, accepted) = request(stack, ALICE, ask(vm, port)).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(port0(&accepted)["status"], "Initiating", "{accepted}");
    accepted["id"].as_str().expect("an id").to_owned()
}

/// Runs the grant function on the request queue until `id`'s port is no
/// longer `Initiating`, for at most [`PATIENCE`]; its record then.
async fn settle(stack: &Stack, id: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        stack
            .host
            .poll_once(1)
            .await
            .expect("the request queue is read");
        let now = record(stack, id).await;
        if port0(&now)["status"] != "Initiating" {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the port is still Initiating after {} s: {now}",
            PATIENCE.as_secs()
        );
    }
}

/// Settles `id` and checks it opened exactly one rule, its own.
async fn assert_opened_once(stack: &Stack, id: &str, group: &str) {
    let settled = settle(stack, id).await;
    assert_eq!(port0(&settled)["status"], "Initiated", "{settled}");
    let rules = ingress_rules(&stack.ec2, group).await;
    assert_eq!(rules.len(), 1, "exactly one rule: {rules:?}");
    assert_eq!(granted_requests(&stack.ec2, group).await, [id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_throttled_twice_opens_once() {
    let (proxy, stack, vm, group) = stack_in("eu-west-1").await;
    let id = ask_for_ssh(&stack, &vm).await;
    proxy.inject(ProxyFault::on(AUTHORIZE, FaultKind::Throttle).times(2));
    assert_opened_once(&stack, &id, &group).await;
    assert!(proxy.hits(AUTHORIZE) >= 3, "the throttles were met");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_throttled_past_the_sdk_retries_opens_once_on_redelivery() {
    let (proxy, stack, vm, group) = stack_in("ca-central-1").await;
    let id = ask_for_ssh(&stack, &vm).await;
    // More than the SDK's three attempts: the grant function gives the
    // message back and the next delivery opens it.
    proxy.inject(ProxyFault::on(AUTHORIZE, FaultKind::Throttle).times(4));
    assert_opened_once(&stack, &id, &group).await;
    assert!(proxy.hits(AUTHORIZE) >= 5, "the throttles were met");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_meeting_one_server_error_opens_once() {
    let (proxy, stack, vm, group) = stack_in("eu-west-2").await;
    let id = ask_for_ssh(&stack, &vm).await;
    proxy.inject(ProxyFault::on(AUTHORIZE, FaultKind::ServerError));
    assert_opened_once(&stack, &id, &group).await;
    assert!(proxy.hits(AUTHORIZE) >= 2, "the error was met");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_whose_answer_was_lost_opens_once() {
    let (proxy, stack, vm, group) = stack_in("eu-west-3").await;
    let id = ask_for_ssh(&stack, &vm).await;
    // The rule is made, the answer never comes: the retry must find it
    // rather than make a second one or give up.
    proxy.inject(ProxyFault::on(AUTHORIZE, FaultKind::Drop).after_forward());
    assert_opened_once(&stack, &id, &group).await;
    assert!(proxy.hits(AUTHORIZE) >= 2, "the drop was met");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_stalled_past_the_attempt_timeout_opens_once() {
    let (proxy, stack, vm, group) = stack_in("eu-central-1").await;
    let id = ask_for_ssh(&stack, &vm).await;
    // Longer than the host's attempt timeout (`jitvm_core::aws::ATTEMPT_TIMEOUT`).
    let stall = jitvm_core::aws::ATTEMPT_TIMEOUT + Duration::from_secs(5);
    proxy.inject(ProxyFault::on(AUTHORIZE, FaultKind::Stall(stall)));
    assert_opened_once(&stack, &id, &group).await;
    assert!(proxy.hits(AUTHORIZE) >= 2, "the stall was met");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_stalled_after_the_rule_was_made_opens_once() {
    let (proxy, stack, vm, group) = stack_in("sa-east-1").await;
    let id = ask_for_ssh(&stack, &vm).await;
    let stall = jitvm_core::aws::ATTEMPT_TIMEOUT + Duration::from_secs(5);
    proxy.inject(ProxyFault::on(AUTHORIZE, FaultKind::Stall(stall)).after_forward());
    assert_opened_once(&stack, &id, &group).await;
    assert!(proxy.hits(AUTHORIZE) >= 2, "the stall was met");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_refused_for_the_rule_limit_fails_with_that_reason() {
    let (proxy, stack, vm, group) = stack_in("eu-north-1").await;
    let id = ask_for_ssh(&stack, &vm).await;
    proxy.inject(ProxyFault::on(
        AUTHORIZE,
        FaultKind::Error {
            status: 400,
            code: "RulesPerSecurityGroupLimitExceeded".into(),
            message: "The maximum number of rules per security group has been reached.".into(),
        },
    ));
    let settled = settle(&stack, &id).await;
    let port = port0(&settled);
    assert_eq!(port["status"], "Failed", "{settled}");
    let message = port["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("most inbound rules allowed"),
        "the message names the reason: {settled}"
    );
    assert_eq!(
        port["errorCode"], "RulesPerSecurityGroupLimitExceeded",
        "the record keeps EC2's code: {settled}"
    );
    assert!(ingress_rules(&stack.ec2, &group).await.is_empty());
    assert_eq!(proxy.hits(AUTHORIZE), 1, "a refusal is not retried");
}

/// Opens one hour of SSH for alice on `vm`; the request id and its end.
async fn opened(stack: &Stack, vm: &str, group: &str) -> (String, Timestamp) {
    let id = ask_for_ssh(stack, vm).await;
    assert_opened_once(stack, &id, group).await;
    let end = port0(&record(stack, &id).await)["endTimeUtc"]
        .as_str()
        .expect("an end time")
        .parse()
        .expect("an RFC 3339 end time");
    (id, end)
}

/// Checks `id`'s port says it closed because it expired.
async fn assert_expired(stack: &Stack, id: &str) {
    let closed = record(stack, id).await;
    assert_eq!(port0(&closed)["status"], "Revoked", "{closed}");
    assert_eq!(port0(&closed)["statusReason"], "Expired", "{closed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_grant_whose_revoke_is_throttled_is_closed_by_the_next_sweep() {
    let (proxy, stack, vm, group) = stack_in("ap-southeast-1").await;
    let (id, end) = opened(&stack, &vm, &group).await;
    // Every attempt of the first sweep's revoke is throttled.
    proxy.inject(ProxyFault::on(REVOKE, FaultKind::Throttle).times(3));
    stack.advance(end.as_second() - stack.now().as_second() + 1);
    let first = stack.host.sweep_once(stack.now()).await;
    assert!(proxy.hits(REVOKE) >= 3, "the throttles were met: {first:?}");
    assert!(
        !ingress_rules(&stack.ec2, &group).await.is_empty(),
        "the throttled sweep could not remove it: {first:?}"
    );
    let second = stack.host.sweep_once(stack.now()).await;
    let rules = ingress_rules(&stack.ec2, &group).await;
    assert!(
        rules.is_empty(),
        "no rule after the second sweep (first: {first:?}, second: {second:?}): {rules:?}"
    );
    assert_expired(&stack, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_grant_whose_revoke_answer_was_lost_is_closed_by_its_timer() {
    let (proxy, stack, vm, group) = stack_in("ap-southeast-2").await;
    let (id, end) = opened(&stack, &vm, &group).await;
    let timer = timer_of(&stack.host.stack.firewall, &vm, &id, end).await;
    // The rule is removed, the answer never comes.
    proxy.inject(ProxyFault::on(REVOKE, FaultKind::Drop).after_forward());
    stack.advance(end.as_second() - stack.now().as_second() + 1);
    let fired = jitvm_expire::fire(&stack.expire_app(), &timer, stack.now()).await;
    assert!(proxy.hits(REVOKE) >= 1, "the drop was met: {fired:?}");
    let rules = ingress_rules(&stack.ec2, &group).await;
    assert!(
        rules.is_empty(),
        "no rule after the timer ({fired:?}): {rules:?}"
    );
    // The timer itself records it, though the answer was lost.
    let closed = record(&stack, &id).await;
    assert_eq!(
        (
            port0(&closed)["status"].as_str(),
            port0(&closed)["statusReason"].as_str()
        ),
        (Some("Revoked"), Some("Expired")),
        "timer: {fired:?}; record: {closed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_whose_record_write_answer_was_lost_opens_once() {
    let (proxy, stack, vm, group) = stack_in("ap-northeast-1").await;
    let id = ask_for_ssh(&stack, &vm).await;
    // The request is recorded by now: the next write is the grant's
    // "opened" (the store writes records with a conditional PutItem).
    let before = proxy.hits("PutItem");
    proxy.inject(ProxyFault::on("PutItem", FaultKind::Drop).after_forward());
    assert_opened_once(&stack, &id, &group).await;
    assert!(proxy.hits("PutItem") > before, "the drop was met");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_whose_record_write_keeps_failing_opens_once_on_redelivery() {
    let (proxy, stack, vm, group) = stack_in("ap-northeast-2").await;
    let id = ask_for_ssh(&stack, &vm).await;
    // The first delivery opens the rule but cannot record it (every SDK
    // attempt fails); the next finds the rule its own and records it.
    proxy.inject(ProxyFault::on("PutItem", FaultKind::ServerError).times(3));
    assert_opened_once(&stack, &id, &group).await;
    assert!(proxy.hits("PutItem") >= 3, "the errors were met");
}

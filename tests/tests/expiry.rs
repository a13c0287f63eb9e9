//! Each grant closes on time: its own timer closes it at its end time on
//! EC2 (moto) and on Azure (the ARM fake), a timer never closes a rule it
//! was not set for, and one cloud hung or failing never keeps the other's
//! grants open, on the timer path or in the sweep. Each test has its own
//! moto region and its own ARM fake.

use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use jitvm_core::RequestId;
use jitvm_core::expiry::{MAX_HOP, Timer};
use jitvm_core::ports::{AdapterError, ExpiryTimers};
use jitvm_tests::Moto;
use jitvm_tests::arm_fake::{Fault, FaultKind};
use jitvm_tests::stack::{
    ALICE, Instance, RG_STACK, SUBSCRIPTION, Stack, act, ask, azure_vm, drain, enable, eventually,
    grant_rule_names, granted_requests, port0, record, request, timer_of,
};
use serde_json::{Value, json};

/// How long a test waits for a timer that should go off within seconds.
const PATIENCE: Duration = Duration::from_secs(30);

fn ssh_for_alice() -> Value {
    json!({"ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefix": "*",
        "maxRequestAccessDuration": "PT3H"}], "requesters": ["local:alice"]})
}

/// Asks for port 22 of `vm` from `source` for `duration` as alice, runs the
/// grant function, and returns the request id and its end time.
async fn grant(stack: &Stack, vm: &str, source: &str, duration: &str) -> (String, Timestamp) {
    let port = json!({"number": 22, "duration": duration, "allowedSourceAddressPrefix": source});
    let (status, accepted) = request(stack, ALICE, ask(vm, port)).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    drain(stack).await;
    let opened = record(stack, &id).await;
    assert_eq!(port0(&opened)["status"], "Initiated", "{opened}");
    let end = port0(&opened)["endTimeUtc"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (id, end)
}

/// An EC2 instance with JIT enabled for alice: (instance, jitvm group).
async fn ec2_vm(stack: &Stack) -> (Instance, String) {
    let vm = stack.instance(&[]).await;
    let group = enable(stack, &vm.arn, ssh_for_alice()).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    (vm, group)
}

/// An Azure VM with JIT enabled for alice: (VM id, NSG id).
async fn az_vm(stack: &Stack, name: &str) -> (String, String) {
    let (vm, nsg) = azure_vm(&stack.arm, RG_STACK, name, "10.0.0.4");
    enable(stack, &vm, ssh_for_alice()).await;
    (vm, nsg)
}

/// Waits for the record of `id` to say its port expired (the rule is
/// removed first, the record written just after).
async fn assert_expired(stack: &Stack, id: &str) {
    eventually("the record saying Expired", PATIENCE, || async {
        let closed = record(stack, id).await;
        port0(&closed)["status"] == "Revoked" && port0(&closed)["statusReason"] == "Expired"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ec2_grant_closes_at_its_end_time_by_its_own_timer() {
    let stack = Stack::start("us-east-1").await;
    let (vm, group) = ec2_vm(&stack).await;
    let timers = stack.run_timers();
    let (short, _) = grant(&stack, &vm.arn, "198.51.100.7", "PT6S").await;
    let (long, _) = grant(&stack, &vm.arn, "198.51.100.8", "PT1H").await;
    // No sweep runs in this test: only the timer can close it.
    eventually("the ended EC2 grant closing", PATIENCE, || async {
        !granted_requests(&stack.ec2, &group).await.contains(&short)
    })
    .await;
    timers.abort();
    assert_eq!(
        granted_requests(&stack.ec2, &group).await,
        [long],
        "the live grant stays"
    );
    assert_expired(&stack, &short).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_azure_grant_closes_at_its_end_time_by_its_own_timer() {
    let stack = Stack::start("us-east-2").await;
    let (vm, nsg) = az_vm(&stack, "web-1").await;
    let timers = stack.run_timers();
    let (short, _) = grant(&stack, &vm, "198.51.100.7", "PT6S").await;
    let (long, _) = grant(&stack, &vm, "198.51.100.8", "PT1H").await;
    eventually("the ended Azure grant closing", PATIENCE, || async {
        !grant_rule_names(&stack.arm, &nsg)
            .iter()
            .any(|n| n.ends_with(&short))
    })
    .await;
    timers.abort();
    let left = grant_rule_names(&stack.arm, &nsg);
    assert!(
        left.len() == 1 && left[0].ends_with(&long),
        "the live grant stays: {left:?}"
    );
    assert_expired(&stack, &short).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timer_never_closes_a_rule_it_was_not_set_for() {
    let stack = Stack::start("us-west-1").await;
    let (vm, group) = ec2_vm(&stack).await;
    let app = stack.expire_app();
    let later = Timestamp::now() + SignedDuration::from_hours(2);

    // Replaced: a newer request for the same port and source takes the
    // older one's place; the older one's timer finds its rule gone.
    let (older, end) = grant(&stack, &vm.arn, "198.51.100.7", "PT10M").await;
    let older_timer = timer_of(&stack.host.stack.firewall, &vm.arn, &older, end).await;
    let (newer, _) = grant(&stack, &vm.arn, "198.51.100.7", "PT1H").await;
    assert_eq!(
        granted_requests(&stack.ec2, &group).await,
        std::slice::from_ref(&newer)
    );
    let closed = jitvm_expire::fire(&app, &older_timer, end).await.unwrap();
    assert_eq!(closed.revoked, 0, "{closed:?}");
    assert_eq!(
        granted_requests(&stack.ec2, &group).await,
        std::slice::from_ref(&newer)
    );

    // A timer naming the newer rule for another request, or going off
    // before the rule's own end time, leaves it.
    let newer_timer = timer_of(&stack.host.stack.firewall, &vm.arn, &newer, end).await;
    let mut stranger = newer_timer.clone();
    stranger.request_id = RequestId::parse(&older).unwrap();
    for (timer, at) in [(&stranger, later), (&newer_timer, end)] {
        let closed = jitvm_expire::fire(&app, timer, at).await.unwrap();
        assert_eq!(closed.revoked, 0, "{closed:?}");
    }
    assert_eq!(
        granted_requests(&stack.ec2, &group).await,
        std::slice::from_ref(&newer)
    );

    // Revoked early: the timer that goes off later has nothing to close.
    let (status, body) = act(&stack, ALICE, &newer, "revoke").await;
    assert_eq!(status, 200, "{body}");
    let closed = jitvm_expire::fire(&app, &newer_timer, later).await.unwrap();
    assert_eq!(closed.revoked, 0, "{closed:?}");
    let revoked = record(&stack, &newer).await;
    assert_eq!(
        port0(&revoked)["statusReason"],
        "UserRequested",
        "the timer did not rewrite the revoke: {revoked}"
    );
}

/// The timers set, and their delays, instead of an expiry queue.
#[derive(Default)]
struct Recorder(Mutex<Vec<(Timer, Duration)>>);

#[async_trait::async_trait]
impl ExpiryTimers for Recorder {
    async fn arm(&self, timer: &Timer, delay: Duration) -> Result<(), AdapterError> {
        self.0.lock().unwrap().push((timer.clone(), delay));
        Ok(())
    }
}

impl Recorder {
    fn take(&self) -> Vec<(Timer, Duration)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// An SQS batch holding `timer`, as the expiry queue delivers it.
fn batch(timer: &Timer) -> aws_lambda_events::event::sqs::SqsEvent {
    let mut message = aws_lambda_events::event::sqs::SqsMessage::default();
    message.message_id = Some("m-1".into());
    message.body = Some(serde_json::to_string(timer).unwrap());
    let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
    event.records.push(message);
    event
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_grant_timer_comes_back_in_hops_of_at_most_fifteen_minutes() {
    let stack = Stack::start("us-west-2").await;
    let (vm, _) = ec2_vm(&stack).await;
    let recorder = Recorder::default();

    // The grant function sets the first hop: SQS's longest delay.
    let app = jitvm_grant::GrantApp {
        timers: &recorder,
        ..stack.grant_app()
    };
    let message = json!({"id": "hop-0001", "requestor": "local:alice",
        "virtualMachines": [{"id": vm.arn, "ports": [{"number": 22, "duration": "PT2H",
            "allowedSourceAddressPrefix": "198.51.100.7"}]}]});
    let accepted = Timestamp::now();
    assert_eq!(
        jitvm_grant::process(&app, &message.to_string(), accepted).await,
        jitvm_grant::Outcome::Done
    );
    let set = recorder.take();
    assert_eq!(set.len(), 1, "{set:?}");
    let (timer, delay) = &set[0];
    assert_eq!(*delay, MAX_HOP);
    assert_eq!(timer.request_id.as_str(), "hop-0001");
    assert_eq!(timer.rules.len(), 1, "{timer:?}");
    assert_eq!(
        timer.close_at,
        Timestamp::from_second((accepted + SignedDuration::from_hours(2)).as_second()).unwrap()
    );

    // Back after each hop, it is set again for what is left, 2 s early, and
    // closes nothing.
    let app = jitvm_expire::ExpireApp {
        timers: &recorder,
        ..stack.expire_app()
    };
    let now = Timestamp::now();
    let mut later = timer.clone();
    for (left, hop) in [(3600, 900), (600, 598)] {
        later.close_at = now + SignedDuration::from_secs(left);
        let frozen = move || now;
        let response = jitvm_expire::handle_timers(&app, batch(&later), &frozen).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(recorder.take(), [(later.clone(), Duration::from_secs(hop))]);
    }
    assert_eq!(
        stack
            .ingress_rules_of_group(&timer.rules[0].firewall)
            .await
            .len(),
        1,
        "the grant is still open"
    );
}

/// Port 22 of an EC2 instance and of an Azure VM of `stack`, opened now
/// for an hour: (EC2 group, EC2 request, NSG, Azure request).
async fn both_clouds_open(stack: &Stack) -> (String, String, String, String) {
    let (vm, group) = ec2_vm(stack).await;
    let (az, nsg) = az_vm(stack, "db-1").await;
    let (ec2_id, _) = grant(stack, &vm.arn, "198.51.100.7", "PT1H").await;
    let (az_id, _) = grant(stack, &az, "198.51.100.7", "PT1H").await;
    (group, ec2_id, nsg, az_id)
}

/// With Azure failing as `fault` says, the sweep still closes the ended EC2
/// grant and says the Azure subscription failed; an EC2 grant's timer still
/// goes off on time.
async fn azure_failing_delays_no_ec2_expiry(region: &str, fault: Fault) {
    let stack = Stack::start(region).await;
    let (group, ec2_id, nsg, az_id) = both_clouds_open(&stack).await;
    stack.arm.inject(fault);
    // The token runs out now, so a new one is needed too.
    stack.arm.expire_tokens();

    let two_hours_on = Timestamp::now() + SignedDuration::from_hours(2);
    let summary =
        tokio::time::timeout(Duration::from_secs(90), stack.host.sweep_once(two_hours_on))
            .await
            .expect("the sweep finishes while Azure hangs")
            .expect("the sweep fails only if every scope does");
    assert!(!granted_requests(&stack.ec2, &group).await.contains(&ec2_id));
    assert_eq!(summary.failed_scopes.len(), 1, "{summary:?}");
    assert!(
        summary.failed_scopes[0].starts_with("azure:"),
        "{summary:?}"
    );
    assert!(
        grant_rule_names(&stack.arm, &nsg)
            .iter()
            .any(|n| n.ends_with(&az_id)),
        "Azure could not be reached"
    );

    let vm = stack.instance(&[]).await;
    let group = enable(&stack, &vm.arn, ssh_for_alice()).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let timers = stack.run_timers();
    let (short, _) = grant(&stack, &vm.arn, "198.51.100.9", "PT6S").await;
    eventually("the EC2 grant's timer closing it", PATIENCE, || async {
        granted_requests(&stack.ec2, &group).await.is_empty()
    })
    .await;
    timers.abort();
    assert_expired(&stack, &short).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_azure_token_endpoint_delays_no_ec2_expiry() {
    let hang = FaultKind::Latency(Duration::from_secs(3600));
    azure_failing_delays_no_ec2_expiry("eu-west-1", Fault::new(None, "/oauth2/", u32::MAX, hang))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_answering_500_delays_no_ec2_expiry() {
    let fault = Fault::new(None, "/subscriptions/", u32::MAX, FaultKind::ServerError);
    azure_failing_delays_no_ec2_expiry("eu-west-2", fault).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_aws_down_the_sweep_still_closes_ended_azure_grants() {
    let moto = Moto::start();
    let stack = Stack::start_on(&moto, "ca-central-1").await;
    let (group, _, nsg, az_id) = both_clouds_open(&stack).await;
    assert!(!granted_requests(&stack.ec2, &group).await.is_empty());
    drop(moto);

    let two_hours_on = Timestamp::now() + SignedDuration::from_hours(2);
    let summary =
        tokio::time::timeout(Duration::from_secs(90), stack.host.sweep_once(two_hours_on))
            .await
            .expect("the sweep finishes while AWS is down")
            .expect("the sweep fails only if every scope does");
    assert!(
        !grant_rule_names(&stack.arm, &nsg)
            .iter()
            .any(|n| n.ends_with(&az_id)),
        "the ended Azure grant is closed: {summary:?}"
    );
    let failed = |prefix: &str| summary.failed_scopes.iter().any(|f| f.starts_with(prefix));
    assert!(failed("aws:ca-central-1:"), "{summary:?}");
    assert!(
        !failed(&format!("azure:{SUBSCRIPTION}:")),
        "the subscription is swept without DynamoDB: {summary:?}"
    );
    assert!(
        summary.record_errors > 0,
        "DynamoDB is down too: {summary:?}"
    );
}

fn delete_fails(times: u32) -> Fault {
    Fault::new(
        Some("DELETE"),
        "/securityRules/jitvm-22-",
        times,
        FaultKind::OperationFails {
            code: "InternalServerError".into(),
            message: "the NSG update failed".into(),
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_azure_revoke_whose_operation_fails_once_is_tried_again() {
    let stack = Stack::start("ap-south-1").await;
    let (vm, nsg) = az_vm(&stack, "app-1").await;
    let (id, _) = grant(&stack, &vm, "198.51.100.7", "PT1H").await;
    stack.arm.inject(delete_fails(1));
    let (status, body) = act(&stack, ALICE, &id, "revoke").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("warning").is_none(), "{body}");
    assert!(grant_rule_names(&stack.arm, &nsg).is_empty());
    assert_eq!(port0(&body)["status"], "Revoked");
    assert_eq!(port0(&body)["statusReason"], "UserRequested");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_azure_keeps_failing_is_handed_to_a_timer_and_the_caller_told() {
    let stack = Stack::start("ap-south-2").await;
    let (vm, nsg) = az_vm(&stack, "app-2").await;
    let (id, end) = grant(&stack, &vm, "198.51.100.7", "PT1H").await;
    stack.arm.inject(delete_fails(u32::MAX));
    let (status, body) = act(&stack, ALICE, &id, "revoke").await;
    assert_eq!(status, 202, "{body}");
    let warning = body["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("could not be removed yet")
            && warning.contains("InternalServerError")
            && warning.contains("keeps trying")
            && warning.contains(&jitvm_core::rule::rfc3339(end)),
        "the caller is told what happens to the rule: {warning}"
    );
    assert_eq!(port0(&body)["status"], "Revoked", "{body}");
    assert_eq!(
        grant_rule_names(&stack.arm, &nsg).len(),
        1,
        "the rule is still open"
    );

    // Azure recovers: the timer closes the rule long before its end time.
    stack.arm.clear_faults();
    let timers = stack.run_timers();
    eventually("the timer removing the revoked rule", PATIENCE, || async {
        grant_rule_names(&stack.arm, &nsg).is_empty()
    })
    .await;
    timers.abort();
    let closed = record(&stack, &id).await;
    assert_eq!(port0(&closed)["statusReason"], "UserRequested", "{closed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_azure_never_answers_is_answered_and_handed_to_a_timer() {
    let stack = Stack::start("sa-east-1").await;
    let (vm, nsg) = az_vm(&stack, "app-3").await;
    let (id, _) = grant(&stack, &vm, "198.51.100.7", "PT1H").await;
    let hang = FaultKind::Latency(Duration::from_secs(3600));
    stack.arm.inject(Fault::new(
        Some("DELETE"),
        "/securityRules/",
        u32::MAX,
        hang,
    ));
    let (status, body) = act(&stack, ALICE, &id, "revoke").await;
    assert_eq!(status, 202, "{body}");
    let warning = body["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("did not answer within") && warning.contains("keeps trying"),
        "{warning}"
    );
    assert_eq!(port0(&body)["status"], "Revoked", "{body}");
    assert_eq!(grant_rule_names(&stack.arm, &nsg).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn while_a_token_cannot_be_renewed_the_current_one_serves_until_it_lapses() {
    let stack = Stack::start("me-central-1").await;
    // Tokens of 14 s: renewed after 7 s, valid until 14 s.
    stack.arm.set_token_lifetime(14);
    let (vm, nsg) = az_vm(&stack, "app-4").await;
    let (id, _) = grant(&stack, &vm, "198.51.100.7", "PT1H").await;
    tokio::time::sleep(Duration::from_millis(7500)).await;
    let hang = FaultKind::Latency(Duration::from_secs(3600));
    stack
        .arm
        .inject(Fault::new(None, "/oauth2/", u32::MAX, hang));
    let (status, body) = act(&stack, ALICE, &id, "revoke").await;
    assert_eq!(status, 200, "the current token still works: {body}");
    assert!(grant_rule_names(&stack.arm, &nsg).is_empty());
}

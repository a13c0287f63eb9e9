//! The expire function's real binary (`jitvm-expire`), run as Lambda runs
//! it: the environment `template.yaml` gives it, a Runtime API on loopback,
//! and the events of its two sources, the EventBridge schedule and the
//! expiry queue. EC2 is moto; Azure is the ARM fake.

use std::time::Duration;

use jitvm_core::ports::RequestStore;
use jitvm_core::{PortStatus, RequestId, StatusReason};
use jitvm_tests::lambda::{Deployed, queue_message, scheduled_event, timer_event};
use jitvm_tests::stack::timer_of;

const BINARY: &str = env!("CARGO_BIN_EXE_jitvm-expire");
const FUNCTION: &str = "ExpireFunction";

/// Asserts the NSG `nsg` holds no Allow rule: every grant there is gone.
fn assert_no_allow_rule(deployed: &Deployed, nsg: &str) {
    let allow: Vec<_> = deployed
        .arm
        .rules(nsg)
        .into_iter()
        .filter(|r| r["properties"]["access"] == "Allow")
        .collect();
    assert!(allow.is_empty(), "{allow:?}");
}

/// Asserts the records of `ids` say their port expired.
async fn assert_expired(deployed: &Deployed, ids: &[&str]) {
    for id in ids {
        let record = deployed
            .stack
            .store
            .get_request(&RequestId::parse(id).expect("an id"))
            .await
            .expect("read")
            .expect("recorded");
        let port = &record.value.ports()[0];
        assert_eq!(
            (port.status, port.status_reason),
            (PortStatus::Revoked, StatusReason::Expired),
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduled_sweep_closes_what_has_ended_on_both_clouds() {
    let deployed = Deployed::new("il-central-1").await;
    let vm = deployed.instance().await;
    let world = &vm.world;
    let arn = vm.arn.clone();
    let (azure, nsg) = deployed.azure_vm("db-03", "10.0.0.3");
    deployed.enable_ssh(&[&arn, &azure]).await;

    // Grants opened ten minutes ago for five minutes have ended; one
    // opened now for fifteen has not.
    let now = jiff::Timestamp::now();
    let earlier = now - jiff::SignedDuration::from_mins(10);
    deployed
        .grant_at(
            &queue_message("old-ec2", &arn, "198.51.100.7", "PT5M"),
            earlier,
        )
        .await;
    deployed
        .grant_at(
            &queue_message("old-az", &azure, "198.51.100.7", "PT5M"),
            earlier,
        )
        .await;
    deployed
        .grant_at(
            &queue_message("live-ec2", &arn, "198.51.100.8", "PT15M"),
            now,
        )
        .await;
    assert_eq!(
        deployed.granted(&world.instance_id).await,
        ["live-ec2", "old-ec2"]
    );

    let expire = deployed.start(FUNCTION, BINARY.as_ref()).await;
    let summary = expire.respond(scheduled_event()).await;
    assert_eq!(summary["expired"], 2, "{summary}");
    assert_eq!(summary["revoked"], 2, "{summary}");
    assert_eq!(summary["recordsUpdated"], 2, "{summary}");
    assert_eq!(summary["recordErrors"], 0, "{summary}");

    assert_eq!(deployed.granted(&world.instance_id).await, ["live-ec2"]);
    assert_no_allow_rule(&deployed, &nsg);
    assert_expired(&deployed, &["old-ec2", "old-az"]).await;

    // The next minute's sweep finds nothing left to do.
    let summary = expire.respond(scheduled_event()).await;
    assert_eq!(
        (summary["expired"].as_u64(), summary["revoked"].as_u64()),
        (Some(0), Some(0)),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_setting_the_code_refuses_stops_the_function_at_start_saying_which() {
    let mut deployed = Deployed::new("ap-east-1").await;
    // The template's pattern lets PT1M through; the code wants 5 minutes
    // to 7 days.
    deployed
        .deployment
        .parameters
        .insert("ApprovalTimeout".into(), "PT1M".into());
    let expire = deployed.start(FUNCTION, BINARY.as_ref()).await;
    let status = expire
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("it kept running:\n{}", expire.log()));
    assert!(!status.success(), "{status}");
    assert!(
        expire.log().contains("JITVM_APPROVAL_TIMEOUT"),
        "{}",
        expire.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timer_from_the_expiry_queue_closes_its_grant_and_only_it() {
    let deployed = Deployed::new("me-south-1").await;
    let vm = deployed.instance().await;
    let arn = vm.arn.clone();
    let (azure, nsg) = deployed.azure_vm("db-04", "10.0.0.4");
    deployed.enable_ssh(&[&arn, &azure]).await;
    let now = jiff::Timestamp::now();
    let earlier = now - jiff::SignedDuration::from_mins(10);
    for (id, vm, source, when) in [
        ("done-ec2", &arn, "198.51.100.7", earlier),
        ("done-az", &azure, "198.51.100.7", earlier),
        ("live-ec2", &arn, "198.51.100.8", now),
    ] {
        deployed
            .grant_at(&queue_message(id, vm, source, "PT5M"), when)
            .await;
    }
    let ended = earlier + jiff::SignedDuration::from_mins(5);
    let timers = [
        timer_of(&deployed.stack.firewall, &arn, "done-ec2", ended).await,
        timer_of(&deployed.stack.firewall, &azure, "done-az", ended).await,
        // Set for the live grant's rule with a time already passed: the
        // rule's own end time, not the timer's, decides.
        timer_of(&deployed.stack.firewall, &arn, "live-ec2", ended).await,
    ];

    let expire = deployed.start(FUNCTION, BINARY.as_ref()).await;
    let event = timer_event(&deployed.timers_arn, &timers.iter().collect::<Vec<_>>());
    let response = expire.respond(event).await;
    assert_eq!(
        response["batchItemFailures"],
        serde_json::json!([]),
        "{response}"
    );
    assert_eq!(deployed.granted(&vm.world.instance_id).await, ["live-ec2"]);
    assert_no_allow_rule(&deployed, &nsg);
    assert_expired(&deployed, &["done-ec2", "done-az"]).await;
}

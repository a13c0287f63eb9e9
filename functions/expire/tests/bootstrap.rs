//! The expire function's real binary (`jitvm-expire`), run as Lambda runs
//! it: the environment `template.yaml` gives it, a Runtime API on loopback,
//! and the event its EventBridge schedule sends. EC2 is moto; Azure is the
//! ARM fake.

use std::time::Duration;

use jitvm_core::ports::RequestStore;
use jitvm_core::{PortStatus, RequestId, StatusReason};
use jitvm_tests::lambda::{Deployed, queue_message, scheduled_event};

const BINARY: &str = env!("CARGO_BIN_EXE_jitvm-expire");
const FUNCTION: &str = "ExpireFunction";

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
    let allow: Vec<_> = deployed
        .arm
        .rules(&nsg)
        .into_iter()
        .filter(|r| r["properties"]["access"] == "Allow")
        .collect();
    assert!(allow.is_empty(), "{allow:?}");
    for id in ["old-ec2", "old-az"] {
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

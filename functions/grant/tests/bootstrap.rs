//! The grant function's real binary (`jitvm-grant`), run as Lambda runs it:
//! the environment `template.yaml` gives it, a Runtime API on loopback, and
//! SQS events as the event source mapping delivers them from the FIFO queue.
//! The messages are in the documented shape other systems send (README,
//! "The queue"). EC2 is moto; Azure is the ARM fake.

use jitvm_core::ports::RequestStore;
use jitvm_core::{PortStatus, RequestId};
use jitvm_tests::arm_fake::{Fault, FaultKind};
use jitvm_tests::lambda::{Deployed, Queued, queue_message, sqs_event};
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_jitvm-grant");
const FUNCTION: &str = "GrantFunction";

async fn port_status(deployed: &Deployed, id: &str) -> Option<PortStatus> {
    let record = deployed
        .stack
        .store
        .get_request(&RequestId::parse(id).expect("an id"))
        .await
        .expect("read the record")?;
    record.value.ports().first().map(|p| p.status)
}

fn failures(response: &Value) -> Vec<String> {
    response["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("no batchItemFailures: {response}"))
        .iter()
        .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_opens_what_it_can_and_hands_back_what_may_pass_later() {
    let deployed = Deployed::new("ca-west-1").await;
    let vm = deployed.instance().await;
    let world = &vm.world;
    let arn = vm.arn.clone();
    let (azure, nsg) = deployed.azure_vm("app-09", "10.0.0.9");
    deployed.enable_ssh(&[&arn, &azure]).await;
    let grant = deployed.start(FUNCTION, BINARY.as_ref()).await;

    // ARM throttles every read of the Azure VM for now, with Retry-After 0:
    // the client retries at once, and gives up.
    deployed.arm.inject(Fault::new(
        Some("GET"),
        "virtualMachines/app-09",
        u32::MAX,
        FaultKind::Throttle {
            retry_after_secs: 0,
        },
    ));
    let batch = [
        Queued::new(
            "m-ec2",
            &arn,
            queue_message("deploy-ec2-1", &arn, "198.51.100.7", "PT15M").to_string(),
        ),
        Queued::new("m-bad", &arn, "{not json"),
        Queued::new(
            "m-az-1",
            &azure,
            queue_message("deploy-az-1", &azure, "198.51.100.7", "PT15M").to_string(),
        ),
        Queued::new(
            "m-az-2",
            &azure,
            queue_message("deploy-az-2", &azure, "198.51.100.8", "PT15M").to_string(),
        ),
    ];
    let response = grant.respond(sqs_event(&deployed.queue_arn, &batch)).await;
    // The Azure messages come back, the second behind the first (one VM's
    // requests stay in order); the malformed one is dropped, not retried.
    assert_eq!(failures(&response), ["m-az-1", "m-az-2"], "{response}");
    assert_eq!(deployed.granted(&world.instance_id).await, ["deploy-ec2-1"]);
    assert_eq!(
        port_status(&deployed, "deploy-ec2-1").await,
        Some(PortStatus::Initiated)
    );
    grant.audit_event("message.rejected").await;

    // Redelivered once ARM answers again: both open; the EC2 one again
    // makes no second rule.
    deployed.arm.clear_faults();
    let again = [batch[0].clone(), batch[2].clone(), batch[3].clone()];
    let response = grant.respond(sqs_event(&deployed.queue_arn, &again)).await;
    assert!(failures(&response).is_empty(), "{response}");
    assert_eq!(deployed.granted(&world.instance_id).await, ["deploy-ec2-1"]);
    let allow: Vec<String> = deployed
        .arm
        .rules(&nsg)
        .iter()
        .filter(|r| r["properties"]["access"] == "Allow")
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(allow.len(), 2, "{allow:?}\n{}", grant.log());
    assert!(
        allow.iter().any(|n| n.ends_with("deploy-az-1")),
        "{allow:?}"
    );
    for id in ["deploy-az-1", "deploy-az-2"] {
        assert_eq!(
            port_status(&deployed, id).await,
            Some(PortStatus::Initiated),
            "{id}"
        );
    }
}

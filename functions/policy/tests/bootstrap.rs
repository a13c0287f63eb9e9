//! The policy function's real binary (`jitvm-policy`), run as Lambda runs
//! it: the environment `template.yaml` gives it, a Runtime API on loopback,
//! and the events API Gateway's HTTP API sends for the template's routes
//! (decoded `rawPath`, `pathParameters`, IAM or JWT authorizer context,
//! base64 bodies). EC2 is moto; Azure is the ARM fake.

use jitvm_tests::api_gateway::{Auth, Call, HttpApi, Refused};
use jitvm_tests::lambda::{ADMIN_ARN, ADMIN_SUB, ALICE_ARN, Deployed, sso};
use jitvm_tests::stack::{encode, group_named};
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_jitvm-policy");
const FUNCTION: &str = "PolicyFunction";

fn iam(arn: &str) -> Auth {
    Auth::Iam(arn.to_owned())
}

/// The security groups on an interface, by name.
async fn groups_on(ec2: &aws_sdk_ec2::Client, eni: &str) -> Vec<String> {
    ec2.describe_network_interfaces()
        .network_interface_ids(eni)
        .send()
        .await
        .expect("describe the interface")
        .network_interfaces
        .unwrap_or_default()
        .into_iter()
        .flat_map(|n| n.groups.unwrap_or_default())
        .filter_map(|g| g.group_name)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unencoded_instance_arn_in_the_path_writes_reads_and_deletes_a_policy() {
    let deployed = Deployed::new("eu-west-3").await;
    let ec2 = deployed.ec2();
    let vm = deployed.instance().await;
    let (arn, world) = (vm.arn, vm.world);
    let group = format!("jitvm-{}", world.instance_id);
    let policy = deployed.start(FUNCTION, BINARY.as_ref()).await;
    let api = HttpApi::from_template("Api");
    let sso_api = HttpApi::from_template("SsoApi");

    // PUT with the ARN as it is written, the body base64-encoded.
    let body = json!({"ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefix": "203.0.113.0/24"}]});
    let put = Call::new("PUT", &format!("/v1/policies/{arn}"), iam(ADMIN_ARN))
        .json(&body)
        .base64();
    let answer = policy.call(&api, put).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let stored = answer.json();
    assert_eq!(stored["vm"], json!(arn), "{stored}");
    assert_eq!(stored["updatedBy"], json!(ADMIN_ARN));
    assert_eq!(stored["ports"][0]["number"], 22);
    assert_eq!(
        groups_on(&ec2, &world.eni_id)
            .await
            .iter()
            .filter(|g| **g == group)
            .count(),
        1,
        "enabling JIT put {group} on the instance's interface"
    );

    // GET: plain through the single-sign-on API, and every encoding a
    // client may send through the IAM API.
    let plain = format!("/v1/policies/{arn}");
    let once = format!("/v1/policies/{}", encode(&arn));
    let answer = policy
        .call(&sso_api, Call::new("GET", &plain, sso(ADMIN_SUB)))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["version"], stored["version"]);
    for path in [&plain, &once] {
        let answer = policy
            .call(&api, Call::new("GET", path, iam(ALICE_ARN)))
            .await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(answer.json()["vm"], json!(arn), "{path}");
    }
    // Behind a named stage, whose name leads rawPath.
    let staged = HttpApi::from_template("Api").on_stage("prod");
    let answer = policy
        .call(&staged, Call::new("GET", &plain, iam(ALICE_ARN)))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // The VM shows as Configured.
    let answer = policy
        .call(&api, Call::new("GET", "/v1/vms", iam(ADMIN_ARN)))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let vms = answer.json();
    let listed = vms["value"]
        .as_array()
        .and_then(|v| v.iter().find(|vm| vm["id"] == json!(arn)))
        .unwrap_or_else(|| panic!("{arn} is not listed: {vms}"));
    assert_eq!(listed["status"], "Configured");

    // DELETE: the dedicated group leaves the interface and is gone.
    let answer = policy
        .call(&api, Call::new("DELETE", &plain, iam(ADMIN_ARN)))
        .await;
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert!(!groups_on(&ec2, &world.eni_id).await.contains(&group));
    assert_eq!(group_named(&ec2, &group).await, None, "{group} was deleted");
    let answer = policy
        .call(&api, Call::new("GET", &plain, iam(ADMIN_ARN)))
        .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["error"]["code"], "NoPolicy");

    for event in ["policy.put", "policy.delete"] {
        policy.audit_event(event).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unencoded_azure_id_in_the_path_writes_reads_and_deletes_a_policy() {
    let deployed = Deployed::new("eu-north-1").await;
    let (vm, nsg) = deployed.azure_vm("web-07", "10.0.0.7");
    let policy = deployed.start(FUNCTION, BINARY.as_ref()).await;
    let api = HttpApi::from_template("Api");
    let deny_rules = || -> Vec<String> {
        deployed
            .arm
            .rules(&nsg)
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .filter(|n| n.starts_with("jitvm-deny-"))
            .collect()
    };

    // `$API/v1/policies/$vm` with the id's own leading `/`.
    let doubled = format!("/v1/policies/{vm}");
    let put = Call::new("PUT", &doubled, iam(ADMIN_ARN)).json(&json!({"ports": [22, 3389]}));
    let answer = policy.call(&api, put).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let normal = jitvm_core::VmId::parse(&vm).expect("a VM id").to_string();
    assert_eq!(answer.json()["vm"], json!(normal));
    assert_eq!(deny_rules().len(), 2, "{:?}", deployed.arm.rules(&nsg));

    // Without the doubled slash, and in another case: ARM ids are
    // case-insensitive.
    let single = format!("/v1/policies{vm}");
    let upper = format!("/v1/policies/{}", vm.trim_start_matches('/').to_uppercase());
    for path in [&doubled, &single, &upper] {
        let answer = policy
            .call(&api, Call::new("GET", path, iam(ALICE_ARN)))
            .await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(answer.json()["ports"].as_array().map(Vec::len), Some(2));
    }

    let answer = policy
        .call(&api, Call::new("DELETE", &single, iam(ADMIN_ARN)))
        .await;
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert!(deny_rules().is_empty(), "{:?}", deployed.arm.rules(&nsg));
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_and_paths_that_do_not_fit_get_clear_answers() {
    let deployed = Deployed::new("eu-south-1").await;
    let policy = deployed.start(FUNCTION, BINARY.as_ref()).await;
    let api = HttpApi::from_template("Api");
    let arn = "arn:aws:ec2:eu-south-1:123456789012:instance/i-0123456789abcdef0";
    let path = format!("/v1/policies/{arn}");

    // API Gateway turns an unsigned call away before the function runs.
    let refused = policy
        .http(&api, &Call::new("GET", &path, Auth::Anonymous))
        .await
        .expect_err("IAM authorization refuses an unsigned call");
    assert_eq!(
        refused,
        Refused {
            status: 403,
            message: "Forbidden"
        }
    );

    // A signed caller who is not an admin.
    let put = Call::new("PUT", &path, iam(ALICE_ARN)).json(&json!({"ports": [22]}));
    let answer = policy.call(&api, put).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "Forbidden");

    // Paths that are no VM id: a 400 that names the forms, never a crash.
    for bad in [
        "/v1/policies/i-0123456789abcdef0",
        "/v1/policies/%FF%FE",
        "/v1/policies/a%7Cb%5Ec%22%7B%7D",
        "/v1/policies/arn:aws:ec2:eu-south-1:123456789012:instance/i-0123456789abcdef0/extra",
        // Encoded twice: API Gateway decodes once, the function once more.
        "/v1/policies/arn%253Aaws%253Aec2%253Aeu-south-1%253A123456789012%253Ainstance%252Fi-0123456789abcdef0",
    ] {
        let answer = policy
            .call(&api, Call::new("GET", bad, iam(ALICE_ARN)))
            .await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
        let error = answer.json();
        assert_eq!(error["error"]["code"], "InvalidVmId", "{bad}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("arn:aws:ec2")),
            "{bad}: {error}"
        );
    }
    // A malformed body.
    let put = Call::new("PUT", &path, iam(ADMIN_ARN)).body("application/json", "{\"ports\": [");
    let answer = policy.call(&api, put).await;
    assert_eq!(answer.status, 400, "{}", answer.body);

    // Still serving after all of it.
    let answer = policy
        .call(&api, Call::new("GET", &path, iam(ALICE_ARN)))
        .await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert!(policy.exited().is_none(), "{}", policy.log());
}

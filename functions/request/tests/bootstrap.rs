//! The request function's real binary (`jitvm-request`), run as Lambda runs
//! it: the environment `template.yaml` gives it (the Slack signing secret
//! read from Secrets Manager by ARN), a Runtime API on loopback, and the
//! events API Gateway's HTTP API sends for the template's routes. AWS is
//! moto.

use jitvm_core::RequestId;
use jitvm_core::ports::RequestStore;
use jitvm_tests::api_gateway::{Auth, Call, HttpApi};
use jitvm_tests::lambda::{
    ADMIN_ARN, ADMIN_SUB, ALICE_ARN, ALICE_PRINCIPAL, Deployed, SLACK_SECRET, jwt_principal, sso,
};
use jitvm_tests::stack::{encode, slack_signature, slash_body};
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_jitvm-request");
const FUNCTION: &str = "RequestFunction";

fn iam(arn: &str) -> Auth {
    Auth::Iam(arn.to_owned())
}

/// An instance of `deployed` with SSH for anyone: (ARN, instance id).
async fn protected_instance(deployed: &Deployed) -> (String, String) {
    let vm = deployed.instance().await;
    deployed.enable_ssh(&[&vm.arn]).await;
    (vm.arn, vm.world.instance_id)
}

/// The messages waiting on the request queue, with their group ids, taken
/// off it (so that a later look sees only what came since: a FIFO queue
/// holds back a group's messages while one of them is in flight).
async fn queued(deployed: &Deployed) -> Vec<(String, Value)> {
    let sqs = deployed.sqs();
    let answer = sqs
        .receive_message()
        .queue_url(&deployed.queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId,
        )
        .send()
        .await
        .expect("receive");
    let messages = answer.messages.unwrap_or_default();
    for m in &messages {
        sqs.delete_message()
            .queue_url(&deployed.queue_url)
            .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
            .send()
            .await
            .expect("delete");
    }
    messages
        .into_iter()
        .map(|m| {
            let group = m
                .attributes
                .and_then(|a| {
                    a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
                        .cloned()
                })
                .unwrap_or_default();
            let body = serde_json::from_str(m.body.as_deref().unwrap_or("null")).expect("JSON");
            (group, body)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_request_is_recorded_queued_read_listed_and_revoked() {
    let deployed = Deployed::new("ap-northeast-3").await;
    let (arn, _) = protected_instance(&deployed).await;
    let function = deployed.start(FUNCTION, BINARY.as_ref()).await;
    let api = HttpApi::from_template("Api");

    let ask = json!({"virtualMachines": [{"id": arn, "ports": [{"number": 22, "duration": "PT1H",
                     "allowedSourceAddressPrefix": "198.51.100.7"}]}], "justification": "deploy fix"});
    let answer = function
        .call(
            &api,
            Call::new("POST", "/v1/requests", iam(ALICE_ARN))
                .json(&ask)
                .base64(),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let record = answer.json();
    assert_eq!(record["requestor"], json!(ALICE_PRINCIPAL));
    assert_eq!(record["status"], "Approved");
    let id = record["id"].as_str().expect("an id").to_owned();

    // Recorded in DynamoDB, and queued under the VM's group with the id.
    let stored = deployed
        .stack
        .store
        .get_request(&RequestId::parse(&id).expect("an id"))
        .await
        .expect("read the record")
        .expect("the record is stored");
    assert_eq!(stored.value.requestor().as_str(), ALICE_PRINCIPAL);
    let messages = queued(&deployed).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].0, arn);
    assert_eq!(messages[0].1["id"], json!(id));
    assert_eq!(messages[0].1["requestor"], json!(ALICE_PRINCIPAL));

    // Read by id, and listed by VM: the ARN plain or encoded in the query.
    let answer = function
        .call(
            &api,
            Call::new("GET", &format!("/v1/requests/{id}"), iam(ALICE_ARN)),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["id"], json!(id));
    for vm in [arn.clone(), encode(&arn)] {
        let answer = function
            .call(
                &api,
                Call::new(
                    "GET",
                    &format!("/v1/requests?vm={vm}&limit=5"),
                    iam(ADMIN_ARN),
                ),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let ids: Vec<Value> = answer.json()["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| r["id"].clone())
            .collect();
        assert_eq!(ids, vec![json!(id)], "{vm}");
    }

    // Someone else may not read it; its requestor may revoke it.
    let answer = function
        .call(
            &api,
            Call::new(
                "GET",
                &format!("/v1/requests/{id}"),
                Auth::Iam("arn:aws:iam::123456789012:user/mallory".into()),
            ),
        )
        .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let answer = function
        .call(
            &api,
            Call::new("POST", &format!("/v1/requests/{id}/revoke"), iam(ALICE_ARN)),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json()["virtualMachines"][0]["ports"][0]["status"],
        "Revoked"
    );

    // Through single sign-on the caller is jwt:<issuer>#<sub>.
    let sso_api = HttpApi::from_template("SsoApi");
    let answer = function
        .call(
            &sso_api,
            Call::new("POST", "/v1/requests", sso(ADMIN_SUB)).json(&ask),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.json()["requestor"], json!(jwt_principal(ADMIN_SUB)));

    // A body that breaks the policy, and one that is not JSON.
    let wide = json!({"virtualMachines": [{"id": arn, "ports": [{"number": 3389, "allowedSourceAddressPrefix": "198.51.100.7"}]}]});
    let answer = function
        .call(
            &api,
            Call::new("POST", "/v1/requests", iam(ALICE_ARN)).json(&wide),
        )
        .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "PortNotInPolicy");
    let answer = function
        .call(
            &api,
            Call::new("POST", "/v1/requests", iam(ALICE_ARN))
                .body("application/json", "not json")
                .base64(),
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(function.exited().is_none(), "{}", function.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_commands_are_checked_against_the_secret_from_secrets_manager() {
    let deployed = Deployed::new("ap-southeast-4").await;
    let (arn, instance) = protected_instance(&deployed).await;
    let function = deployed.start(FUNCTION, BINARY.as_ref()).await;
    let api = HttpApi::from_template("Api");
    let slack = |body: &str, signature: String| {
        let ts = jiff::Timestamp::now().as_second().to_string();
        let signature = if signature.is_empty() {
            slack_signature(SLACK_SECRET, ts.parse().unwrap_or_default(), body)
        } else {
            signature
        };
        // Slack's form body reaches the function base64-encoded.
        Call::new("POST", "/v1/chatops/slack", Auth::Anonymous)
            .body("application/x-www-form-urlencoded", body)
            .base64()
            .header("x-slack-request-timestamp", &ts)
            .header("x-slack-signature", &signature)
    };

    let help = slash_body(
        "T0LAMBDA",
        "U0ALICE",
        "help",
        "https://hooks.slack.com/commands/T0LAMBDA/1/x",
    );
    let answer = function.call(&api, slack(&help, String::new())).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.contains("slack:T0LAMBDA/U0ALICE"),
        "{}",
        answer.body
    );

    let ask = slash_body(
        "T0LAMBDA",
        "U0ALICE",
        &format!("22 {instance} 1h from 198.51.100.7 -- check"),
        "https://hooks.slack.com/commands/T0LAMBDA/1/x",
    );
    let answer = function.call(&api, slack(&ask, String::new())).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("granted"), "{}", answer.body);
    let messages = queued(&deployed).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].0, arn);
    assert_eq!(messages[0].1["requestor"], "slack:T0LAMBDA/U0ALICE");

    // A wrong signature changes nothing.
    let forged = format!("v0={}", "0".repeat(64));
    let answer = function.call(&api, slack(&ask, forged)).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(queued(&deployed).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_is_served_without_a_token_on_the_single_sign_on_api_only() {
    let deployed = Deployed::new("ap-northeast-3").await;
    let function = deployed.start(FUNCTION, BINARY.as_ref()).await;
    let sso_api = HttpApi::from_template("SsoApi");

    let page = function
        .call(&sso_api, Call::new("GET", "/", Auth::Anonymous))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("/console/app.js"), "{}", page.body);
    let csp = page.headers["content-security-policy"]
        .as_str()
        .expect("a Content-Security-Policy");
    // The page may talk to the API and the issuer, and run only its own script.
    assert!(
        csp.contains("connect-src 'self' https://login.example.com;")
            && csp.contains("script-src 'self';"),
        "{csp}"
    );
    let config = function
        .call(
            &sso_api,
            Call::new("GET", "/console/config.json", Auth::Anonymous),
        )
        .await;
    assert_eq!(
        config.json(),
        json!({"signIn": "oidc", "issuer": "https://login.example.com", "clientId": jitvm_tests::lambda::CONSOLE_CLIENT_ID, "scope": "openid"})
    );
    let script = function
        .call(
            &sso_api,
            Call::new("GET", "/console/app.js", Auth::Anonymous),
        )
        .await;
    assert_eq!(script.status, 200);
    assert_eq!(
        script.headers["content-type"],
        "text/javascript; charset=utf-8"
    );

    // The API behind it still needs a token, and the IAM API has no page.
    let refused = sso_api.event(&Call::new("GET", "/v1/whoami", Auth::Anonymous));
    assert_eq!(refused.err().map(|r| r.status), Some(401));
    let api = HttpApi::from_template("Api");
    let none = api.event(&Call::new("GET", "/", Auth::Anonymous));
    assert_eq!(none.err().map(|r| r.status), Some(404));
    assert!(function.exited().is_none(), "{}", function.log());
}

//! The notify function's real binary (`jitvm-notify`), run as Lambda runs
//! it: the environment `template.yaml` gives it (the bot token and the
//! Teams webhooks read from Secrets Manager by ARN), a Runtime API on
//! loopback, and the two event sources: the requests table's stream (the
//! records as DynamoDB Streams hands them to Lambda) and the notify queue.
//! Slack and Teams are the chat fake; EventBridge is moto, read back
//! through a rule that sends jitvm's events to a queue.

use jitvm_core::ports::{PolicyStore, RequestStore};
use jitvm_core::{
    AccessRequest, Decision, InitiateBody, Principal, RequestId, RequestRecord, evaluate,
};
use jitvm_tests::lambda::{
    Deployed, Queued, SLACK_BOT_TOKEN, SLACK_CHANNEL, TEAMS_WEBHOOK, sqs_event,
};
use serde_json::{Value, json};
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_jitvm-notify");
const FUNCTION: &str = "NotifyFunction";

/// A request of Alice for port 22 of `vm`, waiting for Bob, stored as the
/// request function stores it.
async fn pending(deployed: &Deployed, vm: &str) -> RequestRecord {
    deployed
        .enable(vm, json!({"ports": [22], "approvers": ["local:bob"]}))
        .await;
    let body: InitiateBody = serde_json::from_value(json!({"virtualMachines": [{"id": vm,
        "ports": [{"number": 22, "duration": "PT1H", "allowedSourceAddressPrefix": "198.51.100.7"}]}],
        "justification": "deploy"}))
    .unwrap();
    let request = AccessRequest::parse(RequestId::parse("notify-1").unwrap(), &body).unwrap();
    let policy = deployed
        .stack
        .store
        .get_policy(request.vm())
        .await
        .unwrap()
        .unwrap()
        .policy;
    let alice = Principal::parse("local:alice").unwrap();
    let now = jiff::Timestamp::now();
    let Decision::PendingApproval { grants, approvers } =
        evaluate(Some(&policy), &request, &alice, None, now)
    else {
        panic!("the policy has approvers");
    };
    let record = RequestRecord::accepted(&request, &alice, &grants, &approvers, now);
    deployed.stack.store.create_request(&record).await.unwrap();
    record
}

/// The stream event Lambda hands over for the insert of `record`: its
/// images in DynamoDB's JSON, of which jitvm keeps the `record` attribute.
fn inserted(record: &RequestRecord, table_stream: &str) -> Value {
    let image = json!({"id": {"S": record.id().as_str()},
        "record": {"S": serde_json::to_string(record).unwrap()}});
    json!({"Records": [{
        "eventID": "1", "eventName": "INSERT", "eventVersion": "1.1",
        "eventSource": "aws:dynamodb", "awsRegion": "eu-south-1",
        "eventSourceARN": table_stream,
        "dynamodb": {"ApproximateCreationDateTime": 1_796_126_400.0,
            "Keys": {"id": {"S": record.id().as_str()}},
            "NewImage": image, "SequenceNumber": "100", "SizeBytes": 512,
            "StreamViewType": "NEW_AND_OLD_IMAGES"}}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_is_announced_and_published_and_a_bad_job_is_dropped() {
    let deployed = Deployed::new("eu-south-1").await;
    // A subscriber of jitvm's events on the default bus.
    let events = aws_sdk_eventbridge::Client::new(&deployed.config);
    let sqs = deployed.sqs();
    let inbox = sqs
        .create_queue()
        .queue_name("jitvm-subscriber")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    events
        .put_rule()
        .name("jitvm")
        .event_pattern(json!({"source": ["jitvm"]}).to_string())
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule("jitvm")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("inbox")
                .arn("arn:aws:sqs:eu-south-1:123456789012:jitvm-subscriber")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let vm = deployed.instance().await.arn;
    let record = pending(&deployed, &vm).await;
    let notify = deployed.start(FUNCTION, BINARY.as_ref()).await;
    let stream =
        "arn:aws:dynamodb:eu-south-1:123456789012:table/requests/stream/2026-12-01T00:00:00.000";
    let response = notify.respond(inserted(&record, stream)).await;
    assert!(response.is_null(), "{response}\n{}", notify.log());

    // Told in Slack (with the bot token from Secrets Manager) and Teams.
    let chat = &deployed.chat;
    let post = chat
        .wait_for_slack("the pending request", Duration::from_secs(20), |p| {
            p.body.to_string().contains("notify-1")
        })
        .await;
    assert_eq!(
        (post.channel.as_str(), post.token.as_str()),
        (SLACK_CHANNEL, SLACK_BOT_TOKEN)
    );
    let card = chat
        .wait_for_teams(
            "the pending request in Teams",
            Duration::from_secs(20),
            |p| p.body.to_string().contains("notify-1"),
        )
        .await;
    assert_eq!(card.webhook, TEAMS_WEBHOOK);
    // The console's address comes from the template.
    assert!(
        card.body
            .to_string()
            .contains("https://sso0api0id.execute-api.eu-south-1.amazonaws.com/")
    );
    // Published: the subscriber's queue has the event.
    let got = sqs
        .receive_message()
        .queue_url(&inbox)
        .wait_time_seconds(5)
        .send()
        .await
        .unwrap();
    let event: Value = serde_json::from_str(got.messages()[0].body().unwrap()).unwrap();
    assert_eq!(event["source"], "jitvm");
    assert_eq!(event["detail-type"], "JIT Request Pending Approval");
    assert_eq!(event["detail"]["requestId"], "notify-1");
    // No secret in what the function logged.
    assert!(!notify.log().contains(SLACK_BOT_TOKEN), "{}", notify.log());
    assert!(!notify.log().contains("/teams/ops"), "{}", notify.log());

    // A job batch: a malformed job is dropped, not handed back forever; a
    // reminder for a request that is not open tells nobody.
    let batch = [
        Queued::new("m-bad", "g", "{not json"),
        Queued::new(
            "m-remind",
            "g",
            json!({"job": "remind", "requestId": "notify-1", "at": "2026-01-01T00:00:00Z"})
                .to_string(),
        ),
    ];
    let before = chat.slack_posts().len();
    let response = notify
        .respond(sqs_event(&deployed.notify_jobs_arn, &batch))
        .await;
    assert_eq!(response["batchItemFailures"], json!([]), "{response}");
    assert_eq!(chat.slack_posts().len(), before);
}

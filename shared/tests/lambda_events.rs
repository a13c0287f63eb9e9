//! The sample events in infra/events are what API Gateway, SQS and
//! EventBridge send; the functions read them as the local host's callers.

use std::path::Path;

use aws_lambda_events::event::sqs::SqsEvent;
use jitvm_core::{RequestMessage, SessionTrust, lambda};

fn event(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../infra/events")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_caller_is_the_iam_principal_and_its_source_address() {
    let request =
        lambda_http::request::from_str(&event("apigw-put-policy.json")).expect("an HTTP API event");
    // A role session: its name is the caller's own choice, so it counts
    // only where the deployment trusts the role's session names.
    let caller =
        lambda::caller(&request, &SessionTrust::default()).expect("an authenticated caller");
    assert_eq!(
        caller.principal.as_str(),
        "arn:aws:sts::123456789012:assumed-role/Operators/*"
    );
    assert_eq!(
        caller.reported.as_deref(),
        Some("arn:aws:sts::123456789012:assumed-role/Operators/alice")
    );
    let trusted = SessionTrust::parse(&["Operators".to_owned()]).expect("a role name");
    let caller = lambda::caller(&request, &trusted).expect("an authenticated caller");
    assert_eq!(
        caller.principal.as_str(),
        "arn:aws:sts::123456789012:assumed-role/Operators/alice"
    );
    assert_eq!(caller.address, Some("198.51.100.7".parse().unwrap()));
    // API Gateway hands the ARN over decoded, as the greedy parameter
    // caught it; the handler finds it whole.
    let request = lambda::into_handler_request(request);
    let rest = request
        .uri()
        .path()
        .strip_prefix("/v1/policies/")
        .expect("a policy path");
    assert_eq!(
        jitvm_core::api::vm_in_path(rest)
            .expect("a VM id")
            .to_string(),
        "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"
    );
    assert!(request.body().starts_with(b"{\"ports\""));
}

#[test]
fn no_authorizer_means_no_caller() {
    let request =
        lambda_http::request::from_str(&event("apigw-no-auth.json")).expect("an HTTP API event");
    assert_eq!(lambda::caller(&request, &SessionTrust::default()), None);
}

#[test]
fn the_sample_queue_message_is_a_valid_request() {
    let sqs: SqsEvent = serde_json::from_str(&event("sqs-request.json")).expect("an SQS event");
    let body = sqs.records[0].body.as_deref().expect("a body");
    let (request, requestor) = RequestMessage::from_json(body)
        .and_then(|m| m.parse())
        .expect("a valid message");
    assert_eq!(request.id().as_str(), "deploy-7f3a");
    assert_eq!(
        requestor.as_str(),
        "arn:aws:iam::123456789012:role/deployer"
    );
}

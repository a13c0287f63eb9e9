//! End to end on AWS (moto): through the HTTP API, the request queue, the
//! grant function and the sweep, exactly as the local host runs them.
//! Each test has its own moto region, so no test sees another's rules.

use jiff::{SignedDuration, Timestamp};
use jitvm_tests::stack::{
    ADMIN, ALICE, BOB, Stack, act, ask, drain, enable, port0, put_policy, record, request,
};
use reqwest::Method;
use serde_json::{Value, json};

fn ssh_policy() -> Value {
    json!({"ports": [{"number": 22, "protocol": "tcp",
        "allowedSourceAddressPrefixes": ["198.51.100.0/24", "2001:db8::/32"],
        "maxRequestAccessDuration": "PT3H"}],
        "requesters": ["local:alice"]})
}

fn tags(
    rule: &aws_sdk_ec2::types::SecurityGroupRule,
) -> std::collections::BTreeMap<String, String> {
    rule.tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_grant_opens_exactly_what_was_asked_and_closes_at_its_end_time() {
    let stack = Stack::start("us-east-1").await;
    let vm = stack.instance(&[]).await;
    let policy = enable(&stack, &vm.arn, ssh_policy()).await;
    assert_eq!(policy["version"], 1);
    let group = policy["firewall"]
        .as_str()
        .expect("the dedicated group")
        .to_owned();
    assert_eq!(
        stack
            .group_id(&format!("jitvm-{}", vm.world.instance_id))
            .await
            .as_deref(),
        Some(group.as_str())
    );

    let (status, accepted) = request(
        &stack,
        ALICE,
        ask(
            &vm.arn,
            json!({"number": 22, "duration": "PT1H", "allowedSourceAddressPrefix": "198.51.100.7"}),
        ),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "Approved");
    assert_eq!(accepted["requestor"], "local:alice");
    assert_eq!(port0(&accepted)["status"], "Initiating");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let end: Timestamp = port0(&accepted)["endTimeUtc"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stack.ingress_rules_of_group(&group).await.is_empty(),
        "nothing opens before the grant function runs"
    );

    drain(&stack).await;
    let opened = record(&stack, &id).await;
    assert_eq!(port0(&opened)["status"], "Initiated", "{opened}");

    let rules = stack.ingress_rules_of_group(&group).await;
    assert_eq!(rules.len(), 1, "{rules:?}");
    let rule = &rules[0];
    assert_eq!(rule.ip_protocol(), Some("tcp"));
    assert_eq!((rule.from_port(), rule.to_port()), (Some(22), Some(22)));
    assert_eq!(rule.cidr_ipv4(), Some("198.51.100.7/32"));
    let t = tags(rule);
    assert_eq!(t["jitvm:request"], id);
    assert_eq!(t["jitvm:expires"], jitvm_core::rule::rfc3339(end));
    assert_eq!(t["jitvm:requester"], "local:alice");
    let description = rule.description().unwrap_or_default();
    assert!(
        description.contains(&id) && description.contains("deploy fix"),
        "{description}"
    );

    // Before the end time the sweep leaves it; after, it removes it.
    let summary = stack
        .host
        .sweep_once(end - SignedDuration::from_secs(1))
        .await
        .unwrap();
    assert_eq!((summary.expired, summary.active), (0, 1));
    assert_eq!(stack.ingress_rules_of_group(&group).await.len(), 1);
    let summary = stack.host.sweep_once(end).await.unwrap();
    assert_eq!(
        (summary.expired, summary.revoked, summary.records_updated),
        (1, 1, 1)
    );
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
    let closed = record(&stack, &id).await;
    assert_eq!(port0(&closed)["status"], "Revoked");
    assert_eq!(port0(&closed)["statusReason"], "Expired");
}

#[tokio::test]
async fn expiry_works_from_the_rules_alone_when_the_record_is_lost() {
    let stack = Stack::start("us-east-2").await;
    let vm = stack.instance(&[]).await;
    let group = enable(&stack, &vm.arn, ssh_policy()).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another system puts a request straight on the queue; no record exists.
    let end = Timestamp::now() + SignedDuration::from_mins(30);
    let message = json!({"id": "ext-0001", "requestor": "local:alice",
        "virtualMachines": [{"id": vm.arn, "ports": [{"number": 22, "endTimeUtc": end.to_string(),
            "allowedSourceAddressPrefix": "198.51.100.9"}]}]});
    let outcome =
        jitvm_grant::process(&stack.grant_app(), &message.to_string(), Timestamp::now()).await;
    assert_eq!(outcome, jitvm_grant::Outcome::Done);
    assert_eq!(stack.ingress_rules_of_group(&group).await.len(), 1);
    // The record is lost: the rule is not forgotten.
    aws_sdk_dynamodb::Client::new(&stack.host.stack.config)
        .delete_item()
        .table_name(&stack.host.settings.requests_table)
        .key(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S("ext-0001".into()),
        )
        .send()
        .await
        .unwrap();
    let summary = stack
        .host
        .sweep_once(end + SignedDuration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(summary.expired, 1);
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
}

/// An instance whose only group (returned) has standing TCP rules open to
/// the world on each of `ranges`.
async fn with_standing_access(
    stack: &Stack,
    name: &str,
    ranges: &[(i32, i32)],
) -> (jitvm_tests::stack::Instance, String) {
    let first = stack.instance(&[]).await;
    let group = jitvm_tests::create_group(&stack.ec2, &first.world.vpc_id, name).await;
    let mut authorize = stack
        .ec2
        .authorize_security_group_ingress()
        .group_id(&group);
    for &(from, to) in ranges {
        authorize = authorize.ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(from)
                .to_port(to)
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("0.0.0.0/0")
                        .description("standing access")
                        .build(),
                )
                .build(),
        );
    }
    authorize.send().await.unwrap();
    let world = jitvm_tests::launch(
        &stack.ec2,
        &first.world.vpc_id,
        &first.world.subnet_id,
        std::slice::from_ref(&group),
    )
    .await;
    (stack.adopt(world), group)
}

#[tokio::test]
async fn early_revoke_closes_the_rule_and_says_user_requested() {
    let stack = Stack::start("us-west-1").await;
    let vm = stack.instance(&[]).await;
    let group = enable(&stack, &vm.arn, ssh_policy()).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, accepted) = request(
        &stack,
        ALICE,
        ask(
            &vm.arn,
            json!({"number": 22, "allowedSourceAddressPrefix": "2001:db8::7"}),
        ),
    )
    .await;
    let id = accepted["id"].as_str().unwrap().to_owned();
    drain(&stack).await;
    let rules = stack.ingress_rules_of_group(&group).await;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].cidr_ipv6(), Some("2001:db8::7/128"));

    // Bob is neither the requestor nor an admin.
    let (status, _) = act(&stack, BOB, &id, "revoke").await;
    assert_eq!(status, 403);
    assert_eq!(stack.ingress_rules_of_group(&group).await.len(), 1);

    let (status, revoked) = act(&stack, ALICE, &id, "revoke").await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(port0(&revoked)["status"], "Revoked");
    assert_eq!(port0(&revoked)["statusReason"], "UserRequested");
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
    // Revoking again changes nothing and is not an error.
    let (status, _) = act(&stack, ALICE, &id, "revoke").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_revoke_before_the_grant_runs_means_it_never_opens() {
    let stack = Stack::start("us-west-2").await;
    let vm = stack.instance(&[]).await;
    let group = enable(&stack, &vm.arn, ssh_policy()).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, accepted) = request(
        &stack,
        ALICE,
        ask(
            &vm.arn,
            json!({"number": 22, "allowedSourceAddressPrefix": "198.51.100.7"}),
        ),
    )
    .await;
    let id = accepted["id"].as_str().unwrap().to_owned();
    let (status, _) = act(&stack, ALICE, &id, "revoke").await;
    assert_eq!(status, 200);
    drain(&stack).await;
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
    assert_eq!(port0(&record(&stack, &id).await)["status"], "Revoked");
}

#[tokio::test]
async fn a_second_instance_sharing_a_group_gains_nothing() {
    let stack = Stack::start("eu-west-1").await;
    let first = stack.instance(&[]).await;
    let shared = jitvm_tests::create_group(&stack.ec2, &first.world.vpc_id, "shared-app").await;
    let a = stack.adopt(
        jitvm_tests::launch(
            &stack.ec2,
            &first.world.vpc_id,
            &first.world.subnet_id,
            std::slice::from_ref(&shared),
        )
        .await,
    );
    let b = stack.adopt(
        jitvm_tests::launch(
            &stack.ec2,
            &first.world.vpc_id,
            &first.world.subnet_id,
            std::slice::from_ref(&shared),
        )
        .await,
    );
    enable(&stack, &a.arn, ssh_policy()).await;
    let (status, _) = request(
        &stack,
        ALICE,
        ask(
            &a.arn,
            json!({"number": 22, "allowedSourceAddressPrefix": "198.51.100.7"}),
        ),
    )
    .await;
    assert_eq!(status, 202);
    drain(&stack).await;

    assert!(
        stack.ingress_rules_of_group(&shared).await.is_empty(),
        "the shared group is untouched"
    );
    let b_groups: Vec<String> = stack
        .ec2
        .describe_network_interfaces()
        .network_interface_ids(&b.world.eni_id)
        .send()
        .await
        .unwrap()
        .network_interfaces()
        .iter()
        .flat_map(|n| {
            n.groups()
                .iter()
                .filter_map(|g| g.group_id().map(str::to_owned))
        })
        .collect();
    assert_eq!(
        b_groups,
        vec![shared.clone()],
        "the other instance carries only its own groups"
    );
    // And B, having no policy, cannot be asked for.
    let (status, body) = request(
        &stack,
        ALICE,
        ask(
            &b.arn,
            json!({"number": 22, "allowedSourceAddressPrefix": "198.51.100.7"}),
        ),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NoPolicy"))
    );
}

#[tokio::test]
async fn exposures_are_reported_closed_and_restored() {
    let stack = Stack::start("eu-west-2").await;
    let (vm, legacy) = with_standing_access(&stack, "legacy-ssh", &[(0, 1024), (443, 443)]).await;

    // Reported only.
    let policy = enable(&stack, &vm.arn, ssh_policy()).await;
    let exposures = policy["exposures"].as_array().unwrap();
    assert_eq!(exposures.len(), 1, "{policy}");
    assert_eq!(exposures[0]["port"], 22);
    assert_eq!(exposures[0]["firewall"], legacy.as_str());
    assert_eq!(exposures[0]["closed"], false);
    assert_eq!(stack.ingress_rules_of_group(&legacy).await.len(), 2);

    // Closed on request, and kept in the policy record.
    let mut close = ssh_policy();
    close["closeStandingAccess"] = json!(true);
    let (status, policy) = put_policy(&stack, &vm.arn, close).await;
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["version"], 2);
    assert_eq!(policy["exposures"][0]["closed"], true);
    let left = stack.ingress_rules_of_group(&legacy).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].from_port(), Some(443));

    // Restored when JIT is disabled.
    let (status, _) = stack
        .call(
            Method::DELETE,
            &Stack::policy_path(&vm.arn),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let restored = stack.ingress_rules_of_group(&legacy).await;
    assert_eq!(restored.len(), 2, "{restored:?}");
    assert!(restored.iter().any(|r| r.from_port() == Some(0)
        && r.to_port() == Some(1024)
        && r.cidr_ipv4() == Some("0.0.0.0/0")));
    assert_eq!(
        stack
            .group_id(&format!("jitvm-{}", vm.world.instance_id))
            .await,
        None
    );
    let (status, _) = stack
        .call(Method::GET, &Stack::policy_path(&vm.arn), Some(ADMIN), None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_same_request_delivered_twice_makes_one_rule() {
    let stack = Stack::start("eu-central-1").await;
    let vm = stack.instance(&[]).await;
    let group = enable(&stack, &vm.arn, ssh_policy()).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let end = Timestamp::now() + SignedDuration::from_mins(30);
    let message = json!({"id": "dup-0001", "requestor": "local:alice",
        "virtualMachines": [{"id": vm.arn, "ports": [{"number": 22, "endTimeUtc": end.to_string(),
            "allowedSourceAddressPrefix": "198.51.100.7"}]}]})
    .to_string();
    let app = stack.grant_app();
    assert_eq!(
        jitvm_grant::process(&app, &message, Timestamp::now()).await,
        jitvm_grant::Outcome::Done
    );
    assert_eq!(
        jitvm_grant::process(&app, &message, Timestamp::now()).await,
        jitvm_grant::Outcome::Done
    );
    assert_eq!(stack.ingress_rules_of_group(&group).await.len(), 1);
    // Even when the record was lost in between, the rule is recognised as this request's.
    let raw: jitvm_core::RequestMessage = serde_json::from_str(&message).unwrap();
    let (req, who) = raw.parse().unwrap();
    let grants = match jitvm_core::evaluate(
        Some(
            &jitvm_core::Policy::parse(
                req.vm().clone(),
                &jitvm_core::PolicyDocument::from_value(ssh_policy()).unwrap(),
            )
            .unwrap(),
        ),
        &req,
        &who,
        None,
        Timestamp::now(),
    ) {
        jitvm_core::Decision::Approved { grants } => grants,
        d => panic!("{d:?}"),
    };
    let opened = jitvm_core::ports::Firewall::open(&stack.host.stack.firewall, &grants[0], None)
        .await
        .unwrap();
    assert!(opened.already_open);
    assert_eq!(stack.ingress_rules_of_group(&group).await.len(), 1);
}

#[tokio::test]
async fn a_poisoned_message_does_not_block_the_ones_behind_it() {
    let stack = Stack::start("ap-southeast-1").await;
    let vm = stack.instance(&[]).await;
    let group = enable(&stack, &vm.arn, ssh_policy()).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = stack.host.queue.url().to_owned();
    let send = |body: String, dedup: &'static str| {
        let sqs = stack.sqs.clone();
        let url = url.clone();
        let group_id = vm.arn.clone();
        async move {
            sqs.send_message()
                .queue_url(url)
                .message_body(body)
                .message_group_id(group_id)
                .message_deduplication_id(dedup)
                .send()
                .await
                .unwrap();
        }
    };
    send("this is not json".into(), "p1").await;
    send(json!({"id": "bad-vm", "requestor": "local:alice", "virtualMachines": [{"id": "i-123", "ports": [{"number": 22}]}]}).to_string(), "p2").await;
    send(json!({"id": "no-src", "requestor": "local:alice", "virtualMachines": [{"id": vm.arn, "ports": [{"number": 22, "duration": "PT5M"}]}]}).to_string(), "p3").await;
    let (status, accepted) = request(
        &stack,
        ALICE,
        ask(
            &vm.arn,
            json!({"number": 22, "allowedSourceAddressPrefix": "198.51.100.7"}),
        ),
    )
    .await;
    assert_eq!(status, 202);
    drain(&stack).await;
    let rules = stack.ingress_rules_of_group(&group).await;
    assert_eq!(rules.len(), 1, "only the good request opened: {rules:?}");
    assert_eq!(
        tags(&rules[0])["jitvm:request"],
        accepted["id"].as_str().unwrap()
    );
    let left = stack
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(
            aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        )
        .send()
        .await
        .unwrap();
    let attrs = left.attributes().cloned().unwrap_or_default();
    let count = |n| attrs.get(&n).map(String::as_str).unwrap_or("0").to_owned();
    assert_eq!(
        count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
        "0"
    );
    assert_eq!(
        count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        "0"
    );
}

#[tokio::test]
async fn every_refusal_answers_its_status_and_opens_nothing() {
    let stack = Stack::start("ap-northeast-1").await;
    let vm = stack.instance(&[]).await;
    let mut policy = ssh_policy();
    policy["ports"].as_array_mut().unwrap().push(json!({"number": 3389, "allowedSourceAddressPrefix": "*", "maxRequestAccessDuration": "PT1H"}));
    let group = enable(&stack, &vm.arn, policy).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = "arn:aws:ec2:ap-northeast-1:123456789012:instance/i-0123456789abcdef0";
    let past = (Timestamp::now() - SignedDuration::from_mins(1)).to_string();
    let far = (Timestamp::now() + SignedDuration::from_hours(4)).to_string();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            ALICE,
            ask(
                other,
                json!({"number": 22, "allowedSourceAddressPrefix": "198.51.100.7"}),
            ),
            404,
            "NoPolicy",
        ),
        (
            BOB,
            ask(
                &vm.arn,
                json!({"number": 22, "allowedSourceAddressPrefix": "198.51.100.7"}),
            ),
            403,
            "NotRequester",
        ),
        (
            ALICE,
            ask(
                &vm.arn,
                json!({"number": 5985, "allowedSourceAddressPrefix": "198.51.100.7"}),
            ),
            403,
            "PortNotInPolicy",
        ),
        (
            ALICE,
            ask(
                &vm.arn,
                json!({"number": 22, "allowedSourceAddressPrefix": "203.0.113.7"}),
            ),
            403,
            "SourceNotAllowed",
        ),
        // The caller's own address (loopback) is not inside the allowed prefixes either.
        (
            ALICE,
            ask(&vm.arn, json!({"number": 22})),
            403,
            "SourceNotAllowed",
        ),
        (
            ALICE,
            ask(
                &vm.arn,
                json!({"number": 22, "allowedSourceAddressPrefix": "0.0.0.0/0"}),
            ),
            403,
            "AnySourceNotAllowed",
        ),
        (
            ALICE,
            ask(
                &vm.arn,
                json!({"number": 3389, "duration": "PT2H", "allowedSourceAddressPrefix": "*"}),
            ),
            403,
            "DurationExceedsMaximum",
        ),
        (
            ALICE,
            ask(
                &vm.arn,
                json!({"number": 22, "endTimeUtc": past, "allowedSourceAddressPrefix": "198.51.100.7"}),
            ),
            400,
            "EndTimeNotInFuture",
        ),
        (
            ALICE,
            ask(
                &vm.arn,
                json!({"number": 22, "endTimeUtc": far, "allowedSourceAddressPrefix": "198.51.100.7"}),
            ),
            403,
            "EndTimeBeyondMaximum",
        ),
    ];
    for (token, body, status, code) in cases {
        let (got, answer) = request(&stack, token, body.clone()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
        assert!(
            !answer["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
        );
    }
    // A queue message must name its source.
    let message = json!({"id": "queue-no-source", "requestor": "local:alice",
        "virtualMachines": [{"id": vm.arn, "ports": [{"number": 22, "duration": "PT10M"}]}]});
    assert_eq!(
        jitvm_grant::process(&stack.grant_app(), &message.to_string(), Timestamp::now()).await,
        jitvm_grant::Outcome::Done
    );
    drain(&stack).await;
    assert!(
        stack.ingress_rules_of_group(&group).await.is_empty(),
        "no refusal opened anything"
    );
}

#[tokio::test]
async fn authentication_admins_and_bad_bodies() {
    let stack = Stack::start("ca-central-1").await;
    let vm = stack.instance(&[]).await;
    let path = Stack::policy_path(&vm.arn);
    let body = ssh_policy().to_string();
    for (method, p) in [
        (Method::PUT, path.as_str()),
        (Method::GET, "/v1/vms"),
        (Method::POST, "/v1/requests"),
        (Method::GET, "/v1/requests/abc"),
    ] {
        let (status, answer) = stack
            .call(method.clone(), p, None, Some(body.clone()))
            .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (401, Some("Unauthenticated")),
            "{method} {p}"
        );
        let (status, _) = stack
            .call(method, p, Some("not-a-token-at-all"), Some(body.clone()))
            .await;
        assert_eq!(status, 401);
    }
    let (status, answer) = stack
        .call(Method::PUT, &path, Some(ALICE), Some(body.clone()))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("Forbidden"))
    );
    assert!(
        stack
            .group_id(&format!("jitvm-{}", vm.world.instance_id))
            .await
            .is_none(),
        "a refused write prepares nothing"
    );

    let bad: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "InvalidPolicyDocument"),
        (
            json!({"ports": [22], "aprovers": ["local:bob"]}).to_string(),
            400,
            "InvalidPolicyDocument",
        ),
        (
            json!({"ports": [{"number": 22, "maxRequestAccessDuration": "PT48H"}]}).to_string(),
            400,
            "InvalidMaxRequestAccessDuration",
        ),
        ("".into(), 400, "EmptyBody"),
        (
            format!(
                "{{\"ports\": [22], \"requesters\": [\"{}\"]}}",
                "x".repeat(70 * 1024)
            ),
            413,
            "BodyTooLarge",
        ),
    ];
    for (body, status, code) in bad {
        let (got, answer) = stack
            .call(Method::PUT, &path, Some(ADMIN), Some(body))
            .await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{answer}"
        );
    }
    let (status, answer) = stack
        .call(
            Method::PUT,
            "/v1/policies/not-a-vm",
            Some(ADMIN),
            Some(ssh_policy().to_string()),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("InvalidVmId"))
    );
    let missing =
        Stack::policy_path("arn:aws:ec2:ca-central-1:123456789012:instance/i-0123456789abcdef0");
    let (status, answer) = stack
        .call(
            Method::PUT,
            &missing,
            Some(ADMIN),
            Some(ssh_policy().to_string()),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("VmNotFound")),
        "{answer}"
    );
    let (status, answer) = request(&stack, ALICE, "[]".into()).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("InvalidRequest"))
    );
    let (status, answer) = stack
        .call(Method::GET, "/v1/nowhere", Some(ALICE), None)
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("NoRoute"))
    );
    let (status, _) = stack.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn policy_writes_are_versioned() {
    let stack = Stack::start("sa-east-1").await;
    let vm = stack.instance(&[]).await;
    let path = Stack::policy_path(&vm.arn);
    enable(&stack, &vm.arn, ssh_policy()).await;
    let second = stack
        .http
        .put(format!("{}{path}", stack.base))
        .bearer_auth(ADMIN)
        .header("If-Match", "\"1\"")
        .body(ssh_policy().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(second.status().as_u16(), 200);
    // An admin who read version 1 cannot overwrite version 2.
    let stale = stack
        .http
        .put(format!("{}{path}", stack.base))
        .bearer_auth(ADMIN)
        .header("If-Match", "1")
        .body(json!({"ports": [3389]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status().as_u16(), 412);
    let (_, policy) = stack.call(Method::GET, &path, Some(ALICE), None).await;
    assert_eq!(policy["version"], 2);
    assert_eq!(policy["ports"][0]["number"], 22);
}

#[tokio::test]
async fn vms_are_classified() {
    let stack = Stack::start("ap-south-1").await;
    let configured = stack.instance(&[]).await;
    let plain = stack.adopt(
        jitvm_tests::launch(
            &stack.ec2,
            &configured.world.vpc_id,
            &configured.world.subnet_id,
            &[jitvm_tests::create_group(&stack.ec2, &configured.world.vpc_id, "plain").await],
        )
        .await,
    );
    let mut five = Vec::new();
    for i in 0..5 {
        five.push(
            jitvm_tests::create_group(&stack.ec2, &configured.world.vpc_id, &format!("g{i}")).await,
        );
    }
    let full = stack.adopt(
        jitvm_tests::launch(
            &stack.ec2,
            &configured.world.vpc_id,
            &configured.world.subnet_id,
            &five,
        )
        .await,
    );
    enable(&stack, &configured.arn, ssh_policy()).await;
    let (_, accepted) = request(
        &stack,
        ALICE,
        ask(
            &configured.arn,
            json!({"number": 22, "allowedSourceAddressPrefix": "198.51.100.7"}),
        ),
    )
    .await;
    drain(&stack).await;

    let (status, list) = stack.call(Method::GET, "/v1/vms", Some(ADMIN), None).await;
    assert_eq!(status, 200);
    let find = |arn: &str| {
        list["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == arn)
            .cloned()
            .unwrap_or_else(|| panic!("{arn} missing: {list}"))
    };
    let c = find(&configured.arn);
    assert_eq!(c["status"], "Configured");
    assert_eq!(c["approvedRequestsLast7Days"], 1);
    assert_eq!(c["lastUser"], "local:alice");
    assert_eq!(c["openGrants"][0]["requestId"], accepted["id"]);
    assert_eq!(find(&plain.arn)["status"], "NotConfigured");
    // Others see how many grants are open, not whose.
    let (_, for_alice) = stack.call(Method::GET, "/v1/vms", Some(ALICE), None).await;
    let mine = for_alice["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == configured.arn.as_str())
        .unwrap();
    assert_eq!(
        (mine["openGrantCount"].as_u64(), mine.get("openGrants")),
        (Some(1), None)
    );
    let f = find(&full.arn);
    assert_eq!(f["status"], "Unsupported");
    assert!(
        f["reason"].as_str().unwrap().contains("5 security groups"),
        "{f}"
    );
    let (status, answer) = put_policy(&stack, &full.arn, ssh_policy()).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("VmUnsupported"))
    );
}

#[tokio::test]
async fn a_region_the_sweep_does_not_cover_is_refused() {
    let stack = Stack::start("ap-northeast-2").await;
    // An instance in a region outside JITVM_REGIONS: its grants would never expire.
    let elsewhere = aws_sdk_ec2::Client::new(
        &jitvm_tests::Moto::shared()
            .config_in("ap-northeast-3")
            .await,
    );
    let world = jitvm_tests::ec2_world(&elsewhere, &[]).await;
    let arn = format!(
        "arn:aws:ec2:ap-northeast-3:123456789012:instance/{}",
        world.instance_id
    );
    let (status, answer) = put_policy(&stack, &arn, ssh_policy()).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("VmUnsupported")),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JITVM_REGIONS")
    );
}

#[tokio::test]
async fn a_copied_group_or_a_spoofed_rule_never_widens_access() {
    let stack = Stack::start("eu-west-3").await;
    let vm = stack.instance(&[]).await;
    let group = enable(&stack, &vm.arn, ssh_policy()).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();

    // Someone copies jitvm's group onto another instance (a launch template would).
    let other = stack.adopt(
        jitvm_tests::launch(
            &stack.ec2,
            &vm.world.vpc_id,
            &vm.world.subnet_id,
            &[jitvm_tests::create_group(&stack.ec2, &vm.world.vpc_id, "other").await],
        )
        .await,
    );
    let other_groups: Vec<String> = stack
        .ec2
        .describe_network_interfaces()
        .network_interface_ids(&other.world.eni_id)
        .send()
        .await
        .unwrap()
        .network_interfaces()[0]
        .groups()
        .iter()
        .filter_map(|g| g.group_id().map(str::to_owned))
        .chain([group.clone()])
        .collect();
    stack
        .ec2
        .modify_network_interface_attribute()
        .network_interface_id(&other.world.eni_id)
        .set_groups(Some(other_groups))
        .send()
        .await
        .unwrap();
    let (_, accepted) = request(
        &stack,
        ALICE,
        ask(
            &vm.arn,
            json!({"number": 22, "allowedSourceAddressPrefix": "198.51.100.7"}),
        ),
    )
    .await;
    drain(&stack).await;
    assert!(
        stack.ingress_rules_of_group(&group).await.is_empty(),
        "nothing opens while another instance carries the group"
    );
    let failed = record(&stack, accepted["id"].as_str().unwrap()).await;
    assert_eq!(port0(&failed)["status"], "Failed");
    assert!(
        port0(&failed)["message"]
            .as_str()
            .unwrap()
            .contains(&other.world.instance_id),
        "{failed}"
    );

    // A hand-made rule dressed in jitvm's tags but wider than any grant is drift.
    let end = jitvm_core::rule::rfc3339(Timestamp::now() + SignedDuration::from_hours(1));
    stack
        .ec2
        .authorize_security_group_ingress()
        .group_id(&group)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(0)
                .to_port(65535)
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("0.0.0.0/0")
                        .build(),
                )
                .build(),
        )
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroupRule)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("jitvm:request")
                        .value("fake-1")
                        .build(),
                )
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("jitvm:expires")
                        .value(end)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let summary = stack.host.sweep_once(Timestamp::now()).await.unwrap();
    assert_eq!((summary.drift, summary.revoked), (1, 1));
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
}

#[tokio::test]
async fn a_request_waits_for_another_approver() {
    let stack = Stack::start("ap-southeast-2").await;
    let vm = stack.instance(&[]).await;
    let mut policy = ssh_policy();
    policy["requesters"] = json!(["local:alice", "local:bob"]);
    policy["approvers"] = json!(["local:bob", "local:alice"]);
    let group = enable(&stack, &vm.arn, policy).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, pending) = request(&stack, ALICE, ask(&vm.arn, json!({"number": 22, "duration": "PT20M", "allowedSourceAddressPrefix": "198.51.100.7"}))).await;
    assert_eq!(
        (status, pending["status"].as_str()),
        (202, Some("PendingApproval")),
        "{pending}"
    );
    let id = pending["id"].as_str().unwrap().to_owned();
    drain(&stack).await;
    assert!(
        stack.ingress_rules_of_group(&group).await.is_empty(),
        "nothing opens before approval"
    );

    let approve = |token: &'static str| {
        let path = format!("/v1/requests/{id}/approve");
        let stack = &stack;
        async move { stack.call(Method::POST, &path, Some(token), None).await }
    };
    // Alice is an approver, but not of her own request; the admin is not an approver.
    assert_eq!(approve(ALICE).await.0, 403);
    assert_eq!(approve(ADMIN).await.0, 403);
    let (status, approved) = approve(BOB).await;
    assert_eq!(
        (status, approved["status"].as_str()),
        (200, Some("Approved")),
        "{approved}"
    );
    assert_eq!(approved["decidedBy"], "local:bob");
    assert_eq!(approve(BOB).await.0, 409);

    drain(&stack).await;
    let rules = stack.ingress_rules_of_group(&group).await;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].cidr_ipv4(), Some("198.51.100.7/32"));
    let opened = record(&stack, &id).await;
    assert_eq!(port0(&opened)["status"], "Initiated");
    // The window starts at the approval: twenty minutes from then at most.
    let end: Timestamp = port0(&opened)["endTimeUtc"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(end <= Timestamp::now() + SignedDuration::from_mins(20));
    assert_eq!(
        tags(&rules[0])["jitvm:expires"],
        port0(&opened)["endTimeUtc"].as_str().unwrap()
    );
}

#[tokio::test]
async fn narrowing_a_policy_closes_the_grants_it_no_longer_allows() {
    let stack = Stack::start("eu-north-1").await;
    let vm = stack.instance(&[]).await;
    let mut policy = ssh_policy();
    policy["ports"]
        .as_array_mut()
        .unwrap()
        .push(json!({"number": 3389, "allowedSourceAddressPrefix": "198.51.100.0/24"}));
    let group = enable(&stack, &vm.arn, policy).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ids = Vec::new();
    for (port, source) in [
        (22, "198.51.100.7"),
        (22, "198.51.100.200"),
        (3389, "198.51.100.7"),
    ] {
        let (status, accepted) = request(
            &stack,
            ALICE,
            ask(
                &vm.arn,
                json!({"number": port, "duration": "PT2H", "allowedSourceAddressPrefix": source}),
            ),
        )
        .await;
        assert_eq!(status, 202, "{accepted}");
        ids.push(accepted["id"].as_str().unwrap().to_owned());
    }
    drain(&stack).await;
    // Port 3389's protocol is "*": a TCP and a UDP rule.
    assert_eq!(stack.ingress_rules_of_group(&group).await.len(), 4);

    // Port 22 only, from the lower half of the block, for at most an hour.
    let narrower = json!({"ports": [{"number": 22, "protocol": "tcp",
        "allowedSourceAddressPrefixes": ["198.51.100.0/25"], "maxRequestAccessDuration": "PT3H"}],
        "requesters": ["local:alice"]});
    enable(&stack, &vm.arn, narrower).await;
    let left = stack.ingress_rules_of_group(&group).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].cidr_ipv4(), Some("198.51.100.7/32"));
    assert_eq!(port0(&record(&stack, &ids[0]).await)["status"], "Initiated");
    for id in &ids[1..] {
        let closed = record(&stack, id).await;
        assert_eq!(
            (
                port0(&closed)["status"].as_str(),
                port0(&closed)["statusReason"].as_str()
            ),
            (Some("Revoked"), Some("PolicyChanged")),
            "{closed}"
        );
    }

    // A shorter maximum closes a grant that would outlast it.
    let shorter = json!({"ports": [{"number": 22, "protocol": "tcp",
        "allowedSourceAddressPrefixes": ["198.51.100.0/25"], "maxRequestAccessDuration": "PT30M"}],
        "requesters": ["local:alice"]});
    enable(&stack, &vm.arn, shorter).await;
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
}

/// The real policy store, except that every write loses a race: another
/// admin always writes first.
struct LosesEveryWrite<'a>(&'a dyn jitvm_core::ports::PolicyStore);

#[async_trait::async_trait]
impl jitvm_core::ports::PolicyStore for LosesEveryWrite<'_> {
    async fn get_policy(
        &self,
        vm: &jitvm_core::VmId,
    ) -> Result<Option<jitvm_core::ports::PolicyEntry>, jitvm_core::ports::AdapterError> {
        self.0.get_policy(vm).await
    }
    async fn put_policy(
        &self,
        _: &jitvm_core::ports::PolicyEntry,
        _: Option<u64>,
    ) -> Result<u64, jitvm_core::ports::AdapterError> {
        Err(jitvm_core::ports::AdapterError::Conflict(
            "another admin wrote first".into(),
        ))
    }
    async fn delete_policy(
        &self,
        vm: &jitvm_core::VmId,
        expected: u64,
    ) -> Result<(), jitvm_core::ports::AdapterError> {
        self.0.delete_policy(vm, expected).await
    }
    async fn list_policies(
        &self,
    ) -> Result<Vec<jitvm_core::ports::PolicyEntry>, jitvm_core::ports::AdapterError> {
        self.0.list_policies().await
    }
}

#[tokio::test]
async fn standing_rules_are_put_back_when_the_policy_cannot_be_stored() {
    let stack = Stack::start("us-gov-west-1").await;
    let (vm, legacy) = with_standing_access(&stack, "legacy", &[(22, 22)]).await;
    let admins = [jitvm_core::PrincipalPattern::parse("local:admin").unwrap()];
    let api = jitvm_policy::PolicyApi {
        firewall: &stack.host.stack.firewall,
        policies: &LosesEveryWrite(&stack.host.stack.store),
        requests: &stack.host.stack.store,
        admins: &admins,
        trust: &Default::default(),
        channels: &Default::default(),
    };
    let mut body = ssh_policy();
    body["closeStandingAccess"] = json!(true);
    let request = http::Request::put(Stack::policy_path(&vm.arn))
        .body(bytes::Bytes::from(body.to_string()))
        .unwrap();
    let caller = jitvm_core::api::Caller {
        principal: jitvm_core::Principal::parse("local:admin").unwrap(),
        address: None,
        reported: None,
    };
    let response = jitvm_policy::handle(&api, Some(caller), request, Timestamp::now()).await;
    assert_eq!(response.status().as_u16(), 409, "{}", response.body());
    let rules = stack.ingress_rules_of_group(&legacy).await;
    assert_eq!(rules.len(), 1, "the standing rule is back: {rules:?}");
    assert_eq!(rules[0].cidr_ipv4(), Some("0.0.0.0/0"));
}

/// The body of the next message on the request queue, left there for the
/// grant function: what a redelivery of it would carry.
async fn peek(stack: &Stack) -> String {
    let got = stack.host.queue.receive(1, 1).await.unwrap();
    assert_eq!(got.len(), 1, "one message queued: {got:?}");
    stack
        .host
        .queue
        .release(&got[0].receipt_handle)
        .await
        .unwrap();
    got[0].body.clone()
}

/// Asks alice's request for port 22 from `source` for `duration`; returns
/// the accepted record.
async fn ask_ssh(stack: &Stack, vm: &str, source: &str, duration: &str) -> Value {
    let (status, accepted) = request(
        stack,
        ALICE,
        ask(
            vm,
            json!({"number": 22, "duration": duration, "allowedSourceAddressPrefix": source}),
        ),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    accepted
}

/// The group's ingress rules on port 22 from `cidr`.
async fn ssh_rules_from(
    stack: &Stack,
    group: &str,
    cidr: &str,
) -> Vec<aws_sdk_ec2::types::SecurityGroupRule> {
    stack
        .ingress_rules_of_group(group)
        .await
        .into_iter()
        .filter(|r| r.from_port() == Some(22) && r.cidr_ipv4() == Some(cidr))
        .collect()
}

fn status_of(record: &Value) -> (String, String) {
    (
        port0(record)["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        port0(record)["statusReason"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn a_newer_request_for_the_same_port_and_source_replaces_the_open_grant() {
    let stack = Stack::start("me-south-1").await;
    let vm = stack.instance(&[]).await;
    let group = enable(&stack, &vm.arn, ssh_policy()).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = ask_ssh(&stack, &vm.arn, "198.51.100.7", "PT1H").await;
    let a_id = a["id"].as_str().unwrap().to_owned();
    let a_message = peek(&stack).await;
    drain(&stack).await;
    assert_eq!(
        status_of(&record(&stack, &a_id).await).0,
        "Initiated",
        "A is open"
    );

    // Over the policy's maximum (3 hours): refused, and A stays open.
    let (status, refused) = request(
        &stack,
        ALICE,
        ask(
            &vm.arn,
            json!({"number": 22, "duration": "PT4H", "allowedSourceAddressPrefix": "198.51.100.7"}),
        ),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (403, Some("DurationExceedsMaximum")),
        "{refused}"
    );
    drain(&stack).await;
    let rules = ssh_rules_from(&stack, &group, "198.51.100.7/32").await;
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(tags(&rules[0])["jitvm:request"], a_id);
    assert_eq!(status_of(&record(&stack, &a_id).await).0, "Initiated");

    // B: the same port and source, for longer.
    let b = ask_ssh(&stack, &vm.arn, "198.51.100.7", "PT2H").await;
    let b_id = b["id"].as_str().unwrap().to_owned();
    let b_end = port0(&b)["endTimeUtc"].as_str().unwrap().to_owned();
    let b_message = peek(&stack).await;
    drain(&stack).await;

    let rules = stack.ingress_rules_of_group(&group).await;
    assert_eq!(rules.len(), 1, "one rule, B's: {rules:?}");
    assert_eq!(rules[0].cidr_ipv4(), Some("198.51.100.7/32"));
    assert_eq!(
        (rules[0].from_port(), rules[0].to_port()),
        (Some(22), Some(22))
    );
    let t = tags(&rules[0]);
    assert_eq!(t["jitvm:request"], b_id);
    let end: Timestamp = b_end.parse().unwrap();
    assert_eq!(t["jitvm:expires"], jitvm_core::rule::rfc3339(end));
    let b_rule = rules[0].security_group_rule_id().unwrap().to_owned();

    let a_record = record(&stack, &a_id).await;
    assert_eq!(
        status_of(&a_record),
        ("Revoked".to_owned(), "NewerRequestInitiated".to_owned()),
        "{a_record}"
    );
    assert!(
        port0(&a_record)["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&b_id),
        "{a_record}"
    );
    let b_record = record(&stack, &b_id).await;
    assert_eq!(status_of(&b_record).0, "Initiated", "{b_record}");
    assert_eq!(port0(&b_record)["endTimeUtc"], b_end.as_str());

    // Redelivered, B's message and A's change nothing: A does not reopen,
    // B's rule is not replaced by itself.
    let app = stack.grant_app();
    for message in [&b_message, &a_message] {
        assert_eq!(
            jitvm_grant::process(&app, message, Timestamp::now()).await,
            jitvm_grant::Outcome::Done
        );
        let rules = stack.ingress_rules_of_group(&group).await;
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert_eq!(rules[0].security_group_rule_id(), Some(b_rule.as_str()));
        assert_eq!(record(&stack, &a_id).await, a_record);
        assert_eq!(record(&stack, &b_id).await, b_record);
    }

    // B then expires like any grant.
    let summary = stack.host.sweep_once(end).await.unwrap();
    assert_eq!((summary.expired, summary.records_updated), (1, 1));
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
    assert_eq!(
        status_of(&record(&stack, &b_id).await),
        ("Revoked".to_owned(), "Expired".to_owned())
    );
}

#[tokio::test]
async fn a_request_from_another_source_or_for_another_port_keeps_the_open_grant() {
    let stack = Stack::start("af-south-1").await;
    let vm = stack.instance(&[]).await;
    let mut policy = ssh_policy();
    policy["ports"]
        .as_array_mut()
        .unwrap()
        .push(json!({"number": 3389, "protocol": "tcp",
        "allowedSourceAddressPrefix": "198.51.100.0/24", "maxRequestAccessDuration": "PT1H"}));
    let group = enable(&stack, &vm.arn, policy).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = ask_ssh(&stack, &vm.arn, "198.51.100.7", "PT1H").await;
    // Another address of the same block, the same address's block, and another port.
    let other = ask_ssh(&stack, &vm.arn, "198.51.100.8", "PT2H").await;
    let block = ask_ssh(&stack, &vm.arn, "198.51.100.0/24", "PT2H").await;
    let (status, rdp) = request(
        &stack,
        ALICE,
        ask(
            &vm.arn,
            json!({"number": 3389, "duration": "PT30M", "allowedSourceAddressPrefix": "198.51.100.7"}),
        ),
    )
    .await;
    assert_eq!(status, 202, "{rdp}");
    drain(&stack).await;

    let rules = stack.ingress_rules_of_group(&group).await;
    assert_eq!(rules.len(), 4, "every grant is open: {rules:?}");
    for (accepted, port, cidr) in [
        (&a, 22, "198.51.100.7/32"),
        (&other, 22, "198.51.100.8/32"),
        (&block, 22, "198.51.100.0/24"),
        (&rdp, 3389, "198.51.100.7/32"),
    ] {
        let id = accepted["id"].as_str().unwrap();
        let mine: Vec<_> = rules
            .iter()
            .filter(|r| tags(r)["jitvm:request"] == id)
            .collect();
        assert_eq!(mine.len(), 1, "{id}: {rules:?}");
        assert_eq!(
            (mine[0].from_port(), mine[0].cidr_ipv4()),
            (Some(port), Some(cidr))
        );
        let r = record(&stack, id).await;
        assert_eq!(status_of(&r).0, "Initiated", "{r}");
    }
}

#[tokio::test]
async fn a_replacement_interrupted_after_marking_the_older_request_finishes_on_redelivery() {
    let stack = Stack::start("ap-east-1").await;
    let vm = stack.instance(&[]).await;
    let group = enable(&stack, &vm.arn, ssh_policy()).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = ask_ssh(&stack, &vm.arn, "198.51.100.7", "PT1H").await;
    let a_id = a["id"].as_str().unwrap().to_owned();
    drain(&stack).await;
    let b = ask_ssh(&stack, &vm.arn, "198.51.100.7", "PT2H").await;
    let b_id = b["id"].as_str().unwrap().to_owned();
    // The grant function marked A, then stopped before revoking its rule:
    // A's record says Revoked while its rule is still open.
    let message = format!("replaced by newer request {b_id}");
    jitvm_core::records::mark_closed(
        &stack.host.stack.store,
        &jitvm_core::RequestId::parse(&a_id).unwrap(),
        &[Some(jitvm_core::Port::parse(22).unwrap())],
        jitvm_core::StatusReason::NewerRequestInitiated,
        Some(&message),
        Timestamp::now(),
    )
    .await
    .unwrap();
    let rules = ssh_rules_from(&stack, &group, "198.51.100.7/32").await;
    assert_eq!(tags(&rules[0])["jitvm:request"], a_id);

    // B's message comes again: A's rule is found by its tags and closed.
    drain(&stack).await;
    let rules = stack.ingress_rules_of_group(&group).await;
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(tags(&rules[0])["jitvm:request"], b_id);
    let a_record = record(&stack, &a_id).await;
    assert_eq!(
        status_of(&a_record),
        ("Revoked".to_owned(), "NewerRequestInitiated".to_owned())
    );
    assert_eq!(
        a_record["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["status"] == "Revoked")
            .count(),
        1,
        "marked once: {a_record}"
    );
    assert_eq!(status_of(&record(&stack, &b_id).await).0, "Initiated");
}

#[tokio::test]
async fn another_requestor_cannot_replace_an_open_grant() {
    let stack = Stack::start("us-gov-east-1").await;
    let vm = stack.instance(&[]).await;
    let mut policy = ssh_policy();
    policy["requesters"] = json!(["local:alice", "local:bob"]);
    let group = enable(&stack, &vm.arn, policy).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice = ask_ssh(&stack, &vm.arn, "198.51.100.7", "PT3H").await;
    let alice_id = alice["id"].as_str().unwrap().to_owned();
    drain(&stack).await;

    // Bob asks for the same port and source for five minutes: Alice's
    // three hours are not his to cut short.
    let (status, bob) = request(
        &stack,
        BOB,
        ask(
            &vm.arn,
            json!({"number": 22, "duration": "PT5M", "allowedSourceAddressPrefix": "198.51.100.7"}),
        ),
    )
    .await;
    assert_eq!(status, 202, "{bob}");
    drain(&stack).await;
    assert_eq!(
        status_of(&record(&stack, &alice_id).await),
        ("Initiated".to_owned(), "UserRequested".to_owned())
    );
    let rules = ssh_rules_from(&stack, &group, "198.51.100.7/32").await;
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(tags(&rules[0])["jitvm:request"], alice_id);
    // EC2 holds one rule per source: Bob's port fails and says whose is open.
    let bob = record(&stack, bob["id"].as_str().unwrap()).await;
    assert_eq!(port0(&bob)["status"], "Failed", "{bob}");
    assert!(
        port0(&bob)["message"]
            .as_str()
            .is_some_and(|m| m.contains(&alice_id)),
        "{bob}"
    );
    // Revoking his own request leaves Alice's rule.
    let (status, _) = stack
        .call(
            Method::POST,
            &format!("/v1/requests/{}/revoke", bob["id"].as_str().unwrap()),
            Some(BOB),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        ssh_rules_from(&stack, &group, "198.51.100.7/32")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn an_instance_arn_is_the_rest_of_the_path_plain_or_encoded() {
    let stack = Stack::start("ap-south-2").await;
    let vm = stack.instance(&[]).await;
    let plain = format!("/v1/policies/{}", vm.arn);
    let encoded = Stack::policy_path(&vm.arn);
    let (status, put) = stack
        .call(
            Method::PUT,
            &plain,
            Some(ADMIN),
            Some(ssh_policy().to_string()),
        )
        .await;
    assert_eq!(status, 201, "{put}");
    assert_eq!(put["vm"], json!(vm.arn));
    for path in [&plain, &encoded] {
        let (status, got) = stack.call(Method::GET, path, Some(ALICE), None).await;
        assert_eq!(status, 200, "{path}: {got}");
        assert_eq!(got["version"], put["version"], "{path}");
    }
    // Only the whole rest of the path is the id.
    let (status, error) = stack
        .call(Method::GET, &format!("{plain}/x"), Some(ALICE), None)
        .await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (400, &json!("InvalidVmId")),
        "{error}"
    );
    let (status, _) = stack.call(Method::DELETE, &plain, Some(ADMIN), None).await;
    assert_eq!(status, 204);
    let (status, _) = stack.call(Method::GET, &encoded, Some(ALICE), None).await;
    assert_eq!(status, 404);
}

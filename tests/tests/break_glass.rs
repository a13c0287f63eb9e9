//! Break-glass access end to end (moto, through the HTTP API): a principal
//! the policy names opens access at once, without waiting for an approver,
//! with a justification and for no longer than the break-glass maximum; the
//! record, the audit export and whoami say so; every refusal opens nothing.

use jitvm_tests::stack::{
    ADMIN, ALICE, AUDITOR, BOB, CAROL, Stack, act, deliver, drain, enable, port0, put_policy,
    record, records_of, request,
};
use reqwest::Method;
use serde_json::{Value, json};

/// Alice may request, Bob approves, Carol (no requester) may break glass
/// for 30 minutes at most.
fn policy() -> Value {
    json!({"ports": [{"number": 22, "protocol": "tcp",
        "allowedSourceAddressPrefixes": ["198.51.100.0/24"],
        "maxRequestAccessDuration": "PT3H"}],
        "requesters": ["local:alice"],
        "approvers": ["local:bob"],
        "breakGlass": {"principals": ["local:carol"], "maxRequestAccessDuration": "PT30M"},
        "notify": {"slack": "C0123ABCD", "teams": "ops"}})
}

/// A request body for port 22 from `source` for `duration`.
fn ask(vm: &str, duration: &str, source: &str, justification: Option<&str>, bg: bool) -> String {
    let mut body = json!({"virtualMachines": [{"id": vm, "ports": [{"number": 22,
        "duration": duration, "allowedSourceAddressPrefix": source}]}]});
    if let Some(j) = justification {
        body["justification"] = json!(j);
    }
    if bg {
        body["breakGlass"] = json!(true);
    }
    body.to_string()
}

async fn csv_rows(stack: &Stack, query: &str) -> Vec<csv::StringRecord> {
    let text = stack
        .http
        .get(format!("{}/v1/audit.csv?{query}", stack.base))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes())
        .records()
        .map(|r| r.expect("well-formed CSV"))
        .collect()
}

/// A stack whose deployment has the Teams webhook `ops` the policies here
/// name (nothing is posted: these tests run no notifier).
async fn with_ops_webhook(region: &str) -> Stack {
    Stack::start_with(
        region,
        &[(
            "JITVM_TEAMS_WEBHOOKS",
            r#"{"ops": "https://contoso.webhook.office.com/webhookb2/ops"}"#,
        )],
    )
    .await
}

#[tokio::test]
async fn break_glass_opens_at_once_on_a_policy_with_approvers_and_is_marked_everywhere() {
    let stack = with_ops_webhook("eu-west-1").await;
    let vm = stack.instance(&[]).await;
    let stored = enable(&stack, &vm.arn, policy()).await;
    let group = stored["firewall"].as_str().unwrap().to_owned();
    // The policy reads back in the shape it was written.
    let (status, read) = stack
        .call(Method::GET, &Stack::policy_path(&vm.arn), Some(ADMIN), None)
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["breakGlass"], policy()["breakGlass"]);
    assert_eq!(read["notify"], policy()["notify"]);

    // whoami shows Carol where she may break glass, though she requests nowhere.
    let (_, me) = stack
        .call(Method::GET, "/v1/whoami", Some(CAROL), None)
        .await;
    assert_eq!(me["breakGlassOf"], json!([vm.arn]), "{me}");
    assert_eq!(me["requesterOf"], json!([]), "{me}");
    let (_, alice) = stack
        .call(Method::GET, "/v1/whoami", Some(ALICE), None)
        .await;
    assert_eq!(alice["breakGlassOf"], json!([]), "{alice}");

    let before = stack.now();
    let (status, accepted) = request(
        &stack,
        CAROL,
        ask(
            &vm.arn,
            "PT20M",
            "198.51.100.7",
            Some("the site is down"),
            true,
        ),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "Approved");
    assert_eq!(accepted["breakGlass"], true);
    assert_eq!(accepted["approvers"], json!(["local:bob"]));
    assert_eq!(accepted["history"][0]["status"], "Approved");
    let id = accepted["id"].as_str().unwrap().to_owned();

    // No approver acted, yet the rule opens, exactly as asked.
    drain(&stack).await;
    let opened = record(&stack, &id).await;
    assert_eq!(port0(&opened)["status"], "Initiated", "{opened}");
    assert_eq!(opened["breakGlass"], true);
    assert_eq!(opened["decidedBy"], Value::Null);
    let rules = stack.ingress_rules_of_group(&group).await;
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].from_port, Some(22));
    assert_eq!(rules[0].cidr_ipv4.as_deref(), Some("198.51.100.7/32"));
    let end: jiff::Timestamp = port0(&opened)["endTimeUtc"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let start: jiff::Timestamp = opened["startTimeUtc"].as_str().unwrap().parse().unwrap();
    assert_eq!(end.duration_since(start).as_secs(), 20 * 60);

    // An ordinary request on the same VM still waits for Bob, and is not marked.
    let (status, waiting) = request(
        &stack,
        ALICE,
        ask(&vm.arn, "PT20M", "198.51.100.8", Some("deploy"), false),
    )
    .await;
    assert_eq!(status, 202, "{waiting}");
    assert_eq!(waiting["status"], "PendingApproval");
    assert!(waiting.get("breakGlass").is_none(), "{waiting}");
    let ordinary = waiting["id"].as_str().unwrap().to_owned();

    // The approver may close it (as the notice's button does); it closes.
    let (status, revoked) = act(&stack, BOB, &id, "revoke").await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(port0(&revoked)["status"], "Revoked");
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
    // Not so on an ordinary request: only its requestor or an admin.
    assert_eq!(act(&stack, BOB, &ordinary, "revoke").await.0, 403);
    stack.advance(1);

    // The export: breakGlass is the last column, true on each of its lines.
    let rows = csv_rows(&stack, &format!("since={before}&until={}", stack.now())).await;
    let header: Vec<&str> = rows[0].iter().collect();
    assert_eq!(header.last(), Some(&"breakGlass"), "{header:?}");
    assert_eq!(header[..3], ["time", "requestId", "vm"]);
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let lines = |rid: &str| -> Vec<(String, String)> {
        rows[1..]
            .iter()
            .filter(|r| &r[col("requestId")] == rid)
            .map(|r| (r[col("status")].to_owned(), r[col("breakGlass")].to_owned()))
            .collect()
    };
    assert_eq!(
        lines(&id),
        [
            ("Approved".to_owned(), "true".to_owned()),
            ("Initiated".to_owned(), "true".to_owned()),
            ("Revoked".to_owned(), "true".to_owned()),
        ]
    );
    assert_eq!(
        lines(&ordinary),
        [("PendingApproval".to_owned(), "false".to_owned())]
    );
}

#[tokio::test]
async fn every_refusal_says_why_and_opens_nothing() {
    let stack = with_ops_webhook("eu-west-2").await;
    let vm = stack.instance(&[]).await;
    let group = enable(&stack, &vm.arn, policy()).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let plain_vm = stack.instance(&[]).await;
    let mut plain = policy();
    plain.as_object_mut().unwrap().remove("breakGlass");
    plain["requesters"] = json!(["local:alice", "local:carol"]);
    let plain_group = enable(&stack, &plain_vm.arn, plain).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();

    let cases = [
        // No justification, or a blank one.
        (
            CAROL,
            ask(&vm.arn, "PT20M", "198.51.100.7", None, true),
            400,
            "JustificationRequired",
        ),
        (
            CAROL,
            ask(&vm.arn, "PT20M", "198.51.100.7", Some("  "), true),
            400,
            "JustificationRequired",
        ),
        // A requester, and the approver, are not named for breaking glass.
        (
            ALICE,
            ask(&vm.arn, "PT20M", "198.51.100.7", Some("urgent"), true),
            403,
            "NotBreakGlassPrincipal",
        ),
        (
            BOB,
            ask(&vm.arn, "PT20M", "198.51.100.7", Some("urgent"), true),
            403,
            "NotBreakGlassPrincipal",
        ),
        // Longer than the break-glass maximum, though within the port's.
        (
            CAROL,
            ask(&vm.arn, "PT45M", "198.51.100.7", Some("urgent"), true),
            400,
            "DurationExceedsBreakGlassMaximum",
        ),
        // Never wider than the policy: the source must be inside its prefixes.
        (
            CAROL,
            ask(&vm.arn, "PT20M", "203.0.113.7", Some("urgent"), true),
            403,
            "SourceNotAllowed",
        ),
        // A policy without breakGlass, even for one of its requesters.
        (
            CAROL,
            ask(&plain_vm.arn, "PT20M", "198.51.100.7", Some("urgent"), true),
            403,
            "BreakGlassNotAllowed",
        ),
        // Not a JSON boolean.
        (
            CAROL,
            ask(&vm.arn, "PT20M", "198.51.100.7", Some("urgent"), false).replace(
                "\"justification\"",
                "\"breakGlass\":\"yes\",\"justification\"",
            ),
            400,
            "InvalidRequest",
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
                .is_empty(),
            "{answer}"
        );
    }
    drain(&stack).await;
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
    assert!(stack.ingress_rules_of_group(&plain_group).await.is_empty());
    // Nothing was recorded either.
    let listed = records_of(&stack, &vm.arn).await;
    assert!(listed.is_empty(), "{listed:#?}");
}

#[tokio::test]
async fn the_policy_checks_break_glass_and_notify_when_written() {
    let stack = with_ops_webhook("eu-west-3").await;
    let vm = stack.instance(&[]).await;
    let with = |patch: Value| {
        let mut p = policy();
        for (k, v) in patch.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    let cases = [
        (
            with(
                json!({"breakGlass": {"principals": ["local:carol"], "maxRequestAccessDuration": "PT4H"}}),
            ),
            "InvalidBreakGlass",
            "is longer than port 22's maxRequestAccessDuration of PT3H",
        ),
        (
            with(json!({"breakGlass": {"principals": [], "maxRequestAccessDuration": "PT30M"}})),
            "InvalidBreakGlass",
            "breakGlass.principals is empty",
        ),
        (
            with(json!({"breakGlass": {"principals": ["local:carol"]}})),
            "InvalidBreakGlass",
            "maxRequestAccessDuration is missing",
        ),
        (
            with(
                json!({"breakGlass": {"principals": ["local:carol"], "maxRequestAccessDuration": "PT0S"}}),
            ),
            "InvalidBreakGlass",
            "breakGlass.maxRequestAccessDuration",
        ),
        (
            with(
                json!({"breakGlass": {"principals": ["local:carol"], "maxRequestAccessDuration": "PT30M", "max": 1}}),
            ),
            "InvalidPolicyDocument",
            "breakGlass: unknown field",
        ),
        (
            with(json!({"notify": {"slack": "#ops"}})),
            "InvalidNotify",
            "notify.slack",
        ),
        (
            with(json!({"notify": {"teams": "ops team"}})),
            "InvalidNotify",
            "notify.teams",
        ),
        (
            with(json!({"notify": {"email": "ops@example.com"}})),
            "InvalidPolicyDocument",
            "notify: unknown field",
        ),
    ];
    for (body, code, says) in cases {
        let (status, answer) = put_policy(&stack, &vm.arn, body.clone()).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    // Break-glass on a policy without approvers is allowed.
    let mut no_approvers = policy();
    no_approvers["approvers"] = json!([]);
    let stored = enable(&stack, &vm.arn, no_approvers).await;
    assert_eq!(stored["breakGlass"]["maxRequestAccessDuration"], "PT30M");
}

#[tokio::test]
async fn the_grant_checks_a_queued_break_glass_request_again() {
    let stack = with_ops_webhook("us-west-1").await;
    let vm = stack.instance(&[]).await;
    let group = enable(&stack, &vm.arn, policy()).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    let app = stack.grant_app();
    let now = stack.now();
    let message = |id: &str, requestor: &str, duration: &str| {
        json!({"id": id, "requestor": requestor, "breakGlass": true,
            "justification": "paged",
            "virtualMachines": [{"id": vm.arn, "ports": [{"number": 22, "duration": duration,
                "allowedSourceAddressPrefix": "198.51.100.9"}]}]})
    };
    // Sent straight to the queue by another system: checked against the
    // break-glass rules, not the requesters, and nothing opens when refused.
    for refused in [
        message("bg-alice", "local:alice", "PT10M"),
        message("bg-long", "local:carol", "PT1H"),
    ] {
        assert!(deliver(&app, &refused, now).await.is_empty());
    }
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
    assert!(
        deliver(&app, &message("bg-carol", "local:carol", "PT10M"), now)
            .await
            .is_empty()
    );
    let opened = record(&stack, "bg-carol").await;
    assert_eq!(opened["breakGlass"], true, "{opened}");
    assert_eq!(opened["status"], "Approved");
    assert_eq!(opened["approvers"], json!(["local:bob"]));
    assert_eq!(port0(&opened)["status"], "Initiated", "{opened}");
    assert_eq!(stack.ingress_rules_of_group(&group).await.len(), 1);

    // Taking break-glass out of the policy closes what it opened.
    let mut without = policy();
    without.as_object_mut().unwrap().remove("breakGlass");
    enable(&stack, &vm.arn, without).await;
    let closed = record(&stack, "bg-carol").await;
    assert_eq!(port0(&closed)["status"], "Revoked", "{closed}");
    assert_eq!(port0(&closed)["statusReason"], "PolicyChanged");
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
}

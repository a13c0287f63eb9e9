//! Notifications end to end: requests made through the local host's HTTP
//! API and Slack routes on moto, the notify function reading the requests
//! table's stream and its queue as the host runs it, and Slack and Teams
//! stood in for by [`ChatFake`] on loopback. Each test has its own moto
//! region and its own fake.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use jitvm_notify::Outcome;
use jitvm_tests::chat_fake::{ChatFake, SlackPost, TeamsPost};
use jitvm_tests::stack::{
    ALICE, BOB, SLACK_TEAM, Stack, act, ask, click_body, drain, enable, eventually, port0, record,
    records_of, request,
};
use reqwest::Method;
use serde_json::{Value, json};

const INTERACTIVE: &str = "/v1/chatops/slack/interactive";
const RESPONSE_URL: &str = "https://hooks.slack.com/actions/T0TEAM/1/x";
/// The bot token the stacks here post with.
const BOT_TOKEN: &str = "xoxb-0000-1111-s3cr3tbot";
/// The deployment's default Slack channel and Teams webhook.
const CHANNEL: &str = "C0APPROVE";
const WEBHOOK: &str = "ops";
/// How long a notice may take to arrive (the host reads the stream four
/// times a second; retries wait 1 s, then 2 s, …).
const SOON: Duration = Duration::from_secs(30);

const SLACK_ALICE: &str = "U0ALICE";
const SLACK_BOB: &str = "U0BOB";

fn slack_principal(user: &str) -> String {
    format!("slack:{SLACK_TEAM}/{user}")
}

/// A stack whose notices go to `chat` (Slack channel [`CHANNEL`], Teams
/// webhook [`WEBHOOK`]), retried after 1 s, with its notifier running.
async fn notifying(region: &str, chat: &ChatFake, extra: &[(&str, &str)]) -> Stack {
    let webhooks =
        json!({ WEBHOOK: chat.teams_url(WEBHOOK), "other": chat.teams_url("other") }).to_string();
    let slack = chat.slack_base();
    let mut settings: Vec<(&str, &str)> = vec![
        ("JITVM_SLACK_BOT_TOKEN", BOT_TOKEN),
        ("JITVM_SLACK_API_URL", &slack),
        ("JITVM_TEAMS_WEBHOOKS", &webhooks),
        ("JITVM_NOTIFY_SLACK", CHANNEL),
        ("JITVM_NOTIFY_TEAMS", WEBHOOK),
        ("JITVM_NOTIFY_RETRY_SECONDS", "1"),
        ("JITVM_CONSOLE_URL", "https://jit.example.com/"),
    ];
    settings.extend_from_slice(extra);
    let stack = Stack::start_with(region, &settings).await;
    for handle in stack.run_notifier() {
        // The notifier runs until the test's runtime ends.
        drop(handle);
    }
    stack
}

/// Port 22 from 198.51.100.0/24 for at most three hours, requested by
/// Alice (by token or from Slack), approved by `approvers`.
fn policy(approvers: &[String]) -> Value {
    json!({"ports": [{"number": 22, "protocol": "tcp",
        "allowedSourceAddressPrefixes": ["198.51.100.0/24"],
        "maxRequestAccessDuration": "PT3H"}],
        "requesters": ["local:alice", slack_principal(SLACK_ALICE)],
        "approvers": approvers})
}

fn ssh(duration: &str) -> Value {
    json!({"number": 22, "duration": duration, "allowedSourceAddressPrefix": "198.51.100.7"})
}

/// The text of a Slack post, blocks included.
fn shown(post: &SlackPost) -> String {
    post.body.to_string()
}

/// The `(action_id, value)` of each button of a Slack post.
fn buttons(post: &SlackPost) -> Vec<(String, String)> {
    post.body["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            let field = |name: &str| e[name].as_str().unwrap_or_default().to_owned();
            (field("action_id"), field("value"))
        })
        .collect()
}

fn card(post: &TeamsPost) -> &Value {
    &post.body["attachments"][0]["content"]
}

/// Clicks `action` on request `id` as Slack user `user`, signed as Slack
/// signs it; returns the message that replaces the one clicked.
async fn click(stack: &Stack, user: &str, action: &str, id: &str) -> Value {
    let body = click_body(SLACK_TEAM, user, action, id, RESPONSE_URL);
    let (status, answer) = stack
        .slack_at(INTERACTIVE, &body, stack.now().as_second(), None)
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

fn about(id: &str, words: &str) -> impl Fn(&SlackPost) -> bool {
    let (id, words) = (id.to_owned(), words.to_owned());
    move |p| {
        let text = shown(p);
        text.contains(&id) && text.contains(&words)
    }
}

fn card_about(id: &str, words: &str) -> impl Fn(&TeamsPost) -> bool {
    let (id, words) = (id.to_owned(), words.to_owned());
    move |p| {
        let text = p.body.to_string();
        text.contains(&id) && text.contains(&words)
    }
}

#[tokio::test]
async fn a_pending_request_reaches_approvers_in_slack_and_teams_and_a_click_approves_it() {
    let chat = ChatFake::start().await;
    let stack = notifying("eu-west-1", &chat, &[]).await;
    let vm = stack.instance(&[]).await;
    enable(&stack, &vm.arn, policy(&[slack_principal(SLACK_BOB)])).await;

    let hostile = "fix <!channel> <https://evil.example|login> *now*";
    let body = json!({"virtualMachines": [{"id": vm.arn, "ports": [ssh("PT1H")]}],
        "justification": hostile})
    .to_string();
    let (status, asked) = request(&stack, ALICE, body).await;
    assert_eq!(
        (status, asked["status"].as_str()),
        (202, Some("PendingApproval")),
        "{asked}"
    );
    let id = asked["id"].as_str().unwrap().to_owned();

    // Approvers see it in the channel, with buttons the interactive route
    // answers, and in Teams with a link to the console.
    let post = chat
        .wait_for_slack(
            "the pending request in Slack",
            SOON,
            about(&id, "asks for access"),
        )
        .await;
    assert_eq!(post.channel, CHANNEL);
    assert_eq!(post.token, BOT_TOKEN);
    assert_eq!(
        buttons(&post),
        [("approve".into(), id.clone()), ("deny".into(), id.clone())]
    );
    let text = shown(&post);
    assert!(
        text.contains("local:alice") && text.contains("22/tcp"),
        "{text}"
    );
    assert!(
        !text.contains("<!channel>") && !text.contains("<https://evil"),
        "{text}"
    );
    let teams = chat
        .wait_for_teams(
            "the pending request in Teams",
            SOON,
            card_about(&id, "asks for access"),
        )
        .await;
    assert_eq!(teams.webhook, WEBHOOK);
    assert_eq!(
        teams.body["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(
        card(&teams)["actions"][0]["url"],
        "https://jit.example.com/"
    );
    assert!(
        !teams.body.to_string().contains("[x]") && !teams.body.to_string().contains("<!channel>")
    );

    // Bob clicks Approve in the message: the request is approved, and the
    // requestor hears it, then hears that access is open.
    let answer = click(&stack, SLACK_BOB, "approve", &id).await;
    assert!(answer.to_string().contains("pproved"), "{answer}");
    chat.wait_for_slack("the approval", SOON, about(&id, "was approved"))
        .await;
    drain(&stack).await;
    assert_eq!(port0(&record(&stack, &id).await)["status"], "Initiated");
    let opened = chat
        .wait_for_slack("the opening", SOON, about(&id, "is open"))
        .await;
    assert_eq!(buttons(&opened), [("revoke".into(), id.clone())]);
    chat.wait_for_teams("the opening in Teams", SOON, card_about(&id, "is open"))
        .await;
    // No secret reached a message.
    for post in chat.slack_posts() {
        assert!(!shown(&post).contains("s3cr3t"), "{}", shown(&post));
    }
}

#[tokio::test]
async fn the_requestor_hears_in_a_direct_message_when_access_opens_and_before_it_ends_and_can_extend()
 {
    let chat = ChatFake::start().await;
    let stack = notifying("eu-west-2", &chat, &[]).await;
    let vm = stack.instance(&[]).await;
    enable(&stack, &vm.arn, policy(&[])).await;

    let (status, answer) = stack
        .slash(
            SLACK_ALICE,
            &format!(
                "22 {} 10m from 198.51.100.7 -- deploy",
                vm.world.instance_id
            ),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    drain(&stack).await;
    let (id, end) = {
        let records = records_of(&stack, &vm.arn).await;
        let r = &records[0];
        (
            r["id"].as_str().unwrap().to_owned(),
            port0(r)["endTimeUtc"].as_str().unwrap().to_owned(),
        )
    };
    // Alice asked from Slack: her news comes to her, not to the channel.
    let opened = chat
        .wait_for_slack("the opening", SOON, about(&id, "is open"))
        .await;
    assert_eq!(opened.channel, SLACK_ALICE);

    // The opening set a reminder for five minutes before the end: a job
    // waiting in the notify queue.
    eventually("the reminder is queued", SOON, || async {
        let attributes = stack
            .sqs
            .get_queue_attributes()
            .queue_url(stack.host.notify.jobs.url())
            .attribute_names(
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            )
            .send()
            .await
            .expect("queue attributes");
        attributes
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            })
            .is_some_and(|n| n != "0")
    })
    .await;
    // When it comes back, due: Alice is told, with an Extend button.
    let end: jiff::Timestamp = end.parse().unwrap();
    let due = end.checked_sub(jiff::SignedDuration::from_mins(5)).unwrap();
    let job = json!({"job": "remind", "requestId": id, "at": due.to_string()});
    let failed = on_job(&stack, &job, due).await;
    assert!(failed.is_empty(), "{failed:?}");
    let reminder = chat
        .wait_for_slack("the reminder", SOON, about(&id, "ends at"))
        .await;
    assert_eq!(reminder.channel, SLACK_ALICE);
    assert!(
        shown(&reminder).contains("in 5 min"),
        "{}",
        shown(&reminder)
    );
    assert_eq!(buttons(&reminder), [("extend".into(), id.clone())]);

    // Bob may not extend Alice's access; Alice may, and gets the same
    // access again as a new request.
    let refused = click(&stack, SLACK_BOB, "extend", &id).await;
    assert!(
        refused
            .to_string()
            .contains("only slack:T0TEAM/U0ALICE may extend"),
        "{refused}"
    );
    let answer = click(&stack, SLACK_ALICE, "extend", &id).await;
    assert!(!answer.to_string().contains(":warning:"), "{answer}");
    drain(&stack).await;
    let requests = records_of(&stack, &vm.arn).await;
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let extension = requests.iter().find(|r| r["id"] != id.as_str()).unwrap();
    assert_eq!(extension["requestor"], slack_principal(SLACK_ALICE));
    assert_eq!(extension["justification"], "deploy");
    assert_eq!(
        port0(extension)["allowedSourceAddressPrefix"],
        "198.51.100.7/32"
    );
    assert_eq!(port0(extension)["status"], "Initiated");
}

/// Hands `job` to the notify function's queue handler at `now`, as one
/// SQS message; returns the ids it reports failed.
async fn on_job(stack: &Stack, job: &Value, now: jiff::Timestamp) -> Vec<String> {
    let mut message = SqsMessage::default();
    message.message_id = Some("job-1".into());
    message.body = Some(job.to_string());
    let mut event = SqsEvent::default();
    event.records.push(message);
    jitvm_notify::on_jobs(&stack.host.notify_app(), event, now)
        .await
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect()
}

#[tokio::test]
async fn the_requestor_hears_a_denial_with_its_reason_and_an_early_close_with_why() {
    let chat = ChatFake::start().await;
    let stack = notifying("eu-west-3", &chat, &[]).await;
    let vm = stack.instance(&[]).await;
    enable(&stack, &vm.arn, policy(&["local:bob".into()])).await;

    let (_, asked) = request(&stack, ALICE, ask(&vm.arn, ssh("PT1H"))).await;
    let denied_id = asked["id"].as_str().unwrap().to_owned();
    let (status, body) = stack
        .call(
            Method::POST,
            &format!("/v1/requests/{denied_id}/deny"),
            Some(BOB),
            Some(json!({"reason": "use the bastion"}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let denied = chat
        .wait_for_slack("the denial", SOON, about(&denied_id, "was denied by"))
        .await;
    assert!(shown(&denied).contains("use the bastion") && shown(&denied).contains("local:bob"));
    assert!(buttons(&denied).is_empty());

    let (_, asked) = request(&stack, ALICE, ask(&vm.arn, ssh("PT1H"))).await;
    let id = asked["id"].as_str().unwrap().to_owned();
    assert_eq!(act(&stack, BOB, &id, "approve").await.0, 200);
    drain(&stack).await;
    chat.wait_for_slack("the opening", SOON, about(&id, "is open"))
        .await;
    let (status, body) = act(&stack, ALICE, &id, "revoke").await;
    assert_eq!(status, 200, "{body}");
    chat.wait_for_slack(
        "the early close",
        SOON,
        about(&id, "was closed early: revoked"),
    )
    .await;
    chat.wait_for_teams(
        "the early close in Teams",
        SOON,
        card_about(&id, "closed early"),
    )
    .await;

    // A request nobody decides on times out at the sweep after the
    // approval timeout (an hour): the requestor hears that too.
    let (_, asked) = request(&stack, ALICE, ask(&vm.arn, ssh("PT1H"))).await;
    let waiting = asked["id"].as_str().unwrap().to_owned();
    stack.advance(2 * 3600);
    stack
        .host
        .sweep_once(stack.now())
        .await
        .expect("the sweep runs");
    assert_eq!(record(&stack, &waiting).await["status"], "Denied");
    chat.wait_for_slack(
        "the timeout",
        SOON,
        about(&waiting, "timed out: no approver decided"),
    )
    .await;
}

#[tokio::test]
async fn a_failed_post_is_retried_with_backoff_a_refusal_is_not_and_both_are_counted() {
    let chat = ChatFake::start().await;
    let stack = notifying("eu-north-1", &chat, &[("JITVM_NOTIFY_ATTEMPTS", "3")]).await;
    let vm = stack.instance(&[]).await;
    enable(&stack, &vm.arn, policy(&["local:bob".into()])).await;
    let tally = &stack.host.notify.tally;

    // Slack is down once, then rate limits once (Retry-After: 1): the
    // notice still arrives, on the third and last try, once.
    chat.fail_next_slack(1, 503);
    chat.ratelimit_next_slack(1);
    // Teams fails on every try: given up after three.
    chat.fail_next_teams(3, 500);
    let (_, asked) = request(&stack, ALICE, ask(&vm.arn, ssh("PT1H"))).await;
    let id = asked["id"].as_str().unwrap().to_owned();
    chat.wait_for_slack(
        "the pending request after retries",
        SOON,
        about(&id, "asks for access"),
    )
    .await;
    eventually("Teams is given up on", SOON, || async {
        tally.get("teams", Outcome::GaveUp) == 1
    })
    .await;
    assert_eq!(tally.get("slack", Outcome::Retried), 2);
    assert_eq!(tally.get("slack", Outcome::Delivered), 1);
    assert_eq!(tally.get("teams", Outcome::Retried), 2);
    assert!(chat.teams_posts().is_empty());
    // The decision never waited on any of it.
    assert_eq!(record(&stack, &id).await["status"], "PendingApproval");

    // A refusal for good (an unknown channel; a redirect, never followed)
    // is counted and not tried again.
    chat.slack_error_next("channel_not_found");
    chat.redirect_next_teams();
    let (before_slack, before_teams) = chat.arrivals();
    assert_eq!(act(&stack, BOB, &id, "approve").await.0, 200);
    eventually("both refusals are counted", SOON, || async {
        tally.get("slack", Outcome::Failed) == 1 && tally.get("teams", Outcome::Failed) == 1
    })
    .await;
    drain(&stack).await;
    // The opening that follows is delivered as usual; the refused approval
    // notice was posted once to each and never again.
    chat.wait_for_slack("the opening", SOON, about(&id, "is open"))
        .await;
    chat.wait_for_teams("the opening in Teams", SOON, card_about(&id, "is open"))
        .await;
    assert!(!chat.slack_posts().iter().any(about(&id, "was approved")));
    let (after_slack, after_teams) = chat.arrivals();
    assert_eq!(
        (after_slack - before_slack, after_teams - before_teams),
        (2, 2)
    );
}

#[tokio::test]
async fn a_dead_teams_webhook_delays_neither_the_grant_nor_the_slack_notice() {
    let chat = ChatFake::start().await;
    let stack = notifying("ca-central-1", &chat, &[]).await;
    let vm = stack.instance(&[]).await;
    enable(&stack, &vm.arn, policy(&[])).await;
    chat.hang_teams(true);

    let (status, asked) = request(&stack, ALICE, ask(&vm.arn, ssh("PT1H"))).await;
    assert_eq!(status, 202, "{asked}");
    let id = asked["id"].as_str().unwrap().to_owned();
    drain(&stack).await;
    // Granted while Teams hangs, and Slack told while a post to Teams is
    // still waiting for its answer.
    assert_eq!(port0(&record(&stack, &id).await)["status"], "Initiated");
    chat.wait_for_slack("the opening", SOON, about(&id, "is open"))
        .await;
    assert!(chat.teams_hanging() >= 1, "Teams answered already");
    assert!(chat.teams_posts().is_empty());
    // Once Teams answers again, the retry gets through.
    chat.hang_teams(false);
    chat.wait_for_teams(
        "the opening in Teams, retried",
        SOON,
        card_about(&id, "is open"),
    )
    .await;
    assert!(stack.host.notify.tally.get("teams", Outcome::Retried) >= 1);
}

#[tokio::test]
async fn a_policy_names_its_own_channels() {
    let chat = ChatFake::start().await;
    let stack = notifying("ap-south-1", &chat, &[]).await;
    let vm = stack.instance(&[]).await;
    let mut own = policy(&["local:bob".into()]);
    own["notify"] = json!({"slack": "C0OPSTEAM", "teams": "other"});
    enable(&stack, &vm.arn, own).await;
    let (_, asked) = request(&stack, ALICE, ask(&vm.arn, ssh("PT1H"))).await;
    let id = asked["id"].as_str().unwrap().to_owned();
    let post = chat
        .wait_for_slack("the pending request", SOON, about(&id, "asks for access"))
        .await;
    assert_eq!(post.channel, "C0OPSTEAM");
    let teams = chat
        .wait_for_teams(
            "the pending request in Teams",
            SOON,
            card_about(&id, "asks for access"),
        )
        .await;
    assert_eq!(teams.webhook, "other");

    // A policy may only name a Teams webhook the deployment has.
    let mut unknown = policy(&[]);
    unknown["notify"] = json!({"teams": "nosuch"});
    let (status, body) = jitvm_tests::stack::put_policy(&stack, &vm.arn, unknown).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"nosuch\""),
        "{body}"
    );
}

#[tokio::test]
async fn every_audit_event_goes_on_the_bus_for_other_systems() {
    let chat = ChatFake::start().await;
    let stack = notifying("sa-east-1", &chat, &[]).await;
    let config = jitvm_tests::config_at(jitvm_tests::Moto::shared().endpoint(), "sa-east-1").await;
    let events = aws_sdk_eventbridge::Client::new(&config);
    // A subscriber: a rule on the default bus sending jitvm's events to a
    // queue.
    let queue_url = stack
        .sqs
        .create_queue()
        .queue_name("jitvm-events-subscriber")
        .send()
        .await
        .expect("create queue")
        .queue_url
        .unwrap();
    let queue_arn = "arn:aws:sqs:sa-east-1:123456789012:jitvm-events-subscriber";
    events
        .put_rule()
        .name("jitvm-all")
        .event_pattern(json!({"source": ["jitvm"]}).to_string())
        .send()
        .await
        .expect("put rule");
    events
        .put_targets()
        .rule("jitvm-all")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("q")
                .arn(queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("put targets");

    let vm = stack.instance(&[]).await;
    enable(&stack, &vm.arn, policy(&["local:bob".into()])).await;
    let (_, asked) = request(&stack, ALICE, ask(&vm.arn, ssh("PT1H"))).await;
    let id = asked["id"].as_str().unwrap().to_owned();
    assert_eq!(act(&stack, BOB, &id, "approve").await.0, 200);
    drain(&stack).await;
    assert_eq!(act(&stack, ALICE, &id, "revoke").await.0, 200);

    let wanted = [
        "JIT Request Pending Approval",
        "JIT Request Approved",
        "JIT Access Opened",
        "JIT Access Closed",
    ];
    let mut seen: Vec<Value> = Vec::new();
    let deadline = std::time::Instant::now() + SOON;
    while seen.len() < wanted.len() && std::time::Instant::now() < deadline {
        let got = stack
            .sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for m in got.messages() {
            seen.push(serde_json::from_str(m.body().unwrap()).unwrap());
        }
    }
    // A standard queue keeps no order: the event ids do.
    let index = |e: &Value| -> u32 {
        let event_id = e["detail"]["eventId"].as_str().unwrap_or_default();
        event_id.rsplit('/').next().unwrap().parse().unwrap()
    };
    seen.sort_by_key(index);
    let types: Vec<&str> = seen
        .iter()
        .map(|e| e["detail-type"].as_str().unwrap())
        .collect();
    assert_eq!(types, wanted, "{seen:#?}");
    for event in &seen {
        assert_eq!(event["source"], "jitvm");
        assert_eq!(event["detail"]["requestId"], id.as_str());
    }
    assert_eq!(seen[1]["detail"]["actor"], "local:bob", "{:#}", seen[1]);
    assert_eq!(seen[2]["detail"]["port"], 22);
    assert_eq!(seen[3]["detail"]["reason"], "UserRequested");
    let ids: Vec<&str> = seen
        .iter()
        .map(|e| e["detail"]["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, (0..4).map(|i| format!("{id}/{i}")).collect::<Vec<_>>());
    assert_eq!(
        stack.host.notify.tally.get("eventbridge", Outcome::GaveUp),
        0
    );
}

#[tokio::test]
async fn break_glass_is_loud_approvers_hear_at_once_and_revoke_from_the_message() {
    let chat = ChatFake::start().await;
    let stack = notifying("me-central-1", &chat, &[]).await;
    let vm = stack.instance(&[]).await;
    let mut glass = policy(&[slack_principal(SLACK_BOB)]);
    glass["breakGlass"] =
        json!({"principals": ["local:alice"], "maxRequestAccessDuration": "PT30M"});
    enable(&stack, &vm.arn, glass).await;

    let body = json!({"virtualMachines": [{"id": vm.arn, "ports": [ssh("PT30M")]}],
        "justification": "prod is down, INC-4711", "breakGlass": true})
    .to_string();
    let (status, asked) = request(&stack, ALICE, body).await;
    assert!(status == 202 || status == 201, "{status} {asked}");
    let id = asked["id"].as_str().unwrap().to_owned();
    drain(&stack).await;
    assert_eq!(port0(&record(&stack, &id).await)["status"], "Initiated");

    // The approvers hear at once, with a way to revoke, in both channels.
    let post = chat
        .wait_for_slack(
            "the break-glass notice",
            SOON,
            about(&id, "Break-glass access"),
        )
        .await;
    assert_eq!(post.channel, CHANNEL);
    assert!(
        shown(&post).contains("prod is down, INC-4711"),
        "{}",
        shown(&post)
    );
    assert_eq!(buttons(&post), [("revoke".into(), id.clone())]);
    let teams = chat
        .wait_for_teams(
            "the break-glass card",
            SOON,
            card_about(&id, "Break-glass access"),
        )
        .await;
    assert_eq!(card(&teams)["body"][0]["color"], "Attention");
    assert_eq!(card(&teams)["actions"][0]["title"], "Revoke in the console");

    // Bob revokes it from the message; Alice hears that it closed early.
    let answer = click(&stack, SLACK_BOB, "revoke", &id).await;
    assert!(!answer.to_string().contains(":warning:"), "{answer}");
    assert_eq!(port0(&record(&stack, &id).await)["status"], "Revoked");
    chat.wait_for_slack(
        "the early close",
        SOON,
        about(&id, "was closed early: revoked"),
    )
    .await;
}

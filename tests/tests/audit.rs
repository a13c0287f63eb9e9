//! The audit side end to end (moto, through the HTTP API): listing
//! requests by VM, requestor and time, a page at a time, with each caller
//! seeing only what they may; and the CSV export, read back as a
//! spreadsheet would.

use std::collections::BTreeSet;

use jiff::Timestamp;
use jitvm_tests::stack::{ADMIN, ALICE, AUDITOR, BOB, Stack, act, drain, enable, encode, request};
use reqwest::Method;
use serde_json::{Value, json};

fn policy(approvers: &[&str]) -> Value {
    json!({"ports": [{"number": 22, "protocol": "tcp",
        "allowedSourceAddressPrefixes": ["198.51.100.0/24"],
        "maxRequestAccessDuration": "PT3H"}],
        "requesters": ["local:alice", "local:bob"],
        "approvers": approvers})
}

async fn ask_for(stack: &Stack, token: &str, vm: &str, justification: &str) -> String {
    let body = json!({"virtualMachines": [{"id": vm, "ports": [{"number": 22,
        "duration": "PT1H", "allowedSourceAddressPrefix": "198.51.100.7"}]}],
        "justification": justification});
    let (status, accepted) = request(stack, token, body.to_string()).await;
    assert_eq!(status, 202, "{accepted}");
    accepted["id"].as_str().unwrap().to_owned()
}

async fn list(stack: &Stack, token: &str, query: &str) -> (u16, Value) {
    stack
        .call(
            Method::GET,
            &format!("/v1/requests?{query}"),
            Some(token),
            None,
        )
        .await
}

fn ids(page: &Value) -> Vec<String> {
    page["value"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn listings_filter_page_and_show_each_caller_what_they_may_see() {
    let stack = Stack::start("me-central-1").await;
    let a = stack.instance(&[]).await;
    let b = stack.instance(&[]).await;
    enable(&stack, &a.arn, policy(&[])).await;
    enable(&stack, &b.arn, policy(&[])).await;

    // Seven requests an hour apart: Alice on A, Bob on A, Alice on B, ...
    let t0 = stack.now();
    let mut made = Vec::new();
    for i in 0..7 {
        let (token, who) = if i % 2 == 0 {
            (ALICE, "alice")
        } else {
            (BOB, "bob")
        };
        let vm = if i % 3 == 2 { &b.arn } else { &a.arn };
        made.push((
            ask_for(&stack, token, vm, "maintenance").await,
            who,
            vm.clone(),
        ));
        stack.advance(3600);
    }
    let newest_first = |pick: &dyn Fn(&(String, &str, String)) -> bool| -> Vec<String> {
        made.iter()
            .rev()
            .filter(|m| pick(m))
            .map(|m| m.0.clone())
            .collect()
    };

    // By VM, as the admin: every request of A, newest first.
    let (status, page) = list(&stack, ADMIN, &format!("vm={}", encode(&a.arn))).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), newest_first(&|m| m.2 == a.arn));
    // By requestor, across VMs.
    let (_, page) = list(&stack, ADMIN, "requestor=local%3Aalice").await;
    assert_eq!(ids(&page), newest_first(&|m| m.1 == "alice"));
    // Both at once.
    let (_, page) = list(
        &stack,
        AUDITOR,
        &format!("vm={}&requestor=local:bob", encode(&a.arn)),
    )
    .await;
    assert_eq!(ids(&page), newest_first(&|m| m.1 == "bob" && m.2 == a.arn));
    // Everything, for an auditor, in pages of two with no gap or repeat.
    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    for _ in 0..10 {
        let (status, page) = list(&stack, AUDITOR, &query).await;
        assert_eq!(status, 200, "{page}");
        assert!(ids(&page).len() <= 2);
        seen.extend(ids(&page));
        match page["nextToken"].as_str() {
            Some(next) => query = format!("limit=2&nextToken={}", encode(next)),
            None => break,
        }
    }
    assert_eq!(seen, newest_first(&|_| true));
    // A time window (since inclusive, until exclusive) holding the third
    // and fourth requests.
    let since = (t0 + jiff::SignedDuration::from_secs(3600 + 1800)).to_string();
    let until = (t0 + jiff::SignedDuration::from_secs(3 * 3600 + 1800)).to_string();
    let (_, page) = list(&stack, ADMIN, &format!("since={since}&until={until}")).await;
    assert_eq!(ids(&page), vec![made[3].0.clone(), made[2].0.clone()]);

    // Alice, neither admin nor approver, sees her own and only her own.
    let (_, page) = list(&stack, ALICE, "").await;
    assert_eq!(ids(&page), newest_first(&|m| m.1 == "alice"));
    let (_, page) = list(&stack, ALICE, &format!("vm={}", encode(&a.arn))).await;
    assert_eq!(
        ids(&page),
        newest_first(&|m| m.1 == "alice" && m.2 == a.arn)
    );
    let (status, body) = list(&stack, ALICE, "requestor=local:bob").await;
    assert_eq!(status, 403, "{body}");

    // Bad parameters are refused with a reason.
    for (query, code) in [
        ("limit=0", "InvalidLimit"),
        ("limit=201", "InvalidLimit"),
        ("since=yesterday", "InvalidTime"),
        (
            "since=2026-11-23T10:00:00Z&until=2026-11-23T09:00:00Z",
            "InvalidTime",
        ),
        ("nextToken=not-a-token", "InvalidNextToken"),
        ("requestor=%20", "InvalidRequestor"),
        ("vm=i-123", "InvalidVmId"),
    ] {
        let (status, body) = list(&stack, ADMIN, query).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
}

async fn csv_text(stack: &Stack, token: &str, query: &str) -> (u16, String, String) {
    let resp = stack
        .http
        .get(format!("{}/v1/audit.csv?{query}", stack.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, kind, resp.text().await.unwrap())
}

fn parse_csv(text: &str) -> Vec<csv::StringRecord> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    reader
        .records()
        .map(|r| r.expect("well-formed CSV"))
        .collect()
}

#[tokio::test]
async fn the_csv_export_has_one_safe_line_per_state_change() {
    let stack = Stack::start("il-central-1").await;
    let vm = stack.instance(&[]).await;
    enable(&stack, &vm.arn, policy(&["local:bob"])).await;
    let before = stack.now();
    let nasty = "=HYPERLINK(\"http://evil.example\",\"click\"), then \"quotes\"; +1";
    let id = ask_for(&stack, ALICE, &vm.arn, nasty).await;
    stack.advance(60);
    let (status, _) = act(&stack, BOB, &id, "approve").await;
    assert_eq!(status, 200);
    drain(&stack).await;
    stack.advance(60);
    let (status, _) = act(&stack, ALICE, &id, "revoke").await;
    assert_eq!(status, 200);
    stack.advance(1);
    let after = stack.now();

    let window = format!("since={before}&until={after}");
    let (status, kind, text) = csv_text(&stack, AUDITOR, &window).await;
    assert_eq!(status, 200, "{text}");
    assert!(kind.starts_with("text/csv"), "{kind}");
    assert!(text.starts_with('\u{feff}'), "a BOM, for spreadsheets");
    let rows = parse_csv(&text);
    let header: Vec<&str> = rows[0].iter().collect();
    for column in [
        "time",
        "requestId",
        "vm",
        "port",
        "source",
        "requestor",
        "approver",
        "status",
        "reason",
        "justification",
    ] {
        assert!(header.contains(&column), "{column} in {header:?}");
    }
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let lines: Vec<&csv::StringRecord> = rows[1..]
        .iter()
        .filter(|r| r[col("requestId")] == id)
        .collect();
    let statuses: Vec<&str> = lines.iter().map(|r| &r[col("status")]).collect();
    assert_eq!(
        statuses,
        ["PendingApproval", "Approved", "Initiated", "Revoked"],
        "{text}"
    );
    let revoked = lines[3];
    assert_eq!(&revoked[col("port")], "22");
    assert_eq!(&revoked[col("source")], "198.51.100.7/32");
    assert_eq!(&revoked[col("requestor")], "local:alice");
    assert_eq!(&revoked[col("approver")], "local:bob");
    assert_eq!(&revoked[col("reason")], "UserRequested");
    assert_eq!(&revoked[col("vm")], vm.arn);
    // The justification survives whole, commas and quotes included, and a
    // spreadsheet shows it as text instead of running it.
    assert_eq!(&revoked[col("justification")], format!("'{nasty}"));
    assert_eq!(&lines[0][col("approver")], "", "nobody had approved yet");
    let times: Vec<Timestamp> = rows[1..]
        .iter()
        .map(|r| r[col("time")].parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");

    // A window after the revoke has none of it; one holding only the
    // approval has just that line and the opening.
    let (_, _, later) = csv_text(&stack, AUDITOR, &format!("since={after}")).await;
    assert_eq!(parse_csv(&later).len(), 1, "header only: {later}");
    let approved_at = &lines[1][col("time")];
    let (_, _, middle) = csv_text(
        &stack,
        ADMIN,
        &format!(
            "since={approved_at}&until={}",
            lines[3][col("time")].to_owned()
        ),
    )
    .await;
    let statuses: BTreeSet<String> = parse_csv(&middle)[1..]
        .iter()
        .map(|r| r[col("status")].to_owned())
        .collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["Approved".into(), "Initiated".into()])
    );

    // Only admins and auditors export; bad windows are refused.
    assert_eq!(csv_text(&stack, ALICE, &window).await.0, 403);
    assert_eq!(csv_text(&stack, BOB, &window).await.0, 403);
    assert_eq!(
        csv_text(&stack, ADMIN, &format!("since={after}&until={before}"))
            .await
            .0,
        400
    );
    assert_eq!(
        csv_text(
            &stack,
            ADMIN,
            "since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z"
        )
        .await
        .0,
        400
    );
    assert_eq!(csv_text(&stack, ADMIN, "since=soon").await.0, 400);
}

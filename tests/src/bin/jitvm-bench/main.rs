//! Benchmarks of the AWS path against moto on this machine. Figures are
//! printed, never asserted: run
//!
//!     cargo run --release -p jitvm-tests --bin jitvm-bench [-- --azure-only | --chatops-only | --expiry-only]
//!
//! It measures:
//! - request accepted (202) to rule present in EC2, p50/p99 over 50
//!   requests, through the local host's HTTP API and queue poller, beside
//!   the latency of one direct AuthorizeSecurityGroupIngress call;
//! - EC2 API calls per grant opened and per sweep (an SDK interceptor counts
//!   every call the adapter makes);
//! - expiry overshoot (rule gone minus end time) over 50 grants per cloud
//!   whose ends are spread across a sweep cycle, on EC2 and on Azure, on
//!   the timer path and on the backstop path with timers dropped; a sweep
//!   with Azure's token endpoint or ARM hung; cloud calls per expiry;
//! - on Azure (the ARM fake, which answers at once: these figures are
//!   jitvm's own overhead, not Azure's latency): accepted to rule present,
//!   and ARM calls per grant, per early revoke and per sweep;
//! - the Slack slash command's answer time (Slack gives an app 3 seconds),
//!   naming the VM by instance id among many policies, and the audit
//!   listing and CSV export over the records that made.

mod expiry;

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use jitvm_tests::stack::{ADMIN, ALICE, Stack, act, enable};
use reqwest::Method;
use serde_json::json;

const SAMPLES: usize = 50;

#[tokio::main]
async fn main() {
    // With RUST_LOG set, the handlers' JSON log goes to standard output too.
    if std::env::var_os("RUST_LOG").is_some() {
        jitvm_core::telemetry::init();
    }
    let stack = Stack::start("us-east-1").await;
    if std::env::args().any(|a| a == "--chatops-only") {
        chatops(&stack).await;
        return;
    }
    if std::env::args().any(|a| a == "--expiry-only") {
        let poller = tokio::spawn(stack.host.clone().run_poller());
        expiry::run(&stack).await;
        poller.abort();
        return;
    }
    if std::env::args().any(|a| a == "--azure-only") {
        let poller = tokio::spawn(stack.host.clone().run_poller());
        azure(&stack).await;
        poller.abort();
        return;
    }
    let vm = stack.instance(&[]).await;
    let policy = enable(&stack, &vm.arn, bench_policy()).await;
    let group = policy["firewall"].as_str().unwrap_or_default().to_owned();
    println!("jitvm benchmark against moto ({} samples)", SAMPLES);

    // One poller for the whole run, as on the local host: a poller stopped
    // mid long-poll would leave its next message invisible for the queue's
    // visibility timeout.
    let poller = tokio::spawn(stack.host.clone().run_poller());

    // 1. Accepted to rule present.
    let mut latencies = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let body = json!({"virtualMachines": [{"id": vm.arn, "ports": [{"number": 22, "duration": "PT30M",
            "allowedSourceAddressPrefix": format!("198.51.{}.{}", i / 250, i % 250 + 1)}]}]});
        let (status, accepted) = stack
            .call(
                Method::POST,
                "/v1/requests",
                Some(ALICE),
                Some(body.to_string()),
            )
            .await;
        assert_eq!(status, 202, "{accepted}");
        let t0 = Instant::now();
        let id = accepted["id"].as_str().unwrap_or_default().to_owned();
        loop {
            let rules = stack.ingress_rules_of_group(&group).await;
            if rules
                .iter()
                .any(|r| r.tags().iter().any(|t| t.value() == Some(id.as_str())))
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "rule for {id} never appeared"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(t0.elapsed());
    }
    report("accepted -> rule present", &mut latencies);
    // A security group holds at most 60 inbound rules: clear the grants,
    // counting what a sweep of many expired rules costs.
    stack.counter.reset();
    let summary = stack
        .host
        .sweep_once(Timestamp::now() + SignedDuration::from_hours(2))
        .await
        .expect("sweep");
    println!(
        "EC2 calls per sweep removing {} rules ({} expired): {} {:?}",
        summary.revoked,
        summary.expired,
        stack.counter.total(),
        stack.counter.snapshot()
    );

    // 2. One direct AuthorizeSecurityGroupIngress call, on a group of its own.
    let direct_group =
        jitvm_tests::create_group(&stack.ec2, &vm.world.vpc_id, "bench-direct").await;
    let mut direct = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let t0 = Instant::now();
        stack
            .ec2
            .authorize_security_group_ingress()
            .group_id(&direct_group)
            .ip_permissions(
                aws_sdk_ec2::types::IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(2222)
                    .to_port(2222)
                    .ip_ranges(
                        aws_sdk_ec2::types::IpRange::builder()
                            .cidr_ip(format!("203.0.{}.{}/32", i / 250, i % 250 + 1))
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("direct authorize");
        direct.push(t0.elapsed());
    }
    report("one direct AuthorizeSecurityGroupIngress", &mut direct);

    // 3. EC2 calls per grant and per sweep.
    stack.counter.reset();
    let body = json!({"virtualMachines": [{"id": vm.arn, "ports": [{"number": 22, "duration": "PT30M",
        "allowedSourceAddressPrefix": "198.51.200.1"}]}]});
    let (status, _) = stack
        .call(
            Method::POST,
            "/v1/requests",
            Some(ALICE),
            Some(body.to_string()),
        )
        .await;
    assert_eq!(status, 202);
    while stack.ingress_rules_of_group(&group).await.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "EC2 calls per grant opened: {} {:?}",
        stack.counter.total(),
        stack.counter.snapshot()
    );
    stack.counter.reset();
    let swept = Instant::now();
    let summary = stack
        .host
        .sweep_once(Timestamp::now())
        .await
        .expect("sweep");
    let took = swept.elapsed();
    println!(
        "EC2 calls per sweep with nothing expired ({} rules examined): {} {:?}",
        summary.examined,
        stack.counter.total(),
        stack.counter.snapshot()
    );
    println!(
        "sweep with nothing expired: {:.1} ms, {} live records held against the rules, {} brought in line",
        took.as_secs_f64() * 1000.0,
        summary.records_checked,
        summary.records_reconciled
    );
    stack.counter.reset();
    let later = Timestamp::now() + SignedDuration::from_hours(2);
    let summary = stack.host.sweep_once(later).await.expect("sweep");
    println!(
        "EC2 calls per sweep removing {} rules ({} expired, {} drift): {} {:?}",
        summary.revoked,
        summary.expired,
        summary.drift,
        stack.counter.total(),
        stack.counter.snapshot()
    );

    // 4. Expiry: overshoot on both paths, a sweep with Azure hung, calls
    // per expiry.
    expiry::run(&stack).await;
    azure(&stack).await;
    poller.abort();
    chatops(&stack).await;
}

/// The Azure half: the same HTTP API and queue, an Azure VM on the fake.
async fn azure(stack: &Stack) {
    use jitvm_tests::stack::SUBSCRIPTION;
    let arm = &stack.arm;
    let nsg = arm.add_nsg(SUBSCRIPTION, "rg-bench", "bench-nsg");
    let subnet = arm.add_subnet(
        SUBSCRIPTION,
        "rg-bench",
        "bench-vnet",
        "default",
        "10.0.0.0/24",
        None,
    );
    let vm = arm.add_vm(
        SUBSCRIPTION,
        "rg-bench",
        "bench-vm",
        &subnet,
        "10.0.0.4",
        Some(&nsg),
    );
    enable(stack, &vm, bench_policy()).await;
    let grant_rule = |id: &str| {
        arm.rules(&nsg)
            .iter()
            .any(|r| r["name"].as_str().is_some_and(|n| n.ends_with(id)))
    };
    let ask = |source: String| {
        json!({"virtualMachines": [{"id": vm, "ports": [{"number": 22, "duration": "PT30M",
            "allowedSourceAddressPrefix": source}]}]})
        .to_string()
    };
    let mut latencies = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let (status, accepted) = stack
            .call(
                Method::POST,
                "/v1/requests",
                Some(ALICE),
                Some(ask(format!("198.51.{}.{}", i / 250, i % 250 + 1))),
            )
            .await;
        assert_eq!(status, 202, "{accepted}");
        let t0 = Instant::now();
        let id = accepted["id"].as_str().unwrap_or_default().to_owned();
        while !grant_rule(&id) {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "rule for {id} never appeared"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(t0.elapsed());
    }
    report("Azure: accepted -> rule present", &mut latencies);
    let calls = |what: &str| {
        let mut by: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
        for c in arm.calls() {
            let kind = c.path.rsplit('/').nth(1).unwrap_or("").to_owned();
            *by.entry(format!("{} {kind}", c.method)).or_default() += 1;
        }
        println!("ARM calls {what}: {} {by:?}", by.values().sum::<usize>());
    };
    // Let the last grant's operation finish before counting the sweep.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let summary = {
        arm.clear_calls();
        let s = stack
            .host
            .sweep_once(Timestamp::now())
            .await
            .expect("sweep");
        calls(&format!(
            "per sweep with nothing expired ({} rules examined)",
            s.examined
        ));
        arm.clear_calls();
        stack
            .host
            .sweep_once(Timestamp::now() + SignedDuration::from_hours(2))
            .await
            .expect("sweep")
    };
    calls(&format!(
        "per sweep removing {} expired rules",
        summary.revoked
    ));

    arm.clear_calls();
    let (_, accepted) = stack
        .call(
            Method::POST,
            "/v1/requests",
            Some(ALICE),
            Some(ask("198.51.200.1".into())),
        )
        .await;
    let id = accepted["id"].as_str().unwrap_or_default().to_owned();
    // The rule shows before its operation ends: wait for the grant
    // function to finish, so its polls are counted with it.
    loop {
        let (_, record) = stack
            .call(
                Method::GET,
                &format!("/v1/requests/{id}"),
                Some(ADMIN),
                None,
            )
            .await;
        if record["virtualMachines"][0]["ports"][0]["status"] == "Initiated" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    calls("per grant opened");
    arm.clear_calls();
    let (status, _) = act(stack, ALICE, &id, "revoke").await;
    assert_eq!(status, 200);
    calls(
        "per early revoke (the handler lists the VM's rules twice, before and after marking the record)",
    );
}

/// The Slack command's answer time, and the audit reads over what it made.
async fn chatops(stack: &Stack) {
    use jitvm_tests::stack::{AUDITOR, SLACK_TEAM};
    // Twenty VMs with policies, so that a short name is looked for among
    // them; the commands name the last one.
    let mut vm = None;
    for _ in 0..20 {
        let instance = stack.instance(&[]).await;
        let mut policy = bench_policy();
        policy["requesters"] = json!([format!("slack:{SLACK_TEAM}/U0BENCH")]);
        enable(stack, &instance.arn, policy).await;
        vm = Some(instance);
    }
    let Some(vm) = vm else { return };
    let mut answers = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let text = format!(
            "22 {} 30m from 198.51.{}.{} -- bench",
            vm.world.instance_id,
            i / 250,
            i % 250 + 1
        );
        let t0 = Instant::now();
        let (status, answer) = stack.slash("U0BENCH", &text).await;
        answers.push(t0.elapsed());
        assert_eq!(status, 200, "{answer}");
        assert!(answer.to_string().contains("granted"), "{answer}");
    }
    report(
        "Slack /jit request answered (20 policies, VM by instance id)",
        &mut answers,
    );
    let mut reads = Vec::new();
    for _ in 0..10 {
        let t0 = Instant::now();
        let (status, page) = stack
            .call(Method::GET, "/v1/requests?limit=200", Some(AUDITOR), None)
            .await;
        reads.push(t0.elapsed());
        assert_eq!(status, 200, "{page}");
    }
    report("GET /v1/requests?limit=200 (all VMs, by day)", &mut reads);
    let mut exports = Vec::new();
    let mut size = 0;
    for _ in 0..10 {
        let t0 = Instant::now();
        let resp = stack
            .http
            .get(format!("{}/v1/audit.csv", stack.base))
            .bearer_auth(AUDITOR)
            .send()
            .await
            .expect("the host answers");
        let text = resp.text().await.unwrap_or_default();
        exports.push(t0.elapsed());
        size = text.lines().count().saturating_sub(1);
    }
    report(&format!("GET /v1/audit.csv ({size} lines)"), &mut exports);
}

/// Port 22 from a /16, for an hour, for alice: room for every sample's source.
fn bench_policy() -> serde_json::Value {
    json!({"ports": [{"number": 22, "protocol": "tcp",
        "allowedSourceAddressPrefixes": ["198.51.0.0/16"], "maxRequestAccessDuration": "PT1H"}],
        "requesters": ["local:alice"]})
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i.min(samples.len() - 1)]
    };
    println!(
        "{what}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        samples.len(),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        samples.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    );
}

//! Expiry benchmarks: how late each grant closes (on the timer path, and on
//! the backstop path with timers dropped), how long a sweep takes with one
//! cloud hung, and what one expiry costs in cloud calls.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use jitvm_tests::arm_fake::{Fault, FaultKind};
use jitvm_tests::stack::{
    ALICE, RG_STACK, Stack, ask, azure_vm, enable, grant_rule_names, granted_requests, request,
    timer_of,
};
use serde_json::json;

use crate::{bench_policy, report};

/// Grants per cloud and path.
const GRANTS: usize = 50;
/// The sweep interval the backstop runs at (the deployment's).
const SWEEP: Duration = Duration::from_secs(60);
/// The shortest grant; the others end up to one sweep cycle later.
const FIRST_END: u64 = 20;

/// Where grants of one cloud open: the VM and how to see its open grants.
struct Target {
    vm: String,
    /// The jitvm group (EC2) or the NSG (Azure).
    firewall: String,
    azure: bool,
}

impl Target {
    /// Asks for port 22 from `source` for `duration` as alice: the request
    /// id and its end time.
    async fn ask(&self, stack: &Stack, source: &str, duration: &str) -> (String, Timestamp) {
        let port =
            json!({"number": 22, "duration": duration, "allowedSourceAddressPrefix": source});
        let (status, accepted) = request(stack, ALICE, ask(&self.vm, port)).await;
        assert_eq!(status, 202, "{accepted}");
        let id = accepted["id"].as_str().unwrap_or_default().to_owned();
        let end = accepted["virtualMachines"][0]["ports"][0]["endTimeUtc"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("an end time");
        (id, end)
    }

    /// The request ids of the grants open now.
    async fn open(&self, stack: &Stack) -> Vec<String> {
        if !self.azure {
            return granted_requests(&stack.ec2, &self.firewall).await;
        }
        grant_rule_names(&stack.arm, &self.firewall)
            .iter()
            .filter_map(|n| n.rsplit('-').next().map(str::to_owned))
            .collect()
    }
}

pub async fn run(stack: &Stack) {
    let ec2 = ec2_target(stack).await;
    let azure = azure_target(stack, "bench-expiry").await;

    // Timer path: the timers run, no sweep.
    let timers = stack.run_timers();
    overshoot(stack, &[&ec2, &azure], "timer path (no sweep running)", 0).await;
    timers.abort();

    // Backstop path: timers dropped, the sweep every minute.
    let sweeper = tokio::spawn(std::sync::Arc::clone(&stack.host).run_sweeper(SWEEP));
    overshoot(
        stack,
        &[&ec2, &azure],
        &format!(
            "backstop path (timers dropped, sweep every {} s)",
            SWEEP.as_secs()
        ),
        1,
    )
    .await;
    sweeper.abort();
    drop_timers(stack).await;

    calls_per_expiry(stack, &ec2, &azure).await;
    hung_cloud(stack).await;
}

async fn ec2_target(stack: &Stack) -> Target {
    let vm = stack.instance(&[]).await;
    let group = enable(stack, &vm.arn, bench_policy()).await["firewall"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Target {
        vm: vm.arn,
        firewall: group,
        azure: false,
    }
}

async fn azure_target(stack: &Stack, name: &str) -> Target {
    let (vm, nsg) = azure_vm(&stack.arm, RG_STACK, name, "10.0.0.5");
    enable(stack, &vm, bench_policy()).await;
    Target {
        vm,
        firewall: nsg,
        azure: true,
    }
}

/// Asks for `GRANTS` grants on each target, their ends spread over one
/// sweep cycle, and reports when each closed against its end time.
async fn overshoot(stack: &Stack, targets: &[&Target], path: &str, round: u8) {
    let mut ends: Vec<BTreeMap<String, Timestamp>> = vec![BTreeMap::new(); targets.len()];
    let spread = SWEEP.as_millis() as u64 / GRANTS as u64;
    for i in 0..GRANTS {
        for (t, target) in targets.iter().enumerate() {
            let seconds = FIRST_END + (i as u64 * spread) / 1000;
            let source = format!("198.51.{}.{}", 100 + round * 2 + t as u8, i + 1);
            let (id, end) = target.ask(stack, &source, &format!("PT{seconds}S")).await;
            ends[t].insert(id, end);
        }
    }
    let mut late: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
    let mut seen: Vec<std::collections::BTreeSet<String>> = vec![Default::default(); targets.len()];
    let deadline = Instant::now() + SWEEP * 4;
    while late.iter().map(Vec::len).sum::<usize>() < GRANTS * targets.len() {
        assert!(
            Instant::now() < deadline,
            "grants still open after {:?}",
            SWEEP * 4
        );
        for (t, target) in targets.iter().enumerate() {
            let open = target.open(stack).await;
            let now = Timestamp::now();
            for (id, end) in &ends[t] {
                if open.contains(id) {
                    seen[t].insert(id.clone());
                } else if seen[t].remove(id) {
                    let d = now.duration_since(*end);
                    late[t].push(Duration::try_from(d).unwrap_or(Duration::ZERO));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (t, target) in targets.iter().enumerate() {
        let cloud = if target.azure { "Azure" } else { "EC2" };
        report(&format!("expiry overshoot, {cloud}, {path}"), &mut late[t]);
    }
}

/// Empties the expiry queue: the timers of grants already closed.
async fn drop_timers(stack: &Stack) {
    let _ = stack
        .sqs
        .purge_queue()
        .queue_url(stack.host.timers.url())
        .send()
        .await;
}

/// Asks for port 22 of `target` from `source` for 30 minutes and waits
/// until its rule is open and the grant function done; its request id.
async fn open_one(stack: &Stack, target: &Target, source: &str) -> String {
    let (id, _) = target.ask(stack, source, "PT30M").await;
    while !target.open(stack).await.contains(&id) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The rule shows before an Azure operation ends: let it finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    id
}

/// Cloud calls one timer makes to close its grant.
async fn calls_per_expiry(stack: &Stack, ec2: &Target, azure: &Target) {
    for target in [ec2, azure] {
        let id = open_one(stack, target, "198.51.210.1").await;
        let end = Timestamp::now() + SignedDuration::from_mins(30);
        let timer = timer_of(&stack.host.stack.firewall, &target.vm, &id, end).await;
        stack.counter.reset();
        stack.arm.clear_calls();
        let later = end + SignedDuration::from_secs(1);
        let closed = jitvm_expire::fire(&stack.expire_app(), &timer, later)
            .await
            .expect("the timer closes its grant");
        assert_eq!(closed.revoked, 1);
        if target.azure {
            let calls = stack.arm.calls();
            let by: BTreeMap<String, usize> = calls.iter().fold(BTreeMap::new(), |mut m, c| {
                *m.entry(c.method.clone()).or_default() += 1;
                m
            });
            println!("ARM calls per expiry (timer): {} {by:?}", calls.len());
        } else {
            println!(
                "EC2 calls per expiry (timer): {} {:?}",
                stack.counter.total(),
                stack.counter.snapshot()
            );
        }
    }
}

/// How long a sweep takes, and how soon the EC2 grants it closes are gone,
/// while Azure hangs: its token endpoint, then ARM itself.
async fn hung_cloud(stack: &Stack) {
    let hang = || FaultKind::Latency(Duration::from_secs(3600));
    let cases = [
        (
            "token endpoint",
            Fault::new(None, "/oauth2/", u32::MAX, hang()),
        ),
        ("ARM", Fault::new(None, "/subscriptions/", u32::MAX, hang())),
    ];
    for (n, (what, fault)) in cases.into_iter().enumerate() {
        let ec2 = ec2_target(stack).await;
        let azure = azure_target(stack, &format!("bench-hung-{n}")).await;
        for target in [&ec2, &azure] {
            open_one(stack, target, "198.51.220.1").await;
        }
        stack.arm.inject(fault);
        stack.arm.expire_tokens();
        let later = Timestamp::now() + SignedDuration::from_hours(1);
        let t0 = Instant::now();
        let sweep = stack.host.sweep_once(later);
        let watch = async {
            while !ec2.open(stack).await.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            t0.elapsed()
        };
        let (summary, ec2_closed) = tokio::join!(sweep, watch);
        let took = t0.elapsed();
        let summary = summary.expect("the sweep returns");
        println!(
            "sweep with Azure's {what} hung: EC2 grants closed after {:.0} ms, sweep returned after {:.1} s (scope deadline {} s), failed scopes {:?}",
            ec2_closed.as_secs_f64() * 1000.0,
            took.as_secs_f64(),
            stack.host.scope_deadline.as_secs(),
            summary
                .failed_scopes
                .iter()
                .map(|f| f.split(": ").next().unwrap_or(""))
                .collect::<Vec<_>>()
        );
        stack.arm.clear_faults();
        // A failed token request holds the next ones back for a while.
        tokio::time::sleep(jitvm_core::azure::FAILED_FOR + Duration::from_secs(1)).await;
        let _ = stack.host.sweep_once(later).await;
    }
}

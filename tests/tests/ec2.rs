//! The EC2 firewall adapter against a real moto server.
//!
//! Every test builds its own VPC and instances, so tests run in parallel on
//! one server; tests that list a whole region look only at their own VMs.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, PrefixListId, SecurityGroupRule, Tag, UserIdGroupPair,
};
use jitvm_core::aws::CallCounter;
use jitvm_core::aws::ec2::{Ec2Firewall, Ec2Settings};
use jitvm_core::domain::rule::{TAG_EXPIRES, TAG_MANAGED, TAG_REQUEST, TAG_REQUESTER, TAG_VM};
use jitvm_core::ports::{AdapterError, Exposure, Firewall, RuleKey};
use jitvm_core::{
    AccessRequest, Cloud, Decision, Grant, InitiateBody, Policy, PolicyDocument, Port, Principal,
    RequestId, VmId, evaluate,
};
use jitvm_tests::{Ec2World, Moto, create_group, ec2_world, launch, unique};
use serde_json::{Value, json};

const REQUESTOR: &str = "local:alice";

struct Env {
    ec2: aws_sdk_ec2::Client,
    fw: Ec2Firewall,
    counter: CallCounter,
}

async fn env() -> Env {
    let cfg = Moto::shared().config().await;
    let counter = CallCounter::default();
    let fw = Ec2Firewall::new(
        &cfg,
        Ec2Settings {
            counter: Some(counter.clone()),
            ..Ec2Settings::default()
        },
    );
    Env {
        ec2: aws_sdk_ec2::Client::new(&cfg),
        fw,
        counter,
    }
}

fn vm_of(world: &Ec2World) -> VmId {
    VmId::parse(&world.instance_arn).unwrap()
}

fn policy(vm: &VmId, doc: Value) -> Policy {
    Policy::parse(vm.clone(), &PolicyDocument::from_value(doc).unwrap()).unwrap()
}

/// The grants of one approved request, through the real domain.
fn grants(policy: &Policy, request_id: &str, ports: Value) -> (Vec<Grant>, AccessRequest) {
    let body: InitiateBody = serde_json::from_value(json!({
        "virtualMachines": [{"id": policy.vm().to_string(), "ports": ports}],
        "justification": "fixing the deploy",
    }))
    .unwrap();
    let request = AccessRequest::parse(RequestId::parse(request_id).unwrap(), &body).unwrap();
    let decision = evaluate(
        Some(policy),
        &request,
        &Principal::parse(REQUESTOR).unwrap(),
        None,
        jiff::Timestamp::now(),
    );
    let Decision::Approved { grants } = decision else {
        panic!("expected approval, got {decision:?}");
    };
    (grants, request)
}

fn one_grant(policy: &Policy, request_id: &str, port: Value) -> (Grant, AccessRequest) {
    let (mut g, r) = grants(policy, request_id, json!([port]));
    assert_eq!(g.len(), 1);
    (g.remove(0), r)
}

async fn eni_groups(ec2: &aws_sdk_ec2::Client, eni: &str) -> BTreeSet<String> {
    ec2.describe_network_interfaces()
        .network_interface_ids(eni)
        .send()
        .await
        .unwrap()
        .network_interfaces()[0]
        .groups()
        .iter()
        .map(|g| g.group_id().unwrap().to_owned())
        .collect()
}

async fn ingress(ec2: &aws_sdk_ec2::Client, group: &str) -> Vec<SecurityGroupRule> {
    ec2.describe_security_group_rules()
        .filters(Filter::builder().name("group-id").values(group).build())
        .send()
        .await
        .unwrap()
        .security_group_rules()
        .iter()
        .filter(|r| r.is_egress() == Some(false))
        .cloned()
        .collect()
}

/// A rule as (protocol, from, to, source), for comparing rule sets.
fn shape(r: &SecurityGroupRule) -> (String, i32, i32, String) {
    let source = r
        .cidr_ipv4()
        .or(r.cidr_ipv6())
        .or(r.prefix_list_id())
        .or(r.referenced_group_info().and_then(|g| g.group_id()))
        .unwrap_or_default();
    (
        r.ip_protocol().unwrap_or_default().to_owned(),
        r.from_port().unwrap_or(-1),
        r.to_port().unwrap_or(-1),
        source.to_owned(),
    )
}

async fn shapes(ec2: &aws_sdk_ec2::Client, group: &str) -> BTreeSet<(String, i32, i32, String)> {
    ingress(ec2, group).await.iter().map(shape).collect()
}

fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// Security groups named `name` (any VPC).
async fn groups_named(
    ec2: &aws_sdk_ec2::Client,
    name: &str,
) -> Vec<aws_sdk_ec2::types::SecurityGroup> {
    ec2.describe_security_groups()
        .filters(Filter::builder().name("group-name").values(name).build())
        .send()
        .await
        .unwrap()
        .security_groups()
        .to_vec()
}

fn code(err: &AdapterError) -> &str {
    match err {
        AdapterError::Permanent { code, .. } => code,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

/// A world whose instance has one standing group, JIT enabled for port 22
/// from anywhere (`*`), TCP only unless `doc` says otherwise.
async fn enabled(env: &Env, doc: Value) -> (Ec2World, VmId, Policy, String) {
    let world = ec2_world(&env.ec2, &[]).await;
    let vm = vm_of(&world);
    let policy = policy(&vm, doc);
    let enablement = env.fw.enable(&policy, &[]).await.unwrap();
    (world, vm, policy, enablement.firewall)
}

fn p22() -> Value {
    json!({"ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefix": "*"}]})
}

#[tokio::test]
async fn enable_creates_a_tagged_group_attaches_it_and_keeps_the_other_groups() {
    let env = env().await;
    let world = ec2_world(&env.ec2, &[]).await;
    let vm = vm_of(&world);
    env.ec2
        .create_tags()
        .resources(&world.instance_id)
        .tags(Tag::builder().key("Name").value("build-runner").build())
        .send()
        .await
        .unwrap();
    let before = eni_groups(&env.ec2, &world.eni_id).await;
    assert_eq!(before.len(), 1);

    let facts = env.fw.inspect(&vm).await.unwrap();
    assert_eq!(facts.id, vm);
    assert_eq!(facts.name.as_deref(), Some("build-runner"));
    assert_eq!(facts.unsupported, None);

    let enablement = env.fw.enable(&policy(&vm, p22()), &[]).await.unwrap();
    let jit = enablement.firewall.clone();
    assert!(jit.starts_with("sg-"), "{jit}");
    assert!(
        enablement.exposures.is_empty(),
        "{:?}",
        enablement.exposures
    );

    let group = env
        .ec2
        .describe_security_groups()
        .group_ids(&jit)
        .send()
        .await
        .unwrap()
        .security_groups()[0]
        .clone();
    let name = format!("jitvm-{}", world.instance_id);
    assert_eq!(group.group_name(), Some(name.as_str()));
    assert_eq!(group.vpc_id(), Some(world.vpc_id.as_str()));
    assert_eq!(
        group.description(),
        Some(format!("jitvm just-in-time access for {}", world.instance_id).as_str())
    );
    assert_eq!(tag(group.tags(), TAG_MANAGED), Some("true"));
    assert_eq!(tag(group.tags(), TAG_VM), Some(world.instance_arn.as_str()));
    assert_eq!(tag(group.tags(), "Name"), Some(name.as_str()));
    // No grant is open yet.
    assert!(ingress(&env.ec2, &jit).await.is_empty());

    let mut expected = before.clone();
    expected.insert(jit.clone());
    assert_eq!(eni_groups(&env.ec2, &world.eni_id).await, expected);
    // Still supported with the group attached.
    assert_eq!(env.fw.inspect(&vm).await.unwrap().unsupported, None);
}

#[tokio::test]
async fn enable_twice_is_idempotent() {
    let env = env().await;
    let (world, vm, policy, jit) = enabled(&env, p22()).await;
    let groups = eni_groups(&env.ec2, &world.eni_id).await;
    let again = env.fw.enable(&policy, &[]).await.unwrap();
    assert_eq!(again.firewall, jit);
    assert_eq!(eni_groups(&env.ec2, &world.eni_id).await, groups);
    let named = groups_named(&env.ec2, &format!("jitvm-{}", world.instance_id)).await;
    assert_eq!(named.len(), 1, "one dedicated group, not two");
    assert_eq!(env.fw.inspect(&vm).await.unwrap().unsupported, None);
}

#[tokio::test]
async fn inspect_of_an_unknown_instance_is_not_found() {
    let env = env().await;
    let vm =
        VmId::parse("arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0").unwrap();
    match env.fw.inspect(&vm).await {
        Err(AdapterError::NotFound(message)) => {
            assert!(message.contains("i-0123456789abcdef0"), "{message}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let policy = policy(&vm, p22());
    assert!(matches!(
        env.fw.enable(&policy, &[]).await,
        Err(AdapterError::NotFound(_))
    ));

    let azure = VmId::parse(
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
    )
    .unwrap();
    let err = env.fw.inspect(&azure).await.unwrap_err();
    assert_eq!(code(&err), "UnsupportedCloud");
}

#[tokio::test]
async fn terminated_instances_are_unsupported_and_not_listed() {
    let env = env().await;
    let world = ec2_world(&env.ec2, &[]).await;
    let vm = vm_of(&world);
    let listed = env.fw.list_vms().await.unwrap();
    let mine = listed.iter().find(|f| f.id == vm).expect("listed");
    assert_eq!(mine.unsupported, None);

    env.ec2
        .terminate_instances()
        .instance_ids(&world.instance_id)
        .send()
        .await
        .unwrap();
    let facts = env.fw.inspect(&vm).await.unwrap();
    let reason = facts.unsupported.expect("unsupported");
    assert!(reason.contains("terminated"), "{reason}");
    let listed = env.fw.list_vms().await.unwrap();
    assert!(!listed.iter().any(|f| f.id == vm));
}

#[tokio::test]
async fn an_interface_already_at_the_group_limit_is_unsupported() {
    let env = env().await;
    let world = ec2_world(&env.ec2, &[]).await;
    let vm = vm_of(&world);
    // Four more groups, added after launch: DescribeInstances in moto does
    // not see this change, DescribeNetworkInterfaces does.
    let mut groups: Vec<String> = eni_groups(&env.ec2, &world.eni_id)
        .await
        .into_iter()
        .collect();
    for _ in 0..4 {
        groups.push(create_group(&env.ec2, &world.vpc_id, &unique("full")).await);
    }
    env.ec2
        .modify_network_interface_attribute()
        .network_interface_id(&world.eni_id)
        .set_groups(Some(groups.clone()))
        .send()
        .await
        .unwrap();

    let reason = env
        .fw
        .inspect(&vm)
        .await
        .unwrap()
        .unsupported
        .expect("unsupported");
    assert!(reason.contains(&world.eni_id), "{reason}");
    assert!(reason.contains('5'), "{reason}");
    assert!(
        reason.contains("Security groups per network interface"),
        "{reason}"
    );

    let listed = env.fw.list_vms().await.unwrap();
    let mine = listed.iter().find(|f| f.id == vm).expect("listed");
    assert_eq!(mine.unsupported.as_ref(), Some(&reason));

    let err = env.fw.enable(&policy(&vm, p22()), &[]).await.unwrap_err();
    assert_eq!(code(&err), "Unsupported");
    assert!(err.to_string().contains(&world.eni_id), "{err}");
    assert!(
        groups_named(&env.ec2, &format!("jitvm-{}", world.instance_id))
            .await
            .is_empty()
    );
    assert_eq!(
        eni_groups(&env.ec2, &world.eni_id).await,
        groups.into_iter().collect()
    );

    // A higher quota makes it supported.
    let cfg = Moto::shared().config().await;
    let roomy = Ec2Firewall::new(
        &cfg,
        Ec2Settings {
            max_groups_per_interface: 6,
            ..Ec2Settings::default()
        },
    );
    assert_eq!(roomy.inspect(&vm).await.unwrap().unsupported, None);
}

#[tokio::test]
async fn four_groups_plus_the_jit_group_is_supported() {
    let env = env().await;
    let vpc_probe = ec2_world(&env.ec2, &[]).await;
    let mut groups = Vec::new();
    for _ in 0..4 {
        groups.push(create_group(&env.ec2, &vpc_probe.vpc_id, &unique("four")).await);
    }
    let world = launch(&env.ec2, &vpc_probe.vpc_id, &vpc_probe.subnet_id, &groups).await;
    let vm = vm_of(&world);
    let jit = env
        .fw
        .enable(&policy(&vm, p22()), &[])
        .await
        .unwrap()
        .firewall;
    assert_eq!(eni_groups(&env.ec2, &world.eni_id).await.len(), 5);
    // Full now, but the jitvm group is among them.
    assert_eq!(env.fw.inspect(&vm).await.unwrap().unsupported, None);
    assert_eq!(
        env.fw
            .enable(&policy(&vm, p22()), &[])
            .await
            .unwrap()
            .firewall,
        jit
    );
}

#[tokio::test]
async fn open_makes_exactly_the_rule_on_the_jit_group_only() {
    let env = env().await;
    let world = ec2_world(&env.ec2, &[]).await;
    let vm = vm_of(&world);
    let standing: Vec<String> = eni_groups(&env.ec2, &world.eni_id)
        .await
        .into_iter()
        .collect();
    let policy = policy(
        &vm,
        json!({"ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefix": "198.51.100.0/24"}]}),
    );
    let jit = env.fw.enable(&policy, &[]).await.unwrap().firewall;
    let (grant, request) = one_grant(
        &policy,
        "req-open-1",
        json!({"number": 22, "duration": "PT1H", "allowedSourceAddressPrefix": "198.51.100.7"}),
    );

    env.counter.reset();
    let opened = env.fw.open(&grant, request.justification()).await.unwrap();
    assert!(!opened.already_open);
    // One DescribeSecurityGroups to find the group, one
    // DescribeNetworkInterfaces to check that only this instance carries
    // it, one Authorize.
    assert_eq!(
        env.counter.snapshot(),
        [
            ("AuthorizeSecurityGroupIngress".to_owned(), 1),
            ("DescribeNetworkInterfaces".to_owned(), 1),
            ("DescribeSecurityGroups".to_owned(), 1)
        ]
        .into_iter()
        .collect()
    );

    let rules = ingress(&env.ec2, &jit).await;
    assert_eq!(rules.len(), 1, "{rules:?}");
    let r = &rules[0];
    assert_eq!(
        opened.rules,
        vec![RuleKey {
            cloud: Cloud::Aws,
            scope: "us-east-1".into(),
            firewall: jit.clone(),
            rule: r.security_group_rule_id().unwrap().into(),
        }]
    );
    assert_eq!(r.ip_protocol(), Some("tcp"));
    assert_eq!((r.from_port(), r.to_port()), (Some(22), Some(22)));
    assert_eq!(r.cidr_ipv4(), Some("198.51.100.7/32"));
    assert_eq!(r.cidr_ipv6(), None);
    let end = jitvm_core::domain::rule::rfc3339(grant.end());
    assert_eq!(
        r.description(),
        Some(format!("jitvm req-open-1 for {REQUESTOR} until {end}: fixing the deploy").as_str())
    );
    assert_eq!(tag(r.tags(), TAG_REQUEST), Some("req-open-1"));
    assert_eq!(tag(r.tags(), TAG_EXPIRES), Some(end.as_str()));
    assert_eq!(tag(r.tags(), TAG_REQUESTER), Some(REQUESTOR));
    // The standing group is untouched.
    for g in &standing {
        assert!(ingress(&env.ec2, g).await.is_empty(), "{g}");
    }
}

#[tokio::test]
async fn open_twice_is_one_rule_already_open() {
    let env = env().await;
    let (_world, _vm, policy, jit) = enabled(&env, p22()).await;
    let (grant, request) = one_grant(
        &policy,
        "req-twice",
        json!({"number": 22, "allowedSourceAddressPrefix": "203.0.113.9"}),
    );
    let first = env.fw.open(&grant, request.justification()).await.unwrap();
    let second = env.fw.open(&grant, request.justification()).await.unwrap();
    assert!(!first.already_open);
    assert!(second.already_open);
    assert_eq!(first.rules, second.rules);
    assert_eq!(ingress(&env.ec2, &jit).await.len(), 1);
}

#[tokio::test]
async fn protocol_any_opens_a_tcp_and_a_udp_rule() {
    let env = env().await;
    let (_world, _vm, policy, jit) = enabled(
        &env,
        json!({"ports": [{"number": 3389, "protocol": "*", "allowedSourceAddressPrefix": "*"}]}),
    )
    .await;
    let (grant, request) = one_grant(
        &policy,
        "req-any-proto",
        json!({"number": 3389, "allowedSourceAddressPrefix": "192.0.2.10"}),
    );
    let opened = env.fw.open(&grant, request.justification()).await.unwrap();
    let rules = ingress(&env.ec2, &jit).await;
    let got: BTreeSet<_> = rules.iter().map(shape).collect();
    assert_eq!(
        got,
        BTreeSet::from([
            ("tcp".into(), 3389, 3389, "192.0.2.10/32".into()),
            ("udp".into(), 3389, 3389, "192.0.2.10/32".into()),
        ])
    );
    let ids: BTreeSet<_> = rules
        .iter()
        .map(|r| r.security_group_rule_id().unwrap().to_owned())
        .collect();
    let keys: BTreeSet<_> = opened.rules.iter().map(|k| k.rule.clone()).collect();
    assert_eq!(keys, ids, "every rule of the grant is reported");
    assert!(
        rules
            .iter()
            .all(|r| tag(r.tags(), TAG_REQUEST) == Some("req-any-proto"))
    );
}

#[tokio::test]
async fn source_any_opens_ipv4_and_ipv6_everywhere() {
    let env = env().await;
    let (_world, _vm, policy, jit) = enabled(&env, p22()).await;
    let (grant, request) = one_grant(
        &policy,
        "req-any-src",
        json!({"number": 22, "allowedSourceAddressPrefix": "*"}),
    );
    let opened = env.fw.open(&grant, request.justification()).await.unwrap();
    assert_eq!(opened.rules.len(), 2);
    assert_eq!(
        shapes(&env.ec2, &jit).await,
        BTreeSet::from([
            ("tcp".into(), 22, 22, "0.0.0.0/0".into()),
            ("tcp".into(), 22, 22, "::/0".into()),
        ])
    );
    // Redelivered: nothing new, both reported.
    let again = env.fw.open(&grant, request.justification()).await.unwrap();
    assert!(again.already_open);
    assert_eq!(again.rules, opened.rules);
}

#[tokio::test]
async fn an_identical_rule_from_another_request_is_a_duplicate_grant() {
    let env = env().await;
    let (_world, _vm, policy, jit) = enabled(&env, p22()).await;
    let port = json!({"number": 22, "allowedSourceAddressPrefix": "203.0.113.5"});
    let (first, r1) = one_grant(&policy, "req-first", port.clone());
    let (second, r2) = one_grant(&policy, "req-second", port);
    env.fw.open(&first, r1.justification()).await.unwrap();
    let err = env.fw.open(&second, r2.justification()).await.unwrap_err();
    assert_eq!(code(&err), "DuplicateGrant");
    let message = err.to_string();
    assert!(message.contains("req-first"), "{message}");
    assert!(
        message.contains(&jitvm_core::domain::rule::rfc3339(first.end())),
        "{message}"
    );
    let rules = ingress(&env.ec2, &jit).await;
    assert_eq!(rules.len(), 1);
    assert_eq!(tag(rules[0].tags(), TAG_REQUEST), Some("req-first"));
}

#[tokio::test]
async fn open_without_enable_is_refused() {
    let env = env().await;
    let world = ec2_world(&env.ec2, &[]).await;
    let vm = vm_of(&world);
    let policy = policy(&vm, p22());
    let (grant, request) = one_grant(
        &policy,
        "req-not-enabled",
        json!({"number": 22, "allowedSourceAddressPrefix": "203.0.113.5"}),
    );
    let err = env
        .fw
        .open(&grant, request.justification())
        .await
        .unwrap_err();
    assert_eq!(code(&err), "JitNotEnabled");
    assert!(env.fw.rules_of(&vm).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_full_group_fails_the_grant_with_the_quota_to_raise() {
    let env = env().await;
    let world = ec2_world(&env.ec2, &[]).await;
    let vm = vm_of(&world);
    let policy = policy(&vm, p22());
    let jit = env.fw.enable(&policy, &[]).await.unwrap().firewall;
    // EC2 (and moto) allow 60 inbound rules per group by default.
    let mut opened = 0;
    let err = loop {
        assert!(opened <= 60, "more than 60 rules were accepted");
        let (grant, request) = one_grant(
            &policy,
            &format!("req-full-{opened}"),
            json!({"number": 22, "allowedSourceAddressPrefix": format!("198.51.100.{}", opened + 1)}),
        );
        match env.fw.open(&grant, request.justification()).await {
            Ok(_) => opened += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(opened, 60);
    assert_eq!(code(&err), "RulesPerSecurityGroupLimitExceeded");
    let message = err.to_string();
    assert!(
        message.contains(&jit) && message.contains("quota"),
        "{message}"
    );
    assert_eq!(
        ingress(&env.ec2, &jit).await.len(),
        60,
        "the refused grant left nothing behind"
    );
}

#[tokio::test]
async fn a_grant_never_opens_another_instance_sharing_a_group() {
    let env = env().await;
    let probe = ec2_world(&env.ec2, &[]).await;
    let shared = create_group(&env.ec2, &probe.vpc_id, &unique("shared")).await;
    let a = launch(
        &env.ec2,
        &probe.vpc_id,
        &probe.subnet_id,
        std::slice::from_ref(&shared),
    )
    .await;
    let b = launch(
        &env.ec2,
        &probe.vpc_id,
        &probe.subnet_id,
        std::slice::from_ref(&shared),
    )
    .await;
    let vm_a = vm_of(&a);
    let policy = policy(&vm_a, p22());
    let jit = env.fw.enable(&policy, &[]).await.unwrap().firewall;
    let (grant, request) = one_grant(
        &policy,
        "req-neighbour",
        json!({"number": 22, "allowedSourceAddressPrefix": "*"}),
    );
    env.fw.open(&grant, request.justification()).await.unwrap();

    assert_eq!(
        eni_groups(&env.ec2, &b.eni_id).await,
        BTreeSet::from([shared.clone()])
    );
    assert!(ingress(&env.ec2, &shared).await.is_empty());
    assert_eq!(
        eni_groups(&env.ec2, &a.eni_id).await,
        BTreeSet::from([shared.clone(), jit.clone()])
    );
    // The jitvm group is on A's interface alone.
    let carriers: BTreeSet<String> = env
        .ec2
        .describe_network_interfaces()
        .filters(Filter::builder().name("group-id").values(&jit).build())
        .send()
        .await
        .unwrap()
        .network_interfaces()
        .iter()
        .map(|n| n.network_interface_id().unwrap().to_owned())
        .collect();
    assert_eq!(carriers, BTreeSet::from([a.eni_id.clone()]));
    assert_eq!(ingress(&env.ec2, &jit).await.len(), 2);
}

/// A standing group with rules that reach port 22 and 3389 in every way
/// EC2 allows, and some that do not.
async fn exposed_world(env: &Env) -> (Ec2World, String, String) {
    let probe = ec2_world(&env.ec2, &[]).await;
    let standing = create_group(&env.ec2, &probe.vpc_id, &unique("standing")).await;
    let source_group = create_group(&env.ec2, &probe.vpc_id, &unique("source")).await;
    let prefix_list = env
        .ec2
        .create_managed_prefix_list()
        .prefix_list_name(unique("office"))
        .max_entries(5)
        .address_family("IPv4")
        .send()
        .await
        .unwrap()
        .prefix_list()
        .and_then(|p| p.prefix_list_id())
        .unwrap()
        .to_owned();
    let perm = |proto: &str, from: i32, to: i32| {
        IpPermission::builder()
            .ip_protocol(proto)
            .from_port(from)
            .to_port(to)
    };
    env.ec2
        .authorize_security_group_ingress()
        .group_id(&standing)
        // Reaches 22.
        .ip_permissions(
            perm("tcp", 22, 22)
                .ip_ranges(
                    IpRange::builder()
                        .cidr_ip("10.0.0.0/8")
                        .description("ops vpn")
                        .build(),
                )
                .build(),
        )
        // Reaches 22 and 3389.
        .ip_permissions(
            perm("tcp", 0, 65535)
                .ipv6_ranges(Ipv6Range::builder().cidr_ipv6("2001:db8::/32").build())
                .build(),
        )
        // Reaches everything.
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("-1")
                .user_id_group_pairs(UserIdGroupPair::builder().group_id(&source_group).build())
                .build(),
        )
        // Reaches 22.
        .ip_permissions(
            perm("tcp", 20, 30)
                .prefix_list_ids(PrefixListId::builder().prefix_list_id(&prefix_list).build())
                .build(),
        )
        // Reaches nothing protected: UDP on 22 (the policy says TCP), TCP 80.
        .ip_permissions(
            perm("udp", 22, 22)
                .ip_ranges(IpRange::builder().cidr_ip("192.0.2.0/24").build())
                .build(),
        )
        .ip_permissions(
            perm("tcp", 80, 80)
                .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let world = launch(
        &env.ec2,
        &probe.vpc_id,
        &probe.subnet_id,
        std::slice::from_ref(&standing),
    )
    .await;
    (world, standing, format!("{source_group}|{prefix_list}"))
}

fn exposure_set(exposures: &[Exposure]) -> BTreeSet<(u16, String, String)> {
    exposures
        .iter()
        .map(|e| (e.port.get(), e.protocol.clone(), e.source.clone()))
        .collect()
}

fn expected_exposures(sources: &str) -> BTreeSet<(u16, String, String)> {
    let (group, prefix) = sources.split_once('|').unwrap();
    BTreeSet::from([
        (22, "tcp".into(), "10.0.0.0/8".into()),
        (22, "tcp".into(), "2001:db8::/32".into()),
        (3389, "tcp".into(), "2001:db8::/32".into()),
        (22, "-1".into(), group.into()),
        (3389, "-1".into(), group.into()),
        (22, "tcp".into(), prefix.into()),
    ])
}

fn exposing_policy(vm: &VmId, close: bool) -> Policy {
    policy(
        vm,
        json!({"ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefix": "*"},
                         {"number": 3389, "protocol": "tcp", "allowedSourceAddressPrefix": "*"}],
               "closeStandingAccess": close}),
    )
}

#[tokio::test]
async fn exposures_are_reported_for_standing_rules_that_reach_a_protected_port() {
    let env = env().await;
    let (world, standing, sources) = exposed_world(&env).await;
    let vm = vm_of(&world);
    let before = shapes(&env.ec2, &standing).await;
    let enablement = env
        .fw
        .enable(&exposing_policy(&vm, false), &[])
        .await
        .unwrap();
    assert_eq!(
        exposure_set(&enablement.exposures),
        expected_exposures(&sources)
    );
    assert_eq!(enablement.exposures.len(), 6);
    for e in &enablement.exposures {
        assert!(!e.closed);
        assert_eq!(e.firewall, standing);
        assert!(e.rule.starts_with("sgr-"), "{e:?}");
        assert_eq!(e.spec["groupId"], json!(standing));
    }
    let vpn = enablement
        .exposures
        .iter()
        .find(|e| e.source == "10.0.0.0/8")
        .unwrap();
    assert_eq!(vpn.description.as_deref(), Some("ops vpn"));
    // Reported, not touched.
    assert_eq!(shapes(&env.ec2, &standing).await, before);
}

#[tokio::test]
async fn close_standing_access_revokes_the_exposures_and_disable_restores_them() {
    let env = env().await;
    let (world, standing, sources) = exposed_world(&env).await;
    let vm = vm_of(&world);
    let before = shapes(&env.ec2, &standing).await;
    let policy = exposing_policy(&vm, true);

    let enablement = env.fw.enable(&policy, &[]).await.unwrap();
    assert_eq!(
        exposure_set(&enablement.exposures),
        expected_exposures(&sources)
    );
    assert!(enablement.exposures.iter().all(|e| e.closed));
    // Only the two rules that reach nothing protected are left.
    assert_eq!(
        shapes(&env.ec2, &standing).await,
        BTreeSet::from([
            ("udp".into(), 22, 22, "192.0.2.0/24".into()),
            ("tcp".into(), 80, 80, "0.0.0.0/0".into()),
        ])
    );

    // Enabling again carries the closed ones over, once each.
    let again = env.fw.enable(&policy, &enablement.exposures).await.unwrap();
    assert_eq!(again.firewall, enablement.firewall);
    assert_eq!(again.exposures.len(), enablement.exposures.len());
    assert_eq!(exposure_set(&again.exposures), expected_exposures(&sources));
    assert!(again.exposures.iter().all(|e| e.closed));

    // A grant open while disabling is closed and returned.
    let (grant, request) = one_grant(
        &policy,
        "req-closing",
        json!({"number": 3389, "allowedSourceAddressPrefix": "203.0.113.0/24"}),
    );
    let opened = env.fw.open(&grant, request.justification()).await.unwrap();
    let revoked = env.fw.disable(&vm, &again.exposures).await.unwrap();
    assert_eq!(
        revoked.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
        opened.rules
    );
    assert_eq!(shapes(&env.ec2, &standing).await, before);
    assert_eq!(
        eni_groups(&env.ec2, &world.eni_id).await,
        BTreeSet::from([standing.clone()])
    );
    // Disabling again changes nothing and fails on nothing.
    assert!(
        env.fw
            .disable(&vm, &again.exposures)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(shapes(&env.ec2, &standing).await, before);
}

#[tokio::test]
async fn rules_finds_and_decodes_grants_and_flags_hand_added_rules() {
    let env = env().await;
    let (world, vm, policy, jit) = enabled(&env, p22()).await;
    let (grant, request) = one_grant(
        &policy,
        "req-sweep",
        json!({"number": 22, "duration": "PT30M", "allowedSourceAddressPrefix": "198.51.100.0/24"}),
    );
    let opened = env.fw.open(&grant, request.justification()).await.unwrap();
    // Someone adds a rule to the jitvm group by hand.
    env.ec2
        .authorize_security_group_ingress()
        .group_id(&jit)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(2222)
                .to_port(2222)
                .ip_ranges(IpRange::builder().cidr_ip("192.0.2.0/24").build())
                .build(),
        )
        .send()
        .await
        .unwrap();

    let all = env.fw.rules().await.unwrap();
    let mine: Vec<_> = all.iter().filter(|r| r.key.firewall == jit).collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    let granted = mine
        .iter()
        .find(|r| r.key == opened.rules[0])
        .expect("grant rule");
    assert_eq!(granted.vm.as_ref(), Some(&vm));
    assert_eq!(granted.port, Some(Port::parse(22).unwrap()));
    assert_eq!(granted.source, "198.51.100.0/24");
    let meta = granted.decoded.as_ref().expect("decodes");
    assert_eq!(meta.request_id.as_str(), "req-sweep");
    assert_eq!(meta.expires, grant.end());
    assert_eq!(meta.requester.as_deref(), Some(REQUESTOR));

    let drift = mine.iter().find(|r| r.key != opened.rules[0]).unwrap();
    assert_eq!(drift.port, Some(Port::parse(2222).unwrap()));
    assert_eq!(drift.source, "192.0.2.0/24");
    assert!(drift.decoded.is_err(), "{drift:?}");
    // Standing groups are not jitvm's: none of their rules is listed.
    let standing = eni_groups(&env.ec2, &world.eni_id).await;
    assert!(
        all.iter()
            .all(|r| r.key.firewall == jit || !standing.contains(&r.key.firewall))
    );

    let of_vm = env.fw.rules_of(&vm).await.unwrap();
    let mut a: Vec<_> = of_vm.iter().map(|r| r.key.clone()).collect();
    let mut b: Vec<_> = mine.iter().map(|r| r.key.clone()).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[tokio::test]
async fn revoke_removes_rules_and_tolerates_rules_already_gone() {
    let env = env().await;
    let (_world, vm, policy, jit) = enabled(
        &env,
        json!({"ports": [{"number": 22, "protocol": "*", "allowedSourceAddressPrefix": "*"}]}),
    )
    .await;
    let (g1, r1) = one_grant(
        &policy,
        "req-rev-1",
        json!({"number": 22, "allowedSourceAddressPrefix": "203.0.113.1"}),
    );
    let (g2, r2) = one_grant(
        &policy,
        "req-rev-2",
        json!({"number": 22, "allowedSourceAddressPrefix": "203.0.113.2"}),
    );
    let o1 = env.fw.open(&g1, r1.justification()).await.unwrap();
    let o2 = env.fw.open(&g2, r2.justification()).await.unwrap();
    assert_eq!(o1.rules.len(), 2);
    assert_eq!(ingress(&env.ec2, &jit).await.len(), 4);

    env.counter.reset();
    assert_eq!(env.fw.revoke(&o1.rules).await.unwrap(), 2);
    assert_eq!(
        env.counter.snapshot(),
        [("RevokeSecurityGroupIngress".to_owned(), 1)]
            .into_iter()
            .collect(),
        "one call per group"
    );
    let left: Vec<_> = env
        .fw
        .rules_of(&vm)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    let mut expected = o2.rules.clone();
    expected.sort();
    let mut left_sorted = left.clone();
    left_sorted.sort();
    assert_eq!(left_sorted, expected);

    // Already gone: not an error, nothing counted.
    assert_eq!(env.fw.revoke(&o1.rules).await.unwrap(), 0);
    // Gone and present together: the present ones go.
    let mixed: Vec<RuleKey> = o1.rules.iter().chain(&o2.rules[..1]).cloned().collect();
    assert_eq!(env.fw.revoke(&mixed).await.unwrap(), 1);
    assert_eq!(ingress(&env.ec2, &jit).await.len(), 1);
    // A group that no longer exists counts nothing.
    let ghost = RuleKey {
        cloud: Cloud::Aws,
        scope: "us-east-1".into(),
        firewall: "sg-0123456789abcdef0".into(),
        rule: "sgr-0123456789abcdef0".into(),
    };
    assert_eq!(env.fw.revoke(&[ghost]).await.unwrap(), 0);
    assert_eq!(env.fw.revoke(&[]).await.unwrap(), 0);
}

#[tokio::test]
async fn disable_deletes_the_group_and_returns_the_grants_it_closed() {
    let env = env().await;
    let (world, vm, policy, jit) = enabled(&env, p22()).await;
    let standing: BTreeSet<String> = eni_groups(&env.ec2, &world.eni_id)
        .await
        .into_iter()
        .filter(|g| *g != jit)
        .collect();
    let (grant, request) = one_grant(
        &policy,
        "req-disable",
        json!({"number": 22, "allowedSourceAddressPrefix": "*"}),
    );
    let opened = env.fw.open(&grant, request.justification()).await.unwrap();

    let revoked = env.fw.disable(&vm, &[]).await.unwrap();
    let mut got: Vec<_> = revoked.iter().map(|r| r.key.clone()).collect();
    got.sort();
    let mut want = opened.rules.clone();
    want.sort();
    assert_eq!(got, want);
    assert!(revoked.iter().all(|r| {
        r.decoded
            .as_ref()
            .is_ok_and(|m| m.request_id.as_str() == "req-disable")
    }));
    assert!(
        groups_named(&env.ec2, &format!("jitvm-{}", world.instance_id))
            .await
            .is_empty()
    );
    assert_eq!(eni_groups(&env.ec2, &world.eni_id).await, standing);

    assert!(env.fw.disable(&vm, &[]).await.unwrap().is_empty());
    let err = env
        .fw
        .open(&grant, request.justification())
        .await
        .unwrap_err();
    assert_eq!(code(&err), "JitNotEnabled");
    assert!(env.fw.rules_of(&vm).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_vm_in_a_region_the_sweep_does_not_cover_is_refused() {
    let env = env().await;
    assert_eq!(env.fw.regions(), ["us-east-1".to_owned()]);
    let cfg = Moto::shared().config_in("eu-west-1").await;
    let ec2 = aws_sdk_ec2::Client::new(&cfg);
    let world = ec2_world(&ec2, &[]).await;
    let arn = format!(
        "arn:aws:ec2:eu-west-1:123456789012:instance/{}",
        world.instance_id
    );
    let vm = VmId::parse(&arn).unwrap();
    // The instance is found (its region gets a client of its own), but a
    // grant there would never be swept, so it is not supported.
    let reason = env.fw.inspect(&vm).await.unwrap().unsupported.unwrap();
    assert!(
        reason.contains("eu-west-1") && reason.contains("JITVM_REGIONS"),
        "{reason}"
    );
    let policy = policy(&vm, p22());
    assert_eq!(
        code(&env.fw.enable(&policy, &[]).await.unwrap_err()),
        "Unsupported"
    );
    let (grant, request) = one_grant(
        &policy,
        "req-eu",
        json!({"number": 22, "allowedSourceAddressPrefix": "203.0.113.7"}),
    );
    let err = env
        .fw
        .open(&grant, request.justification())
        .await
        .unwrap_err();
    assert_eq!(code(&err), "RegionNotSwept");
    // The same instance id in us-east-1 does not exist.
    let elsewhere = VmId::parse(&arn.replace("eu-west-1", "us-east-1")).unwrap();
    assert!(matches!(
        env.fw.inspect(&elsewhere).await,
        Err(AdapterError::NotFound(_))
    ));
    // Listing covers the configured region only.
    assert!(!env.fw.list_vms().await.unwrap().iter().any(|f| f.id == vm));
    // An ARN naming another account is not this instance.
    let other_account = VmId::parse(&arn.replace("123456789012", "210987654321")).unwrap();
    assert!(matches!(
        env.fw.inspect(&other_account).await,
        Err(AdapterError::NotFound(_))
    ));
}

#[tokio::test]
async fn list_vms_reports_arns_with_the_owner_account() {
    let env = env().await;
    let world = ec2_world(&env.ec2, &[]).await;
    let listed = env.fw.list_vms().await.unwrap();
    let mine = listed
        .iter()
        .find(|f| f.id.short_name() == world.instance_id)
        .expect("listed");
    assert_eq!(mine.id.to_string(), world.instance_arn);
    assert_eq!(mine.unsupported, None);
}

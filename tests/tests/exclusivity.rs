//! A jitvm group opens exactly its own instance: the sweep takes it off any
//! other interface that carries it (a copied launch template, "launch more
//! like this"), and neither the sweep nor `DELETE /v1/policies/{vm}` ever
//! leaves an interface with the VPC's `default` group, which would admit
//! everything from the group's other members. An interface that would be
//! left with no group gets jitvm's placeholder group, which allows nothing.
//!
//! Everything goes through the HTTP API and the host's sweep, against moto;
//! each test has its own region.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;
use jitvm_tests::stack::{
    ADMIN, ALICE, Instance, Stack, ask, drain, enable, ingress_rules, port0, record, request,
};
use jitvm_tests::{create_group, launch, unique};
use reqwest::Method;
use serde_json::{Value, json};

fn ssh_for_alice() -> Value {
    json!({"ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefix": "*",
        "maxRequestAccessDuration": "PT3H"}], "requesters": ["local:alice"]})
}

/// Instance A with JIT enabled: (A, its jitvm group).
async fn enabled(stack: &Stack) -> (Instance, String) {
    let a = stack.instance(&[]).await;
    let group = enable(stack, &a.arn, ssh_for_alice()).await["firewall"]
        .as_str()
        .expect("the dedicated group")
        .to_owned();
    (a, group)
}

/// Instance B in A's subnet, its primary interface carrying exactly
/// `groups`. They are set on the interface after launch: moto lists the
/// groups an instance was launched with on its interface for good, whatever
/// `ModifyNetworkInterfaceAttribute` does later.
async fn neighbour(stack: &Stack, a: &Instance, groups: &[String]) -> Instance {
    let b = stack.adopt(launch(&stack.ec2, &a.world.vpc_id, &a.world.subnet_id, &[]).await);
    stack
        .ec2
        .modify_network_interface_attribute()
        .network_interface_id(&b.world.eni_id)
        .set_groups(Some(groups.to_vec()))
        .send()
        .await
        .expect("set B's groups");
    assert_eq!(
        groups_of(stack, &b.world.eni_id)
            .await
            .into_keys()
            .collect::<Vec<_>>(),
        groups
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
        "B carries exactly its given groups"
    );
    b
}

/// The groups on interface `eni`: id to name.
async fn groups_of(stack: &Stack, eni: &str) -> BTreeMap<String, String> {
    stack
        .ec2
        .describe_network_interfaces()
        .network_interface_ids(eni)
        .send()
        .await
        .expect("describe the interface")
        .network_interfaces()
        .iter()
        .flat_map(|n| n.groups())
        .map(|g| {
            (
                g.group_id().unwrap_or_default().to_owned(),
                g.group_name().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The security group `id`, as EC2 describes it.
async fn group(stack: &Stack, id: &str) -> aws_sdk_ec2::types::SecurityGroup {
    stack
        .ec2
        .describe_security_groups()
        .group_ids(id)
        .send()
        .await
        .expect("describe the group")
        .security_groups()
        .first()
        .cloned()
        .expect("the group exists")
}

fn tag<'a>(group: &'a aws_sdk_ec2::types::SecurityGroup, key: &str) -> Option<&'a str> {
    group
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// The ids of the groups named `name` in `vpc`.
async fn named(stack: &Stack, vpc: &str, name: &str) -> Vec<String> {
    stack
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("vpc-id").values(vpc).build())
        .filters(Filter::builder().name("group-name").values(name).build())
        .send()
        .await
        .expect("describe groups")
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id().map(str::to_owned))
        .collect()
}

/// Asserts that `groups` (an interface's) is exactly the placeholder group
/// of `vpc`, and that the placeholder allows nothing, in or out, and is no
/// VM's jitvm group; returns its id.
async fn assert_placeholder_alone(
    stack: &Stack,
    vpc: &str,
    groups: &BTreeMap<String, String>,
) -> String {
    let expected = format!("jitvm-empty-{vpc}");
    assert!(
        !groups.values().any(|n| n == "default"),
        "the VPC's default group was put on the interface: {groups:?}"
    );
    let names: Vec<&String> = groups.values().collect();
    assert_eq!(names, [&expected], "{groups:?}");
    let id = groups.keys().next().expect("one group").clone();
    let placeholder = group(stack, &id).await;
    assert_eq!(tag(&placeholder, "jitvm:placeholder"), Some("true"));
    assert_eq!(
        tag(&placeholder, "jitvm:managed"),
        None,
        "the placeholder is no VM's jitvm group"
    );
    assert!(placeholder.ip_permissions().is_empty(), "{placeholder:?}");
    assert!(
        placeholder.ip_permissions_egress().is_empty(),
        "the placeholder allows no outbound traffic: {placeholder:?}"
    );
    assert!(ingress_rules(&stack.ec2, &id).await.is_empty());
    id
}

/// One sweep, now; its summary as the expire function answers it.
async fn sweep(stack: &Stack) -> Value {
    let summary = stack
        .host
        .sweep_once(stack.now())
        .await
        .expect("the sweep runs");
    serde_json::to_value(summary).expect("a summary serializes")
}

#[tokio::test]
async fn the_sweep_takes_a_copied_jitvm_group_off_another_instance() {
    let stack = Stack::start("ap-southeast-3").await;
    let (a, jit) = enabled(&stack).await;
    let own = create_group(&stack.ec2, &a.world.vpc_id, &unique("b-own")).await;
    // "Launch more like this": B's interface gets A's jitvm group beside
    // its own.
    let b = neighbour(&stack, &a, &[own.clone(), jit.clone()]).await;

    let summary = sweep(&stack).await;
    let b_groups = groups_of(&stack, &b.world.eni_id).await;
    assert_eq!(
        b_groups.keys().collect::<Vec<_>>(),
        [&own],
        "B keeps its own group and loses A's: {b_groups:?}"
    );
    assert!(
        groups_of(&stack, &a.world.eni_id).await.contains_key(&jit),
        "A keeps its jitvm group"
    );
    assert_eq!(summary["groupsDetached"], 1, "{summary}");
    assert!(summary.get("failedScopes").is_none(), "{summary}");
    // Nothing more to do on the next sweep.
    assert_eq!(sweep(&stack).await["groupsDetached"], 0);

    // A grant to A now opens, and opens A alone.
    let (status, accepted) = request(
        &stack,
        ALICE,
        ask(
            &a.arn,
            json!({"number": 22, "allowedSourceAddressPrefix": "198.51.100.7"}),
        ),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().expect("a request id").to_owned();
    drain(&stack).await;
    let opened = record(&stack, &id).await;
    assert_eq!(port0(&opened)["status"], "Initiated", "{opened}");
    assert!(!ingress_rules(&stack.ec2, &jit).await.is_empty());
    let b_groups = groups_of(&stack, &b.world.eni_id).await;
    assert!(
        !b_groups.contains_key(&jit) && !b_groups.values().any(|n| n.starts_with("jitvm-")),
        "B carries no jitvm group: {b_groups:?}"
    );
    assert!(ingress_rules(&stack.ec2, &own).await.is_empty());
}

#[tokio::test]
async fn an_interface_left_with_no_group_gets_the_placeholder_never_default() {
    let stack = Stack::start("me-central-1").await;
    let (a, jit) = enabled(&stack).await;
    let vpc = a.world.vpc_id.clone();
    // B launched with A's jitvm group as its only group, and an
    // unattached interface made the same way.
    let b = neighbour(&stack, &a, std::slice::from_ref(&jit)).await;
    let loose = stack
        .ec2
        .create_network_interface()
        .subnet_id(&a.world.subnet_id)
        .groups(&jit)
        .send()
        .await
        .expect("create an interface")
        .network_interface()
        .and_then(|n| n.network_interface_id())
        .expect("an interface id")
        .to_owned();

    let summary = sweep(&stack).await;
    let placeholder =
        assert_placeholder_alone(&stack, &vpc, &groups_of(&stack, &b.world.eni_id).await).await;
    let same = assert_placeholder_alone(&stack, &vpc, &groups_of(&stack, &loose).await).await;
    assert_eq!(same, placeholder, "one placeholder per VPC");
    assert!(groups_of(&stack, &a.world.eni_id).await.contains_key(&jit));
    assert_eq!(summary["groupsDetached"], 2, "{summary}");
    assert!(summary.get("failedScopes").is_none(), "{summary}");

    // The next sweep changes nothing and makes no second placeholder.
    assert_eq!(sweep(&stack).await["groupsDetached"], 0);
    assert_eq!(
        named(&stack, &vpc, &format!("jitvm-empty-{vpc}")).await,
        [placeholder]
    );
}

#[tokio::test]
async fn deleting_a_policy_never_gives_an_interface_the_default_group() {
    let stack = Stack::start("eu-south-2").await;
    let (a, jit) = enabled(&stack).await;
    let vpc = a.world.vpc_id.clone();
    let b = neighbour(&stack, &a, std::slice::from_ref(&jit)).await;
    let a_before = groups_of(&stack, &a.world.eni_id).await;

    let (status, body) = stack
        .call(
            Method::DELETE,
            &Stack::policy_path(&a.arn),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");

    assert_placeholder_alone(&stack, &vpc, &groups_of(&stack, &b.world.eni_id).await).await;
    // A keeps the groups it had besides its jitvm group.
    let mut a_expected = a_before;
    a_expected.remove(&jit);
    assert_eq!(groups_of(&stack, &a.world.eni_id).await, a_expected);
    assert!(
        named(&stack, &vpc, &format!("jitvm-{}", a.world.instance_id))
            .await
            .is_empty(),
        "A's jitvm group is deleted"
    );
}

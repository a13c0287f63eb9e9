//! End to end on Azure (the ARM fake): an Azure VM id goes through the same
//! HTTP API, request queue, grant function and sweep as an EC2 instance;
//! only the firewall adapter differs. Every stack has its own ARM fake, so
//! no test sees another's rules.

use jiff::{SignedDuration, Timestamp};
use jitvm_core::VmId;
use jitvm_core::rule::{AZURE_VM_KEY_LEN, azure_vm_key};
use jitvm_tests::arm_fake::{ArmFake, Fault, FaultKind};
use jitvm_tests::stack::{
    ADMIN, ALICE, BOB, SUBSCRIPTION, Stack, act, ask, azure_vm, deliver, drain, enable, port0,
    put_policy, record, request,
};
use reqwest::Method;
use serde_json::{Value, json};

/// moto's region for these stacks: nothing of EC2 is used here.
const REGION: &str = "eu-north-1";
const RG: &str = "rg-e2e";
const IP: &str = "10.0.0.4";

/// An Azure VM with an NSG on its NIC.
struct AzureWorld {
    vm: String,
    nsg: String,
}

fn world(arm: &ArmFake, name: &str, ip: &str) -> AzureWorld {
    let (vm, nsg) = azure_vm(arm, RG, name, ip);
    AzureWorld { vm, nsg }
}

fn policy() -> Value {
    json!({"ports": [
        {"number": 22, "protocol": "tcp", "allowedSourceAddressPrefixes": ["198.51.100.0/24", "2001:db8::/32"], "maxRequestAccessDuration": "PT3H"},
        {"number": 3389, "protocol": "*", "allowedSourceAddressPrefix": "*", "maxRequestAccessDuration": "PT1H"}],
        "requesters": ["local:alice"]})
}

fn key_of(vm: &str) -> String {
    let VmId::Azure(vm) = VmId::parse(vm).unwrap() else {
        panic!("{vm} is not an Azure VM id")
    };
    azure_vm_key(&vm)
}

fn props(rule: &Value) -> &Value {
    &rule["properties"]
}

fn name(rule: &Value) -> &str {
    rule["name"].as_str().unwrap_or_default()
}

/// The grant rules (`jitvm-` but not Deny rules) of an NSG.
fn grants(arm: &ArmFake, nsg: &str) -> Vec<Value> {
    arm.rules(nsg)
        .into_iter()
        .filter(|r| name(r).starts_with("jitvm-") && !name(r).starts_with("jitvm-deny-"))
        .collect()
}

fn denies(arm: &ArmFake, nsg: &str) -> Vec<Value> {
    arm.rules(nsg)
        .into_iter()
        .filter(|r| name(r).starts_with("jitvm-deny-"))
        .collect()
}

fn ssh_from(source: &str) -> Value {
    json!({"number": 22, "duration": "PT1H", "allowedSourceAddressPrefix": source})
}

/// Asks for port 22 as alice, runs the grant function, and returns the
/// request id.
async fn granted(stack: &Stack, vm: &str, source: &str) -> String {
    let (status, accepted) = request(stack, ALICE, ask(vm, ssh_from(source))).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    drain(stack).await;
    let opened = record(stack, &id).await;
    assert_eq!(port0(&opened)["status"], "Initiated", "{opened}");
    id
}

async fn revoke(stack: &Stack, id: &str, token: &str) -> (u16, Value) {
    act(stack, token, id, "revoke").await
}

fn customer_ssh(priority: u16, source: &str) -> Value {
    json!({"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "22",
        "sourceAddressPrefix": source, "destinationAddressPrefix": "*",
        "access": "Allow", "priority": priority, "direction": "Inbound"})
}

#[tokio::test]
async fn enabling_closes_the_ports_and_a_grant_opens_exactly_what_was_asked_until_its_end() {
    let stack = Stack::start(REGION).await;
    let w = world(&stack.arm, "web-1", IP);
    // Shadowed by the Deny rule (a higher number): not an exposure.
    stack
        .arm
        .put_rule(&w.nsg, "allow-ssh-anywhere", customer_ssh(300, "*"));
    // Evaluated before the Deny rule: an exposure.
    stack
        .arm
        .put_rule(&w.nsg, "legacy-ssh", customer_ssh(150, "Internet"));

    let stored = enable(&stack, &w.vm, policy()).await;
    assert!(
        stored["firewall"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&w.nsg),
        "{stored}"
    );
    let exposures = stored["exposures"].as_array().unwrap();
    assert_eq!(exposures.len(), 1, "{stored}");
    assert_eq!(exposures[0]["rule"], "legacy-ssh");
    assert_eq!(exposures[0]["port"], 22);
    assert_eq!(exposures[0]["closed"], false);

    let key = key_of(&w.vm);
    assert_eq!(key.len(), AZURE_VM_KEY_LEN);
    let deny = denies(&stack.arm, &w.nsg);
    assert_eq!(deny.len(), 2, "{deny:?}");
    for (rule, port, protocol) in [(&deny[0], "22", "Tcp"), (&deny[1], "3389", "*")] {
        assert_eq!(name(rule), format!("jitvm-deny-{port}-{key}"));
        let p = props(rule);
        assert_eq!(p["access"], "Deny");
        assert_eq!(p["direction"], "Inbound");
        assert_eq!(p["protocol"], protocol);
        assert_eq!(p["destinationPortRange"], port);
        assert_eq!(p["destinationAddressPrefix"], IP);
        assert_eq!(p["sourceAddressPrefix"], "*");
        let priority = p["priority"].as_u64().unwrap();
        assert!((200..=299).contains(&priority), "the deny band: {priority}");
    }
    // Enabling again changes nothing.
    stack.arm.clear_calls();
    enable(&stack, &w.vm, policy()).await;
    assert!(
        stack.arm.calls().iter().all(|c| c.method == "GET"),
        "a second enable writes nothing: {:?}",
        stack.arm.calls()
    );

    let (status, accepted) = request(&stack, ALICE, ask(&w.vm, ssh_from("198.51.100.7"))).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(port0(&accepted)["status"], "Initiating");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let end: Timestamp = port0(&accepted)["endTimeUtc"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        grants(&stack.arm, &w.nsg).is_empty(),
        "nothing opens before the grant function runs"
    );
    drain(&stack).await;
    assert_eq!(port0(&record(&stack, &id).await)["status"], "Initiated");

    let open = grants(&stack.arm, &w.nsg);
    assert_eq!(open.len(), 1, "{open:?}");
    let rule = &open[0];
    let compact = jiff::fmt::strtime::format("%Y%m%dT%H%M%SZ", end).unwrap();
    assert_eq!(name(rule), format!("jitvm-22-{compact}-{id}"));
    let p = props(rule);
    assert_eq!(p["access"], "Allow");
    assert_eq!(p["direction"], "Inbound");
    assert_eq!(p["protocol"], "Tcp");
    assert_eq!(p["destinationPortRange"], "22");
    assert_eq!(p["destinationAddressPrefix"], IP);
    assert_eq!(p["sourceAddressPrefix"], "198.51.100.7/32");
    assert_eq!(
        p["priority"], 100,
        "the first free priority of the allow band"
    );
    let description = p["description"].as_str().unwrap();
    assert!(
        description.contains(&id) && description.contains("local:alice"),
        "{description}"
    );
    assert!(description.chars().count() <= 140);

    // The sweep leaves it until its end time, then removes it.
    let summary = stack
        .host
        .sweep_once(end - SignedDuration::from_secs(1))
        .await
        .unwrap();
    assert_eq!((summary.active, summary.expired), (1, 0), "{summary:?}");
    assert_eq!(grants(&stack.arm, &w.nsg).len(), 1);
    let summary = stack.host.sweep_once(end).await.unwrap();
    assert_eq!(
        (summary.expired, summary.revoked, summary.records_updated),
        (1, 1, 1),
        "{summary:?}"
    );
    assert!(grants(&stack.arm, &w.nsg).is_empty());
    assert_eq!(denies(&stack.arm, &w.nsg).len(), 2, "the ports stay closed");
    let closed = record(&stack, &id).await;
    assert_eq!(port0(&closed)["status"], "Revoked");
    assert_eq!(port0(&closed)["statusReason"], "Expired");
    // The customer's rules never moved.
    assert_eq!(
        stack.arm.rule(&w.nsg, "allow-ssh-anywhere").unwrap()["properties"]["priority"],
        300
    );
    assert_eq!(
        stack.arm.rule(&w.nsg, "legacy-ssh").unwrap()["properties"]["priority"],
        150
    );
}

#[tokio::test]
async fn an_early_revoke_deletes_the_rule_and_says_user_requested() {
    let stack = Stack::start(REGION).await;
    let w = world(&stack.arm, "web-2", IP);
    enable(&stack, &w.vm, policy()).await;
    // The VM has only an IPv4 address: an IPv6 grant could never match.
    let (_, accepted) = request(&stack, ALICE, ask(&w.vm, ssh_from("2001:db8::7"))).await;
    let v6 = accepted["id"].as_str().unwrap().to_owned();
    drain(&stack).await;
    let failed = record(&stack, &v6).await;
    assert_eq!(port0(&failed)["status"], "Failed", "{failed}");
    let why = port0(&failed)["message"].as_str().unwrap_or_default();
    assert!(why.contains("ask from an IPv4 address"), "{why}");
    assert!(grants(&stack.arm, &w.nsg).is_empty());

    let id = granted(&stack, &w.vm, "198.51.100.0/28").await;
    let open = grants(&stack.arm, &w.nsg);
    assert_eq!(props(&open[0])["sourceAddressPrefix"], "198.51.100.0/28");

    let (status, _) = revoke(&stack, &id, BOB).await;
    assert_eq!(status, 403, "bob neither asked nor oversees");
    assert_eq!(grants(&stack.arm, &w.nsg).len(), 1);
    let (status, body) = revoke(&stack, &id, ALICE).await;
    assert_eq!(status, 200, "{body}");
    assert!(grants(&stack.arm, &w.nsg).is_empty());
    let closed = record(&stack, &id).await;
    assert_eq!(port0(&closed)["status"], "Revoked");
    assert_eq!(port0(&closed)["statusReason"], "UserRequested");
}

#[tokio::test]
async fn throttling_and_busy_nsgs_are_waited_out_with_nothing_lost() {
    let stack = Stack::start(REGION).await;
    let w = world(&stack.arm, "web-3", IP);
    enable(&stack, &w.vm, policy()).await;
    let fault = |method: &str, path: &str, kind: FaultKind| Fault {
        method: Some(method.into()),
        path_contains: path.into(),
        times: 1,
        kind,
    };
    stack.arm.clear_calls();
    stack.arm.inject(Fault {
        times: 2,
        ..fault(
            "PUT",
            "/securityRules/jitvm-22-",
            FaultKind::Throttle {
                retry_after_secs: 1,
            },
        )
    });
    stack.arm.inject(fault(
        "PUT",
        "/securityRules/jitvm-22-",
        FaultKind::AnotherOperationInProgress {
            retry_after_secs: 0,
        },
    ));
    stack.arm.inject(fault(
        "GET",
        "/networkSecurityGroups/web-3-nsg",
        FaultKind::ServerError,
    ));
    stack.arm.inject(fault(
        "GET",
        "/virtualMachines/web-3",
        FaultKind::Latency(std::time::Duration::from_millis(300)),
    ));
    let id = granted(&stack, &w.vm, "198.51.100.7").await;
    let open = grants(&stack.arm, &w.nsg);
    assert_eq!(open.len(), 1, "exactly one rule: {open:?}");
    let statuses: Vec<u16> = stack
        .arm
        .calls()
        .iter()
        .filter(|c| c.method == "PUT")
        .map(|c| c.status)
        .collect();
    assert_eq!(
        statuses,
        vec![429, 429, 409, 201],
        "retried until it landed, once"
    );

    stack.arm.inject(Fault {
        times: 2,
        ..fault(
            "DELETE",
            "/securityRules/jitvm-22-",
            FaultKind::Throttle {
                retry_after_secs: 0,
            },
        )
    });
    let (status, body) = revoke(&stack, &id, ALICE).await;
    assert_eq!(status, 200, "{body}");
    assert!(grants(&stack.arm, &w.nsg).is_empty());
    assert_eq!(port0(&record(&stack, &id).await)["status"], "Revoked");
}

#[tokio::test]
async fn a_priority_taken_meanwhile_or_by_hand_is_never_collided_with() {
    let stack = Stack::start(REGION).await;
    let w = world(&stack.arm, "web-4", IP);
    enable(&stack, &w.vm, policy()).await;

    // Another writer takes priority 100 between our read and our write.
    stack.arm.inject(Fault {
        method: Some("PUT".into()),
        path_contains: "/securityRules/jitvm-22-".into(),
        times: 1,
        kind: FaultKind::PriorityTaken,
    });
    let first = granted(&stack, &w.vm, "198.51.100.7").await;
    let racer: Vec<Value> = stack
        .arm
        .rules(&w.nsg)
        .into_iter()
        .filter(|r| name(r).starts_with("racer-"))
        .collect();
    assert_eq!(racer.len(), 1, "the competing rule is left alone");
    assert_eq!(props(&racer[0])["priority"], 100);
    let open = grants(&stack.arm, &w.nsg);
    assert_eq!(open.len(), 1);
    assert_eq!(props(&open[0])["priority"], 101, "the next free priority");

    // Someone adds a rule by hand between two grants.
    stack
        .arm
        .put_rule(&w.nsg, "ops-bastion", customer_ssh(102, "10.9.0.0/16"));
    let second = granted(&stack, &w.vm, "198.51.100.8").await;
    let mut priorities: Vec<(String, u64)> = grants(&stack.arm, &w.nsg)
        .iter()
        .map(|r| (name(r).to_owned(), props(r)["priority"].as_u64().unwrap()))
        .collect();
    priorities.sort_by_key(|(_, p)| *p);
    assert_eq!(priorities.len(), 2);
    assert!(
        priorities[0].0.ends_with(&first) && priorities[0].1 == 101,
        "{priorities:?}"
    );
    assert!(
        priorities[1].0.ends_with(&second) && priorities[1].1 == 103,
        "{priorities:?}"
    );
    let by_hand = stack.arm.rule(&w.nsg, "ops-bastion").unwrap();
    assert_eq!(props(&by_hand)["priority"], 102);
    assert_eq!(props(&by_hand)["sourceAddressPrefix"], "10.9.0.0/16");
}

#[tokio::test]
async fn every_refusal_answers_its_reason_and_writes_no_rule() {
    let stack = Stack::start(REGION).await;
    let w = world(&stack.arm, "web-5", IP);
    enable(&stack, &w.vm, policy()).await;
    let other = format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/nobody"
    );
    let past = (Timestamp::now() - SignedDuration::from_mins(1)).to_string();
    let far = (Timestamp::now() + SignedDuration::from_hours(4)).to_string();
    let port = |v: Value| ask(&w.vm, v);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            ALICE,
            ask(&other, ssh_from("198.51.100.7")),
            404,
            "NoPolicy",
        ),
        (BOB, port(ssh_from("198.51.100.7")), 403, "NotRequester"),
        (
            ALICE,
            port(json!({"number": 5985, "allowedSourceAddressPrefix": "198.51.100.7"})),
            403,
            "PortNotInPolicy",
        ),
        (
            ALICE,
            port(ssh_from("203.0.113.7")),
            403,
            "SourceNotAllowed",
        ),
        (ALICE, port(json!({"number": 22})), 403, "SourceNotAllowed"),
        (
            ALICE,
            port(ssh_from("0.0.0.0/0")),
            403,
            "AnySourceNotAllowed",
        ),
        (
            ALICE,
            port(json!({"number": 3389, "duration": "PT2H", "allowedSourceAddressPrefix": "*"})),
            403,
            "DurationExceedsMaximum",
        ),
        (
            ALICE,
            port(
                json!({"number": 22, "endTimeUtc": past, "allowedSourceAddressPrefix": "198.51.100.7"}),
            ),
            400,
            "EndTimeNotInFuture",
        ),
        (
            ALICE,
            port(
                json!({"number": 22, "endTimeUtc": far, "allowedSourceAddressPrefix": "198.51.100.7"}),
            ),
            403,
            "EndTimeBeyondMaximum",
        ),
        (
            ALICE,
            port(json!({"number": 22, "allowedSourceAddressPrefix": "Internet"})),
            400,
            "InvalidSourcePrefix",
        ),
    ];
    stack.arm.clear_calls();
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
    drain(&stack).await;
    assert!(grants(&stack.arm, &w.nsg).is_empty());
    let writes: Vec<_> = stack
        .arm
        .calls()
        .into_iter()
        .filter(|c| c.method != "GET" && !c.path.contains("/oauth2/"))
        .collect();
    assert!(writes.is_empty(), "no refusal writes to Azure: {writes:?}");
}

#[tokio::test]
async fn a_full_nsg_or_a_failed_operation_fails_the_grant_with_a_reason() {
    let stack = Stack::start(REGION).await;
    let w = world(&stack.arm, "web-6", IP);
    enable(&stack, &w.vm, policy()).await;
    stack.arm.set_rule_limit(stack.arm.rules(&w.nsg).len());
    let (_, accepted) = request(&stack, ALICE, ask(&w.vm, ssh_from("198.51.100.7"))).await;
    let id = accepted["id"].as_str().unwrap().to_owned();
    drain(&stack).await;
    let failed = record(&stack, &id).await;
    assert_eq!(port0(&failed)["status"], "Failed", "{failed}");
    let message = port0(&failed)["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("SecurityRuleCountLimitReached")
            || message.contains("as many rules as Azure allows"),
        "{message}"
    );
    assert!(grants(&stack.arm, &w.nsg).is_empty());

    stack.arm.set_rule_limit(1000);
    // An operation that fails inside Azure is tried again: the grant opens.
    stack.arm.inject(Fault {
        method: Some("PUT".into()),
        path_contains: "/securityRules/jitvm-22-".into(),
        times: 1,
        kind: FaultKind::OperationFails {
            code: "InternalServerError".into(),
            message: "the NSG update failed".into(),
        },
    });
    let retried = granted(&stack, &w.vm, "198.51.100.8").await;
    assert_eq!(grants(&stack.arm, &w.nsg).len(), 1);
    assert!(name(&grants(&stack.arm, &w.nsg)[0]).ends_with(&retried));

    // One that Azure refuses for good fails the grant, with Azure's words.
    stack.arm.inject(Fault {
        method: Some("PUT".into()),
        path_contains: "/securityRules/jitvm-22-".into(),
        times: 1,
        kind: FaultKind::OperationFails {
            code: "InvalidRequestFormat".into(),
            message: "the NSG update was refused".into(),
        },
    });
    let (_, accepted) = request(&stack, ALICE, ask(&w.vm, ssh_from("198.51.100.9"))).await;
    let id = accepted["id"].as_str().unwrap().to_owned();
    drain(&stack).await;
    let after = record(&stack, &id).await;
    let port = port0(&after);
    assert_eq!(port["status"], "Failed", "{after}");
    let message = port["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the NSG update was refused") && message.contains("InvalidRequestFormat"),
        "{after}"
    );
    assert_eq!(
        grants(&stack.arm, &w.nsg).len(),
        1,
        "a failed operation leaves no rule"
    );
}

#[tokio::test]
async fn a_changed_address_is_followed_and_never_opens_another_vm() {
    let stack = Stack::start(REGION).await;
    let w = world(&stack.arm, "moved-1", IP);
    enable(&stack, &w.vm, policy()).await;
    let id = granted(&stack, &w.vm, "198.51.100.7").await;
    // The VM comes back with another address (a new primary NIC, same NSG).
    let subnet = stack.arm.add_subnet(
        SUBSCRIPTION,
        RG,
        "moved-1-vnet",
        "default",
        "10.0.0.0/24",
        None,
    );
    stack.arm.add_nic(
        &w.vm,
        "moved-1-nic2",
        &subnet,
        "10.0.0.9",
        Some(&w.nsg),
        true,
    );

    // A new grant is refused rather than opened on the old address, which
    // another VM may now hold.
    let (_, accepted) = request(&stack, ALICE, ask(&w.vm, ssh_from("198.51.100.8"))).await;
    let refused = accepted["id"].as_str().unwrap().to_owned();
    drain(&stack).await;
    let r = record(&stack, &refused).await;
    assert_eq!(port0(&r)["status"], "Failed", "{r}");
    assert!(
        port0(&r)["message"]
            .as_str()
            .unwrap_or_default()
            .contains("PUT its policy again"),
        "{r}"
    );
    assert_eq!(grants(&stack.arm, &w.nsg).len(), 1);

    // The grant made before the change is still found and closed.
    let (status, body) = revoke(&stack, &id, ALICE).await;
    assert_eq!(status, 200, "{body}");
    assert!(grants(&stack.arm, &w.nsg).is_empty());

    // Enabling again moves the Deny rules to the new address.
    enable(&stack, &w.vm, policy()).await;
    assert!(
        denies(&stack.arm, &w.nsg)
            .iter()
            .all(|r| props(r)["destinationAddressPrefix"] == "10.0.0.9")
    );
    granted(&stack, &w.vm, "198.51.100.8").await;
    assert_eq!(
        props(&grants(&stack.arm, &w.nsg)[0])["destinationAddressPrefix"],
        "10.0.0.9"
    );
}

#[tokio::test]
async fn a_vm_outside_the_swept_subscriptions_is_unsupported() {
    let stack = Stack::start(REGION).await;
    let other = "00000000-0000-0000-0000-0000000000ff";
    let nsg = stack.arm.add_nsg(other, RG, "elsewhere-nsg");
    let subnet = stack
        .arm
        .add_subnet(other, RG, "elsewhere-vnet", "default", "10.5.0.0/24", None);
    let vm = stack
        .arm
        .add_vm(other, RG, "elsewhere-1", &subnet, "10.5.0.4", Some(&nsg));
    let (status, body) = put_policy(&stack, &vm, policy()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("VmUnsupported")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JITVM_AZURE_SUBSCRIPTIONS"),
        "{body}"
    );
    assert!(stack.arm.rules(&nsg).is_empty(), "nothing written");
}

#[tokio::test]
async fn vms_without_an_nsg_are_unsupported_with_the_reason() {
    let stack = Stack::start(REGION).await;
    let bare_subnet = stack.arm.add_subnet(
        SUBSCRIPTION,
        RG,
        "bare-vnet",
        "default",
        "10.1.0.0/24",
        None,
    );
    let bare = stack
        .arm
        .add_vm(SUBSCRIPTION, RG, "bare-1", &bare_subnet, "10.1.0.4", None);
    let nsg = stack.arm.add_nsg(SUBSCRIPTION, RG, "subnet-nsg");
    let guarded_subnet = stack.arm.add_subnet(
        SUBSCRIPTION,
        RG,
        "guarded-vnet",
        "default",
        "10.2.0.0/24",
        Some(&nsg),
    );
    let guarded = stack.arm.add_vm(
        SUBSCRIPTION,
        RG,
        "guarded-1",
        &guarded_subnet,
        "10.2.0.4",
        None,
    );
    let nic_less = stack.arm.add_vm_without_nic(SUBSCRIPTION, RG, "nicless-1");

    let (status, body) = put_policy(&stack, &bare, policy()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("VmUnsupported")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("network security group"),
        "{body}"
    );
    assert!(stack.arm.rules(&nsg).is_empty());

    let (status, listed) = stack.call(Method::GET, "/v1/vms", Some(ADMIN), None).await;
    assert_eq!(status, 200, "{listed}");
    let entry = |id: &str| -> Value {
        listed["value"]
            .as_array()
            .or(listed.as_array())
            .unwrap()
            .iter()
            .find(|v| v["id"].as_str().is_some_and(|v| v.eq_ignore_ascii_case(id)))
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {listed}"))
    };
    let (bare, nic_less, guarded) = (entry(&bare), entry(&nic_less), entry(&guarded));
    assert_eq!(bare["status"], "Unsupported");
    assert!(
        bare["reason"]
            .as_str()
            .unwrap()
            .contains("network security group"),
        "{bare}"
    );
    assert_eq!(nic_less["status"], "Unsupported");
    assert!(
        nic_less["reason"]
            .as_str()
            .unwrap()
            .contains("no network interface"),
        "{nic_less}"
    );
    assert_eq!(
        guarded["status"], "NotConfigured",
        "a subnet's NSG is enough: {guarded}"
    );
}

#[tokio::test]
async fn vms_sharing_a_subnet_nsg_each_open_only_themselves() {
    let stack = Stack::start(REGION).await;
    let nsg = stack.arm.add_nsg(SUBSCRIPTION, RG, "shared-nsg");
    let subnet = stack.arm.add_subnet(
        SUBSCRIPTION,
        RG,
        "shared-vnet",
        "default",
        "10.3.0.0/24",
        Some(&nsg),
    );
    let a = stack
        .arm
        .add_vm(SUBSCRIPTION, RG, "app-a", &subnet, "10.3.0.4", None);
    let b = stack
        .arm
        .add_vm(SUBSCRIPTION, RG, "app-b", &subnet, "10.3.0.5", None);
    enable(&stack, &a, policy()).await;
    enable(&stack, &b, policy()).await;
    let deny = denies(&stack.arm, &nsg);
    assert_eq!(deny.len(), 4, "two ports for each VM: {deny:?}");
    for (vm, ip) in [(&a, "10.3.0.4"), (&b, "10.3.0.5")] {
        let key = key_of(vm);
        let own: Vec<&Value> = deny.iter().filter(|r| name(r).ends_with(&key)).collect();
        assert_eq!(own.len(), 2);
        assert!(
            own.iter()
                .all(|r| props(r)["destinationAddressPrefix"] == ip)
        );
    }

    let id = granted(&stack, &a, "198.51.100.7").await;
    let open = grants(&stack.arm, &nsg);
    assert_eq!(open.len(), 1);
    assert_eq!(
        props(&open[0])["destinationAddressPrefix"],
        "10.3.0.4",
        "only app-a opens"
    );

    // Disabling app-a closes its grant and its ports' Deny rules, not app-b's.
    let (status, body) = stack
        .call(Method::DELETE, &Stack::policy_path(&a), Some(ADMIN), None)
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    assert!(grants(&stack.arm, &nsg).is_empty());
    let left = denies(&stack.arm, &nsg);
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|r| name(r).ends_with(&key_of(&b))));
    assert_eq!(port0(&record(&stack, &id).await)["status"], "Revoked");
}

#[tokio::test]
async fn closed_standing_rules_come_back_when_jit_is_disabled() {
    let stack = Stack::start(REGION).await;
    let w = world(&stack.arm, "web-7", IP);
    stack.arm.put_rule(&w.nsg, "legacy-ssh", json!({"protocol": "Tcp", "sourcePortRange": "*",
        "destinationPortRanges": ["22", "8080"], "sourceAddressPrefixes": ["203.0.113.0/24", "192.0.2.0/24"],
        "destinationAddressPrefix": "*", "access": "Allow", "priority": 120, "direction": "Inbound",
        "description": "ops laptops"}));
    let before = stack.arm.rule(&w.nsg, "legacy-ssh").unwrap();
    let mut p = policy();
    p["closeStandingAccess"] = json!(true);
    let stored = enable(&stack, &w.vm, p).await;
    let exposures = stored["exposures"].as_array().unwrap();
    assert_eq!(exposures.len(), 1, "{stored}");
    assert_eq!(exposures[0]["closed"], true);
    assert_eq!(exposures[0]["source"], "203.0.113.0/24,192.0.2.0/24");
    assert!(stack.arm.rule(&w.nsg, "legacy-ssh").is_none(), "closed");

    let (status, body) = stack
        .call(
            Method::DELETE,
            &Stack::policy_path(&w.vm),
            Some(ADMIN),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let after = stack.arm.rule(&w.nsg, "legacy-ssh").expect("put back");
    for field in [
        "protocol",
        "destinationPortRanges",
        "sourceAddressPrefixes",
        "access",
        "priority",
        "direction",
        "description",
    ] {
        assert_eq!(props(&after)[field], props(&before)[field], "{field}");
    }
    assert!(
        denies(&stack.arm, &w.nsg).is_empty(),
        "the Deny rules are gone"
    );
}

#[tokio::test]
async fn rules_that_are_not_valid_grants_are_swept_as_drift() {
    let stack = Stack::start(REGION).await;
    let w = world(&stack.arm, "web-8", IP);
    enable(&stack, &w.vm, policy()).await;
    let id = granted(&stack, &w.vm, "198.51.100.7").await;
    let key = key_of(&w.vm);
    let allow = |priority: u16| {
        json!({"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "22",
            "sourceAddressPrefix": "*", "destinationAddressPrefix": IP,
            "access": "Allow", "priority": priority, "direction": "Inbound"})
    };
    // A jitvm-looking name that does not decode, and an Allow rule that
    // borrows a Deny rule's name (it would never expire otherwise).
    stack.arm.put_rule(&w.nsg, "jitvm-22-forever", allow(110));
    stack
        .arm
        .put_rule(&w.nsg, &format!("jitvm-deny-23-{key}"), allow(111));
    // A grant-shaped name on a rule that opens every port.
    let far = jiff::fmt::strtime::format(
        "%Y%m%dT%H%M%SZ",
        Timestamp::now() + SignedDuration::from_hours(1),
    )
    .unwrap();
    stack.arm.put_rule(
        &w.nsg,
        &format!("jitvm-22-{far}-spoof1"),
        json!({"protocol": "Tcp", "sourcePortRange": "*",
        "destinationPortRange": "*", "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
        "access": "Allow", "priority": 112, "direction": "Inbound"}),
    );

    let summary = stack.host.sweep_once(Timestamp::now()).await.unwrap();
    assert_eq!((summary.drift, summary.active), (3, 1), "{summary:?}");
    let names: Vec<String> = grants(&stack.arm, &w.nsg)
        .iter()
        .map(|r| name(r).to_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(&id), "the real grant stays: {names:?}");
    assert!(
        stack
            .arm
            .rule(&w.nsg, &format!("jitvm-deny-23-{key}"))
            .is_none()
    );
    assert_eq!(
        denies(&stack.arm, &w.nsg).len(),
        2,
        "the real Deny rules stay"
    );
}

#[tokio::test]
async fn aws_and_azure_vms_share_one_deployment() {
    let stack = Stack::start("sa-east-1").await;
    let instance = stack.instance(&[]).await;
    let w = world(&stack.arm, "web-9", IP);
    let aws_policy = json!({"ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefix": "198.51.100.0/24", "maxRequestAccessDuration": "PT3H"}], "requesters": ["local:alice"]});
    let group = enable(&stack, &instance.arn, aws_policy).await["firewall"]
        .as_str()
        .unwrap()
        .to_owned();
    enable(&stack, &w.vm, policy()).await;
    let on_aws = granted(&stack, &instance.arn, "198.51.100.7").await;
    let on_azure = granted(&stack, &w.vm, "198.51.100.7").await;
    assert_eq!(stack.ingress_rules_of_group(&group).await.len(), 1);
    assert_eq!(grants(&stack.arm, &w.nsg).len(), 1);

    let later = Timestamp::now() + SignedDuration::from_hours(2);
    let summary = stack.host.sweep_once(later).await.unwrap();
    assert_eq!(
        (summary.expired, summary.records_updated),
        (2, 2),
        "{summary:?}"
    );
    assert!(stack.ingress_rules_of_group(&group).await.is_empty());
    assert!(grants(&stack.arm, &w.nsg).is_empty());
    for id in [on_aws, on_azure] {
        assert_eq!(port0(&record(&stack, &id).await)["statusReason"], "Expired");
    }
}

#[tokio::test]
async fn disabling_jit_on_a_deleted_vm_still_removes_its_rules() {
    let stack = Stack::start(REGION).await;
    let w = world(&stack.arm, "gone-1", IP);
    enable(&stack, &w.vm, policy()).await;
    let id = granted(&stack, &w.vm, "198.51.100.7").await;
    assert!(stack.arm.remove_vm(&w.vm), "the VM is deleted in Azure");

    let (status, body) = stack
        .call(
            Method::DELETE,
            &Stack::policy_path(&w.vm),
            Some(ADMIN),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    assert!(grants(&stack.arm, &w.nsg).is_empty());
    assert!(denies(&stack.arm, &w.nsg).is_empty());
    assert_eq!(port0(&record(&stack, &id).await)["status"], "Revoked");
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

fn status_of(record: &Value) -> (&str, &str) {
    (
        port0(record)["status"].as_str().unwrap_or_default(),
        port0(record)["statusReason"].as_str().unwrap_or_default(),
    )
}

/// Writes to ARM since the calls were last cleared (token requests aside).
fn writes(arm: &ArmFake) -> Vec<String> {
    arm.calls()
        .into_iter()
        .filter(|c| c.method != "GET" && !c.path.contains("/oauth2/"))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

#[tokio::test]
async fn a_newer_request_for_the_same_port_and_source_replaces_the_open_grant() {
    let stack = Stack::start(REGION).await;
    let w = world(&stack.arm, "web-r1", IP);
    enable(&stack, &w.vm, policy()).await;
    let a_id = granted(&stack, &w.vm, "198.51.100.7").await;
    let open = grants(&stack.arm, &w.nsg);
    assert_eq!(open.len(), 1, "{open:?}");
    // The same source written as a bare address (as in the portal): still
    // the same source.
    let a_rule = name(&open[0]).to_owned();
    let mut edited = props(&open[0]).clone();
    edited["sourceAddressPrefix"] = json!("198.51.100.7");
    stack.arm.put_rule(&w.nsg, &a_rule, edited);

    // Over the policy's maximum (3 hours): refused, and A stays open.
    let (status, refused) = request(
        &stack,
        ALICE,
        ask(
            &w.vm,
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
    let open = grants(&stack.arm, &w.nsg);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(name(&open[0]), a_rule);
    assert_eq!(
        status_of(&record(&stack, &a_id).await),
        ("Initiated", "UserRequested")
    );

    // B: the same port and source, for longer.
    let (status, b) = request(
        &stack,
        ALICE,
        ask(
            &w.vm,
            json!({"number": 22, "duration": "PT2H", "allowedSourceAddressPrefix": "198.51.100.7"}),
        ),
    )
    .await;
    assert_eq!(status, 202, "{b}");
    let b_id = b["id"].as_str().unwrap().to_owned();
    let b_end: Timestamp = port0(&b)["endTimeUtc"].as_str().unwrap().parse().unwrap();
    let b_message = peek(&stack).await;
    drain(&stack).await;

    let open = grants(&stack.arm, &w.nsg);
    assert_eq!(open.len(), 1, "one rule, B's: {open:?}");
    let compact = jiff::fmt::strtime::format("%Y%m%dT%H%M%SZ", b_end).unwrap();
    assert_eq!(name(&open[0]), format!("jitvm-22-{compact}-{b_id}"));
    let p = props(&open[0]);
    assert_eq!(p["sourceAddressPrefix"], "198.51.100.7/32");
    assert_eq!(p["destinationPortRange"], "22");
    assert_eq!(p["destinationAddressPrefix"], IP);
    assert_eq!(p["access"], "Allow");

    let a_record = record(&stack, &a_id).await;
    assert_eq!(
        status_of(&a_record),
        ("Revoked", "NewerRequestInitiated"),
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

    // A redelivered B message writes nothing and changes no record.
    stack.arm.clear_calls();
    assert_eq!(
        jitvm_grant::process(&stack.grant_app(), &b_message, Timestamp::now()).await,
        jitvm_grant::Outcome::Done
    );
    assert_eq!(writes(&stack.arm), Vec::<String>::new());
    assert_eq!(grants(&stack.arm, &w.nsg), open);
    assert_eq!(record(&stack, &a_id).await, a_record);
    assert_eq!(record(&stack, &b_id).await, b_record);
}

#[tokio::test]
async fn a_request_from_another_source_or_for_another_port_keeps_the_open_grant() {
    let stack = Stack::start(REGION).await;
    let w = world(&stack.arm, "web-r2", IP);
    enable(&stack, &w.vm, policy()).await;
    let a_id = granted(&stack, &w.vm, "198.51.100.7").await;
    let other = granted(&stack, &w.vm, "198.51.100.8").await;
    let block = granted(&stack, &w.vm, "198.51.100.0/24").await;
    let (status, rdp) = request(
        &stack,
        ALICE,
        ask(
            &w.vm,
            json!({"number": 3389, "duration": "PT30M", "allowedSourceAddressPrefix": "198.51.100.7"}),
        ),
    )
    .await;
    assert_eq!(status, 202, "{rdp}");
    let rdp = rdp["id"].as_str().unwrap().to_owned();
    drain(&stack).await;

    let open = grants(&stack.arm, &w.nsg);
    assert_eq!(open.len(), 4, "every grant is open: {open:?}");
    for (id, port, source) in [
        (&a_id, "22", "198.51.100.7/32"),
        (&other, "22", "198.51.100.8/32"),
        (&block, "22", "198.51.100.0/24"),
        (&rdp, "3389", "198.51.100.7/32"),
    ] {
        let mine: Vec<&Value> = open
            .iter()
            .filter(|r| name(r).ends_with(id.as_str()))
            .collect();
        assert_eq!(mine.len(), 1, "{id}: {open:?}");
        assert_eq!(props(mine[0])["destinationPortRange"], port);
        assert_eq!(props(mine[0])["sourceAddressPrefix"], source);
        let r = record(&stack, id).await;
        assert_eq!(status_of(&r), ("Initiated", "UserRequested"), "{r}");
    }
}

#[tokio::test]
async fn an_azure_id_is_the_rest_of_the_path_with_or_without_its_slash() {
    let stack = Stack::start(REGION).await;
    let w = world(&stack.arm, "path-vm", IP);
    let doubled = format!("/v1/policies/{}", w.vm);
    let single = format!("/v1/policies{}", w.vm);
    let (status, put) = stack
        .call(
            Method::PUT,
            &doubled,
            Some(ADMIN),
            Some(policy().to_string()),
        )
        .await;
    assert_eq!(status, 201, "{put}");
    assert_eq!(denies(&stack.arm, &w.nsg).len(), 2);
    for path in [&doubled, &single, &Stack::policy_path(&w.vm)] {
        let (status, got) = stack.call(Method::GET, path, Some(ALICE), None).await;
        assert_eq!(status, 200, "{path}: {got}");
        assert_eq!(got["version"], put["version"], "{path}");
    }
    let (status, _) = stack.call(Method::DELETE, &single, Some(ADMIN), None).await;
    assert_eq!(status, 204);
    assert!(denies(&stack.arm, &w.nsg).is_empty());
}

#[tokio::test]
async fn a_queued_duration_counts_from_acceptance_when_the_message_comes_again() {
    let stack = Stack::start(REGION).await;
    let w = world(&stack.arm, "relay-1", IP);
    enable(&stack, &w.vm, policy()).await;
    let message = |id: &str| {
        json!({"id": id, "requestor": "local:alice", "virtualMachines": [{"id": w.vm, "ports": [
            {"number": 22, "duration": "PT5M", "allowedSourceAddressPrefix": "198.51.100.7"}]}]})
    };
    let throttle = || {
        stack.arm.inject(Fault::new(
            Some("GET"),
            "/virtualMachines/relay-1",
            u32::MAX,
            FaultKind::Throttle {
                retry_after_secs: 0,
            },
        ));
    };
    let t0 = stack.now();

    // The first delivery records the request and fails on ARM; the
    // message comes again two seconds later and opens the recorded end.
    throttle();
    assert_eq!(
        deliver(&stack.grant_app(), &message("relay-a"), t0).await,
        ["m-1"]
    );
    stack.arm.clear_faults();
    let recorded = port0(&record(&stack, "relay-a").await)["endTimeUtc"].clone();
    let later = t0 + SignedDuration::from_secs(2);
    assert!(
        deliver(&stack.grant_app(), &message("relay-a"), later)
            .await
            .is_empty()
    );
    let after = record(&stack, "relay-a").await;
    assert_eq!(port0(&after)["status"], "Initiated", "{after}");
    assert_eq!(port0(&after)["endTimeUtc"], recorded);
    let end: Timestamp = recorded
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("a time");
    let open = grants(&stack.arm, &w.nsg);
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(
        name(&open[0]).starts_with(&format!("jitvm-22-{}-", end.strftime("%Y%m%dT%H%M%SZ"))),
        "the rule ends when the record says: {}",
        name(&open[0])
    );

    // Coming again only after that end, it opens nothing and says why.
    throttle();
    assert_eq!(
        deliver(&stack.grant_app(), &message("relay-b"), t0).await,
        ["m-1"]
    );
    stack.arm.clear_faults();
    let late = t0 + SignedDuration::from_mins(6);
    assert!(
        deliver(&stack.grant_app(), &message("relay-b"), late)
            .await
            .is_empty()
    );
    let port = port0(&record(&stack, "relay-b").await).clone();
    assert_eq!(
        (&port["status"], &port["statusReason"]),
        (&json!("Failed"), &json!("Expired")),
        "{port}"
    );
    assert_eq!(grants(&stack.arm, &w.nsg).len(), 1, "nothing more opened");
}

//! The Azure adapter against the ARM fake: tokens, long-running operations,
//! retries, paging, and the firewall operations one by one.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use jitvm_core::aws::resolve_secrets;
use jitvm_core::azure::AzureFirewall;
use jitvm_core::config::{AzureConfig, Settings};
use jitvm_core::ports::{AdapterError, Firewall, PolicyStore};
use jitvm_core::{Grant, Policy, PolicyDocument, VmId};
use jitvm_tests::arm_fake::{ArmFake, CLIENT_ASSERTION, Fault, FaultKind};
use jitvm_tests::stack::{SUBSCRIPTION, Stack, azure_env, azure_vm, enable, fast_retry};
use serde_json::{Value, json};

const RG: &str = "rg-adapter";

fn config(arm: &ArmFake, overrides: &[(&str, &str)]) -> AzureConfig {
    Settings::from_lookup(|name| {
        overrides
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
            .or_else(|| azure_env(arm, name))
    })
    .expect("valid settings")
    .azure
    .expect("Azure is configured")
}

fn firewall(arm: &ArmFake) -> AzureFirewall {
    AzureFirewall::new(&config(arm, &[]), fast_retry(), None)
}

/// A VM with an NSG on its NIC; returns (vm id, nsg id).
fn world(arm: &ArmFake, name: &str) -> (VmId, String) {
    let (vm, nsg) = azure_vm(arm, RG, name, "10.0.0.4");
    (VmId::parse(&vm).unwrap(), nsg)
}

fn policy(vm: &VmId, ports: Value) -> Policy {
    Policy::parse(
        vm.clone(),
        &PolicyDocument::from_value(json!({"ports": ports})).unwrap(),
    )
    .unwrap()
}

fn ssh(vm: &VmId) -> Policy {
    policy(
        vm,
        json!([{"number": 22, "allowedSourceAddressPrefix": "*", "maxRequestAccessDuration": "PT3H"}]),
    )
}

fn grant(vm: &VmId, id: &str, source: &str) -> Grant {
    jitvm_tests::grant_of(&ssh(vm), id, source)
}

fn jit_rules(arm: &ArmFake, nsg: &str) -> Vec<String> {
    arm.rules(nsg)
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .filter(|n| n.starts_with("jitvm-"))
        .collect()
}

fn count(arm: &ArmFake, method: &str, path_part: &str) -> usize {
    arm.calls()
        .iter()
        .filter(|c| {
            c.method == method
                && c.path
                    .to_ascii_lowercase()
                    .contains(&path_part.to_ascii_lowercase())
        })
        .count()
}

#[tokio::test]
async fn tokens_are_reused_until_shortly_before_they_expire() {
    let arm = ArmFake::start().await;
    let (vm, _) = world(&arm, "tok-1");
    let fw = firewall(&arm);
    for _ in 0..3 {
        fw.inspect(&vm).await.unwrap();
    }
    assert_eq!(arm.tokens_issued(), 1, "one token for many calls");

    arm.set_token_lifetime(2);
    let short = firewall(&arm);
    short.inspect(&vm).await.unwrap();
    let issued = arm.tokens_issued();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    short.inspect(&vm).await.unwrap();
    assert_eq!(arm.tokens_issued(), issued + 1, "renewed before it lapsed");
    assert!(
        arm.calls().iter().all(|c| c.status != 401),
        "no call went out with a stale token"
    );
}

#[tokio::test]
async fn a_wrong_secret_or_a_missing_assertion_says_what_is_wrong() {
    let arm = ArmFake::start().await;
    let (vm, _) = world(&arm, "tok-2");
    let wrong = AzureFirewall::new(
        &config(&arm, &[("JITVM_AZURE_CLIENT_SECRET", "not-the-secret")]),
        fast_retry(),
        None,
    );
    match wrong.inspect(&vm).await {
        Err(AdapterError::Permanent { code, message }) => {
            assert_eq!(code, "AzureAuthenticationFailed");
            assert!(message.contains("invalid_client"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    let dir = std::env::temp_dir().join(jitvm_tests::unique("assertion"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, CLIENT_ASSERTION).unwrap();
    let federated = |path: &std::path::Path| {
        let mut c = config(&arm, &[]);
        c.credential = jitvm_core::config::AzureCredential::AssertionFile(path.to_owned());
        AzureFirewall::new(&c, fast_retry(), None)
    };
    assert!(
        federated(&file).inspect(&vm).await.is_ok(),
        "a client assertion from a file works"
    );
    match federated(&dir.join("missing")).inspect(&vm).await {
        Err(AdapterError::Permanent { code, .. }) => assert_eq!(code, "AzureCredentialUnreadable"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn long_running_operations_are_followed_to_the_end() {
    let arm = ArmFake::start().await;
    let (vm, nsg) = world(&arm, "lro-1");
    let fw = firewall(&arm);
    arm.set_lro(3, 0);
    fw.enable(&ssh(&vm), &[]).await.unwrap();
    arm.clear_calls();
    let g = grant(&vm, "req-lro-1", "198.51.100.7");
    let opened = fw.open(&g, None).await.unwrap();
    assert!(!opened.already_open);
    assert_eq!(count(&arm, "PUT", "/securityRules/"), 1);
    assert_eq!(
        count(&arm, "GET", "/operations/"),
        4,
        "three InProgress, then Succeeded: {:?}",
        arm.calls()
    );
    let rule = arm.rule(&nsg, &opened.rules[0].rule).unwrap();
    assert_eq!(rule["properties"]["provisioningState"], "Succeeded");

    arm.clear_calls();
    assert_eq!(fw.revoke(&opened.rules).await.unwrap(), 1);
    assert_eq!(count(&arm, "DELETE", "/securityRules/"), 1);
    assert!(
        count(&arm, "GET", "/operation") >= 1,
        "the delete was awaited"
    );
    assert_eq!(jit_rules(&arm, &nsg).len(), 1, "only the Deny rule is left");
    assert_eq!(
        fw.revoke(&opened.rules).await.unwrap(),
        0,
        "already gone is not an error"
    );
}

#[tokio::test]
async fn opening_is_idempotent_and_makes_one_rule() {
    let arm = ArmFake::start().await;
    let (vm, nsg) = world(&arm, "idem-1");
    let fw = firewall(&arm);
    fw.enable(&ssh(&vm), &[]).await.unwrap();
    let g = grant(&vm, "req-idem-1", "198.51.100.7");
    let first = fw.open(&g, None).await.unwrap();
    let again = fw.open(&g, None).await.unwrap();
    assert!(!first.already_open && again.already_open);
    assert_eq!(first.rules, again.rules);
    assert_eq!(count(&arm, "PUT", "/securityRules/jitvm-22-"), 1);
    assert_eq!(
        jit_rules(&arm, &nsg).len(),
        2,
        "the Deny rule and one grant"
    );
    let mine = fw.rules_of(&vm).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(
        mine[0].decoded.as_ref().unwrap().request_id.as_str(),
        "req-idem-1"
    );
    assert_eq!(mine[0].decoded.as_ref().unwrap().expires, g.end());
    assert_eq!(
        mine[0].decoded.as_ref().unwrap().requester.as_deref(),
        Some("local:alice")
    );
}

#[tokio::test]
async fn retries_are_bounded_and_the_failure_is_retryable() {
    let arm = ArmFake::start().await;
    let (vm, nsg) = world(&arm, "retry-1");
    let fw = firewall(&arm);
    fw.enable(&ssh(&vm), &[]).await.unwrap();
    arm.inject(Fault {
        method: Some("PUT".into()),
        path_contains: "/securityRules/jitvm-22-".into(),
        times: 50,
        kind: FaultKind::Throttle {
            retry_after_secs: 0,
        },
    });
    let err = fw
        .open(&grant(&vm, "req-retry-1", "198.51.100.7"), None)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("429"), "{err}");
    assert_eq!(
        count(&arm, "PUT", "/securityRules/jitvm-22-"),
        fast_retry().attempts as usize
    );
    assert_eq!(jit_rules(&arm, &nsg).len(), 1, "no grant rule");
}

#[tokio::test]
async fn lists_follow_next_link_and_say_why_a_vm_is_unsupported() {
    let arm = ArmFake::start().await;
    arm.set_page_size(2);
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(world(&arm, &format!("page-{i}")).0);
    }
    let bare = arm.add_subnet(
        SUBSCRIPTION,
        RG,
        "bare-vnet",
        "default",
        "10.9.0.0/24",
        None,
    );
    let unsupported =
        VmId::parse(&arm.add_vm(SUBSCRIPTION, RG, "bare", &bare, "10.9.0.4", None)).unwrap();
    let fw = firewall(&arm);
    let facts = fw.list_vms().await.unwrap();
    assert_eq!(facts.len(), 5, "{facts:?}");
    for id in &ids {
        let f = facts.iter().find(|f| &f.id == id).unwrap();
        assert_eq!(f.unsupported, None, "{f:?}");
    }
    let f = facts.iter().find(|f| f.id == unsupported).unwrap();
    assert!(
        f.unsupported
            .as_deref()
            .unwrap()
            .contains("network security group")
    );
    assert_eq!(f.name.as_deref(), Some("bare"));
    assert!(
        count(&arm, "GET", "/providers/Microsoft.Compute/virtualMachines") >= 3,
        "paged: {:?}",
        arm.calls()
    );

    let missing = VmId::parse(&format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/ghost")).unwrap();
    assert!(matches!(
        fw.inspect(&missing).await,
        Err(AdapterError::NotFound(_))
    ));
    match fw.enable(&ssh(&unsupported), &[]).await {
        Err(AdapterError::Permanent { code, .. }) => assert_eq!(code, "Unsupported"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn narrowing_a_policy_removes_the_deny_rules_of_dropped_ports() {
    let arm = ArmFake::start().await;
    let (vm, nsg) = world(&arm, "narrow-1");
    let fw = firewall(&arm);
    let both = policy(&vm, json!([22, 3389]));
    fw.enable(&both, &[]).await.unwrap();
    assert_eq!(jit_rules(&arm, &nsg).len(), 2);
    fw.enable(&ssh(&vm), &[]).await.unwrap();
    let left = jit_rules(&arm, &nsg);
    assert_eq!(left.len(), 1);
    assert!(left[0].starts_with("jitvm-deny-22-"), "{left:?}");

    // A grant needs the Deny rule of its port: without it, JIT is not on.
    arm.remove_rule(&nsg, &left[0]);
    match fw
        .open(&grant(&vm, "req-narrow-1", "198.51.100.7"), None)
        .await
    {
        Err(AdapterError::Permanent { code, message }) => {
            assert_eq!(code, "JitNotEnabled");
            assert!(message.contains("PUT its policy again"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_full_allow_band_is_an_error_that_names_the_setting() {
    let arm = ArmFake::start().await;
    let (vm, nsg) = world(&arm, "band-1");
    let fw = AzureFirewall::new(
        &config(
            &arm,
            &[
                ("JITVM_AZURE_ALLOW_PRIORITIES", "100-101"),
                ("JITVM_AZURE_DENY_PRIORITIES", "200-210"),
            ],
        ),
        fast_retry(),
        None,
    );
    fw.enable(&ssh(&vm), &[]).await.unwrap();
    fw.open(&grant(&vm, "req-band-1", "198.51.100.7"), None)
        .await
        .unwrap();
    arm.put_rule(&nsg, "customer-101", json!({"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "443",
        "sourceAddressPrefix": "*", "destinationAddressPrefix": "*", "access": "Allow", "priority": 101, "direction": "Inbound"}));
    match fw
        .open(&grant(&vm, "req-band-2", "198.51.100.8"), None)
        .await
    {
        Err(AdapterError::Permanent { code, message }) => {
            assert_eq!(code, "PriorityBandFull");
            assert!(
                message.contains("JITVM_AZURE_ALLOW_PRIORITIES"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_sweep_reads_the_nsgs_that_policies_name() {
    let stack = Stack::start("eu-south-1").await;
    let (vm, nsg) = world(&stack.arm, "swept-1");
    enable(
        &stack,
        &vm.to_string(),
        json!({"ports": [{"number": 22, "allowedSourceAddressPrefix": "*",
        "maxRequestAccessDuration": "PT1H"}]}),
    )
    .await;
    let g = grant(&vm, "req-swept-1", "198.51.100.7");
    stack.host.stack.firewall.open(&g, None).await.unwrap();

    // No subscriptions configured: only the policies say where to look.
    let store: Arc<dyn PolicyStore> = Arc::new(stack.host.stack.store.clone());
    let by_policy = AzureFirewall::new(
        &config(&stack.arm, &[("JITVM_AZURE_SUBSCRIPTIONS", " ")]),
        fast_retry(),
        Some(store),
    );
    let found = by_policy.rules().await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].key.firewall.eq_ignore_ascii_case(&nsg));
    assert_eq!(
        found[0].vm.as_ref(),
        Some(&vm),
        "the Deny rule tells whose grant it is"
    );
    assert_eq!(
        found[0].decoded.as_ref().unwrap().request_id.as_str(),
        "req-swept-1"
    );
    assert!(
        found[0].decoded.as_ref().unwrap().expires
            > Timestamp::now() + SignedDuration::from_mins(59)
    );
}

#[tokio::test]
async fn the_client_secret_can_come_from_secrets_manager() {
    let arm = ArmFake::start().await;
    let (vm, _) = world(&arm, "sm-1");
    let aws = jitvm_tests::Moto::shared().config_in("eu-west-3").await;
    let arn = aws_sdk_secretsmanager::Client::new(&aws)
        .create_secret()
        .name(jitvm_tests::unique("jitvm-azure"))
        .secret_string(jitvm_tests::arm_fake::CLIENT_SECRET)
        .send()
        .await
        .expect("moto stores the secret")
        .arn
        .expect("an ARN");
    let fake = &arm;
    let by_arn = |arn: String| {
        Settings::from_lookup(move |name| match name {
            "JITVM_AZURE_CLIENT_SECRET" => None,
            "JITVM_AZURE_CLIENT_SECRET_ARN" => Some(arn.clone()),
            other => azure_env(fake, other),
        })
        .expect("valid settings")
    };
    let settings = by_arn(arn.clone());
    assert!(matches!(
        settings.azure.as_ref().unwrap().credential,
        jitvm_core::config::AzureCredential::SecretArn(_)
    ));
    let resolved = resolve_secrets(&aws, &settings).await.unwrap();
    let fw = AzureFirewall::new(resolved.azure.as_ref().unwrap(), fast_retry(), None);
    assert!(
        fw.inspect(&vm).await.is_ok(),
        "the secret read from Secrets Manager works"
    );

    // Unresolved, the adapter says so instead of sending nothing.
    let unresolved = AzureFirewall::new(settings.azure.as_ref().unwrap(), fast_retry(), None);
    match unresolved.inspect(&vm).await {
        Err(AdapterError::Permanent { code, .. }) => assert_eq!(code, "AzureCredentialUnresolved"),
        other => panic!("{other:?}"),
    }
    let missing = by_arn("arn:aws:secretsmanager:eu-west-3:123456789012:secret:nope-AbCdEf".into());
    let err = resolve_secrets(&aws, &missing).await.unwrap_err();
    assert!(
        err.to_string().contains("reading the Azure client secret"),
        "{err}"
    );
}

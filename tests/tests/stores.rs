//! The DynamoDB stores and the SQS request queue against a real moto
//! server. Every test makes its own tables and queues (`unique` names), so
//! they share one moto and run in parallel.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use jitvm_core::aws::dynamo::{
    DynamoStore, REQUEST_INDEXES, REQUESTS_BY_DAY, REQUESTS_BY_REQUESTOR, REQUESTS_BY_VM,
    REQUESTS_PENDING, TableNames,
};
use jitvm_core::aws::sqs::{SqsQueue, group_id};
use jitvm_core::ports::{
    AdapterError, Enablement, PageCursor, PolicyEntry, PolicyStore, RequestPage, RequestQuery,
    RequestQueue, RequestStore,
};
use jitvm_core::{
    AccessRequest, Decision, InitiateBody, InitiatePort, InitiateVm, Policy, PolicyDocument, Port,
    PortStatus, Principal, RequestId, RequestMessage, RequestRecord, RequestStatus, StatusReason,
    Transition, VmId, evaluate,
};
use jitvm_tests::{Moto, unique};
use serde_json::{Value, json};

const VM_A: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";
const VM_B: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0fedcba9876543210";
const VM_C: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0a1b2c3d";

fn vm(text: &str) -> VmId {
    VmId::parse(text).expect("a valid VM id")
}

fn alice() -> Principal {
    Principal::parse("local:alice").expect("a valid principal")
}

fn at(text: &str) -> Timestamp {
    text.parse().expect("an RFC 3339 time")
}

fn policy(vm_id: &str, document: Value) -> Policy {
    Policy::parse(
        vm(vm_id),
        &PolicyDocument::from_value(document).expect("a policy document"),
    )
    .expect("a valid policy")
}

fn ssh_policy(vm_id: &str) -> Policy {
    policy(
        vm_id,
        json!({"ports": [{"number": 22, "protocol": "tcp",
                          "allowedSourceAddressPrefixes": ["198.51.100.0/24"],
                          "maxRequestAccessDuration": "PT3H"}, 3389],
               "requesters": ["local:alice"]}),
    )
}

fn entry(policy: Policy, by: &str, now: Timestamp) -> PolicyEntry {
    PolicyEntry {
        policy,
        enablement: Enablement {
            firewall: "sg-0123456789abcdef0".into(),
            exposures: Vec::new(),
        },
        updated_at: now,
        updated_by: Principal::parse(by).expect("a valid principal"),
    }
}

fn access_request(vm_id: &str, id: &str) -> AccessRequest {
    let body: InitiateBody = serde_json::from_value(json!({
        "virtualMachines": [{"id": vm_id, "ports": [
            {"number": 22, "duration": "PT1H", "allowedSourceAddressPrefix": "198.51.100.7"}]}],
        "justification": "deploy fix"}))
    .expect("a request body");
    AccessRequest::parse(RequestId::parse(id).expect("a valid id"), &body).expect("a valid request")
}

/// The record of request `id` on `vm_id`, accepted at `now` by the domain.
fn record(vm_id: &str, id: &str, now: Timestamp) -> RequestRecord {
    let request = access_request(vm_id, id);
    match evaluate(Some(&ssh_policy(vm_id)), &request, &alice(), None, now) {
        Decision::Approved { grants } => {
            RequestRecord::accepted(&request, &alice(), &grants, &[], now)
        }
        other => panic!("the request should be approved: {other:?}"),
    }
}

/// The queue message of request `id` on `vm_id`, accepted at `now`.
fn message(vm_id: &str, id: &str, now: Timestamp) -> RequestMessage {
    let request = access_request(vm_id, id);
    match evaluate(Some(&ssh_policy(vm_id)), &request, &alice(), None, now) {
        Decision::Approved { grants } => RequestMessage::accepted(&request, &alice(), &grants),
        other => panic!("the request should be approved: {other:?}"),
    }
}

async fn store() -> DynamoStore {
    let config = Moto::shared().config().await;
    let store = DynamoStore::new(
        &config,
        TableNames {
            policies: unique("policies"),
            requests: unique("requests"),
        },
    );
    store.ensure_tables().await.expect("tables created");
    store
}

async fn queue() -> SqsQueue {
    let config = Moto::shared().config().await;
    SqsQueue::ensure(&config, &format!("{}.fifo", unique("requests")))
        .await
        .expect("queue created")
}

fn conflict(result: Result<impl std::fmt::Debug, AdapterError>) -> String {
    match result {
        Err(AdapterError::Conflict(message)) => message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn p22() -> Port {
    Port::parse(22).expect("a valid port")
}

// ---------------------------------------------------------------- tables

#[tokio::test]
async fn ensure_tables_twice_keeps_tables_and_data() {
    let store = store().await;
    let now = at("2026-11-23T12:00:00Z");
    store
        .put_policy(&entry(ssh_policy(VM_A), "local:admin", now), None)
        .await
        .expect("stored");
    store
        .ensure_tables()
        .await
        .expect("a second ensure is fine");
    assert_eq!(
        store
            .get_policy(&vm(VM_A))
            .await
            .expect("read")
            .map(|e| e.policy.version()),
        Some(1),
        "ensuring again must not recreate the tables"
    );

    let dynamo = aws_sdk_dynamodb::Client::new(&Moto::shared().config().await);
    let requests = dynamo
        .describe_table()
        .table_name(&store.tables().requests)
        .send()
        .await
        .expect("describe requests")
        .table
        .expect("a table");
    assert_eq!(
        requests.table_status(),
        Some(&aws_sdk_dynamodb::types::TableStatus::Active)
    );
    assert_eq!(
        requests
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|m| m.as_str()),
        Some("PAY_PER_REQUEST")
    );
    let keys: Vec<_> = requests
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type().as_str()))
        .collect();
    assert_eq!(keys, [("id", "HASH")]);
    for (name, hash) in [
        ("by-vm", "vm"),
        ("by-requestor", "requestor"),
        ("by-day", "day"),
        ("pending", "pending"),
    ] {
        let index = requests
            .global_secondary_indexes()
            .iter()
            .find(|i| i.index_name() == Some(name))
            .unwrap_or_else(|| panic!("the {name} index"));
        let index_keys: Vec<_> = index
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name(), k.key_type().as_str()))
            .collect();
        assert_eq!(
            index_keys,
            [(hash, "HASH"), ("createdAt", "RANGE")],
            "{name}"
        );
        assert_eq!(
            index
                .projection()
                .and_then(|p| p.projection_type())
                .map(|p| p.as_str()),
            Some("ALL"),
            "{name}"
        );
    }
    assert_eq!(requests.global_secondary_indexes().len(), 4);

    let policies = dynamo
        .describe_table()
        .table_name(&store.tables().policies)
        .send()
        .await
        .expect("describe policies")
        .table
        .expect("a table");
    let keys: Vec<_> = policies
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type().as_str()))
        .collect();
    assert_eq!(keys, [("vm", "HASH")]);
}

#[tokio::test]
async fn a_requests_table_without_the_index_is_refused() {
    let config = Moto::shared().config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let requests = unique("requests");
    dynamo
        .create_table()
        .table_name(&requests)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .expect("definition"),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .expect("key"),
        )
        .send()
        .await
        .expect("create a foreign table");
    let store = DynamoStore::new(
        &config,
        TableNames {
            policies: unique("policies"),
            requests: requests.clone(),
        },
    );
    match store.ensure_tables().await {
        Err(AdapterError::Permanent { code, message }) => {
            assert_eq!(code, "MissingIndex");
            assert!(
                message.contains(&requests) && message.contains("by-vm"),
                "{message}"
            );
        }
        other => panic!("expected MissingIndex, got {other:?}"),
    }
}

#[tokio::test]
async fn a_requests_table_from_before_the_listings_is_refused_with_what_to_add() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType,
    };
    let config = Moto::shared().config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let requests = unique("requests");
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("definition")
    };
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .expect("key")
    };
    // The table an older jitvm made: only the by-vm index.
    dynamo
        .create_table()
        .table_name(&requests)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("id"))
        .attribute_definitions(attribute("vm"))
        .attribute_definitions(attribute("createdAt"))
        .key_schema(key("id", KeyType::Hash))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("by-vm")
                .key_schema(key("vm", KeyType::Hash))
                .key_schema(key("createdAt", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .expect("index"),
        )
        .send()
        .await
        .expect("create an older table");
    let store = DynamoStore::new(
        &config,
        TableNames {
            policies: unique("policies"),
            requests: requests.clone(),
        },
    );
    match store.ensure_tables().await {
        Err(AdapterError::Permanent { code, message }) => {
            assert_eq!(code, "MissingIndex");
            assert!(message.contains(&requests), "{message}");
            // Each missing index is named with the shape it must have; the
            // one that is there is not reported.
            for (name, hash) in [
                ("by-requestor", "requestor"),
                ("by-day", "day"),
                ("pending", "pending"),
            ] {
                assert!(
                    message.contains(&format!(
                        "{name} (hash key {hash}, range key createdAt, all attributes projected)"
                    )),
                    "{name}: {message}"
                );
            }
            assert!(!message.contains("by-vm ("), "{message}");
        }
        other => panic!("expected MissingIndex, got {other:?}"),
    }
    assert_eq!(
        REQUEST_INDEXES.map(|(name, _)| name),
        [
            REQUESTS_BY_VM,
            REQUESTS_BY_REQUESTOR,
            REQUESTS_BY_DAY,
            REQUESTS_PENDING
        ]
    );
}

// -------------------------------------------------------------- policies

#[tokio::test]
async fn policy_round_trip_with_version() {
    let store = store().await;
    let now = at("2026-11-23T12:00:00Z");
    assert_eq!(store.get_policy(&vm(VM_A)).await.expect("read"), None);
    let written = entry(ssh_policy(VM_A), "local:admin", now);
    assert_eq!(store.put_policy(&written, None).await.expect("stored"), 1);
    let read = store
        .get_policy(&vm(VM_A))
        .await
        .expect("read")
        .expect("a policy");
    assert_eq!(read.policy.version(), 1);
    let mut expected = written.clone();
    expected.policy = expected.policy.with_version(1);
    assert_eq!(read, expected);
    // Another spelling of nothing: another VM has no policy.
    assert_eq!(store.get_policy(&vm(VM_B)).await.expect("read"), None);
}

#[tokio::test]
async fn two_admins_cannot_overwrite_each_other() {
    let store = store().await;
    let t0 = at("2026-11-23T12:00:00Z");
    let first = entry(ssh_policy(VM_A), "local:admin", t0);
    assert_eq!(store.put_policy(&first, None).await.expect("created"), 1);

    // A second create (no version) must not replace the first.
    let message = conflict(store.put_policy(&first, None).await);
    assert!(
        message.contains("already exists") && message.contains(VM_A),
        "{message}"
    );
    assert!(message.contains("version 1"), "{message}");

    // Both admins read version 1; the first to write wins.
    let rdp_only = policy(VM_A, json!({"ports": [3389], "requesters": ["local:bob"]}));
    let bob_edit = entry(rdp_only, "local:carol", at("2026-11-23T12:05:00Z"));
    assert_eq!(
        store.put_policy(&bob_edit, Some(1)).await.expect("updated"),
        2
    );
    let stale_edit = entry(ssh_policy(VM_A), "local:dave", at("2026-11-23T12:06:00Z"));
    let message = conflict(store.put_policy(&stale_edit, Some(1)).await);
    assert!(
        message.contains("since version 1") && message.contains("now version 2"),
        "{message}"
    );

    let stored = store
        .get_policy(&vm(VM_A))
        .await
        .expect("read")
        .expect("a policy");
    assert_eq!(stored.policy.version(), 2);
    assert_eq!(stored.updated_by.as_str(), "local:carol");
    assert_eq!(stored.policy.ports().len(), 1);
    assert_eq!(stored.policy.ports()[0].number().get(), 3389);

    // Retrying with the version read again works.
    assert_eq!(
        store
            .put_policy(&stale_edit, Some(2))
            .await
            .expect("updated"),
        3
    );
    // A version for a VM that has no policy is a conflict, not a create.
    let message = conflict(
        store
            .put_policy(&entry(ssh_policy(VM_B), "local:admin", t0), Some(4))
            .await,
    );
    assert!(
        message.contains("deleted") || message.contains("changed"),
        "{message}"
    );
    assert_eq!(store.get_policy(&vm(VM_B)).await.expect("read"), None);
}

#[tokio::test]
async fn deletes_are_conditional_on_the_version() {
    let store = store().await;
    let now = at("2026-11-23T12:00:00Z");
    let e = entry(ssh_policy(VM_A), "local:admin", now);
    store.put_policy(&e, None).await.expect("created");
    store.put_policy(&e, Some(1)).await.expect("updated to 2");

    let message = conflict(store.delete_policy(&vm(VM_A), 1).await);
    assert!(message.contains("now version 2"), "{message}");
    assert!(
        store.get_policy(&vm(VM_A)).await.expect("read").is_some(),
        "a stale delete must not remove the policy"
    );

    store.delete_policy(&vm(VM_A), 2).await.expect("deleted");
    assert_eq!(store.get_policy(&vm(VM_A)).await.expect("read"), None);

    match store.delete_policy(&vm(VM_A), 2).await {
        Err(AdapterError::NotFound(message)) => assert!(message.contains(VM_A), "{message}"),
        other => panic!("deleting a missing policy should be NotFound, got {other:?}"),
    }
    // After a delete, a policy can be created again from scratch.
    assert_eq!(store.put_policy(&e, None).await.expect("recreated"), 1);
}

#[tokio::test]
async fn list_policies_returns_all() {
    let store = store().await;
    assert!(store.list_policies().await.expect("list").is_empty());
    let now = at("2026-11-23T12:00:00Z");
    for id in [VM_A, VM_B, VM_C] {
        store
            .put_policy(&entry(ssh_policy(id), "local:admin", now), None)
            .await
            .expect("stored");
    }
    store
        .put_policy(&entry(ssh_policy(VM_B), "local:admin", now), Some(1))
        .await
        .expect("updated");
    let listed: BTreeSet<_> = store
        .list_policies()
        .await
        .expect("list")
        .into_iter()
        .map(|e| (e.policy.vm().to_string(), e.policy.version()))
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from([(VM_A.into(), 1), (VM_B.into(), 2), (VM_C.into(), 1)])
    );
}

#[tokio::test]
async fn an_unreadable_policy_item_is_an_error_not_a_panic() {
    let store = store().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&Moto::shared().config().await);
    let s = |t: &str| aws_sdk_dynamodb::types::AttributeValue::S(t.into());
    dynamo
        .put_item()
        .table_name(&store.tables().policies)
        .item("vm", s(VM_A))
        .item(
            "version",
            aws_sdk_dynamodb::types::AttributeValue::N("1".into()),
        )
        .item("entry", s(r#"{"policy": "hand edited"}"#))
        .send()
        .await
        .expect("raw put");
    for result in [
        store.get_policy(&vm(VM_A)).await.map(|_| ()),
        store.list_policies().await.map(|_| ()),
    ] {
        match result {
            Err(AdapterError::Permanent { code, message }) => {
                assert_eq!(code, "CorruptRecord");
                assert!(message.contains(VM_A), "{message}");
            }
            other => panic!("expected CorruptRecord, got {other:?}"),
        }
    }
}

// -------------------------------------------------------------- requests

#[tokio::test]
async fn request_revisions_are_conditional() {
    let store = store().await;
    let now = at("2026-11-23T12:00:00Z");
    let id = RequestId::parse("req-1").expect("id");
    assert_eq!(store.get_request(&id).await.expect("read"), None);

    let created = record(VM_A, "req-1", now);
    store.create_request(&created).await.expect("created");
    let read = store
        .get_request(&id)
        .await
        .expect("read")
        .expect("a record");
    assert_eq!(read.revision, 1);
    assert_eq!(read.value, created);

    let mut opened = read.value.clone();
    opened
        .set_port(
            p22(),
            PortStatus::Initiated,
            StatusReason::UserRequested,
            None,
            now,
        )
        .expect("Initiating to Initiated");
    assert_eq!(store.update_request(&opened, 1).await.expect("updated"), 2);
    let read = store
        .get_request(&id)
        .await
        .expect("read")
        .expect("a record");
    assert_eq!(read.revision, 2);
    assert_eq!(read.value, opened);

    // A writer still holding revision 1 loses.
    let message = conflict(store.update_request(&created, 1).await);
    assert!(
        message.contains("since revision 1") && message.contains("now revision 2"),
        "{message}"
    );
    assert_eq!(
        store.get_request(&id).await.expect("read").map(|r| r.value),
        Some(opened)
    );

    // Updating a record that was never created is a conflict too (a re-read
    // then finds nothing), and creates nothing.
    let ghost = record(VM_A, "ghost", now);
    let message = conflict(store.update_request(&ghost, 1).await);
    assert!(message.contains("does not exist"), "{message}");
    assert_eq!(
        store
            .get_request(&RequestId::parse("ghost").expect("id"))
            .await
            .expect("read"),
        None
    );
}

#[tokio::test]
async fn a_duplicate_create_is_a_conflict() {
    let store = store().await;
    let now = at("2026-11-23T12:00:00Z");
    let first = record(VM_A, "dup-1", now);
    store.create_request(&first).await.expect("created");
    let mut opened = first.clone();
    opened
        .set_port(
            p22(),
            PortStatus::Initiated,
            StatusReason::UserRequested,
            None,
            now,
        )
        .expect("opened");
    store.update_request(&opened, 1).await.expect("updated");

    // The same id again (another VM, later) must not replace the record.
    let again = record(VM_B, "dup-1", at("2026-11-23T13:00:00Z"));
    let message = conflict(store.create_request(&again).await);
    assert!(
        message.contains("dup-1") && message.contains("already exists"),
        "{message}"
    );
    let stored = store
        .get_request(&RequestId::parse("dup-1").expect("id"))
        .await
        .expect("read")
        .expect("a record");
    assert_eq!(stored.revision, 2);
    assert_eq!(stored.value, opened);
}

#[tokio::test]
async fn a_record_cannot_go_backwards_through_the_store() {
    let store = store().await;
    let t0 = at("2026-11-23T12:00:00Z");
    let id = RequestId::parse("race-1").expect("id");
    store
        .create_request(&record(VM_A, "race-1", t0))
        .await
        .expect("created");

    // A grant (redelivered, slow) and the sweep both read revision 1.
    let stale = store.get_request(&id).await.expect("read").expect("record");
    let grant = store.get_request(&id).await.expect("read").expect("record");

    // The grant opens the port, then the sweep expires it.
    let mut opened = grant.value.clone();
    assert_eq!(
        opened.set_port(
            p22(),
            PortStatus::Initiated,
            StatusReason::UserRequested,
            None,
            t0
        ),
        Ok(Transition::Changed)
    );
    assert_eq!(
        store
            .update_request(&opened, grant.revision)
            .await
            .expect("opened"),
        2
    );
    let current = store.get_request(&id).await.expect("read").expect("record");
    let mut expired = current.value.clone();
    let t1 = t0 + SignedDuration::from_hours(1);
    assert_eq!(
        expired.set_port(p22(), PortStatus::Revoked, StatusReason::Expired, None, t1),
        Ok(Transition::Changed)
    );
    assert_eq!(
        store
            .update_request(&expired, current.revision)
            .await
            .expect("expired"),
        3
    );

    // The late writer's change is legal on its stale copy, but the store
    // refuses the stale revision ...
    let mut late = stale.value.clone();
    assert_eq!(
        late.set_port(
            p22(),
            PortStatus::Initiated,
            StatusReason::UserRequested,
            None,
            t1
        ),
        Ok(Transition::Changed)
    );
    conflict(store.update_request(&late, stale.revision).await);
    // ... and on the fresh copy the domain refuses to reopen the port.
    let fresh = store.get_request(&id).await.expect("read").expect("record");
    assert_eq!(fresh.revision, 3);
    let mut reapplied = fresh.value.clone();
    assert!(
        reapplied
            .set_port(
                p22(),
                PortStatus::Initiated,
                StatusReason::UserRequested,
                None,
                t1
            )
            .is_err(),
        "a revoked port must not reopen"
    );
    let port = fresh.value.port(p22()).expect("port 22");
    assert_eq!(port.status, PortStatus::Revoked);
    assert_eq!(port.status_reason, StatusReason::Expired);
    assert_eq!(fresh.value.history().len(), 3);
}

#[tokio::test]
async fn requests_for_vm_newest_first_with_since_and_limit() {
    let store = store().await;
    let t0 = at("2026-11-23T12:00:00Z");
    let s = SignedDuration::from_secs;
    // Two requests start in the same second; they must both be kept.
    for (vm_id, id, t) in [
        (VM_A, "a0", t0),
        (VM_A, "a1", t0 + s(1)),
        (VM_B, "b1", t0 + s(1)),
        (VM_A, "a2x", t0 + s(2)),
        (VM_A, "a2y", t0 + s(2)),
        (VM_A, "a3", t0 + s(3600)),
    ] {
        store
            .create_request(&record(vm_id, id, t))
            .await
            .expect("created");
    }
    let ids = |records: Vec<RequestRecord>| -> Vec<String> {
        records.iter().map(|r| r.id().to_string()).collect()
    };

    let all = store
        .requests_for_vm(&vm(VM_A), None, 100)
        .await
        .expect("list");
    assert!(
        all.windows(2)
            .all(|w| w[0].start_time_utc() >= w[1].start_time_utc()),
        "newest first"
    );
    assert!(all.iter().all(|r| r.vm() == &vm(VM_A)), "only VM A");
    assert_eq!(ids(all), ["a3", "a2y", "a2x", "a1", "a0"]);

    // `since` includes a request started exactly then.
    let since = store
        .requests_for_vm(&vm(VM_A), Some(t0 + s(1)), 100)
        .await
        .expect("list");
    assert_eq!(ids(since), ["a3", "a2y", "a2x", "a1"]);
    let since = store
        .requests_for_vm(&vm(VM_A), Some(t0 + SignedDuration::from_millis(1500)), 100)
        .await
        .expect("list");
    assert_eq!(ids(since), ["a3", "a2y", "a2x"]);
    let none = store
        .requests_for_vm(&vm(VM_A), Some(t0 + s(7200)), 100)
        .await
        .expect("list");
    assert!(none.is_empty());

    let newest_two = store
        .requests_for_vm(&vm(VM_A), None, 2)
        .await
        .expect("list");
    assert_eq!(ids(newest_two), ["a3", "a2y"]);
    let limited_since = store
        .requests_for_vm(&vm(VM_A), Some(t0), 4)
        .await
        .expect("list");
    assert_eq!(ids(limited_since), ["a3", "a2y", "a2x", "a1"]);
    assert!(
        store
            .requests_for_vm(&vm(VM_A), None, 0)
            .await
            .expect("list")
            .is_empty()
    );

    assert_eq!(
        ids(store
            .requests_for_vm(&vm(VM_B), None, 100)
            .await
            .expect("list")),
        ["b1"]
    );
    assert!(
        store
            .requests_for_vm(&vm(VM_C), None, 100)
            .await
            .expect("list")
            .is_empty()
    );

    // An update keeps the record in the index, with its new state.
    let a1 = RequestId::parse("a1").expect("id");
    let current = store.get_request(&a1).await.expect("read").expect("record");
    let mut revoked = current.value.clone();
    revoked
        .set_port(
            p22(),
            PortStatus::Revoked,
            StatusReason::UserRequested,
            None,
            t0 + s(5),
        )
        .expect("revoke");
    store
        .update_request(&revoked, current.revision)
        .await
        .expect("updated");
    let listed = store
        .requests_for_vm(&vm(VM_A), None, 100)
        .await
        .expect("list");
    assert_eq!(listed.len(), 5);
    assert_eq!(listed.iter().find(|r| r.id() == &a1), Some(&revoked));
}

// -------------------------------------------------------------- listings

fn bob() -> Principal {
    Principal::parse("local:bob").expect("a valid principal")
}

fn carol() -> Principal {
    Principal::parse("local:carol").expect("a valid principal")
}

/// The record of request `id` on `vm_id` by `who`, accepted at `now` under
/// a policy anyone may use; `PendingApproval` when `approval` is set.
fn record_as(
    vm_id: &str,
    id: &str,
    who: &Principal,
    now: Timestamp,
    approval: bool,
) -> RequestRecord {
    let approvers = if approval {
        json!(["local:approver"])
    } else {
        json!([])
    };
    let policy = policy(
        vm_id,
        json!({"ports": [{"number": 22, "protocol": "tcp",
                          "allowedSourceAddressPrefixes": ["198.51.100.0/24"],
                          "maxRequestAccessDuration": "PT3H"}],
               "requesters": ["*"], "approvers": approvers}),
    );
    let request = access_request(vm_id, id);
    let record = match evaluate(Some(&policy), &request, who, None, now) {
        Decision::Approved { grants } => RequestRecord::accepted(&request, who, &grants, &[], now),
        Decision::PendingApproval { grants, approvers } => {
            RequestRecord::accepted(&request, who, &grants, &approvers, now)
        }
        other => panic!("the request should be accepted: {other:?}"),
    };
    assert_eq!(record.start_time_utc(), now);
    record
}

fn query(limit: usize) -> RequestQuery {
    RequestQuery {
        vm: None,
        requestor: None,
        since: None,
        until: None,
        after: None,
        limit,
    }
}

fn ids_of(records: &[RequestRecord]) -> Vec<String> {
    records.iter().map(|r| r.id().to_string()).collect()
}

/// Every page of `q`, following `next` until there is none.
async fn all_pages(store: &DynamoStore, q: &RequestQuery) -> Vec<RequestPage> {
    let mut pages = Vec::new();
    let mut q = q.clone();
    loop {
        let page = store.query_requests(&q).await.expect("a page");
        let next = page.next.clone();
        pages.push(page);
        assert!(pages.len() <= 100, "the listing never ends");
        match next {
            Some(cursor) => q.after = Some(cursor),
            None => return pages,
        }
    }
}

fn invalid_query(result: Result<RequestPage, AdapterError>) -> String {
    match result {
        Err(AdapterError::Permanent { code, message }) if code == "InvalidQuery" => message,
        other => panic!("expected InvalidQuery, got {other:?}"),
    }
}

/// Records over three UTC days (none on the 21st), by three people on three
/// VMs, two of them started at the same instant, newest first.
async fn listing_fixture(store: &DynamoStore) -> Vec<(String, &'static str, Principal, Timestamp)> {
    let rows = [
        ("d20-a", VM_A, alice(), at("2026-11-20T08:00:00Z")),
        ("d20-b", VM_B, bob(), at("2026-11-20T23:59:59Z")),
        ("d22-a", VM_A, bob(), at("2026-11-22T00:00:00Z")),
        ("d22-b", VM_A, alice(), at("2026-11-22T10:00:00Z")),
        ("d22-c", VM_C, carol(), at("2026-11-22T10:00:00Z")),
        ("d22-d", VM_A, bob(), at("2026-11-22T10:00:00Z")),
        ("d22-e", VM_B, alice(), at("2026-11-22T18:30:00Z")),
        ("d23-a", VM_A, alice(), at("2026-11-23T01:00:00Z")),
        ("d23-b", VM_A, bob(), at("2026-11-23T02:00:00Z")),
    ];
    let mut out = Vec::new();
    for (id, vm_id, who, t) in rows {
        store
            .create_request(&record_as(vm_id, id, &who, t, false))
            .await
            .expect("created");
        out.push((id.to_owned(), vm_id, who, t));
    }
    // Newest first, then by id descending (the order of `time#id`).
    out.sort_by(|a, b| (b.3, &b.0).cmp(&(a.3, &a.0)));
    out
}

#[tokio::test]
async fn listings_select_by_vm_requestor_both_or_neither() {
    let store = store().await;
    let rows = listing_fixture(&store).await;
    let expect = |f: &dyn Fn(&str, &Principal) -> bool| -> Vec<String> {
        rows.iter()
            .filter(|(_, v, who, _)| f(v, who))
            .map(|(id, ..)| id.clone())
            .collect()
    };
    let list = |q: RequestQuery| {
        let store = &store;
        async move {
            let page = store.query_requests(&q).await.expect("a page");
            assert_eq!(page.next, None, "everything fits on one page");
            page.records
        }
    };

    // One VM (by-vm).
    let records = list(RequestQuery {
        vm: Some(vm(VM_A)),
        ..query(100)
    })
    .await;
    assert!(records.iter().all(|r| r.vm() == &vm(VM_A)));
    assert_eq!(ids_of(&records), expect(&|v, _| v == VM_A));
    assert_eq!(
        ids_of(&records),
        ["d23-b", "d23-a", "d22-d", "d22-b", "d22-a", "d20-a"]
    );

    // One requestor, every VM (by-requestor).
    let records = list(RequestQuery {
        requestor: Some(bob()),
        ..query(100)
    })
    .await;
    assert!(records.iter().all(|r| r.requestor() == &bob()));
    assert_eq!(ids_of(&records), expect(&|_, who| who == &bob()));
    assert_eq!(ids_of(&records), ["d23-b", "d22-d", "d22-a", "d20-b"]);

    // One VM and one requestor: both must hold.
    let records = list(RequestQuery {
        vm: Some(vm(VM_A)),
        requestor: Some(bob()),
        ..query(100)
    })
    .await;
    assert_eq!(ids_of(&records), ["d23-b", "d22-d", "d22-a"]);
    let records = list(RequestQuery {
        vm: Some(vm(VM_C)),
        requestor: Some(bob()),
        ..query(100)
    })
    .await;
    assert!(records.is_empty(), "carol's VM has no request of bob's");

    // Neither: every VM, every requestor, from `since` (by-day).
    let records = list(RequestQuery {
        since: Some(at("2026-11-01T00:00:00Z")),
        until: Some(at("2026-11-24T00:00:00Z")),
        ..query(100)
    })
    .await;
    assert_eq!(ids_of(&records), expect(&|_, _| true));
    assert_eq!(records.len(), 9);

    // Nobody's and nothing's listings are empty, not errors.
    let dave = Principal::parse("local:dave").expect("principal");
    assert!(
        list(RequestQuery {
            requestor: Some(dave),
            ..query(10)
        })
        .await
        .is_empty()
    );
    let records = list(RequestQuery {
        since: Some(at("2026-11-21T00:00:00Z")),
        until: Some(at("2026-11-22T00:00:00Z")),
        ..query(10)
    })
    .await;
    assert!(records.is_empty(), "nothing started on the 21st");
}

#[tokio::test]
async fn a_listing_of_every_vm_without_until_reaches_now() {
    let store = store().await;
    // Records start on a whole second.
    let now = Timestamp::from_second(Timestamp::now().as_second()).expect("a time");
    let h = SignedDuration::from_hours;
    for (id, t) in [
        ("old", now - h(60)),
        ("recent", now - h(1)),
        ("just-now", now),
    ] {
        store
            .create_request(&record_as(VM_A, id, &carol(), t, false))
            .await
            .expect("created");
    }
    let page = store
        .query_requests(&RequestQuery {
            since: Some(now - h(72)),
            ..query(10)
        })
        .await
        .expect("a page");
    assert_eq!(ids_of(&page.records), ["just-now", "recent", "old"]);
    let page = store
        .query_requests(&RequestQuery {
            since: Some(now - h(2)),
            ..query(1)
        })
        .await
        .expect("a page");
    assert_eq!(ids_of(&page.records), ["just-now"]);
    let rest = store
        .query_requests(&RequestQuery {
            since: Some(now - h(2)),
            after: page.next,
            ..query(1)
        })
        .await
        .expect("a page");
    assert_eq!(ids_of(&rest.records), ["recent"]);
    assert_eq!(rest.next, None);
}

#[tokio::test]
async fn since_is_inclusive_and_until_exclusive_in_every_listing() {
    let store = store().await;
    let t0 = at("2026-11-22T23:59:59Z");
    let s = SignedDuration::from_secs;
    // Across midnight, so the day listing reads two days.
    for (id, t) in [
        ("b0", t0),
        ("b1x", t0 + s(1)),
        ("b1y", t0 + s(1)),
        ("b2", t0 + s(2)),
    ] {
        store
            .create_request(&record_as(VM_A, id, &bob(), t, false))
            .await
            .expect("created");
    }
    let bounded = |since: Option<Timestamp>, until: Option<Timestamp>| {
        [
            RequestQuery {
                vm: Some(vm(VM_A)),
                since,
                until,
                ..query(100)
            },
            RequestQuery {
                requestor: Some(bob()),
                since,
                until,
                ..query(100)
            },
            RequestQuery {
                vm: Some(vm(VM_A)),
                requestor: Some(bob()),
                since,
                until,
                ..query(100)
            },
            RequestQuery {
                // Every VM needs a start; and an end, so that this test does
                // not depend on today's date.
                since: Some(since.unwrap_or(t0 - s(86_400))),
                until: Some(until.unwrap_or(t0 + s(3600))),
                ..query(100)
            },
        ]
    };
    let cases: [(Option<Timestamp>, Option<Timestamp>, &[&str]); 6] = [
        (None, None, &["b2", "b1y", "b1x", "b0"]),
        // Started exactly at `since`: in.
        (Some(t0 + s(1)), None, &["b2", "b1y", "b1x"]),
        // Started exactly at `until`: out.
        (None, Some(t0 + s(1)), &["b0"]),
        (Some(t0 + s(1)), Some(t0 + s(2)), &["b1y", "b1x"]),
        (Some(t0), Some(t0 + SignedDuration::from_nanos(1)), &["b0"]),
        // An empty or reversed window is empty, not an error.
        (Some(t0 + s(2)), Some(t0 + s(1)), &[]),
    ];
    for (since, until, expected) in cases {
        for q in bounded(since, until) {
            let page = store.query_requests(&q).await.expect("a page");
            assert_eq!(ids_of(&page.records), expected, "{q:?}");
            assert_eq!(page.next, None, "{q:?}");
        }
    }
}

#[tokio::test]
async fn pages_list_every_record_once_in_order() {
    let store = store().await;
    let rows = listing_fixture(&store).await;
    let all: Vec<String> = rows.iter().map(|(id, ..)| id.clone()).collect();
    let listings = [
        RequestQuery {
            vm: Some(vm(VM_A)),
            ..query(1)
        },
        RequestQuery {
            requestor: Some(alice()),
            ..query(1)
        },
        RequestQuery {
            vm: Some(vm(VM_A)),
            requestor: Some(bob()),
            ..query(1)
        },
        RequestQuery {
            since: Some(at("2026-11-19T12:00:00Z")),
            until: Some(at("2026-11-24T00:00:00Z")),
            ..query(1)
        },
        RequestQuery {
            since: Some(at("2026-11-20T00:00:00Z")),
            until: Some(at("2026-11-23T01:00:00Z")),
            ..query(1)
        },
    ];
    for listing in listings {
        // Everything on one page: the reference.
        let whole = store
            .query_requests(&RequestQuery {
                limit: 1000,
                ..listing.clone()
            })
            .await
            .expect("a page");
        assert_eq!(whole.next, None);
        let expected = ids_of(&whole.records);
        assert!(!expected.is_empty(), "{listing:?}");
        // Newest first, in the order of the whole table.
        let positions: Vec<usize> = expected
            .iter()
            .map(|id| all.iter().position(|a| a == id).expect("a known id"))
            .collect();
        assert!(positions.is_sorted(), "{listing:?}: {expected:?}");

        for limit in [1, 2, 3, expected.len(), expected.len() + 1] {
            let pages = all_pages(
                &store,
                &RequestQuery {
                    limit,
                    ..listing.clone()
                },
            )
            .await;
            let walked: Vec<String> = pages.iter().flat_map(|p| ids_of(&p.records)).collect();
            assert_eq!(walked, expected, "limit {limit}: {listing:?}");
            for (i, page) in pages.iter().enumerate() {
                assert!(page.records.len() <= limit, "limit {limit}");
                assert!(!page.records.is_empty(), "limit {limit}: page {i} is empty");
                if i + 1 < pages.len() {
                    assert_eq!(page.records.len(), limit, "only the last page is short");
                    assert_eq!(
                        page.next,
                        page.records.last().map(PageCursor::after),
                        "a page's cursor is its last record"
                    );
                }
            }
            assert_eq!(
                pages.len(),
                expected.len().div_ceil(limit),
                "limit {limit}: no page after the last record"
            );
        }
    }

    // A cursor is text that round-trips (it is handed out as nextToken).
    let first = store
        .query_requests(&RequestQuery {
            vm: Some(vm(VM_A)),
            ..query(2)
        })
        .await
        .expect("a page");
    let token = first.next.expect("more follow").as_str().to_owned();
    let second = store
        .query_requests(&RequestQuery {
            vm: Some(vm(VM_A)),
            after: Some(PageCursor::parse(&token).expect("a cursor")),
            ..query(2)
        })
        .await
        .expect("a page");
    assert_eq!(ids_of(&second.records), ["d22-d", "d22-b"]);
    // A cursor continues within `until`, and `until` within the cursor.
    let page = store
        .query_requests(&RequestQuery {
            vm: Some(vm(VM_A)),
            until: Some(at("2026-11-22T10:00:00Z")),
            after: Some(PageCursor::parse(&token).expect("a cursor")),
            ..query(10)
        })
        .await
        .expect("a page");
    assert_eq!(ids_of(&page.records), ["d22-a", "d20-a"]);
}

#[tokio::test]
async fn many_records_of_one_day_page_without_gaps() {
    let store = store().await;
    let t0 = at("2026-11-22T12:00:00Z");
    let mut expected = Vec::new();
    for i in 0..25 {
        // Two by two, requests share an instant.
        let t = t0 + SignedDuration::from_secs(i / 2);
        let who = if i % 3 == 0 { bob() } else { alice() };
        let id = format!("m{i:02}");
        store
            .create_request(&record_as(VM_B, &id, &who, t, false))
            .await
            .expect("created");
        expected.push((t, id, who));
    }
    expected.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
    for listing in [
        RequestQuery {
            vm: Some(vm(VM_B)),
            ..query(4)
        },
        RequestQuery {
            requestor: Some(alice()),
            ..query(4)
        },
        RequestQuery {
            vm: Some(vm(VM_B)),
            requestor: Some(bob()),
            ..query(4)
        },
        RequestQuery {
            since: Some(t0),
            until: Some(t0 + SignedDuration::from_hours(1)),
            ..query(4)
        },
    ] {
        let want: Vec<String> = expected
            .iter()
            .filter(|(_, _, who)| listing.requestor.as_ref().is_none_or(|p| p == who))
            .map(|(_, id, _)| id.clone())
            .collect();
        let pages = all_pages(&store, &listing).await;
        let walked: Vec<String> = pages.iter().flat_map(|p| ids_of(&p.records)).collect();
        assert_eq!(walked, want, "{listing:?}");
        let unique: BTreeSet<&String> = walked.iter().collect();
        assert_eq!(unique.len(), walked.len(), "no duplicates: {listing:?}");
    }
}

#[tokio::test]
async fn a_decided_request_leaves_the_pending_list() {
    let store = store().await;
    let t0 = at("2026-11-23T09:00:00Z");
    let m = SignedDuration::from_mins;
    for (id, vm_id, t, approval) in [
        ("p1", VM_A, t0, true),
        ("auto", VM_A, t0 + m(1), false),
        ("p2", VM_B, t0 + m(2), true),
        ("p3", VM_A, t0 + m(3), true),
        ("p4", VM_C, t0 + m(4), true),
    ] {
        store
            .create_request(&record_as(vm_id, id, &alice(), t, approval))
            .await
            .expect("created");
    }
    let pending = |before: Timestamp, limit: usize| {
        let store = &store;
        async move {
            let records = store
                .pending_requests(before, limit)
                .await
                .expect("pending");
            assert!(
                records
                    .iter()
                    .all(|r| r.status() == RequestStatus::PendingApproval)
            );
            ids_of(&records)
        }
    };
    let later = t0 + m(60);
    assert_eq!(pending(later, 10).await, ["p1", "p2", "p3", "p4"]);

    let decide = |id: &'static str, to: RequestStatus| {
        let store = &store;
        async move {
            let id = RequestId::parse(id).expect("id");
            let current = store.get_request(&id).await.expect("read").expect("record");
            let mut decided = current.value.clone();
            let approver = Principal::parse("local:approver").expect("principal");
            decided
                .set_status(to, Some(&approver), t0 + m(30))
                .expect("decided");
            store
                .update_request(&decided, current.revision)
                .await
                .expect("updated");
            decided
        }
    };
    let approved = decide("p2", RequestStatus::Approved).await;
    assert_eq!(pending(later, 10).await, ["p1", "p3", "p4"]);
    decide("p4", RequestStatus::Denied).await;
    assert_eq!(pending(later, 10).await, ["p1", "p3"]);

    // A decided request is still listed, with its decision.
    let listed = store
        .query_requests(&RequestQuery {
            vm: Some(vm(VM_B)),
            ..query(10)
        })
        .await
        .expect("a page");
    assert_eq!(listed.records, [approved]);

    // An update that keeps a request pending keeps it in the list.
    let p3 = RequestId::parse("p3").expect("id");
    let current = store.get_request(&p3).await.expect("read").expect("record");
    store
        .update_request(&current.value, current.revision)
        .await
        .expect("rewritten");
    assert_eq!(pending(later, 10).await, ["p1", "p3"]);
}

#[tokio::test]
async fn pending_requests_are_the_oldest_before_the_cutoff() {
    let store = store().await;
    let t0 = at("2026-11-22T23:00:00Z");
    let m = SignedDuration::from_mins;
    // Created out of order, across midnight.
    for (id, t) in [
        ("q3", t0 + m(90)),
        ("q1", t0),
        ("q2b", t0 + m(30)),
        ("q2a", t0 + m(30)),
    ] {
        store
            .create_request(&record_as(VM_A, id, &bob(), t, true))
            .await
            .expect("created");
    }
    let pending = |before: Timestamp, limit: usize| {
        let store = &store;
        async move {
            ids_of(
                &store
                    .pending_requests(before, limit)
                    .await
                    .expect("pending"),
            )
        }
    };
    assert_eq!(pending(t0 + m(120), 10).await, ["q1", "q2a", "q2b", "q3"]);
    // Started exactly at the cutoff: not before it.
    assert_eq!(pending(t0 + m(90), 10).await, ["q1", "q2a", "q2b"]);
    assert_eq!(pending(t0 + m(30), 10).await, ["q1"]);
    assert_eq!(pending(t0, 10).await, Vec::<String>::new());
    // The oldest first, at most `limit`.
    assert_eq!(pending(t0 + m(120), 2).await, ["q1", "q2a"]);
    assert_eq!(pending(t0 + m(120), 1).await, ["q1"]);
    assert_eq!(pending(t0 + m(120), 0).await, Vec::<String>::new());
}

#[tokio::test]
async fn listings_that_cannot_be_answered_are_invalid_queries() {
    let store = store().await;
    store
        .create_request(&record_as(
            VM_A,
            "x1",
            &alice(),
            at("2026-11-23T10:00:00Z"),
            false,
        ))
        .await
        .expect("created");
    for q in [
        RequestQuery {
            vm: Some(vm(VM_A)),
            ..query(0)
        },
        RequestQuery {
            requestor: Some(alice()),
            ..query(0)
        },
        RequestQuery {
            since: Some(at("2026-11-23T00:00:00Z")),
            ..query(0)
        },
    ] {
        let message = invalid_query(store.query_requests(&q).await);
        assert!(message.contains("limit"), "{message}");
    }
    // Every VM and every requestor, with no start: a listing without end.
    for q in [
        query(10),
        RequestQuery {
            until: Some(at("2026-11-24T00:00:00Z")),
            ..query(10)
        },
    ] {
        let message = invalid_query(store.query_requests(&q).await);
        assert!(message.contains("since"), "{message}");
    }
    // Years of days, one query each: refused, with the bound to narrow.
    let message = invalid_query(
        store
            .query_requests(&RequestQuery {
                since: Some(at("2020-01-01T00:00:00Z")),
                until: Some(at("2026-11-24T00:00:00Z")),
                ..query(10)
            })
            .await,
    );
    assert!(
        message.contains("since") && message.contains("until"),
        "{message}"
    );
    // The same with a VM is fine: one index partition.
    let page = store
        .query_requests(&RequestQuery {
            vm: Some(vm(VM_A)),
            since: Some(at("2020-01-01T00:00:00Z")),
            ..query(10)
        })
        .await
        .expect("a page");
    assert_eq!(ids_of(&page.records), ["x1"]);
}

#[tokio::test]
async fn an_unreadable_request_item_fails_the_listing_by_name() {
    let store = store().await;
    let t = at("2026-11-23T10:00:00Z");
    store
        .create_request(&record_as(VM_A, "fine", &alice(), t, true))
        .await
        .expect("created");
    let dynamo = aws_sdk_dynamodb::Client::new(&Moto::shared().config().await);
    let s = |t: &str| aws_sdk_dynamodb::types::AttributeValue::S(t.into());
    dynamo
        .put_item()
        .table_name(&store.tables().requests)
        .item("id", s("mangled"))
        .item("vm", s(VM_A))
        .item("requestor", s("local:alice"))
        .item("day", s("2026-11-23"))
        .item("pending", s("PendingApproval"))
        .item("createdAt", s("2026-11-23T11:00:00.000000000Z#mangled"))
        .item(
            "revision",
            aws_sdk_dynamodb::types::AttributeValue::N("1".into()),
        )
        .item("record", s(r#"{"hand": "edited"}"#))
        .send()
        .await
        .expect("raw put");
    let results = [
        store
            .query_requests(&RequestQuery {
                vm: Some(vm(VM_A)),
                ..query(10)
            })
            .await
            .map(|_| ()),
        store
            .query_requests(&RequestQuery {
                requestor: Some(alice()),
                ..query(10)
            })
            .await
            .map(|_| ()),
        store
            .query_requests(&RequestQuery {
                since: Some(t),
                until: Some(at("2026-11-24T00:00:00Z")),
                ..query(10)
            })
            .await
            .map(|_| ()),
        store
            .pending_requests(at("2026-11-24T00:00:00Z"), 10)
            .await
            .map(|_| ()),
    ];
    for result in results {
        match result {
            Err(AdapterError::Permanent { code, message }) => {
                assert_eq!(code, "CorruptRecord");
                assert!(message.contains("mangled"), "{message}");
            }
            other => panic!("expected CorruptRecord, got {other:?}"),
        }
    }
}

// ----------------------------------------------------------------- queue

/// The body and every attribute of a queue, as SQS reports them.
async fn queue_attributes(url: &str) -> std::collections::HashMap<String, String> {
    let sqs = aws_sdk_sqs::Client::new(&Moto::shared().config().await);
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.as_str().to_owned(), v))
        .collect()
}

#[tokio::test]
async fn ensure_makes_a_fifo_queue_with_a_dead_letter_queue() {
    let config = Moto::shared().config().await;
    let base = unique("requests");
    let name = format!("{base}.fifo");
    let first = SqsQueue::ensure(&config, &name).await.expect("created");
    let second = SqsQueue::ensure(&config, &name).await.expect("found");
    assert_eq!(first.url(), second.url());
    assert!(first.url().ends_with(&name), "{}", first.url());

    let attributes = queue_attributes(first.url()).await;
    assert_eq!(
        attributes.get("FifoQueue").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        attributes
            .get("ContentBasedDeduplication")
            .map(String::as_str),
        Some("false")
    );
    assert_eq!(
        attributes.get("VisibilityTimeout").map(String::as_str),
        Some("180")
    );
    let redrive: Value =
        serde_json::from_str(attributes.get("RedrivePolicy").expect("a redrive policy"))
            .expect("redrive JSON");

    let sqs = aws_sdk_sqs::Client::new(&config);
    let dead_url = sqs
        .get_queue_url()
        .queue_name(format!("{base}-dlq.fifo"))
        .send()
        .await
        .expect("the dead-letter queue exists")
        .queue_url
        .expect("its URL");
    let dead = queue_attributes(&dead_url).await;
    assert_eq!(dead.get("FifoQueue").map(String::as_str), Some("true"));
    assert_eq!(
        redrive["deadLetterTargetArn"].as_str(),
        dead.get("QueueArn").map(String::as_str)
    );
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "5"
    );
}

#[tokio::test]
async fn ensure_refuses_a_name_without_fifo() {
    let config = Moto::shared().config().await;
    let name = unique("requests");
    match SqsQueue::ensure(&config, &name).await {
        Err(AdapterError::Permanent { code, message }) => {
            assert_eq!(code, "InvalidQueueName");
            assert!(message.contains(".fifo"), "{message}");
        }
        other => panic!("expected InvalidQueueName, got {other:?}"),
    }
    // Nothing was created.
    let sqs = aws_sdk_sqs::Client::new(&config);
    assert!(sqs.get_queue_url().queue_name(&name).send().await.is_err());
}

#[tokio::test]
async fn enqueue_and_receive_round_trip() {
    let queue = queue().await;
    let sent = message(VM_A, "round-1", at("2026-11-23T12:00:00Z"));
    queue.enqueue(&sent).await.expect("queued");

    let received = queue.receive(10, 1).await.expect("received");
    assert_eq!(received.len(), 1);
    let m = &received[0];
    assert_eq!(RequestMessage::from_json(&m.body).expect("a message"), sent);
    assert_eq!(
        m.attributes.get("MessageGroupId").map(String::as_str),
        Some(VM_A)
    );
    assert_eq!(
        m.attributes
            .get("MessageDeduplicationId")
            .map(String::as_str),
        Some("round-1")
    );
    assert_eq!(
        m.attributes
            .get("ApproximateReceiveCount")
            .map(String::as_str),
        Some("1")
    );
    for name in ["SentTimestamp", "SequenceNumber"] {
        assert!(
            m.attributes.contains_key(name),
            "{name} in {:?}",
            m.attributes
        );
    }
    assert!(!m.message_id.is_empty() && !m.receipt_handle.is_empty());
    queue.delete(&m.receipt_handle).await.expect("deleted");
    assert!(queue.receive(10, 0).await.expect("received").is_empty());
}

#[tokio::test]
async fn the_same_request_id_is_delivered_once() {
    let queue = queue().await;
    let sent = message(VM_A, "twice-1", at("2026-11-23T12:00:00Z"));
    queue.enqueue(&sent).await.expect("queued");
    queue
        .enqueue(&sent)
        .await
        .expect("queued again (deduplicated)");
    let other = message(VM_A, "twice-2", at("2026-11-23T12:00:01Z"));
    queue.enqueue(&other).await.expect("queued");

    let mut bodies = Vec::new();
    for _ in 0..5 {
        let batch = queue.receive(10, 0).await.expect("received");
        if batch.is_empty() {
            break;
        }
        let handles: Vec<String> = batch.iter().map(|m| m.receipt_handle.clone()).collect();
        bodies.extend(batch.into_iter().map(|m| m.body));
        queue.delete_batch(&handles).await.expect("deleted");
    }
    let ids: Vec<String> = bodies
        .iter()
        .map(|b| RequestMessage::from_json(b).expect("a message").id)
        .collect();
    assert_eq!(ids, ["twice-1", "twice-2"], "one delivery each, in order");
}

#[tokio::test]
async fn group_ids_keep_short_vm_ids_and_hash_long_ones() {
    assert_eq!(group_id(VM_A), VM_A);
    let long = format!(
        "/subscriptions/20ff7fc3-e762-44dd-bd96-b71116dcdc23/resourceGroups/{}/providers/\
         Microsoft.Compute/virtualMachines/vm1",
        "rg".repeat(40)
    );
    let hashed = group_id(&long);
    assert!(hashed.starts_with("vm-") && hashed.len() == 67, "{hashed}");
    assert_eq!(hashed, group_id(&long), "stable");

    // Through SQS: a long Azure id is grouped by its hash, whatever its case.
    let queue = queue().await;
    let canonical = vm(&long).to_string();
    assert!(canonical.len() > 128);
    let port = InitiatePort {
        number: 22,
        duration: None,
        end_time_utc: Some("2026-11-23T13:00:00Z".into()),
        allowed_source_address_prefix: Some("198.51.100.7/32".into()),
    };
    let raw = |id: &str, vm_id: &str| RequestMessage {
        id: id.into(),
        requestor: "local:alice".into(),
        virtual_machines: vec![InitiateVm {
            id: vm_id.into(),
            ports: vec![port.clone()],
        }],
        justification: None,
        break_glass: false,
    };
    queue.enqueue(&raw("azure-1", &long)).await.expect("queued");
    queue
        .enqueue(&raw("azure-2", &long.to_uppercase()))
        .await
        .expect("queued");
    let nameless = RequestMessage {
        virtual_machines: Vec::new(),
        ..raw("nameless-1", VM_A)
    };
    queue.enqueue(&nameless).await.expect("queued");

    let mut groups = std::collections::HashMap::new();
    for _ in 0..5 {
        let batch = queue.receive(10, 0).await.expect("received");
        if batch.is_empty() {
            break;
        }
        for m in &batch {
            let id = RequestMessage::from_json(&m.body).expect("a message").id;
            groups.insert(id, m.attributes.get("MessageGroupId").cloned());
        }
        let handles: Vec<String> = batch.into_iter().map(|m| m.receipt_handle).collect();
        queue.delete_batch(&handles).await.expect("deleted");
    }
    assert_eq!(groups.len(), 3, "{groups:?}");
    assert_eq!(
        groups["azure-1"].as_deref(),
        Some(group_id(&canonical).as_str())
    );
    assert_eq!(
        groups["azure-2"], groups["azure-1"],
        "two spellings, one VM, one group"
    );
    assert_eq!(groups["nameless-1"].as_deref(), Some("unknown"));
}

#[tokio::test]
async fn enqueue_refuses_an_invalid_request_id() {
    let queue = queue().await;
    let mut bad = message(VM_A, "ok-1", at("2026-11-23T12:00:00Z"));
    bad.id = "not a valid id".into();
    match queue.enqueue(&bad).await {
        Err(AdapterError::Permanent { code, .. }) => assert_eq!(code, "InvalidRequestId"),
        other => panic!("expected InvalidRequestId, got {other:?}"),
    }
    assert!(queue.receive(10, 0).await.expect("received").is_empty());
}

#[tokio::test]
async fn release_redelivers_now_and_keeps_the_vm_order() {
    let queue = queue().await;
    let t0 = at("2026-11-23T12:00:00Z");
    queue
        .enqueue(&message(VM_A, "first", t0))
        .await
        .expect("queued");
    queue
        .enqueue(&message(VM_A, "second", t0 + SignedDuration::from_secs(1)))
        .await
        .expect("queued");

    let id_of = |m: &jitvm_core::aws::sqs::Received| {
        RequestMessage::from_json(&m.body).expect("a message").id
    };
    let got = queue.receive(1, 0).await.expect("received");
    assert_eq!(got.iter().map(id_of).collect::<Vec<_>>(), ["first"]);
    // While the first is in flight, the VM's next request waits behind it.
    assert!(queue.receive(10, 0).await.expect("received").is_empty());

    // Released (a failure that may pass), it comes back at once, first.
    queue
        .release(&got[0].receipt_handle)
        .await
        .expect("released");
    let again = queue.receive(10, 0).await.expect("received");
    assert_eq!(
        again.iter().map(id_of).collect::<Vec<_>>(),
        ["first", "second"]
    );
    assert_eq!(
        again[0]
            .attributes
            .get("ApproximateReceiveCount")
            .map(String::as_str),
        Some("2")
    );

    // Deleting is final, and deleting again is harmless.
    let handles: Vec<String> = again.iter().map(|m| m.receipt_handle.clone()).collect();
    queue.delete(&handles[0]).await.expect("deleted");
    queue.delete(&handles[0]).await.expect("deleted again");
    queue.delete_batch(&handles[1..]).await.expect("deleted");
    assert!(queue.receive(10, 0).await.expect("received").is_empty());
}

#[tokio::test]
async fn delete_batch_takes_more_than_ten_and_reports_failures() {
    let queue = queue().await;
    let t0 = at("2026-11-23T12:00:00Z");
    // Twelve VMs, twelve groups: none waits behind another.
    let vms: Vec<String> = (0..12)
        .map(|i| format!("arn:aws:ec2:us-east-1:123456789012:instance/i-{i:017x}"))
        .collect();
    for (i, vm_id) in vms.iter().enumerate() {
        queue
            .enqueue(&message(vm_id, &format!("bulk-{i}"), t0))
            .await
            .expect("queued");
    }
    let mut handles = Vec::new();
    for _ in 0..10 {
        let batch = queue.receive(10, 0).await.expect("received");
        if batch.is_empty() {
            break;
        }
        handles.extend(batch.into_iter().map(|m| m.receipt_handle));
    }
    assert_eq!(handles.len(), 12);
    queue.delete_batch(&handles).await.expect("all deleted");
    queue.delete_batch(&[]).await.expect("nothing to delete");
    assert!(queue.receive(10, 0).await.expect("received").is_empty());

    match queue
        .delete_batch(&["not-a-receipt-handle".to_owned()])
        .await
    {
        Err(AdapterError::Permanent { message, .. }) => {
            assert!(message.contains("1 of 1"), "{message}");
        }
        other => panic!("a bogus receipt handle should fail, got {other:?}"),
    }
}

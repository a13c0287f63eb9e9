//! DynamoDB as the [`PolicyStore`] and the [`RequestStore`].
//!
//! # Tables
//!
//! - policies, keyed by `vm` (the canonical VM id): `version` (N), `entry`
//!   (S, the JSON of the [`PolicyEntry`], whose policy carries the same
//!   version), `updatedAt` and `updatedBy` (S, for people reading the table).
//! - requests, keyed by `id`: `vm`, `createdAt`, `requestor`, `status` (S),
//!   `revision` (N) and `record` (S, the JSON of the [`RequestRecord`]). The
//!   global secondary index `by-vm` (hash `vm`, range `createdAt`, every
//!   attribute projected) lists a VM's requests by time. `createdAt` is the
//!   record's `startTimeUtc` in a fixed-width RFC 3339 form (nanoseconds
//!   always written, so text order is time order) followed by `#<id>`, so
//!   two requests started in the same second keep distinct, ordered keys.
//!
//! # Concurrency
//!
//! Every write is conditional: a policy on its `version`, a record on its
//! `revision`. A write that loses a race is a [`AdapterError::Conflict`]
//! whose message says what changed, read from the item DynamoDB returns
//! with the failed condition (`ReturnValuesOnConditionCheckFailure=ALL_OLD`),
//! or from a consistent read when it returned none. Reads of one item are
//! strongly consistent; the `by-vm` index is eventually consistent, as every
//! global secondary index is.
//!
//! An item that cannot be read back (hand-edited, or written by another
//! program) is an [`AdapterError::Permanent`] with code `CorruptRecord`
//! naming the table and key, never a panic.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TableStatus,
};
use jiff::Timestamp;

use super::sdk_error;
use crate::domain::{RequestId, RequestRecord, VmId};
use crate::ports::{AdapterError, PolicyEntry, PolicyStore, RequestStore, Revised};

/// The index of the requests table that lists a VM's requests by time.
pub const REQUESTS_BY_VM: &str = "by-vm";

/// How long [`DynamoStore::ensure_tables`] waits for new tables to be active.
const ACTIVE_WAIT: Duration = Duration::from_secs(120);

// Attribute names.
const VM: &str = "vm";
const VERSION: &str = "version";
const ENTRY: &str = "entry";
const UPDATED_AT: &str = "updatedAt";
const UPDATED_BY: &str = "updatedBy";
const ID: &str = "id";
const CREATED_AT: &str = "createdAt";
const REQUESTOR: &str = "requestor";
const STATUS: &str = "status";
const REVISION: &str = "revision";
const RECORD: &str = "record";

type Item = HashMap<String, AttributeValue>;

/// The names of the two tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub policies: String,
    pub requests: String,
}

/// Policies and request records in DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    tables: TableNames,
}

impl DynamoStore {
    pub fn new(config: &SdkConfig, tables: TableNames) -> Self {
        Self {
            client: Client::new(config),
            tables,
        }
    }

    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    /// Creates the tables that are missing (on-demand capacity) and waits,
    /// for a bounded time, until both are active. Tables that already exist
    /// are kept; a requests table without the `by-vm` index is an error,
    /// since listing a VM's requests needs it.
    pub async fn ensure_tables(&self) -> Result<(), AdapterError> {
        let policies = &self.tables.policies;
        let requests = &self.tables.requests;
        let created = self
            .client
            .create_table()
            .table_name(policies)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute(VM)?)
            .key_schema(key(VM, KeyType::Hash)?)
            .send()
            .await;
        self.created_or_exists(policies, created).await?;

        let index = GlobalSecondaryIndex::builder()
            .index_name(REQUESTS_BY_VM)
            .key_schema(key(VM, KeyType::Hash)?)
            .key_schema(key(CREATED_AT, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build();
        let created = self
            .client
            .create_table()
            .table_name(requests)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute(ID)?)
            .attribute_definitions(attribute(VM)?)
            .attribute_definitions(attribute(CREATED_AT)?)
            .key_schema(key(ID, KeyType::Hash)?)
            .global_secondary_indexes(built(index)?)
            .send()
            .await;
        self.created_or_exists(requests, created).await?;

        self.wait_active(policies, None).await?;
        self.wait_active(requests, Some(REQUESTS_BY_VM)).await
    }

    async fn created_or_exists<O, E, R>(
        &self,
        table: &str,
        result: Result<O, aws_sdk_dynamodb::error::SdkError<E, R>>,
    ) -> Result<(), AdapterError>
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        match result {
            Ok(_) => {
                tracing::info!(table, "created DynamoDB table");
                Ok(())
            }
            Err(err) if super::error_code(&err) == Some("ResourceInUseException") => {
                tracing::debug!(table, "DynamoDB table exists");
                Ok(())
            }
            Err(err) => Err(sdk_error(&format!("creating table {table}"), err)),
        }
    }

    /// Waits until `table` (and `index`, when given) is active.
    async fn wait_active(&self, table: &str, index: Option<&str>) -> Result<(), AdapterError> {
        let deadline = tokio::time::Instant::now() + ACTIVE_WAIT;
        let mut pause = Duration::from_millis(100);
        loop {
            let out = self
                .client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("describing table {table}"), e))?;
            let description = out.table();
            let table_active =
                description.and_then(|t| t.table_status()) == Some(&TableStatus::Active);
            let index_state = index.map(|name| {
                description
                    .map(|t| t.global_secondary_indexes())
                    .unwrap_or_default()
                    .iter()
                    .find(|i| i.index_name() == Some(name))
                    .map(|i| {
                        // An index reported without a status is taken as ready.
                        i.index_status().is_none_or(|s| s.as_str() == "ACTIVE")
                    })
            });
            match index_state {
                Some(None) => {
                    return Err(AdapterError::permanent(
                        "MissingIndex",
                        format!(
                            "table {table} has no global secondary index {} (hash key {VM}, range key \
                             {CREATED_AT}, all attributes projected); it was not made by jitvm: add the \
                             index or point JITVM_REQUESTS_TABLE at another table",
                            index.unwrap_or_default()
                        ),
                    ));
                }
                Some(Some(false)) => {}
                Some(Some(true)) | None if table_active => return Ok(()),
                _ => {}
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(AdapterError::Transient {
                    message: format!(
                        "table {table} is not active after {} s; try again later",
                        ACTIVE_WAIT.as_secs()
                    ),
                    source: None,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// The number `attr` of the item keyed `key_attr = key`, read
    /// consistently; `None` when there is no such item.
    async fn stored_number(
        &self,
        table: &str,
        key_attr: &str,
        key: &str,
        attr: &str,
    ) -> Result<Option<u64>, AdapterError> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key(key_attr, AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .projection_expression("#n")
            .expression_attribute_names("#n", attr)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("reading {key} from {table}"), e))?;
        match out.item() {
            None => Ok(None),
            Some(item) => number(item, attr)
                .map(Some)
                .map_err(|why| corrupt(table, key, &why)),
        }
    }

    /// What the failed condition of a write to `key` found: the number
    /// `attr` of the item DynamoDB returned, or of a fresh read.
    async fn current_number(
        &self,
        table: &str,
        key_attr: &str,
        key: &str,
        attr: &str,
        returned: Option<&Item>,
    ) -> Result<Option<u64>, AdapterError> {
        match returned {
            Some(item) => number(item, attr)
                .map(Some)
                .map_err(|why| corrupt(table, key, &why)),
            None => self.stored_number(table, key_attr, key, attr).await,
        }
    }

    fn record_item(&self, record: &RequestRecord, revision: u64) -> Result<Item, AdapterError> {
        let json = serde_json::to_string(record).map_err(|e| {
            AdapterError::permanent(
                "SerializationFailed",
                format!("request {}: cannot be written as JSON: {e}", record.id()),
            )
        })?;
        Ok(HashMap::from([
            (ID.to_owned(), s(record.id().as_str())),
            (VM.to_owned(), s(&record.vm().to_string())),
            (CREATED_AT.to_owned(), s(&created_at(record))),
            (REQUESTOR.to_owned(), s(record.requestor().as_str())),
            (STATUS.to_owned(), s(&format!("{:?}", record.status()))),
            (REVISION.to_owned(), n(revision)),
            (RECORD.to_owned(), AttributeValue::S(json)),
        ]))
    }
}

#[async_trait]
impl PolicyStore for DynamoStore {
    async fn get_policy(&self, vm: &VmId) -> Result<Option<PolicyEntry>, AdapterError> {
        let table = &self.tables.policies;
        let key = vm.to_string();
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key(VM, s(&key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("reading the policy for {key}"), e))?;
        out.item().map(|item| policy_entry(table, item)).transpose()
    }

    async fn put_policy(
        &self,
        entry: &PolicyEntry,
        expected: Option<u64>,
    ) -> Result<u64, AdapterError> {
        let table = &self.tables.policies;
        let vm = entry.policy.vm().to_string();
        // Version 0 is a policy never stored (`Policy::version`).
        let expected = expected.filter(|&v| v > 0);
        let version = next(expected.unwrap_or(0), &vm)?;
        let mut stored = entry.clone();
        stored.policy = stored.policy.with_version(version);
        let json = serde_json::to_string(&stored).map_err(|e| {
            AdapterError::permanent(
                "SerializationFailed",
                format!("the policy for {vm} cannot be written as JSON: {e}"),
            )
        })?;
        let put = self
            .client
            .put_item()
            .table_name(table)
            .item(VM, s(&vm))
            .item(VERSION, n(version))
            .item(ENTRY, AttributeValue::S(json))
            .item(UPDATED_AT, s(&entry.updated_at.to_string()))
            .item(UPDATED_BY, s(entry.updated_by.as_str()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let put = match expected {
            None => put
                .condition_expression("attribute_not_exists(#k)")
                .expression_attribute_names("#k", VM),
            Some(v) => put
                .condition_expression("#v = :expected")
                .expression_attribute_names("#v", VERSION)
                .expression_attribute_values(":expected", n(v)),
        };
        let err = match put.send().await {
            Ok(_) => {
                tracing::debug!(vm, version, "policy stored");
                return Ok(version);
            }
            Err(err) => err,
        };
        let Some(PutItemError::ConditionalCheckFailedException(failed)) = err.as_service_error()
        else {
            return Err(sdk_error(&format!("writing the policy for {vm}"), err));
        };
        let current = self
            .current_number(table, VM, &vm, VERSION, failed.item())
            .await?;
        Err(AdapterError::Conflict(match (expected, current) {
            (None, Some(now)) => format!(
                "a policy for {vm} already exists (version {now}); read it and send its version to replace it"
            ),
            (Some(v), Some(now)) => format!(
                "the policy for {vm} changed since version {v} (it is now version {now}); read it again and retry"
            ),
            (Some(v), None) => format!(
                "the policy for {vm} was deleted after version {v} was read; read it again and retry"
            ),
            (None, None) => format!(
                "the policy for {vm} changed while it was being written; read it again and retry"
            ),
        }))
    }

    /// Deletes the policy of `vm` if it is still at version `expected`.
    /// `NotFound` when there is no policy (nothing to delete: it may have
    /// been deleted by someone else already); `Conflict` when it is at
    /// another version (someone changed it since it was read).
    async fn delete_policy(&self, vm: &VmId, expected: u64) -> Result<(), AdapterError> {
        let table = &self.tables.policies;
        let key = vm.to_string();
        let result = self
            .client
            .delete_item()
            .table_name(table)
            .key(VM, s(&key))
            .condition_expression("#v = :expected")
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":expected", n(expected))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let err = match result {
            Ok(_) => {
                tracing::debug!(vm = key, version = expected, "policy deleted");
                return Ok(());
            }
            Err(err) => err,
        };
        let Some(DeleteItemError::ConditionalCheckFailedException(failed)) = err.as_service_error()
        else {
            return Err(sdk_error(&format!("deleting the policy for {key}"), err));
        };
        match self
            .current_number(table, VM, &key, VERSION, failed.item())
            .await?
        {
            None => Err(AdapterError::NotFound(format!(
                "there is no policy for {key} (it may have been deleted already)"
            ))),
            Some(now) => Err(AdapterError::Conflict(format!(
                "the policy for {key} changed since version {expected} (it is now version {now}); \
                 read it again and retry"
            ))),
        }
    }

    async fn list_policies(&self) -> Result<Vec<PolicyEntry>, AdapterError> {
        let table = &self.tables.policies;
        let mut entries = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error(&format!("listing the policies in {table}"), e))?;
            for item in out.items() {
                entries.push(policy_entry(table, item)?);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(entries),
            }
        }
    }
}

#[async_trait]
impl RequestStore for DynamoStore {
    async fn create_request(&self, record: &RequestRecord) -> Result<(), AdapterError> {
        let id = record.id();
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.requests)
            .set_item(Some(self.record_item(record, 1)?))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", ID)
            .send()
            .await;
        match result {
            Ok(_) => {
                tracing::debug!(request_id = %id, "request record created");
                Ok(())
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(PutItemError::is_conditional_check_failed_exception) =>
            {
                Err(AdapterError::Conflict(format!(
                    "request {id} already exists; a request id is used once, send a new one"
                )))
            }
            Err(err) => Err(sdk_error(&format!("creating request {id}"), err)),
        }
    }

    async fn get_request(
        &self,
        id: &RequestId,
    ) -> Result<Option<Revised<RequestRecord>>, AdapterError> {
        let table = &self.tables.requests;
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key(ID, s(id.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("reading request {id}"), e))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let revised = revised_record(table, item)?;
        if revised.value.id() != id {
            return Err(corrupt(
                table,
                id.as_str(),
                &format!("its record is of request {}", revised.value.id()),
            ));
        }
        Ok(Some(revised))
    }

    /// Replaces the record if its revision is still `expected`. `Conflict`
    /// when another writer came first, or when the record no longer exists
    /// (a re-read then finds nothing).
    async fn update_request(
        &self,
        record: &RequestRecord,
        expected: u64,
    ) -> Result<u64, AdapterError> {
        let table = &self.tables.requests;
        let id = record.id();
        let revision = next(expected, id.as_str())?;
        let result = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(self.record_item(record, revision)?))
            .condition_expression("#r = :expected")
            .expression_attribute_names("#r", REVISION)
            .expression_attribute_values(":expected", n(expected))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let err = match result {
            Ok(_) => {
                tracing::debug!(request_id = %id, revision, "request record updated");
                return Ok(revision);
            }
            Err(err) => err,
        };
        let Some(PutItemError::ConditionalCheckFailedException(failed)) = err.as_service_error()
        else {
            return Err(sdk_error(&format!("updating request {id}"), err));
        };
        let current = self
            .current_number(table, ID, id.as_str(), REVISION, failed.item())
            .await?;
        Err(AdapterError::Conflict(match current {
            Some(now) => format!(
                "request {id} changed since revision {expected} (it is now revision {now}); \
                 read it again and reapply the change"
            ),
            None => format!("request {id} does not exist, so it cannot be updated"),
        }))
    }

    async fn requests_for_vm(
        &self,
        vm: &VmId,
        since: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, AdapterError> {
        let table = &self.tables.requests;
        let key = vm.to_string();
        let mut records = Vec::new();
        let mut start: Option<Item> = None;
        while records.len() < limit {
            let page = i32::try_from(limit - records.len()).unwrap_or(i32::MAX);
            let mut query = self
                .client
                .query()
                .table_name(table)
                .index_name(REQUESTS_BY_VM)
                .expression_attribute_names("#vm", VM)
                .expression_attribute_values(":vm", s(&key))
                .scan_index_forward(false)
                .limit(page)
                .set_exclusive_start_key(start.take());
            query = match since {
                None => query.key_condition_expression("#vm = :vm"),
                Some(since) => query
                    .key_condition_expression("#vm = :vm AND #c >= :since")
                    .expression_attribute_names("#c", CREATED_AT)
                    .expression_attribute_values(":since", s(&sort_time(since))),
            };
            let out = query
                .send()
                .await
                .map_err(|e| sdk_error(&format!("listing the requests of {key}"), e))?;
            for item in out.items() {
                if records.len() == limit {
                    break;
                }
                records.push(revised_record(table, item)?.value);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(records)
    }
}

/// A time as text whose order is the time's order: RFC 3339 in UTC with
/// nanoseconds always written.
fn sort_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.%NZ").to_string()
}

/// The sort key of a record in the `by-vm` index.
fn created_at(record: &RequestRecord) -> String {
    format!("{}#{}", sort_time(record.start_time_utc()), record.id())
}

fn next(n: u64, key: &str) -> Result<u64, AdapterError> {
    n.checked_add(1).ok_or_else(|| {
        AdapterError::permanent(
            "CorruptRecord",
            format!("{key}: version {n} cannot be incremented"),
        )
    })
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

fn n(number: u64) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

fn string<'a>(item: &'a Item, name: &str) -> Result<&'a str, String> {
    match item.get(name) {
        Some(AttributeValue::S(text)) => Ok(text),
        Some(_) => Err(format!("attribute {name} is not a string")),
        None => Err(format!("attribute {name} is missing")),
    }
}

fn number(item: &Item, name: &str) -> Result<u64, String> {
    match item.get(name) {
        Some(AttributeValue::N(text)) => text
            .parse()
            .map_err(|_| format!("attribute {name} is {text:?}, not a whole number")),
        Some(_) => Err(format!("attribute {name} is not a number")),
        None => Err(format!("attribute {name} is missing")),
    }
}

fn corrupt(table: &str, key: &str, why: &str) -> AdapterError {
    AdapterError::permanent(
        "CorruptRecord",
        format!("item {key} of table {table} cannot be read: {why}; repair or delete it"),
    )
}

/// The entry of a policies item, with the item's version.
fn policy_entry(table: &str, item: &Item) -> Result<PolicyEntry, AdapterError> {
    let key = string(item, VM).map_err(|why| corrupt(table, "(no key)", &why))?;
    let read = || -> Result<PolicyEntry, String> {
        let version = number(item, VERSION)?;
        let mut entry: PolicyEntry = serde_json::from_str(string(item, ENTRY)?)
            .map_err(|e| format!("attribute {ENTRY}: {e}"))?;
        if entry.policy.vm().to_string() != key {
            return Err(format!(
                "its policy is for another VM, {}",
                entry.policy.vm()
            ));
        }
        entry.policy = entry.policy.with_version(version);
        Ok(entry)
    };
    read().map_err(|why| corrupt(table, key, &why))
}

/// The record of a requests item, with the item's revision.
fn revised_record(table: &str, item: &Item) -> Result<Revised<RequestRecord>, AdapterError> {
    let key = string(item, ID).map_err(|why| corrupt(table, "(no key)", &why))?;
    let read = || -> Result<Revised<RequestRecord>, String> {
        let revision = number(item, REVISION)?;
        let value = serde_json::from_str(string(item, RECORD)?)
            .map_err(|e| format!("attribute {RECORD}: {e}"))?;
        Ok(Revised { value, revision })
    };
    read().map_err(|why| corrupt(table, key, &why))
}

fn attribute(name: &str) -> Result<AttributeDefinition, AdapterError> {
    built(
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build(),
    )
}

fn key(name: &str, key_type: KeyType) -> Result<KeySchemaElement, AdapterError> {
    built(
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build(),
    )
}

fn built<T>(result: Result<T, BuildError>) -> Result<T, AdapterError> {
    result.map_err(|e| AdapterError::permanent("InvalidRequest", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_times_order_as_times() {
        let a: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let b: Timestamp = "2026-11-23T12:00:00.5Z".parse().unwrap();
        let c: Timestamp = "2026-11-23T12:00:01Z".parse().unwrap();
        assert_eq!(sort_time(a), "2026-11-23T12:00:00.000000000Z");
        assert!(sort_time(a) < sort_time(b));
        assert!(sort_time(b) < sort_time(c));
        // A record's key (time#id) is at or after the bare time.
        assert!(format!("{}#r1", sort_time(a)) >= sort_time(a));
        assert!(format!("{}#r1", sort_time(a)) < sort_time(b));
    }

    #[test]
    fn unreadable_items_are_errors() {
        let item: Item = HashMap::from([
            (ID.to_owned(), s("r1")),
            (REVISION.to_owned(), AttributeValue::N("x".into())),
            (RECORD.to_owned(), s("{}")),
        ]);
        let err = revised_record("t", &item).unwrap_err();
        assert!(matches!(err, AdapterError::Permanent { ref code, .. } if code == "CorruptRecord"));
        assert!(err.to_string().contains("r1"), "{err}");
        let item: Item = HashMap::from([
            (VM.to_owned(), s("arn:x")),
            (VERSION.to_owned(), n(1)),
            (ENTRY.to_owned(), s("not json")),
        ]);
        assert!(policy_entry("t", &item).is_err());
        assert!(policy_entry("t", &HashMap::new()).is_err());
    }
}

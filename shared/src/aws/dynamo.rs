//! DynamoDB as the [`PolicyStore`] and the [`RequestStore`].
//!
//! # Tables
//!
//! - policies, keyed by `vm` (the canonical VM id): `version` (N), `entry`
//!   (S, the JSON of the [`PolicyEntry`], whose policy carries the same
//!   version), `updatedAt` and `updatedBy` (S, for people reading the table).
//! - requests, keyed by `id`: `vm`, `createdAt`, `requestor`, `day`,
//!   `status` (S), `pending` (S, only while the status is `PendingApproval`),
//!   `revision` (N) and `record` (S, the JSON of the [`RequestRecord`]).
//!   `createdAt` is the record's `startTimeUtc` in a fixed-width RFC 3339
//!   form ([`sort_time`]: nanoseconds always written, so text order is time
//!   order) followed by `#<id>`, so two requests started in the same second
//!   keep distinct, ordered keys; it is also the [`PageCursor`] of listings.
//!   `day` is the UTC date (`YYYY-MM-DD`) of `startTimeUtc`. Four global
//!   secondary indexes, each with range key `createdAt` and every attribute
//!   projected ([`REQUEST_INDEXES`]), list requests by time: `by-vm` (hash
//!   `vm`), `by-requestor` (hash `requestor`), `by-day` (hash `day`: a
//!   listing of every VM walks it day by day) and `pending` (hash
//!   `pending`, a sparse index: a record leaves it when it is approved or
//!   denied, as the attribute is then no longer written).
//!
//! # Concurrency
//!
//! Every write is conditional: a policy on its `version`, a record on its
//! `revision`. A write that loses a race is a [`AdapterError::Conflict`]
//! whose message says what changed, read from the item DynamoDB returns
//! with the failed condition (`ReturnValuesOnConditionCheckFailure=ALL_OLD`),
//! or from a consistent read when it returned none. Reads of one item are
//! strongly consistent; listings read the indexes, which are eventually
//! consistent, as every global secondary index is.
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
    StreamSpecification, StreamViewType, TableStatus,
};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::sdk_error;
use crate::domain::{RequestId, RequestRecord, RequestStatus, VmId};
use crate::ports::{
    AdapterError, PageCursor, PolicyEntry, PolicyStore, RequestPage, RequestQuery, RequestStore,
    Revised, sort_time,
};

/// The index of the requests table that lists a VM's requests by time.
pub const REQUESTS_BY_VM: &str = "by-vm";
/// The index of the requests table that lists a requestor's requests by time.
pub const REQUESTS_BY_REQUESTOR: &str = "by-requestor";
/// The index of the requests table that lists one UTC day's requests by time.
pub const REQUESTS_BY_DAY: &str = "by-day";
/// The sparse index of the requests table that holds only the requests
/// waiting for an approver, by time.
pub const REQUESTS_PENDING: &str = "pending";

/// Every global secondary index of the requests table, as (name, hash key
/// attribute); each has the range key [`REQUESTS_RANGE_KEY`] and projects
/// every attribute.
pub const REQUEST_INDEXES: [(&str, &str); 4] = [
    (REQUESTS_BY_VM, VM),
    (REQUESTS_BY_REQUESTOR, REQUESTOR),
    (REQUESTS_BY_DAY, DAY),
    (REQUESTS_PENDING, PENDING),
];

/// The range key of every index of the requests table.
pub const REQUESTS_RANGE_KEY: &str = CREATED_AT;

/// The widest span, in days, a listing of every VM (the `by-day` index, one
/// query per day) may walk.
pub const MAX_LISTING_DAYS: i64 = 400;

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
const DAY: &str = "day";
const PENDING: &str = "pending";
const STATUS: &str = "status";
const REVISION: &str = "revision";
/// The attribute of a requests item that holds the record, as JSON (also
/// in the table's stream images).
pub const RECORD: &str = "record";

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
    /// are kept; a requests table without one of the [`REQUEST_INDEXES`] is
    /// an error (`MissingIndex`), since the listings need them.
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

        let mut create = self
            .client
            .create_table()
            .table_name(requests)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute(ID)?)
            .attribute_definitions(attribute(CREATED_AT)?)
            .key_schema(key(ID, KeyType::Hash)?)
            // The notify function reads every change from the stream.
            .stream_specification(built(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build(),
            )?);
        for (name, hash) in REQUEST_INDEXES {
            let index = GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(hash, KeyType::Hash)?)
                .key_schema(key(CREATED_AT, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build();
            create = create
                .attribute_definitions(attribute(hash)?)
                .global_secondary_indexes(built(index)?);
        }
        let created = create.send().await;
        self.created_or_exists(requests, created).await?;

        self.wait_active(policies, &[]).await?;
        self.wait_active(requests, &REQUEST_INDEXES).await
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

    /// Waits until `table` and its `indexes` (name, hash key) are active.
    /// An index that is missing, or keyed otherwise, is a `MissingIndex`
    /// error naming every such index and the shape it must have.
    async fn wait_active(&self, table: &str, indexes: &[(&str, &str)]) -> Result<(), AdapterError> {
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
            let found = description
                .map(|t| t.global_secondary_indexes())
                .unwrap_or_default();
            let mut wrong = Vec::new();
            let mut indexes_active = true;
            for &(name, hash) in indexes {
                let wanted = format!(
                    "{name} (hash key {hash}, range key {CREATED_AT}, all attributes projected)"
                );
                let Some(index) = found.iter().find(|i| i.index_name() == Some(name)) else {
                    wrong.push(wanted);
                    continue;
                };
                let keys: Vec<(&str, &str)> = index
                    .key_schema()
                    .iter()
                    .map(|k| (k.attribute_name(), k.key_type().as_str()))
                    .collect();
                if keys != [(hash, "HASH"), (CREATED_AT, "RANGE")] {
                    wrong.push(format!("{wanted}, not keyed {keys:?}"));
                    continue;
                }
                // An index reported without a status is taken as ready.
                indexes_active &= index.index_status().is_none_or(|s| s.as_str() == "ACTIVE");
            }
            if !wrong.is_empty() {
                return Err(AdapterError::permanent(
                    "MissingIndex",
                    format!(
                        "table {table} lacks the global secondary index{} {}; it was made by an \
                         older jitvm or by another program: add the index (one UpdateTable call \
                         each) or point JITVM_REQUESTS_TABLE at another table",
                        if wrong.len() > 1 { "es" } else { "" },
                        wrong.join(", ")
                    ),
                ));
            }
            if table_active && indexes_active {
                return Ok(());
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
        let status = format!("{:?}", record.status());
        let mut item = HashMap::from([
            (ID.to_owned(), s(record.id().as_str())),
            (VM.to_owned(), s(&record.vm().to_string())),
            (CREATED_AT.to_owned(), s(&created_at(record))),
            (REQUESTOR.to_owned(), s(record.requestor().as_str())),
            (DAY.to_owned(), s(&day(record.start_time_utc()))),
            (STATUS.to_owned(), s(&status)),
            (REVISION.to_owned(), n(revision)),
            (RECORD.to_owned(), AttributeValue::S(json)),
        ]);
        // Only while pending: the `pending` index is sparse, so an approved
        // or denied record (a put replaces the whole item) leaves it.
        if record.status() == RequestStatus::PendingApproval {
            item.insert(PENDING.to_owned(), s(&status));
        }
        Ok(item)
    }

    /// Appends to `out` the records of one partition of `range.index` that
    /// `keep` accepts, following every `LastEvaluatedKey`, until `out`
    /// holds `want` records or the partition is read.
    async fn read_range(
        &self,
        range: &Range<'_>,
        want: usize,
        keep: &(dyn Fn(&RequestRecord) -> bool + Sync),
        out: &mut Vec<RequestRecord>,
    ) -> Result<(), AdapterError> {
        let table = &self.tables.requests;
        let mut names = HashMap::from([("#h".to_owned(), range.hash_attr.to_owned())]);
        let mut values = HashMap::from([(":h".to_owned(), s(range.hash))]);
        let condition = match (range.from, range.to) {
            (None, None) => "#h = :h",
            (Some(from), None) => {
                values.insert(":from".to_owned(), s(from));
                "#h = :h AND #c >= :from"
            }
            (None, Some(to)) => {
                values.insert(":to".to_owned(), s(to));
                "#h = :h AND #c <= :to"
            }
            // BETWEEN refuses a lower bound above the upper one; nothing
            // lies between them anyway.
            (Some(from), Some(to)) if from > to => return Ok(()),
            (Some(from), Some(to)) => {
                values.insert(":from".to_owned(), s(from));
                values.insert(":to".to_owned(), s(to));
                "#h = :h AND #c BETWEEN :from AND :to"
            }
        };
        if range.from.is_some() || range.to.is_some() {
            names.insert("#c".to_owned(), CREATED_AT.to_owned());
        }
        let mut start: Option<Item> = None;
        while out.len() < want {
            // Ask for what is still wanted; a filtered listing reads more per
            // page, since some of what it reads is dropped.
            let page = (want - out.len()).max(if range.filtered { FILTERED_PAGE } else { 1 });
            let result = self
                .client
                .query()
                .table_name(table)
                .index_name(range.index)
                .key_condition_expression(condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(!range.newest_first)
                .limit(i32::try_from(page).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| {
                    sdk_error(
                        &format!(
                            "listing requests (index {} of {table}, {} {})",
                            range.index, range.hash_attr, range.hash
                        ),
                        e,
                    )
                })?;
            for item in result.items() {
                if out.len() == want {
                    return Ok(());
                }
                let record = revised_record(table, item)?.value;
                if keep(&record) {
                    out.push(record);
                }
            }
            match result.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(())
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

    /// Reads `by-vm` when a VM is given (keeping only the requestor's
    /// records when one is given too), `by-requestor` when only a requestor
    /// is, and otherwise `by-day`, one query per UTC day from the upper
    /// bound's day (`until`, the cursor, or else tomorrow by this clock, as
    /// a record starts when it is accepted) down to `since`'s, at most
    /// [`MAX_LISTING_DAYS`] days. `next` is set only when a record past the
    /// page was seen, so it never leads to an empty page.
    async fn query_requests(&self, query: &RequestQuery) -> Result<RequestPage, AdapterError> {
        if query.limit == 0 {
            return Err(invalid_query(
                "limit must be 1 or more: a listing returns at least one record per page",
            ));
        }
        let since = query.since.map(sort_time);
        let until = query.until.map(sort_time);
        let cursor = query.after.as_ref().map(PageCursor::as_str);
        // Items are `time#id`: a bare `until` is below every item started
        // at `until` and above every item started before it, so `<=` on it
        // is `<` on the time. The cursor's own item is dropped below.
        let to = match (until.as_deref(), cursor) {
            (Some(u), Some(c)) => Some(u.min(c)),
            (u, c) => u.or(c),
        };
        let range = Range {
            index: REQUESTS_BY_VM,
            hash_attr: VM,
            hash: "",
            from: since.as_deref(),
            to,
            newest_first: true,
            filtered: false,
        };
        let keep = |r: &RequestRecord| {
            cursor.is_none_or(|c| created_at(r) != c)
                && query.requestor.as_ref().is_none_or(|p| r.requestor() == p)
        };
        // One past the page: seeing it is knowing that more follow.
        let want = query.limit.saturating_add(1);
        let mut records = Vec::new();
        match (&query.vm, &query.requestor) {
            (Some(vm), requestor) => {
                let range = Range {
                    hash: &vm.to_string(),
                    filtered: requestor.is_some(),
                    ..range
                };
                self.read_range(&range, want, &keep, &mut records).await?;
            }
            (None, Some(requestor)) => {
                let range = Range {
                    index: REQUESTS_BY_REQUESTOR,
                    hash_attr: REQUESTOR,
                    hash: requestor.as_str(),
                    ..range
                };
                self.read_range(&range, want, &keep, &mut records).await?;
            }
            (None, None) => {
                let Some(since_time) = query.since else {
                    return Err(invalid_query(
                        "a listing of every VM needs `since` (it is read day by day); \
                         or list one VM's or one requestor's requests",
                    ));
                };
                let cursor_time = cursor.map(cursor_time).transpose()?;
                let upper = match (query.until, cursor_time) {
                    (Some(u), Some(c)) => u.min(c),
                    (u, c) => u.or(c).unwrap_or_else(|| {
                        Timestamp::now()
                            .checked_add(SignedDuration::from_hours(24))
                            .unwrap_or(Timestamp::MAX)
                    }),
                };
                let first = utc_date(since_time);
                let mut date = utc_date(upper);
                let span = first
                    .until(date)
                    .map_or(i64::MAX, |span| i64::from(span.get_days()));
                if span >= MAX_LISTING_DAYS {
                    return Err(invalid_query(format!(
                        "a listing of every VM spans at most {MAX_LISTING_DAYS} days, and \
                         {since_time} to {upper} is {} days; narrow `since` and `until`",
                        span.saturating_add(1)
                    )));
                }
                while date >= first && records.len() < want {
                    let range = Range {
                        index: REQUESTS_BY_DAY,
                        hash_attr: DAY,
                        hash: &date.strftime("%Y-%m-%d").to_string(),
                        ..range
                    };
                    self.read_range(&range, want, &keep, &mut records).await?;
                    match date.yesterday() {
                        Ok(d) => date = d,
                        Err(_) => break,
                    }
                }
            }
        }
        let next = if records.len() > query.limit {
            records.truncate(query.limit);
            records.last().map(PageCursor::after)
        } else {
            None
        };
        Ok(RequestPage { records, next })
    }

    async fn pending_requests(
        &self,
        started_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, AdapterError> {
        let before = sort_time(started_before);
        let status = format!("{:?}", RequestStatus::PendingApproval);
        let range = Range {
            index: REQUESTS_PENDING,
            hash_attr: PENDING,
            hash: &status,
            from: None,
            // `<=` on a bare time is `<` on the items' times (`time#id`).
            to: Some(&before),
            newest_first: false,
            filtered: false,
        };
        let mut records = Vec::new();
        self.read_range(&range, limit, &|_| true, &mut records)
            .await?;
        Ok(records)
    }
}

/// One partition of an index of the requests table, between two sort keys.
#[derive(Clone, Copy)]
struct Range<'a> {
    index: &'static str,
    hash_attr: &'static str,
    hash: &'a str,
    /// `createdAt` at or after this.
    from: Option<&'a str>,
    /// `createdAt` at or before this.
    to: Option<&'a str>,
    newest_first: bool,
    /// Whether records are dropped in code (so pages are read larger).
    filtered: bool,
}

/// The page size of a listing that drops records in code.
const FILTERED_PAGE: usize = 100;

fn invalid_query(message: impl Into<String>) -> AdapterError {
    AdapterError::permanent("InvalidQuery", message)
}

/// The time of a cursor (`time#id`).
fn cursor_time(cursor: &str) -> Result<Timestamp, AdapterError> {
    cursor
        .split_once('#')
        .and_then(|(time, _)| time.parse().ok())
        .ok_or_else(|| invalid_query(format!("{cursor:?} is not a listing position")))
}

fn utc_date(t: Timestamp) -> jiff::civil::Date {
    t.to_zoned(TimeZone::UTC).date()
}

/// The `day` of a record started at `t`: its UTC date, `YYYY-MM-DD`.
fn day(t: Timestamp) -> String {
    utc_date(t).strftime("%Y-%m-%d").to_string()
}

/// The sort key of a record in every index: its [`PageCursor`].
fn created_at(record: &RequestRecord) -> String {
    PageCursor::after(record).as_str().to_owned()
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

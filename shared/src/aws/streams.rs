//! The requests table's change stream, read as Lambda's event source
//! mapping reads it on AWS: for the local host, which has no event source
//! mapping. Each shard is read from its start, in order.

use aws_config::SdkConfig;
use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};

use super::dynamo::RECORD;
use super::sdk_error;
use crate::domain::RequestRecord;
use crate::notify::RecordChange;
use crate::ports::AdapterError;

/// A reader of one table's stream.
pub struct ChangeStream {
    client: Client,
    arn: String,
    /// Each shard seen, with where to read it next (`None` once it is
    /// closed and read to its end).
    shards: Vec<(String, Option<String>)>,
}

impl ChangeStream {
    /// The stream of `table`, which must have one (the local stack makes
    /// its requests table with one).
    pub async fn open(config: &SdkConfig, table: &str) -> Result<Self, AdapterError> {
        let described = aws_sdk_dynamodb::Client::new(config)
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("describing table {table}"), e))?;
        let arn = described
            .table()
            .and_then(|t| t.latest_stream_arn())
            .ok_or_else(|| {
                AdapterError::permanent(
                    "NoStream",
                    format!("table {table} has no stream; enable NEW_AND_OLD_IMAGES on it"),
                )
            })?
            .to_owned();
        let mut stream = Self {
            client: Client::new(config),
            arn,
            shards: Vec::new(),
        };
        stream.discover().await?;
        Ok(stream)
    }

    /// Adds the shards not seen yet, read from their start.
    async fn discover(&mut self) -> Result<(), AdapterError> {
        let described = self
            .client
            .describe_stream()
            .stream_arn(&self.arn)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("describing stream {}", self.arn), e))?;
        let shards = described
            .stream_description()
            .map(|d| d.shards().to_vec())
            .unwrap_or_default();
        for shard in shards {
            let Some(id) = shard.shard_id() else { continue };
            if self.shards.iter().any(|(seen, _)| seen == id) {
                continue;
            }
            let iterator = self
                .client
                .get_shard_iterator()
                .stream_arn(&self.arn)
                .shard_id(id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("reading shard {id}"), e))?;
            self.shards
                .push((id.to_owned(), iterator.shard_iterator().map(str::to_owned)));
        }
        Ok(())
    }

    /// The changes written since the last call, oldest first per shard.
    pub async fn next(&mut self) -> Result<Vec<RecordChange>, AdapterError> {
        let mut out = Vec::new();
        let mut closed = false;
        for (id, iterator) in &mut self.shards {
            let Some(at) = iterator.clone() else { continue };
            let page = self
                .client
                .get_records()
                .shard_iterator(at)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("reading shard {id}"), e))?;
            for record in page.records() {
                let Some(change) = record.dynamodb() else {
                    continue;
                };
                out.push(RecordChange {
                    before: change.old_image().and_then(|i| decode(i.get(RECORD))),
                    after: change.new_image().and_then(|i| decode(i.get(RECORD))),
                });
            }
            *iterator = page.next_shard_iterator().map(str::to_owned);
            closed |= iterator.is_none();
        }
        if closed {
            self.discover().await?;
        }
        Ok(out)
    }
}

fn decode(value: Option<&AttributeValue>) -> Option<RequestRecord> {
    let Some(AttributeValue::S(json)) = value else {
        return None;
    };
    serde_json::from_str(json)
        .inspect_err(|e| tracing::error!(error = %e, "a changed request record did not read back; its notices are skipped"))
        .ok()
}

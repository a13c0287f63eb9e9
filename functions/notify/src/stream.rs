//! The requests table's stream, as Lambda hands it over: each record's
//! old and new image, of which jitvm reads the `record` attribute.

use jitvm_core::RequestRecord;
use jitvm_core::aws::dynamo::RECORD;
use jitvm_core::notify::RecordChange;
use serde_json::Value;

/// The writes in a DynamoDB stream event (`{"Records": [...]}`), in order.
/// An image that does not read as a request record is logged and left
/// out: retrying cannot make it readable.
pub fn changes_of(event: &Value) -> Vec<RecordChange> {
    let records = event["Records"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    records
        .iter()
        .map(|r| RecordChange {
            before: image(&r["dynamodb"]["OldImage"]),
            after: image(&r["dynamodb"]["NewImage"]),
        })
        .collect()
}

/// Whether `event` is a batch from a DynamoDB stream.
pub fn is_stream(event: &Value) -> bool {
    event["Records"]
        .as_array()
        .and_then(|r| r.first())
        .is_some_and(|r| r["eventSource"] == "aws:dynamodb")
}

fn image(image: &Value) -> Option<RequestRecord> {
    let json = image[RECORD]["S"].as_str()?;
    serde_json::from_str(json)
        .inspect_err(|e| tracing::error!(error = %e, "a changed request record did not read back; its notices are skipped"))
        .ok()
}

//! Read-modify-write of request records with the store's optimistic
//! concurrency: a change is applied to the latest revision, and re-applied
//! if another writer came first. The domain's transitions make a repeated
//! change a no-op and refuse a backward one, so redelivered messages and
//! races cannot move a record backwards.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::domain::{Port, RequestId, RequestRecord, StatusReason};
use crate::ports::{AdapterError, FoundRule, RequestStore};

/// How many times a change is re-applied after losing a race.
const ATTEMPTS: usize = 8;

/// Applies `change` to the record `id` and stores it. `change` returns
/// whether it changed anything; nothing is written when it did not. Returns
/// the stored record, or `None` when there is no such record.
pub async fn update<F>(
    store: &dyn RequestStore,
    id: &RequestId,
    mut change: F,
) -> Result<Option<RequestRecord>, AdapterError>
where
    F: FnMut(&mut RequestRecord) -> bool + Send,
{
    for _ in 0..ATTEMPTS {
        let Some(current) = store.get_request(id).await? else {
            return Ok(None);
        };
        let mut record = current.value;
        if !change(&mut record) {
            return Ok(Some(record));
        }
        match store.update_request(&record, current.revision).await {
            Ok(_) => return Ok(Some(record)),
            Err(AdapterError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(AdapterError::Transient {
        message: format!("request {id} kept changing under {ATTEMPTS} attempts to update it"),
        source: None,
    })
}

/// The closed grant rules of `rules`, by request: the ports each closed
/// (`None` when a rule's port is unknown). Rules that did not decode were
/// drift, with no record.
pub fn closed_ports<'a>(
    rules: impl IntoIterator<Item = &'a FoundRule>,
) -> BTreeMap<RequestId, Vec<Option<Port>>> {
    let mut by_request: BTreeMap<RequestId, Vec<Option<Port>>> = BTreeMap::new();
    for rule in rules {
        if let Ok(meta) = &rule.decoded {
            by_request
                .entry(meta.request_id.clone())
                .or_default()
                .push(rule.port);
        }
    }
    by_request
}

/// Marks the ports of request `id` whose rules were closed as `Revoked` for
/// `reason`; a `None` port stands for all of them.
pub async fn mark_closed(
    store: &dyn RequestStore,
    id: &RequestId,
    ports: &[Option<Port>],
    reason: StatusReason,
    message: Option<&str>,
    now: Timestamp,
) -> Result<Option<RequestRecord>, AdapterError> {
    update(store, id, |record| {
        record.revoke_ports(
            |n| ports.iter().any(|p| p.is_none_or(|p| p == n)),
            reason,
            message,
            now,
        )
    })
    .await
}

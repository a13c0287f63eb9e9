//! Read-modify-write of request records with the store's optimistic
//! concurrency: a change is applied to the latest revision, and re-applied
//! if another writer came first. The domain's transitions make a repeated
//! change a no-op and refuse a backward one, so redelivered messages and
//! races cannot move a record backwards.

use crate::domain::{RequestId, RequestRecord};
use crate::ports::{AdapterError, RequestStore};

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

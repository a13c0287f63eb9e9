//! `GET /v1/audit.csv?since=&until=[&vm=]`: every state change in a time
//! window, one CSV line each, for admins and auditors.
//!
//! The lines come from the request records' histories. A record is listed
//! by the time it started, and its later changes (approved, opened,
//! expired, revoked) can come up to the approval timeout plus the longest
//! grant (24 hours) after that, so the export reads the records that
//! started that much before `since` and keeps the changes inside the window.

use http::{HeaderValue, Response, StatusCode, header};
use jiff::{SignedDuration, Timestamp};
use jitvm_core::api::{ApiError, Caller, parse_vm, query_param};
use jitvm_core::ports::{RequestQuery, RequestStore};
use jitvm_core::{AuditRow, VmId, audit_rows, earliest_live_start};

use crate::{RequestApi, time_param};

/// The window when `since` is not given: the last 7 days.
pub const DEFAULT_WINDOW: SignedDuration = SignedDuration::from_hours(24 * 7);
/// The longest window one export covers.
pub const MAX_WINDOW: SignedDuration = SignedDuration::from_hours(24 * 366);
/// The most lines one export returns; a larger export is refused with a
/// message to narrow the window, never cut short silently. About 6 MB of
/// CSV, Lambda's response limit, holds this many with room to spare.
pub const MAX_ROWS: usize = 20_000;

pub async fn export(
    api: &RequestApi<'_>,
    caller: &Caller,
    query: Option<&str>,
    now: Timestamp,
) -> Result<Response<String>, ApiError> {
    if !api.sees_everything(caller) {
        return Err(ApiError::forbidden(
            "the audit export is for admins and auditors (JITVM_ADMINS, JITVM_AUDITORS)",
        ));
    }
    let until = time_param(query, "until")?.unwrap_or(now);
    let since = time_param(query, "since")?
        .unwrap_or_else(|| until.checked_sub(DEFAULT_WINDOW).unwrap_or(until));
    if since >= until {
        return Err(ApiError::new(
            400,
            "InvalidTime",
            format!("since {since} must be before until {until}"),
        ));
    }
    if until.duration_since(since) > MAX_WINDOW {
        return Err(ApiError::new(
            400,
            "WindowTooLong",
            "one export covers at most 366 days; export a year at a time",
        ));
    }
    let vm = query_param(query, "vm").map(|v| parse_vm(&v)).transpose()?;
    let first_start = earliest_live_start(since, api.approval_timeout);
    let rows = rows_between(api.requests, vm, first_start, since, until).await?;
    let mut response = Response::new(jitvm_core::audit::to_csv(&rows));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    let name = format!(
        "attachment; filename=\"jitvm-audit-{}-{}.csv\"",
        since.strftime("%Y%m%dT%H%M%SZ"),
        until.strftime("%Y%m%dT%H%M%SZ")
    );
    if let Ok(value) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// The state changes in `[since, until)` of the records that started in
/// `[first_start, until)`, oldest first.
async fn rows_between(
    store: &dyn RequestStore,
    vm: Option<VmId>,
    first_start: Timestamp,
    since: Timestamp,
    until: Timestamp,
) -> Result<Vec<AuditRow>, ApiError> {
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .query_requests(&RequestQuery {
                vm: vm.clone(),
                requestor: None,
                since: Some(first_start),
                until: Some(until),
                after: after.take(),
                limit: 500,
            })
            .await?;
        for record in &page.records {
            rows.extend(
                audit_rows(record)
                    .into_iter()
                    .filter(|r| r.time >= since && r.time < until),
            );
        }
        if rows.len() > MAX_ROWS {
            return Err(ApiError::new(
                422,
                "TooManyRows",
                format!(
                    "more than {MAX_ROWS} state changes fall between {since} and {until}; export a shorter window (since/until)"
                ),
            ));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    // Stable, so one request's changes at the same instant keep the order
    // its history has.
    rows.sort_by(|a, b| (a.time, a.request_id.as_str()).cmp(&(b.time, b.request_id.as_str())));
    Ok(rows)
}

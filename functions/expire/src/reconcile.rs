//! Records follow the cloud. After a scope's expired rules are closed, the
//! sweep holds the records that may still disagree with the firewall (a
//! port not final, or final with its end still to come) against the rules
//! it found:
//!
//! - a port `Initiated` whose rule is gone becomes `Revoked`: `Expired`
//!   when its end passed, otherwise `RuleRemoved` (its rule was taken off
//!   outside jitvm, or its closing was never recorded). A rule opened after
//!   the listing cannot be taken for gone: the VM's rules are read again,
//!   after the records, before a port is marked, and a port opened less
//!   than [`SETTLE`] ago is left for the next sweep (EC2 lists a new rule
//!   only eventually);
//! - a port still `Initiating` when its end passed, or longer than
//!   [`STUCK_AFTER`] after its request was approved, becomes `Failed` (its
//!   message was lost, or keeps failing); a grant function that opens it
//!   after all finds the port final and closes the rule;
//! - a rule of a port that is final (`Revoked`, `Failed`) is closed: the
//!   record says it must not be open.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use jitvm_core::ports::{AdapterError, FoundRule, RequestQuery, RuleKey, Scope};
use jitvm_core::rule::rfc3339;
use jitvm_core::{
    Port, PortStatus, RequestId, RequestRecord, RequestStatus, StatusReason, Transition, VmId,
    earliest_live_start, records,
};

use crate::ExpireApp;
use crate::close::audit_rule_closed;

/// How long after its request was approved a port may stay `Initiating`:
/// past the request queue's five deliveries, six minutes apart, with room.
pub const STUCK_AFTER: SignedDuration = SignedDuration::from_mins(45);

/// How long after it opened a port's rule must have been readable before
/// its absence counts: EC2 lists a rule just written only eventually.
pub const SETTLE: SignedDuration = SignedDuration::from_mins(2);

/// The most records one sweep holds against the cloud; the rest wait for
/// the next sweep.
pub const MAX_LIVE_RECORDS: usize = 2000;

/// Records per page read.
const PAGE: usize = 200;

/// What bringing one scope's records in line did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Live records of the scope held against its rules.
    pub records_checked: usize,
    /// Records whose ports were moved to match the cloud.
    pub records_updated: usize,
    /// Rules closed because their port's record is final.
    pub rules_closed: usize,
    /// Records that could not be written this time; the next sweep finds
    /// them again, and the log has them.
    pub record_errors: usize,
}

/// The approved requests whose ports may still disagree with the cloud:
/// a port not final, or final with its end still to come, newest first.
pub async fn live_records(
    app: &ExpireApp<'_>,
    now: Timestamp,
) -> Result<Vec<RequestRecord>, AdapterError> {
    let mut query = RequestQuery {
        vm: None,
        requestor: None,
        since: Some(earliest_live_start(now, app.approval_timeout)),
        until: None,
        after: None,
        limit: PAGE,
    };
    let mut live = Vec::new();
    loop {
        let page = app.requests.query_requests(&query).await?;
        live.extend(page.records.into_iter().filter(|r| {
            r.status() == RequestStatus::Approved
                && r.ports()
                    .iter()
                    .any(|p| !p.status.is_final() || p.end_time_utc > now)
        }));
        match page.next {
            Some(next) if live.len() < MAX_LIVE_RECORDS => query.after = Some(next),
            _ => return Ok(live),
        }
    }
}

/// What one port of a record needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fix {
    /// `Initiated` with no rule: if a fresh read agrees, `Revoked`.
    Gone(Port),
    /// Never opened in time: `Failed` for this reason.
    Stuck(Port, StatusReason, String),
    /// Final with a rule still open: close the rule.
    Close(Port),
}

/// Brings the records of `scope`'s VMs in line with the grant rules the
/// sweep found there (`seen`, the expired ones it closed among them) and
/// those it left open (`present`).
pub async fn reconcile(
    app: &ExpireApp<'_>,
    scope: &Scope,
    seen: &[&FoundRule],
    present: &[&FoundRule],
    live: &[RequestRecord],
    now: Timestamp,
) -> Result<Reconciled, AdapterError> {
    let grants = |rules: &[&'_ FoundRule]| -> BTreeSet<(RequestId, Port)> {
        rules
            .iter()
            .filter_map(|r| Some((r.decoded.as_ref().ok()?.request_id.clone(), r.port?)))
            .collect()
    };
    let (seen, open) = (grants(seen), grants(present));
    let stuck_before = now.checked_sub(STUCK_AFTER).unwrap_or(now);
    let mut done = Reconciled::default();
    let mut to_close: Vec<RuleKey> = Vec::new();
    let mut fresh: BTreeMap<VmId, BTreeSet<(RequestId, Port)>> = BTreeMap::new();
    for record in live
        .iter()
        .filter(|r| app.firewall.scope_of(r.vm()).as_ref() == Some(scope))
    {
        done.records_checked += 1;
        let fixes = fixes(record, &seen, &open, stuck_before, now);
        if fixes.is_empty() {
            continue;
        }
        let still_open = match fixes.iter().any(|f| matches!(f, Fix::Gone(_))) {
            true => match open_now(app, record.vm(), &mut fresh).await {
                Ok(open) => Some(open),
                Err(e) => {
                    // This VM's firewall could not be read: its record
                    // waits for the next sweep; the others go on.
                    done.record_errors += 1;
                    tracing::warn!(request_id = %record.id(), error = %e, "cannot read the VM's rules to confirm one is gone");
                    continue;
                }
            },
            false => None,
        };
        let stored = match apply(app, record, &fixes, still_open, now).await {
            Ok((stored, changed)) => {
                done.records_updated += usize::from(changed);
                stored
            }
            Err(e) => {
                done.record_errors += 1;
                tracing::error!(request_id = %record.id(), error = %e, "could not bring the record in line with the cloud");
                continue;
            }
        };
        for fix in &fixes {
            // A port is closed only once its record says so as stored
            // (a stuck port the grant function opened meanwhile stays).
            let (Fix::Close(port) | Fix::Stuck(port, ..)) = fix else {
                continue;
            };
            let closed = stored
                .as_ref()
                .and_then(|r| r.port(*port))
                .is_some_and(|p| p.status.is_final());
            if closed {
                to_close.extend(rules_of_port(present, record.id(), *port));
            }
        }
    }
    if !to_close.is_empty() {
        done.rules_closed = app.firewall.revoke(&to_close).await?;
        audit_closed(present, &to_close);
    }
    Ok(done)
}

/// What `record`'s ports need, held against the rules `seen` (those the
/// sweep just closed among them) and those still `open`.
fn fixes(
    record: &RequestRecord,
    seen: &BTreeSet<(RequestId, Port)>,
    open: &BTreeSet<(RequestId, Port)>,
    stuck_before: Timestamp,
    now: Timestamp,
) -> Vec<Fix> {
    let approved = approved_at(record);
    let settled_before = now.checked_sub(SETTLE).unwrap_or(now);
    record
        .ports()
        .iter()
        .filter_map(|p| {
            let key = (record.id().clone(), p.number);
            let has_rule = open.contains(&key);
            match p.status {
                PortStatus::Initiated
                    if !seen.contains(&key) && opened_at(record, p.number) < settled_before =>
                {
                    Some(Fix::Gone(p.number))
                }
                PortStatus::Initiating if p.end_time_utc <= now => Some(Fix::Stuck(
                    p.number,
                    StatusReason::Expired,
                    format!(
                        "its end time {} passed before its rule could open",
                        rfc3339(p.end_time_utc)
                    ),
                )),
                PortStatus::Initiating if approved < stuck_before => Some(Fix::Stuck(
                    p.number,
                    StatusReason::Error,
                    format!(
                        "its rule did not open within {} of the approval: the request message \
                         was lost or kept failing (see the request dead-letter queue); ask again",
                        jitvm_core::duration::iso(STUCK_AFTER)
                    ),
                )),
                PortStatus::Revoked | PortStatus::Failed if has_rule => Some(Fix::Close(p.number)),
                _ => None,
            }
        })
        .collect()
}

/// When port `port` was recorded `Initiated`.
fn opened_at(record: &RequestRecord, port: Port) -> Timestamp {
    last_change(record, Some(port), "Initiated")
}

/// When the request was approved (by a person, or at once on acceptance).
fn approved_at(record: &RequestRecord) -> Timestamp {
    last_change(record, None, "Approved")
}

/// When `record` last moved `port` (the request itself for `None`) to
/// `status`; its start when its history does not say.
fn last_change(record: &RequestRecord, port: Option<Port>, status: &str) -> Timestamp {
    record
        .history()
        .iter()
        .rev()
        .find(|c| c.port == port && c.status == status)
        .map_or(record.start_time_utc(), |c| c.at)
}

/// The grant rules of `vm` read now, after the records were: a port that
/// opened after the sweep listed its scope is found here.
async fn open_now<'a>(
    app: &ExpireApp<'_>,
    vm: &VmId,
    fresh: &'a mut BTreeMap<VmId, BTreeSet<(RequestId, Port)>>,
) -> Result<&'a BTreeSet<(RequestId, Port)>, AdapterError> {
    if !fresh.contains_key(vm) {
        let rules = match app.firewall.rules_of(vm).await {
            Ok(rules) => rules,
            // JIT was disabled meanwhile: nothing of it is open.
            Err(AdapterError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        let open = rules
            .iter()
            .filter_map(|r| Some((r.decoded.as_ref().ok()?.request_id.clone(), r.port?)))
            .collect();
        fresh.insert(vm.clone(), open);
    }
    Ok(&fresh[vm])
}

/// Writes the record's fixes; a `Gone` port is marked only if `still_open`
/// (read after the records) agrees. Returns the record as stored (`None`
/// when it is gone) and whether this changed it.
async fn apply(
    app: &ExpireApp<'_>,
    record: &RequestRecord,
    fixes: &[Fix],
    still_open: Option<&BTreeSet<(RequestId, Port)>>,
    now: Timestamp,
) -> Result<(Option<RequestRecord>, bool), AdapterError> {
    let id = record.id();
    let gone = |port: Port| still_open.is_some_and(|o| !o.contains(&(id.clone(), port)));
    let mut changed = false;
    let stored = records::update(app.requests, id, |r| {
        let mut any = false;
        for fix in fixes {
            let moved = match fix {
                Fix::Gone(port) if gone(*port) => {
                    let (reason, message) = gone_because(r, *port, now);
                    r.set_port(*port, PortStatus::Revoked, reason, Some(message), now)
                }
                Fix::Stuck(port, reason, message) => {
                    r.fail_port(*port, *reason, None, message.clone(), now)
                }
                _ => continue,
            };
            any |= moved.is_ok_and(|t| t == Transition::Changed);
        }
        changed = any;
        any
    })
    .await?;
    Ok((stored, changed))
}

/// Why port `port` of `record` has no rule: its end passed, or it was
/// removed before its end.
fn gone_because(record: &RequestRecord, port: Port, now: Timestamp) -> (StatusReason, String) {
    let end = record.port(port).map(|p| p.end_time_utc);
    match end {
        Some(end) if end <= now => (
            StatusReason::Expired,
            format!(
                "end time {} passed; the sweep found its rule gone",
                rfc3339(end)
            ),
        ),
        _ => (
            StatusReason::RuleRemoved,
            format!(
                "its rule was no longer on the VM's firewall before its end time{}: removed \
                 outside jitvm, or its closing was not recorded",
                end.map(|e| format!(" {}", rfc3339(e))).unwrap_or_default()
            ),
        ),
    }
}

fn rules_of_port(present: &[&FoundRule], id: &RequestId, port: Port) -> Vec<RuleKey> {
    present
        .iter()
        .filter(|r| r.port == Some(port))
        .filter(|r| r.decoded.as_ref().is_ok_and(|m| &m.request_id == id))
        .map(|r| r.key.clone())
        .collect()
}

fn audit_closed(present: &[&FoundRule], closed: &[RuleKey]) {
    for rule in present.iter().filter(|r| closed.contains(&r.key)) {
        let Ok(meta) = &rule.decoded else { continue };
        let why = "its record says the port is closed, so its rule was removed";
        audit_rule_closed("grant.closed", rule, meta, None, why);
    }
}

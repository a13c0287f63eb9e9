//! The policy function: create, replace, read and delete a VM's JIT policy,
//! and list VMs as Configured / NotConfigured / Unsupported.
//!
//! - `PUT /v1/policies/{vm}` (admins): validates the policy, prepares the VM
//!   (dedicated security group or NSG deny rules), reports exposures, and
//!   stores it with a conditional write (`If-Match: <version>` to guard
//!   against another admin's change; 412 when it does not match).
//! - `GET /v1/policies/{vm}` (anyone authenticated).
//! - `DELETE /v1/policies/{vm}` (admins): closes open grants, undoes what
//!   enabling did, and deletes the policy.
//! - `GET /v1/vms` (anyone authenticated): what Defender's JIT page shows.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use jiff::{SignedDuration, Timestamp};
use jitvm_core::api::{
    ApiError, Caller, check_body, json_response, method_not_allowed, no_content, no_route,
    segments, vm_in_path,
};
use jitvm_core::notify::ChannelNames;
use jitvm_core::ports::{Firewall, PolicyEntry, PolicyStore, RequestStore};
use jitvm_core::telemetry::Audit;
use jitvm_core::{
    Policy, PolicyDocument, PortStatus, PrincipalPattern, RequestStatus, SessionTrust,
    StatusReason, VmId, records,
};
use serde_json::{Value, json};

/// What the policy function needs, and only that.
pub struct PolicyApi<'a> {
    pub firewall: &'a dyn Firewall,
    pub policies: &'a dyn PolicyStore,
    pub requests: &'a dyn RequestStore,
    pub admins: &'a [PrincipalPattern],
    /// The roles whose session names count (README "Principals").
    pub trust: &'a SessionTrust,
    /// What a policy's `notify` may name in this deployment.
    pub channels: &'a ChannelNames,
}

/// Answers one HTTP request. Never panics on input; every error is the
/// contract's JSON error body.
pub async fn handle(
    api: &PolicyApi<'_>,
    caller: Option<Caller>,
    request: Request<Bytes>,
    now: Timestamp,
) -> Response<String> {
    route(api, caller, request, now)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn route(
    api: &PolicyApi<'_>,
    caller: Option<Caller>,
    request: Request<Bytes>,
    now: Timestamp,
) -> Result<Response<String>, ApiError> {
    let caller = caller.ok_or_else(ApiError::unauthenticated)?;
    caller.audit_derivation(&request);
    // A VM id holds `/`, so it is the rest of the path, not one segment.
    if let Some(rest) = request.uri().path().strip_prefix("/v1/policies/") {
        let vm = vm_in_path(rest)?;
        return match *request.method() {
            Method::GET => get_policy(api, &vm).await,
            Method::PUT => {
                // The close pass holds grants against the time it runs:
                // one accepted while the policy was being written ends
                // later than `now` plus its maximum.
                let started = std::time::Instant::now();
                let clock = move || {
                    let spent = SignedDuration::try_from(started.elapsed()).unwrap_or_default();
                    now.checked_add(spent).unwrap_or(now)
                };
                put_policy(api, &caller, vm, &request, &clock).await
            }
            Method::DELETE => delete_policy(api, &caller, &vm, request.headers(), now).await,
            _ => Err(method_not_allowed("GET, PUT and DELETE")),
        };
    }
    let path = segments(request.uri().path())?;
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match path.as_slice() {
        ["v1", "vms"] => match *request.method() {
            Method::GET => list_vms(api, &caller, now).await,
            _ => Err(method_not_allowed("GET")),
        },
        _ => Err(no_route(request.uri().path())),
    }
}

fn require_admin(api: &PolicyApi<'_>, caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin(api.admins) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "{} may not change JIT policies; only the admins named in JITVM_ADMINS may",
        caller.principal
    )))
}

/// The `If-Match` version, when given: a number, quoted or not.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(http::header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                400,
                "InvalidIfMatch",
                "If-Match must be the policy version you read, such as \"3\"",
            )
        })
}

fn check_version(expected: Option<u64>, stored: Option<u64>) -> Result<(), ApiError> {
    match (expected, stored) {
        (Some(e), Some(s)) if e != s => Err(ApiError::new(
            412,
            "VersionMismatch",
            format!(
                "the policy is at version {s}, not {e}: someone changed it; read it again and retry"
            ),
        )),
        (Some(e), None) => Err(ApiError::new(
            412,
            "VersionMismatch",
            format!("If-Match names version {e}, but there is no policy for this VM"),
        )),
        _ => Ok(()),
    }
}

/// The policy as the API shows it: the policy, its version, and what
/// enabling found.
fn view(entry: &PolicyEntry) -> Value {
    let mut v = serde_json::to_value(&entry.policy).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut v {
        map.insert("firewall".into(), json!(entry.enablement.firewall));
        map.insert("exposures".into(), json!(entry.enablement.exposures));
        map.insert("updatedAt".into(), json!(entry.updated_at));
        map.insert("updatedBy".into(), json!(entry.updated_by));
    }
    v
}

async fn get_policy(api: &PolicyApi<'_>, vm: &VmId) -> Result<Response<String>, ApiError> {
    match api.policies.get_policy(vm).await? {
        Some(entry) => Ok(json_response(200, &view(&entry))),
        None => Err(no_policy(vm)),
    }
}

fn no_policy(vm: &VmId) -> ApiError {
    ApiError::new(
        404,
        "NoPolicy",
        format!("JIT access is not enabled on {vm}"),
    )
}

/// Refuses approvers that can match nobody: a session of a role whose
/// session names the caller chooses. (A requester may still be named so:
/// a queue message names its requestor as its sender chooses.)
fn check_approvers(api: &PolicyApi<'_>, policy: &Policy) -> Result<(), ApiError> {
    let Some((index, message)) = policy
        .approvers()
        .iter()
        .enumerate()
        .find_map(|(i, a)| Some((i, api.trust.matches_nobody(a)?)))
    else {
        return Ok(());
    };
    Err(ApiError::new(
        400,
        "InvalidApprovers",
        format!("approvers[{index}]: {message}"),
    ))
}

/// A policy may name only a Teams webhook the deployment has: a name it
/// does not would lose every notice of the VM.
fn check_channels(api: &PolicyApi<'_>, policy: &Policy) -> Result<(), ApiError> {
    match policy.notify().teams() {
        Some(name) => api
            .channels
            .check_teams(name)
            .map_err(|message| ApiError::new(400, "UnknownNotifyChannel", message)),
        None => Ok(()),
    }
}

async fn put_policy(
    api: &PolicyApi<'_>,
    caller: &Caller,
    vm: VmId,
    request: &Request<Bytes>,
    clock: &(dyn Fn() -> Timestamp + Sync),
) -> Result<Response<String>, ApiError> {
    let now = clock();
    require_admin(api, caller)?;
    let body = check_body(request.body())?;
    let policy = Policy::parse(vm.clone(), &PolicyDocument::from_json(body)?)?;
    check_approvers(api, &policy)?;
    check_channels(api, &policy)?;
    let expected = if_match(request.headers())?;
    let existing = api.policies.get_policy(&vm).await?;
    let stored_version = existing.as_ref().map(|e| e.policy.version());
    check_version(expected, stored_version)?;

    let facts = api.firewall.inspect(&vm).await.map_err(|e| match e {
        jitvm_core::ports::AdapterError::NotFound(m) => ApiError::new(404, "VmNotFound", m),
        other => other.into(),
    })?;
    if let Some(reason) = facts.unsupported {
        return Err(ApiError::new(
            422,
            "VmUnsupported",
            format!("JIT cannot be enabled on {vm}: {reason}"),
        ));
    }
    let already_closed: Vec<_> = existing
        .iter()
        .flat_map(|e| e.enablement.exposures.iter())
        .filter(|x| x.closed)
        .cloned()
        .collect();
    let enablement = api.firewall.enable(&policy, &already_closed).await?;
    let mut entry = PolicyEntry {
        policy,
        enablement,
        updated_at: now,
        updated_by: caller.principal.clone(),
    };
    let version = match api.policies.put_policy(&entry, stored_version).await {
        Ok(version) => version,
        Err(e) => {
            // The standing rules this enablement closed live only in the
            // entry that could not be stored: put them back.
            let newly_closed: Vec<_> = entry
                .enablement
                .exposures
                .iter()
                .filter(|x| {
                    x.closed
                        && !already_closed.iter().any(|c| {
                            (&c.firewall, &c.rule, c.port) == (&x.firewall, &x.rule, x.port)
                        })
                })
                .cloned()
                .collect();
            if !newly_closed.is_empty()
                && let Err(restore) = api.firewall.restore_standing(&vm, &newly_closed).await
            {
                tracing::error!(vm = %vm, error = %restore, "could not restore standing rules after the policy write failed");
            }
            return Err(e.into());
        }
    };
    entry.policy = entry.policy.with_version(version);
    if stored_version.is_some() {
        // Every open grant is held against the new policy as if asked for
        // now; the grant function does the same for a rule it was opening
        // meanwhile (see `jitvm_core::policy_fit`).
        jitvm_core::policy_fit::close_outside_policy(
            api.firewall,
            api.requests,
            &vm,
            Some(&entry.policy),
            Some(&caller.principal),
            clock(),
        )
        .await?;
    }
    Audit {
        event: "policy.put",
        vm: Some(&vm.to_string()),
        actor: Some(caller.principal.as_str()),
        status: Some(if stored_version.is_some() {
            "Replaced"
        } else {
            "Created"
        }),
        message: Some(&format!(
            "version {version}, {} exposures ({} closed)",
            entry.enablement.exposures.len(),
            entry
                .enablement
                .exposures
                .iter()
                .filter(|x| x.closed)
                .count()
        )),
        ..Audit::default()
    }
    .emit();
    let status = if stored_version.is_some() { 200 } else { 201 };
    Ok(json_response(status, &view(&entry)))
}

async fn delete_policy(
    api: &PolicyApi<'_>,
    caller: &Caller,
    vm: &VmId,
    headers: &HeaderMap,
    now: Timestamp,
) -> Result<Response<String>, ApiError> {
    require_admin(api, caller)?;
    let expected = if_match(headers)?;
    let Some(entry) = api.policies.get_policy(vm).await? else {
        return Err(no_policy(vm));
    };
    check_version(expected, Some(entry.policy.version()))?;
    let closed: Vec<_> = entry
        .enablement
        .exposures
        .iter()
        .filter(|x| x.closed)
        .cloned()
        .collect();
    let revoked = api.firewall.disable(vm, &closed).await?;
    for (id, ports) in records::closed_ports(&revoked) {
        records::mark_closed(
            api.requests,
            &id,
            &ports,
            StatusReason::PolicyChanged,
            Some("JIT was disabled on this VM"),
            now,
        )
        .await?;
    }
    api.policies
        .delete_policy(vm, entry.policy.version())
        .await?;
    // A grant whose rule was written while JIT was being disabled, and
    // that read the policy before it was deleted, is closed here; one that
    // reads it after finds none and closes itself. A VM deleted from its
    // cloud has nothing left to close, and nor has one this deployment no
    // longer manages (a grant there is refused before it opens).
    match jitvm_core::policy_fit::close_outside_policy(
        api.firewall,
        api.requests,
        vm,
        None,
        Some(&caller.principal),
        now,
    )
    .await
    {
        Ok(_) | Err(jitvm_core::ports::AdapterError::NotFound(_)) => {}
        Err(jitvm_core::ports::AdapterError::Permanent { code, .. }) if code == "Unsupported" => {}
        Err(e) => return Err(e.into()),
    }
    Audit {
        event: "policy.delete",
        vm: Some(&vm.to_string()),
        actor: Some(caller.principal.as_str()),
        status: Some("Deleted"),
        message: Some(&format!("{} standing rules restored", closed.len())),
        ..Audit::default()
    }
    .emit();
    Ok(no_content())
}

async fn list_vms(
    api: &PolicyApi<'_>,
    caller: &Caller,
    now: Timestamp,
) -> Result<Response<String>, ApiError> {
    let facts = api.firewall.list_vms().await?;
    let policies = api.policies.list_policies().await?;
    let mut by_vm: BTreeMap<VmId, (Option<_>, Option<_>)> = BTreeMap::new();
    for f in facts {
        let id = f.id.clone();
        by_vm.entry(id).or_default().0 = Some(f);
    }
    for p in policies {
        let id = p.policy.vm().clone();
        by_vm.entry(id).or_default().1 = Some(p);
    }
    let week_ago = now
        .checked_sub(SignedDuration::from_hours(24 * 7))
        .unwrap_or(now);
    let mut value = Vec::with_capacity(by_vm.len());
    for (vm, (facts, entry)) in by_vm {
        let name = facts.as_ref().and_then(|f| f.name.clone());
        let unsupported = facts.as_ref().and_then(|f| f.unsupported.clone());
        let mut item = json!({"id": vm, "name": name});
        match (&entry, &unsupported) {
            (Some(entry), _) => {
                item["status"] = json!("Configured");
                item["ports"] = json!(entry.policy.ports());
                let recent = api
                    .requests
                    .requests_for_vm(&vm, Some(week_ago), 500)
                    .await?;
                let approved = recent
                    .iter()
                    .filter(|r| r.status() == RequestStatus::Approved)
                    .count();
                let last = recent.iter().find(|r| {
                    r.ports().iter().any(|p| {
                        matches!(p.status, PortStatus::Initiated | PortStatus::Revoked)
                            && p.status_reason != StatusReason::PolicyChanged
                    })
                });
                let open: Vec<Value> = recent
                    .iter()
                    .flat_map(|r| {
                        r.ports()
                            .iter()
                            .filter(|p| p.status == PortStatus::Initiated && p.end_time_utc > now)
                            .map(move |p| {
                                json!({"requestId": r.id(), "requestor": r.requestor(), "number": p.number,
                                       "allowedSourceAddressPrefix": p.allowed_source_address_prefix,
                                       "endTimeUtc": p.end_time_utc})
                            })
                    })
                    .collect();
                item["approvedRequestsLast7Days"] = json!(approved);
                item["lastAccess"] = json!(last.map(|r| r.start_time_utc()));
                item["lastUser"] = json!(last.map(|r| r.requestor()));
                // Who holds which port from where is for admins and the
                // VM's approvers; others see how many are open.
                if caller.is_admin(api.admins) || entry.policy.allows_approver(&caller.principal) {
                    item["openGrants"] = json!(open);
                } else {
                    item["openGrantCount"] = json!(open.len());
                }
            }
            (None, Some(reason)) => {
                item["status"] = json!("Unsupported");
                item["reason"] = json!(reason);
            }
            (None, None) => item["status"] = json!("NotConfigured"),
        }
        value.push(item);
    }
    Ok(json_response(200, &json!({"value": value})))
}

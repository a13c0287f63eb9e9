//! `GET /v1/whoami`: the caller as jitvm sees them, and what they may do.
//! An operator writing a policy copies the exact principal from here.

use http::Response;
use jitvm_core::api::{ApiError, Caller, json_response};
use serde_json::json;

use crate::RequestApi;

/// The caller's principal (and what the authentication reported, when the
/// principal was derived from it), whether they are an admin or an
/// auditor, and the VMs whose policies name them as an approver, let them
/// request access, or let them break glass (open without approval).
pub async fn whoami(api: &RequestApi<'_>, caller: &Caller) -> Result<Response<String>, ApiError> {
    let mut approver_of = Vec::new();
    let mut requester_of = Vec::new();
    let mut break_glass_of = Vec::new();
    for entry in api.policies.list_policies().await? {
        let policy = &entry.policy;
        if policy.allows_approver(&caller.principal) {
            approver_of.push(policy.vm().to_string());
        }
        if policy.allows_requester(&caller.principal) {
            requester_of.push(policy.vm().to_string());
        }
        if policy.allows_break_glass(&caller.principal) {
            break_glass_of.push(policy.vm().to_string());
        }
    }
    approver_of.sort();
    requester_of.sort();
    break_glass_of.sort();
    let mut body = json!({
        "principal": caller.principal,
        "admin": caller.is_admin(api.admins),
        "auditor": api.is_auditor(caller),
        "approverOf": approver_of,
        "requesterOf": requester_of,
        "breakGlassOf": break_glass_of,
    });
    if let Some(reported) = &caller.reported {
        body["authenticatedAs"] = json!(reported);
        body["note"] = json!(note(caller.principal.as_str()));
    }
    Ok(json_response(200, &body))
}

/// Why the principal is not what the authentication reported.
fn note(principal: &str) -> &'static str {
    if principal.starts_with("jwt:") {
        "single-sign-on callers are named by their token's issuer and subject together, since a subject is unique only within its issuer"
    } else if principal.contains(":federated-user/") {
        "a federated user's name is chosen by whoever calls GetFederationToken, so it does not count: every federated user of the account is this one principal"
    } else if principal.ends_with("/*") {
        "the session name was chosen by whoever assumed the role, so it does not count: every session of the role is this one principal (a deployment lists roles whose session names an identity provider sets in JITVM_TRUSTED_SESSION_ROLES)"
    } else {
        "the principal is derived from the authentication as README \"Principals\" says"
    }
}

//! What is open is what the policy allows: after a policy changes, every
//! open grant of the VM is held against it as if it were asked for now
//! ([`Policy::refusal_of`]), and those it would refuse are closed as
//! `Revoked`/`PolicyChanged`. The policy function runs this after a write;
//! the grant function runs it when the policy moved while it was opening a
//! rule, so a grant opened during a change never outlives it, whichever
//! came first.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::domain::rule::RuleMeta;
use crate::domain::{HeldGrant, Policy, Principal, RequestId, RequestRecord, SourcePrefix, VmId};
use crate::ports::{AdapterError, Firewall, FoundRule, RequestStore, RuleKey};
use crate::records;
use crate::telemetry::Audit;

/// The open grant rules of `rules` that `policy` would refuse at `now`,
/// each with why. `None` for the policy means JIT is off: every grant goes.
/// `records` gives each rule's request, for its requestor and protocol.
pub fn outside_policy<'a>(
    rules: &'a [FoundRule],
    records: &BTreeMap<RequestId, RequestRecord>,
    policy: Option<&Policy>,
    now: Timestamp,
) -> Vec<(&'a FoundRule, &'a RuleMeta, String)> {
    rules
        .iter()
        .filter_map(|rule| {
            let meta = rule.decoded.as_ref().ok()?;
            let why = refusal(rule, meta, records.get(&meta.request_id), policy, now)?;
            Some((rule, meta, why))
        })
        .collect()
}

fn refusal(
    rule: &FoundRule,
    meta: &RuleMeta,
    record: Option<&RequestRecord>,
    policy: Option<&Policy>,
    now: Timestamp,
) -> Option<String> {
    let Some(policy) = policy else {
        return Some("JIT is no longer enabled on this VM".to_owned());
    };
    // A rule whose port cannot be read is drift, the sweep's to remove.
    let port = rule.port?;
    let Ok(source) = SourcePrefix::parse(&rule.source) else {
        return Some(format!("its source {:?} is not an address", rule.source));
    };
    let held = HeldGrant {
        requestor: record.map(RequestRecord::requestor),
        break_glass: record.is_some_and(RequestRecord::break_glass),
        port,
        protocol: record.and_then(|r| r.port(port)).map(|p| p.protocol),
        source: &source,
        end: meta.expires,
    };
    policy.refusal_of(&held, now)
}

/// A grant rule a policy refuses: where it is, whose it is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub key: RuleKey,
    pub request: RequestId,
    pub port: Option<crate::Port>,
    pub why: String,
}

/// Closes the grants of `vm` that `policy` no longer allows: removes their
/// rules, marks their ports `Revoked`/`PolicyChanged` with why, and audits
/// each request, naming `actor` when a person changed the policy. Returns
/// how many rules were removed.
pub async fn close_outside_policy(
    firewall: &dyn Firewall,
    requests: &dyn RequestStore,
    vm: &VmId,
    policy: Option<&Policy>,
    actor: Option<&Principal>,
    now: Timestamp,
) -> Result<usize, AdapterError> {
    let rules = firewall.rules_of(vm).await?;
    let mut held = BTreeMap::new();
    for rule in &rules {
        let Ok(meta) = &rule.decoded else { continue };
        if held.contains_key(&meta.request_id) {
            continue;
        }
        if let Some(r) = requests.get_request(&meta.request_id).await? {
            held.insert(meta.request_id.clone(), r.value);
        }
    }
    let refused: Vec<Refused> = outside_policy(&rules, &held, policy, now)
        .into_iter()
        .map(|(rule, meta, why)| Refused {
            key: rule.key.clone(),
            request: meta.request_id.clone(),
            port: rule.port,
            why,
        })
        .collect();
    close_refused(firewall, requests, vm, &refused, actor, now).await
}

/// Closes `refused` rules of `vm`. The records first: a rule removed while
/// its record still said `Initiated` would, if the write then failed, look
/// removed outside jitvm; a record marked first whose rule outlives a
/// failed revoke is closed by the sweep, which closes every rule of a
/// closed port. Returns how many rules were removed.
pub async fn close_refused(
    firewall: &dyn Firewall,
    requests: &dyn RequestStore,
    vm: &VmId,
    refused: &[Refused],
    actor: Option<&Principal>,
    now: Timestamp,
) -> Result<usize, AdapterError> {
    if refused.is_empty() {
        return Ok(0);
    }
    let mut by_request: BTreeMap<&RequestId, (Vec<Option<crate::Port>>, &str)> = BTreeMap::new();
    for r in refused {
        let entry = by_request
            .entry(&r.request)
            .or_insert_with(|| (Vec::new(), &r.why));
        entry.0.push(r.port);
    }
    let vm_text = vm.to_string();
    for (id, (ports, why)) in by_request {
        let message = format!("the policy changed: {why}");
        let marked = records::mark_closed(
            requests,
            id,
            &ports,
            crate::StatusReason::PolicyChanged,
            Some(&message),
            now,
        )
        .await?;
        Audit {
            event: "grant.closed",
            request_id: Some(id.as_str()),
            vm: Some(&vm_text),
            requestor: marked.as_ref().map(|r| r.requestor().as_str()),
            actor: actor.map(Principal::as_str),
            status: Some("Revoked"),
            reason: Some("PolicyChanged"),
            message: Some(&message),
            ..Audit::default()
        }
        .emit();
    }
    let keys: Vec<RuleKey> = refused.iter().map(|r| r.key.clone()).collect();
    firewall.revoke(&keys).await
}

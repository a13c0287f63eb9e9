//! Read-modify-write of request records with the store's optimistic
//! concurrency: a change is applied to the latest revision, and re-applied
//! if another writer came first. The domain's transitions make a repeated
//! change a no-op and refuse a backward one, so redelivered messages and
//! races cannot move a record backwards.
//!
//! Every state change a write stores is also written as an audit log event
//! ([`crate::audit::emit`]), once, after the write succeeded.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::audit;
use crate::domain::{Port, RequestId, RequestRecord, StatusReason, audit_rows, changes_from};
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
        let seen = record.history().len();
        if !change(&mut record) {
            return Ok(Some(record));
        }
        match store.update_request(&record, current.revision).await {
            Ok(_) => {
                changes_from(&record, seen).iter().for_each(audit::emit);
                return Ok(Some(record));
            }
            Err(AdapterError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(AdapterError::Transient {
        message: format!("request {id} kept changing under {ATTEMPTS} attempts to update it"),
        source: None,
    })
}

/// Stores a new record and writes the audit events of its first state
/// changes. `Conflict` when a record with its id exists.
pub async fn create(store: &dyn RequestStore, record: &RequestRecord) -> Result<(), AdapterError> {
    store.create_request(record).await?;
    audit_rows(record).iter().for_each(audit::emit);
    Ok(())
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

/// The grant rules, among `rules` (one VM's), that a new grant of request
/// `id` on `port` from `source` replaces, by the request that opened them:
/// rules of another request on the same port from the same source.
///
/// Sources are compared as parsed [`crate::domain::SourcePrefix`] blocks,
/// not as text (an Azure rule may hold a bare address, an EC2 rule always a
/// CIDR), and per request as the set of blocks its rules on that port
/// cover: on EC2 a `*` grant is two rules (`0.0.0.0/0` and `::/0`). Rules
/// that did not decode as grants (hand-made, drift) are never replaced, and
/// neither is any rule of `id` itself, so a redelivered message leaves
/// everything but its own rules alone.
pub fn replaced_rules(
    rules: &[FoundRule],
    id: &RequestId,
    port: Port,
    source: crate::domain::SourcePrefix,
) -> BTreeMap<RequestId, Vec<crate::ports::RuleKey>> {
    use std::collections::BTreeSet;
    let wanted: BTreeSet<ipnet::IpNet> = source.cidrs().into_iter().collect();
    // Per older request: its rules on `port`, and the blocks they cover
    // (`None` once one of its sources is unreadable).
    let mut by_request: BTreeMap<
        RequestId,
        (Vec<crate::ports::RuleKey>, Option<BTreeSet<ipnet::IpNet>>),
    > = BTreeMap::new();
    for rule in rules {
        let Ok(meta) = &rule.decoded else { continue };
        if &meta.request_id == id || rule.port != Some(port) {
            continue;
        }
        let entry = by_request
            .entry(meta.request_id.clone())
            .or_insert_with(|| (Vec::new(), Some(BTreeSet::new())));
        entry.0.push(rule.key.clone());
        match crate::domain::SourcePrefix::parse(&rule.source) {
            Ok(p) => {
                if let Some(blocks) = &mut entry.1 {
                    blocks.extend(p.cidrs());
                }
            }
            Err(_) => entry.1 = None,
        }
    }
    by_request
        .into_iter()
        .filter(|(_, (_, blocks))| blocks.as_ref() == Some(&wanted))
        .map(|(request, (keys, _))| (request, keys))
        .collect()
}

#[cfg(test)]
mod replaced_rules_tests {
    use super::*;
    use crate::domain::rule::{DecodeError, RuleMeta};
    use crate::domain::{Cloud, SourcePrefix};
    use crate::ports::RuleKey;

    fn port(n: i64) -> Port {
        Port::parse(n).unwrap()
    }

    fn id(text: &str) -> RequestId {
        RequestId::parse(text).unwrap()
    }

    fn rule(name: &str, request: &str, p: i64, source: &str) -> FoundRule {
        FoundRule {
            key: RuleKey {
                cloud: Cloud::Aws,
                scope: "us-east-1".into(),
                firewall: "sg-1".into(),
                rule: name.into(),
            },
            vm: None,
            port: Some(port(p)),
            source: source.into(),
            decoded: Ok(RuleMeta {
                request_id: id(request),
                expires: Timestamp::UNIX_EPOCH,
                requester: None,
            }),
        }
    }

    fn keys(found: &BTreeMap<RequestId, Vec<RuleKey>>) -> Vec<(String, Vec<String>)> {
        found
            .iter()
            .map(|(r, k)| (r.to_string(), k.iter().map(|k| k.rule.clone()).collect()))
            .collect()
    }

    #[test]
    fn only_other_requests_on_the_same_port_from_the_same_source_are_replaced() {
        let host = SourcePrefix::parse("198.51.100.7").unwrap();
        let mut hand_made = rule("r6", "old-1", 22, "198.51.100.7/32");
        hand_made.decoded = Err(DecodeError::MissingTag("jitvm:request"));
        let rules = vec![
            rule("r1", "old-1", 22, "198.51.100.7/32"),
            // Azure writes what it was given: a bare address is the same host.
            rule("r2", "old-2", 22, "198.51.100.7"),
            rule("r3", "new-1", 22, "198.51.100.7/32"),
            rule("r4", "old-3", 22, "198.51.100.8/32"),
            rule("r5", "old-4", 3389, "198.51.100.7/32"),
            hand_made,
            rule("r7", "old-5", 22, "198.51.100.0/24"),
            rule("r8", "old-6", 22, "sg-0123456789abcdef0"),
        ];
        let found = replaced_rules(&rules, &id("new-1"), port(22), host);
        assert_eq!(
            keys(&found),
            vec![
                ("old-1".to_owned(), vec!["r1".to_owned()]),
                ("old-2".to_owned(), vec!["r2".to_owned()])
            ]
        );
        // A redelivery of the old request itself replaces nothing of its own.
        let found = replaced_rules(&rules[..1], &id("old-1"), port(22), host);
        assert!(found.is_empty());
    }

    #[test]
    fn any_source_is_both_families_on_ec2_and_one_rule_on_azure() {
        let ec2 = vec![
            rule("v4", "old-1", 22, "0.0.0.0/0"),
            rule("v6", "old-1", 22, "::/0"),
            rule("v4only", "old-2", 22, "0.0.0.0/0"),
            rule("azure", "old-3", 22, "*"),
        ];
        let found = replaced_rules(&ec2, &id("new-1"), port(22), SourcePrefix::Any);
        assert_eq!(
            keys(&found),
            vec![
                ("old-1".to_owned(), vec!["v4".to_owned(), "v6".to_owned()]),
                ("old-3".to_owned(), vec!["azure".to_owned()])
            ]
        );
        let v4 = SourcePrefix::parse("0.0.0.0/0").unwrap();
        let found = replaced_rules(&ec2, &id("new-1"), port(22), v4);
        assert_eq!(
            keys(&found),
            vec![("old-2".to_owned(), vec!["v4only".to_owned()])]
        );
    }
}

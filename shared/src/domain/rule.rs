//! How a grant is written into a firewall rule, and read back.
//!
//! Every rule jitvm opens carries its own request id and end time, so the
//! expiry sweep can work from the cloud's state alone: a lost database write
//! or message never leaves a rule open.
//!
//! - AWS: the rule's tags (`jitvm:request`, `jitvm:expires` as RFC 3339 UTC,
//!   `jitvm:requester`) are authoritative; its description is for people.
//! - Azure: the rule name `jitvm-<port>-<YYYYMMDDTHHMMSSZ>-<request id>` is
//!   authoritative (names cannot be edited in place); the 140-character
//!   description repeats it for people, with the requester. The Deny rule
//!   that keeps a port closed is `jitvm-deny-<port>-<vm key>`: a subnet's
//!   NSG can protect several VMs, each with its own Deny rule.
//!
//! Anything that came from a user is mapped into the provider's character
//! set and cut to its length limit before it reaches a rule.

use jiff::fmt::strtime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::evaluate::Grant;
use super::port::Port;
use super::request::RequestId;
use super::text::{Justification, aws_description_char, aws_tag_char, azure_description_char, fit};
use super::vm::AzureVm;

/// Tag on every jitvm-managed security group: `true`.
pub const TAG_MANAGED: &str = "jitvm:managed";
/// Tag on a jitvm security group: the instance ARN it protects.
pub const TAG_VM: &str = "jitvm:vm";
/// Tag on a grant rule: the request id.
pub const TAG_REQUEST: &str = "jitvm:request";
/// Tag on a grant rule: its end time, RFC 3339 UTC to the second.
pub const TAG_EXPIRES: &str = "jitvm:expires";
/// Tag on a grant rule: who asked (sanitised).
pub const TAG_REQUESTER: &str = "jitvm:requester";

/// AWS security group rule descriptions: at most 255 characters.
pub const AWS_DESCRIPTION_MAX: usize = 255;
/// AWS tag values: at most 256 characters.
pub const AWS_TAG_VALUE_MAX: usize = 256;
/// Azure security rule names: at most 80 characters.
pub const AZURE_NAME_MAX: usize = 80;
/// Azure security rule descriptions: at most 140 characters.
pub const AZURE_DESCRIPTION_MAX: usize = 140;

/// Rules claiming to last longer than this from now were not written by
/// jitvm (no grant exceeds 24 hours); the margin absorbs clock skew.
pub const LONGEST_PLAUSIBLE_GRANT: SignedDuration = SignedDuration::from_mins(24 * 60 + 5);

const COMPACT_TIME: &str = "%Y%m%dT%H%M%SZ";

/// What a jitvm rule says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMeta {
    pub request_id: RequestId,
    pub expires: Timestamp,
    /// Who asked, as far as the rule records it (sanitised, possibly cut).
    pub requester: Option<String>,
}

/// Why a rule on a jitvm-managed firewall could not be read as a grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("tag {0} is missing")]
    MissingTag(&'static str),
    #[error("tag {tag} has an unreadable value {value:?}")]
    BadTag { tag: &'static str, value: String },
    #[error("rule name {0:?} is not a jitvm grant name")]
    BadName(String),
    #[error("the rule is not the shape of a grant (one TCP or UDP port from a CIDR block): {0}")]
    NotAGrant(String),
}

/// The end time as tags and messages write it: RFC 3339 UTC, seconds.
pub fn rfc3339(t: Timestamp) -> String {
    to_the_second(t).to_string()
}

/// `t` as rules keep it: to the second, the fraction dropped.
pub fn to_the_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The tags of an AWS rule opened for `grant`, as (key, value) pairs.
pub fn aws_rule_tags(grant: &Grant) -> Vec<(&'static str, String)> {
    vec![
        (TAG_REQUEST, grant.request_id().to_string()),
        (TAG_EXPIRES, rfc3339(grant.end())),
        (
            TAG_REQUESTER,
            fit(
                grant.requestor().as_str(),
                aws_tag_char,
                '_',
                AWS_TAG_VALUE_MAX,
            ),
        ),
    ]
}

/// The description of an AWS rule opened for `grant`: who, until when, why.
pub fn aws_rule_description(grant: &Grant, justification: Option<&Justification>) -> String {
    let mut text = format!(
        "jitvm {} for {} until {}",
        grant.request_id(),
        grant.requestor(),
        rfc3339(grant.end())
    );
    if let Some(why) = justification {
        text.push_str(": ");
        text.push_str(why.as_str());
    }
    fit(&text, aws_description_char, '_', AWS_DESCRIPTION_MAX)
}

/// Reads a grant back from an AWS rule's tags.
pub fn decode_aws_tags<'a>(
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<RuleMeta, DecodeError> {
    let (mut request, mut expires, mut requester) = (None, None, None);
    for (key, value) in tags {
        match key {
            TAG_REQUEST => request = Some(value),
            TAG_EXPIRES => expires = Some(value),
            TAG_REQUESTER => requester = Some(value),
            _ => {}
        }
    }
    let request = request.ok_or(DecodeError::MissingTag(TAG_REQUEST))?;
    let expires = expires.ok_or(DecodeError::MissingTag(TAG_EXPIRES))?;
    let request_id = RequestId::parse(request).map_err(|_| DecodeError::BadTag {
        tag: TAG_REQUEST,
        value: request.chars().take(80).collect(),
    })?;
    let expires = expires
        .parse::<Timestamp>()
        .map_err(|_| DecodeError::BadTag {
            tag: TAG_EXPIRES,
            value: expires.chars().take(80).collect(),
        })?;
    Ok(RuleMeta {
        request_id,
        expires,
        requester: requester.map(str::to_owned),
    })
}

/// What a `jitvm-` Azure rule name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureRuleName {
    /// An Allow rule opened for a grant.
    Grant {
        port: Port,
        expires: Timestamp,
        request_id: RequestId,
    },
    /// The Deny rule that keeps a protected port of one VM closed; `vm_key`
    /// is [`azure_vm_key`] of that VM.
    Deny { port: Port, vm_key: String },
}

/// Characters of [`azure_vm_key`].
pub const AZURE_VM_KEY_LEN: usize = 12;

/// A short, stable key for an Azure VM, for rule names (the VM's own name
/// can be 64 characters, too long beside the rest): the first 12 hex digits
/// of the SHA-256 of its lower-case resource id.
pub fn azure_vm_key(vm: &AzureVm) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(vm.to_string().to_ascii_lowercase().as_bytes());
    digest
        .iter()
        .take(AZURE_VM_KEY_LEN / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The name of the Azure Allow rule for `grant`. At most 80 characters of
/// letters, digits, `-` and `_`; starts and ends with a letter or digit.
pub fn azure_grant_rule_name(grant: &Grant) -> String {
    format!(
        "jitvm-{}-{}-{}",
        grant.port(),
        compact(grant.end()),
        grant.request_id()
    )
}

/// The name of the Azure Deny rule that closes `port` of `vm` while JIT is
/// enabled.
pub fn azure_deny_rule_name(vm: &AzureVm, port: Port) -> String {
    format!("jitvm-deny-{port}-{}", azure_vm_key(vm))
}

/// The description of the Azure Deny rule that closes `port` of `vm`.
pub fn azure_deny_rule_description(vm: &AzureVm, port: Port) -> String {
    let text = format!(
        "jitvm: port {port} of {} is closed; ask jitvm for access",
        vm.name()
    );
    fit(&text, azure_description_char, '_', AZURE_DESCRIPTION_MAX)
}

/// The description of the Azure Allow rule for `grant`, at most 140
/// characters.
pub fn azure_grant_rule_description(grant: &Grant) -> String {
    let text = format!(
        "jitvm {} until {} for {}",
        grant.request_id(),
        rfc3339(grant.end()),
        grant.requestor()
    );
    fit(&text, azure_description_char, '_', AZURE_DESCRIPTION_MAX)
}

/// Reads an Azure rule name. `Ok(None)` for a name that is not jitvm's (the
/// customer's own rules, never touched); an error for a `jitvm-` name that
/// does not decode, which the sweep treats as drift.
pub fn decode_azure_rule_name(name: &str) -> Result<Option<AzureRuleName>, DecodeError> {
    let Some(rest) = name.strip_prefix("jitvm-") else {
        return Ok(None);
    };
    let bad = || DecodeError::BadName(name.chars().take(AZURE_NAME_MAX).collect());
    if let Some(deny) = rest.strip_prefix("deny-") {
        let (port, key) = deny.split_once('-').ok_or_else(bad)?;
        let port = parse_port(port).ok_or_else(bad)?;
        let hex = key.len() == AZURE_VM_KEY_LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(bad());
        }
        return Ok(Some(AzureRuleName::Deny {
            port,
            vm_key: key.to_owned(),
        }));
    }
    let mut parts = rest.splitn(3, '-');
    let (Some(port), Some(time), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let port = parse_port(port).ok_or_else(bad)?;
    let expires = parse_compact(time).ok_or_else(bad)?;
    let request_id = RequestId::parse(id).map_err(|_| bad())?;
    Ok(Some(AzureRuleName::Grant {
        port,
        expires,
        request_id,
    }))
}

fn parse_port(text: &str) -> Option<Port> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.starts_with('0') {
        return None;
    }
    text.parse::<i64>().ok().and_then(|n| Port::parse(n).ok())
}

fn compact(t: Timestamp) -> String {
    strtime::format(COMPACT_TIME, t).unwrap_or_else(|_| rfc3339(t))
}

fn parse_compact(text: &str) -> Option<Timestamp> {
    if text.len() != 16 {
        return None;
    }
    let civil = strtime::parse(COMPACT_TIME, text)
        .ok()?
        .to_datetime()
        .ok()?;
    civil.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// What the sweep should do with one rule on a jitvm-managed firewall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleVerdict {
    /// Still within its time: leave it.
    Active(RuleMeta),
    /// Its end time has passed: remove it and mark the request Expired.
    Expired(RuleMeta),
    /// Not a valid jitvm grant (added by hand, tags missing or edited):
    /// remove it and log an audit event.
    Drift(DriftReason),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriftReason {
    #[error("{0}")]
    Undecodable(DecodeError),
    #[error("it claims to last until {expires}, longer than any grant jitvm makes")]
    ImplausibleEnd { expires: Timestamp },
}

/// Judges one rule at `now`. A rule's end time is its last open second: it
/// has expired once `now` reaches it.
pub fn judge(decoded: Result<RuleMeta, DecodeError>, now: Timestamp) -> RuleVerdict {
    let meta = match decoded {
        Ok(meta) => meta,
        Err(e) => return RuleVerdict::Drift(DriftReason::Undecodable(e)),
    };
    let horizon = now
        .checked_add(LONGEST_PLAUSIBLE_GRANT)
        .unwrap_or(Timestamp::MAX);
    if meta.expires > horizon {
        return RuleVerdict::Drift(DriftReason::ImplausibleEnd {
            expires: meta.expires,
        });
    }
    if meta.expires <= now {
        RuleVerdict::Expired(meta)
    } else {
        RuleVerdict::Active(meta)
    }
}

/// What one sweep removes, rule keys (ids, names) kept as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepPlan<K> {
    pub expired: Vec<(K, RuleMeta)>,
    pub drift: Vec<(K, DriftReason)>,
    pub active: Vec<(K, RuleMeta)>,
}

/// Sorts rules into expired, drift and still active at `now`.
pub fn plan_sweep<K>(
    rules: impl IntoIterator<Item = (K, Result<RuleMeta, DecodeError>)>,
    now: Timestamp,
) -> SweepPlan<K> {
    let mut plan = SweepPlan {
        expired: Vec::new(),
        drift: Vec::new(),
        active: Vec::new(),
    };
    for (key, decoded) in rules {
        match judge(decoded, now) {
            RuleVerdict::Active(meta) => plan.active.push((key, meta)),
            RuleVerdict::Expired(meta) => plan.expired.push((key, meta)),
            RuleVerdict::Drift(reason) => plan.drift.push((key, reason)),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::{Policy, PolicyDocument};
    use crate::domain::request::{AccessRequest, InitiateBody};
    use crate::domain::{Decision, Principal, VmId, evaluate};
    use serde_json::json;

    const VM: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";

    fn grant(requestor: &str) -> Grant {
        let vm = VmId::parse(VM).unwrap();
        let policy = Policy::parse(
            vm,
            &PolicyDocument::from_value(json!({"ports": [22]})).unwrap(),
        )
        .unwrap();
        let body: InitiateBody = serde_json::from_value(json!({"virtualMachines": [{"id": VM,
            "ports": [{"number": 22, "duration": "PT1H", "allowedSourceAddressPrefix": "198.51.100.7"}]}]})).unwrap();
        let req = AccessRequest::parse(RequestId::parse("0f8e-41aa").unwrap(), &body).unwrap();
        let Decision::Approved { mut grants } = evaluate(
            Some(&policy),
            &req,
            &Principal::parse(requestor).unwrap(),
            None,
            "2026-11-23T12:00:00Z".parse().unwrap(),
        ) else {
            panic!()
        };
        grants.remove(0)
    }

    #[test]
    fn aws_encoding() {
        let g = grant("local:alice");
        let tags = aws_rule_tags(&g);
        assert_eq!(
            tags,
            vec![
                (TAG_REQUEST, "0f8e-41aa".to_owned()),
                (TAG_EXPIRES, "2026-11-23T13:00:00Z".to_owned()),
                (TAG_REQUESTER, "local:alice".to_owned()),
            ]
        );
        let why = Justification::parse("deploy <fix> for ticket #42 — urgent").unwrap();
        assert_eq!(
            aws_rule_description(&g, Some(&why)),
            "jitvm 0f8e-41aa for local:alice until 2026-11-23T13:00:00Z: deploy _fix_ for ticket #42 _ urgent"
        );
        let meta = decode_aws_tags(tags.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        assert_eq!(meta.request_id.as_str(), "0f8e-41aa");
        assert_eq!(meta.expires, g.end());
        assert_eq!(meta.requester.as_deref(), Some("local:alice"));
    }

    #[test]
    fn aws_decode_errors() {
        assert_eq!(
            decode_aws_tags([]),
            Err(DecodeError::MissingTag(TAG_REQUEST))
        );
        assert_eq!(
            decode_aws_tags([(TAG_REQUEST, "r1")]),
            Err(DecodeError::MissingTag(TAG_EXPIRES))
        );
        assert!(matches!(
            decode_aws_tags([(TAG_REQUEST, "r1"), (TAG_EXPIRES, "soon")]),
            Err(DecodeError::BadTag {
                tag: TAG_EXPIRES,
                ..
            })
        ));
        assert!(matches!(
            decode_aws_tags([(TAG_REQUEST, "r 1"), (TAG_EXPIRES, "2026-11-23T13:00:00Z")]),
            Err(DecodeError::BadTag {
                tag: TAG_REQUEST,
                ..
            })
        ));
    }

    #[test]
    fn azure_encoding() {
        let g = grant("slack:T0123/U0456");
        let name = azure_grant_rule_name(&g);
        assert_eq!(name, "jitvm-22-20261123T130000Z-0f8e-41aa");
        assert_eq!(
            decode_azure_rule_name(&name).unwrap(),
            Some(AzureRuleName::Grant {
                port: g.port(),
                expires: g.end(),
                request_id: g.request_id().clone()
            })
        );
        assert_eq!(
            azure_grant_rule_description(&g),
            "jitvm 0f8e-41aa until 2026-11-23T13:00:00Z for slack:T0123/U0456"
        );
        let vm = crate::domain::AzureVm::parse(
            "/subscriptions/00000000-0000-0000-0000-0000000000a1/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/Web-1",
        )
        .unwrap();
        let same = crate::domain::AzureVm::parse(
            "/SUBSCRIPTIONS/00000000-0000-0000-0000-0000000000A1/resourcegroups/rg/providers/microsoft.compute/virtualmachines/web-1",
        )
        .unwrap();
        let key = azure_vm_key(&vm);
        assert_eq!(key.len(), AZURE_VM_KEY_LEN);
        assert_eq!(key, azure_vm_key(&same), "ARM ids are case-insensitive");
        let deny = azure_deny_rule_name(&vm, g.port());
        assert_eq!(deny, format!("jitvm-deny-22-{key}"));
        assert_eq!(
            decode_azure_rule_name(&deny).unwrap(),
            Some(AzureRuleName::Deny {
                port: g.port(),
                vm_key: key
            })
        );
        assert!(azure_deny_rule_description(&vm, g.port()).contains("port 22 of web-1"));
        assert_eq!(decode_azure_rule_name("AllowVnetInBound").unwrap(), None);
        for bad in [
            "jitvm-",
            "jitvm-22",
            "jitvm-22-20261123T130000Z",
            "jitvm-022-20261123T130000Z-r1",
            "jitvm-99999-20261123T130000Z-r1",
            "jitvm-22-2026-11-23T13:00:00Z-r1",
            "jitvm-22-20261323T130000Z-r1",
            "jitvm-22-20261123T130000Z-r1-",
            "jitvm-deny-x",
            "jitvm-deny-22",
            "jitvm-deny-22-XYZ",
            "jitvm-deny-22-0123456789ab0",
        ] {
            assert!(decode_azure_rule_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sweep_selects_expired_and_drift() {
        let now: Timestamp = "2026-11-23T13:00:00Z".parse().unwrap();
        let meta = |expires: &str| {
            Ok(RuleMeta {
                request_id: RequestId::parse("r1").unwrap(),
                expires: expires.parse().unwrap(),
                requester: None,
            })
        };
        let plan = plan_sweep(
            [
                ("sgr-1", meta("2026-11-23T12:59:59Z")),
                ("sgr-2", meta("2026-11-23T13:00:00Z")),
                ("sgr-3", meta("2026-11-23T13:00:01Z")),
                ("sgr-4", Err(DecodeError::MissingTag(TAG_EXPIRES))),
                ("sgr-5", meta("2099-01-01T00:00:00Z")),
                ("sgr-6", meta("2026-11-24T13:00:00Z")),
            ],
            now,
        );
        fn keys(v: &[(&'static str, RuleMeta)]) -> Vec<&'static str> {
            v.iter().map(|(k, _)| *k).collect()
        }
        assert_eq!(keys(&plan.expired), vec!["sgr-1", "sgr-2"]);
        assert_eq!(keys(&plan.active), vec!["sgr-3", "sgr-6"]);
        assert_eq!(
            plan.drift.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            vec!["sgr-4", "sgr-5"]
        );
        assert!(
            plan.drift[1]
                .1
                .to_string()
                .contains("longer than any grant")
        );
    }
}

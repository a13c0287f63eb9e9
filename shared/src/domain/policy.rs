//! A VM's JIT policy: which ports may be opened, from where, for how long,
//! by whom, and whether someone must approve.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::duration::{DurationError, MaxAccessDuration};
use super::port::{Port, PortError, Protocol};
use super::prefix::{PrefixError, SourcePrefix};
use super::principal::{Principal, PrincipalError, PrincipalPattern};
use super::vm::VmId;

/// At most this many ports in one policy.
pub const MAX_PORTS: usize = 32;
/// At most this many allowed source prefixes per port.
pub const MAX_PREFIXES: usize = 50;
/// At most this many requesters, and as many approvers.
pub const MAX_PRINCIPALS: usize = 100;

/// Why a policy document was refused. Every variant is the caller's to fix
/// (HTTP 400) and names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy is not valid JSON of the expected shape: {0}")]
    Shape(String),
    #[error("ports must list at least one port")]
    NoPorts,
    #[error("ports lists {count} ports; at most {max} are allowed")]
    TooManyPorts { count: usize, max: usize },
    #[error("ports[{index}]: {source}")]
    Port { index: usize, source: PortError },
    #[error("ports[{index}]: {message}")]
    PortShape { index: usize, message: String },
    #[error("port {0} is listed twice; list each port once")]
    DuplicatePort(Port),
    #[error("port {port}: protocol: {source}")]
    Protocol { port: Port, source: PortError },
    #[error(
        "port {port}: give allowedSourceAddressPrefix or allowedSourceAddressPrefixes, not both"
    )]
    BothPrefixForms { port: Port },
    #[error(
        "port {port}: allowedSourceAddressPrefixes is empty; list at least one prefix, or \"*\" for any source"
    )]
    NoPrefixes { port: Port },
    #[error(
        "port {port}: allowedSourceAddressPrefixes lists {count} prefixes; at most {max} are allowed"
    )]
    TooManyPrefixes {
        port: Port,
        count: usize,
        max: usize,
    },
    #[error("port {port}: allowed source prefix: {source}")]
    Prefix { port: Port, source: PrefixError },
    #[error("port {port}: maxRequestAccessDuration: {source}")]
    Duration { port: Port, source: DurationError },
    #[error(
        "requesters is empty, so nobody could request access; name the principals who may, or [\"*\"] for anyone authenticated"
    )]
    NoRequesters,
    #[error("{field} lists {count} principals; at most {max} are allowed")]
    TooManyPrincipals {
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error("requesters[{index}]: {source}")]
    Requester {
        index: usize,
        source: PrincipalError,
    },
    #[error("approvers[{index}]: {source}")]
    Approver {
        index: usize,
        source: PrincipalError,
    },
    #[error(
        "the policy document names {0}, but this policy is for another VM; send one policy per VM, to that VM's URL"
    )]
    OtherVm(String),
    #[error("the policy document names no entry for this VM in properties.virtualMachines")]
    VmMissing,
}

impl PolicyError {
    /// A stable, machine-readable code for the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::Shape(_) | PolicyError::PortShape { .. } => "InvalidPolicyDocument",
            PolicyError::NoPorts | PolicyError::TooManyPorts { .. } => "InvalidPorts",
            PolicyError::Port { .. } | PolicyError::DuplicatePort(_) => "InvalidPort",
            PolicyError::Protocol { .. } => "InvalidProtocol",
            PolicyError::BothPrefixForms { .. }
            | PolicyError::NoPrefixes { .. }
            | PolicyError::TooManyPrefixes { .. }
            | PolicyError::Prefix { .. } => "InvalidSourcePrefix",
            PolicyError::Duration { .. } => "InvalidMaxRequestAccessDuration",
            PolicyError::NoRequesters
            | PolicyError::Requester { .. }
            | PolicyError::TooManyPrincipals { .. } => "InvalidRequesters",
            PolicyError::Approver { .. } => "InvalidApprovers",
            PolicyError::OtherVm(_) | PolicyError::VmMissing => "VmMismatch",
        }
    }

    pub fn http_status(&self) -> u16 {
        400
    }
}

/// One port of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRule {
    number: Port,
    protocol: Protocol,
    allowed_source_address_prefixes: Vec<SourcePrefix>,
    max_request_access_duration: MaxAccessDuration,
}

impl PortRule {
    pub fn number(&self) -> Port {
        self.number
    }
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
    pub fn allowed_source_address_prefixes(&self) -> &[SourcePrefix] {
        &self.allowed_source_address_prefixes
    }
    pub fn max_request_access_duration(&self) -> MaxAccessDuration {
        self.max_request_access_duration
    }

    /// True when `source` lies inside one of the allowed prefixes. A source
    /// that opens to the whole internet (`*`, `0.0.0.0/0`, `::/0`) needs `*`
    /// in the policy, not merely `0.0.0.0/0`.
    pub fn allows_source(&self, source: &SourcePrefix) -> bool {
        if source.is_any() {
            return self.allows_any_source();
        }
        self.allowed_source_address_prefixes
            .iter()
            .any(|allowed| allowed.contains(source))
    }

    pub fn allows_any_source(&self) -> bool {
        self.allowed_source_address_prefixes
            .contains(&SourcePrefix::Any)
    }
}

/// A validated JIT policy for one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "StoredPolicy")]
pub struct Policy {
    vm: VmId,
    ports: Vec<PortRule>,
    requesters: Vec<PrincipalPattern>,
    approvers: Vec<PrincipalPattern>,
    close_standing_access: bool,
    version: u64,
}

impl Policy {
    /// Validates a policy document sent for `vm` (the VM of the URL).
    pub fn parse(vm: VmId, document: &PolicyDocument) -> Result<Self, PolicyError> {
        let ports = parse_ports(document.ports_for(&vm)?)?;
        let requesters = match &document.requesters {
            None => vec![
                PrincipalPattern::parse("*")
                    .map_err(|source| PolicyError::Requester { index: 0, source })?,
            ],
            Some(list) => parse_requesters(list)?,
        };
        let approvers = parse_approvers(document.approvers.as_deref().unwrap_or_default())?;
        Ok(Self {
            vm,
            ports,
            requesters,
            approvers,
            close_standing_access: document.close_standing_access.unwrap_or(false),
            version: 0,
        })
    }

    pub fn vm(&self) -> &VmId {
        &self.vm
    }
    pub fn ports(&self) -> &[PortRule] {
        &self.ports
    }
    pub fn port(&self, number: Port) -> Option<&PortRule> {
        self.ports.iter().find(|p| p.number == number)
    }
    pub fn requesters(&self) -> &[PrincipalPattern] {
        &self.requesters
    }
    pub fn approvers(&self) -> &[PrincipalPattern] {
        &self.approvers
    }

    /// Whether `who` is among the approvers (whoever asked).
    pub fn allows_approver(&self, who: &Principal) -> bool {
        self.approvers.iter().any(|p| p.matches(who))
    }
    pub fn close_standing_access(&self) -> bool {
        self.close_standing_access
    }
    /// Incremented by the store on every write; 0 for a policy not yet stored.
    pub fn version(&self) -> u64 {
        self.version
    }
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    pub fn allows_requester(&self, who: &Principal) -> bool {
        self.requesters.iter().any(|p| p.matches(who))
    }

    /// With no approvers, requests are approved automatically.
    pub fn needs_approval(&self) -> bool {
        !self.approvers.is_empty()
    }
}

/// A grant that is open now, as a policy change re-checks it: what its
/// record says (the requestor and the protocol; `None` when the rule has no
/// record), and what its rule opens.
#[derive(Debug, Clone, Copy)]
pub struct HeldGrant<'a> {
    pub requestor: Option<&'a Principal>,
    pub port: Port,
    pub protocol: Option<Protocol>,
    pub source: &'a SourcePrefix,
    pub end: Timestamp,
}

impl Policy {
    /// Why this policy would refuse `held` were it asked for at `now`, in
    /// words for the record; `None` when it still allows it. Approvers are
    /// not re-checked: a grant approved before approvers were added stays.
    pub fn refusal_of(&self, held: &HeldGrant<'_>, now: Timestamp) -> Option<String> {
        if let Some(who) = held.requestor.filter(|who| !self.allows_requester(who)) {
            return Some(format!("{who} is no longer among the policy's requesters"));
        }
        let port = held.port;
        let Some(rule) = self.port(port) else {
            return Some(format!("the policy no longer protects port {port}"));
        };
        if let Some(granted) = held.protocol.filter(|p| !rule.protocol().covers(*p)) {
            return Some(format!(
                "the policy now allows port {port} as {} only, not {granted}",
                rule.protocol()
            ));
        }
        if !rule.allows_source(held.source) {
            return Some(format!(
                "the policy no longer allows port {port} from {}",
                held.source
            ));
        }
        let latest = now
            .checked_add(rule.max_request_access_duration().get())
            .unwrap_or(now);
        if held.end > latest {
            return Some(format!(
                "the policy now allows port {port} for {} at most, and this grant ends later",
                rule.max_request_access_duration()
            ));
        }
        None
    }
}

/// A policy as sent to `PUT /v1/policies/{vm}`: jitvm's own shape
/// (`{"ports":[...],"requesters":[...],"approvers":[...]}`) or Azure's
/// `jitNetworkAccessPolicies` body (`{"kind":"Basic","properties":{"virtualMachines":[...]}}`),
/// from which the entry for the URL's VM is taken. Unknown fields are
/// refused, so a misspelt `approvers` cannot silently approve everything.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    ports: PortsSource,
    requesters: Option<Vec<String>>,
    approvers: Option<Vec<String>>,
    close_standing_access: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
enum PortsSource {
    Flat(Vec<Value>),
    Azure(Vec<AzureVmEntry>),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FlatDocument {
    ports: Vec<Value>,
    requesters: Option<Vec<String>>,
    approvers: Option<Vec<String>>,
    close_standing_access: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // Azure's read-only fields are accepted and ignored.
struct AzureDocument {
    kind: Option<String>,
    id: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind_of: Option<String>,
    location: Option<String>,
    properties: AzureProperties,
    requesters: Option<Vec<String>>,
    approvers: Option<Vec<String>>,
    close_standing_access: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct AzureProperties {
    virtual_machines: Vec<AzureVmEntry>,
    requests: Option<Value>,
    provisioning_state: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct AzureVmEntry {
    id: String,
    ports: Vec<Value>,
    public_ip_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PortBody {
    number: i64,
    protocol: Option<String>,
    allowed_source_address_prefix: Option<String>,
    allowed_source_address_prefixes: Option<Vec<String>>,
    max_request_access_duration: Option<String>,
}

impl PolicyDocument {
    pub fn from_json(body: &[u8]) -> Result<Self, PolicyError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| PolicyError::Shape(e.to_string()))?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, PolicyError> {
        let shape = |e: serde_json::Error| PolicyError::Shape(e.to_string());
        if value.get("properties").is_some() {
            let doc: AzureDocument = serde_json::from_value(value).map_err(shape)?;
            return Ok(Self {
                ports: PortsSource::Azure(doc.properties.virtual_machines),
                requesters: doc.requesters,
                approvers: doc.approvers,
                close_standing_access: doc.close_standing_access,
            });
        }
        let doc: FlatDocument = serde_json::from_value(value).map_err(shape)?;
        Ok(Self {
            ports: PortsSource::Flat(doc.ports),
            requesters: doc.requesters,
            approvers: doc.approvers,
            close_standing_access: doc.close_standing_access,
        })
    }

    fn ports_for(&self, vm: &VmId) -> Result<&[Value], PolicyError> {
        match &self.ports {
            PortsSource::Flat(ports) => Ok(ports),
            PortsSource::Azure(entries) => {
                let mut found = None;
                for entry in entries {
                    match VmId::parse(&entry.id) {
                        Ok(id) if &id == vm => found = Some(entry.ports.as_slice()),
                        _ => return Err(PolicyError::OtherVm(entry.id.clone())),
                    }
                }
                found.ok_or(PolicyError::VmMissing)
            }
        }
    }
}

fn parse_ports(values: &[Value]) -> Result<Vec<PortRule>, PolicyError> {
    if values.is_empty() {
        return Err(PolicyError::NoPorts);
    }
    if values.len() > MAX_PORTS {
        return Err(PolicyError::TooManyPorts {
            count: values.len(),
            max: MAX_PORTS,
        });
    }
    let mut seen = BTreeSet::new();
    let mut rules = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        let body = match value {
            // A bare number is a port with every default.
            Value::Number(n) => PortBody {
                number: n.as_i64().ok_or_else(|| PolicyError::PortShape {
                    index,
                    message: format!("{n} is not a whole port number"),
                })?,
                protocol: None,
                allowed_source_address_prefix: None,
                allowed_source_address_prefixes: None,
                max_request_access_duration: None,
            },
            Value::Object(_) => {
                serde_json::from_value(value.clone()).map_err(|e| PolicyError::PortShape {
                    index,
                    message: e.to_string(),
                })?
            }
            _ => {
                return Err(PolicyError::PortShape {
                    index,
                    message: "expected a port number or an object with \"number\"".into(),
                });
            }
        };
        let rule = parse_port(index, body)?;
        if !seen.insert(rule.number) {
            return Err(PolicyError::DuplicatePort(rule.number));
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn parse_port(index: usize, body: PortBody) -> Result<PortRule, PolicyError> {
    let port = Port::parse(body.number).map_err(|source| PolicyError::Port { index, source })?;
    let protocol = match &body.protocol {
        None => Protocol::Any,
        Some(text) => {
            Protocol::parse(text).map_err(|source| PolicyError::Protocol { port, source })?
        }
    };
    let texts = match (
        body.allowed_source_address_prefix,
        body.allowed_source_address_prefixes,
    ) {
        (Some(_), Some(_)) => return Err(PolicyError::BothPrefixForms { port }),
        (Some(one), None) => vec![one],
        (None, Some(many)) => many,
        (None, None) => vec!["*".to_owned()],
    };
    if texts.is_empty() {
        return Err(PolicyError::NoPrefixes { port });
    }
    if texts.len() > MAX_PREFIXES {
        return Err(PolicyError::TooManyPrefixes {
            port,
            count: texts.len(),
            max: MAX_PREFIXES,
        });
    }
    let mut prefixes = Vec::with_capacity(texts.len());
    for text in &texts {
        let prefix =
            SourcePrefix::parse(text).map_err(|source| PolicyError::Prefix { port, source })?;
        if !prefixes.contains(&prefix) {
            prefixes.push(prefix);
        }
    }
    let max = match &body.max_request_access_duration {
        None => MaxAccessDuration::DEFAULT,
        Some(text) => MaxAccessDuration::parse(text)
            .map_err(|source| PolicyError::Duration { port, source })?,
    };
    Ok(PortRule {
        number: port,
        protocol,
        allowed_source_address_prefixes: prefixes,
        max_request_access_duration: max,
    })
}

fn parse_requesters(list: &[String]) -> Result<Vec<PrincipalPattern>, PolicyError> {
    if list.is_empty() {
        return Err(PolicyError::NoRequesters);
    }
    if list.len() > MAX_PRINCIPALS {
        return Err(PolicyError::TooManyPrincipals {
            field: "requesters",
            count: list.len(),
            max: MAX_PRINCIPALS,
        });
    }
    let mut out: Vec<PrincipalPattern> = Vec::with_capacity(list.len());
    for (index, text) in list.iter().enumerate() {
        let pattern = PrincipalPattern::parse(text)
            .map_err(|source| PolicyError::Requester { index, source })?;
        if !out.contains(&pattern) {
            out.push(pattern);
        }
    }
    Ok(out)
}

fn parse_approvers(list: &[String]) -> Result<Vec<PrincipalPattern>, PolicyError> {
    if list.len() > MAX_PRINCIPALS {
        return Err(PolicyError::TooManyPrincipals {
            field: "approvers",
            count: list.len(),
            max: MAX_PRINCIPALS,
        });
    }
    let mut out: Vec<PrincipalPattern> = Vec::with_capacity(list.len());
    for (index, text) in list.iter().enumerate() {
        let who = PrincipalPattern::parse(text)
            .map_err(|source| PolicyError::Approver { index, source })?;
        if !out.contains(&who) {
            out.push(who);
        }
    }
    Ok(out)
}

/// The stored form of a policy, re-validated when read back so that a
/// hand-edited record cannot smuggle in what the API would refuse.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredPolicy {
    vm: VmId,
    ports: Vec<PortRule>,
    requesters: Vec<PrincipalPattern>,
    #[serde(default)]
    approvers: Vec<PrincipalPattern>,
    #[serde(default)]
    close_standing_access: bool,
    #[serde(default)]
    version: u64,
}

impl TryFrom<StoredPolicy> for Policy {
    type Error = PolicyError;
    fn try_from(s: StoredPolicy) -> Result<Self, Self::Error> {
        if s.ports.is_empty() {
            return Err(PolicyError::NoPorts);
        }
        let mut seen = BTreeSet::new();
        for rule in &s.ports {
            if !seen.insert(rule.number) {
                return Err(PolicyError::DuplicatePort(rule.number));
            }
            if rule.allowed_source_address_prefixes.is_empty() {
                return Err(PolicyError::NoPrefixes { port: rule.number });
            }
        }
        if s.requesters.is_empty() {
            return Err(PolicyError::NoRequesters);
        }
        Ok(Self {
            vm: s.vm,
            ports: s.ports,
            requesters: s.requesters,
            approvers: s.approvers,
            close_standing_access: s.close_standing_access,
            version: s.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VM: &str = "/subscriptions/20ff7fc3-e762-44dd-bd96-b71116dcdc23/resourceGroups/myRg1/providers/Microsoft.Compute/virtualMachines/vm1";

    fn vm() -> VmId {
        VmId::parse(VM).unwrap()
    }

    fn parse(body: Value) -> Result<Policy, PolicyError> {
        Policy::parse(vm(), &PolicyDocument::from_value(body)?)
    }

    #[test]
    fn an_open_grant_is_refused_for_each_thing_a_new_policy_takes_away() {
        let policy = parse(json!({
            "ports": [{"number": 22, "protocol": "tcp",
                       "allowedSourceAddressPrefixes": ["203.0.113.0/24"],
                       "maxRequestAccessDuration": "PT1H"}],
            "requesters": ["local:alice"]
        }))
        .unwrap();
        let now: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let alice = Principal::parse("local:alice").unwrap();
        let bob = Principal::parse("local:bob").unwrap();
        let inside = SourcePrefix::parse("203.0.113.7").unwrap();
        let outside = SourcePrefix::parse("198.51.100.7").unwrap();
        let fits = HeldGrant {
            requestor: Some(&alice),
            port: Port::parse(22).unwrap(),
            protocol: Some(Protocol::Tcp),
            source: &inside,
            end: now
                .checked_add(jiff::SignedDuration::from_mins(30))
                .unwrap(),
        };
        assert_eq!(policy.refusal_of(&fits, now), None);
        // No record: the rule's own facts are still checked.
        let unrecorded = HeldGrant {
            requestor: None,
            protocol: None,
            ..fits
        };
        assert_eq!(policy.refusal_of(&unrecorded, now), None);
        let refused = [
            HeldGrant {
                requestor: Some(&bob),
                ..fits
            },
            HeldGrant {
                port: Port::parse(3389).unwrap(),
                ..fits
            },
            HeldGrant {
                protocol: Some(Protocol::Any),
                ..fits
            },
            HeldGrant {
                protocol: Some(Protocol::Udp),
                ..fits
            },
            HeldGrant {
                source: &outside,
                ..fits
            },
            HeldGrant {
                end: now
                    .checked_add(jiff::SignedDuration::from_hours(2))
                    .unwrap(),
                ..fits
            },
        ];
        for held in refused {
            assert!(policy.refusal_of(&held, now).is_some(), "{held:?}");
        }
    }

    #[test]
    fn full_flat_policy() {
        let policy = parse(json!({
            "ports": [{"number": 22, "protocol": "tcp",
                       "allowedSourceAddressPrefixes": ["203.0.113.0/24", "2001:db8::/32"],
                       "maxRequestAccessDuration": "PT1H"}],
            "requesters": ["local:alice", "slack:T1/*"],
            "approvers": ["local:bob"],
            "closeStandingAccess": true
        }))
        .unwrap();
        let rule = policy.port(Port::parse(22).unwrap()).unwrap();
        assert_eq!(rule.protocol(), Protocol::Tcp);
        assert_eq!(rule.allowed_source_address_prefixes().len(), 2);
        assert_eq!(rule.max_request_access_duration().to_string(), "PT1H");
        assert!(policy.needs_approval());
        assert!(policy.close_standing_access());
        assert!(policy.allows_requester(&Principal::parse("slack:T1/U9").unwrap()));
        assert!(!policy.allows_requester(&Principal::parse("local:mallory").unwrap()));
    }

    #[test]
    fn bare_port_gets_the_defaults() {
        let policy = parse(json!({"ports": [22, {"number": 3389}]})).unwrap();
        for rule in policy.ports() {
            assert_eq!(rule.protocol(), Protocol::Any);
            assert_eq!(rule.allowed_source_address_prefixes(), &[SourcePrefix::Any]);
            assert_eq!(
                rule.max_request_access_duration(),
                MaxAccessDuration::DEFAULT
            );
        }
        // Like Defender for Cloud, who may call the API decides who may request.
        assert_eq!(policy.requesters()[0].as_str(), "*");
        assert!(!policy.needs_approval());
    }

    #[test]
    fn azure_create_example_parses() {
        let body = json!({
            "kind": "Basic",
            "properties": {
                "virtualMachines": [{
                    "id": VM,
                    "ports": [
                        {"number": 22, "protocol": "*", "allowedSourceAddressPrefix": "*", "maxRequestAccessDuration": "PT3H"},
                        {"number": 3389, "protocol": "*", "allowedSourceAddressPrefix": "*", "maxRequestAccessDuration": "PT3H"}
                    ]
                }],
                "requests": [],
                "provisioningState": "Succeeded"
            },
            "id": "/subscriptions/x/resourceGroups/myRg1/providers/Microsoft.Security/locations/westeurope/jitNetworkAccessPolicies/default",
            "name": "default",
            "type": "Microsoft.Security/locations/jitNetworkAccessPolicies",
            "location": "westeurope"
        });
        let policy = parse(body).unwrap();
        assert_eq!(policy.ports().len(), 2);
        assert!(policy.ports()[1].allows_any_source());
    }

    #[test]
    fn azure_document_for_another_vm_is_refused() {
        let other = VM.replace("vm1", "vm2");
        let err = parse(json!({"properties": {"virtualMachines": [{"id": other, "ports": [22]}]}}))
            .unwrap_err();
        assert!(matches!(err, PolicyError::OtherVm(_)));
        let err = parse(json!({"properties": {"virtualMachines": []}})).unwrap_err();
        assert_eq!(err, PolicyError::VmMissing);
    }

    #[test]
    fn every_refusal_names_its_field() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"ports": []}), "InvalidPorts"),
            (
                json!({"ports": (1..=33).collect::<Vec<_>>()}),
                "InvalidPorts",
            ),
            (json!({"ports": [0]}), "InvalidPort"),
            (json!({"ports": [22, {"number": 22}]}), "InvalidPort"),
            (json!({"ports": ["22"]}), "InvalidPolicyDocument"),
            (
                json!({"ports": [{"number": 22, "protocl": "tcp"}]}),
                "InvalidPolicyDocument",
            ),
            (
                json!({"ports": [{"number": 22, "protocol": "icmp"}]}),
                "InvalidProtocol",
            ),
            (
                json!({"ports": [{"number": 22, "allowedSourceAddressPrefix": "*", "allowedSourceAddressPrefixes": ["*"]}]}),
                "InvalidSourcePrefix",
            ),
            (
                json!({"ports": [{"number": 22, "allowedSourceAddressPrefixes": []}]}),
                "InvalidSourcePrefix",
            ),
            (
                json!({"ports": [{"number": 22, "allowedSourceAddressPrefix": "10.0.0.1/8"}]}),
                "InvalidSourcePrefix",
            ),
            (
                json!({"ports": [{"number": 22, "maxRequestAccessDuration": "PT25H"}]}),
                "InvalidMaxRequestAccessDuration",
            ),
            (
                json!({"ports": [{"number": 22, "maxRequestAccessDuration": "PT1M"}]}),
                "InvalidMaxRequestAccessDuration",
            ),
            (
                json!({"ports": [{"number": 22, "maxRequestAccessDuration": "3 fortnights"}]}),
                "InvalidMaxRequestAccessDuration",
            ),
            (
                json!({"ports": [22], "requesters": []}),
                "InvalidRequesters",
            ),
            (
                json!({"ports": [22], "requesters": ["two words"]}),
                "InvalidRequesters",
            ),
            (
                json!({"ports": [22], "approvers": ["local:*a"]}),
                "InvalidApprovers",
            ),
            (
                json!({"ports": [22], "approvers": [""]}),
                "InvalidApprovers",
            ),
            (
                json!({"ports": [22], "aprovers": ["local:bob"]}),
                "InvalidPolicyDocument",
            ),
            (json!([22]), "InvalidPolicyDocument"),
        ];
        for (body, code) in cases {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(err.code(), code, "{body}: {err}");
            assert_eq!(err.http_status(), 400);
        }
    }

    #[test]
    fn messages_say_what_to_fix() {
        let err = parse(json!({"ports": [{"number": 22, "maxRequestAccessDuration": "PT25H"}]}))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "port 22: maxRequestAccessDuration: a maximum request access duration of PT25H is out of range; it must be from PT5M to PT24H"
        );
        let err = parse(json!({"ports": [22, 22]})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "port 22 is listed twice; list each port once"
        );
    }

    #[test]
    fn stored_form_round_trips_and_is_revalidated() {
        let policy = parse(json!({"ports": [22], "approvers": ["local:bob"]}))
            .unwrap()
            .with_version(7);
        let text = serde_json::to_string(&policy).unwrap();
        assert!(
            text.contains("\"allowedSourceAddressPrefixes\":[\"*\"]"),
            "{text}"
        );
        let back: Policy = serde_json::from_str(&text).unwrap();
        assert_eq!(back, policy);
        assert_eq!(back.version(), 7);
        let broken = text.replace("\"requesters\":[\"*\"]", "\"requesters\":[]");
        assert!(serde_json::from_str::<Policy>(&broken).is_err());
    }
}

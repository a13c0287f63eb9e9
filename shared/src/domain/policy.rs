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
use crate::notify::{is_conversation_id, is_webhook_name};

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
    #[error(
        "breakGlass.principals is empty, so nobody could break glass; name the principals who may open access without waiting for approval, or leave breakGlass out"
    )]
    NoBreakGlassPrincipals,
    #[error("breakGlass.principals[{index}]: {source}")]
    BreakGlassPrincipal {
        index: usize,
        source: PrincipalError,
    },
    #[error(
        "breakGlass.maxRequestAccessDuration is missing; give the longest a break-glass grant may last, such as PT30M, no longer than {shortest} (the shortest maxRequestAccessDuration of the ports)"
    )]
    NoBreakGlassDuration { shortest: MaxAccessDuration },
    #[error("breakGlass.maxRequestAccessDuration: {source}")]
    BreakGlassDuration { source: DurationError },
    #[error(
        "breakGlass.maxRequestAccessDuration {max} is longer than port {port}'s maxRequestAccessDuration of {port_max}; break-glass access must be shorter than ordinary access, so give {port_max} or less"
    )]
    BreakGlassLongerThanPort {
        max: MaxAccessDuration,
        port: Port,
        port_max: MaxAccessDuration,
    },
    #[error(
        "notify.slack {0:?} is not a Slack conversation id; give the channel's id (such as C0123ABCD, shown at the bottom of the channel's details in Slack), not its name"
    )]
    NotifySlack(String),
    #[error(
        "notify.teams {0:?} is not a Teams webhook name; give the name the deployment's webhook is configured under: 1 to 64 letters, digits, '-' or '_'"
    )]
    NotifyTeams(String),
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
            PolicyError::TooManyPrincipals {
                field: BREAK_GLASS_PRINCIPALS,
                ..
            }
            | PolicyError::NoBreakGlassPrincipals
            | PolicyError::BreakGlassPrincipal { .. }
            | PolicyError::NoBreakGlassDuration { .. }
            | PolicyError::BreakGlassDuration { .. }
            | PolicyError::BreakGlassLongerThanPort { .. } => "InvalidBreakGlass",
            PolicyError::NoRequesters
            | PolicyError::Requester { .. }
            | PolicyError::TooManyPrincipals { .. } => "InvalidRequesters",
            PolicyError::Approver { .. } => "InvalidApprovers",
            PolicyError::OtherVm(_) | PolicyError::VmMissing => "VmMismatch",
            PolicyError::NotifySlack(_) | PolicyError::NotifyTeams(_) => "InvalidNotify",
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

/// The field name of break-glass principals, in messages.
const BREAK_GLASS_PRINCIPALS: &str = "breakGlass.principals";

/// Who may open access without waiting for an approver (breaking the
/// glass), and for how long at most: never longer than the shortest port
/// maximum of the policy, so an emergency grant is always the shorter one.
/// A break-glass request still needs a justification and is checked against
/// the ports and source prefixes like any other; only the approval is
/// skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakGlass {
    principals: Vec<PrincipalPattern>,
    max_request_access_duration: MaxAccessDuration,
}

impl BreakGlass {
    pub fn principals(&self) -> &[PrincipalPattern] {
        &self.principals
    }
    pub fn max_request_access_duration(&self) -> MaxAccessDuration {
        self.max_request_access_duration
    }
    /// Whether `who` is one of the break-glass principals.
    pub fn allows(&self, who: &Principal) -> bool {
        self.principals.iter().any(|p| p.matches(who))
    }
}

/// Where a policy's notices go, instead of the deployment's channels: a
/// Slack conversation id and the name of a configured Teams webhook. Both
/// optional; checked for form only here (whether the webhook name is
/// configured is the deployment's to say).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifyTargets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    teams: Option<String>,
}

impl NotifyTargets {
    /// Checks both names for form.
    pub fn parse(slack: Option<&str>, teams: Option<&str>) -> Result<Self, PolicyError> {
        if let Some(id) = slack.filter(|id| !is_conversation_id(id)) {
            return Err(PolicyError::NotifySlack(id.chars().take(60).collect()));
        }
        if let Some(name) = teams.filter(|name| !is_webhook_name(name)) {
            return Err(PolicyError::NotifyTeams(name.chars().take(60).collect()));
        }
        Ok(Self {
            slack: slack.map(str::to_owned),
            teams: teams.map(str::to_owned),
        })
    }
    pub fn slack(&self) -> Option<&str> {
        self.slack.as_deref()
    }
    pub fn teams(&self) -> Option<&str> {
        self.teams.as_deref()
    }
    pub fn is_empty(&self) -> bool {
        self.slack.is_none() && self.teams.is_none()
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    break_glass: Option<BreakGlass>,
    #[serde(default, skip_serializing_if = "NotifyTargets::is_empty")]
    notify: NotifyTargets,
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
        let break_glass = document
            .break_glass
            .as_ref()
            .map(|body| parse_break_glass(body, &ports))
            .transpose()?;
        let notify = match &document.notify {
            None => NotifyTargets::default(),
            Some(body) => NotifyTargets::parse(body.slack.as_deref(), body.teams.as_deref())?,
        };
        Ok(Self {
            vm,
            ports,
            requesters,
            approvers,
            break_glass,
            notify,
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
    /// Who may open access without waiting for approval, if anyone.
    pub fn break_glass(&self) -> Option<&BreakGlass> {
        self.break_glass.as_ref()
    }
    /// Whether `who` may break glass on this VM.
    pub fn allows_break_glass(&self, who: &Principal) -> bool {
        self.break_glass.as_ref().is_some_and(|bg| bg.allows(who))
    }
    /// Where this policy's notices go; empty for the deployment's channels.
    pub fn notify(&self) -> &NotifyTargets {
        &self.notify
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
    /// Whether the grant was opened by breaking glass (without approval):
    /// it is then held to the policy's break-glass rules, not its requesters.
    pub break_glass: bool,
    pub port: Port,
    pub protocol: Option<Protocol>,
    pub source: &'a SourcePrefix,
    pub end: Timestamp,
}

impl Policy {
    /// Why this policy would refuse `held` were it asked for at `now`, in
    /// words for the record; `None` when it still allows it. Approvers are
    /// not re-checked: a grant approved before approvers were added stays.
    /// A break-glass grant had no approval, so it stays only while the
    /// policy still lets its requestor break glass, for no longer than the
    /// break-glass maximum.
    pub fn refusal_of(&self, held: &HeldGrant<'_>, now: Timestamp) -> Option<String> {
        let break_glass = if held.break_glass {
            let Some(bg) = self.break_glass() else {
                return Some("the policy no longer allows break-glass access".to_owned());
            };
            if let Some(who) = held.requestor.filter(|who| !bg.allows(who)) {
                return Some(format!(
                    "{who} is no longer among the policy's break-glass principals"
                ));
            }
            Some(bg)
        } else {
            if let Some(who) = held.requestor.filter(|who| !self.allows_requester(who)) {
                return Some(format!("{who} is no longer among the policy's requesters"));
            }
            None
        };
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
        let max = match break_glass {
            Some(bg) => bg
                .max_request_access_duration()
                .min(rule.max_request_access_duration()),
            None => rule.max_request_access_duration(),
        };
        let latest = now.checked_add(max.get()).unwrap_or(now);
        if held.end > latest {
            let what = if break_glass.is_some() {
                "break-glass access to port"
            } else {
                "port"
            };
            return Some(format!(
                "the policy now allows {what} {port} for {max} at most, and this grant ends later"
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
    break_glass: Option<BreakGlassBody>,
    notify: Option<NotifyBody>,
    close_standing_access: Option<bool>,
}

/// `"breakGlass": {"principals": [...], "maxRequestAccessDuration": "PT30M"}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BreakGlassBody {
    principals: Vec<String>,
    max_request_access_duration: Option<String>,
}

/// `"notify": {"slack": "C0123ABCD", "teams": "ops"}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyBody {
    slack: Option<String>,
    teams: Option<String>,
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
    break_glass: Option<Value>,
    notify: Option<Value>,
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
    break_glass: Option<Value>,
    notify: Option<Value>,
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
                break_glass: section(doc.break_glass, "breakGlass")?,
                notify: section(doc.notify, "notify")?,
                close_standing_access: doc.close_standing_access,
            });
        }
        let doc: FlatDocument = serde_json::from_value(value).map_err(shape)?;
        Ok(Self {
            ports: PortsSource::Flat(doc.ports),
            requesters: doc.requesters,
            approvers: doc.approvers,
            break_glass: section(doc.break_glass, "breakGlass")?,
            notify: section(doc.notify, "notify")?,
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

/// An optional object of the document, read on its own so that a mistake
/// in it names it (`breakGlass: unknown field ...`).
fn section<T: serde::de::DeserializeOwned>(
    value: Option<Value>,
    name: &str,
) -> Result<Option<T>, PolicyError> {
    value
        .map(|v| serde_json::from_value(v).map_err(|e| PolicyError::Shape(format!("{name}: {e}"))))
        .transpose()
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

fn parse_break_glass(body: &BreakGlassBody, ports: &[PortRule]) -> Result<BreakGlass, PolicyError> {
    let list = &body.principals;
    if list.is_empty() {
        return Err(PolicyError::NoBreakGlassPrincipals);
    }
    if list.len() > MAX_PRINCIPALS {
        return Err(PolicyError::TooManyPrincipals {
            field: BREAK_GLASS_PRINCIPALS,
            count: list.len(),
            max: MAX_PRINCIPALS,
        });
    }
    let mut principals: Vec<PrincipalPattern> = Vec::with_capacity(list.len());
    for (index, text) in list.iter().enumerate() {
        let who = PrincipalPattern::parse(text)
            .map_err(|source| PolicyError::BreakGlassPrincipal { index, source })?;
        if !principals.contains(&who) {
            principals.push(who);
        }
    }
    let max = match &body.max_request_access_duration {
        Some(text) => MaxAccessDuration::parse(text)
            .map_err(|source| PolicyError::BreakGlassDuration { source })?,
        None => {
            return Err(PolicyError::NoBreakGlassDuration {
                shortest: shortest_port(ports).map_or(MaxAccessDuration::DEFAULT, |r| {
                    r.max_request_access_duration
                }),
            });
        }
    };
    let break_glass = BreakGlass {
        principals,
        max_request_access_duration: max,
    };
    check_break_glass(&break_glass, ports)?;
    Ok(break_glass)
}

/// The port with the shortest maximum: break-glass access is never longer.
fn shortest_port(ports: &[PortRule]) -> Option<&PortRule> {
    ports.iter().min_by_key(|r| r.max_request_access_duration)
}

/// What a stored policy must hold of its break-glass part too.
fn check_break_glass(bg: &BreakGlass, ports: &[PortRule]) -> Result<(), PolicyError> {
    if bg.principals.is_empty() {
        return Err(PolicyError::NoBreakGlassPrincipals);
    }
    if let Some(rule) = shortest_port(ports)
        .filter(|r| bg.max_request_access_duration > r.max_request_access_duration)
    {
        return Err(PolicyError::BreakGlassLongerThanPort {
            max: bg.max_request_access_duration,
            port: rule.number,
            port_max: rule.max_request_access_duration,
        });
    }
    Ok(())
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
    break_glass: Option<BreakGlass>,
    #[serde(default)]
    notify: NotifyTargets,
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
        if let Some(bg) = &s.break_glass {
            check_break_glass(bg, &s.ports)?;
        }
        let notify = NotifyTargets::parse(s.notify.slack(), s.notify.teams())?;
        Ok(Self {
            vm: s.vm,
            ports: s.ports,
            requesters: s.requesters,
            approvers: s.approvers,
            break_glass: s.break_glass,
            notify,
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
            break_glass: false,
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

    fn break_glass_policy(break_glass: Value) -> Result<Policy, PolicyError> {
        parse(json!({
            "ports": [{"number": 22, "maxRequestAccessDuration": "PT3H"},
                      {"number": 3389, "maxRequestAccessDuration": "PT1H"}],
            "requesters": ["local:alice"],
            "approvers": ["local:bob"],
            "breakGlass": break_glass
        }))
    }

    #[test]
    fn break_glass_is_read_and_shown_in_the_same_shape() {
        let policy = break_glass_policy(json!({
            "principals": ["local:oncall", "slack:T1/*"],
            "maxRequestAccessDuration": "PT30M"
        }))
        .unwrap();
        let bg = policy.break_glass().unwrap();
        assert_eq!(bg.principals().len(), 2);
        assert_eq!(bg.max_request_access_duration().to_string(), "PT30M");
        assert!(policy.allows_break_glass(&Principal::parse("slack:T1/U7").unwrap()));
        assert!(!policy.allows_break_glass(&Principal::parse("local:alice").unwrap()));
        let v = serde_json::to_value(&policy).unwrap();
        assert_eq!(
            v["breakGlass"],
            json!({"principals": ["local:oncall", "slack:T1/*"], "maxRequestAccessDuration": "PT30M"})
        );
        let back: Policy = serde_json::from_value(v).unwrap();
        assert_eq!(back, policy);
        // Equal to the shortest port maximum is allowed; no approvers too.
        let equal = parse(
            json!({"ports": [{"number": 22, "maxRequestAccessDuration": "PT1H"}],
            "breakGlass": {"principals": ["local:oncall"], "maxRequestAccessDuration": "PT1H"}}),
        )
        .unwrap();
        assert!(!equal.needs_approval());
        assert!(equal.break_glass().is_some());
        // Without breakGlass there is none, and the stored form says nothing.
        let plain = parse(json!({"ports": [22]})).unwrap();
        assert!(plain.break_glass().is_none());
        let text = serde_json::to_string(&plain).unwrap();
        assert!(
            !text.contains("breakGlass") && !text.contains("notify"),
            "{text}"
        );
    }

    #[test]
    fn break_glass_refusals_say_what_to_fix() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"principals": [], "maxRequestAccessDuration": "PT30M"}),
                "breakGlass.principals is empty",
            ),
            (
                json!({"principals": ["two words"], "maxRequestAccessDuration": "PT30M"}),
                "breakGlass.principals[0]",
            ),
            (
                json!({"principals": ["local:*a"], "maxRequestAccessDuration": "PT30M"}),
                "breakGlass.principals[0]",
            ),
            (
                json!({"principals": ["local:oncall"]}),
                "no longer than PT1H",
            ),
            (
                json!({"principals": ["local:oncall"], "maxRequestAccessDuration": "PT0S"}),
                "breakGlass.maxRequestAccessDuration",
            ),
            (
                json!({"principals": ["local:oncall"], "maxRequestAccessDuration": "-PT30M"}),
                "breakGlass.maxRequestAccessDuration",
            ),
            (
                json!({"principals": ["local:oncall"], "maxRequestAccessDuration": "soon"}),
                "breakGlass.maxRequestAccessDuration",
            ),
            (
                json!({"principals": ["local:oncall"], "maxRequestAccessDuration": "PT2H"}),
                "breakGlass.maxRequestAccessDuration PT2H is longer than port 3389's maxRequestAccessDuration of PT1H",
            ),
            (
                json!({"principals": ["local:oncall"], "maxRequestAccessDuration": "PT30M", "approvers": []}),
                "breakGlass",
            ),
            (
                json!({"principals": "local:oncall", "maxRequestAccessDuration": "PT30M"}),
                "breakGlass",
            ),
            (
                json!({"principals": vec!["local:x"; MAX_PRINCIPALS + 1], "maxRequestAccessDuration": "PT30M"}),
                "breakGlass.principals lists",
            ),
        ];
        for (bg, says) in cases {
            let err = break_glass_policy(bg.clone()).unwrap_err();
            assert_eq!(err.http_status(), 400);
            assert!(err.to_string().contains(says), "{bg}: {err}");
            let shape = matches!(err, PolicyError::Shape(_));
            let code = if shape {
                "InvalidPolicyDocument"
            } else {
                "InvalidBreakGlass"
            };
            assert_eq!(err.code(), code, "{bg}: {err}");
        }
    }

    #[test]
    fn a_stored_break_glass_longer_than_a_port_is_refused_on_read() {
        let policy = break_glass_policy(
            json!({"principals": ["local:oncall"], "maxRequestAccessDuration": "PT30M"}),
        )
        .unwrap();
        let text = serde_json::to_string(&policy).unwrap();
        let longer = text.replace(
            "\"maxRequestAccessDuration\":\"PT30M\"",
            "\"maxRequestAccessDuration\":\"PT2H\"",
        );
        assert_ne!(longer, text);
        assert!(serde_json::from_str::<Policy>(&longer).is_err());
        let empty = text.replace("\"principals\":[\"local:oncall\"]", "\"principals\":[]");
        assert!(serde_json::from_str::<Policy>(&empty).is_err());
        // A policy stored before break-glass existed still reads.
        let old = serde_json::to_string(&parse(json!({"ports": [22]})).unwrap()).unwrap();
        assert!(
            serde_json::from_str::<Policy>(&old)
                .unwrap()
                .break_glass()
                .is_none()
        );
    }

    #[test]
    fn a_held_break_glass_grant_is_held_to_the_break_glass_rules() {
        let policy = break_glass_policy(
            json!({"principals": ["local:oncall"], "maxRequestAccessDuration": "PT30M"}),
        )
        .unwrap();
        let now: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let oncall = Principal::parse("local:oncall").unwrap();
        let alice = Principal::parse("local:alice").unwrap();
        let source = SourcePrefix::parse("203.0.113.7").unwrap();
        let held = HeldGrant {
            requestor: Some(&oncall),
            break_glass: true,
            port: Port::parse(22).unwrap(),
            protocol: Some(Protocol::Any),
            source: &source,
            end: now
                .checked_add(jiff::SignedDuration::from_mins(20))
                .unwrap(),
        };
        // Not a requester, but a break-glass principal: it stays.
        assert_eq!(policy.refusal_of(&held, now), None);
        let longer = HeldGrant {
            end: now
                .checked_add(jiff::SignedDuration::from_mins(45))
                .unwrap(),
            ..held
        };
        assert!(
            policy
                .refusal_of(&longer, now)
                .unwrap()
                .contains("break-glass")
        );
        let someone_else = HeldGrant {
            requestor: Some(&alice),
            ..held
        };
        assert!(
            policy
                .refusal_of(&someone_else, now)
                .unwrap()
                .contains("break-glass principals")
        );
        let without = parse(json!({"ports": [22], "requesters": ["local:oncall"]})).unwrap();
        assert_eq!(
            without.refusal_of(&held, now).as_deref(),
            Some("the policy no longer allows break-glass access")
        );
        // The same grant opened the ordinary way is held to the requesters.
        let ordinary = HeldGrant {
            break_glass: false,
            ..held
        };
        assert!(
            policy
                .refusal_of(&ordinary, now)
                .unwrap()
                .contains("requesters")
        );
    }

    #[test]
    fn notify_targets_are_checked_and_round_trip() {
        let policy =
            parse(json!({"ports": [22], "notify": {"slack": "C0123ABCD", "teams": "ops"}}))
                .unwrap();
        assert_eq!(policy.notify().slack(), Some("C0123ABCD"));
        assert_eq!(policy.notify().teams(), Some("ops"));
        assert!(!policy.notify().is_empty());
        let v = serde_json::to_value(&policy).unwrap();
        assert_eq!(v["notify"], json!({"slack": "C0123ABCD", "teams": "ops"}));
        let back: Policy = serde_json::from_value(v).unwrap();
        assert_eq!(back, policy);
        let only_teams = parse(json!({"ports": [22], "notify": {"teams": "ops-1"}})).unwrap();
        assert_eq!(only_teams.notify().slack(), None);
        assert!(
            parse(json!({"ports": [22], "notify": {}}))
                .unwrap()
                .notify()
                .is_empty()
        );
        assert!(parse(json!({"ports": [22]})).unwrap().notify().is_empty());
        let cases: Vec<(Value, &str)> = vec![
            (json!({"slack": "#ops"}), "InvalidNotify"),
            (json!({"slack": "c0123abcd"}), "InvalidNotify"),
            (json!({"slack": ""}), "InvalidNotify"),
            (json!({"teams": "ops team"}), "InvalidNotify"),
            (json!({"teams": "x".repeat(65)}), "InvalidNotify"),
            (json!({"email": "ops@example.com"}), "InvalidPolicyDocument"),
            (json!({"slack": 5}), "InvalidPolicyDocument"),
        ];
        for (notify, code) in cases {
            let err = parse(json!({"ports": [22], "notify": notify})).unwrap_err();
            assert_eq!(err.code(), code, "{notify}: {err}");
        }
        let err = parse(json!({"ports": [22], "notify": {"slack": "#ops"}})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("notify.slack \"#ops\" is not a Slack conversation id"),
            "{err}"
        );
        // The stored form is checked again when read.
        let text = serde_json::to_string(&policy)
            .unwrap()
            .replace("C0123ABCD", "#ops");
        assert!(serde_json::from_str::<Policy>(&text).is_err());
    }

    #[test]
    fn the_azure_shape_takes_break_glass_and_notify_too() {
        let policy = parse(json!({
            "properties": {"virtualMachines": [{"id": VM, "ports": [{"number": 22, "maxRequestAccessDuration": "PT1H"}]}]},
            "breakGlass": {"principals": ["local:oncall"], "maxRequestAccessDuration": "PT15M"},
            "notify": {"slack": "C0123ABCD"}
        }))
        .unwrap();
        assert!(policy.break_glass().is_some());
        assert_eq!(policy.notify().slack(), Some("C0123ABCD"));
    }
}

//! Access requests in the shape of Azure's JIT "initiate" call.

use std::collections::BTreeSet;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::duration::{AccessDuration, DurationError};
use super::evaluate::Grant;
use super::port::{Port, PortError};
use super::prefix::{PrefixError, SourcePrefix};
use super::principal::{Principal, PrincipalError};
use super::text::{Justification, TextError};
use super::vm::{VmId, VmIdError};

/// At most this many ports in one request.
pub const MAX_REQUEST_PORTS: usize = 16;

/// Why a request body was refused before any policy was consulted. Each is
/// the caller's to fix (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the request is not valid JSON of the expected shape: {0}")]
    Shape(String),
    #[error("virtualMachines must name exactly one VM (it names {0}); send one request per VM")]
    VmCount(usize),
    #[error("virtualMachines[0].id: {0}")]
    Vm(#[from] VmIdError),
    #[error("ports must list at least one port")]
    NoPorts,
    #[error("ports lists {count} ports; at most {max} are allowed in one request")]
    TooManyPorts { count: usize, max: usize },
    #[error("ports[{index}]: {source}")]
    Port { index: usize, source: PortError },
    #[error("port {0} is listed twice; list each port once")]
    DuplicatePort(Port),
    #[error("port {port}: give duration or endTimeUtc, not both")]
    BothWindows { port: Port },
    #[error("port {port}: duration: {source}")]
    Duration { port: Port, source: DurationError },
    #[error(
        "port {port}: endTimeUtc {text:?} is not an RFC 3339 UTC time such as 2026-11-23T12:00:00Z"
    )]
    EndTime { port: Port, text: String },
    #[error("port {port}: allowedSourceAddressPrefix: {source}")]
    Prefix { port: Port, source: PrefixError },
    #[error("{0}")]
    Justification(#[from] TextError),
    #[error("requestor: {0}")]
    Requestor(#[from] PrincipalError),
    #[error(
        "request id {0:?} must be 1 to 40 letters, digits, '-' or '_', starting and ending with a letter or digit"
    )]
    Id(String),
}

impl RequestError {
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Shape(_) | RequestError::VmCount(_) => "InvalidRequest",
            RequestError::Vm(_) => "InvalidVmId",
            RequestError::NoPorts
            | RequestError::TooManyPorts { .. }
            | RequestError::Port { .. }
            | RequestError::DuplicatePort(_) => "InvalidPort",
            RequestError::BothWindows { .. }
            | RequestError::Duration { .. }
            | RequestError::EndTime { .. } => "InvalidDuration",
            RequestError::Prefix { .. } => "InvalidSourcePrefix",
            RequestError::Justification(_) => "InvalidJustification",
            RequestError::Id(_) => "InvalidRequestId",
            RequestError::Requestor(_) => "InvalidRequestor",
        }
    }

    pub fn http_status(&self) -> u16 {
        400
    }
}

/// A request's identifier: it keys the record, deduplicates the queue
/// message and is written into every firewall rule the request opens, so it
/// is short and made only of characters every provider accepts in a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(String);

impl RequestId {
    pub const MAX_LEN: usize = 40;

    pub fn parse(text: &str) -> Result<Self, RequestError> {
        let ok_inner = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        let bytes = text.as_bytes();
        let valid = (1..=Self::MAX_LEN).contains(&bytes.len())
            && bytes.iter().all(|&b| ok_inner(b))
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
        if !valid {
            return Err(RequestError::Id(text.chars().take(60).collect()));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RequestId {
    type Error = RequestError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<RequestId> for String {
    fn from(value: RequestId) -> Self {
        value.0
    }
}

/// The body of `POST /v1/requests`, as Azure's initiate call spells it, with
/// `duration` accepted beside `endTimeUtc`. Unknown fields are refused.
/// `"breakGlass": true` asks to open without waiting for an approver,
/// which the policy must allow the caller (see [`super::policy::BreakGlass`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InitiateBody {
    pub virtual_machines: Vec<InitiateVm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub break_glass: bool,
}

/// Whether a flag is off, so that it is left out of what is written.
pub(crate) fn is_false(flag: &bool) -> bool {
    !flag
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InitiateVm {
    pub id: String,
    pub ports: Vec<InitiatePort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InitiatePort {
    pub number: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_source_address_prefix: Option<String>,
}

impl InitiateBody {
    pub fn from_json(body: &[u8]) -> Result<Self, RequestError> {
        serde_json::from_slice(body).map_err(|e| RequestError::Shape(e.to_string()))
    }
}

/// A request as it travels on the queue: the initiate body plus the
/// request's `id` and its `requestor`. Other systems may send the same
/// thing; the grant function trusts the sender for `requestor` and checks
/// everything else against the policy again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestMessage {
    pub id: String,
    pub requestor: String,
    pub virtual_machines: Vec<InitiateVm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// A break-glass request: the grant function checks it against the
    /// policy's break-glass rules again, and opens it without an approval.
    #[serde(default, skip_serializing_if = "is_false")]
    pub break_glass: bool,
}

impl RequestMessage {
    /// The message for an accepted request: every port names the source and
    /// end time that were decided, so that the grant opens exactly that,
    /// never more, however late the message is read.
    pub fn accepted(request: &AccessRequest, requestor: &Principal, grants: &[Grant]) -> Self {
        let mut body = request.to_body();
        body.virtual_machines[0].ports = grants
            .iter()
            .map(|g| InitiatePort {
                number: i64::from(g.port().get()),
                duration: None,
                end_time_utc: Some(g.end().to_string()),
                allowed_source_address_prefix: Some(g.source().to_string()),
            })
            .collect();
        Self {
            id: request.id().to_string(),
            requestor: requestor.to_string(),
            virtual_machines: body.virtual_machines,
            justification: body.justification,
            break_glass: body.break_glass,
        }
    }

    pub fn from_json(body: &str) -> Result<Self, RequestError> {
        serde_json::from_str(body).map_err(|e| RequestError::Shape(e.to_string()))
    }

    /// The request id, if it is one: a message whose id is unreadable cannot
    /// be recorded anywhere.
    pub fn request_id(&self) -> Result<RequestId, RequestError> {
        RequestId::parse(&self.id)
    }

    pub fn parse(&self) -> Result<(AccessRequest, Principal), RequestError> {
        let id = self.request_id()?;
        let requestor = Principal::parse(&self.requestor)?;
        let body = InitiateBody {
            virtual_machines: self.virtual_machines.clone(),
            justification: self.justification.clone(),
            break_glass: self.break_glass,
        };
        Ok((AccessRequest::parse(id, &body)?, requestor))
    }
}

/// How long a port should stay open: for a duration from when the grant is
/// decided, or until a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Duration(AccessDuration),
    EndTime(Timestamp),
}

/// One port of a request. `window` and `source` are optional: a missing
/// window means the policy's maximum, and a missing source means the
/// caller's own address where the caller is a person calling directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortAsk {
    pub number: Port,
    pub window: Option<Window>,
    pub source: Option<SourcePrefix>,
}

/// A well-formed access request: one VM, distinct ports, valid values. It
/// has not yet been checked against any policy; see [`super::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    id: RequestId,
    vm: VmId,
    ports: Vec<PortAsk>,
    justification: Option<Justification>,
    break_glass: bool,
}

impl AccessRequest {
    pub fn parse(id: RequestId, body: &InitiateBody) -> Result<Self, RequestError> {
        let [vm] = body.virtual_machines.as_slice() else {
            return Err(RequestError::VmCount(body.virtual_machines.len()));
        };
        let vm_id = VmId::parse(&vm.id)?;
        if vm.ports.is_empty() {
            return Err(RequestError::NoPorts);
        }
        if vm.ports.len() > MAX_REQUEST_PORTS {
            return Err(RequestError::TooManyPorts {
                count: vm.ports.len(),
                max: MAX_REQUEST_PORTS,
            });
        }
        let mut seen = BTreeSet::new();
        let mut ports = Vec::with_capacity(vm.ports.len());
        for (index, p) in vm.ports.iter().enumerate() {
            let ask = parse_port(index, p)?;
            if !seen.insert(ask.number) {
                return Err(RequestError::DuplicatePort(ask.number));
            }
            ports.push(ask);
        }
        let justification = match &body.justification {
            Some(text) if !text.trim().is_empty() => Some(Justification::parse(text)?),
            _ => None,
        };
        Ok(Self {
            id,
            vm: vm_id,
            ports,
            justification,
            break_glass: body.break_glass,
        })
    }

    pub fn id(&self) -> &RequestId {
        &self.id
    }
    pub fn vm(&self) -> &VmId {
        &self.vm
    }
    /// Whether `port` is asked for until a named time (`endTimeUtc`),
    /// rather than for a duration or the policy's maximum, which count from
    /// when the request is accepted.
    pub fn names_end_time(&self, port: Port) -> bool {
        self.ports
            .iter()
            .any(|p| p.number == port && matches!(p.window, Some(Window::EndTime(_))))
    }

    pub fn ports(&self) -> &[PortAsk] {
        &self.ports
    }
    pub fn justification(&self) -> Option<&Justification> {
        self.justification.as_ref()
    }
    /// Whether the request asks to open without waiting for an approver.
    pub fn break_glass(&self) -> bool {
        self.break_glass
    }

    /// The request back in its wire shape, for the queue: parsing the result
    /// gives this request again.
    pub fn to_body(&self) -> InitiateBody {
        InitiateBody {
            virtual_machines: vec![InitiateVm {
                id: self.vm.to_string(),
                ports: self
                    .ports
                    .iter()
                    .map(|p| InitiatePort {
                        number: i64::from(p.number.get()),
                        duration: match p.window {
                            Some(Window::Duration(d)) => Some(d.to_string()),
                            _ => None,
                        },
                        end_time_utc: match p.window {
                            Some(Window::EndTime(t)) => Some(t.to_string()),
                            _ => None,
                        },
                        allowed_source_address_prefix: p.source.map(|s| s.to_string()),
                    })
                    .collect(),
            }],
            justification: self.justification.as_ref().map(|j| j.as_str().to_owned()),
            break_glass: self.break_glass,
        }
    }
}

fn parse_port(index: usize, p: &InitiatePort) -> Result<PortAsk, RequestError> {
    let number = Port::parse(p.number).map_err(|source| RequestError::Port { index, source })?;
    let window = match (&p.duration, &p.end_time_utc) {
        (Some(_), Some(_)) => return Err(RequestError::BothWindows { port: number }),
        (Some(d), None) => Some(Window::Duration(AccessDuration::parse(d).map_err(
            |source| RequestError::Duration {
                port: number,
                source,
            },
        )?)),
        (None, Some(t)) => Some(Window::EndTime(t.trim().parse::<Timestamp>().map_err(
            |_| RequestError::EndTime {
                port: number,
                text: t.chars().take(60).collect(),
            },
        )?)),
        (None, None) => None,
    };
    let source = match &p.allowed_source_address_prefix {
        None => None,
        Some(text) => Some(
            SourcePrefix::parse(text).map_err(|source| RequestError::Prefix {
                port: number,
                source,
            })?,
        ),
    };
    Ok(PortAsk {
        number,
        window,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AZURE_INITIATE: &str = r#"{
        "virtualMachines": [{
            "id": "/subscriptions/20ff7fc3-e762-44dd-bd96-b71116dcdc23/resourceGroups/myRg1/providers/Microsoft.Compute/virtualMachines/vm1",
            "ports": [{"number": 3389, "endTimeUtc": "2018-07-12T09:53:03.3658798Z", "allowedSourceAddressPrefix": "192.127.0.2"}]
        }],
        "justification": "testing a new version of the product"
    }"#;

    fn id() -> RequestId {
        RequestId::parse("r-1").unwrap()
    }

    fn parse(json: &str) -> Result<AccessRequest, RequestError> {
        AccessRequest::parse(id(), &InitiateBody::from_json(json.as_bytes())?)
    }

    #[test]
    fn azure_initiate_example_parses() {
        let req = parse(AZURE_INITIATE).unwrap();
        assert_eq!(req.vm().short_name(), "vm1");
        let port = &req.ports()[0];
        assert_eq!(port.number.get(), 3389);
        assert_eq!(
            port.window,
            Some(Window::EndTime(
                "2018-07-12T09:53:03.3658798Z".parse().unwrap()
            ))
        );
        assert_eq!(port.source.unwrap().to_string(), "192.127.0.2/32");
        assert_eq!(
            req.justification().unwrap().as_str(),
            "testing a new version of the product"
        );
    }

    #[test]
    fn wire_round_trip() {
        let req = parse(
            r#"{"virtualMachines":[{"id":"arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0",
                "ports":[{"number":22,"duration":"PT1H"},{"number":3389,"endTimeUtc":"2026-11-23T12:00:00+01:00"}]}]}"#,
        )
        .unwrap();
        let again = AccessRequest::parse(id(), &req.to_body()).unwrap();
        assert_eq!(again, req);
        assert_eq!(
            req.ports()[1].window,
            Some(Window::EndTime("2026-11-23T11:00:00Z".parse().unwrap()))
        );
    }

    #[test]
    fn shape_refusals() {
        let vm = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";
        let cases = [
            (r#"{"virtualMachines":[]}"#.to_owned(), "InvalidRequest"),
            ("not json".to_owned(), "InvalidRequest"),
            (
                format!(r#"{{"virtualMachines":[{{"id":"{vm}","ports":[]}}]}}"#),
                "InvalidPort",
            ),
            (
                format!(r#"{{"virtualMachines":[{{"id":"{vm}","ports":[{{"number":99999}}]}}]}}"#),
                "InvalidPort",
            ),
            (
                format!(
                    r#"{{"virtualMachines":[{{"id":"{vm}","ports":[{{"number":22}},{{"number":22}}]}}]}}"#
                ),
                "InvalidPort",
            ),
            (
                format!(
                    r#"{{"virtualMachines":[{{"id":"{vm}","ports":[{{"number":22,"duration":"PT1H","endTimeUtc":"2026-11-23T12:00:00Z"}}]}}]}}"#
                ),
                "InvalidDuration",
            ),
            (
                format!(
                    r#"{{"virtualMachines":[{{"id":"{vm}","ports":[{{"number":22,"duration":"PT0S"}}]}}]}}"#
                ),
                "InvalidDuration",
            ),
            (
                format!(
                    r#"{{"virtualMachines":[{{"id":"{vm}","ports":[{{"number":22,"endTimeUtc":"tomorrow"}}]}}]}}"#
                ),
                "InvalidDuration",
            ),
            (
                format!(
                    r#"{{"virtualMachines":[{{"id":"{vm}","ports":[{{"number":22,"endTimeUtc":"2026-11-23T12:00:00"}}]}}]}}"#
                ),
                "InvalidDuration",
            ),
            (
                format!(
                    r#"{{"virtualMachines":[{{"id":"{vm}","ports":[{{"number":22,"allowedSourceAddressPrefix":"10.0.0.1/8"}}]}}]}}"#
                ),
                "InvalidSourcePrefix",
            ),
            (
                format!(
                    r#"{{"virtualMachines":[{{"id":"{vm}","ports":[{{"number":22}}]}}],"justification":"a\u0000b"}}"#
                ),
                "InvalidJustification",
            ),
            (
                format!(
                    r#"{{"virtualMachines":[{{"id":"{vm}","ports":[{{"number":22,"protocol":"tcp"}}]}}]}}"#
                ),
                "InvalidRequest",
            ),
            (
                r#"{"virtualMachines":[{"id":"i-123","ports":[{"number":22}]}]}"#.to_owned(),
                "InvalidVmId",
            ),
        ];
        for (json, code) in cases {
            let err = parse(&json).unwrap_err();
            assert_eq!(err.code(), code, "{json}: {err}");
            assert_eq!(err.http_status(), 400);
        }
        let two = format!(
            r#"{{"virtualMachines":[{{"id":"{vm}","ports":[{{"number":22}}]}},{{"id":"{vm}","ports":[{{"number":22}}]}}]}}"#
        );
        assert_eq!(parse(&two).unwrap_err(), RequestError::VmCount(2));
    }

    #[test]
    fn request_ids() {
        assert!(RequestId::parse("01JD5Z7K4M8Q2R3S4T5V6W7X8Y").is_ok());
        assert!(RequestId::parse("550e8400-e29b-41d4-a716-446655440000").is_ok());
        for bad in ["", "-a", "a-", "a b", "a/b", &"a".repeat(41)] {
            assert!(RequestId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn break_glass_is_read_and_carried_to_the_queue() {
        let vm = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";
        let req = parse(&format!(
            r#"{{"virtualMachines":[{{"id":"{vm}","ports":[{{"number":22,"duration":"PT10M"}}]}}],"justification":"prod down","breakGlass":true}}"#
        ))
        .unwrap();
        assert!(req.break_glass());
        let body = serde_json::to_value(req.to_body()).unwrap();
        assert_eq!(body["breakGlass"], true);
        assert_eq!(AccessRequest::parse(id(), &req.to_body()).unwrap(), req);
        let message =
            RequestMessage::accepted(&req, &Principal::parse("local:oncall").unwrap(), &[]);
        assert!(message.break_glass);
        let text = serde_json::to_string(&message).unwrap();
        assert!(text.contains(r#""breakGlass":true"#), "{text}");
        assert_eq!(RequestMessage::from_json(&text).unwrap(), message);
        // Absent and false are the same: an ordinary request, which says
        // nothing about it on the queue.
        let plain = parse(&format!(
            r#"{{"virtualMachines":[{{"id":"{vm}","ports":[{{"number":22}}]}}],"breakGlass":false}}"#
        ))
        .unwrap();
        assert!(!plain.break_glass());
        assert!(
            !serde_json::to_string(&plain.to_body())
                .unwrap()
                .contains("breakGlass")
        );
        let err = parse(&format!(
            r#"{{"virtualMachines":[{{"id":"{vm}","ports":[{{"number":22}}]}}],"breakGlass":"yes"}}"#
        ))
        .unwrap_err();
        assert_eq!(err.code(), "InvalidRequest");
    }
}

//! Checking an access request against a VM's policy. Pure: the policy, the
//! caller and the time are all parameters.

use std::fmt;
use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};

use super::duration::{AccessDuration, MaxAccessDuration, iso};
use super::policy::{BreakGlass, Policy};
use super::port::{Port, Protocol};
use super::prefix::SourcePrefix;
use super::principal::{Principal, PrincipalPattern};
use super::request::{AccessRequest, RequestId, Window};
use super::vm::VmId;

/// One firewall opening that a decision allows: exactly this VM, port,
/// protocol and source, from `start` until `end`, whole seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    request_id: RequestId,
    vm: VmId,
    port: Port,
    protocol: Protocol,
    source: SourcePrefix,
    start: Timestamp,
    end: Timestamp,
    requestor: Principal,
    break_glass: bool,
}

impl Grant {
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }
    pub fn vm(&self) -> &VmId {
        &self.vm
    }
    pub fn port(&self) -> Port {
        self.port
    }
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
    pub fn source(&self) -> SourcePrefix {
        self.source
    }
    pub fn start(&self) -> Timestamp {
        self.start
    }
    pub fn end(&self) -> Timestamp {
        self.end
    }
    pub fn requestor(&self) -> &Principal {
        &self.requestor
    }
    /// Whether the grant opens without approval, by breaking glass.
    pub fn break_glass(&self) -> bool {
        self.break_glass
    }

    /// The same grant ending no later than `latest`: it can only shorten a
    /// grant, never lengthen one.
    pub fn capped_at(&self, latest: Timestamp) -> Grant {
        Grant {
            end: self.end.min(latest),
            ..self.clone()
        }
    }
}

/// What [`evaluate`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Open these rules now.
    Approved { grants: Vec<Grant> },
    /// These rules may open once one of `approvers` (other than the
    /// requestor) approves; the approval re-evaluates the request.
    PendingApproval {
        grants: Vec<Grant>,
        approvers: Vec<PrincipalPattern>,
    },
    /// Nothing opens. Every reason found is listed, so the caller can fix
    /// them all at once.
    Refused { refusals: Vec<Refusal> },
}

impl Decision {
    /// The HTTP status of a refusal: that of its first reason. `None` when
    /// the request was accepted.
    pub fn refusal_status(&self) -> Option<u16> {
        match self {
            Decision::Refused { refusals } => refusals.first().map(|r| r.reason.http_status()),
            _ => None,
        }
    }
}

/// Every refusal in one line, for an error message or a record.
pub fn describe(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One reason a request was refused, and the port it concerns, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub port: Option<Port>,
    pub reason: RefusalReason,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "port {port}: {}", self.reason),
            None => self.reason.fmt(f),
        }
    }
}

/// Why a request breaks its VM's policy. Each maps to one HTTP status and
/// says, in words a person can act on, which rule was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusalReason {
    #[error("JIT access is not enabled on {vm}; an admin must set a policy for it first")]
    NoPolicy { vm: VmId },
    #[error("{requestor} is not among the requesters of this VM's policy")]
    NotRequester { requestor: Principal },
    #[error("the policy does not cover this port; it allows {}", list(.allowed))]
    PortNotInPolicy { allowed: Vec<Port> },
    #[error(
        "name the source address (allowedSourceAddressPrefix); it is taken from the caller only for a person calling the API directly"
    )]
    SourceRequired,
    #[error(
        "{}source {prefix} is not inside the allowed source prefixes {}",
        if *.defaulted { "your address, used as the " } else { "" },
        list(.allowed)
    )]
    SourceNotAllowed {
        prefix: SourcePrefix,
        allowed: Vec<SourcePrefix>,
        defaulted: bool,
    },
    #[error(
        "source {prefix} would open the port to any address, which the policy allows only where it lists \"*\"; name your own address or network"
    )]
    AnySourceNotAllowed { prefix: SourcePrefix },
    #[error("the requested duration {requested} is longer than the policy's maximum of {max}")]
    DurationExceedsMaximum {
        requested: AccessDuration,
        max: MaxAccessDuration,
    },
    #[error("endTimeUtc {end} is not in the future (it is now {now})")]
    EndTimeNotInFuture { end: Timestamp, now: Timestamp },
    #[error(
        "endTimeUtc {end} is beyond the policy's maximum of {max}; the latest allowed now is {latest}"
    )]
    EndTimeBeyondMaximum {
        end: Timestamp,
        max: MaxAccessDuration,
        latest: Timestamp,
    },
    #[error(
        "{requestor} is the only approver of this VM's policy, and nobody approves their own request; an admin must add another approver"
    )]
    NoOtherApprover { requestor: Principal },
    #[error(
        "this VM's policy does not allow break-glass access; leave out breakGlass and wait for an approver"
    )]
    BreakGlassNotAllowed,
    #[error(
        "{requestor} is not among the break-glass principals of this VM's policy; leave out breakGlass and wait for an approver"
    )]
    NotBreakGlassPrincipal { requestor: Principal },
    #[error(
        "a break-glass request needs a justification: say why access cannot wait for an approver"
    )]
    JustificationRequired,
    #[error(
        "the requested {} is longer than the break-glass maximum of {max}; ask for {max} or less",
        iso(*.requested)
    )]
    DurationExceedsBreakGlassMaximum {
        requested: SignedDuration,
        max: MaxAccessDuration,
    },
}

impl RefusalReason {
    pub fn code(&self) -> &'static str {
        match self {
            RefusalReason::NoPolicy { .. } => "NoPolicy",
            RefusalReason::NotRequester { .. } => "NotRequester",
            RefusalReason::PortNotInPolicy { .. } => "PortNotInPolicy",
            RefusalReason::SourceRequired => "SourceRequired",
            RefusalReason::SourceNotAllowed { .. } => "SourceNotAllowed",
            RefusalReason::AnySourceNotAllowed { .. } => "AnySourceNotAllowed",
            RefusalReason::DurationExceedsMaximum { .. } => "DurationExceedsMaximum",
            RefusalReason::EndTimeNotInFuture { .. } => "EndTimeNotInFuture",
            RefusalReason::EndTimeBeyondMaximum { .. } => "EndTimeBeyondMaximum",
            RefusalReason::NoOtherApprover { .. } => "NoOtherApprover",
            RefusalReason::BreakGlassNotAllowed => "BreakGlassNotAllowed",
            RefusalReason::NotBreakGlassPrincipal { .. } => "NotBreakGlassPrincipal",
            RefusalReason::JustificationRequired => "JustificationRequired",
            RefusalReason::DurationExceedsBreakGlassMaximum { .. } => {
                "DurationExceedsBreakGlassMaximum"
            }
        }
    }

    /// 404 when there is no policy, 400 when the request itself is
    /// incomplete or self-contradictory, 403 when it asks for more than the
    /// policy allows.
    pub fn http_status(&self) -> u16 {
        match self {
            RefusalReason::NoPolicy { .. } => 404,
            RefusalReason::SourceRequired
            | RefusalReason::EndTimeNotInFuture { .. }
            | RefusalReason::JustificationRequired
            | RefusalReason::DurationExceedsBreakGlassMaximum { .. } => 400,
            RefusalReason::BreakGlassNotAllowed
            | RefusalReason::NotBreakGlassPrincipal { .. }
            | RefusalReason::NotRequester { .. }
            | RefusalReason::PortNotInPolicy { .. }
            | RefusalReason::SourceNotAllowed { .. }
            | RefusalReason::AnySourceNotAllowed { .. }
            | RefusalReason::DurationExceedsMaximum { .. }
            | RefusalReason::EndTimeBeyondMaximum { .. }
            | RefusalReason::NoOtherApprover { .. } => 403,
        }
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks `request` by `requestor` against `policy` at time `now`.
///
/// `caller_ip` is the address of a person calling the API directly; it is
/// the source of any port that names none. Bots and queue messages pass
/// `None`, and must then name every source.
///
/// Someone who is not a requester learns nothing about the policy: the
/// refusal stops there. Otherwise every port is checked and every broken
/// rule reported.
///
/// A break-glass request (`"breakGlass": true`) is checked against the
/// policy's break-glass rules instead of its requesters: the policy must
/// have them and name the requestor among their principals (who need not
/// also be a requester), a justification is required, and no port may stay
/// open longer than the break-glass maximum (which a port without a window
/// gets). Ports and sources are checked as for any request. It is then
/// approved at once, however many approvers the policy has.
pub fn evaluate(
    policy: Option<&Policy>,
    request: &AccessRequest,
    requestor: &Principal,
    caller_ip: Option<IpAddr>,
    now: Timestamp,
) -> Decision {
    let refuse = |reason| Decision::Refused {
        refusals: vec![Refusal { port: None, reason }],
    };
    let Some(policy) = policy.filter(|p| p.vm() == request.vm()) else {
        return refuse(RefusalReason::NoPolicy {
            vm: request.vm().clone(),
        });
    };
    let break_glass = if request.break_glass() {
        let Some(bg) = policy.break_glass() else {
            return refuse(RefusalReason::BreakGlassNotAllowed);
        };
        if !bg.allows(requestor) {
            return refuse(RefusalReason::NotBreakGlassPrincipal {
                requestor: requestor.clone(),
            });
        }
        Some(bg)
    } else {
        if !policy.allows_requester(requestor) {
            return refuse(RefusalReason::NotRequester {
                requestor: requestor.clone(),
            });
        }
        None
    };
    // Rules carry their end time to the second, so grants are cut to seconds.
    let start = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let mut grants = Vec::new();
    let mut refusals = Vec::new();
    if break_glass.is_some() && request.justification().is_none() {
        refusals.push(Refusal {
            port: None,
            reason: RefusalReason::JustificationRequired,
        });
    }
    for ask in request.ports() {
        let port = ask.number;
        let mut refused = |reason| {
            refusals.push(Refusal {
                port: Some(port),
                reason,
            })
        };
        let Some(rule) = policy.port(port) else {
            refused(RefusalReason::PortNotInPolicy {
                allowed: policy.ports().iter().map(|r| r.number()).collect(),
            });
            continue;
        };
        let (source, defaulted) = match (ask.source, caller_ip) {
            (Some(source), _) => (source, false),
            (None, Some(ip)) => (SourcePrefix::host(ip), true),
            (None, None) => {
                refused(RefusalReason::SourceRequired);
                continue;
            }
        };
        if source.is_any() && !rule.allows_any_source() {
            refused(RefusalReason::AnySourceNotAllowed { prefix: source });
            continue;
        }
        if !rule.allows_source(&source) {
            refused(RefusalReason::SourceNotAllowed {
                prefix: source,
                allowed: rule.allowed_source_address_prefixes().to_vec(),
                defaulted,
            });
            continue;
        }
        let max = rule.max_request_access_duration();
        let end = match break_glass {
            None => end_time(ask.window, start, max),
            Some(bg) => break_glass_end_time(ask.window, start, max, bg),
        };
        let end = match end {
            Ok(end) => end,
            Err(reason) => {
                refused(reason);
                continue;
            }
        };
        grants.push(Grant {
            request_id: request.id().clone(),
            vm: request.vm().clone(),
            port,
            protocol: rule.protocol(),
            source,
            start,
            end,
            requestor: requestor.clone(),
            break_glass: break_glass.is_some(),
        });
    }
    if !refusals.is_empty() {
        return Decision::Refused { refusals };
    }
    if break_glass.is_none() && policy.needs_approval() {
        // A requestor never approves their own request, so a policy whose
        // only approver is the requestor could never open: say so now
        // rather than leave the request pending until it times out.
        if policy.approvers().iter().all(|a| a.names_only(requestor)) {
            return Decision::Refused {
                refusals: vec![Refusal {
                    port: None,
                    reason: RefusalReason::NoOtherApprover {
                        requestor: requestor.clone(),
                    },
                }],
            };
        }
        return Decision::PendingApproval {
            grants,
            approvers: policy.approvers().to_vec(),
        };
    }
    Decision::Approved { grants }
}

fn end_time(
    window: Option<Window>,
    start: Timestamp,
    max: MaxAccessDuration,
) -> Result<Timestamp, RefusalReason> {
    let latest = add(start, max.get());
    match window {
        None => Ok(latest),
        Some(Window::Duration(d)) if d.get() > max.get() => {
            Err(RefusalReason::DurationExceedsMaximum { requested: d, max })
        }
        Some(Window::Duration(d)) => Ok(add(start, d.get())),
        Some(Window::EndTime(end)) => {
            let end = Timestamp::from_second(end.as_second()).unwrap_or(end);
            if end <= start {
                Err(RefusalReason::EndTimeNotInFuture { end, now: start })
            } else if end > latest {
                Err(RefusalReason::EndTimeBeyondMaximum { end, max, latest })
            } else {
                Ok(end)
            }
        }
    }
}

/// The end of a break-glass grant: as [`end_time`] with the break-glass
/// maximum (never longer than the port's), whose breach is its own refusal.
fn break_glass_end_time(
    window: Option<Window>,
    start: Timestamp,
    port_max: MaxAccessDuration,
    bg: &BreakGlass,
) -> Result<Timestamp, RefusalReason> {
    let max = bg.max_request_access_duration().min(port_max);
    end_time(window, start, max).map_err(|reason| match reason {
        RefusalReason::DurationExceedsMaximum { requested, max } => {
            RefusalReason::DurationExceedsBreakGlassMaximum {
                requested: requested.get(),
                max,
            }
        }
        RefusalReason::EndTimeBeyondMaximum { end, max, .. } => {
            RefusalReason::DurationExceedsBreakGlassMaximum {
                requested: end.duration_since(start),
                max,
            }
        }
        other => other,
    })
}

fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::PolicyDocument;
    use crate::domain::request::InitiateBody;
    use serde_json::{Value, json};

    const VM: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";

    fn now() -> Timestamp {
        "2026-11-23T12:00:00.750Z".parse().unwrap()
    }

    fn policy(body: Value) -> Policy {
        let vm = VmId::parse(VM).unwrap();
        Policy::parse(vm, &PolicyDocument::from_value(body).unwrap()).unwrap()
    }

    fn standard() -> Policy {
        policy(json!({
            "ports": [
                {"number": 22, "protocol": "tcp", "allowedSourceAddressPrefixes": ["203.0.113.0/24", "2001:db8::/32"], "maxRequestAccessDuration": "PT3H"},
                {"number": 3389, "allowedSourceAddressPrefix": "*", "maxRequestAccessDuration": "PT1H"}
            ],
            "requesters": ["local:alice", "local:bob"]
        }))
    }

    fn request(ports: Value) -> AccessRequest {
        let body: InitiateBody = serde_json::from_value(json!({
            "virtualMachines": [{"id": VM, "ports": ports}],
            "justification": "deploy"
        }))
        .unwrap();
        AccessRequest::parse(RequestId::parse("req-1").unwrap(), &body).unwrap()
    }

    fn alice() -> Principal {
        Principal::parse("local:alice").unwrap()
    }

    fn refusal(decision: Decision) -> (Option<u16>, Vec<&'static str>, Vec<String>) {
        let status = decision.refusal_status();
        let Decision::Refused { refusals } = decision else {
            panic!("expected a refusal, got {decision:?}");
        };
        (
            status,
            refusals.iter().map(|r| r.reason.code()).collect(),
            refusals.iter().map(ToString::to_string).collect(),
        )
    }

    /// Alice's approved request for port 22 from 203.0.113.7 for an hour.
    fn ssh_for_an_hour() -> Vec<Grant> {
        let d = evaluate(
            Some(&standard()),
            &request(
                json!([{"number": 22, "duration": "PT1H", "allowedSourceAddressPrefix": "203.0.113.7"}]),
            ),
            &alice(),
            None,
            now(),
        );
        let Decision::Approved { grants } = d else {
            panic!("{d:?}")
        };
        grants
    }

    #[test]
    fn approves_exactly_what_was_asked() {
        let grants = ssh_for_an_hour();
        let [g] = grants.as_slice() else { panic!() };
        assert_eq!(g.port().get(), 22);
        assert_eq!(g.protocol(), Protocol::Tcp);
        assert_eq!(g.source().to_string(), "203.0.113.7/32");
        assert_eq!(g.start().to_string(), "2026-11-23T12:00:00Z");
        assert_eq!(g.end().to_string(), "2026-11-23T13:00:00Z");
        assert_eq!(g.request_id().as_str(), "req-1");
        assert_eq!(g.requestor(), &alice());
        assert_eq!(g.vm().to_string(), VM);
    }

    #[test]
    fn a_cap_only_ever_shortens_a_grant() {
        let grants = ssh_for_an_hour();
        let g = &grants[0];
        let earlier: Timestamp = "2026-11-23T12:30:00Z".parse().unwrap();
        let later: Timestamp = "2026-11-23T14:00:00Z".parse().unwrap();
        assert_eq!(g.capped_at(earlier).end(), earlier);
        assert_eq!(g.capped_at(later).end(), g.end());
        let capped = g.capped_at(earlier);
        assert_eq!(
            (capped.port(), capped.source(), capped.start()),
            (g.port(), g.source(), g.start())
        );
    }

    #[test]
    fn missing_window_is_the_maximum_and_missing_source_the_caller() {
        let d = evaluate(
            Some(&standard()),
            &request(json!([{"number": 22}])),
            &alice(),
            Some("2001:db8::42".parse().unwrap()),
            now(),
        );
        let Decision::Approved { grants } = d else {
            panic!("{d:?}")
        };
        assert_eq!(grants[0].source().to_string(), "2001:db8::42/128");
        assert_eq!(grants[0].end().to_string(), "2026-11-23T15:00:00Z");
    }

    #[test]
    fn end_time_within_the_maximum() {
        let d = evaluate(
            Some(&standard()),
            &request(
                json!([{"number": 3389, "endTimeUtc": "2026-11-23T12:59:59.9Z", "allowedSourceAddressPrefix": "*"}]),
            ),
            &alice(),
            None,
            now(),
        );
        let Decision::Approved { grants } = d else {
            panic!("{d:?}")
        };
        assert_eq!(grants[0].end().to_string(), "2026-11-23T12:59:59Z");
        assert_eq!(grants[0].source(), SourcePrefix::Any);
        assert_eq!(grants[0].protocol(), Protocol::Any);
    }

    #[test]
    fn approvers_make_it_pending() {
        let p = policy(json!({"ports": [22], "approvers": ["local:carol"]}));
        let d = evaluate(
            Some(&p),
            &request(json!([{"number": 22, "allowedSourceAddressPrefix": "198.51.100.7"}])),
            &alice(),
            None,
            now(),
        );
        let Decision::PendingApproval { grants, approvers } = d else {
            panic!("{d:?}")
        };
        assert_eq!(grants.len(), 1);
        assert_eq!(
            approvers,
            vec![PrincipalPattern::parse("local:carol").unwrap()]
        );
    }

    #[test]
    fn a_requestor_who_is_the_only_approver_is_refused() {
        let ask = request(json!([{"number": 22, "allowedSourceAddressPrefix": "198.51.100.7"}]));
        let only_alice = policy(json!({"ports": [22], "approvers": ["local:alice"]}));
        let d = evaluate(Some(&only_alice), &ask, &alice(), None, now());
        let Decision::Refused { refusals } = &d else {
            panic!("{d:?}")
        };
        assert_eq!(refusals[0].reason.code(), "NoOtherApprover");
        assert_eq!(d.refusal_status(), Some(403));
        // With a second approver it waits for that one.
        let two = policy(json!({"ports": [22], "approvers": ["local:alice", "local:carol"]}));
        let d = evaluate(Some(&two), &ask, &alice(), None, now());
        assert!(matches!(d, Decision::PendingApproval { .. }), "{d:?}");
    }

    #[test]
    fn no_policy_is_404() {
        let (status, codes, msgs) = refusal(evaluate(
            None,
            &request(json!([{"number": 22}])),
            &alice(),
            None,
            now(),
        ));
        assert_eq!((status, codes), (Some(404), vec!["NoPolicy"]));
        assert!(msgs[0].contains("not enabled"), "{msgs:?}");
        // A policy for another VM is no policy for this one.
        let other = Policy::parse(
            VmId::parse(&VM.replace("0123456789abcdef0", "0123456789abcdef1")).unwrap(),
            &PolicyDocument::from_value(json!({"ports": [22]})).unwrap(),
        )
        .unwrap();
        let (status, _, _) = refusal(evaluate(
            Some(&other),
            &request(json!([{"number": 22}])),
            &alice(),
            None,
            now(),
        ));
        assert_eq!(status, Some(404));
    }

    #[test]
    fn non_requester_learns_nothing_else() {
        let mallory = Principal::parse("local:mallory").unwrap();
        let (status, codes, msgs) = refusal(evaluate(
            Some(&standard()),
            &request(
                json!([{"number": 22, "allowedSourceAddressPrefix": "10.0.0.1"}, {"number": 80}]),
            ),
            &mallory,
            None,
            now(),
        ));
        assert_eq!((status, codes), (Some(403), vec!["NotRequester"]));
        assert_eq!(
            msgs,
            vec!["local:mallory is not among the requesters of this VM's policy"]
        );
    }

    #[test]
    fn port_not_in_policy() {
        let (status, codes, msgs) = refusal(evaluate(
            Some(&standard()),
            &request(json!([{"number": 5985, "allowedSourceAddressPrefix": "203.0.113.7"}])),
            &alice(),
            None,
            now(),
        ));
        assert_eq!((status, codes), (Some(403), vec!["PortNotInPolicy"]));
        assert_eq!(
            msgs,
            vec!["port 5985: the policy does not cover this port; it allows 22, 3389"]
        );
    }

    #[test]
    fn source_required_from_bots_and_queues() {
        let (status, codes, _) = refusal(evaluate(
            Some(&standard()),
            &request(json!([{"number": 22}])),
            &alice(),
            None,
            now(),
        ));
        assert_eq!((status, codes), (Some(400), vec!["SourceRequired"]));
    }

    #[test]
    fn source_must_be_a_subset() {
        for source in [
            "203.0.112.0/23",
            "203.0.114.1",
            "2001:db9::1",
            "198.51.100.0/24",
        ] {
            let (status, codes, msgs) = refusal(evaluate(
                Some(&standard()),
                &request(json!([{"number": 22, "allowedSourceAddressPrefix": source}])),
                &alice(),
                None,
                now(),
            ));
            assert_eq!(
                (status, codes),
                (Some(403), vec!["SourceNotAllowed"]),
                "{source}"
            );
            assert!(
                msgs[0].contains("203.0.113.0/24, 2001:db8::/32"),
                "{msgs:?}"
            );
        }
        // The caller's own address is checked the same way, and said so.
        let (_, codes, msgs) = refusal(evaluate(
            Some(&standard()),
            &request(json!([{"number": 22}])),
            &alice(),
            Some("192.0.2.1".parse().unwrap()),
            now(),
        ));
        assert_eq!(codes, vec!["SourceNotAllowed"]);
        assert!(
            msgs[0].starts_with("port 22: your address, used as the source 192.0.2.1/32"),
            "{msgs:?}"
        );
    }

    #[test]
    fn any_source_only_where_the_policy_says_star() {
        let p = policy(
            json!({"ports": [{"number": 22, "allowedSourceAddressPrefixes": ["0.0.0.0/0", "::/0"]}]}),
        );
        for source in ["*", "0.0.0.0/0", "::/0"] {
            let (status, codes, _) = refusal(evaluate(
                Some(&p),
                &request(json!([{"number": 22, "allowedSourceAddressPrefix": source}])),
                &alice(),
                None,
                now(),
            ));
            assert_eq!(
                (status, codes),
                (Some(403), vec!["AnySourceNotAllowed"]),
                "{source}"
            );
        }
        // Narrower blocks inside 0.0.0.0/0 are fine.
        let d = evaluate(
            Some(&p),
            &request(json!([{"number": 22, "allowedSourceAddressPrefix": "198.51.100.0/24"}])),
            &alice(),
            None,
            now(),
        );
        assert!(matches!(d, Decision::Approved { .. }));
        // And "*" in the policy admits "*".
        let d = evaluate(
            Some(&standard()),
            &request(json!([{"number": 3389, "allowedSourceAddressPrefix": "0.0.0.0/0"}])),
            &alice(),
            None,
            now(),
        );
        assert!(matches!(d, Decision::Approved { .. }), "{d:?}");
    }

    #[test]
    fn duration_over_the_maximum() {
        let (status, codes, msgs) = refusal(evaluate(
            Some(&standard()),
            &request(
                json!([{"number": 3389, "duration": "PT1H1S", "allowedSourceAddressPrefix": "*"}]),
            ),
            &alice(),
            None,
            now(),
        ));
        assert_eq!((status, codes), (Some(403), vec!["DurationExceedsMaximum"]));
        assert_eq!(
            msgs[0],
            "port 3389: the requested duration PT1H1S is longer than the policy's maximum of PT1H"
        );
        // Exactly the maximum is fine.
        let d = evaluate(
            Some(&standard()),
            &request(
                json!([{"number": 3389, "duration": "PT1H", "allowedSourceAddressPrefix": "*"}]),
            ),
            &alice(),
            None,
            now(),
        );
        assert!(matches!(d, Decision::Approved { .. }));
    }

    #[test]
    fn end_time_in_the_past_or_beyond_the_maximum() {
        for end in ["2026-11-23T11:00:00Z", "2026-11-23T12:00:00.9Z"] {
            let (status, codes, _) = refusal(evaluate(
                Some(&standard()),
                &request(
                    json!([{"number": 22, "endTimeUtc": end, "allowedSourceAddressPrefix": "203.0.113.7"}]),
                ),
                &alice(),
                None,
                now(),
            ));
            assert_eq!(
                (status, codes),
                (Some(400), vec!["EndTimeNotInFuture"]),
                "{end}"
            );
        }
        let (status, codes, msgs) = refusal(evaluate(
            Some(&standard()),
            &request(
                json!([{"number": 22, "endTimeUtc": "2026-11-23T15:00:01Z", "allowedSourceAddressPrefix": "203.0.113.7"}]),
            ),
            &alice(),
            None,
            now(),
        ));
        assert_eq!((status, codes), (Some(403), vec!["EndTimeBeyondMaximum"]));
        assert!(
            msgs[0].contains("latest allowed now is 2026-11-23T15:00:00Z"),
            "{msgs:?}"
        );
    }

    #[test]
    fn every_broken_port_is_reported_and_nothing_granted() {
        let (status, codes, _) = refusal(evaluate(
            Some(&standard()),
            &request(json!([
                {"number": 22, "allowedSourceAddressPrefix": "203.0.113.7"},
                {"number": 80, "allowedSourceAddressPrefix": "203.0.113.7"},
                {"number": 3389, "duration": "PT2H", "allowedSourceAddressPrefix": "203.0.113.7"}
            ])),
            &alice(),
            None,
            now(),
        ));
        assert_eq!(status, Some(403));
        assert_eq!(codes, vec!["PortNotInPolicy", "DurationExceedsMaximum"]);
    }

    /// Standard ports, alice may request, bob approves, oncall may break
    /// glass for 30 minutes.
    fn with_break_glass() -> Policy {
        policy(json!({
            "ports": [
                {"number": 22, "protocol": "tcp", "allowedSourceAddressPrefixes": ["203.0.113.0/24"], "maxRequestAccessDuration": "PT3H"},
                {"number": 3389, "allowedSourceAddressPrefix": "*", "maxRequestAccessDuration": "PT1H"}
            ],
            "requesters": ["local:alice"],
            "approvers": ["local:bob"],
            "breakGlass": {"principals": ["local:oncall", "local:alice"], "maxRequestAccessDuration": "PT30M"}
        }))
    }

    fn break_glass(ports: Value, justification: Option<&str>) -> AccessRequest {
        let body: InitiateBody = serde_json::from_value(json!({
            "virtualMachines": [{"id": VM, "ports": ports}],
            "justification": justification,
            "breakGlass": true
        }))
        .unwrap();
        AccessRequest::parse(RequestId::parse("req-bg").unwrap(), &body).unwrap()
    }

    fn oncall() -> Principal {
        Principal::parse("local:oncall").unwrap()
    }

    #[test]
    fn break_glass_opens_at_once_on_a_policy_with_approvers() {
        let ask = json!([{"number": 22, "duration": "PT20M", "allowedSourceAddressPrefix": "203.0.113.7"}]);
        // The same request without breakGlass waits for bob.
        let waits = evaluate(
            Some(&with_break_glass()),
            &request(ask.clone()),
            &alice(),
            None,
            now(),
        );
        assert!(
            matches!(waits, Decision::PendingApproval { .. }),
            "{waits:?}"
        );
        // Oncall is no requester, but may break glass; alice may too.
        for who in [oncall(), alice()] {
            let d = evaluate(
                Some(&with_break_glass()),
                &break_glass(ask.clone(), Some("prod is down")),
                &who,
                None,
                now(),
            );
            let Decision::Approved { grants } = d else {
                panic!("{d:?}")
            };
            let [g] = grants.as_slice() else { panic!() };
            assert!(g.break_glass());
            assert_eq!(g.requestor(), &who);
            assert_eq!(g.end().to_string(), "2026-11-23T12:20:00Z");
            assert_eq!(g.protocol(), Protocol::Tcp);
        }
        // Without a window a port gets the break-glass maximum, not the port's.
        let d = evaluate(
            Some(&with_break_glass()),
            &break_glass(
                json!([{"number": 3389, "allowedSourceAddressPrefix": "198.51.100.7"}]),
                Some("prod is down"),
            ),
            &oncall(),
            None,
            now(),
        );
        let Decision::Approved { grants } = d else {
            panic!("{d:?}")
        };
        assert_eq!(grants[0].end().to_string(), "2026-11-23T12:30:00Z");
        // An ordinary grant is not marked.
        assert!(!ssh_for_an_hour()[0].break_glass());
    }

    #[test]
    fn break_glass_refusals() {
        let ok_port = json!([{"number": 22, "duration": "PT20M", "allowedSourceAddressPrefix": "203.0.113.7"}]);
        let cases: Vec<(Policy, AccessRequest, Principal, u16, Vec<&str>)> = vec![
            // The policy has no breakGlass.
            (
                standard(),
                break_glass(ok_port.clone(), Some("prod is down")),
                alice(),
                403,
                vec!["BreakGlassNotAllowed"],
            ),
            // Bob approves, but is not named for breaking glass.
            (
                with_break_glass(),
                break_glass(ok_port.clone(), Some("prod is down")),
                Principal::parse("local:bob").unwrap(),
                403,
                vec!["NotBreakGlassPrincipal"],
            ),
            // No justification, or only blanks.
            (
                with_break_glass(),
                break_glass(ok_port.clone(), None),
                oncall(),
                400,
                vec!["JustificationRequired"],
            ),
            (
                with_break_glass(),
                break_glass(ok_port.clone(), Some("   ")),
                oncall(),
                400,
                vec!["JustificationRequired"],
            ),
            // Longer than the break-glass maximum, though within the port's.
            (
                with_break_glass(),
                break_glass(
                    json!([{"number": 22, "duration": "PT31M", "allowedSourceAddressPrefix": "203.0.113.7"}]),
                    Some("prod is down"),
                ),
                oncall(),
                400,
                vec!["DurationExceedsBreakGlassMaximum"],
            ),
            (
                with_break_glass(),
                break_glass(
                    json!([{"number": 22, "endTimeUtc": "2026-11-23T13:00:00Z", "allowedSourceAddressPrefix": "203.0.113.7"}]),
                    Some("prod is down"),
                ),
                oncall(),
                400,
                vec!["DurationExceedsBreakGlassMaximum"],
            ),
            (
                with_break_glass(),
                break_glass(
                    json!([{"number": 22, "duration": "PT4H", "allowedSourceAddressPrefix": "203.0.113.7"}]),
                    Some("prod is down"),
                ),
                oncall(),
                400,
                vec!["DurationExceedsBreakGlassMaximum"],
            ),
            // The usual checks still apply: ports, sources.
            (
                with_break_glass(),
                break_glass(
                    json!([{"number": 80, "duration": "PT10M", "allowedSourceAddressPrefix": "203.0.113.7"}]),
                    Some("prod is down"),
                ),
                oncall(),
                403,
                vec!["PortNotInPolicy"],
            ),
            (
                with_break_glass(),
                break_glass(
                    json!([{"number": 22, "duration": "PT10M", "allowedSourceAddressPrefix": "198.51.100.7"}]),
                    Some("prod is down"),
                ),
                oncall(),
                403,
                vec!["SourceNotAllowed"],
            ),
            (
                with_break_glass(),
                break_glass(
                    json!([{"number": 22, "duration": "PT10M", "allowedSourceAddressPrefix": "*"}]),
                    Some("prod is down"),
                ),
                oncall(),
                403,
                vec!["AnySourceNotAllowed"],
            ),
            (
                with_break_glass(),
                break_glass(
                    json!([{"number": 22, "duration": "PT10M"}]),
                    Some("prod is down"),
                ),
                oncall(),
                400,
                vec!["SourceRequired"],
            ),
            // Every reason at once.
            (
                with_break_glass(),
                break_glass(
                    json!([{"number": 22, "duration": "PT1H", "allowedSourceAddressPrefix": "203.0.113.7"},
                                {"number": 3389, "duration": "PT10M", "allowedSourceAddressPrefix": "198.51.100.7"}]),
                    None,
                ),
                oncall(),
                400,
                vec!["JustificationRequired", "DurationExceedsBreakGlassMaximum"],
            ),
        ];
        for (policy, request, who, status, codes) in cases {
            let (got_status, got_codes, messages) =
                refusal(evaluate(Some(&policy), &request, &who, None, now()));
            assert_eq!(got_status, Some(status), "{request:?}: {messages:?}");
            assert_eq!(got_codes, codes, "{request:?}: {messages:?}");
        }
        let (_, _, messages) = refusal(evaluate(
            Some(&with_break_glass()),
            &break_glass(
                json!([{"number": 22, "duration": "PT1H", "allowedSourceAddressPrefix": "203.0.113.7"}]),
                Some("x"),
            ),
            &oncall(),
            None,
            now(),
        ));
        assert_eq!(
            messages,
            [
                "port 22: the requested PT1H is longer than the break-glass maximum of PT30M; ask for PT30M or less"
            ]
        );
    }

    #[test]
    fn a_break_glass_principal_who_is_the_only_approver_still_breaks_glass() {
        let policy = policy(json!({
            "ports": [{"number": 22, "maxRequestAccessDuration": "PT1H"}],
            "approvers": ["local:oncall"],
            "breakGlass": {"principals": ["local:oncall"], "maxRequestAccessDuration": "PT15M"}
        }));
        let d = evaluate(
            Some(&policy),
            &break_glass(
                json!([{"number": 22, "allowedSourceAddressPrefix": "198.51.100.7"}]),
                Some("pager"),
            ),
            &oncall(),
            None,
            now(),
        );
        assert!(matches!(d, Decision::Approved { .. }), "{d:?}");
    }
}

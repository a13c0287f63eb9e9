//! Property tests of the domain: prefix containment against an address-range
//! model, rule encode/decode round trips, and provider limits on every rule
//! jitvm writes, whatever the requestor or justification.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use jiff::Timestamp;
use jitvm_core::rule::{
    AWS_DESCRIPTION_MAX, AWS_TAG_VALUE_MAX, AZURE_DESCRIPTION_MAX, AZURE_NAME_MAX, AzureRuleName,
    aws_rule_description, aws_rule_tags, azure_grant_rule_description, azure_grant_rule_name,
    decode_aws_tags, decode_azure_rule_name,
};
use jitvm_core::text::{aws_description_char, aws_tag_char};
use jitvm_core::{
    AccessRequest, Decision, Grant, InitiateBody, Justification, Policy, PolicyDocument, Principal,
    RequestId, SourcePrefix, VmId, evaluate,
};
use proptest::prelude::*;
use serde_json::json;

/// The address range `[first, last]` of a block, as numbers, with its family.
fn range(net: &IpNet) -> (bool, u128, u128) {
    match net {
        IpNet::V4(n) => (
            true,
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (false, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

fn any_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, len)| {
            IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), len)
                .unwrap()
                .trunc()
        }),
        (any::<u128>(), 0u8..=128).prop_map(|(a, len)| {
            IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), len)
                .unwrap()
                .trunc()
        }),
    ]
}

/// Pairs that are often related: the second block is carved out of the
/// first's address space half the time, so containment is exercised both ways.
fn net_pair() -> impl Strategy<Value = (IpNet, IpNet)> {
    (any_net(), any::<u128>(), 0u8..=128, any::<bool>()).prop_map(|(outer, bits, len, related)| {
        if !related {
            let inner = match outer {
                IpNet::V4(_) => IpNet::new(IpAddr::V4(Ipv4Addr::from(bits as u32)), len % 33),
                IpNet::V6(_) => IpNet::new(IpAddr::V6(Ipv6Addr::from(bits)), len),
            };
            return (outer, inner.unwrap().trunc());
        }
        let inner = match outer {
            IpNet::V4(n) => {
                let host_bits = 32 - u32::from(n.prefix_len());
                let mask = if host_bits == 32 {
                    u32::MAX
                } else {
                    (1u32 << host_bits) - 1
                };
                let addr = u32::from(n.network()) | (bits as u32 & mask);
                let len = n.prefix_len() + (len % (33 - n.prefix_len()));
                IpNet::new(IpAddr::V4(Ipv4Addr::from(addr)), len)
            }
            IpNet::V6(n) => {
                let host_bits = 128 - u32::from(n.prefix_len());
                let mask = if host_bits == 128 {
                    u128::MAX
                } else {
                    (1u128 << host_bits) - 1
                };
                let addr = u128::from(n.network()) | (bits & mask);
                let len = n.prefix_len() + (len % (129 - n.prefix_len()));
                IpNet::new(IpAddr::V6(Ipv6Addr::from(addr)), len)
            }
        };
        (outer, inner.unwrap().trunc())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn containment_matches_the_address_range_model((outer, inner) in net_pair()) {
        let (v4a, first_a, last_a) = range(&outer);
        let (v4b, first_b, last_b) = range(&inner);
        let model = v4a == v4b && first_a <= first_b && last_b <= last_a;
        let a = SourcePrefix::parse(&outer.to_string()).unwrap();
        let b = SourcePrefix::parse(&inner.to_string()).unwrap();
        prop_assert_eq!(a.contains(&b), model);
        prop_assert!(SourcePrefix::Any.contains(&b));
        prop_assert!(!a.contains(&SourcePrefix::Any));
        prop_assert!(a.contains(&a));
    }

    #[test]
    fn prefix_text_round_trips(net in any_net()) {
        let p = SourcePrefix::parse(&net.to_string()).unwrap();
        prop_assert_eq!(SourcePrefix::parse(&p.to_string()).unwrap(), p);
    }
}

const VM: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";

/// Anything a principal may be: up to 256 characters of any script, no
/// whitespace or control characters.
fn principal() -> impl Strategy<Value = Principal> {
    "[^\\s\\p{Cc}]{1,256}".prop_filter_map("valid principal", |s| Principal::parse(&s).ok())
}

fn justification() -> impl Strategy<Value = Option<Justification>> {
    proptest::option::of("\\PC{0,1000}".prop_filter_map("valid", |s| Justification::parse(&s).ok()))
}

fn request_id() -> impl Strategy<Value = RequestId> {
    "[A-Za-z0-9]([A-Za-z0-9_-]{0,38}[A-Za-z0-9])?".prop_map(|s| RequestId::parse(&s).unwrap())
}

/// A grant as evaluate makes it, for any requestor, port, time and duration.
fn grant() -> impl Strategy<Value = (Grant, Option<Justification>)> {
    (
        principal(),
        justification(),
        request_id(),
        1u16..=65535,
        0i64..4_000_000_000,
        1i64..=86_400,
    )
        .prop_map(|(who, why, id, port, now, secs)| {
            let vm = VmId::parse(VM).unwrap();
            let doc = PolicyDocument::from_value(json!({
                "ports": [{"number": port, "maxRequestAccessDuration": "PT24H"}]
            }))
            .unwrap();
            let policy = Policy::parse(vm, &doc).unwrap();
            let body: InitiateBody = serde_json::from_value(json!({
                "virtualMachines": [{"id": VM, "ports": [{"number": port,
                    "duration": format!("PT{secs}S"), "allowedSourceAddressPrefix": "198.51.100.7"}]}],
                "justification": why.as_ref().map(|j| j.as_str()),
            }))
            .unwrap();
            let req = AccessRequest::parse(id, &body).unwrap();
            let now = Timestamp::from_second(now).unwrap();
            let Decision::Approved { mut grants } = evaluate(Some(&policy), &req, &who, None, now)
            else {
                panic!("a request inside the policy must be approved")
            };
            (grants.remove(0), why)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn aws_tags_round_trip((g, _) in grant()) {
        let tags = aws_rule_tags(&g);
        let meta = decode_aws_tags(tags.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        prop_assert_eq!(&meta.request_id, g.request_id());
        prop_assert_eq!(meta.expires, g.end());
    }

    #[test]
    fn azure_names_round_trip((g, _) in grant()) {
        let name = azure_grant_rule_name(&g);
        let decoded = decode_azure_rule_name(&name).unwrap();
        prop_assert_eq!(decoded, Some(AzureRuleName::Grant {
            port: g.port(),
            expires: g.end(),
            request_id: g.request_id().clone(),
        }));
    }

    #[test]
    fn every_rule_fits_its_provider((g, why) in grant()) {
        let desc = aws_rule_description(&g, why.as_ref());
        prop_assert!(desc.chars().count() <= AWS_DESCRIPTION_MAX);
        prop_assert!(desc.chars().all(aws_description_char), "{desc:?}");
        prop_assert!(desc.contains(g.request_id().as_str()));
        for (key, value) in aws_rule_tags(&g) {
            prop_assert!(key.len() <= 128);
            prop_assert!(value.chars().count() <= AWS_TAG_VALUE_MAX);
            prop_assert!(value.chars().all(aws_tag_char), "{key}={value:?}");
        }

        let name = azure_grant_rule_name(&g);
        prop_assert!(name.len() <= AZURE_NAME_MAX, "{name}");
        prop_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
        prop_assert!(name.starts_with(|c: char| c.is_ascii_alphanumeric()));
        prop_assert!(name.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_'));
        let adesc = azure_grant_rule_description(&g);
        prop_assert!(adesc.chars().count() <= AZURE_DESCRIPTION_MAX);
        prop_assert!(adesc.chars().all(|c| c.is_ascii_graphic() || c == ' '));
    }

    #[test]
    fn decoding_never_panics(name in "\\PC{0,120}", tag in "\\PC{0,300}") {
        let _ = decode_azure_rule_name(&name);
        let _ = decode_azure_rule_name(&format!("jitvm-{name}"));
        let _ = decode_aws_tags([("jitvm:request", tag.as_str()), ("jitvm:expires", tag.as_str())]);
    }

    #[test]
    fn parsing_hostile_input_never_panics(text in "\\PC{0,200}", n in any::<i64>()) {
        let _ = SourcePrefix::parse(&text);
        let _ = VmId::parse(&text);
        let _ = PolicyDocument::from_json(text.as_bytes());
        let _ = InitiateBody::from_json(text.as_bytes());
        let _ = jitvm_core::Port::parse(n);
        let _ = jitvm_core::AccessDuration::parse(&text);
        let _ = jitvm_core::MaxAccessDuration::parse(&text);
    }
}

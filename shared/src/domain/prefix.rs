//! Source address prefixes: an IPv4 or IPv6 CIDR block, or `*` for any.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error(
        "{0:?} is not a source address prefix; use an IPv4 or IPv6 address, a CIDR block such as 203.0.113.0/24, or \"*\""
    )]
    Malformed(String),
    #[error(
        "{given} has bits set beyond its /{len} prefix; write the network ({network}) or the single address ({address}/{host_len})"
    )]
    HostBitsSet {
        given: String,
        network: IpNet,
        address: IpAddr,
        len: u8,
        host_len: u8,
    },
    #[error("{0:?} is an Azure service tag; jitvm accepts only addresses, CIDR blocks and \"*\"")]
    ServiceTag(String),
}

/// Where traffic may come from: one CIDR block, or any address.
///
/// A bare address is a single-host block (/32 or /128), and an IPv4-mapped
/// IPv6 address is read as the IPv4 address it carries, so that the same
/// client is the same prefix whichever way a proxy reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SourcePrefix {
    Any,
    Net(IpNet),
}

impl SourcePrefix {
    pub fn parse(text: &str) -> Result<Self, PrefixError> {
        let text = text.trim();
        if text == "*" || text.eq_ignore_ascii_case("any") {
            return Ok(SourcePrefix::Any);
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(PrefixError::ServiceTag(text.to_owned()));
        }
        if let Ok(addr) = text.parse::<IpAddr>() {
            return Ok(Self::host(addr));
        }
        let net: IpNet = text
            .parse()
            .map_err(|_| PrefixError::Malformed(text.to_owned()))?;
        if net.trunc() != net {
            return Err(PrefixError::HostBitsSet {
                given: text.to_owned(),
                network: net.trunc(),
                address: net.addr(),
                len: net.prefix_len(),
                host_len: net.max_prefix_len(),
            });
        }
        Ok(SourcePrefix::Net(net))
    }

    /// The single-address prefix of `addr`.
    pub fn host(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        let len = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        // A full-length prefix is always valid, so this cannot fail.
        SourcePrefix::Net(IpNet::new(addr, len).unwrap_or_else(|_| IpNet::from(addr)))
    }

    /// True when this prefix admits `other` entirely: every address of
    /// `other` is in `self`. `*` contains everything; a CIDR block never
    /// contains `*`, and never contains a block of the other address family.
    pub fn contains(&self, other: &SourcePrefix) -> bool {
        match (self, other) {
            (SourcePrefix::Any, _) => true,
            (SourcePrefix::Net(_), SourcePrefix::Any) => false,
            (SourcePrefix::Net(outer), SourcePrefix::Net(inner)) => outer.contains(inner),
        }
    }

    /// True for `*`, `0.0.0.0/0` and `::/0`: prefixes that open a port to the
    /// whole internet (of one family or both).
    pub fn is_any(&self) -> bool {
        match self {
            SourcePrefix::Any => true,
            SourcePrefix::Net(net) => net.prefix_len() == 0,
        }
    }

    /// The CIDR blocks a firewall rule needs for this prefix: `*` is both
    /// `0.0.0.0/0` and `::/0`.
    pub fn cidrs(&self) -> Vec<IpNet> {
        match self {
            SourcePrefix::Any => vec![
                IpNet::V4(ipnet::Ipv4Net::default()),
                IpNet::V6(ipnet::Ipv6Net::default()),
            ],
            SourcePrefix::Net(net) => vec![*net],
        }
    }
}

impl fmt::Display for SourcePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourcePrefix::Any => f.write_str("*"),
            SourcePrefix::Net(net) => net.fmt(f),
        }
    }
}

impl FromStr for SourcePrefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SourcePrefix {
    type Error = PrefixError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SourcePrefix> for String {
    fn from(value: SourcePrefix) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> SourcePrefix {
        SourcePrefix::parse(s).unwrap()
    }

    #[test]
    fn parses_addresses_blocks_and_any() {
        assert_eq!(p("*"), SourcePrefix::Any);
        assert_eq!(p("Any"), SourcePrefix::Any);
        assert_eq!(p("198.51.100.7").to_string(), "198.51.100.7/32");
        assert_eq!(p("2001:db8::1").to_string(), "2001:db8::1/128");
        assert_eq!(p("::ffff:198.51.100.7").to_string(), "198.51.100.7/32");
        assert_eq!(p(" 203.0.113.0/24 ").to_string(), "203.0.113.0/24");
        assert_eq!(p("2001:db8::/32").to_string(), "2001:db8::/32");
    }

    #[test]
    fn refuses_host_bits_and_junk_with_a_fix() {
        let err = SourcePrefix::parse("203.0.113.9/24").unwrap_err();
        assert!(matches!(err, PrefixError::HostBitsSet { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("203.0.113.0/24") && msg.contains("203.0.113.9/32"),
            "{msg}"
        );
        for junk in [
            "",
            "10.0.0.256",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "1.2.3.4/ 8",
        ] {
            assert!(
                matches!(SourcePrefix::parse(junk), Err(PrefixError::Malformed(_))),
                "{junk}"
            );
        }
        assert!(matches!(
            SourcePrefix::parse("Internet"),
            Err(PrefixError::ServiceTag(_))
        ));
    }

    #[test]
    fn containment_is_a_subset_test() {
        assert!(p("203.0.113.0/24").contains(&p("203.0.113.7")));
        assert!(p("203.0.113.0/24").contains(&p("203.0.113.128/25")));
        assert!(p("203.0.113.0/24").contains(&p("203.0.113.0/24")));
        assert!(!p("203.0.113.0/24").contains(&p("203.0.112.0/23")));
        assert!(!p("203.0.113.0/24").contains(&p("203.0.114.1")));
        // String prefixes are not subsets.
        assert!(!p("10.1.0.0/16").contains(&p("10.10.0.1")));
        assert!(!p("0.0.0.0/0").contains(&p("2001:db8::1")));
        assert!(!p("0.0.0.0/0").contains(&SourcePrefix::Any));
        assert!(p("*").contains(&p("2001:db8::1")));
        assert!(p("2001:db8::/32").contains(&p("2001:db8:ffff::/48")));
    }

    #[test]
    fn any_like_prefixes() {
        assert!(p("*").is_any());
        assert!(p("0.0.0.0/0").is_any());
        assert!(p("::/0").is_any());
        assert!(!p("0.0.0.0/1").is_any());
        assert_eq!(p("*").cidrs().len(), 2);
    }
}

//! Ports and protocols.

use std::fmt;
use std::num::NonZeroU16;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("port {0} is out of range; a port is a number from 1 to 65535")]
    OutOfRange(i64),
    #[error("protocol {0:?} is not supported; use \"tcp\", \"udp\" or \"*\" (any)")]
    UnknownProtocol(String),
}

/// A TCP or UDP port number, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(NonZeroU16);

impl Port {
    pub fn parse(number: i64) -> Result<Self, PortError> {
        u16::try_from(number)
            .ok()
            .and_then(NonZeroU16::new)
            .map(Port)
            .ok_or(PortError::OutOfRange(number))
    }

    pub fn get(self) -> u16 {
        self.0.get()
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.get())
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        Port::parse(n).map_err(serde::de::Error::custom)
    }
}

/// The protocol a port rule opens. Azure's spellings (`TCP`, `UDP`, `*`)
/// and `any` are accepted; the canonical forms are `tcp`, `udp` and `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Any,
}

impl Protocol {
    pub fn parse(text: &str) -> Result<Self, PortError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "*" | "any" => Ok(Protocol::Any),
            _ => Err(PortError::UnknownProtocol(text.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Any => "*",
        }
    }

    /// The concrete protocols this one covers. A firewall rule for `*` on a
    /// single port is written as one rule per protocol, because "all
    /// protocols" in AWS also means "all ports".
    pub fn concrete(self) -> &'static [Protocol] {
        match self {
            Protocol::Tcp => &[Protocol::Tcp],
            Protocol::Udp => &[Protocol::Udp],
            Protocol::Any => &[Protocol::Tcp, Protocol::Udp],
        }
    }

    /// True when a policy giving `self` allows a grant of `granted`: `*`
    /// allows any, `tcp` and `udp` only themselves.
    pub fn covers(self, granted: Protocol) -> bool {
        self == Protocol::Any || self == granted
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = PortError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Protocol::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range() {
        assert_eq!(Port::parse(22).unwrap().get(), 22);
        assert_eq!(Port::parse(65535).unwrap().get(), 65535);
        assert_eq!(Port::parse(0), Err(PortError::OutOfRange(0)));
        assert_eq!(Port::parse(65536), Err(PortError::OutOfRange(65536)));
        assert_eq!(Port::parse(-22), Err(PortError::OutOfRange(-22)));
        assert!(serde_json::from_str::<Port>("70000").is_err());
        assert!(serde_json::from_str::<Port>("\"22\"").is_err());
        assert_eq!(
            serde_json::to_string(&Port::parse(3389).unwrap()).unwrap(),
            "3389"
        );
    }

    #[test]
    fn protocol_spellings() {
        for (text, p) in [
            ("tcp", Protocol::Tcp),
            ("TCP", Protocol::Tcp),
            ("Udp", Protocol::Udp),
            ("*", Protocol::Any),
            ("Any", Protocol::Any),
        ] {
            assert_eq!(Protocol::parse(text).unwrap(), p);
        }
        let err = Protocol::parse("icmp").unwrap_err();
        assert!(err.to_string().contains("\"tcp\", \"udp\" or \"*\""));
        assert_eq!(serde_json::to_string(&Protocol::Any).unwrap(), "\"*\"");
        assert_eq!(Protocol::Any.concrete(), &[Protocol::Tcp, Protocol::Udp]);
    }
}

//! Principals (who asks, who approves) and the patterns policies name them by.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest principal accepted, in characters. IAM role session ARNs are
/// the longest real ones, well under this.
pub const PRINCIPAL_MAX_CHARS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    #[error("a principal must not be empty")]
    Empty,
    #[error("principal is {len} characters long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("principal {0:?} contains whitespace or a control character")]
    BadCharacter(String),
    #[error("principal pattern {0:?} may use \"*\" only alone or as its last character")]
    BadWildcard(String),
}

/// Who a request comes from: an IAM ARN, `slack:<team>/<user>`,
/// `local:<name>`, or what a trusted queue sender says. Non-empty, at most
/// [`PRINCIPAL_MAX_CHARS`] characters, no whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Principal(String);

impl Principal {
    pub fn parse(text: &str) -> Result<Self, PrincipalError> {
        check(text)?;
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check(text: &str) -> Result<(), PrincipalError> {
    if text.is_empty() {
        return Err(PrincipalError::Empty);
    }
    let len = text.chars().count();
    if len > PRINCIPAL_MAX_CHARS {
        return Err(PrincipalError::TooLong {
            len,
            max: PRINCIPAL_MAX_CHARS,
        });
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PrincipalError::BadCharacter(text.to_owned()));
    }
    Ok(())
}

/// How a policy names who may request: a principal exactly, `*` for anyone
/// authenticated, or a prefix ending in `*` (for example
/// `arn:aws:sts::123456789012:assumed-role/Operators/*`, whose session names
/// vary).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PrincipalPattern(String);

impl PrincipalPattern {
    pub fn parse(text: &str) -> Result<Self, PrincipalError> {
        check(text)?;
        let body = text.strip_suffix('*').unwrap_or(text);
        if body.contains('*') {
            return Err(PrincipalError::BadWildcard(text.to_owned()));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn matches(&self, principal: &Principal) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => principal.as_str().starts_with(prefix),
            None => self.0 == principal.as_str(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for PrincipalPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Principal {
    type Error = PrincipalError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Principal> for String {
    fn from(value: Principal) -> Self {
        value.0
    }
}

impl TryFrom<String> for PrincipalPattern {
    type Error = PrincipalError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PrincipalPattern> for String {
    fn from(value: PrincipalPattern) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(s: &str) -> Principal {
        Principal::parse(s).unwrap()
    }

    #[test]
    fn principal_forms() {
        assert!(Principal::parse("arn:aws:iam::123456789012:user/alice").is_ok());
        assert!(Principal::parse("slack:T0123/U0456").is_ok());
        assert!(Principal::parse("local:alice").is_ok());
        assert_eq!(Principal::parse(""), Err(PrincipalError::Empty));
        assert!(matches!(
            Principal::parse("alice smith"),
            Err(PrincipalError::BadCharacter(_))
        ));
        assert!(matches!(
            Principal::parse("alice\u{0}"),
            Err(PrincipalError::BadCharacter(_))
        ));
        assert!(matches!(
            Principal::parse(&"a".repeat(PRINCIPAL_MAX_CHARS + 1)),
            Err(PrincipalError::TooLong { .. })
        ));
    }

    #[test]
    fn patterns() {
        let anyone = PrincipalPattern::parse("*").unwrap();
        assert!(anyone.matches(&who("local:bob")));
        let exact = PrincipalPattern::parse("local:alice").unwrap();
        assert!(exact.matches(&who("local:alice")));
        assert!(!exact.matches(&who("local:alice2")));
        let role = PrincipalPattern::parse("arn:aws:sts::123456789012:assumed-role/Ops/*").unwrap();
        assert!(role.matches(&who("arn:aws:sts::123456789012:assumed-role/Ops/alice")));
        assert!(!role.matches(&who("arn:aws:sts::123456789012:assumed-role/Dev/alice")));
        assert!(matches!(
            PrincipalPattern::parse("local:*lice"),
            Err(PrincipalError::BadWildcard(_))
        ));
        assert!(matches!(
            PrincipalPattern::parse("**"),
            Err(PrincipalError::BadWildcard(_))
        ));
    }
}

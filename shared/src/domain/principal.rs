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
    #[error(
        "{0:?} is not an IAM role name pattern: 1 to 64 letters, digits or +=,.@_- characters, optionally ending in \"*\""
    )]
    BadRolePattern(String),
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
        prefix_match(&self.0, principal.as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this pattern names `who` and nobody else: written out in
    /// full (no wildcard) as `who` or another name of the same identity,
    /// or the very string of a role's principal.
    pub fn names_only(&self, who: &Principal) -> bool {
        if self.0 == who.as_str() {
            return true;
        }
        !self.0.ends_with('*') && Principal(self.0.clone()).same_identity(who)
    }
}

/// Whether `pattern` (exact, or a prefix ending in `*`) matches `text`.
fn prefix_match(pattern: &str, text: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => text.starts_with(prefix),
        None => pattern == text,
    }
}

/// Whether `who` may decide on a request of `requestor` under a policy
/// whose approvers are `approvers`: one of them, and never the requestor
/// under any name of the same identity.
pub fn may_decide(approvers: &[PrincipalPattern], who: &Principal, requestor: &Principal) -> bool {
    approvers.iter().any(|a| a.matches(who)) && !who.same_identity(requestor)
}

/// The IAM roles whose session names an identity provider sets, so that
/// they tell people apart (`JITVM_TRUSTED_SESSION_ROLES`): role names, a
/// trailing `*` making a prefix, such as `AWSReservedSSO_*` for IAM
/// Identity Center, whose roles admit only SAML sign-ins. Every other
/// role's session name is whatever the caller of `AssumeRole` chose, so it
/// counts for nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionTrust {
    roles: Vec<String>,
}

impl SessionTrust {
    /// Parses role-name patterns: 1 to 64 of IAM's role-name characters
    /// (letters, digits, `+=,.@_-`), optionally ending in `*`.
    pub fn parse(patterns: &[String]) -> Result<Self, PrincipalError> {
        let roles = patterns
            .iter()
            .map(|p| {
                let body = p.strip_suffix('*').unwrap_or(p);
                let role_chars = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
                // A bare `*` would trust every role: anyone who may assume
                // any role could name themselves.
                if body.is_empty() || body.len() > 64 || !body.chars().all(role_chars) {
                    return Err(PrincipalError::BadRolePattern(p.clone()));
                }
                Ok(p.clone())
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { roles })
    }

    /// Why `pattern` can match no caller, when it names sessions (or
    /// federated users) whose names the caller chooses: every such caller
    /// is the principal ending in `/*` instead. `None` for any other.
    pub fn matches_nobody(&self, pattern: &PrincipalPattern) -> Option<String> {
        match sts_parts(pattern.as_str())? {
            StsArn::AssumedRole {
                head,
                role,
                session,
            } if session != ANY_SESSION && !self.trusts(role) => Some(format!(
                "{pattern} names sessions of the role {role}, whose session names whoever assumes it chooses, so it matches nobody; name the role ({head}assumed-role/{role}/*), or list {role} in JITVM_TRUSTED_SESSION_ROLES if an identity provider sets its session names"
            )),
            StsArn::FederatedUser { head, name } if name != ANY_SESSION => Some(format!(
                "{pattern} names a federated user, whose name whoever calls GetFederationToken chooses, so it matches nobody; name them all ({head}federated-user/*)"
            )),
            _ => None,
        }
    }

    /// Whether sessions of the role named `role` are told apart.
    pub fn trusts(&self, role: &str) -> bool {
        self.roles.iter().any(|p| prefix_match(p, role))
    }
}

/// The session part of a principal that stands for every session of a
/// role (or every federated user of an account): a name no session can
/// have, since STS allows no `*` in one.
const ANY_SESSION: &str = "*";

impl Principal {
    /// The principal of a caller IAM authenticated, from the ARN API
    /// Gateway reports (`userArn`). A user or the root keeps its ARN. An
    /// assumed role keeps its session name only when `trust` says an
    /// identity provider sets it; otherwise the caller chose it, and the
    /// principal is the role's, `arn:aws:sts::<account>:assumed-role/<role>/*`.
    /// A federated user's name is chosen by whoever called
    /// `GetFederationToken`, so they are all `.../federated-user/*`.
    pub fn from_iam(arn: &str, trust: &SessionTrust) -> Result<Self, PrincipalError> {
        let derived = match sts_parts(arn) {
            Some(StsArn::AssumedRole { head, role, .. }) if !trust.trusts(role) => {
                format!("{head}assumed-role/{role}/{ANY_SESSION}")
            }
            Some(StsArn::FederatedUser { head, .. }) => {
                format!("{head}federated-user/{ANY_SESSION}")
            }
            _ => arn.to_owned(),
        };
        Self::parse(&derived)
    }

    /// The principal of a caller a JWT authorizer accepted:
    /// `jwt:<issuer>#<subject>`. A subject is unique only within its
    /// issuer, and an issuer URL has no fragment, so the `#` cannot be
    /// forged from either side.
    pub fn from_jwt(issuer: &str, subject: &str) -> Result<Self, PrincipalError> {
        if issuer.is_empty() || subject.is_empty() || issuer.contains('#') {
            return Err(PrincipalError::Empty);
        }
        Self::parse(&format!("jwt:{issuer}#{subject}"))
    }

    /// Whether two principals are one identity: the same string, or a
    /// role's principal and one of that role's sessions (a record written
    /// before session names stopped counting names the session).
    pub fn same_identity(&self, other: &Principal) -> bool {
        if self == other {
            return true;
        }
        // Slack user ids are unique across workspaces: one person typing
        // in two workspaces of an organisation is still one person.
        if let (Some(a), Some(b)) = (slack_user_of(self), slack_user_of(other)) {
            return a == b;
        }
        if let (Some(a), Some(b)) = (jwt_subject_of(self), jwt_subject_of(other)) {
            // A record from before issuers were part of the name holds
            // `jwt:<sub>`; the same subject under an issuer may be them.
            return a.subject == b.subject && (a.issuer.is_none() || b.issuer.is_none());
        }
        match (role_of(self), role_of(other)) {
            // A role and any of its sessions; or one session name in two
            // roles, as IAM Identity Center names every permission set's
            // session after the person (this only ever refuses).
            (Some((h1, r1, s1)), Some((h2, r2, s2))) => {
                (h1 == h2 && r1 == r2 && (s1 == ANY_SESSION || s2 == ANY_SESSION))
                    || (s1 == s2 && s1 != ANY_SESSION)
            }
            _ => false,
        }
    }
}

/// A `jwt:` principal's parts: `jwt:<iss>#<sub>`, or `jwt:<sub>` as
/// written before the issuer was part of it.
struct JwtName<'a> {
    issuer: Option<&'a str>,
    subject: &'a str,
}

fn jwt_subject_of(p: &Principal) -> Option<JwtName<'_>> {
    let rest = p.as_str().strip_prefix("jwt:")?;
    Some(match rest.split_once('#') {
        Some((issuer, subject)) => JwtName {
            issuer: Some(issuer),
            subject,
        },
        None => JwtName {
            issuer: None,
            subject: rest,
        },
    })
}

/// The user id of a `slack:<team>/<user>` principal.
fn slack_user_of(p: &Principal) -> Option<&str> {
    let (_, user) = p.as_str().strip_prefix("slack:")?.split_once('/')?;
    Some(user)
}

/// An assumed role's principal split: the ARN's head, the role and the
/// session.
fn role_of(p: &Principal) -> Option<(&str, &str, &str)> {
    match sts_parts(p.as_str()) {
        Some(StsArn::AssumedRole {
            head,
            role,
            session,
        }) => Some((head, role, session)),
        _ => None,
    }
}

/// An STS ARN, split: `head` is `arn:<partition>:sts::<account>:`.
enum StsArn<'a> {
    AssumedRole {
        head: &'a str,
        role: &'a str,
        session: &'a str,
    },
    FederatedUser {
        head: &'a str,
        name: &'a str,
    },
}

fn sts_parts(arn: &str) -> Option<StsArn<'_>> {
    let mut fields = arn.splitn(6, ':');
    let (Some("arn"), Some(_), Some("sts"), Some(""), Some(_), Some(resource)) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return None;
    };
    let head = &arn[..arn.len() - resource.len()];
    if let Some(rest) = resource.strip_prefix("assumed-role/") {
        let (role, session) = rest.split_once('/')?;
        return (!role.is_empty() && !session.is_empty()).then_some(StsArn::AssumedRole {
            head,
            role,
            session,
        });
    }
    resource
        .strip_prefix("federated-user/")
        .map(|name| StsArn::FederatedUser { head, name })
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

    #[test]
    fn one_identity_under_several_names() {
        let role = who("arn:aws:sts::123456789012:assumed-role/Ops/*");
        let old_session = who("arn:aws:sts::123456789012:assumed-role/Ops/alice");
        assert!(role.same_identity(&old_session) && old_session.same_identity(&role));
        let other_role = who("arn:aws:sts::123456789012:assumed-role/Ops2/*");
        assert!(!role.same_identity(&other_role));
        // Two sessions of a trusted role are two people.
        let sso = |s: &str| {
            who(&format!(
                "arn:aws:sts::1:assumed-role/AWSReservedSSO_A_1/{s}"
            ))
        };
        assert!(!sso("alice").same_identity(&sso("bob")));
        // One person's sessions in two permission sets are one identity.
        let other_set = who("arn:aws:sts::2:assumed-role/AWSReservedSSO_B_2/alice");
        assert!(sso("alice").same_identity(&other_set));
        // A subject is someone else under another issuer, but a record
        // from before issuers counted may be anyone's of that subject.
        let jwt = |s: &str| who(&format!("jwt:{s}"));
        assert!(!jwt("https://a/#u1").same_identity(&jwt("https://b/#u1")));
        assert!(jwt("u1").same_identity(&jwt("https://a/#u1")));
        assert!(!jwt("u1").same_identity(&jwt("https://a/#u2")));
        // A Slack member is one person in every workspace of an organisation.
        assert!(who("slack:T1/W123").same_identity(&who("slack:T2/W123")));
        assert!(!who("slack:T1/W123").same_identity(&who("slack:T1/W124")));
        assert!(!who("local:alice").same_identity(&who("local:bob")));
    }

    #[test]
    fn nobody_decides_on_their_own_request() {
        let pattern = |s: &str| PrincipalPattern::parse(s).unwrap();
        let approvers = [
            pattern("arn:aws:sts::1:assumed-role/Ops/*"),
            pattern("slack:T1/*"),
        ];
        let ops = who("arn:aws:sts::1:assumed-role/Ops/*");
        assert!(may_decide(&approvers, &ops, &who("local:alice")));
        assert!(!may_decide(&approvers, &ops, &ops));
        assert!(!may_decide(
            &approvers,
            &ops,
            &who("arn:aws:sts::1:assumed-role/Ops/alice")
        ));
        assert!(!may_decide(
            &approvers,
            &who("slack:T1/U1"),
            &who("slack:T2/U1")
        ));
        assert!(may_decide(
            &approvers,
            &who("slack:T1/U2"),
            &who("slack:T2/U1")
        ));
        assert!(!may_decide(
            &approvers,
            &who("local:carol"),
            &who("local:alice")
        ));
        // Only a pattern that can name nobody but the requestor names only them.
        assert!(pattern("local:alice").names_only(&who("local:alice")));
        assert!(pattern("arn:aws:sts::1:assumed-role/Ops/*").names_only(&ops));
        assert!(!pattern("local:*").names_only(&who("local:alice")));
    }
}

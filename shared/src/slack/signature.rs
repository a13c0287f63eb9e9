//! Slack's request signatures, version 0: an HMAC-SHA256 of
//! `v0:{X-Slack-Request-Timestamp}:{body}` keyed with the app's signing
//! secret, sent as `X-Slack-Signature: v0=<hex>`.
//!
//! The timestamp is part of the signed text, so refusing old timestamps
//! stops a captured request from being replayed later.

use std::fmt;

use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use sha2::Sha256;

/// How far a request's timestamp may be from our clock, either way (Slack's
/// own recommendation).
pub const MAX_SKEW: SignedDuration = SignedDuration::from_mins(5);

/// The Slack app's signing secret. Its `Debug` never prints it, so it cannot
/// leak into a log line through a `{:?}` of some configuration struct.
#[derive(Clone)]
pub struct SigningSecret(String);

impl SigningSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }
}

impl From<String> for SigningSecret {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// Why a request was not accepted as coming from Slack. Each says what an
/// operator can check; all are HTTP 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "no Slack signing secret is configured, so no Slack request can be verified; \
         set it to the signing secret on the Slack app's Basic Information page"
    )]
    NoSecret,
    #[error(
        "the X-Slack-Request-Timestamp header is missing; this endpoint accepts only requests signed by Slack"
    )]
    MissingTimestamp,
    #[error(
        "the X-Slack-Signature header is missing; this endpoint accepts only requests signed by Slack"
    )]
    MissingSignature,
    #[error("X-Slack-Request-Timestamp {0:?} is not a Unix time in whole seconds")]
    MalformedTimestamp(String),
    #[error(
        "the request was signed at {signed}, {skew_secs} s away from this server's clock ({now}); \
         requests more than 5 minutes old or ahead are refused so they cannot be replayed. \
         If Slack sent it just now, check this server's clock"
    )]
    Stale {
        signed: Timestamp,
        now: Timestamp,
        skew_secs: i64,
    },
    #[error("X-Slack-Signature is not of the form v0=<64 hex digits>")]
    MalformedSignature,
    #[error(
        "X-Slack-Signature does not match the request: the signing secret configured here is not \
         this Slack app's, or something changed the body on the way"
    )]
    Mismatch,
}

impl SignatureError {
    pub fn code(&self) -> &'static str {
        "InvalidSlackSignature"
    }

    pub fn http_status(&self) -> u16 {
        401
    }
}

/// Checks that `body` was sent by the Slack app holding `secret`, given the
/// `X-Slack-Request-Timestamp` and `X-Slack-Signature` header values.
pub fn verify(
    secret: &SigningSecret,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: Timestamp,
) -> Result<(), SignatureError> {
    // An empty key would make every signature computable by anyone.
    if secret.0.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let timestamp = timestamp
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(SignatureError::MissingTimestamp)?;
    let signature = signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(SignatureError::MissingSignature)?;

    let signed = parse_timestamp(timestamp)
        .ok_or_else(|| SignatureError::MalformedTimestamp(timestamp.chars().take(40).collect()))?;
    let skew = now.duration_since(signed);
    if skew.abs() > MAX_SKEW {
        return Err(SignatureError::Stale {
            signed,
            now,
            skew_secs: skew.as_secs(),
        });
    }

    let tag = signature
        .strip_prefix("v0=")
        .filter(|hex| hex.len() == 64)
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or(SignatureError::MalformedSignature)?;
    // HMAC takes keys of any length, so this cannot fail; mapping it keeps
    // the function free of panics all the same.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.0.as_bytes())
        .map_err(|_| SignatureError::NoSecret)?;
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    // `verify_slice` compares in constant time, so the answer's timing
    // reveals nothing about how much of a guessed signature was right.
    mac.verify_slice(&tag).map_err(|_| SignatureError::Mismatch)
}

/// Whole seconds since the Unix epoch, digits only (no sign, no fraction):
/// Slack sends nothing else, and a strict reading leaves no second way to
/// write the same signed text.
fn parse_timestamp(text: &str) -> Option<Timestamp> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = text.parse().ok()?;
    Timestamp::from_second(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Slack's worked example from "Verifying requests from Slack".
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn now() -> Timestamp {
        Timestamp::from_second(1_531_420_618 + 60).unwrap()
    }

    fn check(ts: Option<&str>, sig: Option<&str>, body: &str) -> Result<(), SignatureError> {
        verify(&SigningSecret::new(SECRET), ts, sig, body.as_bytes(), now())
    }

    #[test]
    fn slack_example_verifies() {
        assert_eq!(check(Some(TS), Some(SIG), BODY), Ok(()));
        assert_eq!(
            check(
                Some(TS),
                Some(&SIG.to_uppercase().replace("V0=", "v0=")),
                BODY
            ),
            Ok(())
        );
    }

    #[test]
    fn tampering_is_a_mismatch() {
        let body = BODY.replace("roadrunner", "coyote");
        assert_eq!(
            check(Some(TS), Some(SIG), &body),
            Err(SignatureError::Mismatch)
        );
        let other_secret = verify(
            &SigningSecret::new("another"),
            Some(TS),
            Some(SIG),
            BODY.as_bytes(),
            now(),
        );
        assert_eq!(other_secret, Err(SignatureError::Mismatch));
        // A different timestamp changes the signed text even within the window.
        assert_eq!(
            check(Some("1531420619"), Some(SIG), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        assert_eq!(
            check(None, Some(SIG), BODY),
            Err(SignatureError::MissingTimestamp)
        );
        assert_eq!(
            check(Some("  "), Some(SIG), BODY),
            Err(SignatureError::MissingTimestamp)
        );
        assert_eq!(
            check(Some(TS), None, BODY),
            Err(SignatureError::MissingSignature)
        );
        for ts in [
            "-1531420618",
            "1531420618.5",
            "+1531420618",
            "abc",
            "99999999999999999999",
        ] {
            assert!(
                matches!(
                    check(Some(ts), Some(SIG), BODY),
                    Err(SignatureError::MalformedTimestamp(_))
                ),
                "{ts}"
            );
        }
        for sig in [
            "a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            "v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            "v0=a2114d57",
            "v0=zz114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            "v0=é2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b50",
        ] {
            assert_eq!(
                check(Some(TS), Some(sig), BODY),
                Err(SignatureError::MalformedSignature),
                "{sig}"
            );
        }
    }

    #[test]
    fn stale_either_way() {
        let at = |secs: i64| {
            verify(
                &SigningSecret::new(SECRET),
                Some(TS),
                Some(SIG),
                BODY.as_bytes(),
                Timestamp::from_second(1_531_420_618 + secs).unwrap(),
            )
        };
        assert_eq!(at(300), Ok(()));
        assert_eq!(at(-300), Ok(()));
        let err = at(301).unwrap_err();
        assert!(
            matches!(err, SignatureError::Stale { skew_secs: 301, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("clock"));
        assert!(matches!(
            at(-301),
            Err(SignatureError::Stale {
                skew_secs: -301,
                ..
            })
        ));
    }

    #[test]
    fn empty_secret_refuses_everything() {
        let err = verify(
            &SigningSecret::new(""),
            Some(TS),
            Some(SIG),
            BODY.as_bytes(),
            now(),
        );
        assert_eq!(err, Err(SignatureError::NoSecret));
    }

    #[test]
    fn every_error_is_401_and_debug_hides_the_secret() {
        for e in [
            SignatureError::NoSecret,
            SignatureError::MissingTimestamp,
            SignatureError::MissingSignature,
            SignatureError::MalformedSignature,
            SignatureError::Mismatch,
        ] {
            assert_eq!(e.http_status(), 401);
        }
        let shown = format!("{:?}", SigningSecret::from(SECRET.to_owned()));
        assert!(!shown.contains(SECRET), "{shown}");
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic(
            ts in proptest::option::of(".{0,40}"),
            sig in proptest::option::of(".{0,80}"),
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let r = verify(&SigningSecret::new(SECRET), ts.as_deref(), sig.as_deref(), &body, now());
            prop_assert!(r.is_err());
        }
    }
}

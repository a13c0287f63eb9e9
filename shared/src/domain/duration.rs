//! Access durations, written as ISO 8601 durations (`PT3H`, `PT30M`, `P1D`).
//!
//! The friendly forms jiff reads (`3h`, `90 minutes`) are accepted too, for
//! people typing in a chat. Days count as 24 hours; years, months and weeks
//! are refused, since no grant is that long.

use std::fmt;

use jiff::{SignedDuration, Span, SpanRelativeTo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration; use ISO 8601 such as PT1H, PT30M or PT1H30M")]
    Malformed(String),
    #[error("{0:?} uses years, months or weeks; use hours and minutes (days at most)")]
    CalendarUnits(String),
    #[error("the duration must be longer than zero; {0:?} is not")]
    NotPositive(String),
    #[error(
        "a maximum request access duration of {given} is out of range; it must be from PT5M to PT24H"
    )]
    MaximumOutOfRange { given: String },
}

/// How long one grant lasts: positive, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccessDuration(SignedDuration);

/// A policy's longest allowed grant for a port: from 5 minutes to 24 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MaxAccessDuration(SignedDuration);

impl AccessDuration {
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        parse_positive(text).map(Self)
    }

    /// A duration from a number of seconds; `None` unless positive.
    pub fn from_secs(secs: i64) -> Option<Self> {
        (secs > 0).then(|| Self(SignedDuration::from_secs(secs)))
    }

    pub fn get(self) -> SignedDuration {
        self.0
    }
}

impl MaxAccessDuration {
    pub const MIN: SignedDuration = SignedDuration::from_mins(5);
    pub const MAX: SignedDuration = SignedDuration::from_hours(24);
    /// What a port rule gets when its policy names no maximum (as in
    /// Defender for Cloud).
    pub const DEFAULT: MaxAccessDuration = MaxAccessDuration(SignedDuration::from_hours(3));

    pub fn parse(text: &str) -> Result<Self, DurationError> {
        Self::new(parse_positive(text)?)
    }

    pub fn new(d: SignedDuration) -> Result<Self, DurationError> {
        if d < Self::MIN || d > Self::MAX {
            return Err(DurationError::MaximumOutOfRange { given: iso(d) });
        }
        Ok(Self(d))
    }

    pub fn get(self) -> SignedDuration {
        self.0
    }

    /// The same limit as a grant duration: asking for the maximum is allowed.
    pub fn as_access(self) -> AccessDuration {
        AccessDuration(self.0)
    }
}

impl Default for MaxAccessDuration {
    fn default() -> Self {
        Self::DEFAULT
    }
}

fn parse_positive(text: &str) -> Result<SignedDuration, DurationError> {
    let trimmed = text.trim();
    let span: Span = trimmed
        .parse()
        .map_err(|_| DurationError::Malformed(text.to_owned()))?;
    if span.get_years() != 0 || span.get_months() != 0 || span.get_weeks() != 0 {
        return Err(DurationError::CalendarUnits(text.to_owned()));
    }
    let d = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|_| DurationError::Malformed(text.to_owned()))?;
    // Grants are kept to the second: rules carry their end time in seconds.
    let d = SignedDuration::from_secs(d.as_secs());
    if d <= SignedDuration::ZERO {
        return Err(DurationError::NotPositive(text.to_owned()));
    }
    Ok(d)
}

/// ISO 8601 text for a duration, as the API writes it (`PT3H`).
pub fn iso(d: SignedDuration) -> String {
    d.to_string()
}

impl fmt::Display for AccessDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for MaxAccessDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<String> for AccessDuration {
    type Error = DurationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<AccessDuration> for String {
    fn from(value: AccessDuration) -> Self {
        value.to_string()
    }
}

impl TryFrom<String> for MaxAccessDuration {
    type Error = DurationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<MaxAccessDuration> for String {
    fn from(value: MaxAccessDuration) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_and_friendly_forms() {
        assert_eq!(
            AccessDuration::parse("PT1H").unwrap().get(),
            SignedDuration::from_hours(1)
        );
        assert_eq!(
            AccessDuration::parse("PT1H30M").unwrap().get(),
            SignedDuration::from_mins(90)
        );
        assert_eq!(
            AccessDuration::parse("pt45m").unwrap().get(),
            SignedDuration::from_mins(45)
        );
        assert_eq!(
            AccessDuration::parse("P1D").unwrap().get(),
            SignedDuration::from_hours(24)
        );
        assert_eq!(
            AccessDuration::parse("1h").unwrap().get(),
            SignedDuration::from_hours(1)
        );
        assert_eq!(AccessDuration::parse("PT3H").unwrap().to_string(), "PT3H");
        assert_eq!(
            AccessDuration::parse("PT90M").unwrap().to_string(),
            "PT1H30M"
        );
        assert_eq!(
            AccessDuration::parse("PT1.9S").unwrap().get(),
            SignedDuration::from_secs(1)
        );
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            AccessDuration::parse("an hour"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            AccessDuration::parse("3600"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            AccessDuration::parse("P1M"),
            Err(DurationError::CalendarUnits(_))
        ));
        assert!(matches!(
            AccessDuration::parse("P1W"),
            Err(DurationError::CalendarUnits(_))
        ));
        assert!(matches!(
            AccessDuration::parse("PT0S"),
            Err(DurationError::NotPositive(_))
        ));
        assert!(matches!(
            AccessDuration::parse("PT0.5S"),
            Err(DurationError::NotPositive(_))
        ));
        assert!(matches!(
            AccessDuration::parse("-PT1H"),
            Err(DurationError::NotPositive(_))
        ));
    }

    #[test]
    fn maximum_is_five_minutes_to_a_day() {
        assert!(MaxAccessDuration::parse("PT5M").is_ok());
        assert!(MaxAccessDuration::parse("PT24H").is_ok());
        assert!(MaxAccessDuration::parse("P1D").is_ok());
        let err = MaxAccessDuration::parse("PT4M59S").unwrap_err();
        assert_eq!(
            err,
            DurationError::MaximumOutOfRange {
                given: "PT4M59S".into()
            }
        );
        assert!(err.to_string().contains("PT5M to PT24H"));
        assert!(MaxAccessDuration::parse("PT24H1S").is_err());
        assert_eq!(MaxAccessDuration::default().to_string(), "PT3H");
    }

    #[test]
    fn serde_uses_iso_strings() {
        let d: MaxAccessDuration = serde_json::from_str("\"PT3H\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"PT3H\"");
        assert!(serde_json::from_str::<MaxAccessDuration>("\"PT48H\"").is_err());
    }
}

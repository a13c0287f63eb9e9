//! Free text from people (justifications) and the helpers that make any text
//! fit a provider's character set and length limit.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest justification accepted, in characters.
pub const JUSTIFICATION_MAX_CHARS: usize = 1000;

/// Why a piece of free text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{field} is {len} characters long; at most {max} are allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} contains a control character (U+{code:04X}); use plain text on one line")]
    ControlCharacter { field: &'static str, code: u32 },
}

/// Why someone asks for access, as they wrote it: at most
/// [`JUSTIFICATION_MAX_CHARS`] characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Justification(String);

impl Justification {
    pub fn parse(text: &str) -> Result<Self, TextError> {
        check_plain("justification", text, JUSTIFICATION_MAX_CHARS)?;
        Ok(Self(text.trim().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Justification {
    type Error = TextError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Justification> for String {
    fn from(value: Justification) -> Self {
        value.0
    }
}

impl fmt::Display for Justification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Refuses text that is too long (in characters) or holds a control
/// character. Shared by every bounded string type of the domain.
pub(crate) fn check_plain(field: &'static str, text: &str, max: usize) -> Result<(), TextError> {
    let len = text.chars().count();
    if len > max {
        return Err(TextError::TooLong { field, len, max });
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(TextError::ControlCharacter {
            field,
            code: c as u32,
        });
    }
    Ok(())
}

/// Maps `text` into the characters `allowed` accepts, replacing any other
/// character with `replacement`, and cuts it to at most `max` characters.
/// `replacement` must itself be allowed; the result then always satisfies
/// the provider's rule, whatever the input.
pub(crate) fn fit(text: &str, allowed: fn(char) -> bool, replacement: char, max: usize) -> String {
    debug_assert!(allowed(replacement));
    text.chars()
        .map(|c| if allowed(c) { c } else { replacement })
        .take(max)
        .collect()
}

/// Characters AWS accepts in a security group rule description:
/// `a-z A-Z 0-9`, space and `._-:/()#,@[]+=&;{}!$*`.
pub fn aws_description_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c)
}

/// Characters kept in AWS tag values: the set every AWS service accepts
/// (letters, digits, space and `_.:/=+-@`), so a tag written by jitvm is
/// valid whichever API reads it back.
pub fn aws_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " _.:/=+-@".contains(c)
}

/// Characters kept in Azure rule descriptions: printable ASCII. Azure allows
/// more, but people read these in the portal and in logs.
pub fn azure_description_char(c: char) -> bool {
    c.is_ascii_graphic() || c == ' '
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn justification_bounds_and_control_characters() {
        assert_eq!(
            Justification::parse("  fixing the deploy ")
                .unwrap()
                .as_str(),
            "fixing the deploy"
        );
        assert!(Justification::parse(&"x".repeat(JUSTIFICATION_MAX_CHARS)).is_ok());
        assert_eq!(
            Justification::parse(&"é".repeat(JUSTIFICATION_MAX_CHARS + 1)),
            Err(TextError::TooLong {
                field: "justification",
                len: JUSTIFICATION_MAX_CHARS + 1,
                max: JUSTIFICATION_MAX_CHARS
            })
        );
        let err = Justification::parse("line one\nline two").unwrap_err();
        assert_eq!(
            err,
            TextError::ControlCharacter {
                field: "justification",
                code: 0x0a
            }
        );
        assert!(err.to_string().contains("U+000A"));
        assert!(Justification::parse("bell\u{7}").is_err());
    }

    #[test]
    fn fit_replaces_and_truncates() {
        assert_eq!(
            fit("José <admin>", aws_description_char, '_', 255),
            "Jos_ _admin_"
        );
        assert_eq!(fit("abcdef", aws_description_char, '_', 3), "abc");
        assert_eq!(fit("a\u{0}b", aws_tag_char, '_', 10), "a_b");
    }
}

//! Telling people what happened to access: who is told what (a
//! [`Notice`], made from the state changes a write stored), and the
//! channels they are told in.
//!
//! Nothing here decides or undoes access. Notices are made after the
//! record was written (from the requests table's change stream), and a
//! channel that fails is retried later, never in the way of a grant.

mod notice;

pub use notice::{Audience, Notice, NoticeKind, NoticePort, ending_soon, notices};

use std::time::Duration;

/// Why a notice could not be delivered, and whether trying again may help.
/// Its text never holds a secret (a bot token, a webhook URL's path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The channel was busy, slow or broken for now: try again, after
    /// `after` when it said how long to wait (a `Retry-After`).
    #[error("{why} (worth trying again)")]
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// The channel refused for good (a channel that does not exist, a
    /// revoked token, a malformed message): trying again cannot help.
    #[error("{why}")]
    Permanent { why: String },
}

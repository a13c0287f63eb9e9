//! Telling people what happened to access: who is told what (a
//! [`Notice`], made from the state changes a write stored), and the
//! channels they are told in.
//!
//! Nothing here decides or undoes access. Notices are made after the
//! record was written (from the requests table's change stream), and a
//! channel that fails is retried later, never in the way of a grant.

mod channels;
mod events;
mod http;
mod job;
mod notice;
mod render;
mod route;
mod settings;
mod slack_bot;
mod teams;

pub use channels::{ChannelNames, ChatChannels, is_webhook_name, webhooks};
pub use events::{AuditEvent, DETAIL_TYPES, SOURCE, audit_events};
pub use job::{Job, retry_delay, wait_until};
pub use notice::{Audience, Notice, NoticeKind, NoticePort, REMIND_BEFORE, ending_soon, notices};
pub use render::{slack_message, teams_message};
pub use route::{Destinations, Target, targets};
pub use settings::{NotifySettings, is_conversation_id};
pub use slack_bot::{SLACK_API, SlackBot};
pub use teams::TeamsWebhook;

use std::time::Duration;

use crate::domain::RequestRecord;

/// One write to the requests table, as its stream tells it: the record
/// before (`None` when new) and after (`None` when deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordChange {
    pub before: Option<RequestRecord>,
    pub after: Option<RequestRecord>,
}

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

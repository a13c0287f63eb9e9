//! Slack building blocks for the request function's chat routes: request
//! signatures, the slash-command and interaction forms, the `/jit` command
//! grammar, naming VMs the short way, the messages jitvm answers with, and
//! posting answers to a `response_url`.
//!
//! Nothing here decides anything: a parsed request becomes an
//! [`InitiateBody`](crate::domain::InitiateBody) and goes through the same
//! validation as the HTTP API. Everything a person typed is treated as
//! hostile text: parsing never panics, and every message escapes it so that
//! it cannot ping `@channel` or forge a link.

mod command;
mod form;
mod message;
mod post;
mod resolve;
mod signature;

pub use command::{
    Command, CommandError, MAX_TEXT_CHARS, Missing, RequestCommand, extension_of, normalise,
    parse_command,
};
pub use form::{
    Action, Interaction, Origin, SlackError, SlashCommand, first_stranger, is_slack_id,
};
pub use message::{
    Verb, accepted, decided, escape, help, pending_list, refused, remaining, replace_original,
    revoke_pending, status,
};
pub use post::{POST_TIMEOUT, check_response_url, post_response, response_client};
pub use resolve::{is_full_id, resolve_among, resolve_vm};
pub use signature::{MAX_SKEW, SignatureError, SigningSecret, verify};

/// `text` cut to `max` characters with an ellipsis, so that what a person
/// pasted cannot fill an answer.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

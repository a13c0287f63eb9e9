//! What Slack sends: a slash command as an `application/x-www-form-urlencoded`
//! form, and a button click as a form whose `payload` field holds the
//! interaction as JSON.
//!
//! Both arrive only after [`super::verify`] accepted the signature, so the
//! fields are Slack's; they are still checked, because the ids become a
//! principal and a principal decides who may open a port.

use serde::Deserialize;

use super::command::{Command, CommandError};
use crate::domain::{Principal, RequestId};

/// The longest Slack id accepted. Real ones are 9 to 11 characters; the
/// bound leaves room for Slack to grow them and keeps principals short.
const MAX_ID_LEN: usize = 32;

/// Why a Slack request could not be read, or an answer could not be posted.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error(
        "the Slack request has no {0} field; point the Slack app's slash command (or its interactivity URL) at this endpoint"
    )]
    MissingField(&'static str),
    #[error("the Slack request gives {0} more than once")]
    DuplicateField(&'static str),
    #[error(
        "{field} {value:?} is not a Slack id; Slack ids are 1 to 32 upper-case letters and digits starting with a letter"
    )]
    BadId { field: &'static str, value: String },
    #[error("the Slack interaction payload is not the JSON of a block_actions interaction: {0}")]
    BadPayload(String),
    #[error(
        "Slack interactions of type {0:?} are not handled here; only button clicks (block_actions) are"
    )]
    UnsupportedInteraction(String),
    #[error(
        "refusing to post to {0:?}: answers go only to Slack's https://hooks.slack.com/ response URLs"
    )]
    UrlRefused(String),
    #[error("Slack refused the answer posted to the response URL with HTTP {status}: {body}")]
    PostRejected { status: u16, body: String },
    #[error("posting the answer to Slack's response URL failed: {0}")]
    Transport(#[source] reqwest::Error),
}

impl SlackError {
    pub fn code(&self) -> &'static str {
        match self {
            SlackError::MissingField(_)
            | SlackError::DuplicateField(_)
            | SlackError::BadId { .. }
            | SlackError::BadPayload(_)
            | SlackError::UnsupportedInteraction(_) => "InvalidSlackRequest",
            SlackError::UrlRefused(_) => "InvalidResponseUrl",
            SlackError::PostRejected { .. } | SlackError::Transport(_) => "SlackUnavailable",
        }
    }

    /// 400 for what Slack sent, 502 when Slack would not take our answer.
    pub fn http_status(&self) -> u16 {
        match self {
            SlackError::PostRejected { .. } | SlackError::Transport(_) => 502,
            _ => 400,
        }
    }
}

/// True for a Slack id (team, user, channel...): 1 to 32 upper-case ASCII
/// letters and digits, starting with a letter.
pub fn is_slack_id(text: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&text.len())
        && text.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
        && text
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// A slash command, as Slack posts it. Fields Slack may leave out are empty
/// or `None`; `team_id`, `user_id` and `command` are always there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlashCommand {
    pub team_id: String,
    pub team_domain: Option<String>,
    pub enterprise_id: Option<String>,
    pub channel_id: String,
    pub channel_name: Option<String>,
    pub user_id: String,
    pub user_name: String,
    pub command: String,
    pub text: String,
    pub response_url: String,
    pub trigger_id: Option<String>,
}

impl SlashCommand {
    pub fn parse(body: &[u8]) -> Result<Self, SlackError> {
        let mut c = SlashCommand::default();
        // Which known fields were seen: a field given twice is refused
        // rather than guessed at.
        let mut seen: Vec<&'static str> = Vec::new();
        for (key, value) in form_urlencoded::parse(body) {
            let (name, slot): (&'static str, &mut String) = match key.as_ref() {
                "team_id" => ("team_id", &mut c.team_id),
                "channel_id" => ("channel_id", &mut c.channel_id),
                "user_id" => ("user_id", &mut c.user_id),
                "user_name" => ("user_name", &mut c.user_name),
                "command" => ("command", &mut c.command),
                "text" => ("text", &mut c.text),
                "response_url" => ("response_url", &mut c.response_url),
                "team_domain" => ("team_domain", c.team_domain.get_or_insert_default()),
                "enterprise_id" => ("enterprise_id", c.enterprise_id.get_or_insert_default()),
                "channel_name" => ("channel_name", c.channel_name.get_or_insert_default()),
                "trigger_id" => ("trigger_id", c.trigger_id.get_or_insert_default()),
                // Slack adds fields over time (api_app_id, is_enterprise_install...).
                _ => continue,
            };
            if seen.contains(&name) {
                return Err(SlackError::DuplicateField(name));
            }
            seen.push(name);
            *slot = value.into_owned();
        }
        for required in ["team_id", "user_id", "command"] {
            if !seen.contains(&required) {
                return Err(SlackError::MissingField(required));
            }
        }
        Ok(c)
    }

    /// The caller as jitvm names them: `slack:<team_id>/<user_id>`.
    pub fn principal(&self) -> Result<Principal, SlackError> {
        slack_principal(&self.team_id, &self.user_id)
    }

    /// The workspace the command was typed in (and its Enterprise Grid
    /// organisation, if any).
    pub fn origins(&self) -> Vec<Origin<'_>> {
        vec![Origin {
            team: &self.team_id,
            enterprise: self.enterprise_id.as_deref().filter(|e| !e.is_empty()),
        }]
    }
}

/// A Slack workspace a call names, with its Enterprise Grid organisation
/// when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub team: &'a str,
    pub enterprise: Option<&'a str>,
}

/// The first workspace among `origins` that `allowed` (team ids and
/// enterprise ids) does not let in; `None` when every one is let in. A
/// workspace is let in when its team id is listed, or the organisation it
/// belongs to is.
pub fn first_stranger<'a>(allowed: &[String], origins: &[Origin<'a>]) -> Option<Origin<'a>> {
    let listed = |id: &str| allowed.iter().any(|a| a == id);
    origins
        .iter()
        .find(|o| !listed(o.team) && !o.enterprise.is_some_and(listed))
        .copied()
}

/// A button click (a `block_actions` interaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interaction {
    /// The clicker's own workspace (`user.team_id`).
    pub team_id: String,
    /// The workspace the message with the button is in (`team.id`), when
    /// Slack names it: another one for a guest of a shared channel.
    pub host_team_id: Option<String>,
    /// The Enterprise Grid organisation of the workspace the message is
    /// in (`team.enterprise_id`, else `enterprise.id`), if any: where the
    /// click happened, not necessarily the clicker's.
    pub enterprise_id: Option<String>,
    pub user_id: String,
    pub user_name: Option<String>,
    pub response_url: String,
    pub actions: Vec<Action>,
}

/// One clicked element: its `action_id` and the `value` it carries (jitvm's
/// buttons carry a request id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub action_id: String,
    pub value: Option<String>,
}

#[derive(Deserialize)]
struct RawInteraction {
    #[serde(rename = "type")]
    kind: String,
    user: Option<RawUser>,
    team: Option<RawTeam>,
    enterprise: Option<RawTeam>,
    response_url: Option<String>,
    #[serde(default)]
    actions: Vec<RawAction>,
}

#[derive(Deserialize)]
struct RawUser {
    id: String,
    team_id: Option<String>,
    username: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawTeam {
    id: Option<String>,
    enterprise_id: Option<String>,
}

#[derive(Deserialize)]
struct RawAction {
    action_id: String,
    value: Option<String>,
}

impl Interaction {
    pub fn parse(body: &[u8]) -> Result<Self, SlackError> {
        let mut payload = None;
        for (key, value) in form_urlencoded::parse(body) {
            if key == "payload" {
                if payload.is_some() {
                    return Err(SlackError::DuplicateField("payload"));
                }
                payload = Some(value.into_owned());
            }
        }
        let payload = payload.ok_or(SlackError::MissingField("payload"))?;
        let raw: RawInteraction =
            serde_json::from_str(&payload).map_err(|e| SlackError::BadPayload(e.to_string()))?;
        if raw.kind != "block_actions" {
            return Err(SlackError::UnsupportedInteraction(
                raw.kind.chars().take(40).collect(),
            ));
        }
        let user = raw.user.ok_or(SlackError::MissingField("user"))?;
        // The user's own workspace, which a slash command from the same
        // person names too. Never the host's in its place: a guest from
        // another workspace would take on the host's name.
        let team_id = user
            .team_id
            .filter(|t| !t.is_empty())
            .ok_or(SlackError::MissingField("user.team_id"))?;
        let response_url = raw
            .response_url
            .ok_or(SlackError::MissingField("response_url"))?;
        Ok(Self {
            team_id,
            host_team_id: raw
                .team
                .as_ref()
                .and_then(|t| t.id.clone())
                .filter(|t| !t.is_empty()),
            enterprise_id: raw
                .team
                .as_ref()
                .and_then(|t| t.enterprise_id.clone())
                .or_else(|| raw.enterprise.and_then(|e| e.id))
                .filter(|e| !e.is_empty()),
            user_id: user.id,
            user_name: user.username.or(user.name),
            response_url,
            actions: raw
                .actions
                .into_iter()
                .map(|a| Action {
                    action_id: a.action_id,
                    value: a.value,
                })
                .collect(),
        })
    }

    /// The clicker as jitvm names them: `slack:<team_id>/<user_id>`.
    pub fn principal(&self) -> Result<Principal, SlackError> {
        slack_principal(&self.team_id, &self.user_id)
    }

    /// The clicker's workspace and the one the button is in, when another.
    ///
    /// The payload's organisation is where the click happened, so it
    /// vouches for the clicker only when the clicker is at home there: the
    /// clicker's workspace is the message's, or is the organisation itself
    /// (on Enterprise Grid `user.team_id` may be the `E...` id). A guest of
    /// a shared channel from elsewhere is judged by their own workspace.
    pub fn origins(&self) -> Vec<Origin<'_>> {
        let enterprise = self.enterprise_id.as_deref();
        let host = self.host_team_id.as_deref();
        let at_home = host == Some(self.team_id.as_str()) || enterprise == Some(&self.team_id);
        let mut origins = vec![Origin {
            team: &self.team_id,
            enterprise: enterprise.filter(|_| at_home),
        }];
        if let Some(host) = host.filter(|h| *h != self.team_id) {
            origins.push(Origin {
                team: host,
                enterprise,
            });
        }
        origins
    }
}

impl Action {
    /// The command a jitvm button stands for: `approve`, `deny`, `revoke`
    /// or `extend` of the request id in `value`.
    pub fn command(&self) -> Result<Command, CommandError> {
        let verb: &'static str = match self.action_id.as_str() {
            "approve" => "approve",
            "deny" => "deny",
            "revoke" => "revoke",
            "extend" => "extend",
            other => {
                return Err(CommandError::UnknownAction {
                    action_id: other.chars().take(40).collect(),
                });
            }
        };
        let value = self.value.as_deref().unwrap_or_default();
        if value.is_empty() {
            return Err(CommandError::MissingId { verb });
        }
        let id = RequestId::parse(value).map_err(|_| CommandError::BadId {
            verb,
            given: value.chars().take(60).collect(),
        })?;
        Ok(match verb {
            "approve" => Command::Approve { id },
            "deny" => Command::Deny { id, reason: None },
            "extend" => Command::Extend { id },
            _ => Command::Revoke { id },
        })
    }
}

fn slack_principal(team_id: &str, user_id: &str) -> Result<Principal, SlackError> {
    for (field, value) in [("team_id", team_id), ("user_id", user_id)] {
        if !is_slack_id(value) {
            return Err(SlackError::BadId {
                field,
                value: value.chars().take(40).collect(),
            });
        }
    }
    Principal::parse(&format!("slack:{team_id}/{user_id}")).map_err(|_| SlackError::BadId {
        field: "user_id",
        value: user_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const BODY: &str = "token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001&team_domain=example\
        &enterprise_id=E0001&enterprise_name=Globular%20Construct%20Inc&channel_id=C2147483705\
        &channel_name=test&user_id=U2147483697&user_name=Steve&command=%2Fjit\
        &text=22+i-0abc123+1h+from+198.51.100.7+--+fixing+the+%26amp%3B+deploy\
        &response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F1234%2F5678\
        &trigger_id=13345224609.738474920.8088930838d88f008e0&api_app_id=A123456";

    #[test]
    fn parses_slacks_example_command() {
        let c = SlashCommand::parse(BODY.as_bytes()).unwrap();
        assert_eq!(c.team_id, "T0001");
        assert_eq!(c.user_id, "U2147483697");
        assert_eq!(c.user_name, "Steve");
        assert_eq!(c.command, "/jit");
        assert_eq!(
            c.text,
            "22 i-0abc123 1h from 198.51.100.7 -- fixing the &amp; deploy"
        );
        assert_eq!(c.response_url, "https://hooks.slack.com/commands/1234/5678");
        assert_eq!(c.channel_id, "C2147483705");
        assert_eq!(c.enterprise_id.as_deref(), Some("E0001"));
        assert_eq!(c.principal().unwrap().as_str(), "slack:T0001/U2147483697");
    }

    #[test]
    fn refuses_missing_duplicate_and_bad_ids() {
        assert!(matches!(
            SlashCommand::parse(b"user_id=U1&command=%2Fjit"),
            Err(SlackError::MissingField("team_id"))
        ));
        assert!(matches!(
            SlashCommand::parse(b"team_id=T1&team_id=T2&user_id=U1&command=%2Fjit"),
            Err(SlackError::DuplicateField("team_id"))
        ));
        for (team, user) in [
            ("T1", "u1"),
            ("T1", "U1/../x"),
            ("T 1", "U1"),
            ("", "U1"),
            ("T1", "1U"),
            ("T1", &"U".repeat(33)),
            ("T1", "U1\u{0}"),
            ("Т1", "U1"), // Cyrillic
        ] {
            let c = SlashCommand {
                team_id: team.into(),
                user_id: user.into(),
                ..SlashCommand::default()
            };
            let err = c.principal().unwrap_err();
            assert!(matches!(err, SlackError::BadId { .. }), "{team}/{user}");
            assert_eq!(err.http_status(), 400);
        }
        // Garbage is read as a form with nothing in it, never a panic.
        assert!(SlashCommand::parse(&[0xff, 0xfe, b'=', b'%', b'Z']).is_err());
    }

    fn interaction_body(payload: &serde_json::Value) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish()
            .into_bytes()
    }

    #[test]
    fn parses_a_button_click() {
        let payload = json!({
            "type": "block_actions",
            "user": {"id": "U0CA5", "username": "amy", "name": "amy", "team_id": "T3MDE"},
            "api_app_id": "A0CA5",
            "team": {"id": "T9TK3CUKW", "domain": "example"},
            "response_url": "https://hooks.slack.com/actions/AABA1ABCD/1232321423432/D09sSasdasdAS9091209",
            "actions": [{"action_id": "approve", "block_id": "pending:r1", "type": "button",
                          "value": "r1", "text": {"type": "plain_text", "text": "Approve"}}]
        });
        let i = Interaction::parse(&interaction_body(&payload)).unwrap();
        assert_eq!(i.principal().unwrap().as_str(), "slack:T3MDE/U0CA5");
        assert_eq!(i.user_name.as_deref(), Some("amy"));
        assert_eq!(
            i.actions[0].command().unwrap(),
            Command::Approve {
                id: RequestId::parse("r1").unwrap()
            }
        );
        // The clicker's own workspace and the message's are both named.
        assert_eq!(
            i.origins(),
            vec![
                Origin {
                    team: "T3MDE",
                    enterprise: None
                },
                Origin {
                    team: "T9TK3CUKW",
                    enterprise: None
                }
            ]
        );
        // Without user.team_id the clicker is nobody: the message's
        // workspace is not theirs to borrow.
        let mut p = payload.clone();
        p["user"].as_object_mut().unwrap().remove("team_id");
        assert!(matches!(
            Interaction::parse(&interaction_body(&p)),
            Err(SlackError::MissingField("user.team_id"))
        ));
    }

    #[test]
    fn only_listed_workspaces_and_organisations_are_let_in() {
        let allowed = vec!["T0001".to_owned(), "E0002".to_owned()];
        let at = |team, enterprise| Origin { team, enterprise };
        assert_eq!(first_stranger(&allowed, &[at("T0001", None)]), None);
        assert_eq!(
            first_stranger(&allowed, &[at("T0009", Some("E0002"))]),
            None
        );
        assert_eq!(
            first_stranger(&allowed, &[at("T0009", Some("E0003"))]),
            Some(at("T0009", Some("E0003")))
        );
        // One stranger among several workspaces is enough to refuse.
        assert_eq!(
            first_stranger(&allowed, &[at("T0001", None), at("T0666", None)]),
            Some(at("T0666", None))
        );
    }

    #[test]
    fn refuses_other_interactions_and_bad_buttons() {
        let body = interaction_body(&json!({"type": "view_submission", "user": {"id": "U1"}}));
        assert!(matches!(
            Interaction::parse(&body),
            Err(SlackError::UnsupportedInteraction(_))
        ));
        assert!(matches!(
            Interaction::parse(b"payload=%7Bnot+json"),
            Err(SlackError::BadPayload(_))
        ));
        assert!(matches!(
            Interaction::parse(b"text=hello"),
            Err(SlackError::MissingField("payload"))
        ));
        let no_url = interaction_body(&json!({"type": "block_actions",
            "user": {"id": "U1", "team_id": "T1"}, "actions": []}));
        assert!(matches!(
            Interaction::parse(&no_url),
            Err(SlackError::MissingField("response_url"))
        ));
        let button = |action_id: &str, value: Option<&str>| Action {
            action_id: action_id.into(),
            value: value.map(Into::into),
        };
        assert!(matches!(
            button("launch", Some("r1")).command(),
            Err(CommandError::UnknownAction { .. })
        ));
        assert!(matches!(
            button("deny", None).command(),
            Err(CommandError::MissingId { verb: "deny" })
        ));
        assert!(matches!(
            button("revoke", Some("r1; DROP TABLE")).command(),
            Err(CommandError::BadId { .. })
        ));
        assert_eq!(
            button("deny", Some("r1")).command().unwrap(),
            Command::Deny {
                id: RequestId::parse("r1").unwrap(),
                reason: None
            }
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = SlashCommand::parse(&body);
            let _ = Interaction::parse(&body);
        }

        #[test]
        fn arbitrary_payloads_never_panic(payload in ".{0,300}") {
            let body = form_urlencoded::Serializer::new(String::new())
                .append_pair("payload", &payload)
                .finish();
            let _ = Interaction::parse(body.as_bytes());
        }
    }
}

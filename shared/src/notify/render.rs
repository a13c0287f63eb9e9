//! A notice as people read it: a Slack message (Block Kit, with the
//! buttons the interactive route answers) and a Teams message (an
//! Adaptive Card linking to the console). Every text that came from a
//! person (a justification, a reason, a principal) is escaped for the
//! channel, so it can neither ping a channel nor forge a link.

use jiff::Timestamp;
use reqwest::Url;
use serde_json::{Value, json};

use super::{Notice, NoticeKind, NoticePort};
use crate::domain::StatusReason;
use crate::slack::escape;

/// The longest a person's text is shown.
const MAX_TEXT: usize = 300;

/// The Slack message of `notice`: a plain `text` fallback and blocks.
pub fn slack_message(notice: &Notice, console: Option<&Url>) -> Value {
    let headline = headline(notice, &|t| format!("*{}*", escape(t)));
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("{} {headline}", emoji(notice.kind))}}),
    ];
    let facts: Vec<Value> = facts(notice)
        .into_iter()
        .map(|(name, value)| json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", escape(&value))}))
        .collect();
    for chunk in facts.chunks(10) {
        blocks.push(json!({"type": "section", "fields": chunk}));
    }
    let buttons: Vec<Value> = actions(notice.kind)
        .iter()
        .map(|(id, label, style)| {
            let mut button = json!({"type": "button", "action_id": id, "value": notice.request_id.as_str(),
                "text": {"type": "plain_text", "text": label}});
            if let Some(style) = style {
                button["style"] = (*style).into();
            }
            button
        })
        .collect();
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "block_id": format!("{}:{}", kind_name(notice.kind), notice.request_id), "elements": buttons}));
    }
    if let Some(url) = console {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("<{}|Open the jitvm console> · request `{}`", url, notice.request_id)}]}));
    }
    json!({"text": format!("{} {}", emoji(notice.kind), headline_plain(notice)), "blocks": blocks})
}

/// The Teams message of `notice`: an Adaptive Card, with a link to the
/// console to act on it (a webhook card cannot call back).
pub fn teams_message(notice: &Notice, console: Option<&Url>) -> Value {
    let loud = matches!(notice.kind, NoticeKind::BreakGlass | NoticeKind::Failed);
    let facts: Vec<Value> = facts(notice)
        .into_iter()
        .map(|(name, value)| json!({"title": name, "value": markdown_escape(&value)}))
        .collect();
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": markdown_escape(&headline_plain(notice)), "weight": "Bolder",
             "size": "Medium", "wrap": true, "color": if loud { "Attention" } else { "Default" }},
            {"type": "FactSet", "facts": facts},
        ],
    });
    if let (Some(url), Some(label)) = (console, console_action(notice.kind)) {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": label, "url": url.as_str()}]);
    }
    json!({"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": card}]})
}

/// The notice's first line, with `strong` applied to the names in it.
fn headline(notice: &Notice, strong: &dyn Fn(&str) -> String) -> String {
    let who = strong(&clip(notice.requestor.as_str()));
    let vm = strong(&clip(&notice.vm.to_string()));
    let actor = notice.actor.as_ref().map(|a| strong(&clip(a.as_str())));
    let by = actor.map(|a| format!(" by {a}")).unwrap_or_default();
    match notice.kind {
        NoticeKind::Pending => format!("{who} asks for access to {vm}"),
        NoticeKind::BreakGlass => format!("Break-glass access: {who} opened {vm} without approval"),
        NoticeKind::Withdrawn => format!("{who} withdrew the request for {vm}"),
        NoticeKind::Approved => format!("The request of {who} for {vm} was approved{by}"),
        NoticeKind::Denied => format!("The request of {who} for {vm} was denied{by}"),
        NoticeKind::TimedOut => {
            format!("The request of {who} for {vm} timed out: no approver decided")
        }
        NoticeKind::Opened => format!("Access to {vm} is open for {who}"),
        NoticeKind::EndingSoon => format!(
            "Access to {vm} for {who} ends {}",
            ends_in(notice.ports.iter().map(|p| p.end_time_utc).min(), notice.at)
        ),
        NoticeKind::ClosedEarly => format!(
            "Access to {vm} for {who} was closed early: {}",
            notice
                .reason
                .map(closed_because)
                .unwrap_or("closed")
                .to_owned()
                + &by
        ),
        NoticeKind::Failed => format!("Access to {vm} for {who} could not be opened"),
    }
}

fn headline_plain(notice: &Notice) -> String {
    headline(notice, &|t| t.to_owned())
}

/// The details under the headline, as name and (unescaped) value.
fn facts(notice: &Notice) -> Vec<(&'static str, String)> {
    let mut facts = vec![("Request", notice.request_id.to_string())];
    if !notice.ports.is_empty() {
        let ports: Vec<String> = notice.ports.iter().map(port_line).collect();
        facts.push(("Ports", ports.join("\n")));
    }
    if let Some(j) = &notice.justification {
        facts.push(("Justification", clip(j)));
    }
    if let Some(m) = &notice.message {
        facts.push(("Why", clip(m)));
    }
    if notice.break_glass && notice.kind != NoticeKind::BreakGlass {
        facts.push(("Break-glass", "yes".into()));
    }
    facts
}

fn port_line(p: &NoticePort) -> String {
    format!(
        "{}/{} from {} until {}",
        p.number,
        p.protocol.as_str(),
        p.source,
        utc(p.end_time_utc)
    )
}

/// The buttons of a Slack message: `action_id`, label, style. The
/// interactive route answers `approve`, `deny`, `revoke` and `extend`.
fn actions(kind: NoticeKind) -> &'static [(&'static str, &'static str, Option<&'static str>)] {
    match kind {
        NoticeKind::Pending => &[
            ("approve", "Approve", Some("primary")),
            ("deny", "Deny", Some("danger")),
        ],
        NoticeKind::BreakGlass => &[("revoke", "Revoke now", Some("danger"))],
        NoticeKind::Opened => &[("revoke", "Revoke", None)],
        NoticeKind::EndingSoon => &[("extend", "Extend", Some("primary"))],
        _ => &[],
    }
}

fn console_action(kind: NoticeKind) -> Option<&'static str> {
    match kind {
        NoticeKind::Pending => Some("Approve or deny in the console"),
        NoticeKind::BreakGlass | NoticeKind::Opened => Some("Revoke in the console"),
        NoticeKind::EndingSoon => Some("Extend in the console"),
        _ => Some("Open the console"),
    }
}

fn emoji(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::Pending => ":hourglass:",
        NoticeKind::BreakGlass => ":rotating_light:",
        NoticeKind::Withdrawn => ":leftwards_arrow_with_hook:",
        NoticeKind::Approved => ":white_check_mark:",
        NoticeKind::Denied => ":no_entry:",
        NoticeKind::TimedOut => ":hourglass_flowing_sand:",
        NoticeKind::Opened => ":unlock:",
        NoticeKind::EndingSoon => ":alarm_clock:",
        NoticeKind::ClosedEarly => ":lock:",
        NoticeKind::Failed => ":x:",
    }
}

fn kind_name(kind: NoticeKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn closed_because(reason: StatusReason) -> &'static str {
    match reason {
        StatusReason::UserRequested => "revoked",
        StatusReason::NewerRequestInitiated => "a newer request replaced it",
        StatusReason::PolicyChanged => "the policy changed or JIT was disabled",
        StatusReason::RuleRemoved => "its firewall rule was removed outside jitvm",
        StatusReason::Error => "an error",
        StatusReason::Denied => "denied",
        StatusReason::Expired => "its time was up",
    }
}

fn ends_in(end: Option<Timestamp>, now: Timestamp) -> String {
    let Some(end) = end else {
        return "soon".into();
    };
    let mins = (now.duration_until(end).as_secs() + 59) / 60;
    format!("at {} (in {} min)", utc(end), mins.max(0))
}

fn utc(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// `text` cut to [`MAX_TEXT`] characters, control characters dropped.
fn clip(text: &str) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .take(MAX_TEXT)
        .collect();
    if text.chars().count() > MAX_TEXT {
        out.push('…');
    }
    out
}

/// `text` with the characters Adaptive Card markdown (and the HTML Teams
/// may render) gives meaning escaped, so a person's text cannot make a
/// link, a heading or emphasis.
fn markdown_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '~' | '!' | '|' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Port, Principal, Protocol, RequestId, SourcePrefix, VmId};

    const HOSTILE: &str =
        "<!channel> <@U123> [x](https://evil.example) *b* <img src=x onerror=alert(1)>";

    fn notice(kind: NoticeKind) -> Notice {
        Notice {
            kind,
            request_id: RequestId::parse("r-1").unwrap(),
            vm: VmId::parse("arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0")
                .unwrap(),
            requestor: Principal::parse("local:alice").unwrap(),
            actor: Some(Principal::parse("local:bob").unwrap()),
            ports: vec![NoticePort {
                number: Port::parse(22).unwrap(),
                protocol: Protocol::Tcp,
                source: "198.51.100.7".parse::<SourcePrefix>().unwrap(),
                end_time_utc: "2026-12-01T13:00:00Z".parse().unwrap(),
            }],
            justification: Some(HOSTILE.into()),
            reason: Some(StatusReason::UserRequested),
            message: Some(HOSTILE.into()),
            break_glass: kind == NoticeKind::BreakGlass,
            at: "2026-12-01T12:56:00Z".parse().unwrap(),
        }
    }

    const KINDS: [NoticeKind; 10] = [
        NoticeKind::Pending,
        NoticeKind::BreakGlass,
        NoticeKind::Withdrawn,
        NoticeKind::Approved,
        NoticeKind::Denied,
        NoticeKind::TimedOut,
        NoticeKind::Opened,
        NoticeKind::EndingSoon,
        NoticeKind::ClosedEarly,
        NoticeKind::Failed,
    ];

    #[test]
    fn hostile_text_is_neutralised_in_both_channels() {
        let console = Url::parse("https://jit.example.com/").unwrap();
        for kind in KINDS {
            let slack = slack_message(&notice(kind), Some(&console)).to_string();
            assert!(
                !slack.contains("<!channel>") && !slack.contains("<@U123>"),
                "{kind:?}: {slack}"
            );
            assert!(!slack.contains("<img"), "{kind:?}");
            let teams = teams_message(&notice(kind), Some(&console)).to_string();
            assert!(!teams.contains("[x](https"), "{kind:?}: {teams}");
            assert!(
                !teams.contains("<img") && !teams.contains("<!channel>"),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn buttons_carry_the_request_and_the_action_the_route_answers() {
        let ids = |kind| -> Vec<(String, String)> {
            let m = slack_message(&notice(kind), None);
            m["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b["type"] == "actions")
                .flat_map(|b| b["elements"].as_array().unwrap().clone())
                .map(|e| {
                    (
                        e["action_id"].as_str().unwrap().to_owned(),
                        e["value"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        let r = "r-1".to_owned();
        assert_eq!(
            ids(NoticeKind::Pending),
            [("approve".into(), r.clone()), ("deny".into(), r.clone())]
        );
        assert_eq!(ids(NoticeKind::BreakGlass), [("revoke".into(), r.clone())]);
        assert_eq!(ids(NoticeKind::EndingSoon), [("extend".into(), r.clone())]);
        assert!(ids(NoticeKind::Denied).is_empty());
    }

    #[test]
    fn teams_cards_link_to_the_console_and_break_glass_is_loud() {
        let console = Url::parse("https://jit.example.com/").unwrap();
        let m = teams_message(&notice(NoticeKind::BreakGlass), Some(&console));
        let card = &m["attachments"][0]["content"];
        assert_eq!(
            m["attachments"][0]["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["version"], "1.4");
        assert_eq!(card["body"][0]["color"], "Attention");
        assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
        assert_eq!(card["actions"][0]["url"], "https://jit.example.com/");
        assert!(teams_message(&notice(NoticeKind::Pending), None)["attachments"][0]["content"]["actions"].is_null());
        let ending = slack_message(&notice(NoticeKind::EndingSoon), None);
        assert!(
            ending["text"].as_str().unwrap().contains("in 4 min"),
            "{ending}"
        );
    }
}

//! The messages jitvm answers in Slack with, built from domain values.
//!
//! Every piece of text that came from outside (VM names, principals,
//! justifications, error messages that quote input) goes through [`escape`],
//! so it shows as typed and cannot ping `@channel`, mention someone or
//! forge a link. Markup jitvm itself writes (mentions of approvers, dates,
//! code spans) is added after escaping.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::domain::{PortRecord, PortStatus, Principal, Protocol, RequestRecord, RequestStatus};

use super::form::is_slack_id;

/// Slack refuses a section text over 3000 characters.
const SECTION_MAX_CHARS: usize = 3000;
/// Slack refuses messages of more than 50 blocks; lists stop well before.
const MAX_LISTED: usize = 15;

/// What happened to a request, for [`decided`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Approved,
    Denied,
    Revoked,
}

/// Escapes text for Slack's mrkdwn: `&`, `<` and `>` become entities, as
/// Slack requires, so that no `<!channel>` or `<http://...|...>` can be
/// formed from it.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// How much of a grant is left, for people: `1 h 12 min left`, `45 min
/// left`, `expired`. Minutes round up, so "1 min left" lasts until the end.
pub fn remaining(end: Timestamp, now: Timestamp) -> String {
    let secs = end.duration_since(now).as_secs();
    if secs <= 0 {
        return "expired".to_owned();
    }
    format!("{} left", span(SignedDuration::from_secs(secs)))
}

/// How to use the command named `command_name` (such as `/jit`).
pub fn help(command_name: &str) -> Value {
    let c = escape(command_name);
    let text = format!(
        "*Just-in-time VM access*\n\
         `{c} 22 i-0abc123 1h from 198.51.100.7 -- fixing the deploy` asks to open port 22 on a VM for an hour, from your address:\n\
         • ports: `22`, or several as `22,3389`\n\
         • the VM: its EC2 instance id, its Azure VM name or `resourceGroup/name`, or its full ARN or resource id\n\
         • how long: `30m`, `1h`, `1h30m` or `PT1H`, at most what the VM's policy allows\n\
         • `from` your public IP address or network, such as `198.51.100.7` or `198.51.100.0/24`: required, because jitvm sees Slack's address, not yours\n\
         • after `--`: why you need access\n\
         • `--break-glass` before `--`: in an emergency, open at once without waiting for approval, where the VM's policy names you for it (a reason is required, the time is shorter, and the approvers are told)\n\
         `{c} status`: your open access and waiting requests\n\
         `{c} pending`: requests waiting for your approval, with buttons\n\
         `{c} approve &lt;id&gt;`, `{c} deny &lt;id&gt; -- reason`, `{c} revoke &lt;id&gt;`"
    );
    ephemeral(text.clone(), vec![section(&text)])
}

/// The answer to a request that the policy accepted: what is granted until
/// when, or whose approval it waits for.
pub fn accepted(record: &RequestRecord, now: Timestamp) -> Value {
    let vm = escape(record.vm().short_name());
    let id = escape(record.id().as_str());
    let text = match record.status() {
        RequestStatus::Approved if record.break_glass() => format!(
            ":rotating_light: Break-glass access to *{vm}* granted without approval; the rule is opening now, and the VM's approvers are told.\n{}",
            port_lines(record.ports(), now)
        ),
        RequestStatus::Approved => format!(
            ":white_check_mark: Access to *{vm}* granted; the rule is opening now.\n{}",
            port_lines(record.ports(), now)
        ),
        RequestStatus::PendingApproval => format!(
            ":hourglass_flowing_sand: Your request for *{vm}* waits for approval by {}. \
             The time starts when it is approved.\n{}",
            approvers(record),
            asked_lines(record)
        ),
        RequestStatus::Denied => format!(":no_entry: Your request for *{vm}* was denied."),
    };
    ephemeral(
        format!("{} (request {id})", first_line(&text)),
        vec![section(&text), context(&request_context(record))],
    )
}

/// The answer to a command or request that was refused.
pub fn refused(code: &str, message: &str) -> Value {
    let text = format!(":warning: {}", escape(message));
    ephemeral(
        text.clone(),
        vec![section(&text), context(&format!("`{}`", escape(code)))],
    )
}

/// The caller's open grants with the time left, and requests still waiting
/// for approval.
pub fn status(records: &[RequestRecord], now: Timestamp) -> Value {
    let open: Vec<&RequestRecord> = records
        .iter()
        .filter(|r| r.status() == RequestStatus::Approved && !open_ports(r, now).is_empty())
        .collect();
    let waiting: Vec<&RequestRecord> = records
        .iter()
        .filter(|r| r.status() == RequestStatus::PendingApproval)
        .collect();
    if open.is_empty() && waiting.is_empty() {
        let text = "You have no open access and no request waiting for approval.";
        return ephemeral(text.to_owned(), vec![section(text)]);
    }
    let mut blocks = Vec::new();
    if !open.is_empty() {
        blocks.push(section(&format!("*Open access* ({})", open.len())));
        for r in open.iter().take(MAX_LISTED) {
            let ports: Vec<PortRecord> = open_ports(r, now).into_iter().cloned().collect();
            blocks.push(section(&format!(
                "*{}*\n{}",
                escape(r.vm().short_name()),
                port_lines(&ports, now)
            )));
            blocks.push(context(&request_context(r)));
        }
        blocks.extend(more(open.len()));
    }
    if !waiting.is_empty() {
        blocks.push(section(&format!(
            "*Waiting for approval* ({})",
            waiting.len()
        )));
        for r in waiting.iter().take(MAX_LISTED) {
            blocks.push(section(&format!(
                "*{}*, approval by {}\n{}",
                escape(r.vm().short_name()),
                approvers(r),
                asked_lines(r)
            )));
            blocks.push(context(&request_context(r)));
        }
        blocks.extend(more(waiting.len()));
    }
    ephemeral(
        format!(
            "{} open, {} waiting for approval",
            open.len(),
            waiting.len()
        ),
        blocks,
    )
}

/// Requests waiting for approval, each with Approve and Deny buttons
/// (`action_id` `approve`/`deny`, `value` the request id).
pub fn pending_list(records: &[RequestRecord], now: Timestamp) -> Value {
    let waiting: Vec<&RequestRecord> = records
        .iter()
        .filter(|r| r.status() == RequestStatus::PendingApproval)
        .collect();
    if waiting.is_empty() {
        let text = "No request is waiting for your approval.";
        return ephemeral(text.to_owned(), vec![section(text)]);
    }
    let mut blocks = vec![section(&format!(
        "*Waiting for approval* ({})",
        waiting.len()
    ))];
    for r in waiting.iter().take(MAX_LISTED) {
        let id = r.id().as_str();
        let waited = span(
            now.duration_since(r.start_time_utc())
                .max(SignedDuration::ZERO),
        );
        blocks.push(section(&format!(
            "{} asks for *{}*, waiting for {waited}\n{}{}",
            who(r.requestor(), None),
            escape(r.vm().short_name()),
            asked_lines(r),
            justification(r)
        )));
        blocks.push(context(&request_context(r)));
        blocks.push(json!({
            "type": "actions",
            "block_id": format!("pending:{id}"),
            "elements": [
                button("approve", "Approve", "primary", id),
                button("deny", "Deny", "danger", id),
            ]
        }));
    }
    blocks.extend(more(waiting.len()));
    ephemeral(
        format!("{} requests waiting for approval", waiting.len()),
        blocks,
    )
}

/// The outcome of an approve, deny or revoke, shown to whoever acted.
pub fn decided(record: &RequestRecord, verb: Verb) -> Value {
    let vm = escape(record.vm().short_name());
    let id = escape(record.id().as_str());
    let by = record
        .decided_by()
        .map(|p| format!(" by {}", who(p, slack_team(record.requestor()))))
        .unwrap_or_default();
    let requestor = who(record.requestor(), None);
    let text = match verb {
        Verb::Approved => format!(
            ":white_check_mark: Request `{id}` of {requestor} for *{vm}* approved{by}; the rules open now.\n{}",
            record
                .ports()
                .iter()
                .map(|p| format!("• {} until {}", port_label(p), when(p.end_time_utc)))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        Verb::Denied => {
            format!(":no_entry: Request `{id}` of {requestor} for *{vm}* denied{by}.")
        }
        Verb::Revoked => {
            format!(":lock: Access to *{vm}* of request `{id}` revoked: the rules are closed.")
        }
    };
    ephemeral(
        first_line(&text).to_owned(),
        vec![section(&text), context(&request_context(record))],
    )
}

/// A revoke whose rule the cloud would not remove at once: the record is
/// revoked, the rule still open, and `warning` says what happens to it.
pub fn revoke_pending(record: &RequestRecord, warning: &str) -> Value {
    let vm = escape(record.vm().short_name());
    let id = escape(record.id().as_str());
    let text = format!(
        ":warning: Request `{id}` for *{vm}* is revoked, but its rule is still open: {}",
        escape(warning)
    );
    ephemeral(
        first_line(&text).to_owned(),
        vec![section(&text), context(&request_context(record))],
    )
}

/// `message` as the answer to a button click: it replaces the message that
/// held the buttons, so they cannot be clicked twice.
pub fn replace_original(message: Value) -> Value {
    match message {
        Value::Object(mut fields) => {
            fields.remove("response_type");
            fields.insert("replace_original".to_owned(), Value::Bool(true));
            Value::Object(fields)
        }
        other => json!({"replace_original": true, "text": other.to_string()}),
    }
}

fn ephemeral(text: String, blocks: Vec<Value>) -> Value {
    json!({"response_type": "ephemeral", "text": clip(&text), "blocks": blocks})
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(text)}})
}

fn context(text: &str) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text)}]})
}

fn button(action_id: &str, label: &str, style: &str, id: &str) -> Value {
    json!({
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "style": style,
        "value": id,
    })
}

fn more(count: usize) -> Option<Value> {
    (count > MAX_LISTED).then(|| context(&format!("and {} more", count - MAX_LISTED)))
}

/// Cuts text to what Slack accepts in a block, on a character boundary.
fn clip(text: &str) -> String {
    if text.chars().count() <= SECTION_MAX_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(SECTION_MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The request id and the VM's full id, in small print.
fn request_context(record: &RequestRecord) -> String {
    format!(
        "Request `{}` · {}",
        escape(record.id().as_str()),
        escape(&record.vm().to_string())
    )
}

fn open_ports(record: &RequestRecord, now: Timestamp) -> Vec<&PortRecord> {
    record
        .ports()
        .iter()
        .filter(|p| {
            matches!(p.status, PortStatus::Initiating | PortStatus::Initiated)
                && p.end_time_utc > now
        })
        .collect()
}

/// One line per port of a granted request: what, from where, until when.
fn port_lines(ports: &[PortRecord], now: Timestamp) -> String {
    ports
        .iter()
        .map(|p| {
            let state = match p.status {
                PortStatus::Initiating => " (opening)",
                PortStatus::Initiated => "",
                PortStatus::Revoked => " (closed)",
                PortStatus::Failed => " (failed)",
            };
            format!(
                "• {}{state} until {}, {}",
                port_label(p),
                when(p.end_time_utc),
                remaining(p.end_time_utc, now)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One line per port of a request still waiting: what, from where, for
/// how long (the window starts at approval).
fn asked_lines(record: &RequestRecord) -> String {
    record
        .ports()
        .iter()
        .map(|p| {
            let asked = p.end_time_utc.duration_since(record.start_time_utc());
            format!(
                "• {} for {}",
                port_label(p),
                span(asked.max(SignedDuration::ZERO))
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn port_label(p: &PortRecord) -> String {
    let protocol = match p.protocol {
        Protocol::Any => String::new(),
        other => format!("/{}", other.as_str()),
    };
    format!(
        "port {}{protocol} from {}",
        p.number,
        escape(&p.allowed_source_address_prefix.to_string())
    )
}

fn justification(record: &RequestRecord) -> String {
    record
        .justification()
        .map(|j| format!("\n> {}", escape(j.as_str())))
        .unwrap_or_default()
}

/// `1 h 12 min`, `45 min`, `2 h`, `less than a minute`; minutes round up.
fn span(d: SignedDuration) -> String {
    let mins = (d.as_secs().max(0) + 59) / 60;
    match (mins / 60, mins % 60) {
        (0, 0) => "less than a minute".to_owned(),
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// A time as Slack shows it in each reader's own time zone, with UTC as the
/// fallback for clients that cannot.
fn when(t: Timestamp) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} {{time}}|{}>",
        t.as_second(),
        t.strftime("%Y-%m-%d %H:%M UTC")
    )
}

/// The approvers of a pending request: a mention for those in the
/// requestor's Slack workspace, the principal's name for everyone else.
fn approvers(record: &RequestRecord) -> String {
    let team = slack_team(record.requestor());
    let names: Vec<String> = record
        .approvers()
        .iter()
        .map(|p| match p.as_str().strip_suffix('*') {
            // A pattern in code, so that its `*` is not read as bold.
            Some(_) => format!("`{}`", escape(p.as_str())),
            None => match Principal::parse(p.as_str()) {
                Ok(one) => who(&one, team),
                Err(_) => escape(p.as_str()),
            },
        })
        .collect();
    if names.is_empty() {
        return "an approver".to_owned();
    }
    names.join(", ")
}

/// A principal for people: `<@U123>` when it is a Slack user of `team` (or
/// of any team, when `team` is `None`), else its escaped name.
fn who(principal: &Principal, team: Option<&str>) -> String {
    match slack_user(principal) {
        Some((t, user)) if team.is_none_or(|team| team == t) => format!("<@{user}>"),
        _ => escape(principal.as_str()),
    }
}

fn slack_team(principal: &Principal) -> Option<&str> {
    slack_user(principal).map(|(team, _)| team)
}

/// `(team, user)` of a `slack:<team>/<user>` principal whose ids are Slack
/// ids; anything else is not mentioned, since it would become markup.
fn slack_user(principal: &Principal) -> Option<(&str, &str)> {
    let (team, user) = principal.as_str().strip_prefix("slack:")?.split_once('/')?;
    (is_slack_id(team) && is_slack_id(user)).then_some((team, user))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        AccessRequest, Decision, InitiateBody, Policy, PolicyDocument, RequestId, StatusReason,
        VmId, evaluate,
    };

    const VM: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc1234";

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn record(requestor: &str, approvers: &[&str], justification: &str) -> RequestRecord {
        let vm = VmId::parse(VM).unwrap();
        let policy = Policy::parse(
            vm.clone(),
            &PolicyDocument::from_value(json!({"ports": [{"number": 22, "protocol": "tcp"}, 3389],
                "approvers": approvers}))
            .unwrap(),
        )
        .unwrap();
        let body: InitiateBody = serde_json::from_value(json!({"virtualMachines": [{"id": VM,
            "ports": [{"number": 22, "duration": "PT1H12M", "allowedSourceAddressPrefix": "198.51.100.7"},
                      {"number": 3389, "duration": "PT30M", "allowedSourceAddressPrefix": "198.51.100.7"}]}],
            "justification": justification}))
        .unwrap();
        let req = AccessRequest::parse(RequestId::parse("r-1").unwrap(), &body).unwrap();
        let who = Principal::parse(requestor).unwrap();
        let now = t("2026-11-23T12:00:00Z");
        match evaluate(Some(&policy), &req, &who, None, now) {
            Decision::Approved { grants } => RequestRecord::accepted(&req, &who, &grants, &[], now),
            Decision::PendingApproval { grants, approvers } => {
                RequestRecord::accepted(&req, &who, &grants, &approvers, now)
            }
            d => panic!("{d:?}"),
        }
    }

    fn all_text(v: &Value) -> String {
        v.to_string()
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<!channel> & <http://evil|bank>"),
            "&lt;!channel&gt; &amp; &lt;http://evil|bank&gt;"
        );
        assert_eq!(escape("&amp;"), "&amp;amp;");
    }

    #[test]
    fn remaining_time() {
        let now = t("2026-11-23T12:00:00Z");
        assert_eq!(remaining(t("2026-11-23T13:12:00Z"), now), "1 h 12 min left");
        assert_eq!(remaining(t("2026-11-23T13:11:01Z"), now), "1 h 12 min left");
        assert_eq!(remaining(t("2026-11-23T12:45:00Z"), now), "45 min left");
        assert_eq!(remaining(t("2026-11-23T14:00:00Z"), now), "2 h left");
        assert_eq!(remaining(t("2026-11-23T12:00:01Z"), now), "1 min left");
        assert_eq!(remaining(now, now), "expired");
        assert_eq!(remaining(t("2026-11-23T11:00:00Z"), now), "expired");
    }

    #[test]
    fn accepted_and_granted() {
        let r = record("slack:T1/U1", &[], "deploy");
        let m = accepted(&r, t("2026-11-23T12:00:00Z"));
        assert_eq!(m["response_type"], "ephemeral");
        let s = all_text(&m);
        assert!(s.contains("granted"), "{s}");
        assert!(
            s.contains("port 22/tcp from 198.51.100.7/32 (opening) until <!date^"),
            "{s}"
        );
        assert!(s.contains("|2026-11-23 13:12 UTC>, 1 h 12 min left"), "{s}");
        assert!(s.contains("port 3389 from"), "{s}");
        assert!(s.contains("Request `r-1`"), "{s}");
        assert!(s.contains(VM), "{s}");
    }

    #[test]
    fn approver_patterns_are_shown_as_code() {
        let r = record("slack:T1/U1", &["slack:T1/*", "local:c*"], "deploy");
        let m = accepted(&r, t("2026-11-23T12:00:00Z"));
        let s = m["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(s.contains("approval by `slack:T1/*`, `local:c*`"), "{s}");
    }

    #[test]
    fn accepted_pending_mentions_approvers_of_the_same_team() {
        let r = record(
            "slack:T1/U1",
            &[
                "slack:T1/U2",
                "slack:T9/U3",
                "arn:aws:iam::123456789012:user/<b>ob",
            ],
            "deploy",
        );
        let m = accepted(&r, t("2026-11-23T12:00:00Z"));
        let s = m["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(
            s.contains(
                "approval by <@U2>, slack:T9/U3, arn:aws:iam::123456789012:user/&lt;b&gt;ob"
            ),
            "{s}"
        );
        assert!(
            s.contains("port 22/tcp from 198.51.100.7/32 for 1 h 12 min"),
            "{s}"
        );
        assert!(
            s.contains("port 3389 from 198.51.100.7/32 for 30 min"),
            "{s}"
        );
        assert!(m["text"].as_str().unwrap().contains("request r-1"));
    }

    #[test]
    fn user_text_cannot_become_markup() {
        let r = record(
            "slack:T1/U1",
            &["slack:T1/U2"],
            "<!channel> <http://evil.example|click> &",
        );
        for m in [
            pending_list(std::slice::from_ref(&r), t("2026-11-23T12:05:00Z")),
            status(std::slice::from_ref(&r), t("2026-11-23T12:05:00Z")),
            refused("InvalidCommand", "`<!here>` is not a command"),
        ] {
            let s = all_text(&m);
            assert!(!s.contains("<!channel>") && !s.contains("<!here>"), "{s}");
            assert!(!s.contains("<http"), "{s}");
        }
        let s = all_text(&pending_list(&[r], t("2026-11-23T12:05:00Z")));
        assert!(
            s.contains("&lt;!channel&gt; &lt;http://evil.example|click&gt; &amp;"),
            "{s}"
        );
    }

    #[test]
    fn pending_list_has_buttons() {
        let r = record("slack:T1/U1", &["slack:T1/U2"], "deploy");
        let m = pending_list(&[r], t("2026-11-23T12:05:00Z"));
        let blocks = m["blocks"].as_array().unwrap();
        let actions = blocks.iter().find(|b| b["type"] == "actions").unwrap();
        assert_eq!(actions["elements"][0]["action_id"], "approve");
        assert_eq!(actions["elements"][0]["value"], "r-1");
        assert_eq!(actions["elements"][1]["action_id"], "deny");
        assert_eq!(actions["elements"][1]["value"], "r-1");
        let s = all_text(&m);
        assert!(
            s.contains("<@U1> asks for *i-0abc1234*, waiting for 5 min"),
            "{s}"
        );
        assert!(s.contains("> deploy"), "{s}");
        // Long lists stay under Slack's 50 blocks.
        let many: Vec<RequestRecord> = (0..60)
            .map(|_| record("slack:T1/U1", &["slack:T1/U2"], "x"))
            .collect();
        let m = pending_list(&many, t("2026-11-23T12:05:00Z"));
        let blocks = m["blocks"].as_array().unwrap();
        assert!(blocks.len() <= 50, "{}", blocks.len());
        assert!(all_text(&m).contains("and 45 more"));
        let empty = pending_list(&[], t("2026-11-23T12:05:00Z"));
        assert!(all_text(&empty).contains("No request is waiting"));
    }

    #[test]
    fn status_lists_open_grants_with_time_left() {
        let now = t("2026-11-23T12:00:00Z");
        let mut r = record("slack:T1/U1", &[], "deploy");
        let p22 = crate::domain::Port::parse(22).unwrap();
        let p3389 = crate::domain::Port::parse(3389).unwrap();
        r.set_port(
            p22,
            PortStatus::Initiated,
            StatusReason::UserRequested,
            None,
            now,
        )
        .unwrap();
        r.set_port(
            p3389,
            PortStatus::Revoked,
            StatusReason::UserRequested,
            None,
            now,
        )
        .unwrap();
        let waiting = record("slack:T1/U1", &["slack:T1/U2"], "later");
        let m = status(&[r.clone(), waiting], now);
        let s = all_text(&m);
        assert!(s.contains("*Open access* (1)"), "{s}");
        assert!(s.contains("port 22/tcp from 198.51.100.7/32 until"), "{s}");
        assert!(s.contains("1 h 12 min left"), "{s}");
        assert!(!s.contains("port 3389 from 198.51.100.7/32 until"), "{s}");
        assert!(s.contains("*Waiting for approval* (1)"), "{s}");
        // Once the end has passed, the grant is no longer open.
        let later = status(&[r], t("2026-11-23T14:00:00Z"));
        assert!(all_text(&later).contains("no open access"));
    }

    #[test]
    fn decisions_and_replacing() {
        let mut r = record("slack:T1/U1", &["slack:T1/U2"], "deploy");
        let approver = Principal::parse("slack:T1/U2").unwrap();
        r.set_status(
            RequestStatus::Approved,
            Some(&approver),
            t("2026-11-23T12:01:00Z"),
        )
        .unwrap();
        let m = decided(&r, Verb::Approved);
        let s = all_text(&m);
        assert!(
            s.contains("Request `r-1` of <@U1> for *i-0abc1234* approved by <@U2>"),
            "{s}"
        );
        assert!(all_text(&decided(&r, Verb::Denied)).contains("denied by <@U2>"));
        assert!(all_text(&decided(&r, Verb::Revoked)).contains("revoked"));
        let replaced = replace_original(m);
        assert_eq!(replaced["replace_original"], true);
        assert!(replaced.get("response_type").is_none());
        assert!(replaced["blocks"].is_array());
    }

    #[test]
    fn help_and_refused() {
        let h = all_text(&help("/jit"));
        for part in [
            "`/jit 22 i-0abc123 1h from 198.51.100.7",
            "`/jit pending`",
            "`/jit revoke &lt;id&gt;`",
        ] {
            assert!(h.contains(part), "{part}: {h}");
        }
        assert!(all_text(&help("/<!here>")).contains("/&lt;!here&gt;"));
        let m = refused("InvalidCommand", &"x".repeat(10_000));
        assert!(
            m["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 3000
        );
        assert_eq!(m["blocks"][1]["elements"][0]["text"], "`InvalidCommand`");
    }
}

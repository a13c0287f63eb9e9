//! The `/jit` command grammar.
//!
//! ```text
//! /jit                                   help
//! /jit help | status | pending
//! /jit approve <id>
//! /jit deny <id> [-- reason]
//! /jit revoke <id>
//! /jit [request] <ports> <vm> <duration> from <address or CIDR> [--break-glass] [-- justification]
//! ```
//!
//! In a request, the ports (`22` or `22,3389`), the VM and the duration
//! (`1h`, `30m`, `1h30m`, `90 minutes`, `PT1H`) may come in any order; a
//! token is a port list if it is digits and commas, a duration if jiff reads
//! it as one, and the VM otherwise. `from` is required: Slack calls jitvm,
//! so the caller's own address is unknown. Everything after the first `--`
//! is the justification. `--break-glass` (a word of its own, before the
//! justification) asks to open without waiting for an approver, which the
//! policy must allow the caller; it needs a justification.
//!
//! People type this into Slack, which rewrites text: links and mentions
//! arrive as `<http://x|x>`, `&`, `<` and `>` arrive escaped, and editors
//! turn quotes curly and `--` into a dash. [`normalise`] undoes all of that
//! before the words are read.

use std::fmt;

use jiff::SignedDuration;

use crate::domain::request::MAX_REQUEST_PORTS;
use crate::domain::{
    AccessDuration, DurationError, InitiateBody, InitiatePort, InitiateVm, Justification, Port,
    RequestId, RequestRecord, SourcePrefix, VmId,
};

/// The longest command text accepted, in characters, before normalising:
/// room for every part and a full-length justification, even escaped.
pub const MAX_TEXT_CHARS: usize = 4000;

const EXAMPLE_REQUEST: &str = "22 i-0abc123 1h from 198.51.100.7 -- fixing the deploy";
const EXAMPLE_BREAK_GLASS: &str =
    "22 i-0abc123 30m from 198.51.100.7 --break-glass -- the site is down";

/// The flag of a break-glass request.
const BREAK_GLASS_FLAG: &str = "--break-glass";
const EXAMPLE_ID: &str = "01JD5Z7K4M8Q2R3S4T5V6W7X8Y";

/// Words that read naturally in a request but carry nothing:
/// `/jit port 22 on web-1 for 1h from ...`.
const FILLER: &[&str] = &["port", "ports", "on", "for"];

/// What a `/jit` command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Status,
    Pending,
    Request(RequestCommand),
    Approve {
        id: RequestId,
    },
    Deny {
        id: RequestId,
        reason: Option<String>,
    },
    Revoke {
        id: RequestId,
    },
    /// The Extend button of a reminder: the same access asked for again.
    Extend {
        id: RequestId,
    },
}

/// An access request as typed: the VM still as the person named it (see
/// [`super::resolve_vm`]), everything else already well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCommand {
    pub vm: String,
    pub ports: Vec<Port>,
    pub duration: SignedDuration,
    /// The source prefix in its canonical form (`198.51.100.7/32`).
    pub source: String,
    pub justification: Option<String>,
    /// `--break-glass`: open without waiting for an approver.
    pub break_glass: bool,
}

impl RequestCommand {
    /// The request in the HTTP API's shape, so that it goes through exactly
    /// the validation and policy checks a direct request does.
    pub fn to_initiate_body(&self, vm: &VmId) -> InitiateBody {
        let duration = format!("PT{}S", self.duration.as_secs());
        InitiateBody {
            virtual_machines: vec![InitiateVm {
                id: vm.to_string(),
                ports: self
                    .ports
                    .iter()
                    .map(|p| InitiatePort {
                        number: i64::from(p.get()),
                        duration: Some(duration.clone()),
                        end_time_utc: None,
                        allowed_source_address_prefix: Some(self.source.clone()),
                    })
                    .collect(),
            }],
            justification: self.justification.clone(),
            break_glass: self.break_glass,
        }
    }
}

/// The request an Extend button asks for: the same VM, ports and sources
/// as `record`, each for as long as it was first asked for (from the
/// request to its end), with the same justification. It goes through every
/// check a new request does: a policy that changed since may refuse it.
pub fn extension_of(record: &RequestRecord) -> InitiateBody {
    let start = record.start_time_utc();
    let ports = record
        .ports()
        .iter()
        .map(|p| {
            let asked = start.duration_until(p.end_time_utc).as_secs().max(60);
            InitiatePort {
                number: i64::from(p.number.get()),
                duration: Some(format!("PT{asked}S")),
                end_time_utc: None,
                allowed_source_address_prefix: Some(p.allowed_source_address_prefix.to_string()),
            }
        })
        .collect();
    InitiateBody {
        virtual_machines: vec![InitiateVm {
            id: record.vm().to_string(),
            ports,
        }],
        justification: record.justification().map(|j| j.as_str().to_owned()),
        // Break-glass access extends as break-glass again: the requestor
        // must still be named for it, and approvers are told again.
        break_glass: record.break_glass(),
    }
}

/// A part of a request that the text did not give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Port,
    Vm,
    Duration,
    Source,
}

/// Why a command could not be read. Each says what was wrong and shows a
/// command that would work; see [`CommandError::describe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    TooLong { len: usize, max: usize },
    ControlCharacter { code: u32 },
    UnknownCommand { word: String },
    MissingId { verb: &'static str },
    BadId { verb: &'static str, given: String },
    ExtraWords { verb: &'static str, extra: String },
    BadPort { given: String, reason: &'static str },
    TooManyPorts { count: usize, max: usize },
    SeveralVms { first: String, second: String },
    BadDuration { given: String, reason: String },
    SeveralDurations { first: String, second: String },
    FromWithoutAddress,
    SourceNotAnAddress { given: String },
    BadSource { given: String, reason: String },
    SeveralSources,
    BadText { what: &'static str, reason: String },
    BreakGlassWithoutJustification,
    Missing(Vec<Missing>),
    UnknownAction { action_id: String },
}

impl CommandError {
    pub fn code(&self) -> &'static str {
        "InvalidCommand"
    }

    pub fn http_status(&self) -> u16 {
        400
    }

    /// The error as a person reads it, with an example that uses `command`
    /// (the slash command's configured name, such as `/jit`).
    pub fn describe(&self, command: &str) -> String {
        format!("{} Example: `{command} {}`", self.problem(), self.example())
    }

    fn problem(&self) -> String {
        match self {
            CommandError::TooLong { len, max } => format!(
                "The command is {len} characters long; at most {max} are accepted. Shorten the justification."
            ),
            CommandError::ControlCharacter { code } => format!(
                "The command contains an invisible control character (U+{code:04X}); type it as plain text."
            ),
            CommandError::UnknownCommand { word } => format!(
                "`{word}` is not a command. The commands are help, status, pending, approve, deny and revoke; \
                 anything else is read as an access request."
            ),
            CommandError::MissingId { verb } => {
                format!("{verb} needs the id of the request, as the request's message shows it.")
            }
            CommandError::BadId { verb, given } => format!(
                "`{given}` is not a request id; {verb} needs the id shown with the request (letters, digits, '-' and '_')."
            ),
            CommandError::ExtraWords { verb, extra } => {
                format!("{verb} takes only a request id; remove `{extra}`.")
            }
            CommandError::BadPort { given, reason } => {
                format!("`{given}` is not a port list: {reason}.")
            }
            CommandError::TooManyPorts { count, max } => {
                format!("The request names {count} ports; at most {max} fit in one request.")
            }
            CommandError::SeveralVms { first, second } => format!(
                "The request names more than one VM: `{first}` and `{second}`. Name one VM per request; \
                 if `{second}` starts your reason, put it after `--`."
            ),
            CommandError::BadDuration { given, reason } => {
                format!("`{given}` is not a duration jitvm can grant: {reason}.")
            }
            CommandError::SeveralDurations { first, second } => {
                format!("The request gives two durations, `{first}` and `{second}`; give one.")
            }
            CommandError::FromWithoutAddress => {
                "`from` must be followed by your public IP address or network (CIDR).".to_owned()
            }
            CommandError::SourceNotAnAddress { given } => format!(
                "`from {given}`: give your public IP address or network itself. \
                 The request reaches jitvm through Slack, so jitvm cannot see where you are."
            ),
            CommandError::BadSource { given, reason } => {
                format!("`from {given}`: {reason}.")
            }
            CommandError::SeveralSources => {
                "The request gives `from` twice; give one address or network.".to_owned()
            }
            CommandError::BadText { what, reason } => format!("The {what}: {reason}."),
            CommandError::BreakGlassWithoutJustification => {
                "A break-glass request opens without waiting for an approver, so it needs a \
                 justification: say after `--` why access cannot wait."
                    .to_owned()
            }
            CommandError::Missing(parts) => {
                let names: Vec<&str> = parts
                    .iter()
                    .map(|p| match p {
                        Missing::Port => "the port (such as 22, or 22,3389)",
                        Missing::Vm => "the VM (instance id, Azure VM name or full id)",
                        Missing::Duration => "how long (such as 1h or 30m)",
                        Missing::Source => "`from` and your public IP address",
                    })
                    .collect();
                let mut text = format!("The request does not say {}.", join_and(&names));
                if parts.contains(&Missing::Source) {
                    text.push_str(
                        " The address is required: the request reaches jitvm through Slack, \
                         so the address jitvm sees is Slack's, not yours.",
                    );
                }
                text
            }
            CommandError::UnknownAction { action_id } => {
                format!("The button `{action_id}` is not one of jitvm's.")
            }
        }
    }

    fn example(&self) -> String {
        match self {
            CommandError::UnknownCommand { .. } | CommandError::UnknownAction { .. } => {
                "help".to_owned()
            }
            CommandError::MissingId { verb }
            | CommandError::BadId { verb, .. }
            | CommandError::ExtraWords { verb, .. } => match *verb {
                "deny" => format!("deny {EXAMPLE_ID} -- not during the release freeze"),
                verb => format!("{verb} {EXAMPLE_ID}"),
            },
            CommandError::BreakGlassWithoutJustification => EXAMPLE_BREAK_GLASS.to_owned(),
            _ => EXAMPLE_REQUEST.to_owned(),
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe("/jit"))
    }
}

impl std::error::Error for CommandError {}

fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Reads the text of a `/jit` command.
pub fn parse_command(text: &str) -> Result<Command, CommandError> {
    let text = normalise(text)?;
    let (head, tail) = split_justification(&text);
    let words: Vec<String> = head.split_whitespace().map(clean_word).collect();
    let words: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .filter(|w| !w.is_empty())
        .collect();
    let Some(first) = words.first() else {
        return Ok(Command::Help);
    };
    let rest = &words[1..];
    match first.to_lowercase().as_str() {
        "help" | "?" | "-h" | "-help" => Ok(Command::Help),
        "status" => Ok(Command::Status),
        "pending" => Ok(Command::Pending),
        "approve" => lone_id("approve", rest, tail).map(|id| Command::Approve { id }),
        "revoke" => lone_id("revoke", rest, tail).map(|id| Command::Revoke { id }),
        "deny" | "reject" => {
            let (id, more) = leading_id("deny", rest)?;
            // The reason may follow `--` or simply the id.
            let reason = [more.join(" "), tail.map(collapse).unwrap_or_default()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let reason = optional_text("reason", &reason)?;
            Ok(Command::Deny { id, reason })
        }
        "request" => parse_request(rest, tail).map(Command::Request),
        _ if rest.is_empty() && tail.is_none() && first.chars().all(char::is_alphabetic) => {
            Err(CommandError::UnknownCommand {
                word: shorten(first),
            })
        }
        _ => parse_request(&words, tail).map(Command::Request),
    }
}

fn lone_id(
    verb: &'static str,
    rest: &[&str],
    tail: Option<&str>,
) -> Result<RequestId, CommandError> {
    let (id, more) = leading_id(verb, rest)?;
    let mut extra: Vec<&str> = more.to_vec();
    let tail = tail.map(collapse).unwrap_or_default();
    if !tail.is_empty() {
        extra.push("--");
        extra.push(&tail);
    }
    if !extra.is_empty() {
        return Err(CommandError::ExtraWords {
            verb,
            extra: shorten(&extra.join(" ")),
        });
    }
    Ok(id)
}

fn leading_id<'a, 'b>(
    verb: &'static str,
    rest: &'a [&'b str],
) -> Result<(RequestId, &'a [&'b str]), CommandError> {
    let Some((first, more)) = rest.split_first() else {
        return Err(CommandError::MissingId { verb });
    };
    let id = RequestId::parse(first).map_err(|_| CommandError::BadId {
        verb,
        given: shorten(first),
    })?;
    Ok((id, more))
}

fn parse_request(words: &[&str], tail: Option<&str>) -> Result<RequestCommand, CommandError> {
    let mut ports: Vec<Port> = Vec::new();
    let mut vm: Option<&str> = None;
    let mut duration: Option<(String, SignedDuration)> = None;
    let mut source: Option<String> = None;
    let mut break_glass = false;
    let mut i = 0;
    while let Some(&word) = words.get(i) {
        let lower = word.to_lowercase();
        if lower == BREAK_GLASS_FLAG {
            break_glass = true;
            i += 1;
            continue;
        }
        if lower == "from" {
            let Some(&given) = words.get(i + 1) else {
                return Err(CommandError::FromWithoutAddress);
            };
            if source.is_some() {
                return Err(CommandError::SeveralSources);
            }
            source = Some(parse_source(given)?);
            i += 2;
            continue;
        }
        if FILLER.contains(&lower.as_str()) {
            i += 1;
            continue;
        }
        if let Some((taken, text, d)) = duration_at(&words[i..])? {
            if let Some((first, _)) = &duration {
                return Err(CommandError::SeveralDurations {
                    first: first.clone(),
                    second: shorten(&text),
                });
            }
            duration = Some((shorten(&text), d));
            i += taken;
            continue;
        }
        if let Some(listed) = port_list(word)? {
            for p in listed {
                // A port named twice is asked for once; the policy sees no
                // difference, so there is nothing to complain about.
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
            i += 1;
            continue;
        }
        if let Some(first) = vm {
            return Err(CommandError::SeveralVms {
                first: shorten(first),
                second: shorten(word),
            });
        }
        vm = Some(word);
        i += 1;
    }
    if ports.len() > MAX_REQUEST_PORTS {
        return Err(CommandError::TooManyPorts {
            count: ports.len(),
            max: MAX_REQUEST_PORTS,
        });
    }
    let missing: Vec<Missing> = [
        (ports.is_empty(), Missing::Port),
        (vm.is_none(), Missing::Vm),
        (duration.is_none(), Missing::Duration),
        (source.is_none(), Missing::Source),
    ]
    .into_iter()
    .filter_map(|(absent, part)| absent.then_some(part))
    .collect();
    let (Some(vm), Some((_, duration)), Some(source)) = (vm, duration, source) else {
        return Err(CommandError::Missing(missing));
    };
    if !missing.is_empty() {
        return Err(CommandError::Missing(missing));
    }
    let justification = optional_text("justification", &tail.map(collapse).unwrap_or_default())?;
    if break_glass && justification.is_none() {
        return Err(CommandError::BreakGlassWithoutJustification);
    }
    Ok(RequestCommand {
        vm: vm.to_owned(),
        ports,
        duration,
        source,
        justification,
        break_glass,
    })
}

/// The longest run of up to four words starting at `words[0]` that reads as
/// a duration (so `1h`, `1h 30m` and `90 minutes` all work), as the number
/// of words taken, their text and the duration. A run that is clearly meant
/// as a duration but cannot be granted (`0m`, `2 weeks`) is an error.
fn duration_at(words: &[&str]) -> Result<Option<(usize, String, SignedDuration)>, CommandError> {
    for taken in (1..=words.len().min(4)).rev() {
        let text = words[..taken].join(" ");
        match AccessDuration::parse(&text) {
            Ok(d) => return Ok(Some((taken, text, d.get()))),
            Err(DurationError::Malformed(_)) => continue,
            Err(e) => {
                return Err(CommandError::BadDuration {
                    given: shorten(&text),
                    reason: match e {
                        DurationError::CalendarUnits(_) => {
                            "use hours and minutes, such as 1h or 90m".to_owned()
                        }
                        DurationError::NotPositive(_) => {
                            "it must be longer than zero, such as 30m".to_owned()
                        }
                        other => other.to_string(),
                    },
                });
            }
        }
    }
    Ok(None)
}

/// `22`, `22,3389` (a trailing or doubled comma is forgiven). `None` when
/// the word is not made of digits and commas at all.
fn port_list(word: &str) -> Result<Option<Vec<Port>>, CommandError> {
    let bad = |reason| CommandError::BadPort {
        given: shorten(word),
        reason,
    };
    let digits_and = |extra: u8| {
        word.bytes().any(|b| b.is_ascii_digit())
            && word
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b',' || b == extra)
    };
    if !digits_and(b',') {
        // `22-25` would otherwise be taken for a VM name.
        if digits_and(b'-') && word.contains('-') && !word.starts_with('-') {
            return Err(bad(
                "ranges are not supported; list each port, such as 22,3389",
            ));
        }
        return Ok(None);
    }
    let mut ports = Vec::new();
    for piece in word.split(',').filter(|p| !p.is_empty()) {
        let number: i64 = piece
            .parse()
            .ok()
            .filter(|_| piece.len() <= 5)
            .ok_or_else(|| bad("a port is a number from 1 to 65535"))?;
        ports.push(Port::parse(number).map_err(|_| bad("a port is a number from 1 to 65535"))?);
    }
    Ok(Some(ports))
}

fn parse_source(given: &str) -> Result<String, CommandError> {
    let lower = given.to_lowercase();
    if matches!(
        lower.as_str(),
        "me" | "my" | "here" | "home" | "office" | "mine"
    ) {
        return Err(CommandError::SourceNotAnAddress {
            given: shorten(given),
        });
    }
    SourcePrefix::parse(given)
        .map(|p| p.to_string())
        .map_err(|e| CommandError::BadSource {
            given: shorten(given),
            reason: e.to_string(),
        })
}

/// Free text after `--`, checked as the domain will check it, so that the
/// person hears about it here, in terms of the command.
fn optional_text(what: &'static str, text: &str) -> Result<Option<String>, CommandError> {
    let text = strip_quotes(text.trim());
    if text.is_empty() {
        return Ok(None);
    }
    Justification::parse(text).map_err(|e| CommandError::BadText {
        what,
        reason: e.to_string(),
    })?;
    Ok(Some(text.to_owned()))
}

/// Undoes what Slack and text editors do to typed text: unwraps Slack's
/// `<...>` links and mentions to what they display, decodes `&amp;`, `&lt;`
/// and `&gt;`, straightens curly quotes, turns dashes back into `--`, makes
/// every kind of space a plain space and drops invisible characters. A
/// control character that is not a line break or tab is refused.
pub fn normalise(text: &str) -> Result<String, CommandError> {
    let len = text.chars().count();
    if len > MAX_TEXT_CHARS {
        return Err(CommandError::TooLong {
            len,
            max: MAX_TEXT_CHARS,
        });
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '<' {
            // Slack escapes every `<` a person types, so a bare one starts a
            // link or mention that Slack wrote.
            if let Some(end) = rest[1..].find(['<', '>']).map(|e| e + 1)
                && rest[end..].starts_with('>')
            {
                for shown in unescape(unlink(&rest[1..end])).chars() {
                    push_plain(&mut out, shown)?;
                }
                rest = &rest[end + 1..];
                continue;
            }
        }
        if c == '&'
            && let Some((entity, plain)) = ENTITIES.iter().find(|(e, _)| rest.starts_with(e))
        {
            out.push(*plain);
            rest = &rest[entity.len()..];
            continue;
        }
        push_plain(&mut out, c)?;
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

const ENTITIES: &[(&str, char)] = &[
    ("&amp;", '&'),
    ("&lt;", '<'),
    ("&gt;", '>'),
    ("&quot;", '"'),
    ("&#39;", '\''),
];

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some((entity, plain)) = ENTITIES.iter().find(|(e, _)| rest.starts_with(e)) {
            out.push(*plain);
            rest = &rest[entity.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// What a Slack link or mention displays: its label if it has one, else
/// the target without the scheme (`<mailto:a@b.c>` is `a@b.c`), and the
/// `@`/`#` a mention shows.
fn unlink(inner: &str) -> &str {
    let (target, label) = match inner.split_once('|') {
        Some((t, l)) => (t, Some(l)),
        None => (inner, None),
    };
    if let Some(label) = label.filter(|l| !l.is_empty()) {
        return label;
    }
    for scheme in ["http://", "https://", "mailto:"] {
        if let Some(rest) = target.strip_prefix(scheme) {
            return rest;
        }
    }
    // `<@U123>`, `<#C123>` and `<!here>` stay as their ids; they are text
    // to jitvm, and messages escape them again before showing them.
    target.strip_prefix('!').unwrap_or(target)
}

fn push_plain(out: &mut String, c: char) -> Result<(), CommandError> {
    match c {
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{00AB}' | '\u{00BB}'
        | '\u{2033}' => out.push('"'),
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' => out.push('\''),
        // macOS and many editors turn `--` into an en or em dash.
        '\u{2013}' | '\u{2014}' | '\u{2015}' => out.push_str("--"),
        // Invisible: zero-width spaces and joiners, the byte-order mark and
        // the bidirectional overrides, which could make a justification
        // read differently to an approver than it was written.
        '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}' => {}
        c if c.is_whitespace() => out.push(' '),
        c if c.is_control() => {
            return Err(CommandError::ControlCharacter { code: c as u32 });
        }
        c => out.push(c),
    }
    Ok(())
}

/// Splits at the first `--` that starts a word: the words before it, and
/// the justification after it (without further leading dashes). A `--`
/// inside a word, as in an Azure VM named `web--1`, is part of that word,
/// and so is the word `--break-glass`, which is a flag.
fn split_justification(text: &str) -> (&str, Option<&str>) {
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        if prev_space && text[i..].starts_with("--") && !is_flag_at(&text[i..]) {
            let tail = text[i..].trim_start_matches('-');
            return (&text[..i], Some(tail));
        }
        prev_space = c == ' ';
    }
    (text, None)
}

/// Whether `rest` starts with the word `--break-glass` (any case).
fn is_flag_at(rest: &str) -> bool {
    let word = rest.split(' ').next().unwrap_or_default();
    word.eq_ignore_ascii_case(BREAK_GLASS_FLAG)
}

/// A word without the quotes, backticks and trailing punctuation people put
/// around ids (`` `r-1` ``, `"web-1",`).
fn clean_word(word: &str) -> String {
    word.trim_matches(|c| matches!(c, '`' | '"' | '\'' | '*'))
        .trim_end_matches([',', ';', '.', ':'])
        .trim_matches(|c| matches!(c, '`' | '"' | '\'' | '*'))
        .to_owned()
}

fn strip_quotes(text: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = text.strip_prefix(q).and_then(|t| t.strip_suffix(q)) {
            return inner.trim();
        }
    }
    text
}

/// Runs of spaces become one: the justification reads as one line, as the
/// domain wants it.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Input echoed in an error, cut so a long paste does not fill the answer.
fn shorten(text: &str) -> String {
    super::shorten(text, 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccessRequest, Decision, Policy, PolicyDocument, Principal, evaluate};
    use jiff::Timestamp;
    use proptest::prelude::*;
    use serde_json::json;

    fn request(text: &str) -> RequestCommand {
        match parse_command(text) {
            Ok(Command::Request(r)) => r,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    fn ports(list: &[u16]) -> Vec<Port> {
        list.iter()
            .map(|&p| Port::parse(i64::from(p)).unwrap())
            .collect()
    }

    fn id(s: &str) -> RequestId {
        RequestId::parse(s).unwrap()
    }

    #[test]
    fn the_documented_request() {
        let r = request("22 i-0abc123 1h from 198.51.100.7 -- fixing the deploy");
        assert_eq!(
            r,
            RequestCommand {
                vm: "i-0abc123".into(),
                ports: ports(&[22]),
                duration: SignedDuration::from_hours(1),
                source: "198.51.100.7/32".into(),
                justification: Some("fixing the deploy".into()),
                break_glass: false,
            }
        );
    }

    #[test]
    fn break_glass_is_a_flag_before_the_justification() {
        for text in [
            "request 22 i-0abc123 30m from 198.51.100.7 --break-glass -- the site is down",
            "--break-glass 22 i-0abc123 30m from 198.51.100.7 -- the site is down",
            "22 i-0abc123 --BREAK-GLASS 30m from 198.51.100.7 -- the site is down",
            // An editor's dash is read as `--`.
            "22 i-0abc123 30m from 198.51.100.7 \u{2014}break-glass \u{2014} the site is down",
        ] {
            let r = request(text);
            assert!(r.break_glass, "{text}");
            assert_eq!(
                r.justification.as_deref(),
                Some("the site is down"),
                "{text}"
            );
            assert_eq!(r.vm, "i-0abc123");
            assert_eq!(r.duration, SignedDuration::from_mins(30));
        }
        // After `--` it is part of the justification, not a flag.
        let r = request("22 i-0abc123 30m from 198.51.100.7 -- see --break-glass docs");
        assert!(!r.break_glass);
        assert_eq!(r.justification.as_deref(), Some("see --break-glass docs"));
        assert!(!request(EXAMPLE_REQUEST).break_glass);
        let body = request(EXAMPLE_BREAK_GLASS).to_initiate_body(
            &VmId::parse("arn:aws:ec2:us-east-1:123456789012:instance/i-0abc1234").unwrap(),
        );
        assert!(body.break_glass);
        assert_eq!(serde_json::to_value(&body).unwrap()["breakGlass"], true);
        // Without a justification it is refused here, with an example.
        for text in [
            "22 i-0abc123 30m from 198.51.100.7 --break-glass",
            "22 i-0abc123 30m from 198.51.100.7 --break-glass --   ",
        ] {
            let e = err(text);
            assert_eq!(e, CommandError::BreakGlassWithoutJustification, "{text}");
            let said = e.describe("/jit");
            assert!(said.contains("needs a justification"), "{said}");
            assert!(said.contains("--break-glass -- the site is down"), "{said}");
        }
        // Other commands take no flag.
        assert!(matches!(
            err("approve 01JD5Z7K4M8Q2R3S4T5V6W7X8Y --break-glass"),
            CommandError::ExtraWords { .. }
        ));
    }

    #[test]
    fn order_spacing_and_duration_forms() {
        let cases: &[(&str, &[u16], &str, i64)] = &[
            (
                "i-0abc123 22 1h from 198.51.100.7",
                &[22],
                "i-0abc123",
                3600,
            ),
            (
                "1h i-0abc123 22,3389 from 198.51.100.7",
                &[22, 3389],
                "i-0abc123",
                3600,
            ),
            (
                "request 22 web-1 30m from 198.51.100.0/24",
                &[22],
                "web-1",
                1800,
            ),
            (
                "  22   rg1/web-1\t1h30m  from  198.51.100.7  ",
                &[22],
                "rg1/web-1",
                5400,
            ),
            ("22 web-1 90m from 198.51.100.7", &[22], "web-1", 5400),
            ("22 web-1 PT1H from 198.51.100.7", &[22], "web-1", 3600),
            ("22 web-1 pt45m from 198.51.100.7", &[22], "web-1", 2700),
            ("22 web-1 1h 30m from 198.51.100.7", &[22], "web-1", 5400),
            (
                "22 web-1 90 minutes from 198.51.100.7",
                &[22],
                "web-1",
                5400,
            ),
            ("22 web-1 1 hour from 198.51.100.7", &[22], "web-1", 3600),
            (
                "port 22 on web-1 for 2h from 198.51.100.7",
                &[22],
                "web-1",
                7200,
            ),
            (
                "22, 3389 web-1 1h from 198.51.100.7",
                &[22, 3389],
                "web-1",
                3600,
            ),
            ("22,22 web-1 1h from 198.51.100.7", &[22], "web-1", 3600),
            ("22 `web-1` 1h FROM 198.51.100.7", &[22], "web-1", 3600),
            ("from 198.51.100.7 22 web-1 1h", &[22], "web-1", 3600),
        ];
        for (text, p, vm, secs) in cases {
            let r = request(text);
            assert_eq!(r.ports, ports(p), "{text}");
            assert_eq!(r.vm, *vm, "{text}");
            assert_eq!(r.duration.as_secs(), *secs, "{text}");
            assert_eq!(r.justification, None, "{text}");
        }
        assert_eq!(
            request("22 web-1 1h from 2001:db8::/32").source,
            "2001:db8::/32"
        );
    }

    #[test]
    fn slack_formatting_is_undone() {
        let r = request(
            "22\u{a0}<http://web-1.prod|web-1.prod> 1h from 198.51.100.7 \u{2014} \u{201c}fix &amp; ship &lt;now&gt;\u{201d}",
        );
        assert_eq!(r.vm, "web-1.prod");
        assert_eq!(r.justification.as_deref(), Some("fix & ship <now>"));
        let r = request(
            "22 web-1 1h from 198.51.100.7 -- ask <mailto:ops@example.com|ops@example.com> or <@U024BE7LH>, not <!channel>",
        );
        assert_eq!(
            r.justification.as_deref(),
            Some("ask ops@example.com or @U024BE7LH, not channel")
        );
        let r = request("22 <http://web-1.prod> 1h from 198.51.100.7 \u{2013} x\u{200b}y");
        assert_eq!(r.vm, "web-1.prod");
        assert_eq!(r.justification.as_deref(), Some("xy"));
        // An Azure name with a double dash keeps it.
        assert_eq!(request("22 web--1 1h from 198.51.100.7").vm, "web--1");
        // A justification over several lines is read as one.
        assert_eq!(
            request("22 web-1 1h from 198.51.100.7 --\n  line one\n  line two")
                .justification
                .as_deref(),
            Some("line one line two")
        );
        // `&amp;lt;` is the text `&lt;`, not `<`.
        assert_eq!(
            request("22 web-1 1h from 198.51.100.7 -- a &amp;lt; b")
                .justification
                .as_deref(),
            Some("a &lt; b")
        );
    }

    #[test]
    fn other_commands() {
        assert_eq!(parse_command(""), Ok(Command::Help));
        assert_eq!(parse_command("   "), Ok(Command::Help));
        assert_eq!(parse_command("HELP"), Ok(Command::Help));
        assert_eq!(parse_command("status"), Ok(Command::Status));
        assert_eq!(parse_command("pending"), Ok(Command::Pending));
        assert_eq!(
            parse_command("approve `r-1`"),
            Ok(Command::Approve { id: id("r-1") })
        );
        assert_eq!(
            parse_command("revoke r-1"),
            Ok(Command::Revoke { id: id("r-1") })
        );
        assert_eq!(
            parse_command("deny r-1"),
            Ok(Command::Deny {
                id: id("r-1"),
                reason: None
            })
        );
        assert_eq!(
            parse_command("deny r-1 -- not during the freeze"),
            Ok(Command::Deny {
                id: id("r-1"),
                reason: Some("not during the freeze".into())
            })
        );
        assert_eq!(
            parse_command("deny r-1 not now"),
            Ok(Command::Deny {
                id: id("r-1"),
                reason: Some("not now".into())
            })
        );
    }

    fn err(text: &str) -> CommandError {
        match parse_command(text) {
            Err(e) => e,
            Ok(c) => panic!("{text:?} parsed as {c:?}"),
        }
    }

    #[test]
    fn missing_pieces_are_named_with_an_example() {
        let e = err("22 i-0abc123 1h");
        assert_eq!(e, CommandError::Missing(vec![Missing::Source]));
        let shown = e.to_string();
        assert!(shown.contains("Slack's, not yours"), "{shown}");
        assert!(
            shown.contains("`/jit 22 i-0abc123 1h from 198.51.100.7"),
            "{shown}"
        );
        assert_eq!(
            err("i-0abc123 from 198.51.100.7"),
            CommandError::Missing(vec![Missing::Port, Missing::Duration])
        );
        assert!(
            err("i-0abc123 from 198.51.100.7")
                .to_string()
                .contains("the port (such as 22, or 22,3389) and how long")
        );
        assert_eq!(
            err("22 1h from 198.51.100.7"),
            CommandError::Missing(vec![Missing::Vm])
        );
        assert_eq!(err("22 web-1 1h from"), CommandError::FromWithoutAddress);
        assert!(matches!(
            err("22 web-1 1h from me"),
            CommandError::SourceNotAnAddress { .. }
        ));
        assert!(
            err("22 web-1 1h from me")
                .to_string()
                .contains("cannot see")
        );
        assert!(matches!(
            err("approve"),
            CommandError::MissingId { verb: "approve" }
        ));
        assert!(err("deny").to_string().contains("`/jit deny 01JD"));
        assert!(matches!(
            err("approve r-1 r-2"),
            CommandError::ExtraWords { .. }
        ));
        assert!(matches!(
            err("revoke r-1 -- done"),
            CommandError::ExtraWords { .. }
        ));
        assert!(matches!(err("stats"), CommandError::UnknownCommand { .. }));
        assert!(err("describe(&self,").to_string().contains("Example"));
        assert_eq!(
            CommandError::MissingId { verb: "revoke" }.describe("/access"),
            "revoke needs the id of the request, as the request's message shows it. Example: `/access revoke 01JD5Z7K4M8Q2R3S4T5V6W7X8Y`"
        );
    }

    #[test]
    fn wrong_pieces_are_named() {
        assert!(matches!(
            err("99999 web-1 1h from 198.51.100.7"),
            CommandError::BadPort { .. }
        ));
        assert!(matches!(
            err("0 web-1 1h from 198.51.100.7"),
            CommandError::BadPort { .. }
        ));
        assert!(matches!(
            err("22-25 web-1 1h from 198.51.100.7"),
            CommandError::BadPort { reason, .. } if reason.contains("ranges")
        ));
        let many = (1..=17)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(matches!(
            err(&format!("{many} web-1 1h from 198.51.100.7")),
            CommandError::TooManyPorts { count: 17, max: 16 }
        ));
        assert!(matches!(
            err("22 web-1 0m from 198.51.100.7"),
            CommandError::BadDuration { .. }
        ));
        assert!(matches!(
            err("22 web-1 2 weeks from 198.51.100.7"),
            CommandError::BadDuration { .. }
        ));
        assert!(matches!(
            err("22 web-1 1h 2h30m 1m 5m from 198.51.100.7"),
            CommandError::SeveralDurations { .. } | CommandError::BadDuration { .. }
        ));
        assert!(matches!(
            err("22 web-1 1h from 198.51.100.7 2h"),
            CommandError::SeveralDurations { .. }
        ));
        assert!(matches!(
            err("22 web-1 web-2 1h from 198.51.100.7"),
            CommandError::SeveralVms { .. }
        ));
        assert!(
            err("22 web-1 1h from 198.51.100.7 fixing it")
                .to_string()
                .contains("put it after `--`")
        );
        assert!(matches!(
            err("22 web-1 1h from 10.0.0.1/8"),
            CommandError::BadSource { .. }
        ));
        assert!(matches!(
            err("22 web-1 1h from example.com"),
            CommandError::BadSource { .. }
        ));
        assert!(matches!(
            err("22 web-1 1h from 198.51.100.7 from 198.51.100.8"),
            CommandError::SeveralSources
        ));
        assert!(matches!(err("approve r/1"), CommandError::BadId { .. }));
    }

    #[test]
    fn hostile_input() {
        assert!(matches!(
            err(&"a".repeat(MAX_TEXT_CHARS + 1)),
            CommandError::TooLong { .. }
        ));
        assert!(matches!(
            err(&format!(
                "22 web-1 1h from 198.51.100.7 -- {}",
                "x".repeat(1001)
            )),
            CommandError::BadText {
                what: "justification",
                ..
            }
        ));
        assert_eq!(
            err("22 web-1 1h from 198.51.100.7 -- a\u{0}b"),
            CommandError::ControlCharacter { code: 0 }
        );
        assert!(matches!(
            err("22 web-1\u{1b}[31m 1h"),
            CommandError::ControlCharacter { code: 0x1b }
        ));
        // Bidi overrides vanish rather than disguise text.
        assert_eq!(
            request("22 web-1 1h from 198.51.100.7 -- ok \u{202e}txt.exe")
                .justification
                .as_deref(),
            Some("ok txt.exe")
        );
        // Injection-looking text is only text: the VM name is whatever was
        // typed, and the resolver and domain refuse it later.
        let r = request("22 web-1;rm$IFS-rf 1h from 198.51.100.7 -- '; DROP TABLE requests; --");
        assert_eq!(r.vm, "web-1;rm$IFS-rf");
        assert_eq!(
            r.justification.as_deref(),
            Some("'; DROP TABLE requests; --")
        );
        let r = request("22 web-1 1h from 198.51.100.7 -- <!channel> &lt;script&gt; 🚀 日本語");
        assert_eq!(
            r.justification.as_deref(),
            Some("channel <script> 🚀 日本語")
        );
        // Unterminated or nested links are text, not a crash.
        assert_eq!(
            err("22 <http://a|b\u{7}> 1h from 198.51.100.7"),
            CommandError::ControlCharacter { code: 7 }
        );
        for text in [
            "<",
            "<<<>",
            "<http://x|",
            "&",
            "&amp",
            "&#39",
            "--",
            "-- --",
            "<|>",
            "22 <|> 1h",
        ] {
            let _ = parse_command(text);
        }
        let long_words = format!("22 {} 1h from 198.51.100.7", "w".repeat(3000));
        assert_eq!(request(&long_words).vm.len(), 3000);
        let e = err(&format!(
            "22 {} {} 1h from 198.51.100.7",
            "a".repeat(500),
            "b".repeat(500)
        ));
        assert!(e.to_string().chars().count() < 400, "{e}");
    }

    #[test]
    fn becomes_a_body_the_domain_accepts() {
        let vm = VmId::parse("arn:aws:ec2:us-east-1:123456789012:instance/i-0abc1234").unwrap();
        let r = request("22,3389 i-0abc1234 1h30m from 198.51.100.7 -- deploy");
        let body = r.to_initiate_body(&vm);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"virtualMachines": [{"id": vm.to_string(), "ports": [
                {"number": 22, "duration": "PT5400S", "allowedSourceAddressPrefix": "198.51.100.7/32"},
                {"number": 3389, "duration": "PT5400S", "allowedSourceAddressPrefix": "198.51.100.7/32"}]}],
                "justification": "deploy"})
        );
        let req = AccessRequest::parse(id("r1"), &body).unwrap();
        let policy = Policy::parse(
            vm.clone(),
            &PolicyDocument::from_value(json!({"ports": [22, 3389]})).unwrap(),
        )
        .unwrap();
        let who = Principal::parse("slack:T1/U1").unwrap();
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        match evaluate(Some(&policy), &req, &who, None, now) {
            Decision::Approved { grants } => {
                assert_eq!(grants.len(), 2);
                assert_eq!(grants[0].end(), "2026-11-23T13:30:00Z".parse().unwrap());
            }
            d => panic!("{d:?}"),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}|.{0,200}") {
            if let Err(e) = parse_command(&text) {
                prop_assert!(!e.to_string().is_empty());
            }
        }

        #[test]
        fn grammar_like_text_never_panics(words in proptest::collection::vec(
            prop_oneof![
                Just("22".to_owned()), Just("22,3389".to_owned()), Just("from".to_owned()),
                Just("--".to_owned()), Just("1h".to_owned()), Just("<".to_owned()),
                Just(">".to_owned()), Just("&amp;".to_owned()), Just("|".to_owned()),
                Just("\u{2014}".to_owned()), Just("approve".to_owned()), Just("deny".to_owned()),
                Just("198.51.100.7".to_owned()), Just("minutes".to_owned()),
                "[a-z0-9/:.<>|&;-]{1,12}",
            ], 0..12)) {
            let text = words.join(" ");
            let _ = parse_command(&text);
            let _ = parse_command(&words.concat());
        }

        #[test]
        fn accepted_requests_always_make_valid_bodies(
            port in 1u16..,
            mins in 1i64..=1440,
            a in any::<u8>(), b in any::<u8>(),
            reason in "[^\\p{C}]{0,100}",
        ) {
            let text = format!("{port} i-0abc1234 {mins}m from 198.51.{a}.{b} -- {reason}");
            let vm = VmId::parse("arn:aws:ec2:us-east-1:123456789012:instance/i-0abc1234").unwrap();
            match parse_command(&text) {
                Ok(Command::Request(r)) => {
                    prop_assert_eq!(r.duration.as_secs(), mins * 60);
                    prop_assert!(AccessRequest::parse(id("r1"), &r.to_initiate_body(&vm)).is_ok());
                }
                other => prop_assert!(false, "{:?}: {:?}", text, other),
            }
        }
    }
}

//! Hostile Azure VM ids, second round: a catalogue of ids that name no VM
//! (dot segments, encoded slashes, other providers and resource types,
//! overlong or look-alike names, control characters), each sent to every
//! entry point that takes a VM id. Each must be refused with a 4xx (or a
//! Slack refusal) whose message says what is wrong, and must write nothing:
//! no policy, no request record, no queue message, no NSG change. A VM of a
//! subscription this deployment does not manage is refused the same way.
//! Case variants of one VM are not refused: they are that VM.
//!
//! Each test has its own moto region and ARM fake.

use std::sync::Arc;
use std::time::Duration;

use jitvm_core::api::ApiError;
use jitvm_core::azure::AzureFirewall;
use jitvm_core::config::Settings;
use jitvm_core::ports::{AdapterError, Firewall, PolicyStore};
use jitvm_core::{Policy, PolicyDocument, VmId};
use jitvm_tests::arm_fake::ArmFake;
use jitvm_tests::grant_of;
use jitvm_tests::stack::{
    ADMIN, ALICE, SLACK_TEAM, SUBSCRIPTION, Stack, azure_env, drain, encode, fast_retry, record,
};
use serde_json::{Value, json};

const RG: &str = "rg-ids";
const NAME: &str = "web-01";
/// A subscription this deployment does not manage (the stacks list only
/// [`SUBSCRIPTION`]).
const OTHER_SUB: &str = "11111111-2222-4333-8444-555555555555";
/// The Slack user of the requests sent through `/jit`.
const SLACK_USER: &str = "U0ALICE";

/// Port 22 from 198.51.100.0/24 for an hour, for alice on the API and
/// in Slack.
fn policy() -> Value {
    json!({"ports": [{"number": 22, "protocol": "tcp",
        "allowedSourceAddressPrefixes": ["198.51.100.0/24"],
        "maxRequestAccessDuration": "PT1H"}],
        "requesters": ["local:alice", format!("slack:{SLACK_TEAM}/{SLACK_USER}")]})
}

fn azure_id(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
    )
}

/// A VM `name` in `sub`/`rg` at `ip` whose NIC carries an NSG of its own
/// (in `nsg_sub`, normally the VM's own subscription); returns (VM id as
/// the fake spells it, NSG id).
fn seed(
    arm: &ArmFake,
    sub: &str,
    nsg_sub: &str,
    rg: &str,
    name: &str,
    ip: &str,
) -> (String, String) {
    let nsg = arm.add_nsg(nsg_sub, rg, &format!("{name}-nsg"));
    let subnet = arm.add_subnet(
        sub,
        rg,
        &format!("{name}-vnet"),
        "default",
        "10.0.0.0/24",
        None,
    );
    (arm.add_vm(sub, rg, name, &subnet, ip, Some(&nsg)), nsg)
}

// ---- talking to the host ------------------------------------------------

/// What an entry point answered: its status, and the error message (or, for
/// Slack, the text shown).
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    message: String,
    refused: bool,
}

impl Answer {
    fn http(status: u16, body: Value) -> Answer {
        let code = body["error"]["code"].as_str().unwrap_or_default();
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Answer {
            refused: (400..500).contains(&status) && !code.is_empty() && !message.is_empty(),
            status,
            body,
            message,
        }
    }

    fn slack(status: u16, body: Value) -> Answer {
        let text = body["text"].as_str().unwrap_or_default().to_owned();
        Answer {
            refused: status == 200 && text.starts_with(":warning:"),
            status,
            body,
            message: text,
        }
    }
}

/// Sends `method path` over a plain TCP connection, byte for byte. reqwest,
/// like every WHATWG URL parser, resolves `..` and `%2e%2e` segments before
/// it sends a request; a hostile client sends them as they are.
async fn raw(
    stack: &Stack,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let addr = stack.base.trim_start_matches("http://").to_owned();
    let body = body.unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let bytes = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&addr).expect("the host listens");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("a timeout");
        stream
            .write_all(request.as_bytes())
            .expect("the request is sent");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("the answer is read");
        answer
    })
    .await
    .expect("the raw client ran");
    let text = String::from_utf8(bytes).expect("a UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_owned()
    };
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    };
    (status, value)
}

/// The payload of a chunked HTTP/1.1 body.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Every way a VM id reaches jitvm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// `PUT /v1/policies/{vm}`, the id written into the path as it is.
    PutPlain,
    /// `PUT /v1/policies/{vm}`, the id percent-encoded as one segment.
    PutEncoded,
    GetPlain,
    GetEncoded,
    DeletePlain,
    DeleteEncoded,
    /// `POST /v1/requests`, the id in `virtualMachines[].id`.
    RequestBody,
    /// `GET /v1/requests?vm=`.
    RequestsQuery,
    /// `/jit request <vm> 22 1h from ...`, signed as Slack signs it.
    Slack,
}

const ENTRIES: [Entry; 9] = [
    Entry::PutPlain,
    Entry::PutEncoded,
    Entry::GetPlain,
    Entry::GetEncoded,
    Entry::DeletePlain,
    Entry::DeleteEncoded,
    Entry::RequestBody,
    Entry::RequestsQuery,
    Entry::Slack,
];

impl Entry {
    /// Whether `id` can be sent this way at all. A path carries only
    /// visible ASCII (anything else is the HTTP parser's 400, not jitvm's);
    /// Slack splits a command into words at whitespace and drops invisible
    /// characters before reading it (shared/src/slack), so an id holding
    /// either never reaches the VM id parser whole.
    fn carries(self, id: &str) -> bool {
        match self {
            Entry::PutPlain | Entry::GetPlain | Entry::DeletePlain => id.bytes().all(|b| {
                b.is_ascii_graphic() && !b"\"#<>?\\^`{|}".contains(&b)
            }),
            Entry::Slack => !id.chars().any(|c| {
                c.is_whitespace()
                    || c.is_control()
                    || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
            }),
            _ => true,
        }
    }

    async fn send(self, stack: &Stack, id: &str) -> Answer {
        let policy_path = |plain: bool| {
            if plain {
                format!("/v1/policies/{id}")
            } else {
                format!("/v1/policies/{}", encode(id))
            }
        };
        let body = policy().to_string();
        let (status, value) = match self {
            Entry::PutPlain | Entry::PutEncoded => {
                let path = policy_path(self == Entry::PutPlain);
                raw(stack, "PUT", &path, ADMIN, Some(&body)).await
            }
            Entry::GetPlain | Entry::GetEncoded => {
                let path = policy_path(self == Entry::GetPlain);
                raw(stack, "GET", &path, ADMIN, None).await
            }
            Entry::DeletePlain | Entry::DeleteEncoded => {
                let path = policy_path(self == Entry::DeletePlain);
                raw(stack, "DELETE", &path, ADMIN, None).await
            }
            Entry::RequestBody => {
                let ask = json!({"virtualMachines": [{"id": id, "ports": [{"number": 22,
                    "duration": "PT1H", "allowedSourceAddressPrefix": "198.51.100.7"}]}],
                    "justification": "hostile id"});
                raw(stack, "POST", "/v1/requests", ALICE, Some(&ask.to_string())).await
            }
            Entry::RequestsQuery => {
                let path = format!("/v1/requests?vm={}", encode(id));
                raw(stack, "GET", &path, ADMIN, None).await
            }
            Entry::Slack => {
                let (status, value) = stack
                    .slash(SLACK_USER, &format!("request {id} 22 1h from 198.51.100.7"))
                    .await;
                return Answer::slack(status, value);
            }
        };
        Answer::http(status, value)
    }
}

/// What jitvm holds: each policy with its version, and how many request
/// records there are.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    policies: Vec<(String, u64)>,
    requests: usize,
}

async fn held(stack: &Stack) -> Held {
    let mut policies: Vec<(String, u64)> = stack
        .host
        .stack
        .store
        .list_policies()
        .await
        .expect("policies are listed")
        .into_iter()
        .map(|e| (e.policy.vm().to_string(), e.policy.version()))
        .collect();
    policies.sort();
    let (status, body) = raw(stack, "GET", "/v1/requests", ADMIN, None).await;
    assert_eq!(status, 200, "{body}");
    Held {
        policies,
        requests: body["value"].as_array().map_or(0, Vec::len),
    }
}

/// The writes the ARM fake received since its calls were last cleared.
fn arm_writes(arm: &ArmFake) -> Vec<String> {
    arm.calls()
        .into_iter()
        .filter(|c| c.method != "GET" && c.method != "POST")
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

// ---- the catalogue ------------------------------------------------------

/// A hostile id: what it is, the id, and the words of which the refusal
/// must hold at least one (naming the part that is wrong).
struct Case {
    label: &'static str,
    id: String,
    says: &'static [&'static str],
    /// Entry points that must not be tried: where the contract gives the
    /// id another, harmless meaning (a path is decoded once, so `%2F` in a
    /// plain path is a `/`).
    except: &'static [Entry],
    /// What Slack's refusal must hold instead of `says`, when Slack reads
    /// the word differently (it drops trailing sentence punctuation: a
    /// final `.`).
    slack_says: Option<&'static [&'static str]>,
}

const FORM: &[&str] = &["expected /subscriptions/", "is not a VM id"];
const GROUP: &[&str] = &["the resource group must be"];
const VM_NAME: &[&str] = &["the VM name must be"];
const TYPE: &[&str] = &["the resource type must be Microsoft.Compute/virtualMachines"];
const GUID: &[&str] = &["the subscription must be a GUID"];
const LONG: &[&str] = &["at most 512"];
const TRAILING: &[&str] = &["ends with '/'"];
const CONTROL: &[&str] = &["control character", "whitespace"];
/// A control character that is both the end of the id and part of the name.
const NAME_OR_CONTROL: &[&str] = &["the VM name must be", "control character"];
const FORM_OR_GROUP: &[&str] = &["expected /subscriptions/", "the resource group must be"];
const FORM_OR_NAME: &[&str] = &["expected /subscriptions/", "the VM name must be"];
/// In Slack a word that starts with neither `/` nor `arn:` is a short
/// name, looked up among the VMs that have policies.
const SLACK_SHORT_NAME: &[&str] = &["no VM with JIT access enabled is called"];
/// `.../virtualMachines/..` once Slack dropped the trailing dots.
const SLACK_EMPTY_NAME: &[&str] = &["expected /subscriptions/", "ends with '/'"];

fn case(label: &'static str, id: String, says: &'static [&'static str]) -> Case {
    Case {
        label,
        id,
        says,
        except: &[],
        slack_says: None,
    }
}

/// The id of the protected VM, [`NAME`] in [`RG`].
fn base() -> String {
    azure_id(SUBSCRIPTION, RG, NAME)
}

/// Its id with another resource group.
fn group(rg: &str) -> String {
    azure_id(SUBSCRIPTION, rg, NAME)
}

/// Its id with another VM name.
fn named(name: &str) -> String {
    azure_id(SUBSCRIPTION, RG, name)
}

/// Its resource group's providers, for ids of other resource types.
fn in_group() -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers")
}

fn cases() -> Vec<Case> {
    [
        dot_segments(),
        encoded_slashes(),
        other_resources(),
        overlong(),
        look_alikes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Dot segments and dot names.
fn dot_segments() -> Vec<Case> {
    let base = base();
    vec![
        case("resource group ..", group(".."), GROUP),
        case("resource group .", group("."), GROUP),
        Case {
            slack_says: Some(SLACK_EMPTY_NAME),
            ..case("VM name ..", named(".."), VM_NAME)
        },
        Case {
            slack_says: Some(SLACK_EMPTY_NAME),
            ..case("VM name .", named("."), VM_NAME)
        },
        case("rg/../other", group(&format!("{RG}/../rg-other")), FORM),
        Case {
            slack_says: Some(&["expected /subscriptions/", "ends with '/'"]),
            ..case("the name, then ..", format!("{base}/.."), FORM)
        },
        Case {
            slack_says: Some(&["expected /subscriptions/", "ends with '/'"]),
            ..case("the name, then .", format!("{base}/."), FORM)
        },
        case(
            "another name, then .. back to this one",
            named(&format!("other/../{NAME}")),
            FORM,
        ),
        case(
            "subscription ..",
            format!(
                "/subscriptions/../resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{NAME}"
            ),
            GUID,
        ),
        case("a leading /..", format!("/..{base}"), FORM),
        case("resource group %2e%2e", group("%2e%2e"), GROUP),
        case("VM name %2E.", named("%2E."), VM_NAME),
    ]
}

/// Encoded slashes and backslashes.
fn encoded_slashes() -> Vec<Case> {
    let base = base();
    let in_group = in_group();
    vec![
        case(
            "%2F smuggling .. into the resource group",
            group(&format!("{RG}%2F..%2Frg-other")),
            FORM_OR_GROUP,
        ),
        case(
            "%2F inside the VM name",
            named(&format!("{NAME}%2F..")),
            FORM_OR_NAME,
        ),
        Case {
            // In a path this is the contract's once-encoded `/`.
            except: &[Entry::PutPlain, Entry::GetPlain, Entry::DeletePlain],
            ..case(
                "%2F for the slash before the name (body, query, Slack)",
                format!("{in_group}/Microsoft.Compute/virtualMachines%2F{NAME}"),
                FORM,
            )
        },
        case(
            "%252F (encoded twice) in the resource group",
            group(&format!("{RG}%252F..%252Frg-other")),
            GROUP,
        ),
        case(
            "%252F (encoded twice) for the slash before the name",
            format!("{in_group}/Microsoft.Compute/virtualMachines%252F{NAME}"),
            FORM,
        ),
        case(
            "%5C (backslash) in the resource group",
            group(&format!("{RG}%5C..%5Crg-other")),
            GROUP,
        ),
        Case {
            slack_says: Some(SLACK_SHORT_NAME),
            ..case("backslashes for slashes", base.replace('/', "\\"), FORM)
        },
        case(
            "%2f, %5c and %252F mixed",
            group(&format!("{RG}%2f..%5c..%252Frg-other")),
            FORM_OR_GROUP,
        ),
        Case {
            // In a path this is the contract's once-encoded id.
            except: &[Entry::PutPlain, Entry::GetPlain, Entry::DeletePlain],
            slack_says: Some(SLACK_SHORT_NAME),
            ..case(
                "a whole id percent-encoded (body, query, Slack)",
                encode(&base),
                FORM,
            )
        },
    ]
}

/// Other providers and resource types, extra and missing segments.
fn other_resources() -> Vec<Case> {
    let base = base();
    let in_group = in_group();
    vec![
        case(
            "Microsoft.ClassicCompute",
            format!("{in_group}/Microsoft.ClassicCompute/virtualMachines/{NAME}"),
            TYPE,
        ),
        case(
            "a scale set instance",
            format!(
                "{in_group}/Microsoft.Compute/virtualMachineScaleSets/{NAME}/virtualMachines/0"
            ),
            FORM,
        ),
        case(
            "a network interface",
            format!("{in_group}/Microsoft.Network/networkInterfaces/{NAME}-nic"),
            TYPE,
        ),
        case(
            "an NSG rule",
            format!(
                "{in_group}/Microsoft.Network/networkSecurityGroups/{NAME}-nsg/securityRules/jitvm-deny-22"
            ),
            FORM,
        ),
        case(
            "a VM extension",
            format!("{base}/extensions/CustomScript"),
            FORM,
        ),
        case(
            "an extension resource of the VM",
            format!("{base}/providers/Microsoft.Compute/virtualMachines/web-02"),
            FORM,
        ),
        case("a trailing /", format!("{base}/"), TRAILING),
        case("trailing //", format!("{base}//"), TRAILING),
        case(
            "no VM name",
            format!("{in_group}/Microsoft.Compute/virtualMachines"),
            FORM,
        ),
        case(
            "no resource group",
            format!(
                "/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/virtualMachines/{NAME}"
            ),
            FORM,
        ),
        case("a doubled /", group(&format!("/{RG}")), FORM),
        case(
            "resourceGroup, singular",
            base.replace("resourceGroups", "resourceGroup"),
            FORM,
        ),
        case(
            "a query after the name",
            format!("{base}?api-version=2024-07-01"),
            VM_NAME,
        ),
        case("a fragment after the name", format!("{base}#nic"), VM_NAME),
    ]
}

fn overlong() -> Vec<Case> {
    vec![
        case("a resource group of 91", group(&"g".repeat(91)), GROUP),
        case("a VM name of 65", named(&"w".repeat(65)), VM_NAME),
        case("a whole id over 512", group(&"g".repeat(400)), LONG),
        case(
            "over 512 bytes of /..",
            format!("{}{}", base(), "/..".repeat(200)),
            LONG,
        ),
    ]
}

/// Look-alikes, whitespace and control characters.
fn look_alikes() -> Vec<Case> {
    let base = base();
    vec![
        case("a Cyrillic e in the name", named("w\u{0435}b-01"), VM_NAME),
        case(
            "a Cyrillic o in Microsoft.Compute",
            base.replace("Microsoft.Compute", "Microsoft.C\u{043E}mpute"),
            TYPE,
        ),
        case(
            "a fullwidth solidus before the name",
            base.replace("virtualMachines/", "virtualMachines\u{FF0F}"),
            FORM,
        ),
        case(
            "fullwidth digits in the subscription",
            base.replace("00000000-", "\u{FF10}0000000-"),
            GUID,
        ),
        case(
            "a Unicode hyphen in the name",
            named("web\u{2010}01"),
            VM_NAME,
        ),
        case(
            "a zero-width space in the name",
            named("web-\u{200B}01"),
            VM_NAME,
        ),
        case("a Kelvin sign in the name", named("web-0\u{212A}"), VM_NAME),
        case(
            "a dotless i in subscriptions",
            base.replace("subscriptions", "subscr\u{0131}ptions"),
            FORM,
        ),
        case(
            "a right-to-left override in the name",
            named("web-\u{202E}10"),
            VM_NAME,
        ),
        case("a space in the name", named("web 01"), VM_NAME),
        case("a tab in the resource group", group("rg\tids"), GROUP),
        case("a NUL in the name", named("web-01\0x"), VM_NAME),
        case("a line break in the name", named("web\n01"), VM_NAME),
        case(
            "a header smuggled into the name",
            named("web-01\r\nX-Injected: 1"),
            VM_NAME,
        ),
        case(
            "a DEL after the name",
            format!("{base}\u{7F}"),
            NAME_OR_CONTROL,
        ),
        case("a line break after the id", format!("{base}\n"), CONTROL),
        case("a NUL before the id", format!("\0{base}"), CONTROL),
        case(
            "a no-break space after the id",
            format!("{base}\u{A0}"),
            CONTROL,
        ),
        case(
            "an ideographic space before the id",
            format!("\u{3000}{base}"),
            CONTROL,
        ),
    ]
}

/// Puts the policy on `vm` as the admin, with the id written into the path
/// as it is.
async fn protect(stack: &Stack, vm: &str) -> (u16, Value) {
    let path = format!("/v1/policies{vm}");
    raw(stack, "PUT", &path, ADMIN, Some(&policy().to_string())).await
}

/// Sends `c` through `entry`; what was wrong with the answer, if anything:
/// not a refusal, a refusal that does not say what is wrong, or a write.
async fn check(stack: &Stack, c: &Case, entry: Entry, before: &Held) -> Vec<String> {
    stack.arm.clear_calls();
    let answer = entry.send(stack, &c.id).await;
    let says = match (entry, c.slack_says) {
        (Entry::Slack, Some(says)) => says,
        _ => c.says,
    };
    let mut wrong = Vec::new();
    if !answer.refused {
        wrong.push(format!("not refused: {} {}", answer.status, answer.body));
    } else if !says.iter().any(|s| answer.message.contains(s)) {
        wrong.push(format!(
            "the refusal does not say {says:?}: {} {:?}",
            answer.status, answer.message
        ));
    }
    let writes = arm_writes(&stack.arm);
    if !writes.is_empty() {
        wrong.push(format!("wrote to ARM: {writes:?}"));
    }
    let after = held(stack).await;
    if after != *before {
        wrong.push(format!("changed what is held: {before:?} -> {after:?}"));
    }
    wrong
}

#[tokio::test]
async fn hostile_azure_ids_are_refused_everywhere_and_write_nothing() {
    let stack = Stack::start("ap-east-2").await;
    let (vm, nsg) = seed(&stack.arm, SUBSCRIPTION, SUBSCRIPTION, RG, NAME, "10.0.0.4");
    let (status, body) = protect(&stack, &vm).await;
    assert_eq!(status, 201, "the VM the hostile ids imitate: {body}");
    let rules = stack.arm.rules(&nsg);
    let mut before = held(&stack).await;
    assert_eq!(before.policies.len(), 1, "{before:?}");

    let mut failures: Vec<String> = Vec::new();
    let mut checks = 0;
    for c in cases() {
        for entry in ENTRIES {
            if !entry.carries(&c.id) || c.except.contains(&entry) {
                continue;
            }
            checks += 1;
            let wrong = check(&stack, &c, entry, &before).await;
            if wrong.is_empty() {
                continue;
            }
            failures.push(format!("{} via {entry:?}: {}", c.label, wrong.join("; ")));
            // Put the protected VM back, so that the next case starts from
            // the same place.
            if held(&stack).await.policies.is_empty() {
                protect(&stack, &vm).await;
            }
            before = held(&stack).await;
        }
    }
    // Nothing was queued either: a grant would have opened a rule.
    if failures.is_empty() {
        drain(&stack).await;
        assert_eq!(stack.arm.rules(&nsg), rules, "no rule was opened");
    }
    assert!(
        failures.is_empty(),
        "{} of {checks} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What was wrong with the answers about `id`, a VM of a subscription the
/// deployment does not manage.
async fn check_unmanaged(stack: &Stack, id: &str, before: &Held) -> Vec<String> {
    let mut wrong = Vec::new();
    for entry in [Entry::PutPlain, Entry::PutEncoded] {
        stack.arm.clear_calls();
        let answer = entry.send(stack, id).await;
        if answer.status != 422
            || !answer.message.contains("JITVM_AZURE_SUBSCRIPTIONS")
            || !answer.message.contains(OTHER_SUB)
        {
            wrong.push(format!(
                "{id} via {entry:?}: not a 422 naming the subscription and JITVM_AZURE_SUBSCRIPTIONS: {} {}",
                answer.status, answer.body
            ));
        }
        // Refused on the id alone, before ARM is asked anything about it.
        let asked: Vec<String> = stack
            .arm
            .calls()
            .into_iter()
            .filter(|c| c.path.to_ascii_lowercase().contains(OTHER_SUB))
            .map(|c| format!("{} {}", c.method, c.path))
            .collect();
        if !asked.is_empty() {
            wrong.push(format!("{id} via {entry:?}: ARM was asked {asked:?}"));
        }
        let writes = arm_writes(&stack.arm);
        if !writes.is_empty() {
            wrong.push(format!("{id} via {entry:?}: wrote to ARM: {writes:?}"));
        }
    }
    // No policy can exist for it, so the rest find none.
    for entry in [
        Entry::GetPlain,
        Entry::GetEncoded,
        Entry::DeletePlain,
        Entry::DeleteEncoded,
        Entry::RequestBody,
        Entry::Slack,
    ] {
        let answer = entry.send(stack, id).await;
        if !answer.refused {
            wrong.push(format!("{id} via {entry:?}: not refused: {answer:?}"));
        }
    }
    // Listing requests by VM is a read: the history of a subscription
    // dropped from the list stays readable, and here there is none.
    let answer = Entry::RequestsQuery.send(stack, id).await;
    if (answer.status, &answer.body["value"]) != (200, &json!([])) {
        wrong.push(format!("{id} via RequestsQuery: {answer:?}"));
    }
    let after = held(stack).await;
    if after != *before {
        wrong.push(format!(
            "{id}: changed what is held: {before:?} -> {after:?}"
        ));
    }
    wrong
}

#[tokio::test]
async fn a_vm_of_a_subscription_this_deployment_does_not_manage_is_refused() {
    let stack = Stack::start("ap-southeast-5").await;
    // Unknown to ARM too: only the deployment's own list can say why.
    let unknown = azure_id(OTHER_SUB, RG, NAME);
    // Known to ARM, its NIC's NSG in the managed subscription: enabling it
    // would write Deny rules for a VM this deployment does not manage.
    let (foreign, nsg) = seed(
        &stack.arm,
        OTHER_SUB,
        SUBSCRIPTION,
        "rg-foreign",
        "app-01",
        "10.0.0.5",
    );
    let before = held(&stack).await;
    let mut failures: Vec<String> = Vec::new();
    for id in [unknown.clone(), unknown.to_uppercase(), foreign] {
        failures.extend(check_unmanaged(&stack, &id, &before).await);
    }
    let rules = stack.arm.rules(&nsg);
    if !rules.is_empty() {
        failures.push(format!("rules were written to the managed NSG: {rules:?}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drain(&stack).await;
    assert!(stack.arm.rules(&nsg).is_empty(), "nothing was queued");
}

/// The one policy's version, read under `path`.
async fn version_at(stack: &Stack, path: &str) -> (u16, Value) {
    let (status, body) = raw(stack, "GET", path, ADMIN, None).await;
    (status, body["version"].clone())
}

fn rule_names(arm: &ArmFake, nsg: &str, prefix: &str) -> Vec<String> {
    arm.rules(nsg)
        .iter()
        .filter_map(|r| r["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Spellings of one VM, created in ARM as `RG-Case/WEB-01`.
struct Spellings {
    /// What jitvm stores and answers: lower-case group and name.
    canonical: String,
    /// As ARM spells it.
    created: String,
    /// Every keyword, the subscription and the names in other cases.
    shouting: String,
    mixed: String,
}

impl Spellings {
    fn all(&self) -> [&String; 4] {
        [&self.canonical, &self.created, &self.shouting, &self.mixed]
    }
}

/// A PUT under one spelling and reads and a PUT under the others are one
/// policy, one set of Deny rules, and one VM in the listing.
async fn one_policy_under_every_spelling(stack: &Stack, s: &Spellings) {
    let (status, body) = protect(stack, &s.shouting).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["vm"],
        s.canonical.as_str(),
        "stored as the canonical id"
    );
    for spelling in s.all() {
        for path in [
            format!("/v1/policies{spelling}"),
            format!("/v1/policies/{}", encode(spelling)),
        ] {
            assert_eq!(version_at(stack, &path).await, (200, json!(1)), "{path}");
        }
    }
    // The contract decodes a path once, whichever parts were encoded.
    let half_encoded = s
        .shouting
        .replace("/resourcegroups/", "%2FresourceGroups%2F");
    let path = format!("/v1/policies{half_encoded}");
    assert_eq!(version_at(stack, &path).await, (200, json!(1)), "{path}");
    // A PUT under another spelling replaces that policy.
    let path = format!("/v1/policies/{}", encode(&s.mixed));
    let (status, body) = raw(stack, "PUT", &path, ADMIN, Some(&policy().to_string())).await;
    assert_eq!((status, &body["version"]), (200, &json!(2)), "{body}");
    assert_eq!(held(stack).await.policies, [(s.canonical.clone(), 2)]);

    let (status, body) = raw(stack, "GET", "/v1/vms", ADMIN, None).await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<&Value> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| {
            v["id"]
                .as_str()
                .is_some_and(|id| id.eq_ignore_ascii_case(&s.canonical))
        })
        .collect();
    assert_eq!(listed.len(), 1, "listed once: {body}");
    assert_eq!(listed[0]["id"], s.canonical.as_str());
    assert_eq!(listed[0]["status"], "Configured");
}

/// A request on the API under one spelling and one from Slack under
/// another open beside the same Deny rule, and their records name the
/// canonical id, found by listing under any spelling.
async fn requests_under_other_spellings_share_its_rules(stack: &Stack, s: &Spellings, nsg: &str) {
    let deny = rule_names(&stack.arm, nsg, "jitvm-deny-");
    assert_eq!(deny.len(), 1, "one Deny rule for port 22: {deny:?}");
    let ask = json!({"virtualMachines": [{"id": s.shouting, "ports": [{"number": 22,
        "duration": "PT1H", "allowedSourceAddressPrefix": "198.51.100.7"}]}]});
    let (status, accepted) =
        raw(stack, "POST", "/v1/requests", ALICE, Some(&ask.to_string())).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["virtualMachines"][0]["id"], s.canonical.as_str());
    drain(stack).await;
    let opened = record(stack, accepted["id"].as_str().unwrap()).await;
    assert_eq!(
        opened["virtualMachines"][0]["ports"][0]["status"], "Initiated",
        "{opened}"
    );
    let text = format!("request {} 22 1h from 198.51.100.8", s.mixed);
    let (status, answer) = stack.slash(SLACK_USER, &text).await;
    let shown = answer["text"].as_str().unwrap_or_default();
    assert!(status == 200 && !shown.starts_with(":warning:"), "{answer}");
    drain(stack).await;
    assert_eq!(rule_names(&stack.arm, nsg, "jitvm-deny-"), deny);
    let grants: Vec<String> = rule_names(&stack.arm, nsg, "jitvm-")
        .into_iter()
        .filter(|n| !n.starts_with("jitvm-deny-"))
        .collect();
    assert_eq!(grants.len(), 2, "{grants:?}");

    for spelling in s.all() {
        let path = format!("/v1/requests?vm={}", encode(spelling));
        let (status, body) = raw(stack, "GET", &path, ADMIN, None).await;
        assert_eq!(status, 200, "{body}");
        let records = body["value"].as_array().unwrap();
        assert_eq!(records.len(), 2, "{spelling}: {body}");
        assert!(
            records
                .iter()
                .all(|r| r["virtualMachines"][0]["id"] == s.canonical.as_str()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn case_variants_of_one_vm_are_that_vm() {
    let stack = Stack::start("ap-southeast-6").await;
    // Created in upper case, so ARM answers its ids in upper case.
    let (created, nsg) = seed(
        &stack.arm,
        SUBSCRIPTION,
        SUBSCRIPTION,
        "RG-Case",
        "WEB-01",
        "10.0.0.6",
    );
    let s = Spellings {
        canonical: azure_id(SUBSCRIPTION, "rg-case", "web-01"),
        created,
        shouting: format!(
            "/SUBSCRIPTIONS/{}/resourcegroups/RG-CASE/providers/microsoft.compute/VirtualMachines/WEB-01",
            SUBSCRIPTION.to_uppercase()
        ),
        mixed: format!(
            "/Subscriptions/{SUBSCRIPTION}/ResourceGroups/rg-CASE/Providers/Microsoft.COMPUTE/virtualmachines/Web-01"
        ),
    };
    one_policy_under_every_spelling(&stack, &s).await;
    requests_under_other_spellings_share_its_rules(&stack, &s, &nsg).await;

    // A DELETE under the spelling ARM uses disables it for all of them.
    let path = format!("/v1/policies{}", s.created);
    let (status, body) = raw(&stack, "DELETE", &path, ADMIN, None).await;
    assert_eq!(status, 204, "{body}");
    for spelling in s.all() {
        let path = format!("/v1/policies{spelling}");
        assert_eq!(version_at(&stack, &path).await.0, 404, "{path}");
    }
    assert_eq!(rule_names(&stack.arm, &nsg, "jitvm-"), Vec::<String>::new());
    assert!(held(&stack).await.policies.is_empty());
}

#[tokio::test]
async fn a_subscription_dropped_from_the_list_opens_nothing_but_can_still_be_disabled() {
    let stack = Stack::start("ap-southeast-7").await;
    let (vm, nsg) = seed(
        &stack.arm,
        SUBSCRIPTION,
        SUBSCRIPTION,
        "rg-dropped",
        "old-01",
        "10.0.0.7",
    );
    let (status, body) = raw(
        &stack,
        "PUT",
        &format!("/v1/policies{vm}"),
        ADMIN,
        Some(&policy().to_string()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let deny = rule_names(&stack.arm, &nsg, "jitvm-deny-");
    assert_eq!(deny.len(), 1);

    // The deployment now manages another subscription only; its policy
    // table still names the VM.
    let config = Settings::from_lookup(|name| match name {
        "JITVM_AZURE_SUBSCRIPTIONS" => Some(OTHER_SUB.to_owned()),
        other => azure_env(&stack.arm, other),
    })
    .expect("valid settings")
    .azure
    .expect("Azure is configured");
    let store: Arc<dyn PolicyStore> = Arc::new(stack.host.stack.store.clone());
    let firewall = AzureFirewall::new(&config, fast_retry(), Some(store));
    let vm = VmId::parse(&vm).unwrap();

    let facts = firewall.inspect(&vm).await.unwrap();
    let reason = facts.unsupported.expect("unsupported");
    assert!(
        reason.contains("JITVM_AZURE_SUBSCRIPTIONS") && reason.contains(SUBSCRIPTION),
        "{reason}"
    );
    let policy = Policy::parse(vm.clone(), &PolicyDocument::from_value(policy()).unwrap()).unwrap();
    stack.arm.clear_calls();
    let err = firewall
        .open(&grant_of(&policy, "req-dropped-1", "198.51.100.7"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AdapterError::Permanent { code, .. } if code == "SubscriptionNotSwept"),
        "{err:?}"
    );
    assert_eq!(arm_writes(&stack.arm), Vec::<String>::new());
    let api = ApiError::from(err);
    assert_eq!(api.status, 422, "{api:?}");
    assert!(
        api.message.contains("JITVM_AZURE_SUBSCRIPTIONS") && api.message.contains(SUBSCRIPTION),
        "{api:?}"
    );

    // Disabling (DELETE, as that deployment's policy function answers it)
    // still finds the NSG through the policy and cleans it up, and says so.
    let admins = [jitvm_core::PrincipalPattern::parse("local:admin").unwrap()];
    let api = jitvm_policy::PolicyApi {
        firewall: &firewall,
        policies: &stack.host.stack.store,
        requests: &stack.host.stack.store,
        admins: &admins,
        trust: &Default::default(),
        channels: &Default::default(),
    };
    let delete = http::Request::delete(Stack::policy_path(&vm.to_string()))
        .body(bytes::Bytes::new())
        .unwrap();
    let caller = jitvm_core::api::Caller {
        principal: jitvm_core::Principal::parse("local:admin").unwrap(),
        address: None,
        reported: None,
    };
    let answer = jitvm_policy::handle(&api, Some(caller), delete, jiff::Timestamp::now()).await;
    assert_eq!(answer.status(), 204, "{}", answer.body());
    assert_eq!(rule_names(&stack.arm, &nsg, "jitvm-"), Vec::<String>::new());
    assert!(
        stack
            .host
            .stack
            .store
            .get_policy(&vm)
            .await
            .unwrap()
            .is_none()
    );
}

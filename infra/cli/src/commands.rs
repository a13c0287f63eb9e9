//! Each command: read the arguments, call the API, print the answer.

use std::io::Write;
use std::path::Path;

use jitvm_core::slack::{is_full_id, resolve_among};
use jitvm_core::{Principal, VmId};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{AuditArgs, Command, ListArgs, Output, PolicyAction, RequestArgs};
use crate::client::{Api, segment};
use crate::error::CliError;
use crate::{note, show, wait};

/// Runs `command` against `api`, printing as `output` says.
pub async fn run(api: &Api, command: Command, output: Output) -> Result<(), CliError> {
    let out = Printer(output);
    match command {
        Command::Whoami => {
            let v = api.json(Method::GET, "/v1/whoami", &[], None).await?;
            out.print(&v, show::whoami)
        }
        Command::Vms => {
            let v = api.json(Method::GET, "/v1/vms", &[], None).await?;
            out.print(&v, show::vms)
        }
        Command::Request(args) => request(api, args, out).await,
        Command::Status { id: Some(id) } => {
            let v = api
                .json(Method::GET, &request_path(&id, ""), &[], None)
                .await?;
            out.print(&v, show::record)
        }
        Command::Status { id: None } => {
            let me = principal(api).await?;
            let v = api
                .json(
                    Method::GET,
                    "/v1/requests",
                    &[("requestor", me), ("limit", "20".into())],
                    None,
                )
                .await?;
            out.print(&v, list_table)
        }
        Command::List(args) => list(api, args, out).await,
        Command::Revoke { id } => act(api, &id, "revoke", None, out).await,
        Command::Approve { id, reason } => {
            let body = reason.map(|r| json!({"reason": r}));
            act(api, &id, "approve", body, out).await
        }
        Command::Deny { id, reason } => {
            let body = reason.map(|r| json!({"reason": r}));
            act(api, &id, "deny", body, out).await
        }
        Command::Policy { action } => policy(api, action, out).await,
        Command::Audit(args) => audit(api, args).await,
        // Completions need no API; main answers them before connecting.
        Command::Completions { .. } => Ok(()),
    }
}

/// Prints a JSON answer as the API gave it, or as a table.
#[derive(Clone, Copy)]
struct Printer(Output);

impl Printer {
    fn print(self, v: &Value, table: fn(&Value) -> String) -> Result<(), CliError> {
        let text = match self.0 {
            Output::Json => format!("{v:#}\n"),
            Output::Table => table(v),
        };
        write_stdout(text.as_bytes())
    }
}

/// Writes to stdout; a closed pipe (`jitvm list | head`) is not an error
/// worth a message.
pub fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::usage(format!("cannot write the output: {e}")))
        }
        _ => Ok(()),
    }
}

fn list_table(v: &Value) -> String {
    show::records(v["value"].as_array().into_iter().flatten())
}

fn request_path(id: &str, verb: &str) -> String {
    if verb.is_empty() {
        format!("/v1/requests/{}", segment(id))
    } else {
        format!("/v1/requests/{}/{verb}", segment(id))
    }
}

/// The caller's principal, from `GET /v1/whoami`.
async fn principal(api: &Api) -> Result<String, CliError> {
    let me = api.json(Method::GET, "/v1/whoami", &[], None).await?;
    me["principal"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CliError::Unreachable("whoami answered without a principal".into()))
}

/// Which VMs a short name is looked for among.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Among {
    /// Those the caller may request access to (`GET /v1/whoami`, which
    /// reads the policies only).
    Requestable,
    /// Those whose policies let the caller break glass (`GET /v1/whoami`).
    BreakGlass,
    /// Those with JIT enabled, as the Slack command resolves names.
    Configured,
    /// Every VM `GET /v1/vms` lists, for a policy not written yet.
    Listed,
}

/// The VM `reference` names: a full id as it is, a short name looked up
/// among the VMs `among` says, by the Slack command's rules
/// (`jitvm_core::slack::resolve_among`).
pub async fn vm_named(api: &Api, reference: &str, among: Among) -> Result<VmId, CliError> {
    if is_full_id(reference) {
        return resolve_among(reference, [], "").map_err(CliError::Usage);
    }
    let none = match among {
        Among::Requestable => "no VM you may request access to",
        Among::BreakGlass => "no VM whose policy lets you break glass",
        Among::Configured => "no VM with JIT access enabled",
        Among::Listed => "no VM",
    };
    let listed = match among {
        Among::Requestable | Among::BreakGlass => {
            let me = api.json(Method::GET, "/v1/whoami", &[], None).await?;
            let key = if among == Among::BreakGlass {
                "breakGlassOf"
            } else {
                "requesterOf"
            };
            me[key].clone()
        }
        Among::Configured | Among::Listed => {
            let vms = api.json(Method::GET, "/v1/vms", &[], None).await?;
            let keep = |vm: &&Value| among == Among::Listed || vm["status"] == "Configured";
            let ids: Vec<Value> = vms["value"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(keep)
                .map(|vm| vm["id"].clone())
                .collect();
            Value::Array(ids)
        }
    };
    let candidates: Vec<VmId> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|id| VmId::parse(id).ok())
        .collect();
    resolve_among(reference, &candidates, none)
        .map_err(|e| CliError::Usage(format!("{e} (`jitvm vms` lists the VMs)")))
}

/// A VM id as the rest of a path: written as it is (API Gateway decodes
/// `%2F` anyway), an Azure id without its leading `/`.
fn vm_path(vm: &VmId) -> String {
    format!("/v1/policies/{}", vm.to_string().trim_start_matches('/'))
}

async fn request(api: &Api, args: RequestArgs, out: Printer) -> Result<(), CliError> {
    let wait_limit = parse_duration(&args.wait_timeout, "--wait-timeout")?;
    if wait_limit > MAX_WAIT {
        return Err(CliError::usage("--wait-timeout is at most 24h"));
    }
    // The window and the break-glass justification are checked before
    // anything is asked of the API.
    let window = window(&args)?;
    check_break_glass(&args)?;
    let among = if args.break_glass {
        Among::BreakGlass
    } else {
        Among::Requestable
    };
    let vm = vm_named(api, &args.vm, among).await?;
    let body = initiate_body(&vm, &args, window.as_ref())?;
    let record = api
        .json(Method::POST, "/v1/requests", &[], Some(&body))
        .await?;
    if !args.wait {
        return out.print(&record, show::record);
    }
    let id = record["id"]
        .as_str()
        .ok_or_else(|| CliError::Unreachable("the API answered a request without an id".into()))?
        .to_owned();
    let limit = std::time::Duration::from_secs(wait_limit.as_secs().max(0).unsigned_abs());
    let open = wait::until_open(api, &id, limit).await?;
    out.print(&open, connect_table)
}

/// What to connect to, once open.
fn connect_table(r: &Value) -> String {
    let rows: Vec<Vec<String>> = r["virtualMachines"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|vm| {
            vm["ports"].as_array().into_iter().flatten().map(move |p| {
                vec![
                    show::cell(&vm["id"]),
                    show::cell(&p["number"]),
                    show::cell(&p["protocol"]),
                    show::cell(&p["allowedSourceAddressPrefix"]),
                    show::cell(&p["endTimeUtc"]),
                ]
            })
        })
        .collect();
    format!(
        "open (request {}):\n{}",
        show::cell(&r["id"]),
        crate::table::render(&["VM", "PORT", "PROTOCOL", "FROM", "UNTIL"], &rows)
    )
}

/// The longest `--wait-timeout`.
const MAX_WAIT: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// The window `--for` or `--until` asks for, as the port field that says it.
pub fn window(args: &RequestArgs) -> Result<Option<(&'static str, Value)>, CliError> {
    Ok(match (&args.duration, &args.until) {
        (Some(d), _) => Some(("duration", json!(parse_duration(d, "--for")?.to_string()))),
        (None, Some(t)) => Some(("endTimeUtc", json!(parse_time(t, "--until")?))),
        (None, None) => None,
    })
}

/// A break-glass request opens without an approver, so it must say why:
/// refused here, before the API is asked, when `-m` is missing or blank.
pub fn check_break_glass(args: &RequestArgs) -> Result<(), CliError> {
    let said = args
        .justification
        .as_deref()
        .is_some_and(|m| !m.trim().is_empty());
    if args.break_glass && !said {
        return Err(CliError::usage(
            "--break-glass needs a justification: add -m \"why access cannot wait for an approver\"",
        ));
    }
    Ok(())
}

/// An RFC 3339 time given as `flag`.
fn parse_time(text: &str, flag: &str) -> Result<jiff::Timestamp, CliError> {
    text.trim()
        .parse()
        .map_err(|e| CliError::usage(format!("{flag} `{text}` is not an RFC 3339 time: {e}")))
}

/// The body of `POST /v1/requests`, in the shape of Azure's initiate call.
pub fn initiate_body(
    vm: &VmId,
    args: &RequestArgs,
    window: Option<&(&'static str, Value)>,
) -> Result<Value, CliError> {
    let ports: Vec<Value> = args
        .ports
        .iter()
        .map(|n| {
            let mut p = json!({"number": n});
            if let Some((key, value)) = window {
                p[*key] = value.clone();
            }
            // Without --from the source is left to the API, which uses the
            // caller's own address.
            if let Some(from) = &args.from {
                p["allowedSourceAddressPrefix"] = json!(from);
            }
            p
        })
        .collect();
    let mut body = json!({"virtualMachines": [{"id": vm.to_string(), "ports": ports}]});
    if let Some(m) = &args.justification {
        body["justification"] = json!(m);
    }
    if args.break_glass {
        body["breakGlass"] = json!(true);
    }
    Ok(body)
}

/// A positive duration: `1h`, `30m`, `1h30m` or ISO 8601 `PT1H`.
pub fn parse_duration(text: &str, flag: &str) -> Result<jiff::SignedDuration, CliError> {
    let d: jiff::SignedDuration = text.trim().parse().map_err(|_| {
        CliError::usage(format!(
            "{flag} `{text}` is not a duration such as 1h, 30m, 1h30m or PT1H"
        ))
    })?;
    if !d.is_positive() {
        return Err(CliError::usage(format!("{flag} must be longer than zero")));
    }
    Ok(d)
}

async fn act(
    api: &Api,
    id: &str,
    verb: &str,
    body: Option<Value>,
    out: Printer,
) -> Result<(), CliError> {
    let v = api
        .json(Method::POST, &request_path(id, verb), &[], body.as_ref())
        .await?;
    if let Some(warning) = v.get("warning").and_then(Value::as_str) {
        note(&format!("warning: {warning}"));
    }
    out.print(&v, show::record)
}

async fn list(api: &Api, args: ListArgs, out: Printer) -> Result<(), CliError> {
    let vm = match &args.vm {
        Some(reference) => Some(
            vm_named(api, reference, Among::Configured)
                .await?
                .to_string(),
        ),
        None => None,
    };
    let limit = args.limit.to_string();
    if args.pending {
        let v = pending(api, vm.as_deref(), &limit).await?;
        return out.print(&v, list_table);
    }
    let mut query = vec![("limit", limit)];
    if let Some(vm) = vm {
        query.push(("vm", vm));
    }
    if args.mine {
        query.push(("requestor", principal(api).await?));
    }
    if let Some(token) = args.next_token {
        query.push(("nextToken", token));
    }
    let v = api.json(Method::GET, "/v1/requests", &query, None).await?;
    out.print(&v, list_table)?;
    if let (Output::Table, Some(token)) = (out.0, v["nextToken"].as_str()) {
        note(&format!("more: add --next-token {token}"));
    }
    Ok(())
}

/// `{"value": [...]}` of the requests waiting for the caller's approval:
/// the `PendingApproval` requests of the VMs whoami says they approve for,
/// other than their own.
async fn pending(api: &Api, only: Option<&str>, limit: &str) -> Result<Value, CliError> {
    let me = api.json(Method::GET, "/v1/whoami", &[], None).await?;
    // One's own requests are not for one to approve, by the API's own
    // notion of one identity (a role and its sessions, say).
    let principal = me["principal"]
        .as_str()
        .and_then(|p| Principal::parse(p).ok())
        .ok_or_else(|| CliError::Unreachable("whoami answered without a principal".into()))?;
    let mine = |r: &Value| {
        r["requestor"]
            .as_str()
            .and_then(|p| Principal::parse(p).ok())
            .is_some_and(|p| p.same_identity(&principal))
    };
    let mut found = Vec::new();
    for vm in me["approverOf"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if only.is_some_and(|o| o != vm) {
            continue;
        }
        let page = api
            .json(
                Method::GET,
                "/v1/requests",
                &[("vm", vm.to_owned()), ("limit", limit.to_owned())],
                None,
            )
            .await?;
        found.extend(
            page["value"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["status"] == "PendingApproval" && !mine(r))
                .cloned(),
        );
    }
    // Newest first, across VMs.
    found.sort_by(|a, b| b["startTimeUtc"].as_str().cmp(&a["startTimeUtc"].as_str()));
    Ok(json!({"value": found}))
}

async fn policy(api: &Api, action: PolicyAction, out: Printer) -> Result<(), CliError> {
    match action {
        PolicyAction::Get { vm } => {
            let vm = vm_named(api, &vm, Among::Configured).await?;
            let v = api.json(Method::GET, &vm_path(&vm), &[], None).await?;
            out.print(&v, show::policy)
        }
        PolicyAction::Put { vm, file } => {
            let document = read_policy(&file)?;
            let vm = vm_named(api, &vm, Among::Listed).await?;
            let v = api
                .json(Method::PUT, &vm_path(&vm), &[], Some(&document))
                .await?;
            out.print(&v, show::policy)
        }
        PolicyAction::Delete { vm } => {
            let vm = vm_named(api, &vm, Among::Configured).await?;
            api.call(Method::DELETE, &vm_path(&vm), &[], None).await?;
            let v = json!({"vm": vm.to_string(), "deleted": true});
            out.print(&v, |v| {
                format!("JIT disabled on {}\n", show::cell(&v["vm"]))
            })
        }
    }
}

/// A policy document from a JSON or YAML file (by its extension; `-` or
/// any other name is tried as JSON, then as YAML).
pub fn read_policy(path: &Path) -> Result<Value, CliError> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let parsed = match ext.as_deref() {
        Some("json") => serde_json::from_str(&text).map_err(|e| e.to_string()),
        Some("yaml" | "yml") => serde_norway::from_str(&text).map_err(|e| e.to_string()),
        _ => serde_json::from_str(&text)
            .or_else(|_| serde_norway::from_str(&text))
            .map_err(|e| format!("neither JSON nor YAML: {e}")),
    };
    let value: Value = parsed.map_err(|e| {
        CliError::usage(format!(
            "{} is not a valid policy file: {e}",
            path.display()
        ))
    })?;
    if !value.is_object() {
        return Err(CliError::usage(format!(
            "{} holds no policy object (with \"ports\")",
            path.display()
        )));
    }
    Ok(value)
}

async fn audit(api: &Api, args: AuditArgs) -> Result<(), CliError> {
    let mut query = Vec::new();
    for (key, value) in [("since", &args.since), ("until", &args.until)] {
        if let Some(t) = value {
            query.push((key, parse_time(t, &format!("--{key}"))?.to_string()));
        }
    }
    if let Some(reference) = &args.vm {
        query.push((
            "vm",
            vm_named(api, reference, Among::Configured)
                .await?
                .to_string(),
        ));
    }
    let csv = api
        .call(Method::GET, "/v1/audit.csv", &query, None)
        .await?
        .body;
    match &args.csv {
        Some(path) => {
            std::fs::write(path, csv.as_bytes())
                .map_err(|e| CliError::usage(format!("cannot write {}: {e}", path.display())))?;
            let lines = csv.lines().count().saturating_sub(1);
            note(&format!(
                "{lines} audit lines written to {}",
                path.display()
            ));
            Ok(())
        }
        None => write_stdout(csv.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(duration: Option<&str>, until: Option<&str>, from: Option<&str>) -> RequestArgs {
        RequestArgs {
            vm: "i-1".into(),
            ports: vec![22, 3389],
            duration: duration.map(Into::into),
            until: until.map(Into::into),
            from: from.map(Into::into),
            justification: Some("fix".into()),
            break_glass: false,
            wait: false,
            wait_timeout: "10m".into(),
        }
    }

    #[test]
    fn the_body_has_azure_s_initiate_shape() {
        let vm = VmId::parse("arn:aws:ec2:us-east-1:123456789012:instance/i-0abc1234").unwrap();
        let asked = args(Some("1h30m"), None, None);
        let body = initiate_body(&vm, &asked, window(&asked).unwrap().as_ref()).unwrap();
        assert_eq!(
            body,
            json!({"virtualMachines": [{"id": vm.to_string(), "ports": [
                {"number": 22, "duration": "PT1H30M"}, {"number": 3389, "duration": "PT1H30M"}]}],
                "justification": "fix"})
        );
        let asked = args(None, Some("2030-01-01T10:00:00+01:00"), Some("10.0.0.0/24"));
        let body = initiate_body(&vm, &asked, window(&asked).unwrap().as_ref()).unwrap();
        assert_eq!(
            body["virtualMachines"][0]["ports"][0],
            json!({"number": 22, "endTimeUtc": "2030-01-01T09:00:00Z", "allowedSourceAddressPrefix": "10.0.0.0/24"})
        );
        assert!(window(&args(Some("soon"), None, None)).is_err());
        assert!(window(&args(Some("0s"), None, None)).is_err());
        assert_eq!(parse_duration("PT15M", "--for").unwrap().as_secs(), 900);
    }

    #[test]
    fn break_glass_is_in_the_body_and_needs_a_justification() {
        let vm = VmId::parse("arn:aws:ec2:us-east-1:123456789012:instance/i-0abc1234").unwrap();
        let mut asked = args(Some("20m"), None, Some("198.51.100.7"));
        asked.break_glass = true;
        check_break_glass(&asked).unwrap();
        let body = initiate_body(&vm, &asked, window(&asked).unwrap().as_ref()).unwrap();
        assert_eq!(body["breakGlass"], true);
        assert_eq!(body["justification"], "fix");
        for missing in [None, Some("  ")] {
            asked.justification = missing.map(Into::into);
            let e = check_break_glass(&asked).unwrap_err();
            assert!(
                e.to_string()
                    .contains("--break-glass needs a justification"),
                "{e}"
            );
        }
        let plain = args(None, None, None);
        check_break_glass(&RequestArgs {
            justification: None,
            ..plain
        })
        .unwrap();
        let plain = args(None, None, None);
        let body = initiate_body(&vm, &plain, None).unwrap();
        assert!(body.get("breakGlass").is_none());
    }

    #[test]
    fn azure_ids_lose_their_leading_slash_in_a_path() {
        let vm = VmId::parse("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web").unwrap();
        assert!(vm_path(&vm).starts_with("/v1/policies/subscriptions/"));
    }
}

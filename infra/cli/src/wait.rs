//! `jitvm request --wait`: follow a request until every port is open, it is
//! refused, or the time runs out.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::client::{Api, segment};
use crate::error::CliError;
use crate::error::CliError as Failure;
use crate::show::{cell, port_reason};

/// How often the request is read again while it is not settled: soon at
/// first (a grant usually opens within a second), then every second.
pub const FIRST_POLL: Duration = Duration::from_millis(200);
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Where a request stands, for the waiter.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every port is `Initiated`.
    Open,
    /// It will not open: the reason.
    Refused(String),
    /// Not settled yet.
    Waiting,
}

/// Where the record `r` stands.
pub fn verdict(r: &Value) -> Verdict {
    let id = cell(&r["id"]);
    let ports: Vec<&Value> = r["virtualMachines"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|vm| vm["ports"].as_array().into_iter().flatten())
        .collect();
    if r["status"] == "Denied" {
        let why = ports
            .iter()
            .find_map(|p| p["message"].as_str())
            .map(str::to_owned)
            .or_else(|| last_message(r))
            .unwrap_or_else(|| "no reason given".into());
        let by = r["decidedBy"]
            .as_str()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default();
        return Verdict::Refused(format!("request {id} was denied{by}: {why}"));
    }
    for p in &ports {
        let status = p["status"].as_str().unwrap_or("");
        if status == "Failed" || status == "Revoked" {
            return Verdict::Refused(format!(
                "request {id}: port {} {} ({})",
                cell(&p["number"]),
                status.to_ascii_lowercase(),
                port_reason(p),
            ));
        }
    }
    if !ports.is_empty() && ports.iter().all(|p| p["status"] == "Initiated") {
        return Verdict::Open;
    }
    Verdict::Waiting
}

/// One line saying where the request is: its status and each port's.
pub fn progress(r: &Value) -> String {
    let ports: Vec<String> = r["virtualMachines"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|vm| vm["ports"].as_array().into_iter().flatten())
        .map(|p| format!("port {} {}", cell(&p["number"]), cell(&p["status"])))
        .collect();
    format!(
        "request {}: {}; {}",
        cell(&r["id"]),
        cell(&r["status"]),
        ports.join(", ")
    )
}

/// Reads request `id` until it settles or `limit` passes; progress goes to
/// stderr. The last record read, once every port is open.
pub async fn until_open(api: &Api, id: &str, limit: Duration) -> Result<Value, CliError> {
    // A limit too far to add is no limit (the CLI caps it at 24 h anyway).
    let deadline = Instant::now().checked_add(limit);
    let path = format!("/v1/requests/{}", segment(id));
    let mut shown = String::new();
    let mut pause = FIRST_POLL;
    loop {
        let line = match api.json(Method::GET, &path, &[], None).await {
            Ok(r) => match verdict(&r) {
                Verdict::Open => {
                    show_once(&mut shown, progress(&r));
                    return Ok(r);
                }
                Verdict::Refused(why) => {
                    show_once(&mut shown, progress(&r));
                    return Err(CliError::NotGranted(why));
                }
                Verdict::Waiting => progress(&r),
            },
            // The request is on its way whatever a moment of the API's
            // says: keep asking until the deadline.
            Err(e) if passing(&e) => format!("request {id}: still asking ({e})"),
            Err(e) => return Err(e),
        };
        show_once(&mut shown, line);
        let left = deadline.map_or(POLL_INTERVAL, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            return Err(CliError::NotGranted(format!(
                "gave up waiting after {} s; {shown} (`jitvm status {id}` to look again)",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(POLL_INTERVAL);
    }
}

/// Prints `line` on stderr unless it is what was shown last.
fn show_once(shown: &mut String, line: String) {
    if *shown != line {
        crate::note(&line);
        *shown = line;
    }
}

/// A failure that may pass: no answer, a 5xx, or throttling (429).
fn passing(e: &Failure) -> bool {
    match e {
        Failure::Unreachable(_) => true,
        Failure::Api { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

fn last_message(r: &Value) -> Option<String> {
    r["history"]
        .as_array()?
        .iter()
        .rev()
        .find_map(|h| h["message"].as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(status: &str, ports: Value) -> Value {
        json!({"id": "r1", "status": status, "virtualMachines": [{"id": "vm", "ports": ports}]})
    }

    #[test]
    fn verdicts_follow_the_ports() {
        let open = json!({"number": 22, "status": "Initiated"});
        let opening = json!({"number": 3389, "status": "Initiating"});
        assert_eq!(
            verdict(&rec("Approved", json!([open, opening]))),
            Verdict::Waiting
        );
        assert_eq!(
            verdict(&rec("Approved", json!([open, open]))),
            Verdict::Open
        );
        assert_eq!(
            verdict(&rec("PendingApproval", json!([opening]))),
            Verdict::Waiting
        );
        let failed = json!({"number": 22, "status": "Failed", "statusReason": "Error", "errorCode": "SecurityRuleCountLimitReached", "message": "boom"});
        assert_eq!(
            verdict(&rec("Approved", json!([open, failed]))),
            Verdict::Refused(
                "request r1: port 22 failed (Error: SecurityRuleCountLimitReached: boom)".into()
            )
        );
        let mut denied = rec(
            "Denied",
            json!([{"number": 22, "status": "Revoked", "message": "freeze"}]),
        );
        denied["decidedBy"] = json!("local:bob");
        assert_eq!(
            verdict(&denied),
            Verdict::Refused("request r1 was denied by local:bob: freeze".into())
        );
        assert_eq!(verdict(&rec("Approved", json!([]))), Verdict::Waiting);
    }
}

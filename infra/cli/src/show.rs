//! How API answers look to a person: small functions from the API's JSON to
//! table text. Missing fields print as `-`, never as an error: the API may
//! add or leave out fields, and a table is for reading.

use serde_json::Value;

use crate::table::render;

/// A JSON field as table text.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// `GET /v1/whoami` as `key: value` lines.
pub fn whoami(v: &Value) -> String {
    let mut out = String::new();
    for (label, key) in [
        ("principal", "principal"),
        ("admin", "admin"),
        ("auditor", "auditor"),
        ("approver of", "approverOf"),
        ("requester of", "requesterOf"),
        ("break glass on", "breakGlassOf"),
        ("authenticated as", "authenticatedAs"),
        ("note", "note"),
    ] {
        if let Some(value) = v.get(key) {
            out.push_str(&format!("{label}: {}\n", cell(value)));
        }
    }
    out
}

/// `GET /v1/vms` as one row per VM.
pub fn vms(v: &Value) -> String {
    let empty = Vec::new();
    let rows: Vec<Vec<String>> = v["value"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|vm| {
            let ports = vm["ports"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| format!("{}/{}", cell(&p["number"]), cell(&p["protocol"])))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_else(|| "-".into());
            let open = match (vm.get("openGrants"), vm.get("openGrantCount")) {
                (Some(Value::Array(g)), _) => g.len().to_string(),
                (_, Some(n)) => cell(n),
                _ => "-".into(),
            };
            vec![
                cell(&vm["id"]),
                cell(&vm["name"]),
                cell(&vm["status"]),
                ports,
                open,
                cell(&vm["approvedRequestsLast7Days"]),
                cell(&vm["lastAccess"]),
                cell(&vm["lastUser"]),
                cell(&vm["reason"]),
            ]
        })
        .collect();
    render(
        &[
            "VM",
            "NAME",
            "STATE",
            "PORTS",
            "OPEN",
            "APPROVED 7D",
            "LAST ACCESS",
            "LAST USER",
            "REASON",
        ],
        &rows,
    )
}

/// A port's reason, with the cloud's error code and the message when there
/// are: `Error: SecurityRuleCountLimitReached: the NSG is full`.
pub fn port_reason(p: &Value) -> String {
    let mut reason = cell(&p["statusReason"]);
    for key in ["errorCode", "message"] {
        if let Some(text) = p[key].as_str().filter(|t| !t.is_empty()) {
            reason.push_str(": ");
            reason.push_str(text);
        }
    }
    reason
}

/// Request records as one row per port.
pub fn records<'a>(records: impl IntoIterator<Item = &'a Value>) -> String {
    let mut rows = Vec::new();
    for r in records {
        for vm in r["virtualMachines"].as_array().into_iter().flatten() {
            for p in vm["ports"].as_array().into_iter().flatten() {
                let reason = port_reason(p);
                rows.push(vec![
                    cell(&r["id"]),
                    cell(&r["status"]),
                    cell(&r["requestor"]),
                    cell(&vm["id"]),
                    cell(&p["number"]),
                    cell(&p["allowedSourceAddressPrefix"]),
                    cell(&p["status"]),
                    reason,
                    cell(&p["endTimeUtc"]),
                ]);
            }
        }
    }
    render(
        &[
            "ID",
            "REQUEST",
            "REQUESTOR",
            "VM",
            "PORT",
            "SOURCE",
            "STATUS",
            "REASON",
            "UNTIL",
        ],
        &rows,
    )
}

/// One record with its justification, decision and history.
pub fn record(r: &Value) -> String {
    let mut out = records([r]);
    for (label, key) in [
        ("justification", "justification"),
        ("decided by", "decidedBy"),
        ("break glass", "breakGlass"),
    ] {
        if let Some(value) = r.get(key) {
            out.push_str(&format!("{label}: {}\n", cell(value)));
        }
    }
    let history = r["history"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if !history.is_empty() {
        out.push_str("history:\n");
        for h in history {
            let mut line = format!("  {} {}", cell(&h["at"]), cell(&h["status"]));
            for key in ["port", "reason", "by", "message"] {
                if let Some(v) = h.get(key).filter(|v| !v.is_null()) {
                    line.push_str(&format!(" {key}={}", cell(v)));
                }
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// A policy: its ports, who may request and approve, and exposures.
pub fn policy(p: &Value) -> String {
    let rows: Vec<Vec<String>> = p["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|port| {
            vec![
                cell(&port["number"]),
                cell(&port["protocol"]),
                cell(&port["allowedSourceAddressPrefixes"]),
                cell(&port["maxRequestAccessDuration"]),
            ]
        })
        .collect();
    let mut out = render(&["PORT", "PROTOCOL", "SOURCES", "MAX"], &rows);
    for (label, key) in [
        ("vm", "vm"),
        ("version", "version"),
        ("requesters", "requesters"),
        ("approvers", "approvers"),
        ("break-glass principals", "breakGlass.principals"),
        ("break-glass max", "breakGlass.maxRequestAccessDuration"),
        ("notify", "notify"),
        ("close standing access", "closeStandingAccess"),
        ("updated at", "updatedAt"),
        ("updated by", "updatedBy"),
    ] {
        let value = match key.split_once('.') {
            Some((outer, inner)) => p.get(outer).and_then(|o| o.get(inner)),
            None => p.get(key),
        };
        if let Some(value) = value {
            out.push_str(&format!("{label}: {}\n", cell(value)));
        }
    }
    if let Some(Value::Array(exposures)) = p.get("exposures")
        && !exposures.is_empty()
    {
        out.push_str("exposures (standing rules that still let traffic reach a protected port):\n");
        for e in exposures {
            out.push_str(&format!("  {e}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_show_one_row_per_port_with_reasons() {
        let r = json!({"id": "r1", "status": "Denied", "requestor": "local:alice",
            "virtualMachines": [{"id": "vm", "ports": [
                {"number": 22, "allowedSourceAddressPrefix": "10.0.0.1", "status": "Revoked",
                 "statusReason": "Denied", "message": "not now", "endTimeUtc": "2026-01-01T00:00:00Z"}]}],
            "history": [{"at": "2026-01-01T00:00:00Z", "status": "Denied", "by": "local:bob"}]});
        let text = record(&r);
        assert!(text.contains("Revoked  Denied: not now"), "{text}");
        assert!(text.contains("Denied by=local:bob"), "{text}");
    }
}

//! Structured JSON logs, and the audit event written once per state change.

use tracing_subscriber::EnvFilter;

/// Installs the JSON log subscriber (level from `RUST_LOG`, default `info`).
/// Call once, first thing in `main`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(true)
        .without_time()
        .try_init();
}

/// One audit event: a change of state a person may later ask about. Logged
/// as a single JSON line under the `audit` target.
#[derive(Debug, Default, Clone)]
pub struct Audit<'a> {
    pub event: &'a str,
    pub request_id: Option<&'a str>,
    pub vm: Option<&'a str>,
    pub port: Option<u16>,
    pub source: Option<&'a str>,
    pub requestor: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub status: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub message: Option<&'a str>,
    pub rule: Option<&'a str>,
    /// The cloud's error code of a failure, when it gave one.
    pub code: Option<&'a str>,
}

impl Audit<'_> {
    pub fn emit(&self) {
        tracing::info!(
            target: "audit",
            event = self.event,
            request_id = self.request_id,
            vm = self.vm,
            port = self.port,
            source = self.source,
            requestor = self.requestor,
            actor = self.actor,
            status = self.status,
            reason = self.reason,
            message = self.message,
            rule = self.rule,
            code = self.code,
            "audit"
        );
    }
}

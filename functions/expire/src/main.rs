//! Lambda entry point of the expire function: wiring only. Two event
//! sources: the expiry queue (each grant's timer, an SQS batch) and an
//! EventBridge schedule, rate(1 minute), for the sweep.

use jitvm_core::config::Settings;
use jitvm_core::ports::AdapterError;
use jitvm_core::stack::Stack;
use jitvm_core::telemetry;
use jitvm_expire::{ExpireApp, SCOPE_DEADLINE, SweepError, handle_timers, sweep};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let settings = Settings::from_env()?;
    let stack = Stack::connect(&settings).await?;
    let timers = stack.timers(&settings).await?;
    let app = ExpireApp {
        firewall: &stack.firewall,
        requests: &stack.store,
        timers: &timers,
        approval_timeout: settings.approval_timeout,
        scope_deadline: SCOPE_DEADLINE,
    };
    let app = &app;
    let clock = &jiff::Timestamp::now;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        if is_sqs(&event.payload) {
            let batch = serde_json::from_value(event.payload).map_err(unreadable)?;
            let response = handle_timers(app, batch, clock).await;
            return serde_json::to_value(response).map_err(unreadable);
        }
        let summary = sweep(app, jiff::Timestamp::now()).await?;
        serde_json::to_value(summary).map_err(unreadable)
    }))
    .await
}

fn unreadable(e: serde_json::Error) -> SweepError {
    SweepError(AdapterError::permanent("InvalidEvent", e.to_string()))
}

/// Whether `event` is a batch from SQS (the timers) rather than the schedule.
fn is_sqs(event: &Value) -> bool {
    event["Records"]
        .as_array()
        .and_then(|r| r.first())
        .is_some_and(|r| r["eventSource"] == "aws:sqs")
}

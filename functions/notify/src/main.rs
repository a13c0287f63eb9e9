//! Lambda entry point of the notify function: wiring only. Two event
//! sources: the requests table's stream (every write) and the notify
//! queue (retries and reminders, an SQS batch).

use jitvm_core::aws::events::EventBus;
use jitvm_core::config::Settings;
use jitvm_core::notify::ChatChannels;
use jitvm_core::ports::AdapterError;
use jitvm_core::stack::Stack;
use jitvm_core::telemetry;
use jitvm_notify::{NotifyApp, Tally, changes_of, is_stream, on_changes, on_jobs};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let settings = Settings::from_env()?;
    let stack = Stack::connect(&settings).await?;
    let notify = &stack.settings.notify;
    // Webhook URLs and the bot token are checked now: a bad one stops the
    // function at start-up, with its setting named, never mid-delivery.
    let channels = ChatChannels::from_settings(notify)?;
    let jobs = stack.notify_jobs(&settings).await?;
    let events = EventBus::new(&stack.config, &notify.event_bus);
    let tally = Tally::with_metrics();
    let app = NotifyApp {
        requests: &stack.store,
        policies: &stack.store,
        events: &events,
        jobs: &jobs,
        channels: &channels,
        defaults: notify.defaults(),
        retry_after: notify.retry_after,
        attempts: notify.attempts,
        tally: &tally,
    };
    let app = &app;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let now = jiff::Timestamp::now();
        if is_stream(&event.payload) {
            on_changes(app, &changes_of(&event.payload), now).await?;
            return Ok::<Value, Error>(Value::Null);
        }
        let batch = serde_json::from_value(event.payload)
            .map_err(|e| AdapterError::permanent("InvalidEvent", e.to_string()))?;
        Ok(serde_json::to_value(on_jobs(app, batch, now).await)?)
    }))
    .await
}

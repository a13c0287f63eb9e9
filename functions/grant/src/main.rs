//! Lambda entry point of the grant function (SQS event source with
//! ReportBatchItemFailures): wiring only.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use jitvm_core::config::Settings;
use jitvm_core::stack::Stack;
use jitvm_core::telemetry;
use jitvm_grant::{GrantApp, handle_batch};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let settings = Settings::from_env()?;
    let stack = Stack::connect(&settings).await?;
    let timers = stack.timers(&settings).await?;
    let app = GrantApp {
        policies: &stack.store,
        requests: &stack.store,
        firewall: &stack.firewall,
        timers: &timers,
        approval_timeout: settings.approval_timeout,
    };
    let app = &app;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, Error>(
            handle_batch(app, event.payload, jiff::Timestamp::now()).await,
        )
    }))
    .await
}

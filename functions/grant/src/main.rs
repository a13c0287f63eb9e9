//! Lambda entry point of the grant function (SQS event source with
//! ReportBatchItemFailures): wiring only.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use jitvm_core::aws::AwsStack;
use jitvm_core::config::Settings;
use jitvm_core::telemetry;
use jitvm_grant::{GrantApp, handle_batch};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let settings = Settings::from_env()?;
    let aws = AwsStack::connect(&settings).await?;
    let app = GrantApp {
        policies: &aws.store,
        requests: &aws.store,
        firewall: &aws.firewall,
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

//! Lambda entry point of the expire function (EventBridge schedule,
//! rate(1 minute)): wiring only.

use jitvm_core::aws::AwsStack;
use jitvm_core::config::Settings;
use jitvm_core::telemetry;
use jitvm_expire::{ExpireApp, SweepError, sweep};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let settings = Settings::from_env()?;
    let aws = AwsStack::connect(&settings).await?;
    let app = ExpireApp {
        firewall: &aws.firewall,
        requests: &aws.store,
        approval_timeout: settings.approval_timeout,
    };
    let app = &app;
    run(service_fn(move |_event: LambdaEvent<Value>| async move {
        sweep(app, jiff::Timestamp::now()).await.map_err(SweepError)
    }))
    .await
}

//! Lambda entry point of the request function: wiring only.

use jitvm_core::aws::AwsStack;
use jitvm_core::config::Settings;
use jitvm_core::{lambda, telemetry};
use jitvm_request::{RequestApi, handle};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let settings = Settings::from_env()?;
    let aws = AwsStack::connect(&settings).await?;
    let queue = aws.queue(&settings).await?;
    let api = RequestApi {
        policies: &aws.store,
        requests: &aws.store,
        queue: &queue,
        firewall: &aws.firewall,
        admins: &settings.admins,
    };
    lambda::run_http(|caller, request, now| handle(&api, caller, request, now)).await
}

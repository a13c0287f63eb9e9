//! Lambda entry point of the policy function: wiring only.

use jitvm_core::config::Settings;
use jitvm_core::notify::ChannelNames;
use jitvm_core::stack::Stack;
use jitvm_core::{lambda, telemetry};
use jitvm_policy::{PolicyApi, handle};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let settings = Settings::from_env()?;
    let aws = Stack::connect(&settings).await?;
    // The Teams webhooks a policy may name, read (and checked) once.
    let channels = ChannelNames::from_settings(&aws.settings.notify)?;
    let api = PolicyApi {
        firewall: &aws.firewall,
        policies: &aws.store,
        requests: &aws.store,
        admins: &settings.admins,
        trust: &settings.trusted_session_roles,
        channels: &channels,
    };
    lambda::run_http(&settings.trusted_session_roles, |caller, request, now| {
        handle(&api, caller, request, now)
    })
    .await
}

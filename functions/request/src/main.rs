//! Lambda entry point of the request function: wiring only.

use jitvm_core::config::{Secret, Settings};
use jitvm_core::stack::Stack;
use jitvm_core::{lambda, telemetry};
use jitvm_request::chatops::SlackApp;
use jitvm_request::{RequestApi, handle};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let settings = Settings::from_env()?;
    let aws = Stack::connect(&settings).await?;
    let queue = aws.queue(&settings).await?;
    let timers = aws.timers(&settings).await?;
    // `connect` has read a secret given by ARN, so only a value is left.
    let slack = match &aws.settings.slack_signing_secret {
        Some(Secret::Value(secret)) => Some(SlackApp::new(
            secret.clone(),
            settings.slack_workspaces.clone(),
        )?),
        _ => None,
    };
    let api = RequestApi {
        policies: &aws.store,
        requests: &aws.store,
        queue: &queue,
        firewall: &aws.firewall,
        timers: &timers,
        admins: &settings.admins,
        auditors: &settings.auditors,
        approval_timeout: settings.approval_timeout,
        slack: slack.as_ref(),
        console: &settings.console,
    };
    lambda::run_http(&settings.trusted_session_roles, |caller, request, now| {
        handle(&api, caller, request, now)
    })
    .await
}

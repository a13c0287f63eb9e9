//! The local host binary: wiring only. See the crate docs for what it runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jitvm_core::config::Settings;
use jitvm_core::stack::Stack;
use jitvm_core::telemetry;
use jitvm_local::{Host, Tokens};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    telemetry::init();
    let settings = Settings::from_env()?;
    let listen: SocketAddr = std::env::var("JITVM_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8080".into())
        .parse()
        .map_err(|e| format!("JITVM_LISTEN: {e}"))?;
    let sweep_secs: u64 = std::env::var("JITVM_SWEEP_INTERVAL_SECS")
        .unwrap_or_else(|_| "60".into())
        .parse()
        .ok()
        .filter(|s| *s > 0)
        .ok_or("JITVM_SWEEP_INTERVAL_SECS must be a whole number of seconds above 0")?;
    let tokens = Tokens::parse(&std::env::var("JITVM_LOCAL_TOKENS").unwrap_or_default())?;
    let stack = Stack::connect(&settings).await?;
    let host =
        Arc::new(Host::start(settings, stack, tokens, Arc::new(jiff::Timestamp::now)).await?);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(listen = %listener.local_addr()?, sweep_secs, "jitvm local host ready");
    tokio::spawn(host.clone().run_poller());
    tokio::spawn(host.clone().run_timer_poller());
    tokio::spawn(host.clone().run_sweeper(Duration::from_secs(sweep_secs)));
    axum::serve(
        listener,
        host.router()
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

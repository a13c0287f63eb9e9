//! The local host binary: wiring only. See the crate docs for what it runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jitvm_core::config::Settings;
use jitvm_core::stack::Stack;
use jitvm_core::telemetry;
use jitvm_local::serve::{self, Limits};
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
    // Read before anything connects anywhere, so that a cap that does not
    // fit under the open-file limit stops the host at once.
    let limits = Limits::from_env()?;
    let stack = Stack::connect(&settings).await?;
    let host =
        Arc::new(Host::start(settings, stack, tokens, Arc::new(jiff::Timestamp::now)).await?);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    if !listen.ip().is_loopback() {
        tracing::warn!(
            listen = %listen,
            "listening beyond loopback: put a TLS-terminating reverse proxy with its own limits in front (README, \"Run\")"
        );
    }
    tracing::info!(
        listen = %listener.local_addr()?,
        sweep_secs,
        max_connections = limits.max_connections,
        open_file_limit = serve::open_file_limit(),
        header_timeout_secs = limits.header_timeout.as_secs(),
        body_timeout_secs = limits.body_timeout.as_secs(),
        idle_timeout_secs = limits.idle_timeout.as_secs(),
        "jitvm local host ready"
    );
    tokio::spawn(host.clone().run_poller());
    tokio::spawn(host.clone().run_timer_poller());
    tokio::spawn(host.clone().run_notifier());
    tokio::spawn(host.clone().run_notify_poller());
    tokio::spawn(host.clone().run_sweeper(Duration::from_secs(sweep_secs)));
    serve::serve(listener, host.router(), limits, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}

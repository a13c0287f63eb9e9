//! EventBridge: every audit event on the deployment's bus, for other
//! systems to route (to SNS, email, a SIEM) without jitvm knowing them.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_smithy_types::DateTime;

use super::sdk_error;
use crate::notify::{AuditEvent, SOURCE};
use crate::ports::{AdapterError, EventSink};

/// The most entries one `PutEvents` call takes.
const MAX_ENTRIES: usize = 10;

/// One EventBridge bus, by name or ARN (`default` for the account's own).
#[derive(Clone)]
pub struct EventBus {
    client: Client,
    bus: String,
}

impl EventBus {
    pub fn new(config: &SdkConfig, bus: &str) -> Self {
        Self {
            client: Client::new(config),
            bus: bus.to_owned(),
        }
    }
}

#[async_trait]
impl EventSink for EventBus {
    async fn publish(&self, events: &[AuditEvent]) -> Result<(), AdapterError> {
        for chunk in events.chunks(MAX_ENTRIES) {
            let entries = chunk
                .iter()
                .map(|e| {
                    PutEventsRequestEntry::builder()
                        .source(SOURCE)
                        .detail_type(&e.detail_type)
                        .detail(e.detail.to_string())
                        .time(DateTime::from_secs(e.time.as_second()))
                        .event_bus_name(&self.bus)
                        .build()
                })
                .collect();
            let answer = self
                .client
                .put_events()
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_error(&format!("putting events on bus {}", self.bus), e))?;
            if answer.failed_entry_count() > 0 {
                let codes: Vec<String> = answer
                    .entries()
                    .iter()
                    .filter_map(|e| e.error_code())
                    .map(str::to_owned)
                    .collect();
                return Err(AdapterError::Transient {
                    message: format!(
                        "{} of {} events were not put on bus {}: {}",
                        answer.failed_entry_count(),
                        chunk.len(),
                        self.bus,
                        codes.join(", ")
                    ),
                    source: None,
                });
            }
        }
        Ok(())
    }
}

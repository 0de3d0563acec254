//! The vision service's observations from Kafka (`parking.vision.observations`), turned into the
//! same command as `POST /api/v1/slots/{slot_id}/occupancy`. Runs in every `serve` with
//! `KAFKA_BROKERS` set; the nodes share one consumer group (`infra::observations`).
//!
//! A message's offset is committed once its command is recorded or refused for good: a message
//! that cannot be recorded yet (the database is down) is tried again until it can, so nothing
//! is lost, and a redelivered one changes nothing (the slot records a change only). A malformed
//! message, or one the rules refuse (an unknown slot), is logged with its offset and skipped:
//! never a crash loop.

use std::sync::Arc;
use std::time::Duration;

use parking_commands::{CommandContext, CommandError, Observation};
use parking_domain::{Actor, Role};
use parking_infra::config::KafkaConfig;
use parking_infra::observations::{ObservationMessage, Observations};
use uuid::Uuid;

use crate::state::AppState;

/// Who observations from the topic act as: the vision service (no account behind the topic;
/// the nil id in the events' metadata stands for it).
const THE_TOPIC: Actor = Actor {
    user_id: Uuid::nil(),
    role: Role::Service,
};

/// The pause before trying again after a failure that is not the message's fault.
const PAUSE: Duration = Duration::from_secs(1);

pub async fn run(state: Arc<AppState>, kafka: KafkaConfig) {
    loop {
        match Observations::connect(&kafka).await {
            Ok(observations) => consume(&state, &observations).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read observations from Kafka yet; retrying");
                tokio::time::sleep(PAUSE * 5).await;
            }
        }
    }
}

async fn consume(state: &AppState, observations: &Observations) {
    loop {
        let delivered = match observations.next().await {
            Ok(delivered) => delivered,
            Err(e) => {
                tracing::warn!(error = %e, "reading observations from Kafka failed; retrying");
                tokio::time::sleep(PAUSE).await;
                continue;
            }
        };
        let (partition, offset) = (delivered.partition, delivered.offset);
        match &delivered.observation {
            Ok(observation) => record(state, observation, partition, offset).await,
            Err(e) => tracing::warn!(
                partition,
                offset,
                error = %e,
                "a malformed observation on parking.vision.observations was skipped"
            ),
        }
        if let Err(e) = observations.commit(&delivered) {
            // The next commit covers it; at worst the message is delivered again.
            tracing::warn!(partition, offset, error = %e, "could not commit an observation's offset");
        }
    }
}

/// Records one observation, trying again until it is recorded or refused for good.
async fn record(state: &AppState, message: &ObservationMessage, partition: i32, offset: i64) {
    let observation = Observation {
        slot_id: message.slot_id,
        occupied: message.occupied,
        confidence: message.confidence,
        camera_id: message.camera_id,
        observed_at: message.observed_at,
    };
    loop {
        let request_id = format!("vision-{}", message.observation_id);
        let ctx = CommandContext::for_request(Some(THE_TOPIC), request_id, state.now());
        let outcome = match state.commands.observe(&ctx, observation).await {
            Ok(_) => state.commands.settle(&ctx).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => return,
            Err(CommandError::Rejected { code, message, .. }) => {
                tracing::warn!(partition, offset, code, %message, "an observation was refused; skipped");
                return;
            }
            Err(e) => {
                tracing::warn!(partition, offset, error = %e, "could not record an observation yet; retrying");
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
}

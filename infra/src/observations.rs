//! The vision service's observations as they arrive on Kafka (`parking.vision.observations`,
//! docs/events.md, "Observations topic"): the message format, and the consumer group that
//! reads them.
//!
//! The group (`parking-observations`) is shared by every node, so each message is handled by
//! one of them. Offsets are committed by the caller once a message's command is recorded (or
//! refused for good): delivery is at least once, and the slot's rules (only a change of state,
//! never an older frame) make a redelivered message change nothing.

use chrono::{DateTime, Utc};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::KafkaConfig;
use crate::kafka::{self, VISION_OBSERVATIONS};
use crate::relay::RelayError;

/// The consumer group every node reads observations in.
pub const GROUP: &str = "parking-observations";

/// One message's value (the vision worker writes it too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationMessage {
    /// The sender's id of this observation; it names the command's request in the event's
    /// metadata (`vision-<observation_id>`).
    pub observation_id: Uuid,
    pub slot_id: Uuid,
    pub occupied: bool,
    pub confidence: f64,
    #[serde(default)]
    pub camera_id: Option<Uuid>,
    pub observed_at: DateTime<Utc>,
}

/// Why a message is skipped.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("no value")]
    Empty,
    #[error("not an observation: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the key is not the observation's slot id")]
    KeyMismatch,
}

impl ObservationMessage {
    /// Reads a message: its value, and its key, which must be the slot id (the partitioning
    /// key: one slot's observations stay in order).
    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Self, Malformed> {
        let message: Self = serde_json::from_slice(value.ok_or(Malformed::Empty)?)?;
        let key_is_slot = key
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.trim().parse::<Uuid>().ok())
            == Some(message.slot_id);
        if !key_is_slot {
            return Err(Malformed::KeyMismatch);
        }
        Ok(message)
    }
}

/// A member of the observations group.
pub struct Observations {
    consumer: StreamConsumer,
}

/// One message as delivered: where it is, and what it says.
#[derive(Debug)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
    pub observation: Result<ObservationMessage, Malformed>,
}

impl Observations {
    /// Joins the group, subscribed to the topic (created first if missing).
    pub async fn connect(kafka: &KafkaConfig) -> Result<Self, RelayError> {
        crate::relay::ensure_topics(kafka).await?;
        let consumer: StreamConsumer = kafka::consumer_config(kafka, GROUP).create()?;
        consumer.subscribe(&[VISION_OBSERVATIONS])?;
        Ok(Self { consumer })
    }

    /// The next message of this member's partitions.
    pub async fn next(&self) -> Result<Delivered, KafkaError> {
        let message = self.consumer.recv().await?;
        Ok(Delivered {
            partition: message.partition(),
            offset: message.offset(),
            observation: ObservationMessage::decode(message.key(), message.payload()),
        })
    }

    /// Marks `delivered` done for the group: the group resumes after it.
    pub fn commit(&self, delivered: &Delivered) -> Result<(), KafkaError> {
        let mut done = TopicPartitionList::new();
        done.add_partition_offset(
            VISION_OBSERVATIONS,
            delivered.partition,
            Offset::Offset(delivered.offset + 1),
        )?;
        self.consumer.commit(&done, CommitMode::Async)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOT: &str = "8f0c4a52-3f7e-4a0e-9b1a-2d2f4c1e9a10";

    fn value(slot: &str) -> Vec<u8> {
        serde_json::json!({
            "observation_id": "0b6d2c8e-1a4f-4c3b-8e2d-5f6a7b8c9d0e",
            "slot_id": slot, "occupied": true, "confidence": 0.9,
            "observed_at": "2030-01-01T08:00:00Z",
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn an_observation_keyed_by_its_slot_is_read() {
        let message =
            ObservationMessage::decode(Some(SLOT.as_bytes()), Some(&value(SLOT))).unwrap();
        assert_eq!(message.slot_id.to_string(), SLOT);
        assert!(message.occupied);
        assert_eq!(message.camera_id, None);
    }

    #[test]
    fn a_wrong_key_or_shape_is_malformed() {
        let other = "11111111-2222-3333-4444-555555555555";
        assert!(matches!(
            ObservationMessage::decode(Some(other.as_bytes()), Some(&value(SLOT))),
            Err(Malformed::KeyMismatch)
        ));
        assert!(matches!(
            ObservationMessage::decode(Some(SLOT.as_bytes()), Some(b"{\"occupied\": 1}")),
            Err(Malformed::Json(_))
        ));
        assert!(matches!(
            ObservationMessage::decode(None, None),
            Err(Malformed::Empty)
        ));
    }
}

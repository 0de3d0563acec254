//! The global log read back from the Kafka topics the relay writes (ADR 0012): the same
//! events, in the same order, with the same positions as the event store's tail, so that a
//! projection fed from Kafka ends up with the same rows and checkpoints.
//!
//! Kafka orders events per partition only. The reader takes every partition of every event
//! topic (no consumer-group split: one order needs all of them), buffers what arrives by global
//! position, and releases events only up to the relay's checkpoint (everything at or below it
//! is acknowledged by Kafka). Which positions to expect there it asks the event store: the
//! positions of published aggregates. A missing one stops the batch just before it, so nothing
//! is ever skipped; positions of streams that are not published (`email_claim`) are covered
//! without being seen.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use sqlx::PgConnection;

use crate::config::KafkaConfig;
use crate::kafka::{self, Envelope, PUBLISHED_AGGREGATES};
use crate::relay::RelayError;
use crate::LoggedEvent;

/// How long one read waits for Kafka to deliver events it knows are there.
const FILL_PATIENCE: Duration = Duration::from_secs(2);

pub struct KafkaTail {
    consumer: StreamConsumer,
    buffer: tokio::sync::Mutex<BTreeMap<i64, LoggedEvent>>,
}

impl KafkaTail {
    /// Reads every partition of the event topics from the beginning (creating the topics if
    /// no relay has yet).
    pub async fn connect(kafka: &KafkaConfig) -> Result<Self, RelayError> {
        crate::relay::ensure_topics(kafka).await?;
        let group = format!("parking-projector-{}", uuid::Uuid::new_v4().simple());
        let mut config = kafka::consumer_config(kafka, &group);
        config.set("fetch.wait.max.ms", "10");
        let partitions = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || -> Result<Vec<(String, i32)>, RelayError> {
                let probe: BaseConsumer = config.create()?;
                let metadata = probe.fetch_metadata(None, Duration::from_secs(10))?;
                Ok(metadata
                    .topics()
                    .iter()
                    .filter(|t| {
                        PUBLISHED_AGGREGATES
                            .iter()
                            .any(|a| kafka::topic(a) == t.name())
                    })
                    .flat_map(|t| t.partitions().iter().map(|p| (t.name().to_owned(), p.id())))
                    .collect())
            })
            .await
            .map_err(|e| RelayError::Setup(e.to_string()))??
        };
        let consumer: StreamConsumer = config.create()?;
        let mut assignment = TopicPartitionList::new();
        for (topic, partition) in &partitions {
            assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        Ok(Self {
            consumer,
            buffer: Default::default(),
        })
    }

    /// The published events after `position`, in log order, at most `limit`, and the position
    /// the log is covered up to (see the module's documentation).
    pub async fn read(
        &self,
        db: &mut PgConnection,
        position: i64,
        limit: i64,
    ) -> Result<(Vec<LoggedEvent>, i64), RelayError> {
        let relayed: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT position FROM log_checkpoints WHERE consumer = $1), 0)",
        )
        .bind(crate::relay::CONSUMER)
        .fetch_one(&mut *db)
        .await?;
        if relayed <= position {
            return Ok((Vec::new(), position));
        }
        let expected: Vec<i64> = sqlx::query_scalar(
            "SELECT global_position FROM events
              WHERE global_position > $1 AND global_position <= $2 AND aggregate_type = ANY($3)
              ORDER BY global_position LIMIT $4",
        )
        .bind(position)
        .bind(relayed)
        .bind(PUBLISHED_AGGREGATES.as_slice())
        .bind(limit)
        .fetch_all(&mut *db)
        .await?;
        let covered = match expected.last() {
            Some(last) if expected.len() as i64 == limit => *last,
            _ => relayed,
        };

        let mut buffer = self.buffer.lock().await;
        *buffer = buffer.split_off(&(position + 1));
        let deadline = tokio::time::Instant::now() + FILL_PATIENCE;
        while expected.iter().any(|p| !buffer.contains_key(p)) {
            let message = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_late) => break,
                Ok(message) => message?,
            };
            let envelope: Option<Envelope> = message
                .payload()
                .and_then(|bytes| serde_json::from_slice(bytes).ok());
            match envelope {
                Some(e) if e.global_position > position => {
                    buffer.insert(e.global_position, logged(e));
                }
                Some(_) => {}
                None => tracing::warn!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    "not an event envelope; passed by"
                ),
            }
        }
        let mut events = Vec::with_capacity(expected.len());
        for wanted in &expected {
            match buffer.remove(wanted) {
                Some(event) => events.push(event),
                // Not delivered yet: stop right before it (what lies between is unpublished).
                None => return Ok((events, (wanted - 1).max(position))),
            }
        }
        Ok((events, covered))
    }
}

/// The logged event an envelope was made from (the payload wrapped in its type again, as the
/// store keeps it).
fn logged(envelope: Envelope) -> LoggedEvent {
    let mut payload = serde_json::Map::new();
    payload.insert(envelope.event_type.clone(), envelope.payload);
    LoggedEvent {
        global_position: envelope.global_position,
        aggregate_type: envelope.aggregate_type,
        aggregate_id: envelope.aggregate_id,
        sequence: envelope.sequence,
        event_type: envelope.event_type,
        event_version: envelope.event_version,
        payload: raw_json(&Value::Object(payload)),
        metadata: raw_json(&envelope.metadata),
        recorded_at: envelope.recorded_at,
    }
}

fn raw_json(value: &Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(value).expect("a JSON value serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(value: serde_json::Value) -> Box<serde_json::value::RawValue> {
        serde_json::value::to_raw_value(&value).unwrap()
    }

    #[test]
    fn an_envelope_turns_back_into_the_logged_event() {
        let event = LoggedEvent {
            global_position: 9,
            aggregate_type: "lot".into(),
            aggregate_id: "a".into(),
            sequence: 3,
            event_type: "LotUpdated".into(),
            event_version: "1".into(),
            payload: raw(serde_json::json!({"LotUpdated": {"name": "X"}})),
            metadata: raw(serde_json::json!({"request_id": "r"})),
            recorded_at: chrono::DateTime::UNIX_EPOCH,
        };
        let envelope = kafka::envelope(&event).unwrap();
        assert_eq!(logged(envelope), event);
    }
}

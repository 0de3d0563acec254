//! The relay: publishes the global log to Kafka, every event once, in position order
//! (docs/adr/0011-relay.md).
//!
//! - One active relay per database: it holds a session advisory lock; the others stand by
//!   and take over when its connection goes.
//! - Each batch is sent with the idempotent producer (`acks=all`, no give-up timeout) to the
//!   partition the relay computes from the key, and the checkpoint (`log_checkpoints`,
//!   consumer `relay:kafka`) moves only once every message of the batch is acknowledged.
//! - A relay that died between acknowledgement and checkpoint would send those events again.
//!   So on taking over, it reads the last message of every partition back from Kafka: each
//!   partition is written in position order, so an event is already there if its partition's
//!   last message has a position at least as high. Those are skipped: nothing is duplicated.
//! - A broker outage stalls the relay (commands are still accepted); it re-creates missing
//!   topics while stalled and resumes when the broker is back.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::Connection;

use crate::config::KafkaConfig;
use crate::kafka::{self, Envelope};
use crate::EventLog;

/// The relay's row in `log_checkpoints`.
pub const CONSUMER: &str = "relay:kafka";
/// The advisory lock that elects the active relay ("parkrela").
const LOCK_KEY: i64 = 0x7061_726b_7265_6c61;
/// Events per batch (one checkpoint write each).
const BATCH: i64 = 5000;
/// How long a batch may wait for acknowledgements before the relay checks the topics.
const STALL_CHECK: Duration = Duration::from_secs(2);
/// Stall checks after which the producer is replaced: a broker that came back may no longer
/// know the producer's id (an empty one, after a restart) and never acknowledge it.
const STALLS_BEFORE_RECONNECT: u32 = 3;
/// Deadline of one admin or metadata request.
const KAFKA_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Setup(String),
}

pub struct Relay {
    log: EventLog,
    kafka: KafkaConfig,
}

impl Relay {
    pub fn new(log: EventLog, kafka: KafkaConfig) -> Self {
        Self { log, kafka }
    }

    /// Relays for the life of the process: stands by while another relay is active, and
    /// starts over (leadership, topics, recovery) after any failure.
    pub async fn run(self) {
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let Err(e) = self.lead().await;
            // A relay that worked for a while before failing starts its back-off afresh.
            if started.elapsed() > Duration::from_secs(60) {
                failures = 0;
            }
            failures += 1;
            let pause = Duration::from_millis(500 * u64::from(failures.min(10)));
            tracing::warn!(error = %e, ?pause, "relay stopped; starting over");
            tokio::time::sleep(pause).await;
        }
    }

    async fn lead(&self) -> Result<Infallible, RelayError> {
        // A connection of its own: the advisory lock lives as long as it does.
        let mut db = self.log.pool().acquire().await?.detach();
        let mut standing_by = false;
        while !sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut db)
            .await?
        {
            if !standing_by {
                tracing::info!("another relay is active; standing by");
                standing_by = true;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        tracing::info!(brokers = %self.kafka.brokers, "relay active");
        let started = Instant::now();

        let producer = kafka::producer(&self.kafka)?;
        ensure_topics(&self.kafka).await?;
        let partitions = partition_counts(&producer).await?;
        if standing_by {
            // The relay before us may still be waiting for acknowledgements of its last batch;
            // let them land before reading what Kafka holds.
            tokio::time::sleep(STALL_CHECK * STALLS_BEFORE_RECONNECT).await;
        }
        tracing::info!(ms = started.elapsed().as_millis() as u64, "topics ready");
        let tails = last_events(&self.kafka, &partitions).await?;
        tracing::debug!(?tails, "last events on Kafka");
        same_history(&mut db, &tails).await?;
        let on_kafka: HashMap<(String, i32), i64> =
            tails.iter().map(|(k, t)| (k.clone(), t.position)).collect();
        sqlx::query(
            "INSERT INTO log_checkpoints (consumer, position) VALUES ($1, 0) ON CONFLICT DO NOTHING",
        )
        .bind(CONSUMER)
        .execute(&mut db)
        .await?;
        let mut at: i64 =
            sqlx::query_scalar("SELECT position FROM log_checkpoints WHERE consumer = $1")
                .bind(CONSUMER)
                .fetch_one(&mut db)
                .await?;
        tracing::info!(
            checkpoint = at,
            recovery_ms = started.elapsed().as_millis() as u64,
            "relaying from the checkpoint"
        );
        if at > 0 && on_kafka.is_empty() {
            tracing::error!(
                checkpoint = at,
                "Kafka holds none of the events relayed before (a broker that lost its data?); \
                 they are not sent again. See docs/operations.md to replay them"
            );
        }

        let mut head = self.log.subscribe();
        loop {
            let events = self.log.read_after(&mut db, at, BATCH).await?;
            let Some(last) = events.last().map(|e| e.global_position) else {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), head.wait_for(|h| *h > at)).await;
                db.ping().await?; // still holding the lock?
                continue;
            };
            let mut deliveries = Vec::with_capacity(events.len());
            let mut skipped = 0usize;
            for event in &events {
                let Some(published) = kafka::encode(event) else {
                    continue;
                };
                let count = *partitions.get(&published.topic).ok_or_else(|| {
                    RelayError::Setup(format!("no partition count for topic {}", published.topic))
                })?;
                let partition = kafka::partition(event.aggregate_id.as_bytes(), count);
                if on_kafka
                    .get(&(published.topic.clone(), partition))
                    .is_some_and(|there| *there >= event.global_position)
                {
                    skipped += 1;
                    continue;
                }
                let record = FutureRecord::to(&published.topic)
                    .key(event.aggregate_id.as_bytes())
                    .payload(&published.value)
                    .partition(partition)
                    .headers(published.headers);
                let delivery = producer.send_result(record).map_err(|(e, _)| e)?;
                deliveries.push(delivery);
            }
            if skipped > 0 {
                tracing::info!(skipped, "events already on Kafka before a restart skipped");
            }
            self.acknowledged(deliveries).await?;
            // Not worth a WAL flush: a checkpoint lost to a database crash only makes the next
            // leader skip what Kafka already holds (`Relay::lead` reads each partition's end first).
            sqlx::query(
                "UPDATE log_checkpoints SET position = $2, updated_at = now()
                  WHERE consumer = $1 AND set_config('synchronous_commit', 'off', true) = 'off'",
            )
            .bind(CONSUMER)
            .bind(last)
            .execute(&mut db)
            .await?;
            at = last;
        }
    }

    /// Waits until every delivery is acknowledged; while the broker does not answer, makes sure
    /// the topics exist (a broker that lost them, or a new cluster).
    async fn acknowledged(
        &self,
        deliveries: Vec<rdkafka::producer::DeliveryFuture>,
    ) -> Result<(), RelayError> {
        let mut pending: FuturesUnordered<_> = deliveries.into_iter().collect();
        let mut stalls = 0;
        loop {
            tokio::select! {
                next = pending.next() => match next {
                    None => return Ok(()),
                    Some(Ok(Ok(_))) => stalls = 0,
                    Some(Ok(Err((e, _)))) => return Err(e.into()),
                    Some(Err(_canceled)) => {
                        return Err(RelayError::Setup("producer went away".into()))
                    }
                },
                _ = tokio::time::sleep(STALL_CHECK) => {
                    stalls += 1;
                    if stalls == STALLS_BEFORE_RECONNECT {
                        // Starting over recovers what was delivered from Kafka itself, so the
                        // abandoned messages are neither lost nor sent twice.
                        return Err(RelayError::Setup(
                            "Kafka is not acknowledging; reconnecting".into(),
                        ));
                    }
                    tracing::warn!("Kafka is not acknowledging; checking the topics");
                    if let Err(e) = ensure_topics(&self.kafka).await {
                        tracing::warn!(error = %e, "topics could not be checked");
                    }
                }
            }
        }
    }
}

/// Creates every topic of the contract that does not exist yet.
pub async fn ensure_topics(kafka: &KafkaConfig) -> Result<(), RelayError> {
    let admin: AdminClient<DefaultClientContext> = kafka::client_config(kafka).create()?;
    let names = kafka::all_topics();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                kafka.partitions,
                TopicReplication::Fixed(kafka.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(KAFKA_REQUEST_TIMEOUT));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(topic) => tracing::info!(topic, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(RelayError::Setup(format!(
                    "cannot create topic {topic}: {code}"
                )))
            }
        }
    }
    Ok(())
}

/// The number of partitions of each event topic, as the cluster has them.
async fn partition_counts(producer: &kafka::Producer) -> Result<HashMap<String, i32>, RelayError> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || {
        let metadata = producer
            .client()
            .fetch_metadata(None, KAFKA_REQUEST_TIMEOUT)?;
        let counts: HashMap<String, i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
            .collect();
        for aggregate in kafka::PUBLISHED_AGGREGATES {
            let topic = kafka::topic(aggregate);
            if !counts.contains_key(&topic) {
                return Err(RelayError::Setup(format!(
                    "topic {topic} has no partitions"
                )));
            }
        }
        Ok(counts)
    })
    .await
    .map_err(|e| RelayError::Setup(e.to_string()))?
}

/// The last event in a partition.
#[derive(Debug, Clone, Copy)]
struct Tail {
    position: i64,
    event_id: uuid::Uuid,
}

/// The last event of every non-empty partition of the event topics.
async fn last_events(
    kafka: &KafkaConfig,
    partitions: &HashMap<String, i32>,
) -> Result<HashMap<(String, i32), Tail>, RelayError> {
    let mut config = kafka::consumer_config(kafka, "parking-relay-recovery");
    config
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "10");
    let partitions: Vec<(String, i32)> = kafka::PUBLISHED_AGGREGATES
        .iter()
        .map(|a| kafka::topic(a))
        .flat_map(|topic| {
            let count = partitions.get(&topic).copied().unwrap_or(0);
            (0..count).map(move |p| (topic.clone(), p))
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut found: HashMap<(String, i32), Tail> = HashMap::new();
        // One topic at a time: the end-of-partition signal names only the partition.
        for topic in kafka::PUBLISHED_AGGREGATES.iter().map(|a| kafka::topic(a)) {
            let consumer: BaseConsumer = config.create()?;
            let mut assignment = TopicPartitionList::new();
            let mut open = 0usize;
            for (_, partition) in partitions.iter().filter(|(t, _)| *t == topic) {
                let (low, high) =
                    consumer.fetch_watermarks(&topic, *partition, KAFKA_REQUEST_TIMEOUT)?;
                if high > low {
                    // Read from the last message on to the end of the partition, not just the
                    // message at the high watermark: brokers differ in how they report it for
                    // batches, and the end-of-partition signal is what counts.
                    let from = low.max(high - 1);
                    assignment.add_partition_offset(&topic, *partition, Offset::Offset(from))?;
                    open += 1;
                }
            }
            if open == 0 {
                continue;
            }
            consumer.assign(&assignment)?;
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut ended = std::collections::HashSet::new();
            while ended.len() < open {
                if Instant::now() > deadline {
                    return Err(RelayError::Setup(format!(
                        "could not read to the end of {topic} in time"
                    )));
                }
                let message = match consumer.poll(Duration::from_millis(200)) {
                    None => continue,
                    Some(Err(KafkaError::PartitionEOF(partition))) => {
                        ended.insert(partition);
                        continue;
                    }
                    Some(message) => message?,
                };
                let envelope: Envelope = message
                    .payload()
                    .and_then(|bytes| serde_json::from_slice(bytes).ok())
                    .ok_or_else(|| {
                        RelayError::Setup(format!(
                            "{}[{}]@{} is not an event envelope",
                            message.topic(),
                            message.partition(),
                            message.offset()
                        ))
                    })?;
                let tail = Tail {
                    position: envelope.global_position,
                    event_id: envelope.event_id,
                };
                found
                    .entry((topic.clone(), message.partition()))
                    .and_modify(|t| {
                        if tail.position > t.position {
                            *t = tail;
                        }
                    })
                    .or_insert(tail);
            }
            drop(assignment);
        }
        Ok(found)
    })
    .await
    .map_err(|e| RelayError::Setup(e.to_string()))?
}

/// Refuses to relay into topics whose events this database does not have at their positions:
/// a database restored to an earlier state, or topics of another environment. Relaying would
/// skip new events that reuse those positions.
async fn same_history(
    db: &mut sqlx::PgConnection,
    tails: &HashMap<(String, i32), Tail>,
) -> Result<(), RelayError> {
    for ((topic, partition), tail) in tails {
        let stored: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT aggregate_type, aggregate_id, sequence FROM events WHERE global_position = $1",
        )
        .bind(tail.position)
        .fetch_optional(&mut *db)
        .await?;
        let same = stored.is_some_and(|(kind, id, sequence)| {
            crate::event_store::event_id(&kind, &id, sequence as usize) == tail.event_id
        });
        if !same {
            tracing::error!(
                topic,
                partition,
                position = tail.position,
                "Kafka and the event store disagree"
            );
            return Err(RelayError::Setup(format!(
                "{topic}[{partition}] ends with event {} at position {}, which this database \
                 does not hold there: Kafka and the event store have different histories \
                 (restored database? another environment's topics?). Not relaying; see \
                 docs/operations.md",
                tail.event_id, tail.position
            )));
        }
    }
    Ok(())
}

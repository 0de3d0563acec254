//! The Kafka contract external consumers rely on (docs/events.md, "Kafka contract"): topics,
//! keys, partitions, the JSON envelope and the CloudEvents 1.0 binary-mode headers; and the
//! client settings every producer and consumer of ours uses.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::{ClientProperties, KafkaConfig};
use crate::LoggedEvent;

/// The aggregates whose events are published, each to `parking.events.<aggregate>`.
pub const PUBLISHED_AGGREGATES: [&str; 6] = ["lot", "slot", "booking", "payment", "review", "user"];

/// The topic of the vision worker's observations.
pub const VISION_OBSERVATIONS: &str = "parking.vision.observations";

pub fn topic(aggregate_type: &str) -> String {
    format!("parking.events.{aggregate_type}")
}

/// Every topic the platform owns, created at start-up (never left to broker auto-creation).
pub fn all_topics() -> Vec<String> {
    PUBLISHED_AGGREGATES
        .iter()
        .map(|a| topic(a))
        .chain([VISION_OBSERVATIONS.to_owned()])
        .collect()
}

/// `fields` as `edit` leaves them: what a published payload holds back (see [`encode`]).
fn edited(fields: &RawValue, edit: impl FnOnce(&mut Value)) -> Box<RawValue> {
    let mut value: Value = serde_json::from_str(fields.get()).unwrap_or(Value::Null);
    edit(&mut value);
    serde_json::value::to_raw_value(&value).expect("a JSON value serializes")
}

/// The value of a published event.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Envelope {
    pub event_id: uuid::Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub global_position: i64,
    pub event_type: String,
    pub event_version: String,
    /// The event's fields (the stored payload without its `{"EventType": …}` wrapper).
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Who and what caused the event: `user_id`, `role`, `request_id`, `correlation_id`,
    /// `causation_id`, and `idempotency_key` when the client sent one.
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

/// What is published of a logged event: `None` for streams that are not part of the contract
/// (`email_claim`, the e-mail uniqueness guard: internal, and its id is derived from the
/// address). Secrets never leave: `UserCredentialsSet` is published without its hash, so the
/// user's sequence stays gapless and consumers still learn that the password changed, and
/// `PaymentIntentCreated` without the intent's `client_secret` (the driver's to pay with), and
/// `CameraConfigured` with the credentials of its stream URL replaced by `***`.
///
/// The value is written from the stored JSON text, which is copied into it as it is: the
/// payload's fields are found without parsing them (`Envelope` is what a consumer reads back).
pub fn encode(event: &LoggedEvent) -> Option<Published> {
    if !PUBLISHED_AGGREGATES.contains(&event.aggregate_type.as_str()) {
        return None;
    }
    Some(with_envelope(event, |envelope| Published {
        topic: topic(&event.aggregate_type),
        value: to_value(envelope),
        headers: headers(envelope),
    }))
}

/// The envelope of any logged event, published or not, with the same secrets left out as
/// [`encode`] leaves out: what the audit API and `history export` write, one per line.
pub fn envelope_text(event: &LoggedEvent) -> Vec<u8> {
    with_envelope(event, to_value)
}

fn to_value(envelope: &Outgoing<'_>) -> Vec<u8> {
    serde_json::to_vec(envelope).expect("an envelope of JSON texts serializes")
}

/// `use_it` applied to the envelope of `event` as [`encode`] describes it.
fn with_envelope<R>(event: &LoggedEvent, use_it: impl FnOnce(&Outgoing<'_>) -> R) -> R {
    let redacted: Box<RawValue>;
    let payload: &RawValue = match (event.aggregate_type.as_str(), event.event_type.as_str()) {
        ("user", "UserCredentialsSet") => empty_object(),
        ("payment", "PaymentIntentCreated") => {
            redacted = edited(fields(event), |payload| {
                if let Some(intent) = payload.as_object_mut() {
                    intent.remove("client_secret");
                }
            });
            &redacted
        }
        ("lot", "CameraConfigured") => {
            redacted = edited(fields(event), |payload| {
                if let Some(url) = payload.pointer_mut("/config/stream_url") {
                    if let Some(text) = url.as_str() {
                        *url = Value::String(parking_domain::lot::redact_credentials(text));
                    }
                }
            });
            &redacted
        }
        _ => fields(event),
    };
    let envelope = Outgoing {
        event_id: event.event_id(),
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        sequence: event.sequence,
        global_position: event.global_position,
        event_type: &event.event_type,
        event_version: &event.event_version,
        payload,
        metadata: &event.metadata,
        recorded_at: event.recorded_at,
    };
    use_it(&envelope)
}

/// A logged event as published: its topic, value and headers (the key is its aggregate id).
pub struct Published {
    pub topic: String,
    pub value: Vec<u8>,
    pub headers: OwnedHeaders,
}

/// The envelope a consumer reads from a published event's value.
pub fn envelope(event: &LoggedEvent) -> Option<Envelope> {
    let published = encode(event)?;
    Some(serde_json::from_slice(&published.value).expect("a published envelope reads back"))
}

/// [`Envelope`] as written: the stored JSON texts copied in, not re-encoded.
#[derive(Serialize)]
struct Outgoing<'a> {
    event_id: uuid::Uuid,
    aggregate_type: &'a str,
    aggregate_id: &'a str,
    sequence: i64,
    global_position: i64,
    event_type: &'a str,
    event_version: &'a str,
    payload: &'a RawValue,
    metadata: &'a RawValue,
    recorded_at: chrono::DateTime<chrono::Utc>,
}

fn empty_object() -> &'static RawValue {
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| RawValue::from_string("{}".to_owned()).expect("valid JSON"))
}

/// The stored payload without its `{"EventType": …}` wrapper, as JSON text; the whole
/// payload if it is not wrapped so.
fn fields(event: &LoggedEvent) -> &RawValue {
    let tagged: Option<std::collections::HashMap<std::borrow::Cow<'_, str>, &RawValue>> =
        serde_json::from_str(event.payload.get()).ok();
    match tagged {
        Some(tagged) if tagged.len() == 1 => tagged
            .get(event.event_type.as_str())
            .copied()
            .unwrap_or(&event.payload),
        _ => &event.payload,
    }
}

/// CloudEvents 1.0, Kafka protocol binding, binary content mode.
fn headers(envelope: &Outgoing<'_>) -> OwnedHeaders {
    let ce_type = format!(
        "parking.{}.{}.v{}",
        envelope.aggregate_type, envelope.event_type, envelope.event_version
    );
    let source = format!("urn:parking:events:{}", envelope.aggregate_type);
    let time = envelope
        .recorded_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let id = envelope.event_id.to_string();
    [
        ("ce_specversion", "1.0"),
        ("ce_id", id.as_str()),
        ("ce_source", source.as_str()),
        ("ce_type", ce_type.as_str()),
        ("ce_time", time.as_str()),
        ("ce_subject", envelope.aggregate_id),
        ("content-type", "application/json"),
    ]
    .into_iter()
    .fold(
        OwnedHeaders::new_with_capacity(7),
        |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value),
            })
        },
    )
}

/// The partition of `key` among `partitions`: Kafka's default partitioner (murmur2 of the
/// key, as the Java client computes it), so any client that hashes keys the standard way
/// agrees. The relay sets it explicitly because it must know where each event went.
pub fn partition(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

/// MurmurHash2, 32-bit, seed 0x9747b28c, as in `org.apache.kafka.common.utils.Utils`.
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// What every Kafka client of ours starts from: the brokers, and the operator's
/// `KAFKA_CLIENT_PROPERTIES_FILE` (TLS, SASL, timeouts). What each kind of client sets after
/// this is the service's own; the file may not set it (`ClientProperties`).
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    brokers_config(&kafka.brokers, &kafka.client_properties)
}

/// The same, for a client that has only the brokers and the properties (the vision worker,
/// which reads no other part of the platform's configuration).
pub fn brokers_config(brokers: &str, properties: &ClientProperties) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in properties.iter() {
        config.set(key, value);
    }
    config
}

/// Settings shared by our producers: every write acknowledged by all in-sync replicas, the
/// idempotent producer (no duplicates or reordering from its own retries), and no give-up
/// timeout, so a broker outage only delays delivery.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = client_config(kafka);
    config
        .set("client.id", "parking-relay")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        // A message that fails for good fails the producer rather than leaving a gap in its
        // partition: the relay then starts over from what Kafka holds.
        .set("enable.gapless.guarantee", "true")
        // Topics are created by the relay, with the contract's partition count, never by a
        // metadata request to a broker that allows auto-creation.
        .set("allow.auto.create.topics", "false")
        .set("message.timeout.ms", "0")
        .set("linger.ms", kafka.linger_ms.to_string())
        .set("compression.type", "lz4");
    config
}

/// The relay's producer, configured by [`producer_config`].
pub type Producer = FutureProducer<ProducerContext>;

/// A producer with the settings of [`producer_config`].
pub fn producer(kafka: &KafkaConfig) -> KafkaResult<Producer> {
    producer_config(kafka).create_with_context(ProducerContext)
}

/// Our producers' librdkafka context: its log lines go to `tracing` (target `librdkafka`) at
/// their own level, as rdkafka's default context sends them, with one exception (see
/// `log_level`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProducerContext;

impl ClientContext for ProducerContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match log_level(level, facility, message) {
            tracing::Level::ERROR => tracing::error!(target: "librdkafka", "{facility} {message}"),
            tracing::Level::WARN => tracing::warn!(target: "librdkafka", "{facility} {message}"),
            tracing::Level::INFO => tracing::info!(target: "librdkafka", "{facility} {message}"),
            _ => tracing::debug!(target: "librdkafka", "{facility} {message}"),
        }
    }
}

/// The level a librdkafka log line is logged at: its own, except for the configuration warning
/// every producer with `enable.gapless.guarantee` gets ("experimental"). We set that property
/// on purpose, so at every start of the relay it would be a warning nobody can act on; it is
/// logged at `debug`.
fn log_level(level: RDKafkaLogLevel, facility: &str, message: &str) -> tracing::Level {
    match level {
        RDKafkaLogLevel::Warning
            if facility == "CONFWARN" && message.contains("enable.gapless.guarantee") =>
        {
            tracing::Level::DEBUG
        }
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::Level::ERROR,
        RDKafkaLogLevel::Warning => tracing::Level::WARN,
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::Level::INFO,
        RDKafkaLogLevel::Debug => tracing::Level::DEBUG,
    }
}

/// Settings shared by our consumers: quick group joins and explicit offset management.
pub fn consumer_config(kafka: &KafkaConfig, group: &str) -> ClientConfig {
    let mut config = client_config(kafka);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // The cases of Kafka's own UtilsTest.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key) as i32,
                expected,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn only_the_expected_configuration_warning_is_quieted() {
        let gapless = "Configuration property enable.gapless.guarantee is experimental: When set \
                       to `true`, any error that could result in a gap in the produced message \
                       series when a batch of messages fails, will raise a fatal error";
        let other = "Configuration property queue.buffering.max.ms is deprecated";
        let down = "1/1 brokers are down";
        use RDKafkaLogLevel::{Error, Warning};
        assert_eq!(
            log_level(Warning, "CONFWARN", gapless),
            tracing::Level::DEBUG
        );
        assert_eq!(log_level(Warning, "CONFWARN", other), tracing::Level::WARN);
        assert_eq!(log_level(Warning, "FAIL", gapless), tracing::Level::WARN);
        assert_eq!(log_level(Error, "CONFWARN", gapless), tracing::Level::ERROR);
        assert_eq!(log_level(Error, "FAIL", down), tracing::Level::ERROR);
    }

    #[test]
    fn partitions_stay_in_range() {
        for key in ["a", "b", "some-aggregate-id", ""] {
            let p = partition(key.as_bytes(), 6);
            assert!((0..6).contains(&p));
        }
    }

    fn logged(aggregate_type: &str, event_type: &str, payload: Value) -> LoggedEvent {
        LoggedEvent {
            global_position: 7,
            aggregate_type: aggregate_type.into(),
            aggregate_id: "agg-1".into(),
            sequence: 2,
            event_type: event_type.into(),
            event_version: "1".into(),
            payload: serde_json::value::to_raw_value(&payload).unwrap(),
            metadata: serde_json::value::to_raw_value(&serde_json::json!({"request_id": "r"}))
                .unwrap(),
            recorded_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_envelope_carries_the_fields_without_the_type_wrapper() {
        let event = logged(
            "lot",
            "LotRenamed",
            serde_json::json!({"LotRenamed": {"name": "X"}}),
        );
        let envelope = envelope(&event).unwrap();
        assert_eq!(envelope.payload, serde_json::json!({"name": "X"}));
        assert_eq!(envelope.event_id, event.event_id());
        assert_eq!(envelope.global_position, 7);
    }

    #[test]
    fn secrets_and_internal_streams_are_not_published() {
        let credentials = logged(
            "user",
            "UserCredentialsSet",
            serde_json::json!({"UserCredentialsSet": {"password_hash": "$2b$secret"}}),
        );
        let published = serde_json::to_string(&envelope(&credentials).unwrap()).unwrap();
        assert!(!published.contains("secret"), "{published}");
        let intent = logged(
            "payment",
            "PaymentIntentCreated",
            serde_json::json!({"PaymentIntentCreated": {"intent_id": "pi_1", "client_secret": "pi_1_secret_x"}}),
        );
        let published = serde_json::to_string(&envelope(&intent).unwrap()).unwrap();
        assert!(!published.contains("secret"), "{published}");
        assert!(published.contains("pi_1"), "{published}");
        let camera = logged(
            "lot",
            "CameraConfigured",
            serde_json::json!({"CameraConfigured": {"camera_id": "c", "config": {"stream_url": "rtsp://u:secret@cam/1", "slots": []}}}),
        );
        let published = serde_json::to_string(&envelope(&camera).unwrap()).unwrap();
        assert!(!published.contains("secret"), "{published}");
        assert!(published.contains("rtsp://***@cam/1"), "{published}");
        let claim = logged("email_claim", "EmailClaimed", serde_json::json!({}));
        assert!(envelope(&claim).is_none());
    }

    #[test]
    fn headers_follow_the_cloudevents_binary_binding() {
        use rdkafka::message::Headers;
        let event = logged("slot", "SlotReserved", serde_json::json!({}));
        let envelope = envelope(&event).unwrap();
        let headers = encode(&event).unwrap().headers;
        let get = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
        };
        assert_eq!(get("ce_specversion").as_deref(), Some("1.0"));
        assert_eq!(get("ce_id"), Some(envelope.event_id.to_string()));
        assert_eq!(
            get("ce_type").as_deref(),
            Some("parking.slot.SlotReserved.v1")
        );
        assert_eq!(get("ce_subject").as_deref(), Some("agg-1"));
        assert_eq!(
            get("ce_time").as_deref(),
            Some("1970-01-01T00:00:00.000000Z")
        );
        assert_eq!(get("content-type").as_deref(), Some("application/json"));
        assert!(get("ce_source").is_some());
    }
}

//! Configuration, in layers: built-in defaults, then an optional `.env` file, then the
//! process environment (which wins over the file). Secrets are `SecretString`s: they are
//! never printed, not even by `Debug`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

use crate::keys::MasterKey;
use crate::stripe::{StripeConfig, DEFAULT_API_BASE};
use crate::telemetry::LogFormat;

/// The database the development script creates; `cargo run` works with it and nothing set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/parking";
pub const DEFAULT_BIND_ADDR: &str = "127.0.0.1:8080";

#[derive(Debug, thiserror::Error)]
#[error("configuration variable {name} is invalid: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`
    pub database_url: SecretString,
    /// `DATABASE_MAX_CONNECTIONS` (default 20)
    pub database_max_connections: u32,
    /// `BIND_ADDR`
    pub bind_addr: SocketAddr,
    /// `JWT_SECRET`; unset means a random key per start (development only, logged loudly).
    pub jwt_secret: Option<SecretString>,
    /// `JWT_TTL_SECONDS` (default 3600)
    pub jwt_ttl: Duration,
    /// `BCRYPT_COST` (default 12; tests use 4)
    pub bcrypt_cost: u32,
    /// `BOOKING_HOLD_SECONDS`: how long an unpaid booking holds its slot (default 900).
    pub booking_hold: chrono::Duration,
    /// `CHECK_IN_GRACE_SECONDS`: how long before its start a booking may be checked in
    /// (default 900).
    pub check_in_grace: chrono::Duration,
    /// `BILLING_INCREMENT_MINUTES`: time is charged in started steps of this length
    /// (default 15).
    pub billing_increment: chrono::Duration,
    /// `NEARBY_SEARCH`: `box` (default, plain PostgreSQL) or `postgis` (needs the extension
    /// installed on the database server).
    pub nearby_postgis: bool,
    /// `STRIPE_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET` (both or neither) and `STRIPE_API_BASE`.
    /// Unset: no payment provider; payments answer 503 `payments_unavailable`.
    pub stripe: Option<StripeConfig>,
    /// `LOGIN_MAX_FAILURES`: sign-in attempts of one account per window without a success,
    /// before 429 (default 10).
    pub login_max_failures: u32,
    /// `LOGIN_FAILURE_WINDOW_SECONDS` (default 900).
    pub login_failure_window: Duration,
    /// `LOG_FORMAT`: `pretty` (default) or `json`.
    pub log_format: LogFormat,
    /// `READ_WAIT_MS`: how long a read waits for the read models to reach `X-Min-Position`,
    /// and a write for its own effects to show, before answering 503 (default 5000).
    pub read_wait: Duration,
    /// `KAFKA_BROKERS`: bootstrap servers (`host:port,...`), where the relay publishes the
    /// log. Unset: nothing is published, and projections read the event store's tail.
    pub kafka: Option<KafkaConfig>,
    /// The live hub's limits (`WS_*`, docs/live.md).
    pub live: LiveConfig,
    /// Who publishes the open occupancy feed (`DATEX2_*`, docs/feeds.md).
    pub feed: FeedConfig,
    /// `DATA_KEY_FILE`: the master key (docs/audit.md). Unset: the audit's checkpoints are not
    /// signed, so a verification of the hash chain always starts from the first event.
    pub data_key: Option<MasterKey>,
    /// Whether personal fields are sealed when recorded. Always true in a deployment (no
    /// variable turns it off); `bench-pipeline` turns it off on a second server to measure what
    /// sealing costs the booking path.
    pub seal_personal_data: bool,
}

/// The publisher named in the DATEX II feed (`publicationCreator`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// `DATEX2_COUNTRY`: the operator's country, ISO 3166-1 alpha-2, lower-case (default `xx`,
    /// ISO's code for "unknown": set it).
    pub country: String,
    /// `DATEX2_NATIONAL_IDENTIFIER`: the operator's identifier as a publisher in that country
    /// (default `parking-platform`).
    pub national_identifier: String,
}

/// The live hub's limits: what one process gives its WebSocket clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveConfig {
    /// `WS_MAX_CONNECTIONS`: open WebSockets per process; one more is refused with 503
    /// (default 10000; 0: this process serves no WebSockets).
    pub max_connections: usize,
    /// `WS_MAX_SUBSCRIPTIONS`: lots one connection may follow (default 100).
    pub max_subscriptions: usize,
    /// `WS_BUFFER_MESSAGES`: messages waiting for one client; a client that lets more pile up
    /// is closed with 4002 (default 256).
    pub buffer: usize,
    /// `WS_PING_SECONDS`: how often the server pings each client (default 20).
    pub ping_interval: Duration,
    /// `WS_IDLE_SECONDS`: a client that sends nothing, pongs included, for this long is
    /// closed with 4003 (default 60).
    pub idle_timeout: Duration,
    /// `WS_CATCH_UP_POSITIONS`: how far back in the log (in positions) a reconnecting client
    /// may ask to catch up from; further back it is told to resync (default 10000).
    pub catch_up_positions: i64,
    /// `WS_SEND_BUFFER_BYTES`: the kernel send buffer (`SO_SNDBUF`) of every connection the
    /// server accepts. Unset: the kernel's autotuning, up to `net.ipv4.tcp_wmem`'s maximum
    /// (4 MiB by default), which is what a client that stops reading can hold before the
    /// hub's buffer fills and drops it.
    pub send_buffer: Option<usize>,
}

/// Where and how events are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    pub brokers: String,
    /// `RELAY_ENABLED`: whether `serve` runs the relay in-process (default true; at most one
    /// relay per database is active, the others wait).
    pub relay_in_server: bool,
    /// `PROJECTION_SOURCE`: `store` (default) or `kafka`: where this process's projections
    /// read the log (ADR 0012).
    pub projections_from_kafka: bool,
    /// `KAFKA_TOPIC_PARTITIONS` (default 6), used when the relay creates a missing topic.
    pub partitions: i32,
    /// `KAFKA_REPLICATION_FACTOR` (default 1; 3 on a production cluster).
    pub replication_factor: i32,
    /// `KAFKA_LINGER_MS` (default 20): how long the relay's producer gathers messages into a
    /// request. Longer: fewer, larger requests (less CPU for the relay and the brokers); shorter:
    /// events reach Kafka sooner.
    pub linger_ms: u32,
    /// `OBSERVATIONS_FROM_KAFKA`: whether `serve` reads the vision service's observations from
    /// `parking.vision.observations` (default true).
    pub observations_consumer: bool,
    /// `KAFKA_CLIENT_PROPERTIES_FILE`: librdkafka properties for every Kafka client of ours
    /// (TLS and SASL of a secured cluster, for example).
    pub client_properties: ClientProperties,
}

/// librdkafka properties an operator adds to every Kafka client of ours, read from a file in
/// the `key=value` format of Kafka's own `client.properties`: one property a line, `#` or `!`
/// starts a comment line, the value is everything after the first `=` (no escapes, no line
/// continuations). Checked by librdkafka when read, so a misspelt name or a bad value stops
/// the start with its line. Values may be secrets (`sasl.password`): `Debug` prints the names
/// only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientProperties(Vec<(String, String)>);

impl ClientProperties {
    /// Properties the service sets itself: the relay's guarantees (ADR 0011) and the readers'
    /// offsets rest on them, or another variable sets them. Aliases included.
    const OWNED: [&'static str; 16] = [
        "bootstrap.servers",
        "metadata.broker.list",
        "acks",
        "request.required.acks",
        "enable.idempotence",
        "enable.gapless.guarantee",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "allow.auto.create.topics",
        "linger.ms",
        "queue.buffering.max.ms",
        "transactional.id",
        "group.id",
        "enable.auto.commit",
        "auto.offset.reset",
        "enable.partition.eof",
    ];

    /// Reads and checks the file at `path`.
    pub fn read(path: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            name: "KAFKA_CLIENT_PROPERTIES_FILE",
            reason: format!("cannot read {path}: {e}"),
        })?;
        Self::parse(&text).map_err(|reason| ConfigError {
            name: "KAFKA_CLIENT_PROPERTIES_FILE",
            reason: format!("{path}: {reason}"),
        })
    }

    /// Parses and checks the text of a properties file.
    fn parse(text: &str) -> Result<Self, String> {
        let mut properties = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {line_no}: expected key=value"));
            };
            let (key, value) = (key.trim(), value.trim());
            if Self::OWNED.contains(&key) {
                return Err(format!(
                    "line {line_no}: {key} is set by the service itself and may not be changed \
                     here (docs/operations.md, \"A secured cluster\")"
                ));
            }
            // librdkafka checks the name and the value (without connecting anywhere).
            let mut probe = rdkafka::ClientConfig::new();
            probe.set(key, value);
            probe
                .create_native_config()
                .map_err(|e| format!("line {line_no}: {e}"))?;
            properties.push((key.to_owned(), value.to_owned()));
        }
        Ok(Self(properties))
    }

    /// The properties, in the file's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl std::fmt::Debug for ClientProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may be passwords.
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

impl Config {
    /// Reads `.env` (if present) and the environment.
    pub fn load() -> Result<Self, ConfigError> {
        // A missing .env file is the normal case in production.
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable source; `load` uses the environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        Ok(Self {
            database_url: SecretString::from(
                get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            ),
            database_max_connections: within(
                parse(&get, "DATABASE_MAX_CONNECTIONS", 20)?,
                "DATABASE_MAX_CONNECTIONS",
                1..=1000,
            )?,
            bind_addr: parse(
                &get,
                "BIND_ADDR",
                DEFAULT_BIND_ADDR.parse().expect("valid default"),
            )?,
            jwt_secret: match get("JWT_SECRET") {
                Some(secret) if secret.len() < MIN_JWT_SECRET_BYTES => {
                    return Err(ConfigError {
                        name: "JWT_SECRET",
                        reason: format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
                    })
                }
                secret => secret.map(SecretString::from),
            },
            jwt_ttl: Duration::from_secs(within(
                parse(&get, "JWT_TTL_SECONDS", 3600)?,
                "JWT_TTL_SECONDS",
                60..=86_400 * 30,
            )?),
            bcrypt_cost: within(parse(&get, "BCRYPT_COST", 12)?, "BCRYPT_COST", 4..=31)?,
            booking_hold: chrono::Duration::seconds(within(
                parse(&get, "BOOKING_HOLD_SECONDS", 900)?,
                "BOOKING_HOLD_SECONDS",
                1..=86_400,
            )?),
            check_in_grace: chrono::Duration::seconds(within(
                parse(&get, "CHECK_IN_GRACE_SECONDS", 900)?,
                "CHECK_IN_GRACE_SECONDS",
                0..=86_400,
            )?),
            billing_increment: chrono::Duration::minutes(within(
                parse(&get, "BILLING_INCREMENT_MINUTES", 15)?,
                "BILLING_INCREMENT_MINUTES",
                1..=24 * 60,
            )?),
            nearby_postgis: match get("NEARBY_SEARCH").as_deref().map(str::trim) {
                None | Some("box") => false,
                Some("postgis") => true,
                Some(other) => {
                    return Err(ConfigError {
                        name: "NEARBY_SEARCH",
                        reason: format!("expected box or postgis, got {other:?}"),
                    })
                }
            },
            stripe: match (get("STRIPE_SECRET_KEY"), get("STRIPE_WEBHOOK_SECRET")) {
                (None, None) => None,
                (Some(key), Some(webhook)) => Some(StripeConfig {
                    secret_key: SecretString::from(key.trim().to_owned()),
                    webhook_secret: SecretString::from(webhook.trim().to_owned()),
                    api_base: get("STRIPE_API_BASE")
                        .map(|base| base.trim().to_owned())
                        .unwrap_or_else(|| DEFAULT_API_BASE.to_owned()),
                }),
                (Some(_), None) => {
                    return Err(ConfigError {
                        name: "STRIPE_WEBHOOK_SECRET",
                        reason: "needed with STRIPE_SECRET_KEY, to verify Stripe's webhooks".into(),
                    })
                }
                (None, Some(_)) => {
                    return Err(ConfigError {
                        name: "STRIPE_SECRET_KEY",
                        reason: "needed with STRIPE_WEBHOOK_SECRET".into(),
                    })
                }
            },
            login_max_failures: within(
                parse(&get, "LOGIN_MAX_FAILURES", 10)?,
                "LOGIN_MAX_FAILURES",
                1..=1000,
            )?,
            login_failure_window: Duration::from_secs(within(
                parse(&get, "LOGIN_FAILURE_WINDOW_SECONDS", 900)?,
                "LOGIN_FAILURE_WINDOW_SECONDS",
                1..=86_400,
            )?),
            log_format: match get("LOG_FORMAT").as_deref() {
                None | Some("pretty") => LogFormat::Pretty,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(ConfigError {
                        name: "LOG_FORMAT",
                        reason: format!("expected pretty or json, got {other:?}"),
                    })
                }
            },
            read_wait: Duration::from_millis(within(
                parse(&get, "READ_WAIT_MS", 5000)?,
                "READ_WAIT_MS",
                0..=60_000,
            )?),
            kafka: match get("KAFKA_BROKERS") {
                None if get("PROJECTION_SOURCE").as_deref() == Some("kafka") => {
                    return Err(ConfigError {
                        name: "PROJECTION_SOURCE",
                        reason: "kafka needs KAFKA_BROKERS".into(),
                    })
                }
                None => None,
                Some(brokers) => Some(KafkaConfig {
                    brokers: brokers.trim().to_owned(),
                    relay_in_server: parse(&get, "RELAY_ENABLED", true)?,
                    observations_consumer: parse(&get, "OBSERVATIONS_FROM_KAFKA", true)?,
                    projections_from_kafka: match get("PROJECTION_SOURCE").as_deref() {
                        None | Some("store") => false,
                        Some("kafka") => true,
                        Some(other) => {
                            return Err(ConfigError {
                                name: "PROJECTION_SOURCE",
                                reason: format!("expected store or kafka, got {other:?}"),
                            })
                        }
                    },
                    partitions: within(
                        parse(&get, "KAFKA_TOPIC_PARTITIONS", 6)?,
                        "KAFKA_TOPIC_PARTITIONS",
                        1..=1000,
                    )?,
                    replication_factor: within(
                        parse(&get, "KAFKA_REPLICATION_FACTOR", 1)?,
                        "KAFKA_REPLICATION_FACTOR",
                        1..=10,
                    )?,
                    linger_ms: within(
                        parse(&get, "KAFKA_LINGER_MS", 20)?,
                        "KAFKA_LINGER_MS",
                        0..=1000,
                    )?,
                    client_properties: match get("KAFKA_CLIENT_PROPERTIES_FILE") {
                        None => ClientProperties::default(),
                        Some(path) => ClientProperties::read(path.trim())?,
                    },
                }),
            },
            live: LiveConfig::from_lookup(&get)?,
            seal_personal_data: true,
            data_key: get("DATA_KEY_FILE")
                .map(|path| MasterKey::read(path.trim()))
                .transpose()?,
            feed: FeedConfig {
                country: match get("DATEX2_COUNTRY") {
                    None => "xx".to_owned(),
                    Some(raw) => {
                        let country = raw.trim().to_ascii_lowercase();
                        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_lowercase()) {
                            return Err(ConfigError {
                                name: "DATEX2_COUNTRY",
                                reason: format!("expected two letters (ISO 3166-1), got {raw:?}"),
                            });
                        }
                        country
                    }
                },
                national_identifier: get("DATEX2_NATIONAL_IDENTIFIER")
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_else(|| "parking-platform".to_owned()),
            },
        })
    }
}

impl LiveConfig {
    fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let seconds = |name: &'static str, default: u64, range| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(within(
                parse(get, name, default)?,
                name,
                range,
            )?))
        };
        let live = Self {
            max_connections: within(
                parse(get, "WS_MAX_CONNECTIONS", 10_000)?,
                "WS_MAX_CONNECTIONS",
                0..=1_000_000,
            )?,
            max_subscriptions: within(
                parse(get, "WS_MAX_SUBSCRIPTIONS", 100)?,
                "WS_MAX_SUBSCRIPTIONS",
                1..=10_000,
            )?,
            buffer: within(
                parse(get, "WS_BUFFER_MESSAGES", 256)?,
                "WS_BUFFER_MESSAGES",
                1..=100_000,
            )?,
            ping_interval: seconds("WS_PING_SECONDS", 20, 1..=3600)?,
            idle_timeout: seconds("WS_IDLE_SECONDS", 60, 1..=86_400)?,
            catch_up_positions: within(
                parse(get, "WS_CATCH_UP_POSITIONS", 10_000)?,
                "WS_CATCH_UP_POSITIONS",
                0..=10_000_000,
            )?,
            send_buffer: match get("WS_SEND_BUFFER_BYTES") {
                None => None,
                Some(_) => Some(within(
                    parse(get, "WS_SEND_BUFFER_BYTES", 0)?,
                    "WS_SEND_BUFFER_BYTES",
                    4096..=64 << 20,
                )?),
            },
        };
        if live.idle_timeout <= live.ping_interval {
            return Err(ConfigError {
                name: "WS_IDLE_SECONDS",
                reason: "must be longer than WS_PING_SECONDS, or every client times out between \
                         two pings"
                    .into(),
            });
        }
        Ok(live)
    }
}

/// An HS256 key shorter than its 256-bit output is guessable.
const MIN_JWT_SECRET_BYTES: usize = 32;

fn within<T: PartialOrd + std::fmt::Display>(
    value: T,
    name: &'static str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError {
            name,
            reason: format!("{value} is outside {}..={}", range.start(), range.end()),
        })
    }
}

fn parse<T: FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match get(name) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError {
            name,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_work_on_a_development_machine() {
        let c = config(&[]).unwrap();
        assert_eq!(c.database_url.expose_secret(), DEFAULT_DATABASE_URL);
        assert_eq!(c.bind_addr.to_string(), DEFAULT_BIND_ADDR);
        assert!(c.jwt_secret.is_none());
        assert_eq!(c.booking_hold, chrono::Duration::minutes(15));
        assert!(c.kafka.is_none(), "no Kafka unless configured");
        assert_eq!(c.live.max_connections, 10_000);
        assert_eq!(c.live.idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn the_feeds_publisher_is_a_country_and_an_identifier() {
        let c = config(&[("DATEX2_COUNTRY", " FR ")]).unwrap();
        assert_eq!(c.feed.country, "fr");
        assert_eq!(c.feed.national_identifier, "parking-platform");
        let e = config(&[("DATEX2_COUNTRY", "France")]).unwrap_err();
        assert_eq!(e.name, "DATEX2_COUNTRY");
    }

    #[test]
    fn an_idle_timeout_shorter_than_the_pings_is_refused() {
        let e = config(&[("WS_PING_SECONDS", "30"), ("WS_IDLE_SECONDS", "30")]).unwrap_err();
        assert_eq!(e.name, "WS_IDLE_SECONDS");
        assert!(config(&[("WS_PING_SECONDS", "1"), ("WS_IDLE_SECONDS", "2")]).is_ok());
    }

    #[test]
    fn kafka_settings_come_with_the_brokers() {
        let c = config(&[
            ("KAFKA_BROKERS", " 127.0.0.1:9092 "),
            ("RELAY_ENABLED", "false"),
        ])
        .unwrap();
        let kafka = c.kafka.unwrap();
        assert_eq!(kafka.brokers, "127.0.0.1:9092");
        assert!(!kafka.relay_in_server);
        assert_eq!((kafka.partitions, kafka.replication_factor), (6, 1));
        assert_eq!(kafka.linger_ms, 20);
        assert_eq!(kafka.client_properties, ClientProperties::default());
    }

    /// A file of its own in the temporary directory, removed when dropped.
    struct PropertiesFile(std::path::PathBuf);

    impl PropertiesFile {
        fn new(text: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("kafka-{}.properties", uuid::Uuid::new_v4()));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }

        fn config(&self) -> Result<Config, ConfigError> {
            config(&[
                ("KAFKA_BROKERS", "b:9092"),
                ("KAFKA_CLIENT_PROPERTIES_FILE", self.0.to_str().unwrap()),
            ])
        }
    }

    impl Drop for PropertiesFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn a_client_properties_file_is_read_in_order_without_comments() {
        let file = PropertiesFile::new(
            "# a secured cluster\n\
             security.protocol = SASL_PLAINTEXT\n\
             \n\
             ! also a comment\n\
             sasl.mechanism=PLAIN\n\
             sasl.username=relay\n\
             sasl.password=s3cr=t\n",
        );
        let kafka = file.config().unwrap().kafka.unwrap();
        let properties: Vec<_> = kafka.client_properties.iter().collect();
        assert_eq!(
            properties,
            [
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "relay"),
                ("sasl.password", "s3cr=t"),
            ]
        );
        let printed = format!("{:?}", kafka);
        assert!(printed.contains("sasl.password"), "{printed}");
        assert!(
            !printed.contains("s3cr=t"),
            "a value was printed: {printed}"
        );
    }

    #[test]
    fn a_client_properties_file_may_not_change_what_the_service_owns() {
        for owned in [
            "acks=1",
            "enable.idempotence=false",
            "delivery.timeout.ms=1000",
        ] {
            let err = PropertiesFile::new(&format!("client.rack=a\n{owned}\n"))
                .config()
                .unwrap_err();
            assert_eq!(err.name, "KAFKA_CLIENT_PROPERTIES_FILE");
            assert!(err.reason.contains("line 2:"), "{}", err.reason);
            assert!(err.reason.contains("set by the service"), "{}", err.reason);
        }
    }

    #[test]
    fn librdkafka_checks_every_property_when_the_file_is_read() {
        let err = PropertiesFile::new("socket.keepalive.enable=true\nsecurity.protocoll=ssl\n")
            .config()
            .unwrap_err();
        assert!(err.reason.contains("line 2:"), "{}", err.reason);
        assert!(err.reason.contains("security.protocoll"), "{}", err.reason);

        let err = PropertiesFile::new("security.protocol=carrier_pigeon\n")
            .config()
            .unwrap_err();
        assert!(err.reason.contains("line 1:"), "{}", err.reason);
        assert!(err.reason.contains("carrier_pigeon"), "{}", err.reason);

        let err = PropertiesFile::new("just a line\n").config().unwrap_err();
        assert!(
            err.reason.contains("line 1: expected key=value"),
            "{}",
            err.reason
        );

        let err = config(&[
            ("KAFKA_BROKERS", "b:9092"),
            (
                "KAFKA_CLIENT_PROPERTIES_FILE",
                "/nonexistent/kafka.properties",
            ),
        ])
        .unwrap_err();
        assert!(
            err.reason
                .contains("cannot read /nonexistent/kafka.properties"),
            "{}",
            err.reason
        );
    }

    #[test]
    fn environment_values_override_defaults() {
        let c = config(&[("BIND_ADDR", "0.0.0.0:9000"), ("BCRYPT_COST", "4")]).unwrap();
        assert_eq!(c.bind_addr.port(), 9000);
        assert_eq!(c.bcrypt_cost, 4);
    }

    #[test]
    fn a_malformed_value_names_the_variable() {
        let err = config(&[("BIND_ADDR", "nowhere")]).unwrap_err();
        assert_eq!(err.name, "BIND_ADDR");
        let err =
            config(&[("KAFKA_BROKERS", "b:9092"), ("KAFKA_TOPIC_PARTITIONS", "0")]).unwrap_err();
        assert_eq!(err.name, "KAFKA_TOPIC_PARTITIONS");
        let err = config(&[("KAFKA_BROKERS", "b:9092"), ("KAFKA_LINGER_MS", "5000")]).unwrap_err();
        assert_eq!(err.name, "KAFKA_LINGER_MS");
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let c = config(&[
            ("JWT_SECRET", "hunter2-hunter2-hunter2-hunter2-hunter2"),
            ("STRIPE_SECRET_KEY", "sk_test_hunter2"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_hunter2"),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn stripe_keys_come_together() {
        let err = config(&[("STRIPE_SECRET_KEY", "sk_test_x")]).unwrap_err();
        assert_eq!(err.name, "STRIPE_WEBHOOK_SECRET");
        let err = config(&[("STRIPE_WEBHOOK_SECRET", "whsec_x")]).unwrap_err();
        assert_eq!(err.name, "STRIPE_SECRET_KEY");
        let both = config(&[
            ("STRIPE_SECRET_KEY", "sk_test_x"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_x"),
        ])
        .unwrap();
        let stripe = both.stripe.expect("payments configured");
        assert_eq!(stripe.api_base, "https://api.stripe.com");
        assert!(config(&[]).unwrap().stripe.is_none());
    }

    #[test]
    fn values_that_would_break_rules_are_refused_at_start() {
        for (name, value) in [
            ("BOOKING_HOLD_SECONDS", "0"),
            ("BOOKING_HOLD_SECONDS", "100000000000"),
            ("CHECK_IN_GRACE_SECONDS", "-1"),
            ("BILLING_INCREMENT_MINUTES", "0"),
            ("NEARBY_SEARCH", "rtree"),
            ("BCRYPT_COST", "3"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("JWT_SECRET", "short"),
            ("JWT_TTL_SECONDS", "5"),
            ("READ_WAIT_MS", "600000"),
            ("PROJECTION_SOURCE", "kafka"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert_eq!(err.name, name, "{value}");
        }
    }
}

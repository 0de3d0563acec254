//! A real Kafka-protocol broker per test (tansu, started from `.tools/bin/tansu`, see
//! `scripts/lib.sh`), the same behind TLS (`TlsBroker`), and a reader of everything the relay
//! published.
//!
//! Each test gets its own broker on a free port, in memory: topics are fixed by the contract,
//! so tests sharing one broker would read each other's events, and a test may stop its broker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parking_infra::kafka::{self, Envelope};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::free_port;

fn tansu() -> PathBuf {
    let path = std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/tansu"));
    assert!(
        path.exists(),
        "no broker at {}: run scripts/broker.sh (or scripts/test.sh) first",
        path.display()
    );
    path
}

async fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{what} did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Broker {
    port: u16,
    /// The port it tells clients to use (its own, unless something stands in front of it).
    advertised: u16,
    process: Option<Child>,
}

impl Broker {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub async fn start() -> Self {
        let port = free_port();
        Self::start_advertising(port, port).await
    }

    async fn start_advertising(port: u16, advertised: u16) -> Self {
        let mut broker = Self {
            port,
            advertised,
            process: None,
        };
        broker.resume().await;
        broker
    }

    /// `KAFKA_BROKERS` for the app.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (it forgets everything: in-memory storage).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts it again on the same port.
    pub async fn resume(&mut self) {
        assert!(self.process.is_none(), "already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        let process = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        self.process = Some(process);
        wait_for_port(self.port, "broker").await;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A broker that clients reach only over TLS: tansu on a port of its own, advertising the port
/// of a TLS-terminating `socat` in front of it, whose certificate (for 127.0.0.1, self-signed,
/// made for the test with `openssl`) no client trusts unless told to.
pub struct TlsBroker {
    _broker: Broker,
    proxy: Child,
    port: u16,
    dir: PathBuf,
}

impl TlsBroker {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("parking-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .args(["-keyout", "key.pem", "-out", "cert.pem"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl (scripts/test.sh installs it)");
        assert!(made.success(), "openssl could not make a certificate");
        let port = free_port();
        let broker = Broker::start_advertising(free_port(), port).await;
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        );
        let proxy = Command::new("socat")
            .args([listen, format!("TCP:127.0.0.1:{}", broker.port)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (scripts/test.sh installs it)");
        wait_for_port(port, "the TLS proxy").await;
        Self {
            _broker: broker,
            proxy,
            port,
            dir,
        }
    }

    /// `KAFKA_BROKERS` for the app.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client properties that reach it: TLS, trusting its certificate when `trusted`.
    pub fn client_properties(&self, trusted: bool) -> Vec<(String, String)> {
        let mut properties = vec![("security.protocol".to_owned(), "ssl".to_owned())];
        if trusted {
            let ca = self.dir.join("cert.pem").display().to_string();
            properties.push(("ssl.ca.location".to_owned(), ca));
        }
        properties
    }

    /// The same, as a `KAFKA_CLIENT_PROPERTIES_FILE`.
    pub fn properties_file(&self, trusted: bool) -> PathBuf {
        let path = self.dir.join(format!("client-{trusted}.properties"));
        let text: String = self
            .client_properties(trusted)
            .iter()
            .map(|(key, value)| format!("{key}={value}\n"))
            .collect();
        std::fs::write(&path, format!("# made by TlsBroker\n{text}")).unwrap();
        path
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.proxy.kill();
        let _ = self.proxy.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One message as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub headers: HashMap<String, String>,
    pub envelope: Envelope,
}

/// Reads every event topic from the beginning until `expected` messages arrived (or `within`
/// passed), in each partition's order.
pub async fn read_all(brokers: &str, expected: usize, within: Duration) -> Vec<Received> {
    read(brokers, &[], expected, within, Duration::ZERO).await
}

/// [`read_all`] by a client with these librdkafka properties (TLS, for example).
pub async fn read_all_with(
    brokers: &str,
    properties: &[(String, String)],
    expected: usize,
    within: Duration,
) -> Vec<Received> {
    read(brokers, properties, expected, within, Duration::ZERO).await
}

/// [`read_all`], then two more seconds of reading: whatever more there is on the topics
/// (duplicates) is in the result too. However slow the broker, the wait for the expected
/// messages does not eat into the wait for extra ones.
pub async fn read_exactly(brokers: &str, expected: usize, within: Duration) -> Vec<Received> {
    read(brokers, &[], expected, within, Duration::from_secs(2)).await
}

async fn read(
    brokers: &str,
    properties: &[(String, String)],
    expected: usize,
    within: Duration,
    more: Duration,
) -> Vec<Received> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "parking-tests-reader")
        .set("enable.auto.commit", "false");
    for (key, value) in properties {
        config.set(key, value);
    }
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create().expect("consumer");
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .expect("metadata");
        let mut assignment = TopicPartitionList::new();
        for topic in metadata.topics() {
            if topic.name().starts_with("parking.events.") {
                for partition in topic.partitions() {
                    assignment
                        .add_partition_offset(topic.name(), partition.id(), Offset::Beginning)
                        .unwrap();
                }
            }
        }
        consumer.assign(&assignment).expect("assign");
        let mut deadline = Instant::now() + within;
        let mut looking_further = false;
        let mut received = Vec::new();
        loop {
            if received.len() >= expected && !looking_further {
                if more.is_zero() {
                    break;
                }
                // Everything expected is here: look `more` longer for anything beyond.
                looking_further = true;
                deadline = Instant::now() + more;
            }
            if Instant::now() >= deadline {
                break;
            }
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.expect("a message");
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| {
                            let value = h.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
                            (h.key.to_owned(), value.unwrap_or_default())
                        })
                        .collect()
                })
                .unwrap_or_default();
            received.push(Received {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                key: String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap(),
                headers,
                envelope: serde_json::from_slice(message.payload().expect("a value"))
                    .expect("an envelope"),
            });
        }
        drop(assignment);
        received
    })
    .await
    .unwrap()
}

/// How many of the store's events the relay publishes (those of the contract's aggregates).
pub async fn published_count(db: &sqlx::PgPool) -> usize {
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = ANY($1)")
            .bind(&kafka::PUBLISHED_AGGREGATES[..])
            .fetch_one(db)
            .await
            .unwrap();
    count as usize
}

/// Checks everything the contract promises about `received` against the event store, and that
/// every published event arrived exactly once, in each aggregate's order.
pub async fn assert_published_exactly_once(db: &sqlx::PgPool, received: &[Received]) {
    let mut conn = db.acquire().await.unwrap();
    let stored = crate::event_log(db)
        .read_after(&mut conn, 0, i64::MAX)
        .await
        .unwrap();
    let expected: HashMap<uuid::Uuid, Envelope> = stored
        .iter()
        .filter_map(kafka::envelope)
        .map(|e| (e.event_id, e))
        .collect();
    let mut seen = HashMap::new();
    let mut last_sequence: HashMap<&str, i64> = HashMap::new();
    for r in received {
        let e = &r.envelope;
        assert!(
            seen.insert(e.event_id, r.offset).is_none(),
            "{} arrived twice",
            e.event_id
        );
        let want = expected
            .get(&e.event_id)
            .unwrap_or_else(|| panic!("{} is not in the event store", e.event_id));
        assert_eq!(e, want, "envelope of {}", e.event_id);
        assert_eq!(r.topic, kafka::topic(&e.aggregate_type));
        assert_eq!(r.key, e.aggregate_id);
        let last = last_sequence.entry(&e.aggregate_id).or_default();
        assert_eq!(
            e.sequence,
            *last + 1,
            "{} out of order or with a gap",
            e.aggregate_id
        );
        *last = e.sequence;
        let h = &r.headers;
        assert_eq!(h["ce_specversion"], "1.0");
        assert_eq!(h["ce_id"], e.event_id.to_string());
        assert_eq!(h["ce_subject"], e.aggregate_id);
        assert_eq!(
            h["ce_type"],
            format!(
                "parking.{}.{}.v{}",
                e.aggregate_type, e.event_type, e.event_version
            )
        );
        assert_eq!(h["content-type"], "application/json");
        assert!(h["ce_source"].contains(&e.aggregate_type));
        assert!(h.contains_key("ce_time"));
    }
    assert_eq!(
        seen.len(),
        expected.len(),
        "every published event of the store arrived"
    );
}

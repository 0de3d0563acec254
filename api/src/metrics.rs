//! Prometheus metrics, served at `GET /metrics` (`routes::metrics`) in the OpenMetrics text
//! format.

use parking_commands::DeskStats;
use parking_projections::runtime::ConsumerStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route pattern (`/api/v1/lots/{lot_id}`), never the raw path: bounded cardinality.
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    /// `projection:<name>` or `relay:kafka`.
    consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    db_connections: Gauge,
    db_idle: Gauge,
    log_head: Gauge,
    consumer_lag: Family<ConsumerLabels, Gauge>,
    booking_received: Counter,
    booking_batches: Counter,
    booking_requests: Counter,
    booking_redecided: Counter,
    hub: crate::live::HubMetrics,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("parking");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let db_connections = Gauge::default();
        let db_idle = Gauge::default();
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Open database connections",
            db_connections.clone(),
        );
        registry.register(
            "db_pool_idle_connections",
            "Idle database connections",
            db_idle.clone(),
        );
        let log_head = Gauge::default();
        let consumer_lag = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "log_head_position",
            "Position of the last numbered event of the global log",
            log_head.clone(),
        );
        registry.register(
            "log_consumer_lag_events",
            "Events of the log a projection or the relay has yet to process",
            consumer_lag.clone(),
        );
        let (booking_received, booking_batches, booking_requests, booking_redecided) = (
            Counter::default(),
            Counter::default(),
            Counter::default(),
            Counter::default(),
        );
        registry.register(
            "booking_requests_received",
            "Booking requests handed to the booking desk (less those batched: waiting to be decided)",
            booking_received.clone(),
        );
        registry.register(
            "booking_batches",
            "Batches the booking desk decided and recorded together",
            booking_batches.clone(),
        );
        registry.register(
            "booking_batched_requests",
            "Booking requests in those batches (divided by the batches: the mean batch size)",
            booking_requests.clone(),
        );
        registry.register(
            "booking_batch_redecisions",
            "Times a booking batch was decided again because a slot's stream moved under it",
            booking_redecided.clone(),
        );
        let hub = crate::live::HubMetrics::default();
        registry.register(
            "ws_connections",
            "Open WebSocket connections (GET /ws)",
            hub.connections.clone(),
        );
        registry.register(
            "ws_messages_sent",
            "Messages written to WebSocket clients",
            hub.sent.clone(),
        );
        registry.register(
            "ws_clients_dropped",
            "WebSocket clients the server closed, by reason (too_slow: fell behind)",
            hub.dropped.clone(),
        );
        registry.register(
            "ws_hub_position",
            "Log position up to which the live hub has sent every message",
            hub.position.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            db_connections,
            db_idle,
            log_head,
            consumer_lag,
            booking_received,
            booking_batches,
            booking_requests,
            booking_redecided,
            hub,
        }
    }
}

impl Metrics {
    /// The live hub's metrics (registered here, counted by the hub).
    pub fn hub(&self) -> crate::live::HubMetrics {
        self.hub.clone()
    }

    pub fn observe_request(&self, method: &str, route: Option<String>, status: u16, seconds: f64) {
        let route = route.unwrap_or_else(|| "unmatched".to_owned());
        // Clients choose the method: only standard ones become label values.
        const STANDARD: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
        let method = STANDARD
            .into_iter()
            .find(|m| *m == method)
            .unwrap_or("OTHER")
            .to_owned();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.clone(),
                route: route.clone(),
            })
            .observe(seconds);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }
}

/// What `/metrics` reports besides the request counts, read at scrape time.
pub struct Readings {
    pub pool_size: u32,
    pub pool_idle: usize,
    /// The log's head and every consumer's lag; `None` when the database did not answer (the
    /// last values stay).
    pub log: Option<(i64, Vec<ConsumerStatus>)>,
    /// The booking desk's counts since the process started.
    pub desk: DeskStats,
}

impl Metrics {
    /// Every metric in the OpenMetrics text format, with `readings` taken in.
    pub fn render(&self, readings: Readings) -> Result<String, std::fmt::Error> {
        self.db_connections.set(i64::from(readings.pool_size));
        self.db_idle.set(readings.pool_idle as i64);
        if let Some((head, consumers)) = readings.log {
            self.log_head.set(head);
            for consumer in consumers {
                self.consumer_lag
                    .get_or_create(&ConsumerLabels {
                        consumer: consumer.consumer,
                    })
                    .set(consumer.lag);
            }
        }
        // The desk counts on its own; the counters catch up with it.
        let desk = readings.desk;
        for (counter, total) in [
            (&self.booking_received, desk.received),
            (&self.booking_batches, desk.batches),
            (&self.booking_requests, desk.bookings),
            (&self.booking_redecided, desk.redecided),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

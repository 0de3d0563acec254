//! # parking-infra
//!
//! Adapters between the domain and the outside world: configuration, telemetry, the Postgres
//! pool and migrations, the one statement that appends events (`append`), the event store
//! (postgres-es plus our own correct snapshots), the global commit-ordered log (`log`), the
//! relay to Kafka (`relay`, with the Kafka contract in `kafka`, and the log read back from
//! Kafka in `kafka_tail`), idempotency-key storage, upcasting, the clock, the master key (`keys`) and the
//! integrity of the history (`audit`).
//!
//! It must never hold business rules: whatever it stores or sends, the domain decided.
#![forbid(unsafe_code)]

pub mod append;
pub mod audit;
pub mod clock;
pub mod config;
pub mod db;
pub mod event_store;
pub mod history;
pub mod idempotency;
pub mod kafka;
pub mod kafka_tail;
pub mod keys;
pub mod log;
pub mod observations;
pub mod payments;
pub mod personal;
pub mod relay;
pub mod reviews;
pub mod stripe;
pub mod telemetry;
pub mod upcasting;

pub use clock::{Clock, SystemClock};
pub use config::Config;
pub use event_store::PgEventStore;
pub use log::{EventLog, LoggedEvent};

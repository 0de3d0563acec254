//! The global log: every event of every aggregate, in one commit-ordered sequence of
//! positions (`docs/adr/0009-global-position.md`).
//!
//! Appends number their own events (`append_all`, migration 0007): each takes the head row's
//! lock, inserts with the next positions and commits in one statement, and the next can take
//! the lock only once it is visible. So a position is visible only once every lower one is,
//! and readers simply read `global_position > checkpoint`: no transaction that is still open
//! can later appear below what they have read. Rows inserted without a position (by an older
//! version, or by hand) are numbered by the sequencer (`parking_sequence_events()`, under the
//! same lock), which [`EventLog::watch`] calls every second and a request calls when it finds
//! its work done by an earlier attempt.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use cqrs_es::{Aggregate, EventEnvelope};
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

use crate::event_store::event_id;
use crate::personal::DataKeys;

/// The channel the sequencer notifies (payload: the new head position).
pub const CHANNEL: &str = "parking_events";

/// How often the log is swept for events whose appender died before numbering them, and the
/// head re-read in case a notification was missed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// One event as the log holds it: stored form plus position, independent of its aggregate's
/// Rust type. Payload and metadata stay the JSON text they are stored as: the relay publishes
/// them as they are, and projections decode them straight into their aggregate's event type,
/// neither through a `serde_json::Value` first.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoggedEvent {
    pub global_position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    #[sqlx(json)]
    pub payload: Box<RawValue>,
    #[sqlx(json)]
    pub metadata: Box<RawValue>,
    pub recorded_at: DateTime<Utc>,
}

/// Equal when they are the same event stored with the same text.
impl PartialEq for LoggedEvent {
    fn eq(&self, other: &Self) -> bool {
        self.global_position == other.global_position
            && self.aggregate_type == other.aggregate_type
            && self.aggregate_id == other.aggregate_id
            && self.sequence == other.sequence
            && self.event_type == other.event_type
            && self.event_version == other.event_version
            && self.payload.get() == other.payload.get()
            && self.metadata.get() == other.metadata.get()
            && self.recorded_at == other.recorded_at
    }
}

impl LoggedEvent {
    /// The event's stable id (also the Kafka `ce_id`).
    pub fn event_id(&self) -> uuid::Uuid {
        event_id(
            &self.aggregate_type,
            &self.aggregate_id,
            self.sequence as usize,
        )
    }

    /// The event as its aggregate's type, upcast to the current version. An event of the
    /// current version is read straight from its text; an older one goes through its
    /// upcasters, which work on the JSON tree.
    pub fn decode<A: Aggregate>(&self) -> Result<EventEnvelope<A>, DecodeError> {
        let failed = |reason: String| DecodeError {
            position: self.global_position,
            reason,
        };
        let upcasters = crate::upcasting::for_aggregate(A::TYPE);
        if !(upcasters.iter()).any(|u| u.can_upcast(&self.event_type, &self.event_version)) {
            return Ok(EventEnvelope {
                aggregate_id: self.aggregate_id.clone(),
                sequence: self.sequence as usize,
                payload: serde_json::from_str(self.payload.get())
                    .map_err(|e| failed(e.to_string()))?,
                metadata: serde_json::from_str(self.metadata.get())
                    .map_err(|e| failed(e.to_string()))?,
            });
        }
        let tree = |raw: &RawValue| serde_json::from_str::<Value>(raw.get());
        let mut event = SerializedEvent::new(
            self.aggregate_id.clone(),
            self.sequence as usize,
            self.aggregate_type.clone(),
            self.event_type.clone(),
            self.event_version.clone(),
            tree(&self.payload).map_err(|e| failed(e.to_string()))?,
            tree(&self.metadata).map_err(|e| failed(e.to_string()))?,
        );
        for upcaster in upcasters {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                event = upcaster.upcast(event);
            }
        }
        EventEnvelope::<A>::try_from(event).map_err(|e| failed(e.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("event at position {position} does not decode: {reason}")]
pub struct DecodeError {
    pub position: i64,
    pub reason: String,
}

/// The select list and table of a [`LoggedEvent`], for the queries below.
macro_rules! select_logged_events {
    () => {
        "SELECT global_position, aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload, metadata, recorded_at
           FROM events"
    };
}
pub(crate) use select_logged_events;

/// The events after `position`, in order, at most `limit`, read on `db` (so a consumer can read
/// and record its progress in one transaction).
pub async fn read_after(
    db: &mut PgConnection,
    position: i64,
    limit: i64,
) -> Result<Vec<LoggedEvent>, sqlx::Error> {
    sqlx::query_as(concat!(
        select_logged_events!(),
        " WHERE global_position > $1 ORDER BY global_position LIMIT $2"
    ))
    .bind(position)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The events at positions `after < p <= up_to`, in log order, of one aggregate type if one
/// is given (for a consumer that only needs those, such as a projection's rebuild), and the
/// people's erasures (`UserErased`) too if `erasures`.
pub async fn read_between(
    db: &mut PgConnection,
    aggregate_type: Option<&str>,
    erasures: bool,
    after: i64,
    up_to: i64,
) -> Result<Vec<LoggedEvent>, sqlx::Error> {
    sqlx::query_as(concat!(
        select_logged_events!(),
        " WHERE global_position > $1 AND global_position <= $2
                AND ($3::text IS NULL OR aggregate_type = $3
                     OR ($4 AND aggregate_type = 'user' AND event_type = 'UserErased'))
              ORDER BY global_position"
    ))
    .bind(after)
    .bind(up_to)
    .bind(aggregate_type)
    .bind(erasures)
    .fetch_all(db)
    .await
}

/// Every event of the streams `ids` of `aggregate_type` numbered up to `up_to`, stream by
/// stream, each in sequence order (to fold them into their states at each event).
pub async fn read_streams<'c>(
    db: impl sqlx::PgExecutor<'c>,
    aggregate_type: &str,
    ids: &[String],
    up_to: i64,
) -> Result<Vec<LoggedEvent>, sqlx::Error> {
    sqlx::query_as(concat!(
        select_logged_events!(),
        // An event not numbered yet is beyond `up_to`. (Written as a COALESCE, the bound also
        // keeps the planner on the primary key: a bare `global_position <= $3` made it
        // intersect that with a scan of the whole log's position index.)
        " WHERE aggregate_type = $1 AND aggregate_id = ANY($2)
                AND COALESCE(global_position, $3 + 1) <= $3
              ORDER BY aggregate_id, sequence"
    ))
    .bind(aggregate_type)
    .bind(ids)
    .bind(up_to)
    .fetch_all(db)
    .await
}

/// Which of the streams `ids` of `aggregate_type` exist (have recorded an event).
pub async fn existing_streams<'c>(
    db: impl sqlx::PgExecutor<'c>,
    aggregate_type: &str,
    ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT aggregate_id FROM events
          WHERE aggregate_type = $1 AND aggregate_id = ANY($2) AND sequence = 1",
    )
    .bind(aggregate_type)
    .bind(ids)
    .fetch_all(db)
    .await
}

/// The log's head as the database has it now, read on `db` (a pool, or a connection that has
/// other work to do in the same session).
pub async fn recorded_head<'c>(db: impl sqlx::PgExecutor<'c>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT position FROM event_log_head")
        .fetch_one(db)
        .await
}

/// The log's handle: numbers events and tells everyone in this process how far the numbered
/// history reaches. Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    pool: PgPool,
    keys: DataKeys,
    head: Arc<watch::Sender<i64>>,
    batching: Arc<Batching>,
}

/// Group numbering: one sequencer call at a time per process, serving every caller whose
/// events committed before it started. Concurrent sequencers only queue on the head row (and
/// each holds it through its commit), so numbering per request would serialize all writers.
#[derive(Default)]
struct Batching {
    /// Tickets handed out: a caller takes one after its events committed.
    requested: AtomicU64,
    /// Every ticket up to this one is covered by a completed sequencer run.
    served: AtomicU64,
    /// Held by the caller running the sequencer; the others queue behind it.
    running: tokio::sync::Mutex<()>,
}

impl EventLog {
    /// The log of `pool`'s database, whose personal data `keys` reveal.
    pub fn new(pool: PgPool, keys: DataKeys) -> Self {
        Self {
            pool,
            keys,
            head: Arc::new(watch::Sender::new(0)),
            batching: Arc::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The data keys that seal personal fields on the way in and reveal them on the way out.
    pub fn keys(&self) -> &DataKeys {
        &self.keys
    }

    /// [`read_after`], revealed: what every consumer of the log reads.
    pub async fn read_after(
        &self,
        db: &mut PgConnection,
        position: i64,
        limit: i64,
    ) -> Result<Vec<LoggedEvent>, sqlx::Error> {
        let mut events = read_after(db, position, limit).await?;
        self.keys.reveal(&mut events).await?;
        Ok(events)
    }

    /// The log's head as the database has it now (every node's appends included), unlike
    /// [`EventLog::head`], which is what this process has learnt of.
    pub async fn recorded_head(&self) -> Result<i64, sqlx::Error> {
        recorded_head(&self.pool).await
    }

    /// Numbers every committed, unnumbered event; returns a head position that covers every
    /// event committed before the call. Concurrent calls share one sequencer run.
    pub async fn sequence(&self) -> Result<i64, sqlx::Error> {
        let batching = &self.batching;
        let ticket = batching.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = batching.running.lock().await;
        if batching.served.load(Ordering::SeqCst) >= ticket {
            // A run that started after our commit has finished: it numbered our events.
            return Ok(self.head());
        }
        // Every ticket taken so far belongs to a commit that is complete now, before the run
        // below takes its snapshot.
        let serving = batching.requested.load(Ordering::SeqCst);
        let head: i64 = sqlx::query_scalar("SELECT parking_sequence_events()")
            .fetch_one(&self.pool)
            .await?;
        self.observed(head);
        batching.served.fetch_max(serving, Ordering::SeqCst);
        Ok(head)
    }

    /// The highest position known to this process.
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }

    /// Changes whenever the known head moves forward.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// Tells this process that the log reached `head` (a sequencer run, a notification, or an
    /// append that returned it), so that its projectors look at once.
    pub fn observed(&self, head: i64) {
        self.head.send_if_modified(|known| {
            let moved = head > *known;
            if moved {
                *known = head;
            }
            moved
        });
    }

    /// Keeps the head current for the life of the process: listens to the sequencer's
    /// notifications (from every node) and, every second, numbers whatever a crashed appender
    /// left behind. Survives database outages (it reconnects).
    pub async fn watch(self) {
        let mut failures = 0u32;
        loop {
            if let Err(e) = self.listen().await {
                failures += 1;
                let pause = Duration::from_millis(250 * u64::from(failures.min(20)));
                tracing::warn!(error = %e, ?pause, "event log listener failed; reconnecting");
                tokio::time::sleep(pause).await;
            } else {
                failures = 0;
            }
        }
    }

    async fn listen(&self) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        // Anything numbered while we were not listening.
        self.sequence().await?;
        loop {
            match tokio::time::timeout(SWEEP_INTERVAL, listener.try_recv()).await {
                Ok(Ok(Some(notification))) => {
                    if let Ok(head) = notification.payload().parse() {
                        self.observed(head);
                    }
                }
                // The connection dropped: notifications may have been lost.
                Ok(Ok(None)) => {
                    self.sequence().await?;
                }
                Ok(Err(e)) => return Err(e),
                Err(_idle) => {
                    self.sequence().await?;
                }
            }
        }
    }
}

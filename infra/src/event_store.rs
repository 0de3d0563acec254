//! The event store: postgres-es's repository for the `events` table, with snapshots of our
//! own.
//!
//! cqrs-es 0.5.0's `PersistedEventStore` applies the events of a command twice when it
//! updates a snapshot (the `EventSink` already applied them to the aggregate in the context),
//! so its snapshots drift from the truth. Here the context's aggregate, which already holds
//! the new events, is stored as is; see `docs/adr/0002-event-store-and-snapshots.md`.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use cqrs_es::persist::{
    EventStoreAggregateContext, EventUpcaster, PersistedEventRepository, SerializedEvent,
};
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;

use crate::append::{append_all, AppendError, NewEvent};
use crate::personal::{self, DataKeys, SealError, Sealer};

type StoredRow = (i64, String, String, serde_json::Value, serde_json::Value);
/// An id to load, its snapshot (sequence, payload) if any, and the events after it.
type LoadRow = (
    String,
    Option<i64>,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
);

/// When to snapshot an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshots {
    /// Short-lived streams (a booking, a user) are always cheap to replay.
    Never,
    /// Snapshot after every `every` events. `schema` must be bumped whenever the aggregate's
    /// serialized state changes shape; snapshots of another schema are ignored.
    Every { every: usize, schema: i32 },
}

/// An `EventStore` for one aggregate type.
pub struct PgEventStore<A: Aggregate> {
    repo: Arc<PostgresEventRepository>,
    pool: PgPool,
    keys: DataKeys,
    snapshots: Snapshots,
    upcasters: Arc<Vec<Box<dyn EventUpcaster>>>,
    _aggregate: PhantomData<fn() -> A>,
}

// Not derived: that would require `A: Clone`; every field is shared.
impl<A: Aggregate> Clone for PgEventStore<A> {
    fn clone(&self) -> Self {
        Self {
            repo: self.repo.clone(),
            pool: self.pool.clone(),
            keys: self.keys.clone(),
            snapshots: self.snapshots,
            upcasters: self.upcasters.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> PgEventStore<A> {
    /// The store of `A`'s streams in `pool`'s database, sealing and revealing personal fields
    /// with `keys`.
    pub fn new(pool: PgPool, snapshots: Snapshots, keys: DataKeys) -> Self {
        Self {
            repo: Arc::new(PostgresEventRepository::new(pool.clone())),
            pool,
            keys,
            snapshots,
            upcasters: Arc::new(crate::upcasting::for_aggregate(A::TYPE)),
            _aggregate: PhantomData,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn keys(&self) -> &DataKeys {
        &self.keys
    }

    /// Reveals the personal fields inside `values` (payloads, or whole rows of them), if `A`'s
    /// events may carry any.
    async fn reveal(
        &self,
        values: Vec<&mut serde_json::Value>,
    ) -> Result<(), AggregateError<A::Error>> {
        if !personal::may_be_sealed(A::TYPE) {
            return Ok(());
        }
        self.keys
            .reveal_values(values)
            .await
            .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))
    }

    async fn reveal_serialized(
        &self,
        events: &mut [SerializedEvent],
    ) -> Result<(), AggregateError<A::Error>> {
        self.reveal(events.iter_mut().map(|e| &mut e.payload).collect())
            .await
    }

    /// Replaces the upcasters of [`crate::upcasting::for_aggregate`] (for tests of upcasting).
    pub fn with_upcasters(mut self, upcasters: Vec<Box<dyn EventUpcaster>>) -> Self {
        self.upcasters = Arc::new(upcasters);
        self
    }

    /// The events of one stream after `sequence`, in order, read on `db`, so that a caller
    /// holding a transaction needs no second connection.
    pub async fn events_after(
        &self,
        db: &mut sqlx::PgConnection,
        aggregate_id: &str,
        sequence: usize,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let rows: Vec<StoredRow> = sqlx::query_as(
            "SELECT sequence, event_type, event_version, payload, metadata FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(sequence as i64)
        .fetch_all(db)
        .await
        .map_err(|e| AggregateError::DatabaseConnectionError(Box::new(e)))?;
        let mut events: Vec<SerializedEvent> = rows
            .into_iter()
            .map(|(sequence, event_type, event_version, payload, metadata)| {
                let (id, kind) = (aggregate_id.to_owned(), A::TYPE.to_owned());
                SerializedEvent::new(
                    id,
                    sequence as usize,
                    kind,
                    event_type,
                    event_version,
                    payload,
                    metadata,
                )
            })
            .collect();
        self.reveal_serialized(&mut events).await?;
        self.deserialize(events)
    }

    fn deserialize(
        &self,
        events: Vec<SerializedEvent>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        events
            .into_iter()
            .map(|event| {
                let event = self.upcasters.iter().fold(event, |event, upcaster| {
                    if upcaster.can_upcast(&event.event_type, &event.event_version) {
                        upcaster.upcast(event)
                    } else {
                        event
                    }
                });
                EventEnvelope::<A>::try_from(event).map_err(AggregateError::from)
            })
            .collect()
    }

    /// Loads several aggregates for commands in one round trip: for each id, in the order
    /// given, its latest snapshot of the current schema (if any) and the events after it. An
    /// id without events loads as the empty aggregate at sequence 0.
    pub async fn load_many(
        &self,
        aggregate_ids: &[String],
    ) -> Result<Vec<EventStoreAggregateContext<A>>, AggregateError<A::Error>> {
        if aggregate_ids.is_empty() {
            return Ok(Vec::new());
        }
        // A schema no snapshot has: with snapshots off, every stream is replayed whole.
        let schema = match self.snapshots {
            Snapshots::Every { schema, .. } => schema,
            Snapshots::Never => i32::MIN,
        };
        let mut rows: Vec<LoadRow> = sqlx::query_as(
            "SELECT ids.id, s.sequence, s.payload,
                    (SELECT json_agg(json_build_array(e.sequence, e.event_type, e.event_version,
                                                      e.payload, e.metadata) ORDER BY e.sequence)
                       FROM events e
                      WHERE e.aggregate_type = $1 AND e.aggregate_id = ids.id
                        AND e.sequence > COALESCE(s.sequence, 0))
               FROM UNNEST($2::text[]) WITH ORDINALITY AS ids(id, n)
               LEFT JOIN aggregate_snapshots s
                      ON s.aggregate_type = $1 AND s.aggregate_id = ids.id AND s.schema_version = $3
              ORDER BY ids.n",
        )
        .bind(A::TYPE)
        .bind(aggregate_ids)
        .bind(schema)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| AggregateError::DatabaseConnectionError(Box::new(e)))?;
        self.reveal(rows.iter_mut().filter_map(|row| row.3.as_mut()).collect())
            .await?;
        let mut loaded = Vec::with_capacity(rows.len());
        for (aggregate_id, snapshot_sequence, snapshot, tail) in rows {
            let from_snapshot = snapshot_sequence.zip(snapshot).and_then(|(sequence, payload)| {
                serde_json::from_value::<A>(payload)
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, aggregate_id, "snapshot does not deserialize; replaying")
                    })
                    .ok()
                    .map(|aggregate| (aggregate, sequence as usize))
            });
            let context = match from_snapshot {
                Some((aggregate, from)) => self.replay_onto(aggregate_id, aggregate, from, tail)?,
                // No snapshot, or an unusable one (its tail then starts after it): replay all.
                None if snapshot_sequence.is_some() => self.replay(aggregate_id).await?,
                None => self.replay_onto(aggregate_id, A::default(), 0, tail)?,
            };
            loaded.push(context);
        }
        Ok(loaded)
    }

    /// The whole stream replayed from its first event.
    async fn replay(
        &self,
        aggregate_id: String,
    ) -> Result<EventStoreAggregateContext<A>, AggregateError<A::Error>> {
        let mut events = self.repo.get_events::<A>(&aggregate_id).await?;
        self.reveal_serialized(&mut events).await?;
        self.apply_all(aggregate_id, A::default(), 0, events)
    }

    /// `aggregate` as of `from` with `tail` (the events after it, as `json_agg` returns them)
    /// applied.
    fn replay_onto(
        &self,
        aggregate_id: String,
        aggregate: A,
        from: usize,
        tail: Option<serde_json::Value>,
    ) -> Result<EventStoreAggregateContext<A>, AggregateError<A::Error>> {
        let rows: Vec<StoredRow> = match tail {
            None => Vec::new(),
            Some(tail) => serde_json::from_value(tail)
                .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?,
        };
        let events = rows
            .into_iter()
            .map(|(sequence, event_type, event_version, payload, metadata)| {
                SerializedEvent::new(
                    aggregate_id.clone(),
                    sequence as usize,
                    A::TYPE.to_owned(),
                    event_type,
                    event_version,
                    payload,
                    metadata,
                )
            })
            .collect();
        self.apply_all(aggregate_id, aggregate, from, events)
    }

    fn apply_all(
        &self,
        aggregate_id: String,
        mut aggregate: A,
        from: usize,
        events: Vec<SerializedEvent>,
    ) -> Result<EventStoreAggregateContext<A>, AggregateError<A::Error>> {
        let mut current_sequence = from;
        for envelope in self.deserialize(events)? {
            current_sequence = envelope.sequence;
            aggregate.apply(envelope.payload);
        }
        Ok(EventStoreAggregateContext {
            aggregate_id,
            aggregate,
            current_sequence,
            current_snapshot: (from > 0).then_some(from),
        })
    }

    /// Stores `aggregate` as the state after `sequence`. A newer snapshot is never replaced by
    /// an older one. Failure only costs a longer replay next time, so it is logged, not raised.
    async fn save_snapshot(&self, aggregate_id: &str, aggregate: &A, sequence: usize, schema: i32) {
        // Printed straight into the statement's buffer, not built as a `serde_json::Value` first:
        // a slot's snapshot is its whole calendar. (An aggregate that cannot be printed fails
        // the statement as an encoding error, logged below.)
        let saved = sqlx::query(
            "INSERT INTO aggregate_snapshots (aggregate_type, aggregate_id, sequence, schema_version, payload)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
                SET sequence = EXCLUDED.sequence, schema_version = EXCLUDED.schema_version,
                    payload = EXCLUDED.payload, taken_at = now()
              WHERE aggregate_snapshots.sequence < EXCLUDED.sequence
                 OR aggregate_snapshots.schema_version <> EXCLUDED.schema_version",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(sequence as i64)
        .bind(schema)
        .bind(sqlx::types::Json(aggregate))
        .execute(&self.pool)
        .await;
        if let Err(e) = saved {
            tracing::warn!(error = %e, aggregate_id, "snapshot write failed");
        }
    }
}

impl<A: Aggregate> EventStore<A> for PgEventStore<A> {
    type AC = EventStoreAggregateContext<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let mut events = self.repo.get_events::<A>(aggregate_id).await?;
        self.reveal_serialized(&mut events).await?;
        self.deserialize(events)
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Self::AC, AggregateError<A::Error>> {
        let mut loaded = self.load_many(&[aggregate_id.to_owned()]).await?;
        loaded
            .pop()
            .ok_or_else(|| AggregateError::UnexpectedError("no row for a loaded id".into()))
    }

    /// Appends `events` after the context's sequence; a concurrent append of the same
    /// sequence fails the whole batch with `AggregateConflict` (primary key).
    ///
    /// `context.aggregate` must already reflect `events`, as it does after
    /// `Aggregate::handle` wrote them through its `EventSink`.
    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let mut pending = Pending::new(events, context, metadata)?;
        if pending.envelopes.is_empty() {
            return Ok(Vec::new());
        }
        pending
            .seal(&self.keys)
            .await
            .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?;
        append_all(&self.pool, pending.serialized.iter())
            .await
            .map_err(|e| match e {
                AppendError::Conflict => AggregateError::AggregateConflict,
                AppendError::Database(e) => AggregateError::DatabaseConnectionError(e),
            })?;
        Ok(self.recorded(pending).await)
    }
}

/// Events one command decided for one stream, ready to append (alone with
/// `EventStore::commit`, or together with other streams' with [`append_all`] or an
/// [`Appender`](crate::append::Appender)).
pub struct Pending<A: Aggregate> {
    context: EventStoreAggregateContext<A>,
    envelopes: Vec<EventEnvelope<A>>,
    serialized: Vec<NewEvent>,
}

impl<A: Aggregate> Pending<A> {
    /// Seals the personal fields of the events to append (`personal`).
    pub async fn seal(&mut self, keys: &DataKeys) -> Result<(), SealError> {
        if !personal::may_be_sealed(A::TYPE) {
            return Ok(());
        }
        keys.seal(&mut self.serialized).await
    }

    /// [`Pending::seal`] with keys resolved beforehand.
    pub fn seal_with(&mut self, sealer: &Sealer) -> Result<(), SealError> {
        if !personal::may_be_sealed(A::TYPE) {
            return Ok(());
        }
        sealer.seal(&mut self.serialized)
    }

    pub fn envelopes(&self) -> &[EventEnvelope<A>] {
        &self.envelopes
    }

    pub fn serialized(&self) -> &[NewEvent] {
        &self.serialized
    }

    /// The aggregate as it will be once these events are recorded, for deciding a further
    /// command on the same stream before they are.
    pub fn after(&self) -> EventStoreAggregateContext<A>
    where
        A: Clone,
    {
        EventStoreAggregateContext {
            aggregate_id: self.context.aggregate_id.clone(),
            aggregate: self.context.aggregate.clone(),
            current_sequence: self.context.current_sequence + self.envelopes.len(),
            current_snapshot: self.context.current_snapshot,
        }
    }
}

impl<A: Aggregate> Pending<A> {
    /// Numbers `events` after the context's sequence and serializes them. `context.aggregate`
    /// must already reflect them, as it does after `Aggregate::handle` wrote them through its
    /// `EventSink`.
    pub fn new(
        events: Vec<A::Event>,
        context: EventStoreAggregateContext<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Pending<A>, AggregateError<A::Error>> {
        let first = context.current_sequence;
        let envelopes: Vec<EventEnvelope<A>> = events
            .into_iter()
            .enumerate()
            .map(|(i, payload)| EventEnvelope {
                aggregate_id: context.aggregate_id.clone(),
                sequence: first + i + 1,
                payload,
                metadata: metadata.clone(),
            })
            .collect();
        let serialized = envelopes
            .iter()
            .map(NewEvent::of)
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?;
        Ok(Pending {
            context,
            envelopes,
            serialized,
        })
    }
}

impl<A: Aggregate> PgEventStore<A> {
    /// After `pending` was appended: takes a snapshot if one is due; returns its envelopes.
    pub async fn recorded(&self, pending: Pending<A>) -> Vec<EventEnvelope<A>> {
        let Pending {
            context, envelopes, ..
        } = pending;
        if let Snapshots::Every { every, schema } = self.snapshots {
            let first = context.current_sequence;
            let last = first + envelopes.len();
            if last / every > first / every {
                self.save_snapshot(&context.aggregate_id, &context.aggregate, last, schema)
                    .await;
            }
        }
        envelopes
    }
}

/// The id of one stored event: a name-based UUID of `(aggregate_type, aggregate_id, sequence)`,
/// which identify it uniquely and for ever, so the id needs no column and survives replays.
pub fn event_id(aggregate_type: &str, aggregate_id: &str, sequence: usize) -> uuid::Uuid {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x2b0e_51c4_7a3d_4e8f_a1b2_9c8d_7e6f_5a4b);
    let name = format!("{aggregate_type}/{aggregate_id}/{sequence}");
    uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes())
}

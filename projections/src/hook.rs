//! Runs projections after each commit, as cqrs-es queries.
//!
//! Commands on one aggregate may finish in any order, so their after-commit updates can race.
//! Each projection therefore keeps, per stream, the sequence it has applied
//! (`rm_stream_checkpoints`), takes that row's lock, and applies every event after it in order,
//! reading from the event store whatever an earlier, slower update has not applied yet. A late
//! update finds its events applied and does nothing; a failed one is repaired by the next
//! event of the stream.

use async_trait::async_trait;
use cqrs_es::{Aggregate, EventEnvelope, Query};
use parking_infra::event_store::Snapshots;
use parking_infra::PgEventStore;
use sqlx::{PgConnection, PgPool};

/// Applies one aggregate type's events to read-model tables.
#[async_trait]
pub trait Projection<A: Aggregate>: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn apply(
        &self,
        db: &mut PgConnection,
        event: &EventEnvelope<A>,
    ) -> Result<(), sqlx::Error>;
}

/// A projection bound to a pool: the `Query` the command buses call after committing.
pub struct ReadModel<A: Aggregate, P> {
    pool: PgPool,
    store: PgEventStore<A>,
    projection: P,
}

impl<A: Aggregate + 'static, P: Projection<A>> ReadModel<A, P> {
    pub fn new(pool: PgPool, projection: P) -> Self {
        Self {
            store: PgEventStore::new(pool.clone(), Snapshots::Never),
            pool,
            projection,
        }
    }

    pub fn boxed(pool: PgPool, projection: P) -> Box<dyn Query<A>> {
        Box::new(Self::new(pool, projection))
    }

    /// Applies `events`, and whatever of the stream precedes them unapplied. With no events,
    /// applies whatever the stream has that this projection has not (a repair).
    async fn catch_up(
        &self,
        aggregate_id: &str,
        events: &[EventEnvelope<A>],
    ) -> Result<(), BoxError> {
        let mut tx = self.pool.begin().await?;
        let key = (self.projection.name(), A::TYPE, aggregate_id);
        sqlx::query(
            "INSERT INTO rm_stream_checkpoints (projection, aggregate_type, aggregate_id, sequence)
             VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
        )
        .bind(key.0)
        .bind(key.1)
        .bind(key.2)
        .execute(&mut *tx)
        .await?;
        let applied: i64 = sqlx::query_scalar(
            "SELECT sequence FROM rm_stream_checkpoints
              WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3 FOR UPDATE",
        )
        .bind(key.0)
        .bind(key.1)
        .bind(key.2)
        .fetch_one(&mut *tx)
        .await?;
        let applied = applied as usize;
        if events.last().is_some_and(|last| applied >= last.sequence) {
            return Ok(()); // a later update already applied these
        }
        let fetched;
        let pending = if events
            .first()
            .is_some_and(|first| first.sequence == applied + 1)
        {
            events
        } else {
            fetched = self
                .store
                .events_after(&mut tx, aggregate_id, applied)
                .await
                .map_err(|e| e.to_string())?;
            fetched.as_slice()
        };
        if pending.is_empty() {
            return Ok(()); // nothing missing
        }
        for event in pending {
            self.projection.apply(&mut tx, event).await?;
        }
        let reached = pending.last().map_or(applied, |e| e.sequence);
        sqlx::query(
            "UPDATE rm_stream_checkpoints SET sequence = $4
              WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3",
        )
        .bind(key.0)
        .bind(key.1)
        .bind(key.2)
        .bind(reached as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[async_trait]
impl<A, P> Query<A> for ReadModel<A, P>
where
    A: Aggregate + 'static,
    P: Projection<A>,
{
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<A>]) {
        if let Err(e) = self.catch_up(aggregate_id, events).await {
            // The events are committed; only this view is behind until the stream's next event.
            tracing::error!(
                projection = self.projection.name(),
                aggregate = A::TYPE,
                aggregate_id,
                error = %e,
                "read model update failed"
            );
        }
    }
}

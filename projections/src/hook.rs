//! Runs projections after each commit, as cqrs-es queries.
//!
//! Each batch of events from one command is applied in one transaction. Updates are
//! idempotent (rows carry the sequence last applied), which is what lets a checkpointed
//! projector replay them later without double counting.

use async_trait::async_trait;
use cqrs_es::{Aggregate, EventEnvelope, Query};
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
pub struct ReadModel<P> {
    pool: PgPool,
    projection: P,
}

impl<P> ReadModel<P> {
    pub fn new(pool: PgPool, projection: P) -> Self {
        Self { pool, projection }
    }

    pub fn boxed<A>(pool: PgPool, projection: P) -> Box<dyn Query<A>>
    where
        A: Aggregate,
        P: Projection<A>,
    {
        Box::new(Self::new(pool, projection))
    }
}

#[async_trait]
impl<A, P> Query<A> for ReadModel<P>
where
    A: Aggregate,
    P: Projection<A>,
{
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<A>]) {
        let applied = async {
            let mut tx = self.pool.begin().await?;
            for event in events {
                self.projection.apply(&mut tx, event).await?;
            }
            tx.commit().await
        }
        .await;
        if let Err(e) = applied {
            // The events are committed; only this view is behind. Rebuilding it repairs it.
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

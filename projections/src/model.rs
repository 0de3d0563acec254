//! What a projection is: a named consumer of the global log that writes read-model tables.

use std::marker::PhantomData;

use async_trait::async_trait;
use cqrs_es::{Aggregate, EventEnvelope};
use parking_infra::log::DecodeError;
use parking_infra::LoggedEvent;
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("event source: {0}")]
    Source(String),
}

/// Applies one aggregate type's events to read-model tables. Written per aggregate type, with
/// the events decoded; [`projection`] turns it into a [`ReadModel`] the runtime runs.
#[async_trait]
pub trait Projection<A: Aggregate>: Send + Sync + 'static {
    /// The projection's name: its checkpoint, its CLI name. Never change it.
    fn name(&self) -> &'static str;
    /// The tables it owns, which nothing else writes; dependents first is not required.
    fn tables(&self) -> &'static [&'static str];

    /// Whether it uses events of this type; the others are passed by without being decoded.
    fn handles(&self, event_type: &str) -> bool {
        let _ = event_type;
        true
    }
    async fn apply(
        &self,
        db: &mut PgConnection,
        event: &EventEnvelope<A>,
    ) -> Result<(), sqlx::Error>;

    /// Applies several events, in log order. A projection may override it to write them with
    /// fewer statements (a rebuild passes up to thousands at once); the result must be the
    /// same as applying them one by one.
    async fn apply_batch(
        &self,
        db: &mut PgConnection,
        events: &[EventEnvelope<A>],
    ) -> Result<(), sqlx::Error> {
        for event in events {
            self.apply(db, event).await?;
        }
        Ok(())
    }

    /// Whether its tables hold personal data (an e-mail address, a name, a vehicle number, a
    /// comment): then it is offered every person's `UserErased` event, through [`erase`].
    ///
    /// [`erase`]: Projection::erase
    fn holds_personal_data(&self) -> bool {
        false
    }

    /// Replaces the personal data of `person` in its tables by `ERASED`. Their data key is
    /// destroyed already, so a rebuild from history reads `ERASED` in the same places.
    async fn erase(&self, db: &mut PgConnection, person: Uuid) -> Result<(), sqlx::Error> {
        let _ = (db, person);
        Ok(())
    }
}

/// The person a `UserErased` event erased.
fn erased_person(event: &LoggedEvent) -> Option<Uuid> {
    (event.aggregate_type == "user" && event.event_type == "UserErased")
        .then(|| event.aggregate_id.parse().ok())
        .flatten()
}

/// A projection as the runtime sees it: it is offered every event of the log, in order, and
/// writes on the connection of the transaction that also records its checkpoint.
#[async_trait]
pub trait ReadModel: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn tables(&self) -> &'static [&'static str];
    /// The one aggregate type whose events it reads, if it reads only one: the others pass it
    /// by (a rebuild does not even read them).
    fn aggregate_type(&self) -> Option<&'static str> {
        None
    }

    /// Whether it reads `UserErased` events whatever its [`ReadModel::aggregate_type`].
    fn reads_erasures(&self) -> bool {
        false
    }
    async fn apply(
        &self,
        db: &mut PgConnection,
        event: &LoggedEvent,
    ) -> Result<(), ProjectionError>;

    /// Applies consecutive events of the log, in order.
    async fn apply_batch(
        &self,
        db: &mut PgConnection,
        events: &[&LoggedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(db, event).await?;
        }
        Ok(())
    }
}

/// The [`ReadModel`] of a projection of `A`'s events; other aggregates' events pass by.
pub fn projection<A, P>(projection: P) -> Box<dyn ReadModel>
where
    A: Aggregate + 'static,
    P: Projection<A>,
{
    Box::new(OfAggregate {
        projection,
        _aggregate: PhantomData::<fn() -> A>,
    })
}

struct OfAggregate<A, P> {
    projection: P,
    _aggregate: PhantomData<fn() -> A>,
}

#[async_trait]
impl<A, P> ReadModel for OfAggregate<A, P>
where
    A: Aggregate + 'static,
    P: Projection<A>,
{
    fn name(&self) -> &'static str {
        self.projection.name()
    }

    fn tables(&self) -> &'static [&'static str] {
        self.projection.tables()
    }

    fn aggregate_type(&self) -> Option<&'static str> {
        Some(A::TYPE)
    }

    fn reads_erasures(&self) -> bool {
        self.projection.holds_personal_data()
    }

    /// A `UserErased` event reaches the projection as [`Projection::erase`] only.
    async fn apply(
        &self,
        db: &mut PgConnection,
        event: &LoggedEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_batch(db, &[event]).await
    }

    async fn apply_batch(
        &self,
        db: &mut PgConnection,
        events: &[&LoggedEvent],
    ) -> Result<(), ProjectionError> {
        let mut mine = Vec::new();
        for event in events {
            if let Some(person) = erased_person(event) {
                if self.projection.holds_personal_data() {
                    // What came before it first, in log order.
                    if !mine.is_empty() {
                        self.projection.apply_batch(db, &mine).await?;
                        mine.clear();
                    }
                    self.projection.erase(db, person).await?;
                }
            } else if event.aggregate_type == A::TYPE && self.projection.handles(&event.event_type)
            {
                mine.push(event.decode::<A>()?);
            }
        }
        if !mine.is_empty() {
            self.projection.apply_batch(db, &mine).await?;
        }
        Ok(())
    }
}

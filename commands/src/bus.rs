//! Executes commands on one aggregate type.
//!
//! This is cqrs-es's `CqrsFramework::execute_with_metadata` (load, handle, commit) with the
//! differences the rest of the system needs, see `docs/adr/0003-command-bus.md`: it returns
//! the committed envelopes; it retries a command whose commit lost an optimistic-concurrency
//! race, on a freshly loaded aggregate, so the rules are always checked against the latest
//! state (`retry`); and instead of running queries in-process it records in the command's
//! context the log's head its append returned, the request's position (ADR 0009). Read models
//! follow the log on their own (`parking-projections`); a response that must show its writes
//! waits for them.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, EventEnvelope, EventStore};
use parking_domain::RuleError;
use parking_infra::append::{append_all, AppendError};
use parking_infra::event_store::Pending;
use parking_infra::PgEventStore;

use crate::context::CommandContext;
use crate::error::{from_aggregate, from_sealing, CommandError};
use crate::retry;

/// An aggregate loaded for a command, with the sequence its next event will follow.
pub type Loaded<A> = cqrs_es::persist::EventStoreAggregateContext<A>;

pub struct Bus<A: Aggregate> {
    store: PgEventStore<A>,
    services: A::Services,
}

impl<A: Aggregate> Clone for Bus<A>
where
    A::Services: Clone,
{
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            services: self.services.clone(),
        }
    }
}

impl<A> Bus<A>
where
    A: Aggregate,
    A::Command: Clone,
    A::Error: RuleError,
{
    pub fn new(store: PgEventStore<A>, services: A::Services) -> Self {
        Self { store, services }
    }

    /// The aggregate's current state, straight from the event store.
    pub async fn load(&self, aggregate_id: &str) -> Result<A, CommandError> {
        Ok(self.load_for_command(aggregate_id).await?.aggregate)
    }

    /// The aggregate as loaded for a command: pass it to [`Bus::decide`] to decide on this very
    /// state instead of loading it again.
    pub async fn load_for_command(&self, aggregate_id: &str) -> Result<Loaded<A>, CommandError> {
        self.store
            .load_aggregate(aggregate_id)
            .await
            .map_err(from_aggregate)
    }

    /// Several aggregates loaded for commands, in one round trip, in the order of `ids`.
    pub async fn load_many(&self, ids: &[String]) -> Result<Vec<Loaded<A>>, CommandError> {
        self.store.load_many(ids).await.map_err(from_aggregate)
    }

    /// Whether `command` would be accepted now, without recording anything.
    pub async fn check(&self, aggregate_id: &str, command: A::Command) -> Result<(), CommandError> {
        let mut aggregate = self.load(aggregate_id).await?;
        let sink = EventSink::default();
        aggregate
            .handle(command, &self.services, &sink)
            .await
            .map_err(CommandError::from)
    }

    /// Runs `command`; returns the events it recorded (none when the command changed nothing).
    #[tracing::instrument(level = "debug", skip_all, fields(aggregate = A::TYPE, id = aggregate_id))]
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<Vec<EventEnvelope<A>>, CommandError> {
        self.run(aggregate_id, None, command, ctx).await
    }

    /// [`Bus::execute`] for an aggregate that is most likely new (a fresh id): the first
    /// attempt decides on the empty aggregate without reading the store. Should the stream
    /// exist after all, the append conflicts and the retry loads it.
    pub async fn execute_new(
        &self,
        aggregate_id: &str,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<Vec<EventEnvelope<A>>, CommandError> {
        self.run(aggregate_id, Some(Self::fresh(aggregate_id)), command, ctx)
            .await
    }

    /// A stream assumed new: empty, nothing read.
    pub fn fresh(aggregate_id: &str) -> Loaded<A> {
        Loaded {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: A::default(),
            current_sequence: 0,
            current_snapshot: None,
        }
    }

    /// Decides `command` on `loaded` without recording anything: the events to append,
    /// together with other streams' (`parking_infra::append::append_all`), after which
    /// [`Bus::recorded`] finishes. For process steps that must record several aggregates at
    /// once; they handle conflicts (retry) themselves.
    pub async fn decide(
        &self,
        loaded: Loaded<A>,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<Pending<A>, CommandError> {
        let mut pending = decide(loaded, command, &self.services, ctx).await?;
        (pending.seal(self.store.keys()).await).map_err(from_sealing)?;
        Ok(pending)
    }

    /// After [`Bus::decide`]'s events were appended (the log's head then was `head`):
    /// snapshots, and the request's position. Returns the recorded envelopes.
    pub async fn recorded(
        &self,
        pending: Pending<A>,
        head: i64,
        ctx: &CommandContext,
    ) -> Vec<EventEnvelope<A>> {
        let recorded = self.store.recorded(pending).await;
        ctx.settled_at(head);
        recorded
    }

    async fn run(
        &self,
        aggregate_id: &str,
        mut loaded: Option<Loaded<A>>,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<Vec<EventEnvelope<A>>, CommandError> {
        for attempt in 1.. {
            let context = match loaded.take() {
                Some(context) => context,
                None => self.load_for_command(aggregate_id).await?,
            };
            let pending = self.decide(context, command.clone(), ctx).await?;
            if pending.envelopes().is_empty() {
                return Ok(Vec::new());
            }
            match append_all(self.store.pool(), pending.serialized()).await {
                Ok(head) => return Ok(self.recorded(pending, head, ctx).await),
                Err(AppendError::Conflict) => match retry::after_lost_race(attempt) {
                    Some(pause) => {
                        tracing::debug!(attempt, "lost a concurrent append; retrying");
                        tokio::time::sleep(pause).await;
                    }
                    None => break,
                },
                Err(AppendError::Database(e)) => return Err(CommandError::Infrastructure(e)),
            }
        }
        Err(CommandError::Contention {
            aggregate: A::TYPE,
            id: aggregate_id.to_owned(),
        })
    }
}

/// Decides `command` on `loaded` with `services`, recording nothing: the events it would
/// append, numbered after the stream's sequence, and the aggregate as they leave it.
pub(crate) async fn decide<A: Aggregate>(
    mut loaded: Loaded<A>,
    command: A::Command,
    services: &A::Services,
    ctx: &CommandContext,
) -> Result<Pending<A>, CommandError>
where
    A::Error: RuleError,
{
    let sink = EventSink::default();
    loaded
        .aggregate
        .handle(command, services, &sink)
        .await
        .map_err(CommandError::from)?;
    Pending::new(sink.collect().await, loaded, ctx.metadata()).map_err(from_aggregate)
}

//! The projector runtime: every projection follows the global log on its own, in position
//! order, and records how far it got in the same transaction as the rows it wrote
//! (`log_checkpoints`), so a crash can neither skip an event nor apply one twice.
//!
//! Several processes may run the same projections (every API node does): each batch starts
//! by locking the projection's checkpoint row, so only one of them applies a given batch and
//! the others continue from where it stopped.
//!
//! Reads that must show a write wait with [`Projections::wait_for`] until every projection
//! has passed the write's position (`X-Event-Position` / `X-Min-Position`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_infra::log::read_after;
use parking_infra::{EventLog, LoggedEvent};
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

use crate::model::{ProjectionError, ReadModel};

/// Events applied per transaction.
const BATCH: i64 = 1000;
/// How often a waiting reader also looks at the recorded checkpoints (progress made by
/// another process).
const CHECKPOINT_POLL: Duration = Duration::from_millis(250);
/// How long an idle projection waits for news before looking at the log anyway.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The checkpoint row of a projection.
pub fn consumer(projection: &str) -> String {
    format!("projection:{projection}")
}

/// Where a projection's events come from. The event-store tail is the one source built so
/// far; a Kafka consumer group is the other one the architecture plans (docs/adr/0010).
#[async_trait]
pub trait EventSource: Send + Sync + 'static {
    /// The events after `position`, in log order, at most `limit`; none if there are none yet.
    async fn read(
        &self,
        db: &mut PgConnection,
        position: i64,
        limit: i64,
    ) -> Result<Vec<LoggedEvent>, sqlx::Error>;

    /// Returns when there may be events after `position`, or after `patience` at the latest.
    async fn wait(&self, position: i64, patience: Duration);
}

/// The event store's ordered tail, woken by the sequencer.
pub struct StoreTail {
    log: EventLog,
}

impl StoreTail {
    pub fn shared(log: EventLog) -> Arc<dyn EventSource> {
        Arc::new(Self { log })
    }
}

#[async_trait]
impl EventSource for StoreTail {
    async fn read(
        &self,
        db: &mut PgConnection,
        position: i64,
        limit: i64,
    ) -> Result<Vec<LoggedEvent>, sqlx::Error> {
        read_after(db, position, limit).await
    }

    async fn wait(&self, position: i64, patience: Duration) {
        let mut head = self.log.subscribe();
        let _ = tokio::time::timeout(patience, head.wait_for(|head| *head > position)).await;
    }
}

/// A read model that has not reached a position in time.
#[derive(Debug, thiserror::Error)]
#[error("read model {projection} is at position {at}, not yet at {wanted}")]
pub struct Lagging {
    pub projection: &'static str,
    pub at: i64,
    pub wanted: i64,
}

/// The set of projections this process runs.
#[derive(Clone)]
pub struct Projections {
    pool: PgPool,
    runners: Arc<Vec<Arc<Runner>>>,
}

struct Runner {
    model: Box<dyn ReadModel>,
    consumer: String,
    applied: watch::Sender<i64>,
}

impl Projections {
    pub fn new(pool: PgPool, models: Vec<Box<dyn ReadModel>>) -> Self {
        let runners = models
            .into_iter()
            .map(|model| {
                Arc::new(Runner {
                    consumer: consumer(model.name()),
                    model,
                    applied: watch::Sender::new(0),
                })
            })
            .collect();
        Self {
            pool,
            runners: Arc::new(runners),
        }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.runners.iter().map(|r| r.model.name()).collect()
    }

    /// Runs every projection in the background, for the life of the process.
    pub fn start(&self, source: Arc<dyn EventSource>) {
        for runner in self.runners.iter() {
            tokio::spawn(runner.clone().run(self.pool.clone(), source.clone()));
        }
    }

    /// Applies everything the log holds now to every projection, then returns the position
    /// they all reached (for the CLI and for tests that drive projections by hand).
    pub async fn catch_up(&self, source: &dyn EventSource) -> Result<i64, ProjectionError> {
        let mut reached = i64::MAX;
        for runner in self.runners.iter() {
            runner.ensure_checkpoint(&self.pool).await?;
            let mut at = 0;
            while let Some(position) = runner.step(&self.pool, source).await? {
                at = position;
            }
            reached = reached.min(at.max(*runner.applied.borrow()));
        }
        Ok(if reached == i64::MAX { 0 } else { reached })
    }

    /// Waits until every projection has applied the log up to `position`, for at most
    /// `patience`.
    pub async fn wait_for(&self, position: i64, patience: Duration) -> Result<(), Lagging> {
        let deadline = tokio::time::Instant::now() + patience;
        for runner in self.runners.iter() {
            let mut applied = runner.applied.subscribe();
            loop {
                let until = deadline.min(tokio::time::Instant::now() + CHECKPOINT_POLL);
                let reached =
                    tokio::time::timeout_at(until, applied.wait_for(|at| *at >= position));
                if matches!(reached.await, Ok(Ok(_))) {
                    break;
                }
                // Not seen here: another process may be the one applying it (this one may be
                // waiting for its turn, or pausing after an error).
                let at = checkpoint(&self.pool, &runner.consumer).await.unwrap_or(0);
                if at >= position {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(Lagging {
                        projection: runner.model.name(),
                        at: at.max(*runner.applied.borrow()),
                        wanted: position,
                    });
                }
            }
        }
        Ok(())
    }
}

/// A consumer's recorded position (0 if it never ran).
pub async fn checkpoint(pool: &PgPool, consumer: &str) -> Result<i64, sqlx::Error> {
    let at: Option<i64> =
        sqlx::query_scalar("SELECT position FROM log_checkpoints WHERE consumer = $1")
            .bind(consumer)
            .fetch_optional(pool)
            .await?;
    Ok(at.unwrap_or(0))
}

impl Runner {
    async fn run(self: Arc<Self>, pool: PgPool, source: Arc<dyn EventSource>) {
        let name = self.model.name();
        let mut failures = 0u32;
        let mut has_checkpoint = false;
        loop {
            let step = match has_checkpoint {
                true => self.step(&pool, source.as_ref()).await,
                false => match self.ensure_checkpoint(&pool).await {
                    Ok(()) => {
                        has_checkpoint = true;
                        continue;
                    }
                    Err(e) => Err(e.into()),
                },
            };
            match step {
                Ok(Some(_)) => failures = 0,
                Ok(None) => {
                    failures = 0;
                    let at = *self.applied.borrow();
                    source.wait(at, IDLE_POLL).await;
                }
                Err(e) => {
                    // The projection stops here until the cause is fixed (a database outage
                    // passes by itself; an event it cannot apply needs a fix and a restart).
                    // It never skips: a read model with a hole would be silently wrong.
                    failures += 1;
                    let pause = Duration::from_millis(200 * u64::from(failures.min(50)));
                    tracing::error!(projection = name, error = %e, ?pause, "projection failed; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    async fn ensure_checkpoint(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO log_checkpoints (consumer, position) VALUES ($1, 0) ON CONFLICT DO NOTHING",
        )
        .bind(&self.consumer)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Applies the next batch in one transaction with the checkpoint; returns the position
    /// reached, or `None` if there was nothing to apply.
    async fn step(
        &self,
        pool: &PgPool,
        source: &dyn EventSource,
    ) -> Result<Option<i64>, ProjectionError> {
        let mut tx = pool.begin().await?;
        // Read models are derived data: if the database crashes before this commit reaches the
        // disk, rows and checkpoint are lost together and re-applied from the log. So their
        // commits need not wait for the WAL flush (the log's own commits always do).
        let at: i64 = sqlx::query_scalar(
            "SELECT position FROM log_checkpoints, set_config('synchronous_commit', 'off', true)
              WHERE consumer = $1 FOR UPDATE OF log_checkpoints",
        )
        .bind(&self.consumer)
        .fetch_one(&mut *tx)
        .await?;
        self.advance(at);
        let events = source.read(&mut tx, at, BATCH).await?;
        let Some(last) = events.last().map(|e| e.global_position) else {
            return Ok(None);
        };
        for event in &events {
            self.model.apply(&mut tx, event).await?;
        }
        sqlx::query(
            "UPDATE log_checkpoints SET position = $2, updated_at = now() WHERE consumer = $1",
        )
        .bind(&self.consumer)
        .bind(last)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.advance(last);
        Ok(Some(last))
    }

    fn advance(&self, position: i64) {
        self.applied.send_if_modified(|at| {
            let moved = position > *at;
            if moved {
                *at = position;
            }
            moved
        });
    }
}

/// Where one consumer of the log stands.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerStatus {
    pub consumer: String,
    pub position: i64,
    /// Events of the log it has yet to process.
    pub lag: i64,
    /// When it last moved (`None`: never ran).
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The log's head and every consumer's position: each projection of `projections` (even one
/// that never ran) and whatever else keeps a checkpoint (the relay).
pub async fn status(
    pool: &PgPool,
    projections: &[&str],
) -> Result<(i64, Vec<ConsumerStatus>), sqlx::Error> {
    let head: i64 = sqlx::query_scalar("SELECT position FROM event_log_head")
        .fetch_one(pool)
        .await?;
    let names: Vec<String> = projections.iter().map(|p| consumer(p)).collect();
    let rows: Vec<(String, i64, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "SELECT n.consumer, COALESCE(c.position, 0), c.updated_at
           FROM (SELECT consumer FROM log_checkpoints UNION SELECT unnest($1::text[])) n
           LEFT JOIN log_checkpoints c USING (consumer)
          ORDER BY n.consumer",
    )
    .bind(&names)
    .fetch_all(pool)
    .await?;
    Ok((
        head,
        rows.into_iter()
            .map(|(consumer, position, updated_at)| ConsumerStatus {
                lag: head - position,
                consumer,
                position,
                updated_at,
            })
            .collect(),
    ))
}

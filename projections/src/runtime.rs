//! The projector runtime: every projection follows the global log in position order, and
//! records how far it got in the same transaction as the rows it wrote (`log_checkpoints`),
//! so a crash can neither skip an event nor apply one twice.
//!
//! One task runs all of a process's projections: while they are healthy, each batch is one
//! transaction for all of them (the events read once, every checkpoint moved); one that fails
//! is set aside and retried alone, without holding up the others.
//!
//! Several processes may run the same projections (every API node does): each batch starts
//! by locking the checkpoint rows (in name order), so only one of them applies a given batch
//! and the others continue from where it stopped.
//!
//! Reads that must show a write wait with [`Projections::wait_for`] until every projection
//! has passed the write's position (`X-Event-Position` / `X-Min-Position`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
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
/// After a step that caught up, the next starts no sooner than this after it. Under load the
/// log moves with every booking batch (about 700 times a second on the project's machine), and
/// a step is six round trips whatever it applies: spaced, a step applies more events for the
/// same cost. Measured with `bench-pipeline` (ADR 0010): 13 % less CPU per booking and 8 %
/// more bookings/s, for 2–4 ms more from a write to its read model. A quiet log is not slowed:
/// its next step comes long after the last.
const STEP_SPACING: Duration = Duration::from_millis(5);

/// The checkpoint row of a projection.
pub fn consumer(projection: &str) -> String {
    format!("projection:{projection}")
}

/// Where the projections' events come from: the event store's tail ([`StoreTail`], the
/// default) or the relay's topics read back in log order ([`KafkaSource`],
/// `PROJECTION_SOURCE=kafka`, docs/adr/0012-kafka-as-projection-source.md). The runtime does not
/// know which it reads.
#[async_trait]
pub trait EventSource: Send + Sync + 'static {
    /// The events after `position`, in log order, at most `limit`, and the position they
    /// cover (at least the last one's: a source that does not carry every event of the log
    /// says how far the log is covered). Nothing yet: no events, `reached == position`.
    async fn read(
        &self,
        db: &mut PgConnection,
        position: i64,
        limit: i64,
    ) -> Result<Batch, ProjectionError>;

    /// Returns when there may be events after `position`, or after `patience` at the latest.
    async fn wait(&self, position: i64, patience: Duration);
}

/// Consecutive events of the log, and the position up to which the log is covered by them.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<LoggedEvent>,
    pub reached: i64,
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
    ) -> Result<Batch, ProjectionError> {
        let events = self.log.read_after(db, position, limit).await?;
        let reached = events.last().map_or(position, |e| e.global_position);
        Ok(Batch { events, reached })
    }

    async fn wait(&self, position: i64, patience: Duration) {
        let mut head = self.log.subscribe();
        let _ = tokio::time::timeout(patience, head.wait_for(|head| *head > position)).await;
    }
}

/// The Kafka topics the relay writes, read back in log order (ADR 0012).
pub struct KafkaSource {
    tail: parking_infra::kafka_tail::KafkaTail,
    log: EventLog,
}

impl KafkaSource {
    pub async fn shared(
        log: EventLog,
        kafka: &parking_infra::config::KafkaConfig,
    ) -> Result<Arc<dyn EventSource>, parking_infra::relay::RelayError> {
        let tail = parking_infra::kafka_tail::KafkaTail::connect(kafka).await?;
        Ok(Arc::new(Self { tail, log }))
    }
}

#[async_trait]
impl EventSource for KafkaSource {
    async fn read(
        &self,
        db: &mut PgConnection,
        position: i64,
        limit: i64,
    ) -> Result<Batch, ProjectionError> {
        let (events, reached) = self
            .tail
            .read(db, position, limit)
            .await
            .map_err(|e| ProjectionError::Source(e.to_string()))?;
        Ok(Batch { events, reached })
    }

    /// Events reach Kafka a little after the log's head moves (the relay's round trip), and
    /// nothing announces it: look again soon.
    async fn wait(&self, position: i64, patience: Duration) {
        let mut head = self.log.subscribe();
        let soon = patience.min(KAFKA_POLL);
        let _ = tokio::time::timeout(soon, head.wait_for(|head| *head > position)).await;
        tokio::time::sleep(Duration::from_millis(5).min(soon)).await;
    }
}

/// How often a projection fed from Kafka looks for news when the log is ahead of it.
const KAFKA_POLL: Duration = Duration::from_millis(20);

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
        tokio::spawn(self.clone().run(source));
    }

    /// The projector loop. Healthy projections go together: one transaction per batch reads
    /// the events once, applies them to each, and moves every checkpoint (a quarter of the
    /// round trips of one transaction each). When that fails, each is tried alone to find the
    /// one that cannot go on; it is set aside, retried alone with a growing pause, and rejoins
    /// once it gets through. The others never wait for it.
    async fn run(self, source: Arc<dyn EventSource>) {
        let mut set_aside: Vec<Option<SetAside>> = vec![None; self.runners.len()];
        let mut pending_checkpoints = true;
        let mut last_step = tokio::time::Instant::now();
        loop {
            if pending_checkpoints {
                pending_checkpoints = false;
                for runner in self.runners.iter() {
                    if let Err(e) = runner.ensure_checkpoint(&self.pool).await {
                        tracing::warn!(error = %e, "projection checkpoints not ready; retrying");
                        pending_checkpoints = true;
                    }
                }
                if pending_checkpoints {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            let healthy: Vec<&Arc<Runner>> = self
                .runners
                .iter()
                .zip(&set_aside)
                .filter(|(_, aside)| aside.is_none())
                .map(|(runner, _)| runner)
                .collect();
            // Step again at once only when a step may have left events behind (a full batch,
            // a projection back from being set aside); otherwise wait for news, which for the
            // store's tail is immediate if the head moved meanwhile. (Stepping again after
            // every step found nothing half the time under load: four round trips wasted.)
            let mut more = false;
            if !healthy.is_empty() {
                last_step = tokio::time::Instant::now();
                match step(&self.pool, &healthy, source.as_ref()).await {
                    Ok(stepped) => more = stepped == Stepped::Full,
                    Err(e) => {
                        tracing::warn!(error = %e, "projections failed together; trying each alone");
                        for (i, runner) in self.runners.iter().enumerate() {
                            if set_aside[i].is_some() {
                                continue;
                            }
                            match step(&self.pool, &[runner], source.as_ref()).await {
                                Ok(stepped) => more |= stepped == Stepped::Full,
                                Err(e) => set_aside[i] = Some(SetAside::new(runner, &e)),
                            }
                        }
                    }
                }
            }
            for (i, runner) in self.runners.iter().enumerate() {
                let Some(aside) = set_aside[i].as_mut() else {
                    continue;
                };
                if tokio::time::Instant::now() < aside.retry_at {
                    continue;
                }
                match step(&self.pool, &[runner], source.as_ref()).await {
                    Ok(_) => {
                        tracing::info!(projection = runner.model.name(), "projection recovered");
                        set_aside[i] = None;
                        more = true;
                    }
                    Err(e) => aside.failed_again(runner, &e),
                }
            }
            if !more {
                let at = healthy
                    .iter()
                    .map(|r| *r.applied.borrow())
                    .min()
                    .unwrap_or(i64::MAX);
                let patience = set_aside
                    .iter()
                    .flatten()
                    .map(|a| {
                        a.retry_at
                            .saturating_duration_since(tokio::time::Instant::now())
                    })
                    .min()
                    .unwrap_or(IDLE_POLL)
                    .min(IDLE_POLL);
                source.wait(at, patience).await;
                tokio::time::sleep_until(last_step + STEP_SPACING).await;
            }
        }
    }

    /// Applies everything the log holds now to every projection, then returns the position
    /// they all reached (for the CLI and for tests that drive projections by hand).
    pub async fn catch_up(&self, source: &dyn EventSource) -> Result<i64, ProjectionError> {
        let mut reached = i64::MAX;
        for runner in self.runners.iter() {
            runner.ensure_checkpoint(&self.pool).await?;
            while step(&self.pool, &[runner], source).await? != Stepped::Idle {}
            reached = reached.min(*runner.applied.borrow());
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

/// A projection that failed on its own: it stops where it is until the cause goes away (a
/// database outage passes by itself; an event it cannot apply needs a fix). It never skips:
/// a read model with a hole would be silently wrong.
#[derive(Clone)]
struct SetAside {
    failures: u32,
    retry_at: tokio::time::Instant,
}

impl SetAside {
    fn new(runner: &Runner, error: &ProjectionError) -> Self {
        let mut aside = Self {
            failures: 0,
            retry_at: tokio::time::Instant::now(),
        };
        aside.failed_again(runner, error);
        aside
    }

    fn failed_again(&mut self, runner: &Runner, error: &ProjectionError) {
        self.failures += 1;
        let pause = Duration::from_millis(200 * u64::from(self.failures.min(50)));
        self.retry_at = tokio::time::Instant::now() + pause;
        tracing::error!(
            projection = runner.model.name(),
            error = %error,
            ?pause,
            "projection failed; retrying alone"
        );
    }
}

impl Runner {
    async fn ensure_checkpoint(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO log_checkpoints (consumer, position) VALUES ($1, 0) ON CONFLICT DO NOTHING",
        )
        .bind(&self.consumer)
        .execute(pool)
        .await?;
        Ok(())
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

/// One batch for one or several projections, in one transaction: their checkpoint rows locked
/// (in name order, as every process does, so two projectors cannot deadlock), the events
/// after the lowest checkpoint read once, each projection given those it has not seen, every
/// checkpoint moved. Read models are derived data: if the database crashes before this commit
/// reaches the disk, rows and checkpoints are lost together and re-applied from the log, so the
/// commit does not wait for the WAL flush (the log's own commits always do). Says how far it
/// got.
async fn step(
    pool: &PgPool,
    runners: &[&Arc<Runner>],
    source: &dyn EventSource,
) -> Result<Stepped, ProjectionError> {
    let consumers: Vec<&str> = runners.iter().map(|r| r.consumer.as_str()).collect();
    let mut tx = pool.begin().await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT consumer, position FROM log_checkpoints, set_config('synchronous_commit', 'off', true)
          WHERE consumer = ANY($1) ORDER BY consumer FOR UPDATE OF log_checkpoints",
    )
    .bind(&consumers)
    .fetch_all(&mut *tx)
    .await?;
    let at: Vec<i64> = runners
        .iter()
        .map(|r| {
            rows.iter()
                .find(|(consumer, _)| *consumer == r.consumer)
                .map_or(0, |(_, position)| *position)
        })
        .collect();
    for (runner, at) in runners.iter().zip(&at) {
        runner.advance(*at);
    }
    let from = at.iter().copied().min().unwrap_or(0);
    let Batch {
        events,
        reached: last,
    } = source.read(&mut tx, from, BATCH).await?;
    if last <= from {
        return Ok(Stepped::Idle);
    }
    let full = events.len() as i64 >= BATCH;
    for (runner, at) in runners.iter().zip(&at) {
        let unseen: Vec<&LoggedEvent> = events.iter().filter(|e| e.global_position > *at).collect();
        runner.model.apply_batch(&mut tx, &unseen).await?;
    }
    sqlx::query(
        // A projection that was ahead (it caught up alone) keeps its position.
        "UPDATE log_checkpoints SET position = GREATEST(position, $2), updated_at = now()
          WHERE consumer = ANY($1)",
    )
    .bind(&consumers)
    .bind(last)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    for runner in runners {
        runner.advance(last);
    }
    Ok(if full { Stepped::Full } else { Stepped::Caught })
}

/// How far one step got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stepped {
    /// Nothing new.
    Idle,
    /// Applied everything the source had.
    Caught,
    /// Applied a full batch: more is waiting.
    Full,
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
    let head = parking_infra::log::recorded_head(pool).await?;
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

//! Rebuilding a read model from the whole history, next to the live one, and swapping it in.
//!
//! 1. Fresh, empty copies of the projection's tables are made in a schema of their own,
//!    `rebuild_<name>` (columns, defaults, checks, keys and indexes under the same names).
//! 2. The log is replayed into them from position 0 on a connection whose `search_path` puts
//!    that schema first, so the projection's SQL writes the copies; the live projection keeps
//!    running meanwhile. Only the projection's aggregate's events are read, by other
//!    connections, which read the next windows of the log while the one before is applied.
//! 3. When the replay has caught up, one transaction locks the live projection's checkpoint
//!    (pausing it), applies the last few events, replaces the live tables by the copies (views
//!    over them are re-created), and sets the checkpoint to the rebuilt position. Readers see
//!    the old tables or the new ones, never a mix; nothing is lost in between.

use std::time::Instant;

use parking_infra::log::read_between;
use parking_infra::EventLog;
use sqlx::{Connection, PgConnection};

use crate::model::{ProjectionError, ReadModel};
use crate::runtime::consumer;

/// Positions of the log per replay transaction.
const BATCH: i64 = 5000;
/// Windows of the log read at once.
const READERS: usize = 2;

/// How a rebuild is going, reported after every batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub position: i64,
    pub head: i64,
    /// Events of the log covered so far (read, or passed by as another aggregate's).
    pub events: u64,
    pub events_per_second: f64,
}

/// The outcome of a rebuild.
#[derive(Debug, Clone, Copy)]
pub struct Rebuilt {
    pub position: i64,
    /// Events of the log covered.
    pub events: u64,
    pub seconds: f64,
}

fn schema(model: &dyn ReadModel) -> String {
    format!("rebuild_{}", model.name())
}

/// Rebuilds `model` from history and swaps the result in; see the module's documentation.
pub async fn rebuild(
    log: &EventLog,
    model: &dyn ReadModel,
    mut progress: impl FnMut(Progress),
) -> Result<Rebuilt, ProjectionError> {
    let pool = log.pool();
    let started = Instant::now();
    let mut db = pool.acquire().await?.detach();
    let indexes = prepare(&mut db, model).await?;
    sqlx::query(&format!("SET search_path TO {}, public", schema(model)))
        .execute(&mut db)
        .await?;

    // Rounds up to the head as it is at each round's start, until what is left for the swap
    // (which pauses the live projection) is at most a window; the secondary indexes are
    // built once over the loaded rows (rather than row by row), before the last round.
    let mut position = 0;
    let mut indexes = Some(indexes);
    loop {
        let head = parking_infra::log::recorded_head(&mut db).await?;
        // (The first round always runs, so that a small log is replayed the same way.)
        if head - position > BATCH || (position == 0 && head > 0) {
            position = replay(&mut db, log, model, position, head, started, &mut progress).await?;
            continue;
        }
        let Some(indexes) = indexes.take() else {
            break;
        };
        for definition in indexes {
            sqlx::query(&definition).execute(&mut db).await?;
        }
    }
    let position = swap(&mut db, log, model, position).await?;
    Ok(Rebuilt {
        position,
        events: position as u64,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Applies the log from `from` to `head` to the copies; returns `head`. Numbered events never
/// change, so they are read ahead (`read_ahead`) outside the transactions that write them.
async fn replay(
    db: &mut PgConnection,
    log: &EventLog,
    model: &dyn ReadModel,
    from: i64,
    head: i64,
    started: Instant,
    progress: &mut impl FnMut(Progress),
) -> Result<i64, ProjectionError> {
    let (batches, mut read) = tokio::sync::mpsc::channel(2);
    let reader = tokio::spawn(read_ahead(
        log.clone(),
        (model.aggregate_type(), model.reads_erasures()),
        from,
        head,
        batches,
    ));
    while let Some((batch, reached)) = read.recv().await {
        let mut tx = db.begin().await?;
        let refs: Vec<&parking_infra::LoggedEvent> = batch.iter().collect();
        model.apply_batch(&mut tx, &refs).await?;
        tx.commit().await?;
        progress(Progress {
            position: reached,
            head,
            events: reached as u64,
            events_per_second: reached as f64 / started.elapsed().as_secs_f64(),
        });
    }
    reader
        .await
        .map_err(|e| ProjectionError::Source(e.to_string()))??;
    Ok(head)
}

/// Sends the model's events from `from` up to `head`, in log order, a window of [`BATCH`] positions at a
/// time, each with the position it covers. [`READERS`] windows are read at once, each on a
/// connection and a task of its own (decoding the rows is most of the cost of reading them).
async fn read_ahead(
    log: EventLog,
    (aggregate_type, erasures): (Option<&'static str>, bool),
    from: i64,
    head: i64,
    batches: tokio::sync::mpsc::Sender<(Vec<parking_infra::LoggedEvent>, i64)>,
) -> Result<(), ProjectionError> {
    let mut windows = (0..)
        .map(|i| (from + i * BATCH, (from + (i + 1) * BATCH).min(head)))
        .take_while(|(after, _)| *after < head);
    let mut reading = std::collections::VecDeque::new();
    loop {
        while reading.len() < READERS {
            let Some((after, up_to)) = windows.next() else {
                break;
            };
            let log = log.clone();
            let read = tokio::spawn(async move {
                let mut db = log.pool().acquire().await?;
                let mut events =
                    read_between(&mut db, aggregate_type, erasures, after, up_to).await?;
                log.keys().reveal(&mut events).await?;
                Ok::<_, sqlx::Error>(events)
            });
            reading.push_back((read, up_to));
        }
        let Some((read, up_to)) = reading.pop_front() else {
            return Ok(());
        };
        let batch = read
            .await
            .map_err(|e| ProjectionError::Source(e.to_string()))??;
        if batches.send((batch, up_to)).await.is_err() {
            return Ok(());
        }
    }
}

/// Makes the empty copies of the model's tables in its rebuild schema (replacing whatever an
/// interrupted rebuild left there), with their keys. Returns the definitions of their other
/// indexes, to be made once the history is loaded.
async fn prepare(db: &mut PgConnection, model: &dyn ReadModel) -> Result<Vec<String>, sqlx::Error> {
    let schema = schema(model);
    let mut deferred = Vec::new();
    let mut tx = db.begin().await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *tx)
        .await?;
    for table in model.tables() {
        sqlx::query(&format!(
            "CREATE TABLE {schema}.{table}
               (LIKE public.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)"
        ))
        .execute(&mut *tx)
        .await?;
        // Keys and indexes under their own names, so later migrations find them.
        let keys: Vec<(String, String)> = sqlx::query_as(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
              WHERE conrelid = ('public.' || $1)::regclass AND contype IN ('p', 'u', 'x')",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        for (name, definition) in keys {
            sqlx::query(&format!(
                "ALTER TABLE {schema}.{table} ADD CONSTRAINT {name} {definition}"
            ))
            .execute(&mut *tx)
            .await?;
        }
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
              WHERE i.indrelid = ('public.' || $1)::regclass
                AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        for definition in indexes {
            let definition = definition.replacen(
                &format!(" ON public.{table} "),
                &format!(" ON {schema}.{table} "),
                1,
            );
            deferred.push(definition);
        }
    }
    tx.commit().await?;
    Ok(deferred)
}

/// Pauses the live projection, applies what the replay has not seen yet, and replaces the live
/// tables by the rebuilt ones. Returns the position reached.
async fn swap(
    db: &mut PgConnection,
    log: &EventLog,
    model: &dyn ReadModel,
    mut position: i64,
) -> Result<i64, ProjectionError> {
    let schema = schema(model);
    let checkpoint = consumer(model.name());
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO log_checkpoints (consumer, position) VALUES ($1, 0) ON CONFLICT DO NOTHING",
    )
    .bind(&checkpoint)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT position FROM log_checkpoints WHERE consumer = $1 FOR UPDATE")
        .bind(&checkpoint)
        .execute(&mut *tx)
        .await?;
    loop {
        let batch = log.read_after(&mut tx, position, BATCH).await?;
        let Some(last) = batch.last().map(|e| e.global_position) else {
            break;
        };
        let refs: Vec<&parking_infra::LoggedEvent> = batch.iter().collect();
        model.apply_batch(&mut tx, &refs).await?;
        position = last;
    }

    sqlx::query("SET LOCAL search_path TO public")
        .execute(&mut *tx)
        .await?;
    let tables: Vec<String> = model
        .tables()
        .iter()
        .map(|t| format!("public.{t}"))
        .collect();
    // Views over the live tables go with them; note their definitions to re-create them.
    let views: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT v.relname::text, pg_get_viewdef(v.oid)
           FROM pg_depend d
           JOIN pg_rewrite r ON r.oid = d.objid
           JOIN pg_class v ON v.oid = r.ev_class
          WHERE d.refobjid = ANY($1::regclass[]) AND v.relkind = 'v'",
    )
    .bind(&tables)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        tables.join(", ")
    ))
    .execute(&mut *tx)
    .await?;
    for table in model.tables() {
        sqlx::query(&format!("DROP TABLE public.{table} CASCADE"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER TABLE {schema}.{table} SET SCHEMA public"))
            .execute(&mut *tx)
            .await?;
    }
    for (name, definition) in views {
        sqlx::query(&format!("CREATE VIEW public.{name} AS {definition}"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE log_checkpoints SET position = $2, updated_at = now() WHERE consumer = $1")
        .bind(&checkpoint)
        .bind(position)
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("DROP SCHEMA {schema}"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(position)
}

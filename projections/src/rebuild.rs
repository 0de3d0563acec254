//! Rebuilding a read model from the whole history, next to the live one, and swapping it in.
//!
//! 1. Fresh, empty copies of the projection's tables are made in a schema of their own,
//!    `rebuild_<name>` (columns, defaults, checks, keys and indexes under the same names).
//! 2. The log is replayed into them from position 0 on a connection whose `search_path` puts
//!    that schema first, so the projection's SQL writes the copies; the live projection keeps
//!    running meanwhile.
//! 3. When the replay has caught up, one transaction locks the live projection's checkpoint
//!    (pausing it), applies the last few events, replaces the live tables by the copies (views
//!    over them are re-created), and sets the checkpoint to the rebuilt position. Readers see
//!    the old tables or the new ones, never a mix; nothing is lost in between.

use std::time::Instant;

use parking_infra::log::read_after;
use sqlx::{Connection, PgConnection, PgPool};

use crate::model::{ProjectionError, ReadModel};
use crate::runtime::consumer;

/// Events per replay transaction.
const BATCH: i64 = 5000;

/// How a rebuild is going, reported after every batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub position: i64,
    pub head: i64,
    pub events: u64,
    pub events_per_second: f64,
}

/// The outcome of a rebuild.
#[derive(Debug, Clone, Copy)]
pub struct Rebuilt {
    pub position: i64,
    pub events: u64,
    pub seconds: f64,
}

fn schema(model: &dyn ReadModel) -> String {
    format!("rebuild_{}", model.name())
}

/// Rebuilds `model` from history and swaps the result in; see the module's documentation.
pub async fn rebuild(
    pool: &PgPool,
    model: &dyn ReadModel,
    mut progress: impl FnMut(Progress),
) -> Result<Rebuilt, ProjectionError> {
    let started = Instant::now();
    let mut db = pool.acquire().await?.detach();
    prepare(&mut db, model).await?;
    sqlx::query(&format!("SET search_path TO {}, public", schema(model)))
        .execute(&mut db)
        .await?;

    let mut position = 0;
    let mut events = 0u64;
    loop {
        let mut tx = db.begin().await?;
        let batch = read_after(&mut tx, position, BATCH).await?;
        let Some(last) = batch.last().map(|e| e.global_position) else {
            break;
        };
        let refs: Vec<&parking_infra::LoggedEvent> = batch.iter().collect();
        model.apply_batch(&mut tx, &refs).await?;
        tx.commit().await?;
        position = last;
        events += batch.len() as u64;
        let head: i64 = sqlx::query_scalar("SELECT position FROM event_log_head")
            .fetch_one(&mut db)
            .await?;
        progress(Progress {
            position,
            head,
            events,
            events_per_second: events as f64 / started.elapsed().as_secs_f64(),
        });
    }
    let (position, tail) = swap(&mut db, model, position).await?;
    Ok(Rebuilt {
        position,
        events: events + tail,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Makes the empty copies of the model's tables in its rebuild schema (replacing whatever an
/// interrupted rebuild left there).
async fn prepare(db: &mut PgConnection, model: &dyn ReadModel) -> Result<(), sqlx::Error> {
    let schema = schema(model);
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
            sqlx::query(&definition).execute(&mut *tx).await?;
        }
    }
    tx.commit().await
}

/// Pauses the live projection, applies what the replay has not seen yet, and replaces the live
/// tables by the rebuilt ones. Returns the position reached and the events applied here.
async fn swap(
    db: &mut PgConnection,
    model: &dyn ReadModel,
    mut position: i64,
) -> Result<(i64, u64), ProjectionError> {
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
    let mut tail = 0;
    loop {
        let batch = read_after(&mut tx, position, BATCH).await?;
        let Some(last) = batch.last().map(|e| e.global_position) else {
            break;
        };
        let refs: Vec<&parking_infra::LoggedEvent> = batch.iter().collect();
        model.apply_batch(&mut tx, &refs).await?;
        tail += batch.len() as u64;
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
    Ok((position, tail))
}

//! Storage of idempotency keys: which write requests were already answered, and how.

use std::time::Duration;

use sqlx::PgPool;

/// An in-progress request older than this is presumed dead (its process crashed), and a retry
/// with the same request may run again.
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// A response worth replaying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub location: Option<String>,
    /// The `X-Event-Position` of the answer, if it wrote anything.
    pub event_position: Option<i64>,
    pub body: Vec<u8>,
}

/// What to do with a request carrying an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First time (or a retry after a crash): run it, then `complete` or `abandon`.
    Run,
    /// The same request is running now.
    InProgress,
    /// The same request was answered: replay this.
    Replay(StoredResponse),
    /// The key was used for a different request.
    Mismatch,
}

/// Claims `(scope, key)` for a request with this fingerprint.
pub async fn claim(
    pool: &PgPool,
    scope: &str,
    key: &str,
    fingerprint: &[u8],
) -> Result<Claim, sqlx::Error> {
    let claimed: Option<bool> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, state) VALUES ($1, $2, $3, 'in_progress')
         ON CONFLICT (scope, key) DO UPDATE SET created_at = now()
          WHERE idempotency_keys.state = 'in_progress'
            AND idempotency_keys.fingerprint = EXCLUDED.fingerprint
            AND idempotency_keys.created_at < now() - make_interval(secs => $4)
         RETURNING true",
    )
    .bind(scope)
    .bind(key)
    .bind(fingerprint)
    .bind(STALE_AFTER.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    if claimed.is_some() {
        return Ok(Claim::Run);
    }
    type Row = (
        Vec<u8>,
        String,
        Option<i16>,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<Vec<u8>>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT fingerprint, state, status, content_type, location, event_position, body
           FROM idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        // Abandoned between our two statements: the caller may simply retry.
        None => Claim::InProgress,
        Some((stored, ..)) if stored != fingerprint => Claim::Mismatch,
        Some((_, state, Some(status), content_type, location, event_position, body))
            if state == "done" =>
        {
            Claim::Replay(StoredResponse {
                status: status as u16,
                content_type,
                location,
                event_position,
                body: body.unwrap_or_default(),
            })
        }
        Some(_) => Claim::InProgress,
    })
}

pub async fn complete(
    pool: &PgPool,
    scope: &str,
    key: &str,
    response: &StoredResponse,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', status = $3, content_type = $4, location = $5, body = $6,
                event_position = $7
          WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .bind(response.status as i16)
    .bind(&response.content_type)
    .bind(&response.location)
    .bind(&response.body)
    .bind(response.event_position)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets the key, so the request can be retried (used when it failed unexpectedly).
pub async fn abandon(pool: &PgPool, scope: &str, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2")
        .bind(scope)
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}

/// Forgets every key of `scope` (a user id): an erased person's stored answers hold their
/// personal data.
pub async fn forget_scope(pool: &PgPool, scope: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1")
        .bind(scope)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes keys older than `age`; returns how many.
pub async fn purge_older_than(pool: &PgPool, age: Duration) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
    )
    .bind(age.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

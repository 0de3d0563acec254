//! The Postgres pool and the schema migrations.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// The migrations compiled into the binary (`infra/migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens a pool. Connections are made lazily and re-made after failures, so a database that
/// goes away while serving makes requests fail (and `/ready` say so) until it is back, without
/// restarting the process. (Start-up itself needs the database, for migrations.)
///
/// A connection is not pinged before it is handed out (sqlx does by default): that would be a
/// second round trip for every use of the pool, on every request and projector step. A
/// connection that died meanwhile fails the one statement sent on it, which then answers 503
/// with `Retry-After`, and is replaced.
pub fn pool(database_url: &SecretString, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = database_url.expose_secret().parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

/// Applies pending migrations; several processes may call it at once (sqlx takes an advisory
/// lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether `error` means "the database cannot be reached or take us now" (down, restarting,
/// out of connections, refusing connections) rather than "this statement failed". Callers
/// answer the first with 503 and a retry hint, the second is a bug.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => {
            unavailable_code(e.code().as_deref().unwrap_or_default(), e.message())
        }
        _ => false,
    }
}

/// [`is_unavailable`] for the booking desk's own connection (`append::Appender`). An error
/// without a SQLSTATE there is the connection's (refused, closed, broken): its one statement is
/// fixed.
fn pipeline_is_unavailable(error: &tokio_postgres::Error) -> bool {
    match error.as_db_error() {
        Some(e) => unavailable_code(e.code().code(), e.message()),
        None => true,
    }
}

fn unavailable_code(code: &str, message: &str) -> bool {
    // 08: connection exception; 53: insufficient resources (too many connections);
    // 57P01-03: shutting down, crashed, starting up.
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        // A read-only transaction: right after a failover, before the new primary.
        || code == "25006"
        // Raised while connecting to a database closed to connections.
        || (code == "55000" && message.contains("not currently accepting connections"))
}

/// [`is_unavailable`] for any error whose source chain holds a `sqlx::Error` (or the desk's
/// connection's error).
pub fn chain_is_unavailable(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<sqlx::Error>().is_some_and(is_unavailable)
            || e.downcast_ref::<tokio_postgres::Error>()
                .is_some_and(pipeline_is_unavailable)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Whether PostgreSQL knows the time zone `name` (`pg_timezone_names`, the IANA database it
/// converts times with).
pub async fn time_zone_known(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
        .bind(name)
        .fetch_one(pool)
        .await
}

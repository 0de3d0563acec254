//! Appending events: the one statement that records them, `parking_append_events` (migrations
//! 0007 to 0009), called through the pool ([`append_all`], [`append_checked`]) or pipelined on a
//! connection of its own ([`Appender`], the booking desk's). Its SQL, the order and types of its
//! arguments (`AppendCall`) and what its failures mean ([`AppendError`]) are written here only.
//!
//! One call appends events of any streams in one statement, numbered in the global log in the
//! order given: atomic without an explicit transaction (one round trip instead of postgres-es's
//! `BEGIN`, an `INSERT` per event, `COMMIT`), so the events of several aggregates are recorded
//! together or not at all. It writes the same rows as postgres-es, plus their position, and
//! returns the log's head after them. It can also check streams it does not write ([`Seen`]),
//! and follow an earlier pipelined append ([`Chain`]).
//!
//! Pipelining: sqlx runs one statement at a time on a connection; tokio-postgres queues
//! statements on its connection in the order they are issued and the server runs them in that
//! order, so the next batch's append already waits in the server while the previous one
//! commits. Each append is still its own transaction.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use cqrs_es::{Aggregate, DomainEvent, EventEnvelope};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

/// The statement, with every argument's type spelled out, so that both drivers send the same.
const APPEND: &str = "SELECT parking_append_events(
    $1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::bigint[], $11::text, $12::text)";

/// The SQLSTATE the append fails with when it records nothing because a stream moved (a
/// primary-key violation, or the checks of migrations 0008 and 0009 raising the same).
const LOST_RACE: &str = "23505";

/// An event ready to append: its stream, its place in it, and its payload and metadata as the
/// JSON texts to store. Serialized once, straight from the event (not through a
/// `serde_json::Value`, as cqrs-es's `SerializedEvent` is): the object keys of a payload come
/// in its fields' order, and those of the metadata sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
}

impl NewEvent {
    pub fn of<A: Aggregate>(envelope: &EventEnvelope<A>) -> Result<Self, serde_json::Error> {
        let metadata: std::collections::BTreeMap<&String, &String> =
            envelope.metadata.iter().collect();
        Ok(Self {
            aggregate_type: A::TYPE,
            aggregate_id: envelope.aggregate_id.clone(),
            sequence: envelope.sequence as i64,
            event_type: envelope.payload.event_type(),
            event_version: envelope.payload.event_version(),
            payload: serde_json::to_string(&envelope.payload)?,
            metadata: serde_json::to_string(&metadata)?,
        })
    }
}

/// A stream as a decision saw it: `sequence` is the last event it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub sequence: i64,
}

/// How a pipelined append relates to the appends sent before it.
#[derive(Debug, Clone, Copy)]
pub struct Chain {
    /// The append this one follows and depends on, if that one was still running when this one
    /// was decided: if it was not recorded, this one records nothing ([`AppendError::Conflict`]).
    pub after: Option<Uuid>,
    /// This append's own name, for the next one to follow.
    pub batch: Uuid,
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// A sequence of one of the streams was taken meanwhile (a concurrent command won), a stream
    /// it checked has moved, or the append it followed was not recorded: nothing was appended.
    #[error("a concurrent command appended to the stream first")]
    Conflict,
    /// The database failed the statement: the driver's error as it is (`sqlx::Error` through
    /// the pool, `tokio_postgres::Error` on an [`Appender`]'s connection), so that
    /// `db::chain_is_unavailable` recognizes an outage.
    #[error(transparent)]
    Database(Box<dyn std::error::Error + Send + Sync>),
}

impl AppendError {
    /// A driver's error, with the SQLSTATE the server answered (if it answered).
    fn from_driver(
        sqlstate: Option<&str>,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        if sqlstate == Some(LOST_RACE) {
            AppendError::Conflict
        } else {
            AppendError::Database(Box::new(error))
        }
    }

    fn from_sqlx(error: sqlx::Error) -> Self {
        let sqlstate = error
            .as_database_error()
            .and_then(|e| e.code())
            .map(|code| code.into_owned());
        Self::from_driver(sqlstate.as_deref(), error)
    }

    fn from_tokio_postgres(error: tokio_postgres::Error) -> Self {
        let sqlstate = error.code().map(|state| state.code().to_owned());
        Self::from_driver(sqlstate.as_deref(), error)
    }
}

/// The statement's arguments, owned (a pipelined append outlives the batch's borrow): one
/// array per column of the events to append, then the streams to check, then the chain.
struct AppendCall {
    kinds: Vec<&'static str>,
    ids: Vec<String>,
    sequences: Vec<i64>,
    event_types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<String>,
    metadata: Vec<String>,
    read_kinds: Vec<&'static str>,
    read_ids: Vec<String>,
    read_sequences: Vec<i64>,
    after: Option<String>,
    batch: Option<String>,
}

/// One argument of [`APPEND`], for either driver to bind.
enum Arg<'a> {
    Kinds(&'a [&'static str]),
    Texts(&'a [String]),
    Numbers(&'a [i64]),
    Name(Option<&'a str>),
}

impl AppendCall {
    fn new<'a>(
        events: impl IntoIterator<Item = &'a NewEvent>,
        seen: &[Seen],
        chain: Option<Chain>,
    ) -> Self {
        let events: Vec<&NewEvent> = events.into_iter().collect();
        Self {
            kinds: events.iter().map(|e| e.aggregate_type).collect(),
            ids: events.iter().map(|e| e.aggregate_id.clone()).collect(),
            sequences: events.iter().map(|e| e.sequence).collect(),
            event_types: events.iter().map(|e| e.event_type.clone()).collect(),
            versions: events.iter().map(|e| e.event_version.clone()).collect(),
            payloads: events.iter().map(|e| e.payload.clone()).collect(),
            metadata: events.iter().map(|e| e.metadata.clone()).collect(),
            read_kinds: seen.iter().map(|s| s.aggregate_type).collect(),
            read_ids: seen.iter().map(|s| s.aggregate_id.clone()).collect(),
            read_sequences: seen.iter().map(|s| s.sequence).collect(),
            after: chain.and_then(|c| c.after).map(|id| id.to_string()),
            batch: chain.map(|c| c.batch.to_string()),
        }
    }

    /// The arguments of [`APPEND`], in its order.
    fn args(&self) -> [Arg<'_>; 12] {
        [
            Arg::Kinds(&self.kinds),
            Arg::Texts(&self.ids),
            Arg::Numbers(&self.sequences),
            Arg::Texts(&self.event_types),
            Arg::Texts(&self.versions),
            Arg::Texts(&self.payloads),
            Arg::Texts(&self.metadata),
            Arg::Kinds(&self.read_kinds),
            Arg::Texts(&self.read_ids),
            Arg::Numbers(&self.read_sequences),
            Arg::Name(self.after.as_deref()),
            Arg::Name(self.batch.as_deref()),
        ]
    }

    /// Runs the call through the pool.
    async fn run(&self, pool: &PgPool) -> Result<i64, AppendError> {
        let mut query = sqlx::query_scalar::<_, i64>(APPEND);
        for arg in self.args() {
            query = match arg {
                Arg::Kinds(values) => query.bind(values),
                Arg::Texts(values) => query.bind(values),
                Arg::Numbers(values) => query.bind(values),
                Arg::Name(name) => query.bind(name),
            };
        }
        query.fetch_one(pool).await.map_err(AppendError::from_sqlx)
    }
}

impl Arg<'_> {
    fn as_tokio_postgres(&self) -> &(dyn ToSql + Sync) {
        match self {
            Arg::Kinds(values) => values,
            Arg::Texts(values) => values,
            Arg::Numbers(values) => values,
            Arg::Name(name) => name,
        }
    }
}

/// Appends `events` in one statement through `pool`; returns the log's head after them, which
/// covers them.
pub async fn append_all<'a>(
    pool: &PgPool,
    events: impl IntoIterator<Item = &'a NewEvent>,
) -> Result<i64, AppendError> {
    append_checked(pool, events, &[]).await
}

/// [`append_all`], recording nothing unless every stream in `seen` is still where the decision
/// saw it (migration 0008): a stream that has moved since is a [`AppendError::Conflict`], as a
/// lost race on a written stream is. With no events, only checks; returns the head either way.
pub async fn append_checked<'a>(
    pool: &PgPool,
    events: impl IntoIterator<Item = &'a NewEvent>,
    seen: &[Seen],
) -> Result<i64, AppendError> {
    AppendCall::new(events, seen, None).run(pool).await
}

/// The database that pipelined appends go to (`DATABASE_URL`, parsed).
#[derive(Clone)]
pub struct AppendTarget(Arc<tokio_postgres::Config>);

impl AppendTarget {
    pub fn parse(database_url: &SecretString) -> Result<Self, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::from_str(database_url.expose_secret())?;
        config.application_name("parking-booking-desk");
        // As the pool's acquire timeout: an unreachable database fails the batch (503) instead
        // of holding the desk.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        Ok(Self(Arc::new(config)))
    }
}

impl std::fmt::Debug for AppendTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration holds the password.
        f.write_str("AppendTarget(..)")
    }
}

/// An append on its way to the server: its outcome, the log's head after it.
pub type Sent = Pin<Box<dyn Future<Output = Result<i64, AppendError>> + Send>>;

/// One connection for pipelined appends, connected on first use and again after it failed.
pub struct Appender {
    target: AppendTarget,
    link: Option<Link>,
}

struct Link {
    client: Arc<Client>,
    append: Statement,
    /// Set by an append that failed other than by losing a race: the next one connects again
    /// rather than find out the same way (the client may not know yet that it is closed).
    broken: Arc<AtomicBool>,
}

impl Appender {
    pub fn new(target: AppendTarget) -> Self {
        Self { target, link: None }
    }

    /// Sends the append of `events`, checked as [`append_checked`] checks (`seen`) and chained
    /// after an earlier append (`chain`). Returns once the append is queued on the connection:
    /// every append sent after it runs after it. Its outcome is the returned future's.
    pub async fn send(&mut self, events: &[&NewEvent], seen: &[Seen], chain: Chain) -> Sent {
        let (client, statement, broken) = match self.link().await {
            Ok(link) => (
                link.client.clone(),
                link.append.clone(),
                link.broken.clone(),
            ),
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let call = AppendCall::new(events.iter().copied(), seen, Some(chain));
        let mut sent: Sent = Box::pin(async move {
            let args = call.args();
            let args: Vec<&(dyn ToSql + Sync)> = args.iter().map(Arg::as_tokio_postgres).collect();
            let row = client.query_one(&statement, &args).await.map_err(|e| {
                let failed = AppendError::from_tokio_postgres(e);
                // Anything but a lost race may have ended the connection (a server that
                // terminates it answers first): the next append connects again.
                if !matches!(failed, AppendError::Conflict) {
                    broken.store(true, Ordering::Relaxed);
                }
                failed
            })?;
            row.try_get(0).map_err(AppendError::from_tokio_postgres)
        });
        // Its first poll queues the statement (tokio-postgres encodes and sends it before it
        // first waits): from here on its place in the order is taken.
        if let Poll::Ready(outcome) = futures::poll!(sent.as_mut()) {
            return Box::pin(std::future::ready(outcome));
        }
        sent
    }

    async fn link(&mut self) -> Result<&Link, AppendError> {
        if self
            .link
            .as_ref()
            .is_some_and(|link| link.client.is_closed() || link.broken.load(Ordering::Relaxed))
        {
            self.link = None;
        }
        if self.link.is_none() {
            let link = self
                .connect()
                .await
                .map_err(AppendError::from_tokio_postgres)?;
            self.link = Some(link);
        }
        Ok(self.link.as_ref().expect("connected just above"))
    }

    async fn connect(&self) -> Result<Link, tokio_postgres::Error> {
        let (client, connection) = self.target.0.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "the booking desk's append connection failed");
            }
        });
        let append = client.prepare(APPEND).await?;
        Ok(Link {
            client: Arc::new(client),
            append,
            broken: Arc::default(),
        })
    }
}

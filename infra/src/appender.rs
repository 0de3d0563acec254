//! Appends sent one after another on a connection of their own, each without waiting for the
//! answer to the one before (pipelined): the booking desk's (docs/adr/0013-booking-desk.md).
//!
//! sqlx runs one statement at a time on a connection. tokio-postgres queues statements on its
//! connection in the order they are issued and the server runs them in that order, so the next
//! batch's append is already waiting in the server while the previous one commits. Each append
//! is its own transaction, as [`append_checked`](crate::event_store::append_checked) is; one
//! that follows an append still running names it ([`Chain`]), and records nothing unless that
//! one was recorded (migration 0009).

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use crate::event_store::{AppendArrays, AppendError, NewEvent, Seen};

const APPEND: &str =
    "SELECT parking_append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// The database the pipelined appends go to (`DATABASE_URL`, parsed).
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

/// How an append relates to the batches sent before it.
#[derive(Debug, Clone, Copy)]
pub struct Chain {
    /// The append this one follows and depends on, if that one was still running when this one
    /// was decided: if it was not recorded, this one records nothing ([`AppendError::Conflict`]).
    pub after: Option<Uuid>,
    /// This append's own name, for the next one to follow.
    pub batch: Uuid,
}

/// An append on its way to the server: its outcome, the log's head after it.
pub type Sent = Pin<Box<dyn Future<Output = Result<i64, AppendError>> + Send>>;

/// One connection for appends, connected on first use and again after it failed.
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
    ///
    /// [`append_checked`]: crate::event_store::append_checked
    pub async fn send(&mut self, events: &[&NewEvent], seen: &[Seen], chain: Chain) -> Sent {
        let (client, statement, broken) = match self.link().await {
            Ok(link) => (
                link.client.clone(),
                link.append.clone(),
                link.broken.clone(),
            ),
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let params = Params::new(events, seen, chain);
        let mut sent: Sent = Box::pin(async move {
            let row = client
                .query_one(&statement, &params.as_sql())
                .await
                .map_err(|e| {
                    let failed = conflict_or_failure(e);
                    // Anything but a lost race may have ended the connection (a server that
                    // terminates it answers first): the next append connects again.
                    if !matches!(failed, AppendError::Conflict) {
                        broken.store(true, Ordering::Relaxed);
                    }
                    failed
                })?;
            row.try_get(0).map_err(failure)
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
            self.link = Some(self.connect().await.map_err(failure)?);
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
        let text = Type::TEXT_ARRAY;
        let bigint = Type::INT8_ARRAY;
        let types = [
            text.clone(),
            text.clone(),
            bigint.clone(),
            text.clone(),
            text.clone(),
            text.clone(),
            text.clone(),
            text.clone(),
            text,
            bigint,
            Type::TEXT,
            Type::TEXT,
        ];
        let append = client.prepare_typed(APPEND, &types).await?;
        Ok(Link {
            client: Arc::new(client),
            append,
            broken: Arc::default(),
        })
    }
}

/// The statement's parameters, owned: the append outlives the batch's borrow.
struct Params {
    arrays: AppendArrays,
    after: Option<String>,
    batch: String,
}

impl Params {
    fn new(events: &[&NewEvent], seen: &[Seen], chain: Chain) -> Self {
        Self {
            arrays: AppendArrays::new(events.iter().copied(), seen),
            after: chain.after.map(|id| id.to_string()),
            batch: chain.batch.to_string(),
        }
    }

    fn as_sql(&self) -> [&(dyn ToSql + Sync); 12] {
        let a = &self.arrays;
        [
            &a.kinds,
            &a.ids,
            &a.sequences,
            &a.event_types,
            &a.versions,
            &a.payloads,
            &a.metadata,
            &a.read_kinds,
            &a.read_ids,
            &a.read_sequences,
            &self.after,
            &self.batch,
        ]
    }
}

fn conflict_or_failure(error: tokio_postgres::Error) -> AppendError {
    if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        AppendError::Conflict
    } else {
        failure(error)
    }
}

fn failure(error: tokio_postgres::Error) -> AppendError {
    AppendError::Database(Box::new(error))
}

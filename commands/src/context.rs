//! The metadata every event carries: who, why, and as part of what.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::{Aggregate, EventEnvelope};
use parking_domain::{Actor, Violation};

use crate::error::CommandError;
use uuid::Uuid;

/// Where a command comes from. Every event it produces records these fields in its metadata.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// The signed-in caller; `None` for anonymous requests and for the system.
    pub actor: Option<Actor>,
    /// The operator acting through the admin CLI or a maintenance job, not a client request.
    /// Only [`CommandContext::system`] sets it.
    pub system: bool,
    pub request_id: String,
    /// Shared by every command of one user intent (a booking's reservation and creation).
    pub correlation_id: String,
    /// What caused this command: the request, or the event of the previous step.
    pub causation_id: String,
    pub idempotency_key: Option<String>,
    pub now: DateTime<Utc>,
    /// The log position that covers every event this request recorded or found recorded,
    /// shared by the contexts of its steps (see [`CommandContext::position`]).
    position: PositionCell,
}

/// Where a request's commands note the log position of what they wrote; its clones share it,
/// so whoever made the context (the HTTP layer) can read it after the commands ran.
#[derive(Debug, Clone, Default)]
pub struct PositionCell(Arc<PositionState>);

#[derive(Debug, Default)]
struct PositionState {
    position: AtomicI64,
    /// Events were committed (or found) that the position does not cover yet.
    unsettled: AtomicBool,
}

impl PositionCell {
    pub fn get(&self) -> i64 {
        self.0.position.load(Ordering::Acquire)
    }

    fn record(&self, position: i64) {
        self.0.position.fetch_max(position, Ordering::AcqRel);
    }
}

impl CommandContext {
    /// A context for one incoming request: it correlates and causes what follows.
    pub fn for_request(actor: Option<Actor>, request_id: String, now: DateTime<Utc>) -> Self {
        Self {
            actor,
            system: false,
            correlation_id: request_id.clone(),
            causation_id: request_id.clone(),
            request_id,
            idempotency_key: None,
            now,
            position: PositionCell::default(),
        }
    }

    /// A context for the operator's own commands (admin CLI): trusted like an admin.
    pub fn system(request_id: String, now: DateTime<Utc>) -> Self {
        Self {
            system: true,
            ..Self::for_request(None, request_id, now)
        }
    }

    /// The context of a step that follows from `event`.
    pub fn caused_by<A: Aggregate>(&self, event: &EventEnvelope<A>) -> Self {
        Self {
            causation_id: parking_infra::event_store::event_id(
                A::TYPE,
                &event.aggregate_id,
                event.sequence,
            )
            .to_string(),
            ..self.clone()
        }
    }

    /// The id of a new aggregate this command creates; `purpose` tells apart the creations of
    /// one request. With an idempotency key the id is derived from the caller and the key, so
    /// a retry of a request whose answer was lost finds what the first attempt created instead
    /// of creating it again; without one it is random.
    pub fn new_id(&self, purpose: &str) -> Uuid {
        const NAMESPACE: Uuid = Uuid::from_u128(0x9d3c_0f1e_5b7a_4c2d_8e6f_a1b2_c3d4_e5f6);
        match &self.idempotency_key {
            Some(key) => {
                let caller = match (self.actor, self.system) {
                    (Some(actor), _) => actor.user_id.to_string(),
                    (None, true) => "system".to_owned(),
                    (None, false) => "anonymous".to_owned(),
                };
                Uuid::new_v5(&NAMESPACE, format!("{caller}\n{key}\n{purpose}").as_bytes())
            }
            None => Uuid::new_v4(),
        }
    }

    /// The global log position at which everything this request wrote, or found already
    /// written by an earlier attempt, is part of the history: read models that have reached it
    /// show the request's effects. 0 when it wrote nothing.
    pub fn position(&self) -> i64 {
        self.position.get()
    }

    /// Makes this context note its position in `cell` (shared with the caller).
    pub fn with_position_cell(mut self, cell: PositionCell) -> Self {
        self.position = cell;
        self
    }

    pub(crate) fn record_position(&self, position: i64) {
        self.position.record(position);
    }

    /// Notes that the request's answer must cover everything committed so far: it recorded
    /// events, or (a retry) found its work already done by an earlier attempt.
    pub(crate) fn mark_unsettled(&self) {
        self.position.0.unsettled.store(true, Ordering::Release);
    }

    /// Notes that `position` covers everything the request recorded so far.
    pub(crate) fn settled_at(&self, position: i64) {
        self.record_position(position);
        self.position.0.unsettled.store(false, Ordering::Release);
    }

    /// Whether the request has events not yet covered by its position; clears the mark.
    pub(crate) fn take_unsettled(&self) -> bool {
        self.position.0.unsettled.swap(false, Ordering::AcqRel)
    }

    /// Whether this command is a request that may be a retry (it carries an idempotency key).
    pub fn may_be_retry(&self) -> bool {
        self.idempotency_key.is_some()
    }

    pub(crate) fn metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::from([
            ("request_id".to_owned(), self.request_id.clone()),
            ("correlation_id".to_owned(), self.correlation_id.clone()),
            ("causation_id".to_owned(), self.causation_id.clone()),
            (
                "occurred_at".to_owned(),
                self.now.to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
        ]);
        match self.actor {
            Some(actor) => {
                m.insert("user_id".to_owned(), actor.user_id.to_string());
                m.insert("role".to_owned(), actor.role.as_str().to_owned());
            }
            None => {
                let role = if self.system { "system" } else { "anonymous" };
                m.insert("role".to_owned(), role.to_owned());
            }
        }
        if let Some(key) = &self.idempotency_key {
            m.insert("idempotency_key".to_owned(), key.clone());
        }
        m
    }
}

/// The signed-in actor a command needs. The HTTP layer only calls such commands for signed-in
/// callers, so a missing actor is a programming error surfaced as a refusal.
pub(crate) fn actor(ctx: &CommandContext) -> Result<Actor, CommandError> {
    ctx.actor.ok_or_else(|| {
        CommandError::rejected(
            "unauthenticated",
            Violation::Forbidden,
            "this needs a signed-in user",
        )
    })
}

/// A key reused for a different request, found by the command layer (the HTTP layer catches
/// most reuses first, by fingerprint).
pub(crate) fn key_reused() -> CommandError {
    CommandError::rejected(
        "idempotency_key_reused",
        Violation::Invalid,
        "this Idempotency-Key was used for a different request",
    )
}

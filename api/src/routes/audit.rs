//! `/api/v1/audit`: the history for auditors and admins (docs/audit.md). Read-only: the log
//! in order, one stream whole, an aggregate's state at a past instant, and the verification of
//! the hash chain.

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{get, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use parking_infra::audit::{self, Verification};
use parking_infra::history::{self, LogFilter, StateAt, StateError, UnknownType};
use parking_infra::kafka::{envelope_text, Envelope};
use parking_infra::LoggedEvent;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult, Problem};
use crate::state::State;

/// Events per page of the JSON answer, by default and at most.
const PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
/// Events read per query while streaming NDJSON.
const STREAM_BATCH: i64 = 1000;
const NDJSON: &str = "application/x-ndjson";

/// Only auditors and admins read the history.
fn auditor(caller: &Authenticated) -> Result<(), ApiError> {
    if caller.0.reads_everything() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only auditors and admins read the history",
        ))
    }
}

/// An aggregate type named in a path: an unknown one is a resource that is not there.
fn aggregate_type(raw: &str) -> Result<&'static str, ApiError> {
    history::aggregate_type(raw).map_err(unknown_in_path)
}

fn unknown_in_path(unknown: UnknownType) -> ApiError {
    ApiError::not_found("unknown_aggregate_type", unknown.to_string())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this global position (default 0: from the first).
    pub after: Option<i64>,
    /// At most this many events: 1 to 1000, 100 when absent. With `Accept:
    /// application/x-ndjson`, no limit when absent.
    pub limit: Option<i64>,
    /// Only this aggregate type's events (`lot`, `slot`, `booking`, `payment`, `review`,
    /// `user`, `email_claim`).
    pub aggregate_type: Option<String>,
    /// Only events recorded at or after this instant (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only events recorded before this instant (RFC 3339).
    pub to: Option<DateTime<Utc>>,
}

/// A page of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// In global order, each in the Kafka contract's envelope.
    #[schema(value_type = Vec<Envelope>)]
    pub events: Vec<Box<RawValue>>,
    /// The `after` of the next page: the last event's position (`after` if there is none).
    pub next_after: i64,
}

/// One stream, whole.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stream {
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// In sequence order, each in the Kafka contract's envelope, with its metadata: who (user
    /// id and role), the request, correlation and causation ids, and when (`recorded_at`).
    #[schema(value_type = Vec<Envelope>)]
    pub events: Vec<Box<RawValue>>,
}

fn envelope(event: &LoggedEvent) -> Box<RawValue> {
    let text = String::from_utf8(envelope_text(event)).expect("serde_json writes UTF-8");
    RawValue::from_string(text).expect("an envelope is JSON")
}

/// The global log in order, every aggregate's events, in the Kafka contract's envelope (the
/// same secrets left out). Pages of JSON by default; with `Accept: application/x-ndjson`, one
/// envelope per line, streamed (what `parking-api history export` writes).
#[utoipa::path(
    tag = "audit",
    security(("bearer" = [])),
    params(EventsQuery),
    responses(
        (status = 200, body = EventPage, description = "A page; or NDJSON, one envelope a line"),
        (status = 400, description = "A parameter of the wrong type (`malformed_query`)", body = Problem),
        (status = 401, body = Problem),
        (status = 403, description = "Not an auditor or admin", body = Problem),
        (status = 422, description = "`limit` out of range (`invalid_limit`), `after` negative (`invalid_after`), `from` not before `to` (`invalid_time_range`), or an unknown `aggregate_type` (`unknown_aggregate_type`)", body = Problem),
    )
)]
#[get("/audit/events")]
pub async fn events(
    state: State,
    caller: Authenticated,
    request: HttpRequest,
    query: web::Query<EventsQuery>,
) -> ApiResult<HttpResponse> {
    auditor(&caller)?;
    let query = query.into_inner();
    let streaming = accepts_ndjson(&request);
    let limit = match query.limit {
        Some(limit) if (1..=MAX_PAGE).contains(&limit) || (streaming && limit >= 1) => Some(limit),
        Some(limit) => {
            return Err(ApiError::invalid(
                "invalid_limit",
                format!("limit must be from 1 to {MAX_PAGE}, not {limit}"),
            ))
        }
        None => (!streaming).then_some(PAGE),
    };
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::invalid(
            "invalid_after",
            "after must be 0 or more",
        ));
    }
    if let (Some(from), Some(to)) = (query.from, query.to) {
        if from >= to {
            return Err(ApiError::invalid(
                "invalid_time_range",
                "from must be before to",
            ));
        }
    }
    if let Some(raw) = query.aggregate_type.as_deref() {
        history::aggregate_type(raw)
            .map_err(|e| ApiError::invalid("unknown_aggregate_type", e.to_string()))?;
    }
    let filter = LogFilter {
        after,
        // What is recorded when the request starts: a stream of the log has an end.
        up_to: Some(state.log.recorded_head().await?),
        aggregate_type: query.aggregate_type,
        from: query.from,
        to: query.to,
    };
    if streaming {
        return Ok(HttpResponse::Ok().content_type(NDJSON).streaming(ndjson(
            state.log.clone(),
            filter,
            limit,
        )));
    }
    let limit = limit.unwrap_or(PAGE);
    let logged = history::read_filtered(&state.log, &filter, limit).await?;
    let next_after = logged.last().map_or(after, |e| e.global_position);
    Ok(HttpResponse::Ok().json(EventPage {
        events: logged.iter().map(envelope).collect(),
        next_after,
    }))
}

fn accepts_ndjson(request: &HttpRequest) -> bool {
    request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|t| t.trim().starts_with(NDJSON)))
}

/// The events `filter` selects (at most `limit`), one envelope per line, read in batches as
/// the client takes them.
fn ndjson(
    log: parking_infra::EventLog,
    filter: LogFilter,
    limit: Option<i64>,
) -> impl futures::Stream<Item = Result<Bytes, sqlx::Error>> {
    let left = limit.unwrap_or(i64::MAX);
    futures::stream::try_unfold((log, filter, left), |(log, mut filter, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let batch = history::read_filtered(&log, &filter, left.min(STREAM_BATCH)).await?;
        let Some(last) = batch.last() else {
            return Ok(None);
        };
        filter.after = last.global_position;
        let mut lines = Vec::with_capacity(batch.len() * 512);
        for event in &batch {
            lines.extend_from_slice(&envelope_text(event));
            lines.push(b'\n');
        }
        let left = left - batch.len() as i64;
        Ok(Some((Bytes::from(lines), (log, filter, left))))
    })
}

/// One aggregate's whole stream, in order, each event with its metadata.
#[utoipa::path(
    tag = "audit",
    security(("bearer" = [])),
    params(
        ("aggregate_type" = String, Path, description = "lot, slot, booking, payment, review, user or email_claim"),
        ("aggregate_id" = String, Path),
    ),
    responses(
        (status = 200, body = Stream),
        (status = 401, body = Problem),
        (status = 403, description = "Not an auditor or admin", body = Problem),
        (status = 404, description = "No such aggregate type (`unknown_aggregate_type`) or stream (`stream_not_found`)", body = Problem),
    )
)]
#[get("/audit/streams/{aggregate_type}/{aggregate_id}")]
pub async fn stream(
    state: State,
    caller: Authenticated,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    auditor(&caller)?;
    let (kind, id) = path.into_inner();
    let kind = aggregate_type(&kind)?;
    let logged = history::read_stream(&state.log, kind, &id, None).await?;
    if logged.is_empty() {
        return Err(ApiError::not_found(
            "stream_not_found",
            format!("no {kind} {id:?} has recorded an event"),
        ));
    }
    Ok(HttpResponse::Ok().json(Stream {
        aggregate_type: kind.to_owned(),
        aggregate_id: id,
        events: logged.iter().map(envelope).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StateQuery {
    /// The instant (RFC 3339); now when absent.
    pub at: Option<DateTime<Utc>>,
}

/// An aggregate's state at an instant: its events recorded until then, upcast to their current
/// versions and applied in order, as its command handler would have loaded it then. Secrets
/// (password hashes, payment client secrets, camera credentials) are left out.
#[utoipa::path(
    tag = "audit",
    security(("bearer" = [])),
    params(
        ("aggregate_type" = String, Path, description = "lot, slot, booking, payment, review, user or email_claim"),
        ("aggregate_id" = String, Path),
        StateQuery,
    ),
    responses(
        (status = 200, body = StateAt),
        (status = 400, description = "`at` not an RFC 3339 instant (`malformed_query`)", body = Problem),
        (status = 401, body = Problem),
        (status = 403, description = "Not an auditor or admin", body = Problem),
        (status = 404, description = "No such aggregate type (`unknown_aggregate_type`), or the stream had recorded nothing by then (`stream_not_found`)", body = Problem),
    )
)]
#[get("/audit/streams/{aggregate_type}/{aggregate_id}/state")]
pub async fn state_at(
    state: State,
    caller: Authenticated,
    path: web::Path<(String, String)>,
    query: web::Query<StateQuery>,
) -> ApiResult<HttpResponse> {
    auditor(&caller)?;
    let (kind, id) = path.into_inner();
    let kind = aggregate_type(&kind)?;
    let at = query.at.unwrap_or_else(|| state.now());
    match history::state_at(&state.log, kind, &id, at).await {
        Ok(Some(replayed)) => Ok(HttpResponse::Ok().json(replayed)),
        Ok(None) => Err(ApiError::not_found(
            "stream_not_found",
            format!("no {kind} {id:?} had recorded an event by {at}"),
        )),
        Err(StateError::UnknownType(unknown)) => Err(unknown_in_path(unknown)),
        Err(StateError::Database(e)) => Err(e.into()),
        Err(StateError::Decode(e)) => Err(ApiError::internal(e)),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// Walk the whole chain from the first event instead of resuming from the latest signed
    /// checkpoint.
    #[serde(default)]
    pub full: bool,
}

/// Checks the history's integrity: walks the hash chain (from the latest signed checkpoint,
/// or from the first event) to the head, and reports the first broken link: its position, the
/// event there, and what differs. A chain found intact leaves a new checkpoint at the head.
#[utoipa::path(
    tag = "audit",
    security(("bearer" = [])),
    params(VerifyQuery),
    responses(
        (status = 200, body = Verification, description = "The check ran: `intact` tells its finding"),
        (status = 401, body = Problem),
        (status = 403, description = "Not an auditor or admin", body = Problem),
    )
)]
#[get("/audit/verify")]
pub async fn verify(
    state: State,
    caller: Authenticated,
    query: web::Query<VerifyQuery>,
) -> ApiResult<HttpResponse> {
    auditor(&caller)?;
    let report = audit::verify(&state.pool, state.data_key.as_ref(), query.full, |_| {}).await?;
    Ok(HttpResponse::Ok().json(report))
}

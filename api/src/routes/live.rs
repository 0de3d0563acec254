//! `GET /ws`: the live hub's WebSocket (docs/live.md).

use std::time::SystemTime;

use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::bearer;
use crate::error::{ApiError, ApiResult, Problem};
use crate::live::messages::ServerMessage;
use crate::live::{self, Connection, Refusal, Topic};
use crate::state::State;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConnectQuery {
    /// The bearer token, for clients that cannot set `Authorization` on a WebSocket (browsers).
    pub token: Option<String>,
    /// Catch up: the `position` of the last message this client had. The messages after it
    /// (of the topics it follows now) come first, then `connected`; too far back, a `resync`
    /// message instead.
    pub after: Option<i64>,
    /// Lots to follow from the start, comma-separated: `lot:<id>,lot:<id>`. With `after`, their
    /// missed messages are caught up too.
    pub subscribe: Option<String>,
}

/// Live changes over a WebSocket. Upgrade with a bearer token (`Authorization` or `?token=`);
/// each message is a JSON text frame with a `type`.
///
/// **Client → server**: `{"subscribe": "lot:<lot_id>"}` (reply `subscribed`, with the position
/// after which the lot's messages follow) and `{"unsubscribe": "lot:<lot_id>"}` (reply
/// `unsubscribed`); a refused request gets `error` with a `code` (`bad_json`, `bad_message`,
/// `bad_topic`, `unknown_lot`, `too_many_subscriptions`, `unavailable`) and changes nothing.
/// At most 4096 bytes a message.
///
/// **Server → client**, each made of one event of the global log, with its `position` and its
/// `topic`, in log order:
/// - on `lot:<id>` (subscribed): slot changes (`SlotReserved`, `SlotReleased`,
///   `SlotOccupancyObserved`, `SlotAdded`, ... with `lot_id`, `slot_id`, `status`,
///   `available_slots`) and lot changes (`LotUpdated`, `LotDeactivated`, with `is_active`,
///   `hourly_rate_cents`, `available_slots`);
/// - on `user:<your id>` (without subscribing): your bookings' events (`booking`, as
///   `GET /api/v1/bookings/{id}` shows it) and your payments' (`payment`).
///
/// Control messages: `connected` (live from `position`), `subscribed`, `unsubscribed`,
/// `resync` (`after` too far back: reload over HTTP), `error`.
///
/// **Closes**: 1001 server shutting down, 1002 protocol error, 1009 message too big, 4001 token
/// expired, 4002 too slow (`WS_BUFFER_MESSAGES` messages waiting), 4003 idle (nothing heard,
/// not even a pong, for `WS_IDLE_SECONDS`). The server pings every `WS_PING_SECONDS`.
/// Reconnect with `?after=<last position>` to miss nothing.
#[utoipa::path(
    tag = "real time",
    security(("bearer" = [])),
    params(ConnectQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; the frames are `ServerMessage`s", body = ServerMessage),
        (status = 400, description = "Not a WebSocket handshake (`not_a_websocket`), `after` not an integer (`malformed_query`) or not a position of the log (`invalid_after`), a malformed topic (`bad_topic`), more topics than allowed (`too_many_subscriptions`)", body = Problem),
        (status = 401, description = "No token, or a bad or expired one", body = Problem),
        (status = 404, description = "A lot of `subscribe` does not exist (`unknown_lot`)", body = Problem),
        (status = 503, description = "`WS_MAX_CONNECTIONS` open (`too_many_connections`), or the process is stopping (`shutting_down`); with `Retry-After`", body = Problem),
    )
)]
#[get("/ws")]
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: State,
    query: web::Query<ConnectQuery>,
) -> ApiResult<HttpResponse> {
    let ConnectQuery {
        token,
        after,
        subscribe,
    } = query.into_inner();
    let token = match (bearer(&req), token.as_deref()) {
        (Some(token), _) | (None, Some(token)) => token,
        (None, None) => {
            return Err(ApiError::unauthorized(
                "unauthenticated",
                "send the token in Authorization: Bearer <token> or ?token=",
            ))
        }
    };
    let (actor, expires_at) = state.tokens.verify_until(token)?;
    // Sign-in tolerates a little clock skew past the expiry; a connection that would be closed
    // at once (4001) is refused instead.
    if expires_at <= SystemTime::now() {
        return Err(ApiError::unauthorized(
            "token_expired",
            "the token has expired; sign in again",
        ));
    }
    let lots = lots_to_follow(subscribe.as_deref(), state.hub.settings().max_subscriptions)?;
    check_lots_exist(&state, &lots).await?;
    if let Some(after) = after {
        let head = state.log.recorded_head().await?;
        if !(0..=head).contains(&after) {
            return Err(ApiError::bad_request(
                "invalid_after",
                format!("after must be a position of the event log, 0 to {head}"),
            ));
        }
    }
    let (response, session, stream) = actix_ws::handle(&req, body).map_err(|_| {
        ApiError::bad_request(
            "not_a_websocket",
            "GET /ws upgrades to a WebSocket: send Connection: Upgrade, Upgrade: websocket and \
             Sec-WebSocket-Key/Version",
        )
    })?;
    let joined = state
        .hub
        .join(actor.user_id, &lots, after)
        .map_err(|refusal| match refusal {
            Refusal::Full => ApiError::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                "this node has all the WebSocket connections it takes; retry (another node)",
            )
            .retry_after(5),
            Refusal::Closing => ApiError::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "this node is shutting down; retry (another node)",
            )
            .retry_after(1),
        })?;
    let stream = stream.max_frame_size(live::MAX_CLIENT_MESSAGE);
    let remaining = expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let connection = Connection {
        hub: state.hub.clone(),
        pool: state.pool.clone(),
        joined,
        user: actor.user_id,
        lots,
        after,
        expires: tokio::time::Instant::now() + remaining,
    };
    actix_web::rt::spawn(live::serve(connection, session, stream));
    Ok(response)
}

/// The lots of `?subscribe=`.
fn lots_to_follow(raw: Option<&str>, max: usize) -> Result<Vec<Uuid>, ApiError> {
    let mut lots = Vec::new();
    for topic in raw.unwrap_or("").split(',').map(str::trim) {
        if topic.is_empty() {
            continue;
        }
        let lot = Topic::parse_lot(topic).ok_or_else(|| {
            ApiError::bad_request("bad_topic", format!("{topic:?} is not lot:<lot id>"))
        })?;
        if !lots.contains(&lot) {
            lots.push(lot);
        }
    }
    if lots.len() > max {
        return Err(ApiError::bad_request(
            "too_many_subscriptions",
            format!("a connection follows at most {max} lots"),
        ));
    }
    Ok(lots)
}

async fn check_lots_exist(state: &State, lots: &[Uuid]) -> Result<(), ApiError> {
    if lots.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = lots.iter().map(Uuid::to_string).collect();
    let found = parking_infra::log::existing_streams(&state.pool, "lot", &ids).await?;
    match ids.iter().find(|id| !found.contains(id)) {
        Some(missing) => Err(ApiError::not_found(
            "unknown_lot",
            format!("there is no lot {missing}"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_lists_lots() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let raw = format!("lot:{a}, lot:{b},lot:{a},");
        assert_eq!(lots_to_follow(Some(&raw), 2).unwrap(), [a, b]);
        assert!(lots_to_follow(None, 2).unwrap().is_empty());
        assert_eq!(
            lots_to_follow(Some(&raw), 1).unwrap_err().code,
            "too_many_subscriptions"
        );
        assert_eq!(
            lots_to_follow(Some("user:x"), 2).unwrap_err().code,
            "bad_topic"
        );
    }
}

//! `Idempotency-Key` on writes: the same key and request return the first answer again,
//! without a second effect.
//!
//! Keys are scoped by caller (the token's user, or `anonymous`), fingerprinted with the
//! method, path and body, and answered from `idempotency_keys`:
//! - first use: the request runs; its answer is stored, unless it asks to be retried (a 5xx,
//!   or any answer with `Retry-After`), which forgets the key so that the retry runs;
//! - same key, same request, answered: the stored answer is replayed, with
//!   `Idempotent-Replayed: true`;
//! - same key, same request, still running: 409 `idempotency_request_in_progress`;
//! - same key, different request: 422 `idempotency_key_reused`.
//!
//! The key also goes into the metadata of the events the request causes.

use actix_web::body::{self, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};
use parking_infra::idempotency::{self, Claim, StoredResponse};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::headers::{EVENT_POSITION, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};

/// The request's idempotency key, for the command metadata.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    let key = value.to_str().unwrap_or("").trim();
    let valid = !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(key.to_owned())
}

/// Middleware around the API's routes.
pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // Signing in changes nothing and its answer is a secret: never stored.
    let applies = is_write(req.method()) && req.path() != "/api/v1/auth/login";
    let Some(value) = req
        .headers()
        .get(&IDEMPOTENCY_KEY)
        .filter(|_| applies)
        .cloned()
    else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let key = match parse_key(&value) {
        Ok(key) => key,
        Err(e) => return Ok(req.into_response(e.error_response())),
    };
    let Some(pool) = (req.app_data::<web::Data<sqlx::PgPool>>()).map(|p| p.get_ref().clone())
    else {
        return Ok(
            req.into_response(ApiError::internal("the database pool is missing").error_response())
        );
    };
    // A bad token is the handler's to refuse (401); such a request stores nothing.
    let scope = match crate::auth::caller(req.request()) {
        Ok(Some(actor)) => actor.user_id.to_string(),
        Ok(None) => "anonymous".to_owned(),
        Err(_) => return Ok(next.call(req).await?.map_into_boxed_body()),
    };

    let body = match req.extract::<web::Bytes>().await {
        Ok(body) => body,
        Err(e) => {
            let status = e.as_response_error().status_code();
            let refused = ApiError::new(status, "unreadable_body", e.to_string());
            return Ok(req.into_response(refused.error_response()));
        }
    };
    let mut hasher = Sha256::new();
    hasher.update(req.method().as_str());
    hasher.update([0]);
    hasher.update(req.path());
    hasher.update([0]);
    hasher.update(req.query_string());
    hasher.update([0]);
    hasher.update(&body);
    let fingerprint = hasher.finalize();
    req.set_payload(Payload::from(body));

    let claim = match idempotency::claim(&pool, &scope, &key, &fingerprint).await {
        Ok(claim) => claim,
        Err(e) => return Ok(req.into_response(ApiError::from(e).error_response())),
    };
    match claim {
        Claim::Run => {}
        Claim::InProgress => {
            let busy = ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_request_in_progress",
                "a request with this Idempotency-Key is still being processed; retry shortly",
            )
            .retry_after(1);
            return Ok(req.into_response(busy.error_response()));
        }
        Claim::Mismatch => {
            let reused = ApiError::invalid(
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            );
            return Ok(req.into_response(reused.error_response()));
        }
        Claim::Replay(stored) => return Ok(req.into_response(replay(stored))),
    }

    req.extensions_mut().insert(IdempotencyKey(key.clone()));
    let response = match next.call(req).await {
        Ok(response) => response,
        Err(e) => {
            record(pool.clone(), scope, key, None).await;
            return Err(e);
        }
    };
    let (request, response) = response.into_parts();
    let (head, body) = response.into_parts();
    let Ok(bytes) = body::to_bytes(body).await else {
        record(pool.clone(), scope, key, None).await;
        return Err(ApiError::internal("response body unreadable").into());
    };
    let header = |name| {
        head.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    // An answer that asks to be retried (5xx, contention, throttling: anything with Retry-After)
    // is not the request's result: forget the key so that the retry runs.
    let retryable = head.status().is_server_error() || head.headers().contains_key(RETRY_AFTER);
    let outcome = (!retryable).then(|| StoredResponse {
        status: head.status().as_u16(),
        content_type: header(CONTENT_TYPE),
        location: header(LOCATION),
        event_position: header(EVENT_POSITION).and_then(|v| v.parse().ok()),
        body: bytes.to_vec(),
    });
    record(pool.clone(), scope, key, outcome).await;
    Ok(ServiceResponse::new(
        request,
        head.set_body(BoxBody::new(bytes)),
    ))
}

/// Stores the answer (or forgets the key when there is none to keep). The answer stands
/// either way; if the database refuses now (the outage that caused a 503, say), a background
/// task keeps trying for a while, so the key does not stay "in progress" until it is stale.
async fn record(pool: sqlx::PgPool, scope: String, key: String, answer: Option<StoredResponse>) {
    async fn once(
        pool: &sqlx::PgPool,
        scope: &str,
        key: &str,
        answer: &Option<StoredResponse>,
    ) -> Result<(), sqlx::Error> {
        match answer {
            Some(stored) => idempotency::complete(pool, scope, key, stored).await,
            None => idempotency::abandon(pool, scope, key).await,
        }
    }
    if once(&pool, &scope, &key, &answer).await.is_ok() {
        return;
    }
    tokio::spawn(async move {
        for attempt in 1..=10u32 {
            tokio::time::sleep(std::time::Duration::from_secs(
                u64::from(attempt.min(6)) * 5,
            ))
            .await;
            match once(&pool, &scope, &key, &answer).await {
                Ok(()) => return,
                Err(e) if attempt == 10 => {
                    tracing::error!(error = %e, "gave up recording an idempotency key's outcome")
                }
                Err(_) => {}
            }
        }
    });
}

fn replay(stored: StoredResponse) -> HttpResponse {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    if let Some(content_type) = stored.content_type {
        response.insert_header((CONTENT_TYPE, content_type));
    }
    if let Some(location) = stored.location {
        response.insert_header((LOCATION, location));
    }
    if let Some(position) = stored.event_position {
        response.insert_header((EVENT_POSITION, position));
    }
    response.body(stored.body)
}

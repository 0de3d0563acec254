//! Request ids: one per request, taken from a sane incoming `X-Request-Id` or made up,
//! returned in the response header, put on every log line of the request and into every
//! error body, and recorded in the metadata of every event the request causes.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage};
use tracing::Instrument;

use crate::headers::REQUEST_ID;
use crate::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

tokio::task_local! {
    /// The current request's id, for code that has no request at hand (error responses).
    static CURRENT: RequestId;
}

/// The id of the request being served on this task, if any.
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(Clone::clone).ok()
}

fn accept_incoming(value: &HeaderValue) -> Option<String> {
    let id = value.to_str().ok()?.trim();
    let sane = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    sane.then(|| id.to_owned())
}

/// Middleware: assigns the id, scopes the request's work in a span, logs one line per request.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(accept_incoming)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let request_id = RequestId(id.clone());
    req.extensions_mut().insert(request_id.clone());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.path());
    let started = Instant::now();
    let mut response = CURRENT
        .scope(request_id, next.call(req))
        .instrument(span.clone())
        .await?;
    let status = response.status();
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(metrics) = response.request().app_data::<web::Data<Metrics>>() {
        let route = response.request().match_pattern();
        metrics.observe_request(
            response.request().method().as_str(),
            route,
            status.as_u16(),
            elapsed,
        );
    }
    span.in_scope(|| {
        let elapsed_ms = elapsed * 1000.0;
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), elapsed_ms, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), elapsed_ms, "request served");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

impl FromRequest for RequestId {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let id = req.extensions().get::<RequestId>().cloned();
        // Outside the middleware (never in the app) a fresh id is still better than none.
        std::future::ready(Ok(
            id.unwrap_or_else(|| RequestId(uuid::Uuid::new_v4().to_string()))
        ))
    }
}

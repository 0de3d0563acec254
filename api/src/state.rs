//! What every handler can reach.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage};
use parking_commands::{CommandContext, Commands, PositionCell};
use parking_domain::Actor;
use parking_projections::Projections;
use sqlx::PgPool;

use crate::auth::Tokens;
use crate::error::ApiError;
use crate::idempotency::IdempotencyKey;
use crate::metrics::Metrics;
use crate::request_id::RequestId;
use crate::throttle::LoginThrottle;

pub struct AppState {
    pub pool: PgPool,
    pub commands: Commands,
    pub tokens: Arc<Tokens>,
    pub login_throttle: LoginThrottle,
    pub metrics: Arc<Metrics>,
    pub projections: Projections,
    pub log: parking_infra::EventLog,
    /// How long a request waits for the read models (`READ_WAIT_MS`).
    pub read_wait: std::time::Duration,
    /// How nearby search finds its candidates (`NEARBY_SEARCH`).
    pub nearby: parking_projections::lots::NearbyIndex,
    /// `STRIPE_WEBHOOK_SECRET`; `None`: no payment provider.
    pub stripe_webhook_secret: Option<secrecy::SecretString>,
    /// The live hub behind `GET /ws`.
    pub hub: Arc<crate::live::Hub>,
    /// The DATEX II feed's publisher (`DATEX2_*`), and its last document.
    pub feed: parking_infra::config::FeedConfig,
    pub feed_cache: crate::routes::feeds::FeedCache,
    /// `DATA_KEY_FILE`: signs the audit's checkpoints.
    pub data_key: Option<parking_infra::keys::MasterKey>,
}

pub type State = actix_web::web::Data<Arc<AppState>>;

impl AppState {
    /// The command context of one request.
    pub fn context(&self, actor: Option<Actor>, meta: &RequestMeta) -> CommandContext {
        let mut ctx = CommandContext::for_request(
            actor,
            meta.request_id.to_string(),
            self.commands.clock().now(),
        );
        ctx.idempotency_key = meta.idempotency_key.clone();
        ctx.with_position_cell(meta.written.clone())
    }

    /// Makes sure what `ctx`'s commands wrote is numbered in the log, so that the answer can
    /// carry its position (`X-Event-Position`).
    pub async fn recorded(&self, ctx: &CommandContext) -> Result<i64, ApiError> {
        Ok(self.commands.settle(ctx).await?)
    }

    /// Waits until the read models show what `ctx`'s commands wrote, so that the answer of a
    /// write can be read from them.
    pub async fn caught_up(&self, ctx: &CommandContext) -> Result<(), ApiError> {
        let position = self.recorded(ctx).await?;
        self.caught_up_to(position).await
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.commands.clock().now()
    }

    /// Waits until every read model shows the log up to `position`.
    pub async fn caught_up_to(&self, position: i64) -> Result<(), ApiError> {
        if position == 0 {
            return Ok(());
        }
        if position > self.log.head() {
            // Beyond what this process has seen; the log itself decides.
            let head = self.log.recorded_head().await?;
            if position > head {
                return Err(ApiError::bad_request(
                    "invalid_min_position",
                    format!(
                        "X-Min-Position {position} is beyond the end of the event log ({head})"
                    ),
                ));
            }
        }
        let started = Instant::now();
        let waited = self.projections.wait_for(position, self.read_wait).await;
        let micros = started.elapsed().as_micros() as u64;
        let _ = WAITED.try_with(|total| total.fetch_add(micros, Ordering::Relaxed));
        waited.map_err(|lagging| {
            tracing::warn!(%lagging, "read model behind the requested position");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "read_model_lagging",
                format!("the read models have not yet reached position {position}; retry shortly"),
            )
            .retry_after(1)
        })
    }
}

tokio::task_local! {
    /// Microseconds the current request spent waiting for read models (the consistency
    /// middleware reports them in `Server-Timing`).
    pub(crate) static WAITED: Arc<AtomicU64>;
}

/// What the middlewares learned about a request: its id and its idempotency key.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: RequestId,
    pub idempotency_key: Option<String>,
    /// Where the request's commands note their log position (`X-Event-Position`).
    pub written: PositionCell,
}

impl FromRequest for RequestMeta {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(
        req: &actix_web::HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        let request_id = match RequestId::from_request(req, payload).into_inner() {
            Ok(id) => id,
            Err(e) => return std::future::ready(Err(e)),
        };
        let idempotency_key = req
            .extensions()
            .get::<IdempotencyKey>()
            .map(|k| k.0.clone());
        // Outside the consistency middleware (unit tests) nobody reads it: a fresh cell.
        let written = req
            .extensions()
            .get::<PositionCell>()
            .cloned()
            .unwrap_or_default();
        std::future::ready(Ok(Self {
            request_id,
            idempotency_key,
            written,
        }))
    }
}

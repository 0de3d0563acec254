//! What every handler can reach.

use std::sync::Arc;

use parking_commands::{CommandContext, Commands};
use parking_domain::Actor;
use sqlx::PgPool;

use actix_web::{FromRequest, HttpMessage};

use crate::auth::Tokens;
use crate::idempotency::IdempotencyKey;
use crate::metrics::Metrics;
use crate::request_id::RequestId;
use crate::throttle::LoginThrottle;

pub struct AppState {
    pub pool: PgPool,
    pub commands: Commands,
    pub tokens: Tokens,
    pub login_throttle: LoginThrottle,
    pub metrics: Metrics,
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
        ctx
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.commands.clock().now()
    }
}

/// What the middlewares learned about a request: its id and its idempotency key.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: RequestId,
    pub idempotency_key: Option<String>,
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
        std::future::ready(Ok(Self {
            request_id,
            idempotency_key,
        }))
    }
}

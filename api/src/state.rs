//! What every handler can reach.

use std::sync::Arc;

use parking_commands::{CommandContext, Commands};
use parking_domain::Actor;
use sqlx::PgPool;

use crate::auth::Tokens;
use crate::request_id::RequestId;

pub struct AppState {
    pub pool: PgPool,
    pub commands: Commands,
    pub tokens: Tokens,
}

pub type State = actix_web::web::Data<Arc<AppState>>;

impl AppState {
    /// The command context of one request.
    pub fn context(&self, actor: Option<Actor>, request_id: &RequestId) -> CommandContext {
        CommandContext::for_request(actor, request_id.to_string(), self.commands.clock().now())
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.commands.clock().now()
    }
}

//! Users: the profile behind `GET /auth/me`, and credentials for sign-in.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::EventEnvelope;
use parking_domain::personal::ERASED;
use parking_domain::user::{User, UserEvent};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::model::Projection;
use crate::{aggregate_uuid, occurred_at};

pub struct UsersProjection;

#[async_trait]
impl Projection<User> for UsersProjection {
    fn name(&self) -> &'static str {
        "users"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_users"]
    }

    fn holds_personal_data(&self) -> bool {
        true
    }

    /// The person's address and name.
    async fn erase(&self, db: &mut PgConnection, person: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE rm_users SET email = $2, full_name = $2 WHERE id = $1")
            .bind(person)
            .bind(ERASED)
            .execute(db)
            .await?;
        Ok(())
    }

    /// Credentials are not this read model's business (and arrive without their hash from
    /// Kafka, so they are not even decoded).
    fn handles(&self, event_type: &str) -> bool {
        event_type != "UserCredentialsSet"
    }

    async fn apply(
        &self,
        db: &mut PgConnection,
        event: &EventEnvelope<User>,
    ) -> Result<(), sqlx::Error> {
        let id = aggregate_uuid(event)?;
        let version = event.sequence as i64;
        match &event.payload {
            UserEvent::UserRegistered {
                email,
                full_name,
                role,
            } => {
                sqlx::query(
                    "INSERT INTO rm_users (id, email, full_name, role, created_at, version)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(email.as_str())
                .bind(full_name)
                .bind(role.as_str())
                .bind(occurred_at(event)?)
                .bind(version)
                .execute(db)
                .await?;
            }
            // Secrets stay on the write side (sign-in reads them there); see `handles`.
            UserEvent::UserCredentialsSet { .. } => {}
            // Reaches this projection as `erase`.
            UserEvent::UserErased { .. } => {}
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub full_name: String,
    /// `user`, `parking_owner`, `admin`, `auditor` or `service`.
    pub role: String,
    pub created_at: DateTime<Utc>,
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<UserView>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, full_name, role, created_at FROM rm_users WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

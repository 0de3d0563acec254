//! Sign-up: claim the address, register the user, confirm the claim.

use parking_domain::user::{ClaimCommand, Email, EmailClaim, UserCommand};
use parking_domain::{Role, Violation};
use uuid::Uuid;

use crate::context::CommandContext;
use crate::error::CommandError;
use crate::service::Commands;

pub struct NewUser {
    pub email: Email,
    pub password: String,
    pub full_name: String,
    pub role: Role,
}

impl Commands {
    /// Registers a user and returns their id. People may sign themselves up as `user` or
    /// `parking_owner`; other roles need an admin (or the system, from the admin CLI).
    #[tracing::instrument(skip_all, fields(role = %new.role))]
    pub async fn register_user(
        &self,
        ctx: &CommandContext,
        new: NewUser,
    ) -> Result<Uuid, CommandError> {
        let granted_by_admin = ctx.system || ctx.actor.is_some_and(|a| a.is_admin());
        if !new.role.is_self_assignable() && !granted_by_admin {
            return Err(CommandError::rejected(
                "role_not_allowed",
                Violation::Forbidden,
                format!("the {} role cannot be chosen at sign-up", new.role),
            ));
        }
        password::check_policy(&new.password)?;

        let user_id = CommandContext::new_id();
        let claim_id = EmailClaim::id_for(&new.email).to_string();
        let claim = ClaimCommand::Claim {
            email: new.email.clone(),
            user_id,
            now: ctx.now,
        };
        let claimed = self.claims.execute(&claim_id, claim, ctx).await?;
        let ctx = claimed
            .last()
            .map_or_else(|| ctx.clone(), |e| ctx.caused_by(e));

        let registered = async {
            let password_hash = password::hash(new.password, self.settings.bcrypt_cost).await?;
            let register = UserCommand::Register {
                email: new.email,
                full_name: new.full_name,
                role: new.role,
                password_hash,
            };
            self.users
                .execute(&user_id.to_string(), register, &ctx)
                .await
        }
        .await;
        if let Err(e) = registered {
            // Compensate: give the address back. If this fails too, the claim lapses by itself
            // (CLAIM_TAKEOVER_AFTER).
            let release = ClaimCommand::Release { user_id };
            if let Err(release_error) = self.claims.execute(&claim_id, release, &ctx).await {
                tracing::error!(error = %release_error, %user_id, "could not release an e-mail claim");
            }
            return Err(e);
        }
        self.claims
            .execute(&claim_id, ClaimCommand::Confirm { user_id }, &ctx)
            .await?;
        Ok(user_id)
    }
}

/// Password hashing (bcrypt) off the async runtime's threads.
pub mod password {
    use super::*;

    pub const MIN_LEN: usize = 8;
    pub const MAX_LEN: usize = 72; // bcrypt ignores bytes past 72

    pub fn check_policy(password: &str) -> Result<(), CommandError> {
        if password.chars().count() < MIN_LEN || password.len() > MAX_LEN {
            return Err(CommandError::rejected(
                "weak_password",
                Violation::Invalid,
                format!("password must be {MIN_LEN} to {MAX_LEN} bytes long"),
            ));
        }
        Ok(())
    }

    pub async fn hash(password: String, cost: u32) -> Result<String, CommandError> {
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|e| CommandError::Infrastructure(e.into()))?
            .map_err(|e| CommandError::Infrastructure(e.into()))
    }

    /// Checks `password` against `stored_hash`. With no hash (unknown e-mail) it still spends
    /// the time of a real check, so response times do not reveal which addresses exist.
    pub async fn verify(password: String, stored_hash: Option<String>) -> bool {
        const DECOY: &str = "$2b$12$C6UzMDM.H6dfI/f/IKcEeO5ELrQ0A7/8NuJVWaLQmJfpT7G1mMyHe";
        let known = stored_hash.is_some();
        let hash = stored_hash.unwrap_or_else(|| DECOY.to_owned());
        let matches =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        known && matches
    }
}

//! Sign-up: claim the address, register the user, confirm the claim.

use parking_domain::user::{
    validate_full_name, ClaimCommand, Email, EmailClaim, User, UserCommand, UserError,
};
use parking_domain::{Role, Violation};
use secrecy::SecretString;
use uuid::Uuid;

use crate::context::{key_reused, CommandContext};
use crate::error::CommandError;
use crate::service::Commands;

pub struct NewUser {
    pub email: Email,
    pub password: SecretString,
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
        validate_full_name(&new.full_name)?;

        // The address is part of the derivation: one key used for two addresses names two users.
        let user_id = ctx.new_id(&format!("user {}", new.email));
        let claim_id = EmailClaim::id_for(&new.email).to_string();
        if ctx.may_be_retry() {
            let earlier: User = self.users.load(&user_id.to_string()).await?;
            if let Some(made) = earlier.registered {
                // Only the same request may learn of this account: same name, role and password.
                let same = made.email == new.email
                    && made.full_name == new.full_name.trim()
                    && made.role == new.role
                    && self
                        .verify_password(new.password, earlier.password_hash)
                        .await;
                if !same {
                    return Err(key_reused());
                }
                // The first attempt registered the user; make sure its claim is confirmed.
                self.claims
                    .execute(&claim_id, ClaimCommand::Confirm { user_id }, ctx)
                    .await?;
                ctx.mark_unsettled();
                return Ok(user_id);
            }
        }
        self.repair_claim(&claim_id, ctx).await?;
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

impl Commands {
    /// Sets a new password for the account behind `email` (the operator's CLI: rotating a
    /// machine client's password). Tokens issued before stay valid until they expire.
    pub async fn set_password(
        &self,
        ctx: &CommandContext,
        email: &Email,
        new_password: SecretString,
    ) -> Result<Uuid, CommandError> {
        password::check_policy(&new_password)?;
        let account = self.credentials(email).await?.ok_or_else(|| {
            CommandError::rejected(
                "user_not_found",
                Violation::NotFound,
                "no user has this e-mail",
            )
        })?;
        let password_hash = password::hash(new_password, self.settings.bcrypt_cost).await?;
        let command = UserCommand::SetPassword { password_hash };
        (self.users)
            .execute(&account.user_id.to_string(), command, ctx)
            .await?;
        Ok(account.user_id)
    }
}

impl Commands {
    /// Erases a person, at their own request or an admin's (docs/audit.md, "Erasure"): their
    /// address is given back, their data key destroyed (every personal field of theirs reads
    /// `erased` from then on, in every replay, read model, export and message), and the
    /// account is closed (`UserErased`). History itself is not rewritten. Erasing twice is
    /// erasing once; a step that failed is completed by asking again.
    #[tracing::instrument(skip_all, fields(%user_id))]
    pub async fn erase_user(
        &self,
        ctx: &CommandContext,
        user_id: Uuid,
    ) -> Result<(), CommandError> {
        let by = match ctx.actor {
            Some(actor) if actor.user_id == user_id || actor.is_admin() => actor.user_id,
            None if ctx.system => Uuid::nil(),
            _ => {
                return Err(CommandError::rejected(
                    "forbidden",
                    Violation::Forbidden,
                    "only the person themselves or an admin may erase them",
                ))
            }
        };
        let user: User = self.users.load(&user_id.to_string()).await?;
        let Some(registered) = &user.registered else {
            return Err(UserError::NotFound.into());
        };
        if user.erased {
            return Ok(());
        }
        // Before the key goes: the claim's id is derived from the address.
        if !registered.email.is_erased() {
            let claim_id = EmailClaim::id_for(&registered.email).to_string();
            (self.claims)
                .execute(&claim_id, ClaimCommand::Release { user_id }, ctx)
                .await?;
        }
        (self.log.keys().erase(user_id).await)
            .map_err(|e| CommandError::Infrastructure(Box::new(e)))?;
        // The answers kept for their retried requests hold their data too.
        parking_infra::idempotency::forget_scope(self.log.pool(), &user_id.to_string())
            .await
            .map_err(|e| CommandError::Infrastructure(Box::new(e)))?;
        let erase = UserCommand::Erase { by, now: ctx.now };
        self.users.execute(&user_id.to_string(), erase, ctx).await?;
        Ok(())
    }
}

/// What signing in checks, read from the write side: password hashes never leave it (they are
/// in no read model, and published to Kafka without the hash).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: Uuid,
    pub role: Role,
    pub password_hash: Option<String>,
}

impl Commands {
    /// The account behind `email`, if a user registered with it: the address's claim names the
    /// user, whose stream holds role and password hash.
    pub async fn credentials(&self, email: &Email) -> Result<Option<Credentials>, CommandError> {
        let claim: EmailClaim = self
            .claims
            .load(&EmailClaim::id_for(email).to_string())
            .await?;
        let Some(user_id) = claim.holder_id() else {
            return Ok(None);
        };
        let user: User = self.users.load(&user_id.to_string()).await?;
        if user.erased {
            return Ok(None);
        }
        Ok(user.registered.map(|registered| Credentials {
            user_id,
            role: registered.role,
            password_hash: user.password_hash,
        }))
    }
}

impl Commands {
    /// A sign-up that registered its user but died before confirming the claim leaves an
    /// unconfirmed claim that would lapse; confirm it now, so the address stays taken.
    async fn repair_claim(&self, claim_id: &str, ctx: &CommandContext) -> Result<(), CommandError> {
        let claim: EmailClaim = self.claims.load(claim_id).await?;
        let Some(holder) = claim.unconfirmed_holder() else {
            return Ok(());
        };
        let user: User = self.users.load(&holder.to_string()).await?;
        if user.registered.is_some() {
            tracing::warn!(%holder, "confirming an e-mail claim left unconfirmed by an interrupted sign-up");
            self.claims
                .execute(claim_id, ClaimCommand::Confirm { user_id: holder }, ctx)
                .await?;
        }
        Ok(())
    }
}

/// Password rules and hashing (bcrypt), off the async runtime's threads.
pub mod password {
    use secrecy::{ExposeSecret, SecretString};

    use super::*;

    pub const MIN_CHARS: usize = 8;
    /// bcrypt ignores bytes past 72.
    pub const MAX_BYTES: usize = 72;

    pub fn check_policy(password: &SecretString) -> Result<(), CommandError> {
        let password = password.expose_secret();
        if password.chars().count() < MIN_CHARS || password.len() > MAX_BYTES {
            return Err(CommandError::rejected(
                "weak_password",
                Violation::Invalid,
                format!("password must have at least {MIN_CHARS} characters and at most {MAX_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    pub async fn hash(password: SecretString, cost: u32) -> Result<String, CommandError> {
        tokio::task::spawn_blocking(move || bcrypt::hash(password.expose_secret(), cost))
            .await
            .map_err(|e| CommandError::Infrastructure(e.into()))?
            .map_err(|e| CommandError::Infrastructure(e.into()))
    }

    pub(crate) async fn matches(password: SecretString, hash: String) -> bool {
        tokio::task::spawn_blocking(move || {
            bcrypt::verify(password.expose_secret(), &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }
}

impl Commands {
    /// Checks a sign-in password against the stored hash. With no hash (unknown e-mail) it
    /// checks against a decoy hash of the same cost, so response times do not reveal which
    /// addresses are registered.
    pub async fn verify_password(
        &self,
        password: SecretString,
        stored_hash: Option<String>,
    ) -> bool {
        let known = stored_hash.is_some();
        let hash = match stored_hash {
            Some(hash) => hash,
            None => match self.decoy_hash().await {
                Ok(decoy) => decoy,
                Err(_) => return false,
            },
        };
        password::matches(password, hash).await && known
    }

    async fn decoy_hash(&self) -> Result<String, CommandError> {
        let cost = self.settings.bcrypt_cost;
        self.decoy_hash
            .get_or_try_init(|| {
                password::hash(SecretString::from("decoy password, never valid"), cost)
            })
            .await
            .cloned()
    }
}

//! Bearer tokens (HS256 JWT) and the extractors that demand them.

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpRequest};
use jwt_simple::prelude::*;
use parking_domain::{Actor, Role};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::error::ApiError;

/// How far apart our clock and a token's may be.
const CLOCK_TOLERANCE_SECS: u64 = 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RoleClaim {
    role: Role,
}

pub struct Tokens {
    key: HS256Key,
    ttl: std::time::Duration,
}

pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
}

impl Tokens {
    /// With no secret, a random key is made: tokens then die with the process.
    pub fn new(secret: Option<&SecretString>, ttl: std::time::Duration) -> Self {
        let key = match secret {
            Some(secret) => HS256Key::from_bytes(secret.expose_secret().as_bytes()),
            None => {
                tracing::warn!(
                    "JWT_SECRET is not set: using a random signing key. Tokens will not survive a \
                     restart nor work across nodes. Never run production like this."
                );
                HS256Key::generate()
            }
        };
        Self { key, ttl }
    }

    pub fn issue(&self, user_id: Uuid, role: Role) -> Result<IssuedToken, ApiError> {
        let claims =
            Claims::with_custom_claims(RoleClaim { role }, Duration::from_secs(self.ttl.as_secs()))
                .with_subject(user_id);
        let token = self
            .key
            .authenticate(claims)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(IssuedToken {
            token,
            expires_in: self.ttl.as_secs(),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Actor, ApiError> {
        self.verify_until(token).map(|(actor, _)| actor)
    }

    /// The token's holder, and when the token expires.
    pub fn verify_until(&self, token: &str) -> Result<(Actor, std::time::SystemTime), ApiError> {
        let options = VerificationOptions {
            time_tolerance: Some(Duration::from_secs(CLOCK_TOLERANCE_SECS)),
            ..Default::default()
        };
        let claims = self
            .key
            .verify_token::<RoleClaim>(token, Some(options))
            .map_err(|e| {
                let expired = e
                    .downcast_ref::<jwt_simple::JWTError>()
                    .is_some_and(|e| matches!(e, jwt_simple::JWTError::TokenHasExpired));
                if expired {
                    ApiError::unauthorized("token_expired", "the token has expired; sign in again")
                } else {
                    ApiError::unauthorized("invalid_token", "the token is not valid")
                }
            })?;
        let Some(expires_at) = claims.expires_at else {
            return Err(ApiError::unauthorized(
                "invalid_token",
                "the token has no expiry",
            ));
        };
        let user_id = claims
            .subject
            .as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                ApiError::unauthorized("invalid_token", "the token has no valid subject")
            })?;
        let actor = Actor {
            user_id,
            role: claims.custom.role,
        };
        let expires_at =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires_at.as_secs());
        Ok((actor, expires_at))
    }
}

pub(crate) fn bearer(req: &HttpRequest) -> Option<&str> {
    let header = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The signed-in caller; rejects the request with 401 without a valid token.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated(pub Actor);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(caller(req).and_then(|actor| {
            actor.map(Authenticated).ok_or_else(|| {
                ApiError::unauthorized(
                    "unauthenticated",
                    "this needs an Authorization: Bearer token",
                )
            })
        }))
    }
}

/// The caller when a token was sent (and valid); anonymous otherwise. A bad token is still 401.
#[derive(Debug, Clone, Copy)]
pub struct MaybeAuthenticated(pub Option<Actor>);

impl FromRequest for MaybeAuthenticated {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(caller(req).map(MaybeAuthenticated))
    }
}

/// The caller named by the bearer token: `None` without a token, an error for a bad one.
pub fn caller(req: &HttpRequest) -> Result<Option<Actor>, ApiError> {
    let Some(token) = bearer(req) else {
        if req.headers().contains_key(AUTHORIZATION) {
            return Err(ApiError::unauthorized(
                "invalid_token",
                "expected Authorization: Bearer <token>",
            ));
        }
        return Ok(None);
    };
    let tokens = req
        .app_data::<web::Data<Tokens>>()
        .ok_or_else(|| ApiError::internal("the token keys are missing"))?;
    tokens.verify(token).map(Some)
}

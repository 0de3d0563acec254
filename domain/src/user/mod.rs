//! People who use the platform, and the uniqueness of their e-mail addresses.
//!
//! E-mail uniqueness is decided by its own tiny aggregate, [`EmailClaim`], whose id is derived
//! from the normalized address: two concurrent sign-ups with one address both try to append the
//! first event of the same stream, and optimistic concurrency lets exactly one win.

mod claim;
mod email;

pub use claim::{ClaimCommand, ClaimError, ClaimEvent, EmailClaim, CLAIM_TAKEOVER_AFTER};
pub use email::{Email, InvalidEmail};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::actor::Role;
use crate::error::{RuleError, Violation};
use crate::personal::ERASED;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub enum UserCommand {
    Register {
        email: Email,
        full_name: String,
        role: Role,
        password_hash: String,
    },
    /// A new password (as its hash), set by the operator: rotating a machine client's secret.
    SetPassword { password_hash: String },
    /// The person asked to be forgotten (or an admin did it for them): their data key is
    /// destroyed (`crate::personal`), and the account is closed for good.
    Erase { by: Uuid, now: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub enum UserEvent {
    /// Public facts about a new user.
    UserRegistered {
        email: Email,
        full_name: String,
        role: Role,
    },
    /// The user's password hash. Sensitive: kept in the store, never published or shown.
    UserCredentialsSet { password_hash: String },
    /// The person's data key was destroyed: their personal fields read [`ERASED`] everywhere,
    /// and they can no longer sign in. Consumers holding copies of their data drop them.
    UserErased { by: Uuid, at: DateTime<Utc> },
}

impl UserEvent {
    /// Event types that carry secrets; the relay and the audit API leave their payload out.
    pub const SENSITIVE: &'static [&'static str] = &["UserCredentialsSet"];
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            UserEvent::UserRegistered { .. } => "UserRegistered",
            UserEvent::UserCredentialsSet { .. } => "UserCredentialsSet",
            UserEvent::UserErased { .. } => "UserErased",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("this user is already registered")]
    AlreadyRegistered,
    #[error("no such user")]
    NotFound,
    #[error("full name must be 1 to 200 printable characters")]
    InvalidName,
    #[error("this user was erased")]
    Erased,
}

impl RuleError for UserError {
    fn code(&self) -> &'static str {
        match self {
            UserError::AlreadyRegistered => "user_already_registered",
            UserError::NotFound => "user_not_found",
            UserError::InvalidName => "invalid_full_name",
            UserError::Erased => "user_erased",
        }
    }

    fn violation(&self) -> Violation {
        match self {
            UserError::AlreadyRegistered => Violation::Conflict,
            UserError::NotFound => Violation::NotFound,
            UserError::InvalidName => Violation::Invalid,
            UserError::Erased => Violation::Forbidden,
        }
    }
}

/// A display name: trimmed, 1 to 200 characters.
pub fn validate_full_name(raw: &str) -> Result<String, UserError> {
    crate::text::single_line(raw, 200).ok_or(UserError::InvalidName)
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub registered: Option<RegisteredUser>,
    /// Sensitive: never serialized into API answers, only into snapshots.
    pub password_hash: Option<String>,
    /// Erased: the account is closed for good.
    #[serde(default)]
    pub erased: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredUser {
    pub email: Email,
    pub full_name: String,
    pub role: Role,
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            UserCommand::Register {
                email,
                full_name,
                role,
                password_hash,
            } => {
                if self.registered.is_some() {
                    return Err(UserError::AlreadyRegistered);
                }
                let full_name = validate_full_name(&full_name)?;
                sink.write(
                    UserEvent::UserRegistered {
                        email,
                        full_name,
                        role,
                    },
                    self,
                )
                .await;
                sink.write(UserEvent::UserCredentialsSet { password_hash }, self)
                    .await;
                Ok(())
            }
            UserCommand::SetPassword { password_hash } => {
                if self.registered.is_none() {
                    return Err(UserError::NotFound);
                }
                if self.erased {
                    return Err(UserError::Erased);
                }
                sink.write(UserEvent::UserCredentialsSet { password_hash }, self)
                    .await;
                Ok(())
            }
            UserCommand::Erase { by, now } => {
                if self.registered.is_none() {
                    return Err(UserError::NotFound);
                }
                // Erasing twice is erasing once.
                if !self.erased {
                    sink.write(UserEvent::UserErased { by, at: now }, self)
                        .await;
                }
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::UserRegistered {
                email,
                full_name,
                role,
            } => {
                self.registered = Some(RegisteredUser {
                    email,
                    full_name,
                    role,
                });
            }
            UserEvent::UserCredentialsSet { password_hash } => {
                self.password_hash = Some(password_hash);
            }
            UserEvent::UserErased { .. } => {
                self.erased = true;
                self.password_hash = None;
                if let Some(registered) = &mut self.registered {
                    registered.email = Email::erased();
                    registered.full_name = ERASED.to_owned();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type UserTest = TestFramework<User>;

    fn register(name: &str) -> UserCommand {
        UserCommand::Register {
            email: Email::parse("ada@example.com").unwrap(),
            full_name: name.to_owned(),
            role: Role::User,
            password_hash: "$2b$04$hash".to_owned(),
        }
    }

    #[test]
    fn registering_records_the_user_and_their_credentials() {
        UserTest::with(())
            .given_no_previous_events()
            .when(register(" Ada Lovelace "))
            .then_expect_events(vec![
                UserEvent::UserRegistered {
                    email: Email::parse("ada@example.com").unwrap(),
                    full_name: "Ada Lovelace".to_owned(),
                    role: Role::User,
                },
                UserEvent::UserCredentialsSet {
                    password_hash: "$2b$04$hash".to_owned(),
                },
            ]);
    }

    #[test]
    fn a_user_cannot_register_twice() {
        UserTest::with(())
            .given(vec![UserEvent::UserRegistered {
                email: Email::parse("ada@example.com").unwrap(),
                full_name: "Ada".to_owned(),
                role: Role::User,
            }])
            .when(register("Ada"))
            .then_expect_error(UserError::AlreadyRegistered);
    }

    #[test]
    fn erasing_closes_the_account_once() {
        let registered = UserEvent::UserRegistered {
            email: Email::parse("ada@example.com").unwrap(),
            full_name: "Ada".to_owned(),
            role: Role::User,
        };
        let erased = UserEvent::UserErased {
            by: Uuid::nil(),
            at: DateTime::UNIX_EPOCH,
        };
        let erase = || UserCommand::Erase {
            by: Uuid::nil(),
            now: DateTime::UNIX_EPOCH,
        };
        UserTest::with(())
            .given(vec![registered.clone()])
            .when(erase())
            .then_expect_events(vec![erased.clone()]);
        UserTest::with(())
            .given(vec![registered.clone(), erased.clone()])
            .when(erase())
            .then_expect_events(vec![]);
        UserTest::with(())
            .given(vec![registered, erased])
            .when(UserCommand::SetPassword {
                password_hash: "$2b$04$x".into(),
            })
            .then_expect_error(UserError::Erased);
        UserTest::with(())
            .given_no_previous_events()
            .when(erase())
            .then_expect_error(UserError::NotFound);
    }

    #[test]
    fn a_blank_name_is_refused() {
        UserTest::with(())
            .given_no_previous_events()
            .when(register("   "))
            .then_expect_error(UserError::InvalidName);
    }
}

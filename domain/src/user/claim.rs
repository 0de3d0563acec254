use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Email;
use crate::error::{RuleError, Violation};

/// How long an unconfirmed claim protects its address. A sign-up claims the address, then
/// registers the user, then confirms the claim; a process that died in between leaves an
/// unconfirmed claim which a later sign-up may take over once it is this old.
pub const CLAIM_TAKEOVER_AFTER: Duration = Duration::minutes(10);

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub enum ClaimCommand {
    Claim {
        email: Email,
        user_id: Uuid,
        now: DateTime<Utc>,
    },
    Confirm {
        user_id: Uuid,
    },
    Release {
        user_id: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub enum ClaimEvent {
    EmailClaimed {
        email: Email,
        user_id: Uuid,
        claimed_at: DateTime<Utc>,
    },
    EmailClaimConfirmed {
        user_id: Uuid,
    },
    EmailReleased {
        user_id: Uuid,
    },
}

impl DomainEvent for ClaimEvent {
    fn event_type(&self) -> String {
        match self {
            ClaimEvent::EmailClaimed { .. } => "EmailClaimed",
            ClaimEvent::EmailClaimConfirmed { .. } => "EmailClaimConfirmed",
            ClaimEvent::EmailReleased { .. } => "EmailReleased",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("this e-mail address is already registered")]
    EmailTaken,
    #[error("the claim on this address belongs to another user")]
    NotHolder,
}

impl RuleError for ClaimError {
    fn code(&self) -> &'static str {
        match self {
            ClaimError::EmailTaken => "email_taken",
            ClaimError::NotHolder => "email_claim_lost",
        }
    }

    fn violation(&self) -> Violation {
        Violation::Conflict
    }
}

/// The right to use one e-mail address. Aggregate id: [`EmailClaim::id_for`].
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailClaim {
    holder: Option<Holder>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Holder {
    user_id: Uuid,
    claimed_at: DateTime<Utc>,
    confirmed: bool,
}

impl EmailClaim {
    /// The claim's stream id: a name-based UUID of the normalized address, so the address
    /// itself does not appear in ids, keys or URLs.
    pub fn id_for(email: &Email) -> Uuid {
        const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a4e_8b5d_4f3a_9e07_c1d2_b3a4_f5e6);
        Uuid::new_v5(&NAMESPACE, email.as_str().as_bytes())
    }

    /// The user holding the address (confirmed or not), if any.
    pub fn holder_id(&self) -> Option<Uuid> {
        self.holder.as_ref().map(|h| h.user_id)
    }

    /// The user holding the address without having confirmed it, if any.
    pub fn unconfirmed_holder(&self) -> Option<Uuid> {
        self.holder
            .as_ref()
            .filter(|h| !h.confirmed)
            .map(|h| h.user_id)
    }

    fn is_held_by(&self, user_id: Uuid) -> bool {
        self.holder.as_ref().is_some_and(|h| h.user_id == user_id)
    }
}

impl Aggregate for EmailClaim {
    const TYPE: &'static str = "email_claim";
    type Command = ClaimCommand;
    type Event = ClaimEvent;
    type Error = ClaimError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ClaimCommand::Claim {
                email,
                user_id,
                now,
            } => {
                if let Some(holder) = self.holder.as_ref().filter(|h| h.user_id == user_id) {
                    // A retry of the same sign-up: a confirmed claim stands; an unconfirmed one
                    // is claimed afresh, so that it is not taken over while the retry works.
                    if !holder.confirmed {
                        sink.write(
                            ClaimEvent::EmailClaimed {
                                email,
                                user_id,
                                claimed_at: now,
                            },
                            self,
                        )
                        .await;
                    }
                    return Ok(());
                }
                let free = match &self.holder {
                    None => true,
                    Some(h) => !h.confirmed && now - h.claimed_at >= CLAIM_TAKEOVER_AFTER,
                };
                if !free {
                    return Err(ClaimError::EmailTaken);
                }
                let claimed = ClaimEvent::EmailClaimed {
                    email,
                    user_id,
                    claimed_at: now,
                };
                sink.write(claimed, self).await;
            }
            ClaimCommand::Confirm { user_id } => {
                if !self.is_held_by(user_id) {
                    return Err(ClaimError::NotHolder);
                }
                // A repair and the sign-up itself may both confirm: once is enough.
                if self.unconfirmed_holder().is_some() {
                    sink.write(ClaimEvent::EmailClaimConfirmed { user_id }, self)
                        .await;
                }
            }
            ClaimCommand::Release { user_id } => {
                // Releasing what one does not hold changes nothing: compensation is idempotent.
                if self.is_held_by(user_id) {
                    sink.write(ClaimEvent::EmailReleased { user_id }, self)
                        .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ClaimEvent::EmailClaimed {
                user_id,
                claimed_at,
                ..
            } => {
                self.holder = Some(Holder {
                    user_id,
                    claimed_at,
                    confirmed: false,
                });
            }
            ClaimEvent::EmailClaimConfirmed { .. } => {
                if let Some(h) = &mut self.holder {
                    h.confirmed = true;
                }
            }
            ClaimEvent::EmailReleased { .. } => self.holder = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    fn email() -> Email {
        Email::parse("ada@example.com").unwrap()
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap()
    }

    fn claimed(user: u128) -> ClaimEvent {
        ClaimEvent::EmailClaimed {
            email: email(),
            user_id: Uuid::from_u128(user),
            claimed_at: t0(),
        }
    }

    fn claim(user: u128, now: DateTime<Utc>) -> ClaimCommand {
        ClaimCommand::Claim {
            email: email(),
            user_id: Uuid::from_u128(user),
            now,
        }
    }

    #[test]
    fn a_free_address_can_be_claimed() {
        TestFramework::<EmailClaim>::with(())
            .given_no_previous_events()
            .when(claim(1, t0()))
            .then_expect_events(vec![claimed(1)]);
    }

    #[test]
    fn a_confirmed_address_cannot_be_claimed_again_ever() {
        TestFramework::<EmailClaim>::with(())
            .given(vec![
                claimed(1),
                ClaimEvent::EmailClaimConfirmed {
                    user_id: Uuid::from_u128(1),
                },
            ])
            .when(claim(2, t0() + Duration::days(400)))
            .then_expect_error(ClaimError::EmailTaken);
    }

    #[test]
    fn a_fresh_unconfirmed_claim_still_protects_the_address() {
        TestFramework::<EmailClaim>::with(())
            .given(vec![claimed(1)])
            .when(claim(2, t0() + Duration::minutes(1)))
            .then_expect_error(ClaimError::EmailTaken);
    }

    #[test]
    fn a_stale_unconfirmed_claim_can_be_taken_over() {
        let later = t0() + CLAIM_TAKEOVER_AFTER;
        TestFramework::<EmailClaim>::with(())
            .given(vec![claimed(1)])
            .when(claim(2, later))
            .then_expect_events(vec![ClaimEvent::EmailClaimed {
                email: email(),
                user_id: Uuid::from_u128(2),
                claimed_at: later,
            }]);
    }

    #[test]
    fn the_holder_claiming_again_refreshes_an_unconfirmed_claim() {
        let later = t0() + Duration::minutes(11);
        TestFramework::<EmailClaim>::with(())
            .given(vec![claimed(1)])
            .when(claim(1, later))
            .then_expect_events(vec![ClaimEvent::EmailClaimed {
                email: email(),
                user_id: Uuid::from_u128(1),
                claimed_at: later,
            }]);
        TestFramework::<EmailClaim>::with(())
            .given(vec![
                claimed(1),
                ClaimEvent::EmailClaimConfirmed {
                    user_id: Uuid::from_u128(1),
                },
            ])
            .when(claim(1, later))
            .then_expect_events(vec![]);
    }

    #[test]
    fn only_the_holder_confirms() {
        TestFramework::<EmailClaim>::with(())
            .given(vec![claimed(1)])
            .when(ClaimCommand::Confirm {
                user_id: Uuid::from_u128(2),
            })
            .then_expect_error(ClaimError::NotHolder);
    }

    #[test]
    fn confirming_twice_records_one_confirmation() {
        TestFramework::<EmailClaim>::with(())
            .given(vec![
                claimed(1),
                ClaimEvent::EmailClaimConfirmed {
                    user_id: Uuid::from_u128(1),
                },
            ])
            .when(ClaimCommand::Confirm {
                user_id: Uuid::from_u128(1),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn releasing_a_claim_one_does_not_hold_records_nothing() {
        TestFramework::<EmailClaim>::with(())
            .given(vec![claimed(1)])
            .when(ClaimCommand::Release {
                user_id: Uuid::from_u128(2),
            })
            .then_expect_events(vec![]);
    }
}

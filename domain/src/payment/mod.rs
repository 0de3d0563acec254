//! Payments: the money a driver pays for one booking through the payment provider (Stripe),
//! and what is refunded of it.
//!
//! A payment is opened for a booking's price, gets the provider's PaymentIntent, then learns
//! from the provider's notifications whether the money arrived. Refunds are reserved here
//! first (`RefundRequested`) and only then asked of the provider, so two concurrent refunds
//! can never together exceed what was paid: the limit is ours, whatever the provider allows.
//! Every money movement is an event with its amount, currency and the provider's ids.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::actor::Actor;
use crate::error::{RuleError, Violation};
use crate::money::Money;

/// The one payment of a booking: asking for it twice finds the same stream.
pub fn payment_id_for(booking_id: Uuid) -> Uuid {
    const NAMESPACE: Uuid = Uuid::from_u128(0x5f0c_2b9e_71d4_4a8e_9c3b_6d2e_0a1f_7b84);
    Uuid::new_v5(&NAMESPACE, booking_id.as_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Waiting for the driver to pay.
    RequiresPayment,
    /// The last attempt was declined; the driver may try again until the booking lapses.
    Failed,
    Succeeded,
    PartiallyRefunded,
    Refunded,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 5] = [
        PaymentStatus::RequiresPayment,
        PaymentStatus::Failed,
        PaymentStatus::Succeeded,
        PaymentStatus::PartiallyRefunded,
        PaymentStatus::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::RequiresPayment => "requires_payment",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
            PaymentStatus::Refunded => "refunded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentCommand {
    /// Opens the payment of a booking for its price. Opening it again changes nothing.
    Open {
        booking_id: Uuid,
        user_id: Uuid,
        lot_id: Uuid,
        lot_owner_id: Uuid,
        amount: Money,
        now: DateTime<Utc>,
    },
    /// The provider's PaymentIntent for it.
    AttachIntent {
        intent_id: String,
        client_secret: String,
    },
    /// The provider reports the money arrived (`payment_intent.succeeded`).
    RecordSuccess {
        provider_event_id: String,
        intent_id: String,
        received: Money,
        charge_id: Option<String>,
        now: DateTime<Utc>,
    },
    /// The provider reports a declined attempt (`payment_intent.payment_failed`).
    RecordFailure {
        provider_event_id: String,
        intent_id: String,
        reason: String,
        now: DateTime<Utc>,
    },
    /// Reserves a refund of `amount` (all that is left when `None`). `by` is `None` for the
    /// system's own refunds (a payment that came too late, a cancellation).
    RequestRefund {
        refund_id: Uuid,
        amount: Option<i64>,
        reason: Option<String>,
        by: Option<Actor>,
        now: DateTime<Utc>,
    },
    /// The provider refunded: ours (`refund_id` known) or one made elsewhere (its dashboard).
    RecordRefund {
        refund_id: Uuid,
        provider_refund_id: String,
        amount: i64,
        provider_event_id: Option<String>,
        now: DateTime<Utc>,
    },
    /// The provider refused a refund we asked for: its amount is free again.
    RecordRefundFailure {
        refund_id: Uuid,
        reason: String,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentEvent {
    PaymentOpened {
        booking_id: Uuid,
        user_id: Uuid,
        lot_id: Uuid,
        lot_owner_id: Uuid,
        amount: Money,
        opened_at: DateTime<Utc>,
    },
    PaymentIntentCreated {
        intent_id: String,
        client_secret: String,
    },
    PaymentSucceeded {
        intent_id: String,
        charge_id: Option<String>,
        amount: Money,
        provider_event_id: String,
        succeeded_at: DateTime<Utc>,
    },
    PaymentFailed {
        intent_id: String,
        reason: String,
        provider_event_id: String,
        failed_at: DateTime<Utc>,
    },
    RefundRequested {
        refund_id: Uuid,
        amount: Money,
        reason: Option<String>,
        /// `None`: the system's own refund.
        requested_by: Option<Uuid>,
        requested_at: DateTime<Utc>,
    },
    RefundSucceeded {
        refund_id: Uuid,
        provider_refund_id: String,
        amount: Money,
        provider_event_id: Option<String>,
        refunded_at: DateTime<Utc>,
    },
    RefundFailed {
        refund_id: Uuid,
        amount: Money,
        reason: String,
        failed_at: DateTime<Utc>,
    },
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        match self {
            PaymentEvent::PaymentOpened { .. } => "PaymentOpened",
            PaymentEvent::PaymentIntentCreated { .. } => "PaymentIntentCreated",
            PaymentEvent::PaymentSucceeded { .. } => "PaymentSucceeded",
            PaymentEvent::PaymentFailed { .. } => "PaymentFailed",
            PaymentEvent::RefundRequested { .. } => "RefundRequested",
            PaymentEvent::RefundSucceeded { .. } => "RefundSucceeded",
            PaymentEvent::RefundFailed { .. } => "RefundFailed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("no such payment")]
    NotFound,
    #[error("the payment already has a different PaymentIntent")]
    IntentMismatch,
    #[error("only an admin or the lot's owner may refund")]
    NotAllowedToRefund,
    #[error("nothing was paid yet")]
    NotCaptured,
    #[error("the payment is refunded in full")]
    FullyRefunded,
    #[error("a refund must be a positive amount")]
    BadRefundAmount,
    #[error("at most {0} minor units are left to refund")]
    ExceedsRemaining(i64),
}

impl RuleError for PaymentError {
    fn code(&self) -> &'static str {
        match self {
            PaymentError::NotFound => "payment_not_found",
            PaymentError::IntentMismatch => "payment_intent_mismatch",
            PaymentError::NotAllowedToRefund => "forbidden",
            PaymentError::NotCaptured => "payment_not_captured",
            PaymentError::FullyRefunded => "payment_fully_refunded",
            PaymentError::BadRefundAmount => "invalid_refund_amount",
            PaymentError::ExceedsRemaining(_) => "refund_exceeds_remaining",
        }
    }

    fn violation(&self) -> Violation {
        match self {
            PaymentError::NotFound => Violation::NotFound,
            PaymentError::NotAllowedToRefund => Violation::Forbidden,
            PaymentError::BadRefundAmount => Violation::Invalid,
            _ => Violation::Conflict,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Reserved and asked of the provider; no answer recorded yet.
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: Uuid,
    pub amount: i64,
    pub reason: Option<String>,
    pub requested_by: Option<Uuid>,
    pub status: RefundStatus,
    pub provider_refund_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentState {
    pub booking_id: Uuid,
    pub user_id: Uuid,
    pub lot_id: Uuid,
    pub lot_owner_id: Uuid,
    pub amount: Money,
    pub intent_id: Option<String>,
    pub client_secret: Option<String>,
    /// What arrived, once it did.
    pub received: Option<i64>,
    pub charge_id: Option<String>,
    pub last_failure: Option<String>,
    pub refunds: Vec<Refund>,
    /// The provider's notifications already recorded (they may be delivered twice).
    pub provider_events: BTreeSet<String>,
    pub opened_at: DateTime<Utc>,
}

impl PaymentState {
    pub fn status(&self) -> PaymentStatus {
        match self.received {
            None if self.last_failure.is_some() => PaymentStatus::Failed,
            None => PaymentStatus::RequiresPayment,
            Some(received) => match self.refunded() {
                0 => PaymentStatus::Succeeded,
                r if r >= received => PaymentStatus::Refunded,
                _ => PaymentStatus::PartiallyRefunded,
            },
        }
    }

    /// Refunded for good.
    pub fn refunded(&self) -> i64 {
        self.refunds_in(&[RefundStatus::Succeeded])
    }

    /// What may still be refunded: what arrived minus refunds done or under way.
    pub fn refundable(&self) -> i64 {
        let taken = self.refunds_in(&[RefundStatus::Succeeded, RefundStatus::Pending]);
        (self.received.unwrap_or(0) - taken).max(0)
    }

    pub fn refund(&self, refund_id: Uuid) -> Option<&Refund> {
        self.refunds.iter().find(|r| r.refund_id == refund_id)
    }

    fn refunds_in(&self, statuses: &[RefundStatus]) -> i64 {
        (self.refunds.iter())
            .filter(|r| statuses.contains(&r.status))
            .map(|r| r.amount)
            .sum()
    }

    fn money(&self, minor: i64) -> Money {
        Money {
            minor,
            currency: self.amount.currency.clone(),
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub state: Option<PaymentState>,
}

impl Aggregate for Payment {
    const TYPE: &'static str = "payment";
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            PaymentCommand::Open {
                booking_id,
                user_id,
                lot_id,
                lot_owner_id,
                amount,
                now,
            } => self.state.is_none().then_some(PaymentEvent::PaymentOpened {
                booking_id,
                user_id,
                lot_id,
                lot_owner_id,
                amount,
                opened_at: now,
            }),
            PaymentCommand::AttachIntent {
                intent_id,
                client_secret,
            } => {
                let payment = self.state.as_ref().ok_or(PaymentError::NotFound)?;
                match &payment.intent_id {
                    Some(known) if *known == intent_id => None,
                    Some(_) => return Err(PaymentError::IntentMismatch),
                    None => Some(PaymentEvent::PaymentIntentCreated {
                        intent_id,
                        client_secret,
                    }),
                }
            }
            PaymentCommand::RecordSuccess {
                provider_event_id,
                intent_id,
                received,
                charge_id,
                now,
            } => {
                let payment = self.notified(&intent_id)?;
                let new = !payment.provider_events.contains(&provider_event_id)
                    && payment.received.is_none();
                new.then_some(PaymentEvent::PaymentSucceeded {
                    intent_id,
                    charge_id,
                    amount: received,
                    provider_event_id,
                    succeeded_at: now,
                })
            }
            PaymentCommand::RecordFailure {
                provider_event_id,
                intent_id,
                reason,
                now,
            } => {
                let payment = self.notified(&intent_id)?;
                let new = !payment.provider_events.contains(&provider_event_id)
                    && payment.received.is_none();
                new.then_some(PaymentEvent::PaymentFailed {
                    intent_id,
                    reason: crate::text::sanitized(&reason, 500),
                    provider_event_id,
                    failed_at: now,
                })
            }
            PaymentCommand::RequestRefund {
                refund_id,
                amount,
                reason,
                by,
                now,
            } => {
                let payment = self.state.as_ref().ok_or(PaymentError::NotFound)?;
                if payment.refund(refund_id).is_some() {
                    return Ok(()); // a retry of a refund already asked for
                }
                if by.is_some_and(|actor| !actor.is_or_admin(payment.lot_owner_id)) {
                    return Err(PaymentError::NotAllowedToRefund);
                }
                if payment.received.is_none() {
                    return Err(PaymentError::NotCaptured);
                }
                let left = payment.refundable();
                if left == 0 {
                    return Err(PaymentError::FullyRefunded);
                }
                let amount = match amount {
                    None => left,
                    Some(a) if a <= 0 => return Err(PaymentError::BadRefundAmount),
                    Some(a) if a > left => return Err(PaymentError::ExceedsRemaining(left)),
                    Some(a) => a,
                };
                Some(PaymentEvent::RefundRequested {
                    refund_id,
                    amount: payment.money(amount),
                    reason: reason
                        .map(|r| crate::text::sanitized(&r, 500))
                        .filter(|r| !r.is_empty()),
                    requested_by: by.map(|actor| actor.user_id),
                    requested_at: now,
                })
            }
            PaymentCommand::RecordRefund {
                refund_id,
                provider_refund_id,
                amount,
                provider_event_id,
                now,
            } => {
                let payment = self.state.as_ref().ok_or(PaymentError::NotFound)?;
                let known_event = (provider_event_id.as_ref())
                    .is_some_and(|id| payment.provider_events.contains(id));
                let known_refund = payment.refunds.iter().any(|r| {
                    r.provider_refund_id.as_deref() == Some(provider_refund_id.as_str())
                        || (r.refund_id == refund_id && r.status == RefundStatus::Succeeded)
                });
                let amount = match payment.refund(refund_id) {
                    Some(ours) => ours.amount,
                    None => amount,
                };
                (!known_event && !known_refund).then(|| PaymentEvent::RefundSucceeded {
                    refund_id,
                    provider_refund_id,
                    amount: payment.money(amount),
                    provider_event_id,
                    refunded_at: now,
                })
            }
            PaymentCommand::RecordRefundFailure {
                refund_id,
                reason,
                now,
            } => {
                let payment = self.state.as_ref().ok_or(PaymentError::NotFound)?;
                (payment.refund(refund_id))
                    .filter(|r| r.status == RefundStatus::Pending)
                    .map(|r| PaymentEvent::RefundFailed {
                        refund_id,
                        amount: payment.money(r.amount),
                        reason: crate::text::sanitized(&reason, 500),
                        failed_at: now,
                    })
            }
        };
        if let Some(event) = event {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        if let PaymentEvent::PaymentOpened {
            booking_id,
            user_id,
            lot_id,
            lot_owner_id,
            amount,
            opened_at,
        } = event
        {
            self.state = Some(PaymentState {
                booking_id,
                user_id,
                lot_id,
                lot_owner_id,
                amount,
                intent_id: None,
                client_secret: None,
                received: None,
                charge_id: None,
                last_failure: None,
                refunds: Vec::new(),
                provider_events: BTreeSet::new(),
                opened_at,
            });
            return;
        }
        let Some(payment) = &mut self.state else {
            return;
        };
        match event {
            PaymentEvent::PaymentOpened { .. } => {}
            PaymentEvent::PaymentIntentCreated {
                intent_id,
                client_secret,
            } => {
                payment.intent_id = Some(intent_id);
                payment.client_secret = Some(client_secret);
            }
            PaymentEvent::PaymentSucceeded {
                intent_id,
                charge_id,
                amount,
                provider_event_id,
                ..
            } => {
                payment.intent_id.get_or_insert(intent_id);
                payment.received = Some(amount.minor);
                payment.charge_id = charge_id;
                payment.provider_events.insert(provider_event_id);
            }
            PaymentEvent::PaymentFailed {
                reason,
                provider_event_id,
                ..
            } => {
                payment.last_failure = Some(reason);
                payment.provider_events.insert(provider_event_id);
            }
            PaymentEvent::RefundRequested {
                refund_id,
                amount,
                reason,
                requested_by,
                ..
            } => payment.refunds.push(Refund {
                refund_id,
                amount: amount.minor,
                reason,
                requested_by,
                status: RefundStatus::Pending,
                provider_refund_id: None,
            }),
            PaymentEvent::RefundSucceeded {
                refund_id,
                provider_refund_id,
                amount,
                provider_event_id,
                ..
            } => {
                if let Some(id) = provider_event_id {
                    payment.provider_events.insert(id);
                }
                let refund = match payment
                    .refunds
                    .iter_mut()
                    .find(|r| r.refund_id == refund_id)
                {
                    Some(refund) => refund,
                    None => {
                        payment.refunds.push(Refund {
                            refund_id,
                            amount: amount.minor,
                            reason: None,
                            requested_by: None,
                            status: RefundStatus::Pending,
                            provider_refund_id: None,
                        });
                        payment.refunds.last_mut().expect("just pushed")
                    }
                };
                refund.status = RefundStatus::Succeeded;
                refund.provider_refund_id = Some(provider_refund_id);
            }
            PaymentEvent::RefundFailed { refund_id, .. } => {
                if let Some(refund) = payment
                    .refunds
                    .iter_mut()
                    .find(|r| r.refund_id == refund_id)
                {
                    refund.status = RefundStatus::Failed;
                }
            }
        }
    }
}

impl Payment {
    /// The payment a provider notification is about: it must name our PaymentIntent.
    fn notified(&self, intent_id: &str) -> Result<&PaymentState, PaymentError> {
        let payment = self.state.as_ref().ok_or(PaymentError::NotFound)?;
        // With no intent recorded yet (a crash between creating it and recording it), the
        // provider's word that it is ours (its metadata) is taken.
        if payment
            .intent_id
            .as_deref()
            .is_some_and(|ours| ours != intent_id)
        {
            return Err(PaymentError::IntentMismatch);
        }
        Ok(payment)
    }
}

#[cfg(test)]
mod tests;

//! The payment process: a booking's payment through Stripe, its notifications, refunds.
//!
//! Every step that talks to Stripe is recorded before and after: the payment is opened (or a
//! refund reserved) first, Stripe is called with an `Idempotency-Key` derived from that id,
//! and its answer is recorded. A retry after a crash or a lost answer repeats the same call
//! under the same key, so Stripe does it once; our own aggregate makes the record once.
//!
//! A success confirms the booking if it still can be confirmed (pending, the exact price, its
//! range still the driver's); otherwise the money is refunded by the system, at once.

use parking_domain::booking::BookingStatus;
use parking_domain::money::{Currency, Money};
use parking_domain::payment::{
    payment_id_for, PaymentCommand, PaymentError, PaymentState, RefundStatus,
};
use parking_domain::Violation;
use parking_infra::stripe::{NewIntent, StripeError};
use uuid::Uuid;

use crate::context::{actor, CommandContext};
use crate::error::CommandError;
use crate::service::Commands;

/// A notification from Stripe, as the webhook parsed it after its signature was checked.
#[derive(Debug, Clone)]
pub enum ProviderNotification {
    /// `payment_intent.succeeded`
    Succeeded {
        event_id: String,
        intent_id: String,
        /// The intent's `metadata.payment_id`, when present.
        payment_id: Option<Uuid>,
        amount: i64,
        currency: String,
        charge_id: Option<String>,
    },
    /// `payment_intent.payment_failed`
    Failed {
        event_id: String,
        intent_id: String,
        payment_id: Option<Uuid>,
        reason: String,
    },
    /// `charge.refunded`: the charge's refunds as Stripe lists them.
    Refunded {
        event_id: String,
        intent_id: String,
        refunds: Vec<ProviderRefund>,
    },
}

#[derive(Debug, Clone)]
pub struct ProviderRefund {
    pub id: String,
    pub amount: i64,
    pub status: String,
    /// `metadata.refund_id`: ours, when we asked for it.
    pub refund_id: Option<Uuid>,
}

impl Commands {
    /// The booking's payment, opened with a Stripe PaymentIntent for its price. Asking again
    /// returns the same payment (`false`: it existed already).
    #[tracing::instrument(skip_all, fields(%booking_id))]
    pub async fn open_payment(
        &self,
        ctx: &CommandContext,
        booking_id: Uuid,
    ) -> Result<(Uuid, PaymentState, bool), CommandError> {
        let stripe = self.stripe()?;
        let driver = actor(ctx)?;
        let booking = (self.bookings.load(&booking_id.to_string()).await?.state)
            .ok_or(parking_domain::booking::BookingError::NotFound)?;
        if booking.user_id != driver.user_id {
            return Err(CommandError::rejected(
                "forbidden",
                Violation::Forbidden,
                "only the booking's driver pays for it",
            ));
        }
        let payment_id = payment_id_for(booking_id);
        let key = payment_id.to_string();
        if let Some(known) = self.payments.load(&key).await?.state {
            if known.intent_id.is_some() {
                return Ok((payment_id, known, false));
            }
        }
        if booking.status != BookingStatus::Pending {
            return Err(CommandError::rejected(
                "booking_not_pending",
                Violation::Conflict,
                format!("a {} booking takes no payment", booking.status.as_str()),
            ));
        }
        if booking.price.minor == 0 {
            return Err(CommandError::rejected(
                "nothing_to_pay",
                Violation::Conflict,
                "the booking costs nothing; there is nothing to pay",
            ));
        }
        if booking.hold_until <= ctx.now {
            return Err(CommandError::rejected(
                "booking_hold_expired",
                Violation::Conflict,
                "the booking's payment hold has run out; book again",
            ));
        }
        let open = PaymentCommand::Open {
            booking_id,
            user_id: booking.user_id,
            lot_id: booking.lot_id,
            lot_owner_id: booking.lot_owner_id,
            amount: booking.price.clone(),
            now: ctx.now,
        };
        self.payments.execute(&key, open, ctx).await?;
        let intent = stripe
            .create_payment_intent(
                &NewIntent {
                    amount: booking.price.minor,
                    currency: booking.price.currency.as_str(),
                    payment_id,
                    booking_id,
                },
                &format!("payment-intent-{payment_id}"),
            )
            .await
            .map_err(|e| match e {
                // Stripe will not take this payment (an amount below its minimum, say): asking
                // again will not help, so the client hears why.
                StripeError::Refused { message, .. } => {
                    tracing::warn!(%message, "Stripe refused a PaymentIntent");
                    CommandError::rejected("payment_refused", Violation::Invalid, message)
                }
                unavailable => provider_error(unavailable),
            })?;
        let attach = PaymentCommand::AttachIntent {
            intent_id: intent.id,
            client_secret: intent.client_secret,
        };
        match self.payments.execute(&key, attach, ctx).await {
            // Another request attached its intent first (a provider without idempotency keys
            // made two): that one is the payment's.
            Ok(_)
            | Err(CommandError::Rejected {
                code: "payment_intent_mismatch",
                ..
            }) => {}
            Err(e) => return Err(e),
        }
        let payment = self.payments.load(&key).await?.state;
        let payment = payment.ok_or(PaymentError::NotFound)?;
        Ok((payment_id, payment, true))
    }

    /// A payment as recorded, for its driver, the lot's owner or an admin.
    pub async fn payment(
        &self,
        ctx: &CommandContext,
        payment_id: Uuid,
    ) -> Result<PaymentState, CommandError> {
        let caller = actor(ctx)?;
        let payment = self.payments.load(&payment_id.to_string()).await?.state;
        let payment = payment.ok_or(PaymentError::NotFound)?;
        let allowed = caller.user_id == payment.user_id
            || caller.user_id == payment.lot_owner_id
            || caller.reads_everything();
        if !allowed {
            // Not even its existence is told to others.
            return Err(PaymentError::NotFound.into());
        }
        Ok(payment)
    }

    /// Records what Stripe notified, once however often it is delivered, and drives what
    /// follows (the booking's confirmation, or a refund). A notification about an intent we
    /// do not know is logged and otherwise ignored.
    #[tracing::instrument(skip_all)]
    pub async fn payment_notification(
        &self,
        ctx: &CommandContext,
        notification: ProviderNotification,
    ) -> Result<(), CommandError> {
        let (intent_id, named) = match &notification {
            ProviderNotification::Succeeded {
                intent_id,
                payment_id,
                ..
            }
            | ProviderNotification::Failed {
                intent_id,
                payment_id,
                ..
            } => (intent_id.clone(), *payment_id),
            ProviderNotification::Refunded { intent_id, .. } => (intent_id.clone(), None),
        };
        let payment_id = match named {
            Some(id) => Some(id),
            None => parking_infra::payments::payment_for_intent(self.log.pool(), &intent_id)
                .await
                .map_err(|e| CommandError::Infrastructure(e.into()))?,
        };
        let Some(payment_id) = payment_id else {
            tracing::warn!(%intent_id, "a Stripe notification for an unknown PaymentIntent");
            return Ok(());
        };
        let key = payment_id.to_string();
        let commands: Vec<PaymentCommand> = match notification {
            ProviderNotification::Succeeded {
                event_id,
                amount,
                currency,
                charge_id,
                ..
            } => {
                let Ok(currency) = Currency::parse(&currency) else {
                    tracing::warn!(%intent_id, %currency, "a success in an unknown currency");
                    return Ok(());
                };
                vec![PaymentCommand::RecordSuccess {
                    provider_event_id: event_id,
                    intent_id: intent_id.clone(),
                    received: Money::new(amount.max(0), currency).map_err(|e| {
                        CommandError::rejected("invalid_amount", Violation::Invalid, e.to_string())
                    })?,
                    charge_id,
                    now: ctx.now,
                }]
            }
            ProviderNotification::Failed {
                event_id, reason, ..
            } => vec![PaymentCommand::RecordFailure {
                provider_event_id: event_id,
                intent_id: intent_id.clone(),
                reason,
                now: ctx.now,
            }],
            ProviderNotification::Refunded {
                event_id, refunds, ..
            } => (refunds.into_iter())
                .filter(|r| r.status == "succeeded")
                .map(|r| PaymentCommand::RecordRefund {
                    refund_id: r
                        .refund_id
                        .unwrap_or_else(|| Uuid::new_v5(&payment_id, r.id.as_bytes())),
                    provider_refund_id: r.id,
                    amount: r.amount,
                    provider_event_id: Some(event_id.clone()),
                    now: ctx.now,
                })
                .collect(),
        };
        for command in commands {
            match self.payments.execute(&key, command, ctx).await {
                Ok(_) => {}
                Err(CommandError::Rejected { code, .. })
                    if code == "payment_not_found" || code == "payment_intent_mismatch" =>
                {
                    tracing::warn!(%intent_id, %payment_id, "a Stripe notification for a PaymentIntent that is not this payment's");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.settle_payment(ctx, payment_id).await
    }

    /// After a payment succeeded: confirms its booking, or, when the booking cannot take it
    /// (expired, cancelled, another amount, its range taken), refunds it. Idempotent, so a
    /// repeated notification re-drives a step a crash cut off.
    async fn settle_payment(
        &self,
        ctx: &CommandContext,
        payment_id: Uuid,
    ) -> Result<(), CommandError> {
        let Some(payment) = self.payments.load(&payment_id.to_string()).await?.state else {
            return Ok(());
        };
        let Some(received) = payment.received else {
            return Ok(());
        };
        let booking = self.bookings.load(&payment.booking_id.to_string()).await?;
        if booking
            .state
            .is_some_and(|b| b.payment_id == Some(payment_id))
        {
            return Ok(()); // this payment confirmed its booking already
        }
        let paid = Money {
            minor: received,
            currency: payment.amount.currency.clone(),
        };
        match (self.confirm_booking(ctx, payment.booking_id, payment_id, paid)).await {
            Ok(_) => Ok(()),
            Err(CommandError::Rejected { code, message, .. }) => {
                tracing::info!(%payment_id, code, %message, "a payment its booking cannot take is refunded");
                let refund_id = Uuid::new_v5(&payment_id, b"booking not confirmed");
                self.refund_for_the_system(ctx, payment_id, refund_id, message.as_str())
                    .await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A refund by the lot's owner or an admin: `amount_minor` of what is left (all of it when
    /// `None`). With an `Idempotency-Key` the refund's id comes from it, so a retried request
    /// finds its refund instead of making a second.
    #[tracing::instrument(skip_all, fields(%payment_id))]
    pub async fn refund_payment(
        &self,
        ctx: &CommandContext,
        payment_id: Uuid,
        amount_minor: Option<i64>,
        reason: Option<String>,
    ) -> Result<PaymentState, CommandError> {
        self.stripe()?;
        let by = actor(ctx)?;
        let refund_id = ctx.new_id("refund");
        let request = PaymentCommand::RequestRefund {
            refund_id,
            amount: amount_minor,
            reason,
            by: Some(by),
            now: ctx.now,
        };
        let key = payment_id.to_string();
        self.payments.execute(&key, request, ctx).await?;
        self.drive_refund(ctx, payment_id, refund_id).await?;
        let payment = self.payments.load(&key).await?.state;
        Ok(payment.ok_or(PaymentError::NotFound)?)
    }

    /// A refund the system owes (a cancellation, a payment its booking could not take): all
    /// that is left. Failures are logged; the refund stays reserved and the sweep retries it.
    pub(crate) async fn refund_for_the_system(
        &self,
        ctx: &CommandContext,
        payment_id: Uuid,
        refund_id: Uuid,
        reason: &str,
    ) {
        let request = PaymentCommand::RequestRefund {
            refund_id,
            amount: None,
            reason: Some(reason.to_owned()),
            by: None,
            now: ctx.now,
        };
        let key = payment_id.to_string();
        let outcome = match self.payments.execute(&key, request, ctx).await {
            Ok(_) => self.drive_refund(ctx, payment_id, refund_id).await,
            Err(CommandError::Rejected {
                code: "payment_fully_refunded" | "payment_not_captured",
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::error!(error = %e, %payment_id, %refund_id, "a refund owed by the system is not done yet");
        }
    }

    /// Asks Stripe for a reserved refund and records its answer. Stripe unreachable: the
    /// refund stays reserved (`Pending`) for the sweep, and the caller hears 503.
    pub(crate) async fn drive_refund(
        &self,
        ctx: &CommandContext,
        payment_id: Uuid,
        refund_id: Uuid,
    ) -> Result<(), CommandError> {
        let stripe = self.stripe()?;
        let key = payment_id.to_string();
        let payment = self.payments.load(&key).await?.state;
        let payment = payment.ok_or(PaymentError::NotFound)?;
        let Some(refund) = payment.refund(refund_id) else {
            return Ok(());
        };
        if refund.status != RefundStatus::Pending {
            return Ok(());
        }
        let Some(intent_id) = payment.intent_id.as_deref() else {
            return Ok(());
        };
        let asked = stripe
            .create_refund(
                intent_id,
                refund.amount,
                refund_id,
                &format!("refund-{refund_id}"),
            )
            .await;
        let answer = match asked {
            Ok(done) if done.status != "failed" => PaymentCommand::RecordRefund {
                refund_id,
                provider_refund_id: done.id,
                amount: done.amount,
                provider_event_id: None,
                now: ctx.now,
            },
            Ok(failed) => PaymentCommand::RecordRefundFailure {
                refund_id,
                reason: format!("Stripe refund {} failed", failed.id),
                now: ctx.now,
            },
            Err(StripeError::Refused { message, .. }) => PaymentCommand::RecordRefundFailure {
                refund_id,
                reason: message,
                now: ctx.now,
            },
            Err(unavailable) => return Err(provider_error(unavailable)),
        };
        self.payments.execute(&key, answer, ctx).await?;
        Ok(())
    }

    /// Re-drives refunds whose Stripe answer was never recorded (a crash, Stripe down), asked
    /// more than a minute ago. Returns how many were driven.
    pub async fn retry_unanswered_refunds(
        &self,
        ctx: &CommandContext,
    ) -> Result<usize, CommandError> {
        if self.stripe.is_none() {
            return Ok(0);
        }
        let before = ctx.now - chrono::Duration::minutes(1);
        let due = parking_infra::payments::unanswered_refunds(self.log.pool(), before, 100)
            .await
            .map_err(|e| CommandError::Infrastructure(e.into()))?;
        for (payment_id, refund_id) in &due {
            self.drive_refund(ctx, *payment_id, *refund_id).await?;
        }
        Ok(due.len())
    }

    /// Re-drives what follows a success (`settle_payment`) for payments that succeeded before
    /// `before` and neither confirmed their booking nor were refunded by the system: a crash
    /// between recording the success and confirming left them so. Returns how many it drove.
    pub async fn settle_unsettled_payments(
        &self,
        ctx: &CommandContext,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, CommandError> {
        let due = parking_infra::payments::unsettled(self.log.pool(), before, 100)
            .await
            .map_err(|e| CommandError::Infrastructure(e.into()))?;
        for payment_id in &due {
            tracing::warn!(%payment_id, "settling a payment a crash left unsettled");
            self.settle_payment(ctx, *payment_id).await?;
        }
        Ok(due.len())
    }

    fn stripe(&self) -> Result<&parking_infra::stripe::StripeClient, CommandError> {
        self.stripe
            .as_ref()
            .ok_or_else(|| CommandError::Unavailable {
                code: "payments_unavailable",
                message: "no payment provider is configured (STRIPE_SECRET_KEY)".into(),
            })
    }
}

fn provider_error(e: StripeError) -> CommandError {
    tracing::error!(error = %e, "a call to Stripe failed");
    CommandError::Unavailable {
        code: "payment_provider_unavailable",
        message: "the payment provider did not answer; try again".into(),
    }
}

//! The sweep: what happens because time passed, with no request to carry it. Every node runs
//! it; each step is decided on its aggregate, so however many nodes find the same booking due,
//! it expires once.
//!
//! - Pending bookings whose payment hold ran out expire and release their slot. Candidates come
//!   from the bookings read model, which the log builds, so a restart loses nothing: a booking
//!   whose hold ran out while every node was down expires at the first sweep after a start.
//! - Refunds asked of Stripe whose answer was never recorded are asked again (same
//!   `Idempotency-Key`).
//! - Payments whose success was recorded but not followed by their booking's confirmation or
//!   a refund (a crash in between) are settled.

use std::sync::Arc;
use std::time::Duration;

use parking_commands::{CommandContext, CommandError};

use crate::state::AppState;

/// How often due bookings are looked for: a booking expires at most this long after its hold.
const EXPIRY_EVERY: Duration = Duration::from_secs(1);
/// How often unanswered refunds are looked for.
const REFUNDS_EVERY: Duration = Duration::from_secs(30);
/// Bookings expired per round at most; the next round takes the rest.
const BATCH: i64 = 200;

pub async fn run(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(EXPIRY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refunds_due = tokio::time::Instant::now() + REFUNDS_EVERY;
    loop {
        tick.tick().await;
        expire_due(&state).await;
        if tokio::time::Instant::now() >= refunds_due {
            refunds_due += REFUNDS_EVERY;
            let ctx = context(&state, "refund-sweep");
            match state.commands.retry_unanswered_refunds(&ctx).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(refunds = n, "unanswered refunds asked again"),
                Err(e) => tracing::warn!(error = %e, "the refund sweep failed; next round retries"),
            }
            let ctx = context(&state, "payment-sweep");
            let before = ctx.now - chrono::Duration::minutes(1);
            if let Err(e) = state.commands.settle_unsettled_payments(&ctx, before).await {
                tracing::warn!(error = %e, "the payment sweep failed; next round retries");
            }
        }
    }
}

async fn expire_due(state: &AppState) {
    let now = state.now();
    let due = match parking_projections::bookings::pending_past_hold(&state.pool, now, BATCH).await
    {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "the expiry sweep could not read due bookings");
            return;
        }
    };
    for booking_id in due {
        let ctx = context(state, "expiry-sweep");
        match state.commands.expire_booking(&ctx, booking_id).await {
            Ok(_) => tracing::debug!(%booking_id, "booking expired"),
            // Confirmed, cancelled or expired by another node meanwhile.
            Err(CommandError::Rejected { code, .. }) => {
                tracing::debug!(%booking_id, code, "booking not expired")
            }
            Err(e) => tracing::warn!(error = %e, %booking_id, "could not expire a booking"),
        }
    }
}

fn context(state: &AppState, what: &str) -> CommandContext {
    CommandContext::system(format!("{what}-{}", uuid::Uuid::new_v4()), state.now())
}

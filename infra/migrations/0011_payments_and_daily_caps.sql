-- Payments (docs/architecture.md, "Payments").
--
-- Stripe's `charge.refunded` webhook names a PaymentIntent, not our payment: find the payment
-- whose stream recorded that intent.
CREATE INDEX events_payment_intent
    ON events ((payload -> 'PaymentIntentCreated' ->> 'intent_id'))
    WHERE aggregate_type = 'payment' AND event_type = 'PaymentIntentCreated';

-- Refunds asked of Stripe whose answer was never recorded (a crash, Stripe down): the sweep
-- asks again, with the same idempotency key.
CREATE INDEX events_payment_refunds
    ON events (aggregate_id, event_type)
    WHERE aggregate_type = 'payment'
      AND event_type IN ('RefundRequested', 'RefundSucceeded', 'RefundFailed');

-- The expiry sweep reads the pending bookings whose hold ran out, oldest first.
CREATE INDEX rm_bookings_pending_hold ON rm_bookings (hold_until) WHERE status = 'pending';

-- A lot's optional daily cap (`booking::price_for`).
ALTER TABLE rm_lots ADD COLUMN daily_cap_cents bigint;

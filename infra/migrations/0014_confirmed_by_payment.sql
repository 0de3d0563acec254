-- The payment sweep asks whether a payment confirmed its booking (infra::payments::unsettled).
CREATE INDEX events_booking_confirmed_by
    ON events ((payload -> 'BookingConfirmed' ->> 'payment_id'))
    WHERE aggregate_type = 'booking' AND event_type = 'BookingConfirmed';

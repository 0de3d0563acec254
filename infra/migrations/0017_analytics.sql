-- Owner analytics (docs/architecture.md, "Analytics"): the `analytics` projection.
--
-- Figures are kept per lot and calendar day in the lot's time zone. Durations are integer
-- microseconds, so that sums do not depend on how the log was cut into batches: a rebuild
-- gives the same rows as the live run. Entity rows remember the global position of the last
-- event applied to them.

-- Each lot: its owner, its name, and the time zone its days are counted in.
CREATE TABLE rm_analytics_lots
(
    lot_id    uuid PRIMARY KEY,
    owner_id  uuid    NOT NULL,
    name      text    NOT NULL,
    time_zone text    NOT NULL,
    is_active boolean NOT NULL,
    position  bigint  NOT NULL
);
CREATE INDEX rm_analytics_lots_owner ON rm_analytics_lots (owner_id);

-- Each slot's state since `counted_to`, the instant up to which its time is in the day rows:
-- in service or not, observed occupied or not, and its checked-in bookings whose range has not
-- ended (`[{"booking_id", "from", "until"}]`, the range's start and end).
CREATE TABLE rm_analytics_slots
(
    slot_id      uuid PRIMARY KEY,
    lot_id       uuid          NOT NULL,
    counted_to   timestamptz   NOT NULL,
    in_service   boolean       NOT NULL,
    observed     boolean       NOT NULL,
    stays        jsonb         NOT NULL,
    position     bigint        NOT NULL
);
CREATE INDEX rm_analytics_slots_lot ON rm_analytics_slots (lot_id);

-- Each booking: the lot, slot and range, the day it was made on (in its lot's time zone then)
-- and its status now.
CREATE TABLE rm_analytics_bookings
(
    booking_id uuid PRIMARY KEY,
    lot_id     uuid        NOT NULL,
    slot_id    uuid        NOT NULL,
    start_time timestamptz NOT NULL,
    end_time   timestamptz NOT NULL,
    day        date        NOT NULL,
    status     text        NOT NULL,
    position   bigint      NOT NULL
);

-- Each payment's lot.
CREATE TABLE rm_analytics_payments
(
    payment_id uuid PRIMARY KEY,
    lot_id     uuid   NOT NULL,
    position   bigint NOT NULL
);

-- Slot time per lot and day: in service, and occupied while in service. The sums are in the
-- key's index, so that a window of days is read from the index alone (the dashboard).
CREATE TABLE rm_analytics_days
(
    lot_id            uuid   NOT NULL,
    day               date   NOT NULL,
    in_service_micros bigint NOT NULL,
    occupied_micros   bigint NOT NULL,
    PRIMARY KEY (lot_id, day) INCLUDE (in_service_micros, occupied_micros)
);

-- Slot time per lot and hour (UTC hours): what the forecast's hour-of-week profile is made of.
CREATE TABLE rm_analytics_hours
(
    lot_id            uuid        NOT NULL,
    hour              timestamptz NOT NULL,
    in_service_micros bigint      NOT NULL,
    occupied_micros   bigint      NOT NULL,
    PRIMARY KEY (lot_id, hour)
);

-- Bookings per lot, day made and status now, with the sum of their ranges' lengths.
CREATE TABLE rm_analytics_booking_days
(
    lot_id        uuid   NOT NULL,
    day           date   NOT NULL,
    status        text   NOT NULL,
    bookings      bigint NOT NULL,
    booked_micros bigint NOT NULL,
    PRIMARY KEY (lot_id, day, status) INCLUDE (bookings, booked_micros)
);

-- Money per lot, day and currency: captured (payments succeeded) and refunded (refunds
-- succeeded), in minor units.
CREATE TABLE rm_analytics_revenue
(
    lot_id         uuid   NOT NULL,
    day            date   NOT NULL,
    currency       text   NOT NULL,
    captured_minor bigint NOT NULL,
    refunded_minor bigint NOT NULL,
    PRIMARY KEY (lot_id, day, currency) INCLUDE (captured_minor, refunded_minor)
);

-- The microseconds from `from_time` to `to_time`, or 0 if it is not later.
CREATE FUNCTION analytics_micros(from_time timestamptz, to_time timestamptz) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN greatest(0, ((extract(epoch FROM to_time) - extract(epoch FROM from_time)) * 1000000)::bigint);

-- The microseconds of [from_time, to_time) that a slot in service spends occupied after its
-- last change (`counted_to`), as its `rm_analytics_slots` row says: all of them while observed
-- occupied, otherwise those within its checked-in stays. What the queries add to the day and
-- hour rows, which hold the time only up to `counted_to`.
CREATE FUNCTION analytics_open_occupied(counted_to timestamptz, observed boolean, stays jsonb,
                                        from_time timestamptz, to_time timestamptz) RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN CASE
        WHEN observed THEN analytics_micros(greatest(counted_to, from_time), to_time)
        ELSE (SELECT COALESCE(sum(analytics_micros(
                         greatest(counted_to, from_time, (x ->> 'from')::timestamptz),
                         least(to_time, (x ->> 'until')::timestamptz))), 0)
                FROM jsonb_array_elements(stays) AS x)
    END;

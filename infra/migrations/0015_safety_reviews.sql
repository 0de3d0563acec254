-- Safety reviews (docs/events.md, "Review").
--
-- Who may review a lot is decided on the event store, not a read model: the bookings a driver
-- made at a lot, found by their creation event.
CREATE INDEX events_booking_by_driver_and_lot
    ON events ((payload -> 'BookingCreated' ->> 'user_id'), (payload -> 'BookingCreated' ->> 'lot_id'))
    WHERE aggregate_type = 'booking' AND event_type = 'BookingCreated';

-- Each driver's review of a lot as it stands (removed ones kept, flagged, so that the row
-- still remembers the last event applied).
CREATE TABLE rm_reviews
(
    id          uuid PRIMARY KEY,
    lot_id      uuid        NOT NULL,
    user_id     uuid        NOT NULL,
    safety      smallint    NOT NULL,
    lighting    smallint    NOT NULL,
    security    smallint    NOT NULL,
    cleanliness smallint    NOT NULL,
    comment     text,
    removed     boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL
);
CREATE INDEX rm_reviews_lot ON rm_reviews (lot_id) WHERE NOT removed;

-- Every version of every review, newest first per lot: the public history.
CREATE TABLE rm_review_history
(
    review_id   uuid        NOT NULL,
    version     bigint      NOT NULL,
    lot_id      uuid        NOT NULL,
    user_id     uuid        NOT NULL,
    -- `submitted`, `revised` or `removed`.
    kind        text        NOT NULL,
    safety      smallint,
    lighting    smallint,
    security    smallint,
    cleanliness smallint,
    comment     text,
    reason      text,
    at          timestamptz NOT NULL,
    PRIMARY KEY (review_id, version)
);
CREATE INDEX rm_review_history_lot ON rm_review_history (lot_id, at DESC, review_id, version DESC);

-- Each lot's sums over its standing reviews: averages for a lot, its search and its sort.
CREATE TABLE rm_lot_ratings
(
    lot_id      uuid PRIMARY KEY,
    reviews     bigint NOT NULL,
    safety      bigint NOT NULL,
    lighting    bigint NOT NULL,
    security    bigint NOT NULL,
    cleanliness bigint NOT NULL
);

-- Read models. Disposable: each can be rebuilt from the events table. `version` is the
-- sequence of the last event applied to the row, of the aggregate whose events write the row
-- (rm_slots rows are written by their lot's registry events), so replays are idempotent.

-- How far each projection has applied each stream. Updates of one stream take this row's lock
-- and apply every event after it in sequence order, so read models never see a stream's events
-- out of order, even when the commands' after-commit updates race.
CREATE TABLE rm_stream_checkpoints
(
    projection     text   NOT NULL,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL,
    PRIMARY KEY (projection, aggregate_type, aggregate_id)
);

CREATE TABLE rm_users
(
    id            uuid PRIMARY KEY,
    email         text        NOT NULL UNIQUE,
    full_name     text        NOT NULL,
    role          text        NOT NULL,
    password_hash text,
    created_at    timestamptz NOT NULL,
    version       bigint      NOT NULL
);

CREATE TABLE rm_lots
(
    id                uuid PRIMARY KEY,
    owner_id          uuid             NOT NULL,
    name              text             NOT NULL,
    address           text             NOT NULL,
    city              text             NOT NULL,
    latitude          double precision NOT NULL,
    longitude         double precision NOT NULL,
    hourly_rate_cents bigint           NOT NULL,
    currency          text             NOT NULL,
    description       text,
    camera_url        text,
    is_active         boolean          NOT NULL,
    created_at        timestamptz      NOT NULL,
    updated_at        timestamptz      NOT NULL,
    version           bigint           NOT NULL
);
CREATE INDEX rm_lots_owner ON rm_lots (owner_id);
CREATE INDEX rm_lots_city ON rm_lots (lower(city));
CREATE INDEX rm_lots_latitude ON rm_lots (latitude); -- bounding box of "nearby"

-- A slot as its lot's registry describes it (written by the lots projection) ...
CREATE TABLE rm_slots
(
    id         uuid PRIMARY KEY,
    lot_id     uuid        NOT NULL,
    label      text        NOT NULL,
    slot_type  text        NOT NULL,
    created_at timestamptz NOT NULL,
    version    bigint      NOT NULL
);
CREATE INDEX rm_slots_lot ON rm_slots (lot_id, label);

-- ... and its service state, as its own calendar records it (written by the slots
-- projection). Each projection owns its rows, so neither depends on the other's progress.
CREATE TABLE rm_slot_service
(
    slot_id        uuid PRIMARY KEY,
    out_of_service boolean NOT NULL,
    version        bigint  NOT NULL
);

CREATE VIEW rm_slots_live AS
SELECT s.id, s.lot_id, s.label, s.slot_type, s.created_at,
       COALESCE(ss.out_of_service, false) AS out_of_service
  FROM rm_slots s
  LEFT JOIN rm_slot_service ss ON ss.slot_id = s.id;

CREATE TABLE rm_bookings
(
    id             uuid PRIMARY KEY,
    user_id        uuid        NOT NULL,
    lot_id         uuid        NOT NULL,
    lot_owner_id   uuid        NOT NULL,
    slot_id        uuid        NOT NULL,
    start_time     timestamptz NOT NULL,
    end_time       timestamptz NOT NULL,
    vehicle_number text        NOT NULL,
    price_cents    bigint      NOT NULL,
    currency       text        NOT NULL,
    status         text        NOT NULL,
    hold_until     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    version        bigint      NOT NULL
);
CREATE INDEX rm_bookings_user ON rm_bookings (user_id, created_at DESC);
CREATE INDEX rm_bookings_owner ON rm_bookings (lot_owner_id, created_at DESC);
CREATE INDEX rm_bookings_slot_time ON rm_bookings (slot_id, start_time, end_time);

-- The event store. `events` is postgres-es's table, column for column (its db/init.sql);
-- postgres-es reads and writes it. `recorded_at` is ours: postgres-es does not name it in its
-- INSERT, so the default stamps every event with its commit-time clock.
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    recorded_at    timestamptz                  NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- Our snapshots (postgres-es 0.5.0's own are applied twice, see docs/adr/0002). A snapshot is
-- a cache of an aggregate's state after `sequence`; it may be deleted at any time.
CREATE TABLE aggregate_snapshots
(
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL CHECK (sequence > 0),
    schema_version integer     NOT NULL,
    payload        jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- The global, commit-ordered history (docs/adr/0009-global-position.md).
--
-- A position is given to an event only after its transaction has committed, by the
-- sequencer below, which runs one at a time: so positions appear in the order commits are
-- observed, a reader that has seen position p has seen every position below p, and no
-- transaction that commits late can ever land "behind" a reader (the bug of stores that number
-- rows at insert time: a bigserial taken by a slow transaction becomes visible after higher
-- numbers were already read and skipped).

-- The transaction that appended the event: events of one command share it. The sequencer
-- numbers a batch in (transaction, stream, sequence) order, which keeps every stream's order.
ALTER TABLE events ADD COLUMN transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE events ADD COLUMN global_position bigint;

-- The last position given out. One row; its row lock serializes the sequencer.
CREATE TABLE event_log_head
(
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position  bigint  NOT NULL
);

-- History recorded before this migration, in recording order.
WITH numbered AS (
    SELECT aggregate_type, aggregate_id, sequence,
           row_number() OVER (ORDER BY recorded_at, aggregate_type, aggregate_id, sequence) AS position
      FROM events
)
UPDATE events e
   SET global_position = n.position
  FROM numbered n
 WHERE (e.aggregate_type, e.aggregate_id, e.sequence) = (n.aggregate_type, n.aggregate_id, n.sequence);
INSERT INTO event_log_head (position) SELECT count(*) FROM events;

CREATE UNIQUE INDEX events_global_position ON events (global_position);
-- Committed but not yet numbered: a handful of rows at any time.
CREATE INDEX events_unsequenced ON events (transaction_id) WHERE global_position IS NULL;

-- Numbers every committed, unnumbered event and returns the head position. Safe to call from
-- any number of sessions at once: they queue on the head row, and each statement below reads
-- a fresh snapshot (READ COMMITTED, volatile function), taken after the previous sequencer
-- committed. A crash between an append and its sequencing only delays the numbering until the
-- next call from anyone.
CREATE FUNCTION parking_sequence_events() RETURNS bigint
    LANGUAGE plpgsql VOLATILE AS
$$
DECLARE
    head     bigint;
    numbered bigint;
BEGIN
    SELECT position INTO head FROM event_log_head FOR UPDATE;
    WITH pending AS (
        SELECT aggregate_type, aggregate_id, sequence,
               head + row_number() OVER (ORDER BY transaction_id, aggregate_type, aggregate_id, sequence) AS position
          FROM events
         WHERE global_position IS NULL
    )
    UPDATE events e
       SET global_position = p.position
      FROM pending p
     WHERE (e.aggregate_type, e.aggregate_id, e.sequence) = (p.aggregate_type, p.aggregate_id, p.sequence);
    GET DIAGNOSTICS numbered = ROW_COUNT;
    IF numbered > 0 THEN
        head := head + numbered;
        UPDATE event_log_head SET position = head;
        -- Wakes the relay and the projectors of every node (delivered at commit).
        PERFORM pg_notify('parking_events', head::text);
    END IF;
    RETURN head;
END;
$$;

-- Where each consumer of the log is: the relay, and every projection. A projection's row is
-- written in the same transaction as its read-model rows.
CREATE TABLE log_checkpoints
(
    consumer   text PRIMARY KEY,
    position   bigint      NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Replaced by log_checkpoints: projections now apply the one global order.
DROP TABLE rm_stream_checkpoints;

-- A replayed answer carries the X-Event-Position of the original.
ALTER TABLE idempotency_keys ADD COLUMN event_position bigint;

-- The sequencer, cheap however many events were numbered since the last vacuum.
--
-- Numbering an event updates its row, which leaves the old version's entry in the partial
-- index `events_unsequenced` until vacuum. The planner read that index with a bitmap scan,
-- which never marks such entries dead, so every call walked all of them and their heap pages:
-- measured 2.6 ms per call after 8k events, growing with every event until autovacuum. A
-- plain index scan marks them dead the first time it passes them, and later calls skip them
-- (0.09 ms at the same point). (Switching sequential scans off as well priced the head row's
-- one-row scan so high that it was JIT-compiled: 150 ms per call.) Rows are then updated by their ctid, found by the same scan,
-- instead of looked up again through the primary key. Everything else is as in 0004.
CREATE OR REPLACE FUNCTION parking_sequence_events() RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET enable_bitmapscan = off
    SET jit = off
AS
$$
DECLARE
    head     bigint;
    numbered bigint;
BEGIN
    SELECT position INTO head FROM event_log_head FOR UPDATE;
    WITH pending AS (
        SELECT ctid AS row,
               head + row_number() OVER (ORDER BY transaction_id, aggregate_type, aggregate_id, sequence) AS position
          FROM events
         WHERE global_position IS NULL
    )
    UPDATE events e
       SET global_position = p.position
      FROM pending p
     WHERE e.ctid = p.row;
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

-- Appends number their own events (docs/adr/0009-global-position.md, revised).
--
-- An append takes the head row's lock, inserts its events with the next positions, moves the
-- head and commits, all in one statement: the lock is held only for the server-side insert and
-- the commit, and the next append can take it only once this one is visible. So positions
-- still appear in commit order, and a reader of `global_position > checkpoint` can still never
-- pass an append that commits late: there is no late commit to pass. Compared with numbering
-- after the commit (0004), an event row is written once instead of twice, and an append needs
-- no second round trip and no second WAL flush for its numbering. Concurrent appends queue on
-- the lock; the booking desk records a whole batch of bookings in one append.
--
-- Rows inserted without a position (by an older version of the application, or by hand) are
-- still numbered by parking_sequence_events(), under the same lock.
CREATE FUNCTION parking_append_events(
    kinds text[], ids text[], sequences bigint[], event_types text[], versions text[],
    payloads text[], metadata text[]
) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
AS
$$
DECLARE
    head bigint;
BEGIN
    SELECT position INTO head FROM event_log_head FOR UPDATE;
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                        metadata, global_position)
    SELECT e.kind, e.id, e.sequence, e.event_type, e.version, e.payload::json, e.metadata::json,
           head + e.n
      FROM UNNEST(kinds, ids, sequences, event_types, versions, payloads, metadata)
               WITH ORDINALITY AS e(kind, id, sequence, event_type, version, payload, metadata, n);
    head := head + cardinality(kinds);
    UPDATE event_log_head SET position = head;
    -- Wakes the relay and the projectors of every node (delivered at commit).
    PERFORM pg_notify('parking_events', head::text);
    RETURN head;
END;
$$;

-- An append that also checks the streams its decision read (docs/adr/0013-booking-desk.md).
--
-- The booking desk decides on slots and lots it holds in memory from its earlier batches,
-- without reading them again. Each append therefore names every stream the batch decided on
-- with the sequence it saw, and records nothing if any of them has moved since: the same
-- outcome as a lost race on a written stream (SQLSTATE 23505), after which the batch reads
-- those streams and decides again. The check runs under the head row's lock, which every
-- append takes first, so no append can slip between the check and the insert.
--
-- With no events to append it only checks (a batch whose every request was refused on held
-- streams) and returns the head unchanged, without notifying anyone.
CREATE FUNCTION parking_append_events(
    kinds text[], ids text[], sequences bigint[], event_types text[], versions text[],
    payloads text[], metadata text[], read_kinds text[], read_ids text[], read_sequences bigint[]
) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
AS
$$
DECLARE
    head bigint;
    i int;
BEGIN
    SELECT position INTO head FROM event_log_head FOR UPDATE;
    -- One primary-key probe per stream. (A join of the arrays with `events` is planned once per
    -- connection and the plan kept: planned while the log was small, it was a hash join over a
    -- scan of the whole table, which then grew with every event.)
    FOR i IN 1 .. coalesce(cardinality(read_kinds), 0) LOOP
        IF EXISTS (SELECT 1 FROM events
                    WHERE aggregate_type = read_kinds[i] AND aggregate_id = read_ids[i]
                      AND sequence > read_sequences[i]) THEN
            RAISE unique_violation USING MESSAGE = 'a stream the append was decided on has moved';
        END IF;
    END LOOP;
    IF cardinality(kinds) = 0 THEN
        RETURN head;
    END IF;
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

-- The seven-argument form of migration 0007 stays for a node of the previous version during a
-- rolling upgrade; it now appends through the form above, so there is one implementation.
CREATE OR REPLACE FUNCTION parking_append_events(
    kinds text[], ids text[], sequences bigint[], event_types text[], versions text[],
    payloads text[], metadata text[]
) RETURNS bigint
    LANGUAGE sql VOLATILE
AS
$$
SELECT parking_append_events(kinds, ids, sequences, event_types, versions, payloads, metadata,
                             '{}'::text[], '{}'::text[], '{}'::bigint[])
$$;

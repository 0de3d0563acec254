-- Appends that follow one another on one connection (docs/adr/0013-booking-desk.md, "Pipelined
-- appends").
--
-- The booking desk sends a batch's append before the previous batch's append has answered, on
-- the same connection, so the server runs them back to back. The later batch was decided on the
-- earlier one's outcome, so it must record nothing unless the earlier one was recorded. Each
-- such append names itself (`batch`) and the batch it follows (`after_batch`). An append that
-- commits leaves its name in the session setting `parking.desk_batch`; one that fails leaves the
-- setting as it was, since a setting changed in a transaction that aborts is rolled back. An
-- append whose `after_batch` is not the setting therefore follows a batch that was not recorded:
-- it fails as a lost race does (SQLSTATE 23505) and the desk decides it again.
--
-- Both names NULL: the append of migration 0008, unchanged.
CREATE FUNCTION parking_append_events(
    kinds text[], ids text[], sequences bigint[], event_types text[], versions text[],
    payloads text[], metadata text[], read_kinds text[], read_ids text[], read_sequences bigint[],
    after_batch text, batch text
) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
AS
$$
DECLARE
    head bigint;
    i int;
BEGIN
    IF after_batch IS NOT NULL
       AND current_setting('parking.desk_batch', true) IS DISTINCT FROM after_batch THEN
        RAISE unique_violation USING MESSAGE = 'the batch this append follows was not recorded';
    END IF;
    IF batch IS NOT NULL THEN
        PERFORM set_config('parking.desk_batch', batch, false);
    END IF;
    SELECT position INTO head FROM event_log_head FOR UPDATE;
    -- One primary-key probe per stream (see migration 0008).
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

-- The forms of migrations 0007 and 0008 stay for a node of an earlier version during a rolling
-- upgrade; they append through the form above, so there is one implementation.
CREATE OR REPLACE FUNCTION parking_append_events(
    kinds text[], ids text[], sequences bigint[], event_types text[], versions text[],
    payloads text[], metadata text[], read_kinds text[], read_ids text[], read_sequences bigint[]
) RETURNS bigint
    LANGUAGE sql VOLATILE
AS
$$
SELECT parking_append_events(kinds, ids, sequences, event_types, versions, payloads, metadata,
                             read_kinds, read_ids, read_sequences, NULL, NULL)
$$;

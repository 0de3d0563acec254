-- Tamper evidence: every event row carries a hash chaining it to the row before it in the
-- global log (docs/audit.md, "The hash chain").
--
--   hash(p) = SHA-256( hash(p - 1) || encoding of row p ),   hash(0) = 32 zero bytes
--
-- The encoding is the row's position, aggregate type and id, sequence, event type and version,
-- payload and metadata (their stored JSON text), and recording time, in that order: integers
-- as 8-byte big-endian, texts as their UTF-8 length (4-byte big-endian) then their bytes, the
-- time as microseconds since 2000-01-01 UTC (8-byte big-endian: PostgreSQL's own binary form
-- of a timestamptz). `parking_infra::audit::chain_hash` computes the same in Rust, and
-- `history verify` recomputes it.
--
-- The append computes the hashes itself, under the head row's lock it already holds, so the
-- chain has no gaps and needs no second writer; the head row keeps the last hash.

ALTER TABLE events ADD COLUMN hash bytea;
ALTER TABLE event_log_head ADD COLUMN hash bytea NOT NULL DEFAULT decode(repeat('00', 32), 'hex');

-- For the audit API's `from`/`to`: recording times grow with positions, so a block-range index
-- finds a time range cheaply and costs the append almost nothing.
CREATE INDEX events_recorded_at ON events USING brin (recorded_at);

-- Texts are hashed as the database stores them, which must be UTF-8 for Rust to agree.
DO
$$
BEGIN
    IF current_setting('server_encoding') <> 'UTF8' THEN
        RAISE 'the hash chain needs a UTF8 database, not %', current_setting('server_encoding');
    END IF;
END;
$$;

CREATE FUNCTION parking_event_hash(
    previous bytea, at_position bigint, kind text, id text, seq bigint, event_type text,
    version text, payload text, metadata text, recorded_at timestamptz
) RETURNS bytea
    -- Stable, as `convert_to` is, and not strict: so that it is inlined into the append's loop
    -- (a call of a SQL function that is not costs about three times the hashing).
    LANGUAGE sql STABLE PARALLEL SAFE
AS
$$
-- (`octet_length` is the UTF-8 length in a UTF8 database, and cheaper than converting twice.)
SELECT sha256(previous || int8send(at_position)
              || int4send(octet_length(kind)) || convert_to(kind, 'UTF8')
              || int4send(octet_length(id)) || convert_to(id, 'UTF8')
              || int8send(seq)
              || int4send(octet_length(event_type)) || convert_to(event_type, 'UTF8')
              || int4send(octet_length(version)) || convert_to(version, 'UTF8')
              || int4send(octet_length(payload)) || convert_to(payload, 'UTF8')
              || int4send(octet_length(metadata)) || convert_to(metadata, 'UTF8')
              || timestamptz_send(recorded_at))
$$;

-- The append of migration 0009, which now also stamps its events with one recording time (they
-- commit together) and chains them.
CREATE OR REPLACE FUNCTION parking_append_events(
    kinds text[], ids text[], sequences bigint[], event_types text[], versions text[],
    payloads text[], metadata text[], read_kinds text[], read_ids text[], read_sequences bigint[],
    after_batch text, batch text
) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
AS
$$
DECLARE
    head bigint;
    tip bytea;
    recorded timestamptz;
    hashes bytea[];
    i int;
BEGIN
    IF after_batch IS NOT NULL
       AND current_setting('parking.desk_batch', true) IS DISTINCT FROM after_batch THEN
        RAISE unique_violation USING MESSAGE = 'the batch this append follows was not recorded';
    END IF;
    IF batch IS NOT NULL THEN
        PERFORM set_config('parking.desk_batch', batch, false);
    END IF;
    SELECT l.position, l.hash INTO head, tip FROM event_log_head l FOR UPDATE;
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
    recorded := clock_timestamp();
    FOR i IN 1 .. cardinality(kinds) LOOP
        tip := parking_event_hash(tip, head + i, kinds[i], ids[i], sequences[i], event_types[i],
                                  versions[i], payloads[i], metadata[i], recorded);
        hashes[i] := tip;
    END LOOP;
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                        metadata, recorded_at, global_position, hash)
    SELECT e.kind, e.id, e.sequence, e.event_type, e.version, e.payload::json, e.metadata::json,
           recorded, head + e.n, e.hash
      FROM UNNEST(kinds, ids, sequences, event_types, versions, payloads, metadata, hashes)
               WITH ORDINALITY AS e(kind, id, sequence, event_type, version, payload, metadata, hash, n);
    head := head + cardinality(kinds);
    UPDATE event_log_head SET position = head, hash = tip;
    -- Wakes the relay and the projectors of every node (delivered at commit).
    PERFORM pg_notify('parking_events', head::text);
    RETURN head;
END;
$$;

-- Chains the rows numbered after `from_position` (those the sequencer just numbered, or the
-- whole history), in order, from `previous`, the hash at `from_position`; moves the head's hash.
CREATE FUNCTION parking_chain_events(from_position bigint, previous bytea) RETURNS void
    LANGUAGE plpgsql VOLATILE
AS
$$
DECLARE
    tip bytea;
    r record;
BEGIN
    tip := previous;
    FOR r IN SELECT ctid AS row, global_position, aggregate_type, aggregate_id, sequence,
                    event_type, event_version, payload::text AS payload,
                    metadata::text AS metadata, recorded_at
               FROM events
              WHERE global_position > from_position
              ORDER BY global_position
    LOOP
        tip := parking_event_hash(tip, r.global_position, r.aggregate_type, r.aggregate_id,
                                  r.sequence, r.event_type, r.event_version, r.payload, r.metadata,
                                  r.recorded_at);
        UPDATE events SET hash = tip WHERE ctid = r.row;
    END LOOP;
    UPDATE event_log_head SET hash = tip WHERE tip IS DISTINCT FROM hash;
END;
$$;

-- The sequencer of migration 0006 (rows inserted without a position, by an older version or
-- by hand) chains what it numbers.
CREATE OR REPLACE FUNCTION parking_sequence_events() RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET enable_bitmapscan = off
    SET jit = off
AS
$$
DECLARE
    head     bigint;
    tip      bytea;
    numbered bigint;
BEGIN
    SELECT l.position, l.hash INTO head, tip FROM event_log_head l FOR UPDATE;
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
        PERFORM parking_chain_events(head, tip);
        head := head + numbered;
        UPDATE event_log_head SET position = head;
        -- Wakes the relay and the projectors of every node (delivered at commit).
        PERFORM pg_notify('parking_events', head::text);
    END IF;
    RETURN head;
END;
$$;

-- The history recorded before this migration.
SELECT parking_chain_events(0, decode(repeat('00', 32), 'hex'));

-- Where a verification of the chain may resume: a position verified intact and its hash,
-- signed (HMAC-SHA256 with a key derived from DATA_KEY_FILE's) so that whoever can write the
-- database cannot forge one.
CREATE TABLE audit_checkpoints
(
    position    bigint PRIMARY KEY CHECK (position > 0),
    hash        bytea       NOT NULL,
    signature   bytea       NOT NULL,
    verified_at timestamptz NOT NULL DEFAULT now()
);

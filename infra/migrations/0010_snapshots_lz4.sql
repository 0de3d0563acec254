-- Snapshots compressed with LZ4 (docs/adr/0002-event-store-and-snapshots.md).
--
-- A slot's snapshot is its whole calendar, rewritten every 200 of its events: tens of kilobytes
-- of JSON for a busy slot, which PostgreSQL compresses before storing it out of line. With the
-- default method (pglz) that compression was about 4 % of the database's CPU under the booking
-- benchmark (docs/benchmarks.md, sixth session); LZ4 does the same work several times faster,
-- for a slightly larger row. Snapshots already stored keep their method until rewritten.
--
-- LZ4 needs a server built with it (every packaged PostgreSQL 14+ is); on one that is not, the
-- column keeps the default and nothing else changes.
DO $$
BEGIN
    ALTER TABLE aggregate_snapshots ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no LZ4: snapshots stay compressed with %',
        current_setting('default_toast_compression');
END
$$;

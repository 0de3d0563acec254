-- Nearby search reads a latitude/longitude box (projections::lots::nearby): one index on both.
DROP INDEX rm_lots_latitude;
CREATE INDEX rm_lots_position ON rm_lots (latitude, longitude) WHERE is_active;

-- A lot's time zone (an IANA name): the calendar its days are counted in.
ALTER TABLE rm_lots ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';

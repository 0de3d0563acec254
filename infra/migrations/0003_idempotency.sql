-- Idempotency keys of write requests: the first answer to (scope, key) is kept and replayed
-- for retries with the same request. Not part of the record: rows expire (24 h by default).
CREATE TABLE idempotency_keys
(
    scope        text        NOT NULL, -- the caller: a user id, or 'anonymous'
    key          text        NOT NULL,
    fingerprint  bytea       NOT NULL, -- SHA-256 of method, path and body
    state        text        NOT NULL CHECK (state IN ('in_progress', 'done')),
    status       smallint,
    content_type text,
    location     text,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

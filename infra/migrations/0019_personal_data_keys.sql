-- Erasure of personal data without rewriting history (docs/audit.md, "Erasure").
--
-- Personal fields in events are sealed with a key per person (`parking_infra::personal`).
-- Each key is stored wrapped by the master key; erasing a person destroys their key: the row
-- stays, without the key, as the record that they were erased (and so that no new key is
-- ever made for them).
CREATE TABLE data_keys
(
    subject    uuid PRIMARY KEY,
    wrapped    bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    erased_at  timestamptz,
    CHECK ((wrapped IS NULL) = (erased_at IS NOT NULL))
);

-- Which master key the data keys are wrapped with: its fingerprint (an HMAC of a fixed text
-- under it), so that a wrong DATA_KEY_FILE is refused instead of reading as erasure; and,
-- when the deployment runs without DATA_KEY_FILE (development), the key itself.
CREATE TABLE data_master_key
(
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    fingerprint bytea NOT NULL,
    stored_key  bytea
);

-- Erased people's addresses all read `erased`: uniqueness of addresses is the e-mail claims'
-- business (ADR 0004), not this read model's.
ALTER TABLE rm_users DROP CONSTRAINT rm_users_email_key;

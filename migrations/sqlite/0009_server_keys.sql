-- Other servers' signing keys, as fetched from them or from a notary
-- (spec: server-server API, "Retrieving server keys"). Kept in step with
-- the other backend's 0009_server_keys.sql.
CREATE TABLE server_signing_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    -- Unpadded base64 ed25519 public key.
    public_key TEXT NOT NULL,
    -- Until when signatures by this key may be trusted (ms); for an old
    -- key, the time it expired (old_verify_keys' expired_ts).
    valid_until_ts BIGINT NOT NULL,
    -- The whole signed response the key came from, served again by the
    -- notary endpoints.
    response_json TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

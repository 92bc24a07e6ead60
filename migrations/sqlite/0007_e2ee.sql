-- End-to-end encryption: the keys the server brokers (it never sees a
-- private key or a plaintext), the device-list stream, to-device messages,
-- server-side key backup and dehydrated devices. Kept in step with
-- ../postgres/0007_e2ee.sql.

-- A device's identity keys, as the device signed and uploaded them.
CREATE TABLE device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys; a claim deletes the row it returns.
CREATE TABLE one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- One fallback key per device and algorithm; `used` once it was claimed.
CREATE TABLE fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys ('master', 'self_signing', 'user_signing'); the
-- position is that of the last change (`m.signing_key_update`).
CREATE TABLE cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);
CREATE INDEX cross_signing_keys_stream ON cross_signing_keys (stream_ordering);

-- Signatures uploaded with /keys/signatures/upload, merged into the signed
-- key when it is queried. `target_key_id` is a device id or the public part
-- of a master key.
CREATE TABLE key_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- The device-list stream: the last change of each device (keys uploaded,
-- renamed, deleted), at a main-stream position.
CREATE TABLE device_list_changes (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    deleted BIGINT NOT NULL DEFAULT 0,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE INDEX device_list_changes_stream ON device_list_changes (stream_ordering);

-- To-device messages waiting for their device; deleted once the device
-- syncs with a token past them.
CREATE TABLE to_device_messages (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_ordering)
);

-- Server-side key backup versions; a deleted version stays as a tombstone
-- so its number is never reused.
CREATE TABLE room_key_backups (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag BIGINT NOT NULL DEFAULT 0,
    deleted BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE room_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BIGINT NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);

-- MSC3814: at most one dehydrated device per user.
CREATE TABLE dehydrated_devices (
    user_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    device_data TEXT NOT NULL
);

-- Device lists follow room membership: who joined or left a room since a
-- sync position.
CREATE INDEX memberships_room_stream ON memberships (room_id, stream_ordering);

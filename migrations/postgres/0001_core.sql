-- Core schema: accounts, devices, the room event graph, state, sync streams.
-- Kept in step with ../sqlite/0001_core.sql: the same tables and columns.

CREATE TABLE stream_positions (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO stream_positions (name, position) VALUES ('main', 0);

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    displayname TEXT,
    avatar_url TEXT,
    is_admin BIGINT NOT NULL DEFAULT 0,
    deactivated BIGINT NOT NULL DEFAULT 0,
    created_ts BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    expires_ts BIGINT,
    refresh_token_hash TEXT
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed BIGINT,
    completed BIGINT NOT NULL DEFAULT 0,
    expiry_ts BIGINT
);

CREATE TABLE uia_sessions (
    session_id TEXT PRIMARY KEY,
    completed TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);

CREATE TABLE admin_nonces (
    nonce TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL
);

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    is_public BIGINT NOT NULL DEFAULT 0,
    state_group BIGINT,
    created_ts BIGINT NOT NULL
);

CREATE TABLE events (
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    depth BIGINT NOT NULL,
    pdu TEXT NOT NULL,
    unsigned_extra TEXT,
    state_group_before BIGINT,
    txn_device_id TEXT,
    txn_id TEXT,
    redacted_by TEXT
);
CREATE INDEX events_room_order ON events (room_id, stream_ordering);
CREATE INDEX events_room_state ON events (room_id, event_type, state_key);

CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);

CREATE TABLE event_auth (
    event_id TEXT NOT NULL,
    auth_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_event_id)
);

CREATE TABLE room_forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- A state group is a snapshot of room state: a delta over prev_group, or a
-- full snapshot when prev_group is NULL.
CREATE TABLE state_groups (
    state_group BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group BIGINT,
    delta_depth BIGINT NOT NULL
);

CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (state_group, event_type, state_key)
);

CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);

CREATE TABLE memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    forgotten BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id, membership);

-- spec: a transaction id is scoped to a device and an endpoint (its path,
-- room included): `scope` names the endpoint, e.g. `send !room`.
CREATE TABLE txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);

CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_ordering);

CREATE TABLE filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

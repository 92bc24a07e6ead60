-- Messenger features: receipts, push actions (notification counts), reports.
-- Kept in step with ../postgres/0002_messenger.sql.

-- The latest receipt of each type per user, room and thread. A receipt only
-- moves forward: `event_stream_ordering` is the receipted event's position.
-- `stream_ordering` is the position of the change, on the main stream, so
-- incremental syncs deliver each change once. `thread_id` is '' for an
-- unthreaded receipt, 'main' or a thread root's event id otherwise.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_stream_ordering BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_ordering);

-- An event that notifies a local user, as their push rules decided when it
-- was persisted. Unread counts are the rows after the user's read receipt.
-- `thread_id` is 'main' or the thread root's event id.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    actions TEXT NOT NULL,
    highlight BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_ordering)
);
CREATE INDEX event_push_actions_room ON event_push_actions (user_id, room_id, stream_ordering);

-- Reports of events, rooms and users for the server's admins.
CREATE TABLE reports (
    reporter TEXT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    user_id TEXT,
    reason TEXT,
    score BIGINT,
    received_ts BIGINT NOT NULL
);

-- Rooms shared with other servers (spec: server-server API, "PDUs",
-- "Transactions"). Kept in step with the other backend's 0011_federation.sql;
-- only the expression that splits a user id differs.

-- An outlier is an event we hold without knowing the state before it (the
-- state and auth chain a join brings, an invite to a room we are not in):
-- never in a timeline, never a forward extremity. A soft-failed event passed
-- the auth rules at its own place in the graph but not against the room's
-- current state: kept for the graph and state resolution, never shown.
ALTER TABLE events ADD COLUMN outlier BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN soft_failed BIGINT NOT NULL DEFAULT 0;

-- Events that failed the auth rules: kept so they are not fetched and
-- checked again, and so events that cite them as prev_events can be placed.
CREATE TABLE rejected_events (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    pdu TEXT NOT NULL,
    reason TEXT NOT NULL,
    depth BIGINT NOT NULL,
    -- The state before the event, when known: the state after it as well.
    state_group_before BIGINT,
    received_ts BIGINT NOT NULL
);

-- Which servers are in a room: the servers of its joined members.
ALTER TABLE memberships ADD COLUMN server_name TEXT NOT NULL DEFAULT '';
UPDATE memberships SET server_name = substr(user_id, strpos(user_id, ':') + 1);
CREATE INDEX memberships_room_server ON memberships (room_id, membership, server_name);

-- Children of an event: whether it is still a forward extremity.
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

-- What waits to be sent to each server: PDUs by event id, EDUs by type and
-- content. position orders a destination's items (a main stream position).
CREATE TABLE federation_outbox (
    destination TEXT NOT NULL,
    position BIGINT NOT NULL,
    event_id TEXT,
    edu_type TEXT,
    edu_content TEXT,
    PRIMARY KEY (destination, position)
);

-- Transactions received, so a retried one gets the same answer and is not
-- applied twice.
CREATE TABLE federation_inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);

-- Events fetched with /backfill go before everything else in a room's
-- timeline: their positions count down from 0.
INSERT INTO stream_positions (name, position) VALUES ('backfill', 0);

-- Event relations: spec client-server API, "Forming relationships between
-- events". Kept in step with ../postgres/0004_relations.sql.
--
-- Both tables are derived from `events` by the triggers below, so every path
-- that writes events keeps them current without knowing about them.

-- One row per event whose content has an `m.relates_to` with a string
-- `rel_type` and `event_id` (replies have no `rel_type`: they are not
-- relations the server aggregates). A redacted event loses its row: spec,
-- "when a child event is redacted then the relationship is broken".
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    -- `m.annotation`: the annotation's key.
    aggregation_key TEXT,
    -- 1 when the event meets, on its own, the spec's rules for an `m.replace`
    -- (no state key; an `m.new_content` object, unless encrypted, where the
    -- server cannot see it). The rules that involve the original event are
    -- checked when aggregating.
    can_replace BIGINT NOT NULL
);
CREATE INDEX event_relations_parent ON event_relations (relates_to_id, rel_type, stream_ordering);
CREATE INDEX event_relations_parent_sender ON event_relations (relates_to_id, sender, rel_type);

-- One row per thread: its root, its newest reply and how many replies it has.
CREATE TABLE threads (
    root_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    latest_event_id TEXT NOT NULL,
    latest_stream_ordering BIGINT NOT NULL,
    reply_count BIGINT NOT NULL,
    PRIMARY KEY (root_id, room_id)
);
CREATE INDEX threads_activity ON threads (room_id, latest_stream_ordering);

CREATE TRIGGER threads_reply_added AFTER INSERT ON event_relations
WHEN NEW.rel_type = 'm.thread'
BEGIN
    INSERT INTO threads (root_id, room_id, latest_event_id, latest_stream_ordering, reply_count)
    VALUES (NEW.relates_to_id, NEW.room_id, NEW.event_id, NEW.stream_ordering, 1)
    ON CONFLICT (root_id, room_id) DO UPDATE SET
        reply_count = threads.reply_count + 1,
        latest_event_id = CASE WHEN excluded.latest_stream_ordering > threads.latest_stream_ordering
            THEN excluded.latest_event_id ELSE threads.latest_event_id END,
        latest_stream_ordering = max(threads.latest_stream_ordering, excluded.latest_stream_ordering);
END;

CREATE TRIGGER threads_reply_removed AFTER DELETE ON event_relations
WHEN OLD.rel_type = 'm.thread'
BEGIN
    UPDATE threads SET reply_count = reply_count - 1
    WHERE root_id = OLD.relates_to_id AND room_id = OLD.room_id;
    DELETE FROM threads
    WHERE root_id = OLD.relates_to_id AND room_id = OLD.room_id AND reply_count <= 0;
    UPDATE threads SET
        latest_event_id = (SELECT event_id FROM event_relations
            WHERE relates_to_id = OLD.relates_to_id AND rel_type = 'm.thread' AND room_id = OLD.room_id
            ORDER BY stream_ordering DESC LIMIT 1),
        latest_stream_ordering = (SELECT MAX(stream_ordering) FROM event_relations
            WHERE relates_to_id = OLD.relates_to_id AND rel_type = 'm.thread' AND room_id = OLD.room_id)
    WHERE root_id = OLD.relates_to_id AND room_id = OLD.room_id AND latest_event_id = OLD.event_id;
END;

-- The relation each event's content declares: the one definition the
-- backfill below and the insert trigger share.
CREATE VIEW event_relations_source AS
SELECT event_id,
    json_extract(pdu, '$.content."m.relates_to".event_id') AS relates_to_id,
    json_extract(pdu, '$.content."m.relates_to".rel_type') AS rel_type,
    room_id, sender, event_type, stream_ordering, origin_server_ts,
    CASE WHEN json_type(pdu, '$.content."m.relates_to".key') = 'text'
        THEN json_extract(pdu, '$.content."m.relates_to".key') END AS aggregation_key,
    state_key IS NULL AND (event_type = 'm.room.encrypted'
        OR json_type(pdu, '$.content."m.new_content"') IS 'object') AS can_replace
FROM events
WHERE redacted_by IS NULL
    -- spares the JSON parse for the many events without a relation
    AND instr(pdu, '"m.relates_to"') > 0
    AND json_type(pdu, '$.content."m.relates_to".rel_type') = 'text'
    AND json_type(pdu, '$.content."m.relates_to".event_id') = 'text';

INSERT INTO event_relations SELECT * FROM event_relations_source WHERE true ORDER BY stream_ordering;

CREATE TRIGGER event_relations_added AFTER INSERT ON events
WHEN instr(NEW.pdu, '"m.relates_to"') > 0
BEGIN
    INSERT INTO event_relations SELECT * FROM event_relations_source WHERE event_id = NEW.event_id
    ON CONFLICT (event_id) DO NOTHING;
END;

CREATE TRIGGER event_relations_redacted AFTER UPDATE OF redacted_by ON events
WHEN NEW.redacted_by IS NOT NULL
BEGIN
    DELETE FROM event_relations WHERE event_id = NEW.event_id;
END;

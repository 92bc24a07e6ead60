-- Event relations: spec client-server API, "Forming relationships between
-- events". Kept in step with ../sqlite/0004_relations.sql.
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

CREATE FUNCTION threads_reply_added() RETURNS trigger AS $$
BEGIN
    INSERT INTO threads (root_id, room_id, latest_event_id, latest_stream_ordering, reply_count)
    VALUES (NEW.relates_to_id, NEW.room_id, NEW.event_id, NEW.stream_ordering, 1)
    ON CONFLICT (root_id, room_id) DO UPDATE SET
        reply_count = threads.reply_count + 1,
        latest_event_id = CASE WHEN excluded.latest_stream_ordering > threads.latest_stream_ordering
            THEN excluded.latest_event_id ELSE threads.latest_event_id END,
        latest_stream_ordering = GREATEST(threads.latest_stream_ordering, excluded.latest_stream_ordering);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER threads_reply_added AFTER INSERT ON event_relations
FOR EACH ROW WHEN (NEW.rel_type = 'm.thread') EXECUTE FUNCTION threads_reply_added();

CREATE FUNCTION threads_reply_removed() RETURNS trigger AS $$
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
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER threads_reply_removed AFTER DELETE ON event_relations
FOR EACH ROW WHEN (OLD.rel_type = 'm.thread') EXECUTE FUNCTION threads_reply_removed();

-- The relation each event's content declares: the one definition the
-- backfill below and the insert trigger share. PostgreSQL cannot turn the
-- escape `\u0000` into text and fails on it anywhere in the JSON, so it is
-- read as U+FFFD: no event id or relation type holds either.
CREATE VIEW event_relations_source AS
SELECT event_id,
    rel ->> 'event_id' AS relates_to_id,
    rel ->> 'rel_type' AS rel_type,
    room_id, sender, event_type, stream_ordering, origin_server_ts,
    CASE WHEN json_typeof(rel -> 'key') = 'string' THEN rel ->> 'key' END AS aggregation_key,
    CASE WHEN state_key IS NULL AND (event_type = 'm.room.encrypted'
        OR json_typeof(content -> 'm.new_content') = 'object') THEN 1 ELSE 0 END::BIGINT AS can_replace
FROM (
    SELECT e.*, c.content, c.content -> 'm.relates_to' AS rel
    FROM events e
    -- OFFSET 0 keeps the planner from inlining this: the PDU is parsed once, not once per use.
    CROSS JOIN LATERAL (SELECT replace(e.pdu, '\u0000', '\uFFFD')::json -> 'content' AS content OFFSET 0) c
    WHERE e.redacted_by IS NULL
        -- spares the JSON parse for the many events without a relation
        AND strpos(e.pdu, '"m.relates_to"') > 0
) related
WHERE json_typeof(rel -> 'rel_type') = 'string'
    AND json_typeof(rel -> 'event_id') = 'string';

INSERT INTO event_relations SELECT * FROM event_relations_source ORDER BY stream_ordering;

CREATE FUNCTION event_relations_added() RETURNS trigger AS $$
BEGIN
    INSERT INTO event_relations SELECT * FROM event_relations_source WHERE event_id = NEW.event_id
    ON CONFLICT (event_id) DO NOTHING;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER event_relations_added AFTER INSERT ON events
FOR EACH ROW WHEN (strpos(NEW.pdu, '"m.relates_to"') > 0) EXECUTE FUNCTION event_relations_added();

CREATE FUNCTION event_relations_redacted() RETURNS trigger AS $$
BEGIN
    DELETE FROM event_relations WHERE event_id = NEW.event_id;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER event_relations_redacted AFTER UPDATE OF redacted_by ON events
FOR EACH ROW WHEN (NEW.redacted_by IS NOT NULL) EXECUTE FUNCTION event_relations_redacted();

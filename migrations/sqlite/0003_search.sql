-- Full-text search over room events (spec: client-server API, "Server Side
-- Search"), with FTS5. Kept in step with ../postgres/0003_search.sql.
--
-- One row per searchable event, its rowid the event's stream_ordering:
-- `content.body` of m.room.message, `content.name` of m.room.name,
-- `content.topic` of m.room.topic (with the text/plain `m.topic` body when it
-- says something else). Encrypted events have no readable text and are never
-- indexed. Triggers on `events` keep the index, so the write path does not
-- know about it: an insert indexes, a redaction or a delete removes.
--
-- `unicode61` without stemming or diacritic folding, because PostgreSQL's
-- `simple` configuration does neither: a query finds the same events on both
-- backends, in any language. Contentless (`content = ''`): the text is in the
-- PDU already; `contentless_delete` (SQLite 3.43, bundled) allows removal by
-- rowid alone.
CREATE VIRTUAL TABLE event_search USING fts5(
    value,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 0'
);

-- The text each searchable event is indexed with: used by the trigger and the
-- backfill below, so both index exactly the same.
CREATE VIEW event_search_docs AS
SELECT stream_ordering,
       CASE WHEN plain IS NULL OR plain = value THEN value
            WHEN value IS NULL THEN plain
            ELSE value || ' ' || plain END AS value
FROM (
    SELECT stream_ordering,
        CASE event_type
            WHEN 'm.room.message' THEN
                CASE WHEN json_type(pdu, '$.content.body') = 'text' THEN pdu ->> '$.content.body' END
            WHEN 'm.room.name' THEN
                CASE WHEN json_type(pdu, '$.content.name') = 'text' THEN pdu ->> '$.content.name' END
            ELSE
                CASE WHEN json_type(pdu, '$.content.topic') = 'text' THEN pdu ->> '$.content.topic' END
        END AS value,
        CASE WHEN event_type = 'm.room.topic' AND json_type(pdu, '$.content."m.topic"."m.text"') = 'array' THEN
            (SELECT t.value ->> '$.body' FROM json_each(pdu, '$.content."m.topic"."m.text"') t
             WHERE json_type(t.value, '$.body') = 'text'
               AND COALESCE(t.value ->> '$.mimetype', 'text/plain') = 'text/plain'
             LIMIT 1)
        END AS plain
    FROM events
    WHERE event_type IN ('m.room.message', 'm.room.name', 'm.room.topic') AND redacted_by IS NULL
) d
WHERE COALESCE(value, plain, '') <> '';

CREATE TRIGGER event_search_insert AFTER INSERT ON events
WHEN NEW.event_type IN ('m.room.message', 'm.room.name', 'm.room.topic')
BEGIN
    INSERT INTO event_search (rowid, value)
    SELECT stream_ordering, value FROM event_search_docs WHERE stream_ordering = NEW.stream_ordering;
END;

-- Only rows that are there are deleted: a contentless table records a
-- deletion as a tombstone, which should name an indexed row.
CREATE TRIGGER event_search_redact AFTER UPDATE OF redacted_by ON events
WHEN NEW.redacted_by IS NOT NULL AND OLD.redacted_by IS NULL
    AND NEW.event_type IN ('m.room.message', 'm.room.name', 'm.room.topic')
BEGIN
    DELETE FROM event_search WHERE rowid = NEW.stream_ordering
        AND EXISTS (SELECT 1 FROM event_search WHERE rowid = NEW.stream_ordering);
END;

CREATE TRIGGER event_search_delete AFTER DELETE ON events
WHEN OLD.event_type IN ('m.room.message', 'm.room.name', 'm.room.topic')
BEGIN
    DELETE FROM event_search WHERE rowid = OLD.stream_ordering
        AND EXISTS (SELECT 1 FROM event_search WHERE rowid = OLD.stream_ordering);
END;

-- Events stored before this migration.
INSERT INTO event_search (rowid, value) SELECT stream_ordering, value FROM event_search_docs;

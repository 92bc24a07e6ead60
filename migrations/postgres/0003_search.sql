-- Full-text search over room events (spec: client-server API, "Server Side
-- Search"), with a tsvector per event and a GIN index. Kept in step with
-- ../sqlite/0003_search.sql.
--
-- One row per searchable event: `content.body` of m.room.message,
-- `content.name` of m.room.name, `content.topic` of m.room.topic (with the
-- text/plain `m.topic` body when it says something else). Encrypted events
-- have no readable text and are never indexed. Triggers on `events` keep the
-- index, so the write path does not know about it: an insert indexes, a
-- redaction or a delete removes.
--
-- The `simple` configuration (lower-casing, no stemming, no stop words)
-- rather than `english`: rooms speak every language, and English stemming and
-- stop words would mangle the others (a query made only of stop words, like
-- "to be", would find nothing at all). It also matches SQLite's `unicode61`,
-- so a query finds the same events on both backends. Queries match word
-- prefixes, which covers much of what stemming gave.
CREATE TABLE event_search (
    stream_ordering BIGINT PRIMARY KEY,
    vector TSVECTOR NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);

-- The text an event is indexed with, or NULL.
CREATE FUNCTION event_search_text(event_type TEXT, pdu TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    content JSONB;
    value TEXT;
    plain TEXT;
BEGIN
    -- jsonb cannot hold U+0000: such an event stays out of the index rather
    -- than failing its own insert.
    IF strpos(pdu, E'\\u0000') > 0 THEN
        RETURN NULL;
    END IF;
    content := pdu::jsonb -> 'content';
    IF jsonb_typeof(content) IS DISTINCT FROM 'object' THEN
        RETURN NULL;
    END IF;
    value := CASE event_type
        WHEN 'm.room.message' THEN
            CASE WHEN jsonb_typeof(content -> 'body') = 'string' THEN content ->> 'body' END
        WHEN 'm.room.name' THEN
            CASE WHEN jsonb_typeof(content -> 'name') = 'string' THEN content ->> 'name' END
        WHEN 'm.room.topic' THEN
            CASE WHEN jsonb_typeof(content -> 'topic') = 'string' THEN content ->> 'topic' END
    END;
    IF event_type = 'm.room.topic' AND jsonb_typeof(content -> 'm.topic' -> 'm.text') = 'array' THEN
        SELECT t ->> 'body' INTO plain
        FROM jsonb_array_elements(content -> 'm.topic' -> 'm.text') t
        WHERE jsonb_typeof(t -> 'body') = 'string'
          AND COALESCE(t ->> 'mimetype', 'text/plain') = 'text/plain'
        LIMIT 1;
    END IF;
    IF plain IS NULL OR plain = value THEN
        RETURN NULLIF(value, '');
    END IF;
    RETURN NULLIF(concat_ws(' ', value, plain), '');
END
$$;

CREATE FUNCTION event_search_index() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t TEXT := event_search_text(NEW.event_type, NEW.pdu);
BEGIN
    IF t IS NOT NULL THEN
        INSERT INTO event_search (stream_ordering, vector)
        VALUES (NEW.stream_ordering, to_tsvector('simple', t));
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION event_search_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM event_search WHERE stream_ordering = OLD.stream_ordering;
    RETURN NULL;
END
$$;

CREATE TRIGGER event_search_insert AFTER INSERT ON events FOR EACH ROW
WHEN (NEW.event_type IN ('m.room.message', 'm.room.name', 'm.room.topic'))
EXECUTE FUNCTION event_search_index();

CREATE TRIGGER event_search_redact AFTER UPDATE OF redacted_by ON events FOR EACH ROW
WHEN (NEW.redacted_by IS NOT NULL AND OLD.redacted_by IS NULL
      AND NEW.event_type IN ('m.room.message', 'm.room.name', 'm.room.topic'))
EXECUTE FUNCTION event_search_forget();

CREATE TRIGGER event_search_delete AFTER DELETE ON events FOR EACH ROW
WHEN (OLD.event_type IN ('m.room.message', 'm.room.name', 'm.room.topic'))
EXECUTE FUNCTION event_search_forget();

-- Events stored before this migration.
INSERT INTO event_search (stream_ordering, vector)
SELECT stream_ordering, to_tsvector('simple', t)
FROM (
    SELECT stream_ordering, event_search_text(event_type, pdu) AS t
    FROM events
    WHERE event_type IN ('m.room.message', 'm.room.name', 'm.room.topic') AND redacted_by IS NULL
) d
WHERE t IS NOT NULL;

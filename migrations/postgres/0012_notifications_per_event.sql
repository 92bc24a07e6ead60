-- Push actions, one row per notifying event instead of one per recipient.
-- Kept in step with ../sqlite/0012_notifications_per_event.sql.
--
-- A message in a room of N local members wrote N rows, each with its own
-- index entries: most of the write volume of a busy server. Now one row:
-- `recipients` maps each notified local user to the actions their push rules
-- chose (a JSON object), `highlights` the users among them it highlights
-- ({"@u:example.org": true}). Unread counts still live per user in
-- `unread_counts`, kept up to date as rows are added and receipts move.
CREATE TABLE event_notifications (
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    -- 'main' or the thread root's event id.
    thread_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    recipients TEXT NOT NULL,
    highlights TEXT NOT NULL,
    PRIMARY KEY (room_id, stream_ordering)
);

INSERT INTO event_notifications (room_id, stream_ordering, event_id, thread_id, ts, recipients, highlights)
SELECT room_id, stream_ordering, MIN(event_id), MIN(thread_id), MIN(ts),
       json_object_agg(user_id, actions::json)::text,
       COALESCE(json_object_agg(user_id, true) FILTER (WHERE highlight = 1), '{}')::text
FROM event_push_actions
GROUP BY room_id, stream_ordering;

DROP TABLE event_push_actions;

-- Push actions, one row per notifying event instead of one per recipient.
-- Kept in step with ../postgres/0012_notifications_per_event.sql.
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
SELECT a.room_id, a.stream_ordering, MIN(a.event_id), MIN(a.thread_id), MIN(a.ts),
       json_group_object(a.user_id, json(a.actions)),
       (SELECT json_group_object(h.user_id, json('true')) FROM event_push_actions h
        WHERE h.stream_ordering = a.stream_ordering AND h.highlight = 1)
FROM event_push_actions a
GROUP BY a.room_id, a.stream_ordering;

DROP TABLE event_push_actions;

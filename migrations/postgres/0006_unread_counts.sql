-- Unread notification counts per user, room and thread ('main' or a root's
-- event id), kept up to date as push actions are added and receipts move,
-- so a sync reads counts instead of counting.
CREATE TABLE unread_counts (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    notifications BIGINT NOT NULL,
    highlights BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);

//! Push actions: which events notify which local users (unread counts,
//! `GET /notifications`).

use std::collections::BTreeMap;

use super::{Db, WriteTx, placeholders, values_rows};
use crate::Result;

pub struct NewPushAction<'a> {
    pub user_id: &'a str,
    pub stream_ordering: i64,
    pub room_id: &'a str,
    pub event_id: &'a str,
    pub thread_id: &'a str,
    pub actions: &'a str,
    pub highlight: bool,
    pub ts: i64,
}

/// Unread notifications of one thread (`main` or a root's event id) of a room.
#[derive(Debug, sqlx::FromRow)]
pub struct UnreadCount {
    pub room_id: String,
    pub thread_id: String,
    pub notifications: i64,
    pub highlights: i64,
}

#[derive(Debug, sqlx::FromRow)]
pub struct NotificationRow {
    pub room_id: String,
    pub event_id: String,
    pub stream_ordering: i64,
    pub actions: String,
    pub highlight: i64,
    pub ts: i64,
    /// Whether a read receipt of the user covers it.
    pub read: i64,
}

/// SQL: how far the user has read the thread of push action `a`: their
/// furthest read receipt (public or private) in the room, unthreaded or in
/// that thread.
const READ_UPTO: &str = "COALESCE((SELECT MAX(r.event_stream_ordering) FROM receipts r \
     WHERE r.room_id = a.room_id AND r.user_id = a.user_id AND r.thread_id IN ('', a.thread_id) \
     AND r.receipt_type IN ('m.read', 'm.read.private')), -1)";

impl WriteTx<'_> {
    pub async fn insert_push_actions(&mut self, rows: &[NewPushAction<'_>]) -> Result<()> {
        for chunk in rows.chunks(self.backend.rows_per_statement(8)) {
            let values = values_rows(chunk.len(), 1, 8, "({})");
            let sql = format!(
                "INSERT INTO event_push_actions (user_id, stream_ordering, room_id, event_id, \
                 thread_id, actions, highlight, ts) VALUES {values}"
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.user_id)
                    .bind(r.stream_ordering)
                    .bind(r.room_id)
                    .bind(r.event_id)
                    .bind(r.thread_id)
                    .bind(r.actions)
                    .bind(i64::from(r.highlight))
                    .bind(r.ts);
            }
            q.execute(&mut *self.tx).await?;
        }
        let mut added: BTreeMap<(&str, &str, &str), (i64, i64)> = BTreeMap::new();
        for r in rows {
            let counts = added
                .entry((r.user_id, r.room_id, r.thread_id))
                .or_default();
            counts.0 += 1;
            counts.1 += i64::from(r.highlight);
        }
        let added: Vec<_> = added.into_iter().collect();
        for chunk in added.chunks(self.backend.rows_per_statement(5)) {
            let values = values_rows(chunk.len(), 1, 5, "({})");
            let sql = format!(
                "INSERT INTO unread_counts (user_id, room_id, thread_id, notifications, highlights) \
                 VALUES {values} ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET \
                 notifications = unread_counts.notifications + excluded.notifications, \
                 highlights = unread_counts.highlights + excluded.highlights"
            );
            let mut q = sqlx::query(&sql);
            for ((user, room, thread), (notifications, highlights)) in chunk {
                q = q
                    .bind(*user)
                    .bind(*room)
                    .bind(*thread)
                    .bind(*notifications)
                    .bind(*highlights);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Recounts the user's unread notifications in a room after their read
    /// receipts moved: what lies after both the unthreaded receipt and the
    /// receipt of each thread.
    pub async fn recount_unread(&mut self, user_id: &str, room_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM unread_counts WHERE user_id = $1 AND room_id = $2")
            .bind(user_id)
            .bind(room_id)
            .execute(&mut *self.tx)
            .await?;
        let sql = format!(
            "INSERT INTO unread_counts (user_id, room_id, thread_id, notifications, highlights) \
             SELECT a.user_id, a.room_id, a.thread_id, COUNT(*), SUM(a.highlight) \
             FROM event_push_actions a WHERE a.user_id = $1 AND a.room_id = $2 \
             AND a.stream_ordering > {READ_UPTO} GROUP BY a.user_id, a.room_id, a.thread_id"
        );
        sqlx::query(&sql)
            .bind(user_id)
            .bind(room_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

impl Db {
    /// Local members joined to a room, with their global display names
    /// (what push rules match mentions against).
    pub async fn joined_members_with_names(
        &self,
        room_id: &str,
    ) -> Result<Vec<(String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT m.user_id, u.displayname FROM memberships m \
             JOIN users u ON u.user_id = m.user_id \
             WHERE m.room_id = $1 AND m.membership = 'join'",
        )
        .bind(room_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// The user's unread notification counts in `rooms`, per room and thread.
    pub async fn unread_counts(&self, user_id: &str, rooms: &[String]) -> Result<Vec<UnreadCount>> {
        let mut rows = Vec::new();
        for chunk in rooms.chunks(500) {
            let sql = format!(
                "SELECT room_id, thread_id, notifications, highlights FROM unread_counts \
                 WHERE user_id = $1 AND notifications > 0 AND room_id IN ({})",
                placeholders(2, chunk.len()),
            );
            let mut q = sqlx::query_as::<_, UnreadCount>(&sql).bind(user_id);
            for room in chunk {
                q = q.bind(room);
            }
            rows.extend(q.fetch_all(self.pool()).await?);
        }
        Ok(rows)
    }

    /// `GET /notifications`: newest first, before position `before`,
    /// `only_highlight` if asked.
    pub async fn notifications(
        &self,
        user_id: &str,
        before: i64,
        limit: i64,
        only_highlight: bool,
    ) -> Result<Vec<NotificationRow>> {
        let sql = format!(
            "SELECT a.room_id, a.event_id, a.stream_ordering, a.actions, a.highlight, a.ts, \
             CASE WHEN a.stream_ordering <= {READ_UPTO} THEN 1 ELSE 0 END AS read \
             FROM event_push_actions a WHERE a.user_id = $1 AND a.stream_ordering < $2 \
             AND a.highlight >= $3 ORDER BY a.stream_ordering DESC LIMIT $4"
        );
        Ok(sqlx::query_as(&sql)
            .bind(user_id)
            .bind(before)
            .bind(i64::from(only_highlight))
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }
}

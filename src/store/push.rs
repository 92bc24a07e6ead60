//! Push actions: which events notify which local users (unread counts,
//! `GET /notifications`).

use super::{Db, WriteTx, placeholders};
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

/// A notifying event not yet read past by an unthreaded receipt.
#[derive(Debug, sqlx::FromRow)]
pub struct UnreadRow {
    pub room_id: String,
    pub thread_id: String,
    pub stream_ordering: i64,
    pub highlight: i64,
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

/// The furthest read receipt (public or private) of the user in the row's
/// room for `thread` (an SQL expression).
fn read_upto(thread: &str) -> String {
    format!(
        "COALESCE((SELECT MAX(r.event_stream_ordering) FROM receipts r \
         WHERE r.room_id = a.room_id AND r.user_id = a.user_id AND r.thread_id = {thread} \
         AND r.receipt_type IN ('m.read', 'm.read.private')), -1)"
    )
}

impl WriteTx<'_> {
    /// Local members joined to a room, with their global display names
    /// (what push rules match mentions against).
    pub async fn joined_members_with_names(
        &mut self,
        room_id: &str,
    ) -> Result<Vec<(String, Option<String>)>> {
        self.flush().await?;
        Ok(sqlx::query_as(
            "SELECT m.user_id, u.displayname FROM memberships m \
             JOIN users u ON u.user_id = m.user_id \
             WHERE m.room_id = $1 AND m.membership = 'join'",
        )
        .bind(room_id)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    pub async fn insert_push_actions(&mut self, rows: &[NewPushAction<'_>]) -> Result<()> {
        for chunk in rows.chunks(100) {
            let values = (0..chunk.len())
                .map(|i| format!("({})", placeholders(1 + 8 * i, 8)))
                .collect::<Vec<_>>()
                .join(", ");
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
        Ok(())
    }
}

impl Db {
    /// The user's notifying events in `rooms` after their unthreaded read
    /// receipt in each room, up to stream position `upto`.
    pub async fn unread_push_actions(
        &self,
        user_id: &str,
        rooms: &[String],
        upto: i64,
    ) -> Result<Vec<UnreadRow>> {
        let mut rows = Vec::new();
        for chunk in rooms.chunks(500) {
            let sql = format!(
                "SELECT a.room_id, a.thread_id, a.stream_ordering, a.highlight \
                 FROM event_push_actions a WHERE a.user_id = $1 AND a.stream_ordering <= $2 \
                 AND a.room_id IN ({}) AND a.stream_ordering > {}",
                placeholders(3, chunk.len()),
                read_upto("''")
            );
            let mut q = sqlx::query_as::<_, UnreadRow>(&sql)
                .bind(user_id)
                .bind(upto);
            for room in chunk {
                q = q.bind(room);
            }
            rows.extend(q.fetch_all(self.pool()).await?);
        }
        Ok(rows)
    }

    /// The user's read positions per room and thread (`""`: unthreaded) in `rooms`.
    pub async fn read_positions_in(
        &self,
        user_id: &str,
        rooms: &[String],
    ) -> Result<Vec<(String, String, i64)>> {
        let mut rows = Vec::new();
        for chunk in rooms.chunks(500) {
            let sql = format!(
                "SELECT room_id, thread_id, MAX(event_stream_ordering) FROM receipts \
                 WHERE user_id = $1 AND receipt_type IN ('m.read', 'm.read.private') \
                 AND room_id IN ({}) GROUP BY room_id, thread_id",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String, String, i64)>(&sql).bind(user_id);
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
             CASE WHEN a.stream_ordering <= {} OR a.stream_ordering <= {} THEN 1 ELSE 0 END AS read \
             FROM event_push_actions a WHERE a.user_id = $1 AND a.stream_ordering < $2 \
             AND a.highlight >= $3 ORDER BY a.stream_ordering DESC LIMIT $4",
            read_upto("''"),
            read_upto("a.thread_id")
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

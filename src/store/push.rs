//! Push actions: which events notify which local users (unread counts,
//! `GET /notifications`).

use std::{collections::BTreeMap, sync::Arc};

use super::{
    Backend, Db, WriteTx, events::ROOMS_PER_STATEMENT, placeholders, statements::Statements,
    values_rows,
};
use crate::Result;

/// Whom one event notifies, stored with it in one row.
#[derive(Debug, Clone, Default)]
pub struct Recipients {
    /// `main` or the thread root's event id.
    pub thread_id: String,
    /// Each notified local user, and whether the event highlights them.
    pub users: Vec<(String, bool)>,
    /// The actions each user's rules chose: `{"@u:x": [...], ...}`.
    pub actions: String,
    /// The highlighted users: `{"@u:x": true, ...}`.
    pub highlights: String,
}

pub struct NewNotification<'a> {
    pub room_id: &'a str,
    pub stream_ordering: i64,
    pub event_id: &'a str,
    pub ts: i64,
    /// Shared with the writer's queue: staging the event keeps a reference,
    /// not a copy of every recipient.
    pub recipients: &'a Arc<Recipients>,
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
    /// All recipients' actions (see [`Recipients::actions`]).
    pub recipients: String,
    pub ts: i64,
    /// Whether a read receipt of the user covers it.
    pub read: i64,
}

/// SQL: how far user `$1` has read the thread of notification `n`: their
/// furthest read receipt (public or private) in the room, unthreaded or in
/// that thread.
const READ_UPTO: &str = "COALESCE((SELECT MAX(r.event_stream_ordering) FROM receipts r \
     WHERE r.room_id = n.room_id AND r.user_id = $1 AND r.thread_id IN ('', n.thread_id) \
     AND r.receipt_type IN ('m.read', 'm.read.private')), -1)";

/// SQL: user `$1`'s unthreaded read receipt in room `$2`, below which nothing
/// of the room is unread (a bound the index can use; [`READ_UPTO`] is exact).
const UNTHREADED_READ_UPTO: &str = "COALESCE((SELECT MAX(r.event_stream_ordering) FROM receipts r \
     WHERE r.room_id = $2 AND r.user_id = $1 AND r.thread_id = '' \
     AND r.receipt_type IN ('m.read', 'm.read.private')), -1)";

impl Backend {
    /// SQL: whether the JSON object in `column` has the key in parameter `key`.
    fn json_has_key(self, column: &str, key: &str) -> String {
        match self {
            // User ids cannot contain '"', so the quoted path is exact.
            Backend::Sqlite => format!("json_type({column}, '$.\"' || {key} || '\"') IS NOT NULL"),
            Backend::Postgres => format!("jsonb_exists({column}::jsonb, {key})"),
        }
    }
}

/// A new event's notification row, staged with the event (see
/// [`WriteTx::stage_notifications`]).
pub(super) struct StagedNotification {
    room_id: String,
    stream_ordering: i64,
    event_id: String,
    ts: i64,
    recipients: Arc<Recipients>,
}

/// The statements that store staged notifications. The unread counts go in
/// as one JSON array, so their statement has one text whatever the number
/// of recipients (each text is a prepared query sqlx keeps; see
/// [`Statements`]).
pub(super) fn push_notifications<'q>(
    backend: Backend,
    statements: &mut Statements<'q>,
    rows: &'q [StagedNotification],
) -> Result<()> {
    for chunk in rows.chunks(backend.rows_per_statement(7)) {
        statements.push(
            7 * chunk.len(),
            |first| {
                format!(
                    "INSERT INTO event_notifications (room_id, stream_ordering, event_id, thread_id, \
                     ts, recipients, highlights) VALUES {}",
                    values_rows(chunk.len(), first, 7, "({})")
                )
            },
            |b| {
                for r in chunk {
                    b.bind(r.room_id.as_str())
                        .bind(r.stream_ordering)
                        .bind(r.event_id.as_str())
                        .bind(r.recipients.thread_id.as_str())
                        .bind(r.ts)
                        .bind(r.recipients.actions.as_str())
                        .bind(r.recipients.highlights.as_str());
                }
            },
        );
    }
    let mut added: BTreeMap<(&str, &str, &str), (i64, i64)> = BTreeMap::new();
    for r in rows {
        for (user, highlight) in &r.recipients.users {
            let counts = added
                .entry((user, &r.room_id, &r.recipients.thread_id))
                .or_default();
            counts.0 += 1;
            counts.1 += i64::from(*highlight);
        }
    }
    if added.is_empty() {
        return Ok(());
    }
    let added: Vec<(&str, &str, &str, i64, i64)> = added
        .into_iter()
        .map(|((user, room, thread), (n, h))| (user, room, thread, n, h))
        .collect();
    let added = serde_json::to_string(&added)?;
    statements.push(
        1,
        |first| {
            format!(
                "INSERT INTO unread_counts (user_id, room_id, thread_id, notifications, highlights) \
                 {} ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET \
                 notifications = unread_counts.notifications + excluded.notifications, \
                 highlights = unread_counts.highlights + excluded.highlights",
                backend.json_array_rows(&format!("${first}"), &["text", "text", "text", "bigint", "bigint"])
            )
        },
        |b| {
            b.bind(added);
        },
    );
    Ok(())
}

impl WriteTx<'_> {
    /// Stages the notifications of new events and their additions to their
    /// recipients' unread counts: they are written with the staged events
    /// ([`WriteTx::flush`]), in the same query as the event when there is
    /// one, instead of a round trip of their own.
    pub fn stage_notifications(&mut self, rows: &[NewNotification<'_>]) {
        let notifying = rows.iter().filter(|r| !r.recipients.users.is_empty());
        self.staged
            .notifications
            .extend(notifying.map(|r| StagedNotification {
                room_id: r.room_id.to_owned(),
                stream_ordering: r.stream_ordering,
                event_id: r.event_id.to_owned(),
                ts: r.ts,
                recipients: r.recipients.clone(),
            }));
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
        let notified = self.backend.json_has_key("n.recipients", "$1");
        let highlighted = self.backend.json_has_key("n.highlights", "$1");
        let sql = format!(
            "INSERT INTO unread_counts (user_id, room_id, thread_id, notifications, highlights) \
             SELECT $1, n.room_id, n.thread_id, COUNT(*), SUM(CASE WHEN {highlighted} THEN 1 ELSE 0 END) \
             FROM event_notifications n WHERE n.room_id = $2 AND n.stream_ordering > {UNTHREADED_READ_UPTO} \
             AND {notified} AND n.stream_ordering > {READ_UPTO} GROUP BY n.room_id, n.thread_id"
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

    /// How many members, of every server, are joined to the room.
    pub async fn joined_member_count(&self, room_id: &str) -> Result<i64> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM memberships WHERE room_id = $1 AND membership = 'join'",
        )
        .bind(room_id)
        .fetch_one(self.pool())
        .await?;
        Ok(count)
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

    /// `GET /notifications`: the user's newest `limit` notifications before
    /// position `before` (only highlights if asked), newest first: one index
    /// range scan per room the user is or was in, all in one statement.
    pub async fn notifications(
        &self,
        user_id: &str,
        before: i64,
        limit: i64,
        only_highlight: bool,
    ) -> Result<Vec<NotificationRow>> {
        let rooms: Vec<(String,)> =
            sqlx::query_as("SELECT DISTINCT room_id FROM memberships WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(self.pool())
                .await?;
        let mut filter = self.backend().json_has_key("n.recipients", "$1");
        if only_highlight {
            filter += " AND ";
            filter += &self.backend().json_has_key("n.highlights", "$1");
        }
        let mut rows = Vec::new();
        for chunk in rooms.chunks(ROOMS_PER_STATEMENT) {
            let scans = (0..chunk.len())
                .map(|i| {
                    format!(
                        "SELECT * FROM (SELECT n.room_id, n.event_id, n.stream_ordering, n.recipients, n.ts, \
                         CASE WHEN n.stream_ordering <= {READ_UPTO} THEN 1 ELSE 0 END AS read \
                         FROM event_notifications n WHERE n.room_id = ${} AND n.stream_ordering < $2 \
                         AND {filter} ORDER BY n.stream_ordering DESC LIMIT $3) AS r{i}",
                        i + 4
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let mut q = sqlx::query_as::<_, NotificationRow>(&scans)
                .bind(user_id)
                .bind(before)
                .bind(limit);
            for (room,) in chunk {
                q = q.bind(room);
            }
            rows.extend(q.fetch_all(self.pool()).await?);
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.stream_ordering));
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(rows)
    }
}

//! Receipts: the latest one of each type per user, room and thread.

use super::{Db, StreamItem, placeholders};
use crate::Result;

/// A receipt to store. `thread_id` is `""` when unthreaded.
#[derive(Debug, Clone)]
pub struct NewReceipt {
    pub room_id: String,
    pub receipt_type: String,
    pub user_id: String,
    pub thread_id: String,
    pub event_id: String,
    /// The receipted event's stream position: receipts only move forward.
    pub event_stream_ordering: i64,
    pub ts: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReceiptRow {
    pub room_id: String,
    pub receipt_type: String,
    pub user_id: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
    /// The sender of the receipted event.
    pub event_sender: Option<String>,
}

impl Db {
    /// Stores each receipt that moves its user's receipt forward, in one
    /// transaction; the ones stored.
    pub async fn put_receipts(&self, receipts: &[NewReceipt]) -> Result<Vec<NewReceipt>> {
        let mut w = self.write().await?;
        w.reserve_stream_positions(receipts.len() as i64).await?;
        let mut stored = Vec::new();
        for r in receipts {
            let pos = w
                .next_stream_position(StreamItem::Receipt {
                    room_id: &r.room_id,
                })
                .await?;
            // No row comes back when the stored receipt is as new or newer.
            let moved: Option<(i64,)> = sqlx::query_as(
                "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, \
                 event_stream_ordering, ts, stream_ordering) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET \
                 event_id = excluded.event_id, event_stream_ordering = excluded.event_stream_ordering, \
                 ts = excluded.ts, stream_ordering = excluded.stream_ordering \
                 WHERE receipts.event_stream_ordering < excluded.event_stream_ordering \
                 RETURNING stream_ordering",
            )
            .bind(&r.room_id)
            .bind(&r.receipt_type)
            .bind(&r.user_id)
            .bind(&r.thread_id)
            .bind(&r.event_id)
            .bind(r.event_stream_ordering)
            .bind(r.ts)
            .bind(pos)
            .fetch_optional(&mut *w.tx)
            .await?;
            if moved.is_none() {
                continue;
            }
            if r.receipt_type == "m.read" || r.receipt_type == "m.read.private" {
                w.recount_unread(&r.user_id, &r.room_id).await?;
            }
            stored.push(r.clone());
        }
        w.commit().await?;
        Ok(stored)
    }

    /// Receipts in `rooms` changed in `(since, upto]`; all of them when
    /// `since` is `None`.
    pub async fn receipts_between(
        &self,
        rooms: &[String],
        since: Option<i64>,
        upto: i64,
    ) -> Result<Vec<ReceiptRow>> {
        let mut rows = Vec::new();
        for chunk in rooms.chunks(500) {
            let sql = format!(
                "SELECT r.room_id, r.receipt_type, r.user_id, r.thread_id, r.event_id, r.ts, \
                 e.sender AS event_sender FROM receipts r LEFT JOIN events e ON e.event_id = r.event_id \
                 WHERE r.stream_ordering > $1 AND r.stream_ordering <= $2 AND r.room_id IN ({}) \
                 ORDER BY r.stream_ordering",
                placeholders(3, chunk.len())
            );
            let mut q = sqlx::query_as::<_, ReceiptRow>(&sql)
                .bind(since.unwrap_or(-1))
                .bind(upto);
            for room in chunk {
                q = q.bind(room);
            }
            rows.extend(q.fetch_all(self.pool()).await?);
        }
        Ok(rows)
    }
}

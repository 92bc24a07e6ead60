//! Receipts: the latest one of each type per user, room and thread.

use std::collections::{HashMap, HashSet};

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

/// The newest receipt of each user, room, type and thread, in the order
/// given (the first of equally new ones): one statement cannot update a
/// row twice (PostgreSQL refuses it), and of two receipts for one key only
/// the newer could move it.
fn newest_per_key(receipts: &[NewReceipt]) -> Vec<&NewReceipt> {
    fn key(r: &NewReceipt) -> (&str, &str, &str, &str) {
        (&r.room_id, &r.receipt_type, &r.user_id, &r.thread_id)
    }
    let mut newest: HashMap<_, &NewReceipt> = HashMap::with_capacity(receipts.len());
    for r in receipts {
        newest
            .entry(key(r))
            .and_modify(|kept| {
                if r.event_stream_ordering > kept.event_stream_ordering {
                    *kept = r;
                }
            })
            .or_insert(r);
    }
    receipts
        .iter()
        .filter(|r| {
            newest
                .get(&key(r))
                .is_some_and(|kept| std::ptr::eq(*kept, *r))
        })
        .collect()
}

impl Db {
    /// Stores each receipt that moves its user's receipt forward, in one
    /// transaction; the ones stored. Of several receipts for the same
    /// user, room, type and thread only the newest can be stored.
    pub async fn put_receipts(&self, receipts: &[NewReceipt]) -> Result<Vec<NewReceipt>> {
        let receipts = newest_per_key(receipts);
        let mut w = self.write().await?;
        w.reserve_stream_positions(receipts.len() as i64).await?;
        let mut positioned = Vec::with_capacity(receipts.len());
        for r in &receipts {
            let item = StreamItem::Receipt {
                room_id: &r.room_id,
            };
            positioned.push((w.next_stream_position(item).await?, *r));
        }
        let mut stored = Vec::new();
        for chunk in positioned.chunks(self.backend.rows_per_statement(8)) {
            // A row comes back only for a receipt that moved: the stored
            // one, if any, is older.
            let sql = format!(
                "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, \
                 event_stream_ordering, ts, stream_ordering) VALUES {} \
                 ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET \
                 event_id = excluded.event_id, event_stream_ordering = excluded.event_stream_ordering, \
                 ts = excluded.ts, stream_ordering = excluded.stream_ordering \
                 WHERE receipts.event_stream_ordering < excluded.event_stream_ordering \
                 RETURNING stream_ordering",
                super::values_rows(chunk.len(), 1, 8, "({})")
            );
            let mut q = sqlx::query_as::<_, (i64,)>(&sql);
            for (pos, r) in chunk {
                q = q
                    .bind(&r.room_id)
                    .bind(&r.receipt_type)
                    .bind(&r.user_id)
                    .bind(&r.thread_id)
                    .bind(&r.event_id)
                    .bind(r.event_stream_ordering)
                    .bind(r.ts)
                    .bind(*pos);
            }
            let moved: HashSet<i64> = q
                .fetch_all(&mut *w.tx)
                .await?
                .into_iter()
                .map(|(pos,)| pos)
                .collect();
            stored.extend(
                chunk
                    .iter()
                    .filter(|(pos, _)| moved.contains(pos))
                    .map(|(_, r)| *r),
            );
        }
        for r in &stored {
            if r.receipt_type == "m.read" || r.receipt_type == "m.read.private" {
                w.recount_unread(&r.user_id, &r.room_id).await?;
            }
        }
        w.commit().await?;
        Ok(stored.into_iter().cloned().collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(user: &str, event: &str, ordering: i64) -> NewReceipt {
        NewReceipt {
            room_id: "!r:x".into(),
            receipt_type: "org.corvid.delivered".into(),
            user_id: user.into(),
            thread_id: String::new(),
            event_id: event.into(),
            event_stream_ordering: ordering,
            ts: 0,
        }
    }

    #[test]
    fn a_batch_keeps_the_newest_receipt_of_each_key_in_order() {
        let batch = [
            receipt("@a:x", "$1", 1),
            receipt("@b:x", "$2", 2),
            receipt("@a:x", "$3", 3),
            receipt("@b:x", "$2", 2),
        ];
        let kept: Vec<(&str, &str)> = newest_per_key(&batch)
            .iter()
            .map(|r| (r.user_id.as_str(), r.event_id.as_str()))
            .collect();
        assert_eq!(kept, [("@b:x", "$2"), ("@a:x", "$3")]);
    }
}

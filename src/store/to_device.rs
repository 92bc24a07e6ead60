//! To-device messages: queued per device at main-stream positions, read by
//! the device's sync, deleted when a later sync shows the device got them.

use super::{Db, StreamItem, events::TxnKey};
use crate::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ToDeviceRow {
    pub stream_ordering: i64,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

/// One message for one device.
pub struct Outgoing<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub content: &'a str,
}

impl Db {
    /// Queues messages under the sender's transaction id; `false` when that
    /// transaction was already queued (the request is a retry).
    /// `remote` are `m.direct_to_device` EDUs for other servers, `(destination,
    /// content)`, queued in the same transaction.
    pub async fn queue_to_device(
        &self,
        sender: &str,
        txn: &TxnKey<'_>,
        event_type: &str,
        messages: &[Outgoing<'_>],
        remote: &[(&str, &str)],
    ) -> Result<bool> {
        let mut w = self.write().await?;
        let inserted = sqlx::query(
            "INSERT INTO txn_ids (user_id, device_id, scope, txn_id, event_id) VALUES ($1, $2, $3, $4, '') \
             ON CONFLICT (user_id, device_id, scope, txn_id) DO NOTHING",
        )
        .bind(sender)
        .bind(txn.device_id)
        .bind(txn.scope)
        .bind(txn.txn_id)
        .execute(&mut *w.tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(false);
        }
        w.reserve_stream_positions(messages.len() as i64).await?;
        let mut rows: Vec<(&str, &str, i64, &str)> = Vec::with_capacity(messages.len());
        for message in messages {
            let item = StreamItem::ToDevice {
                user_id: message.user_id,
            };
            let pos = w.next_stream_position(item).await?;
            rows.push((message.user_id, message.device_id, pos, message.content));
        }
        if !rows.is_empty() {
            // One statement for every recipient device: a room key shared
            // with a group goes to each of its members' devices.
            sqlx::query(&format!(
                "INSERT INTO to_device_messages (user_id, device_id, stream_ordering, sender, event_type, content) \
                 SELECT s.c0, s.c1, s.c2, $1, $2, s.c3 FROM ({}) AS s",
                w.backend
                    .json_array_rows("$3", &["text", "text", "bigint", "text"])
            ))
            .bind(sender)
            .bind(event_type)
            .bind(serde_json::to_string(&rows)?)
            .execute(&mut *w.tx)
            .await?;
        }
        let edus: Vec<(&str, super::federation::Outgoing<'_>)> = remote
            .iter()
            .map(|(destination, content)| {
                let edu_type = "m.direct_to_device";
                (
                    *destination,
                    super::federation::Outgoing::Edu { edu_type, content },
                )
            })
            .collect();
        w.outbox_push(&edus).await?;
        w.commit().await?;
        Ok(true)
    }

    /// A device's inbox in one read: whether it still holds messages up to
    /// `acknowledged` (the device has them; they are to be deleted), and up
    /// to `limit` messages in `(acknowledged, upto]`, oldest first.
    pub async fn to_device_inbox(
        &self,
        user_id: &str,
        device_id: &str,
        acknowledged: i64,
        upto: i64,
        limit: usize,
    ) -> Result<(bool, Vec<ToDeviceRow>)> {
        let mut rows: Vec<ToDeviceRow> = sqlx::query_as(
            "SELECT * FROM (SELECT stream_ordering, '' AS sender, '' AS event_type, '' AS content \
             FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_ordering <= $3 \
             LIMIT 1) acknowledged \
             UNION ALL \
             SELECT * FROM (SELECT stream_ordering, sender, event_type, content FROM to_device_messages \
             WHERE user_id = $1 AND device_id = $2 AND stream_ordering > $3 AND stream_ordering <= $4 \
             ORDER BY stream_ordering LIMIT $5) pending \
             ORDER BY stream_ordering",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(acknowledged)
        .bind(upto)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        let has_acknowledged = rows
            .first()
            .is_some_and(|r| r.stream_ordering <= acknowledged);
        if has_acknowledged {
            rows.remove(0);
        }
        Ok((has_acknowledged, rows))
    }

    /// Forgets the messages a device has acknowledged (those up to `upto`).
    pub async fn delete_to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        upto: i64,
    ) -> Result<()> {
        let mut w = self.write().await?;
        sqlx::query(
            "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_ordering <= $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(upto)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await
    }
}

//! What federation keeps: where received events sit in the graph, events
//! that were rejected, the outbox of each destination, and the transactions
//! received (for deduplication).

use std::collections::{HashMap, HashSet};

use super::{
    Backend, Db, StreamItem, WriteTx, events::StoredEvent, events::prefixed_event_columns,
    placeholders, values_rows,
};
use crate::Result;

/// Where a known event sits: what ingesting its children needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventPlace {
    pub event_id: String,
    pub state_key: Option<String>,
    pub stream_ordering: Option<i64>,
    pub state_group_before: Option<i64>,
    pub depth: i64,
    pub outlier: i64,
    /// The rejection reason, for a rejected event.
    pub rejected: Option<String>,
}

impl EventPlace {
    /// The group of the state after the event, if known: the state before
    /// it, plus itself when it is an accepted state event.
    pub fn state_group_after(&self) -> Option<i64> {
        if self.outlier != 0 {
            return None;
        }
        match (&self.state_key, &self.rejected) {
            (Some(_), None) => self.stream_ordering,
            _ => self.state_group_before,
        }
    }
}

/// One item of a destination's outbox.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxItem {
    pub position: i64,
    pub event_id: Option<String>,
    pub edu_type: Option<String>,
    pub edu_content: Option<String>,
}

/// An item to queue: a PDU by event id (at the event's own position), or an EDU.
pub enum Outgoing<'a> {
    Pdu { event_id: &'a str, position: i64 },
    Edu { edu_type: &'a str, content: &'a str },
}

const PLACE_SQL: &str = "SELECT event_id, state_key, stream_ordering, state_group_before, depth, outlier, \
     CAST(NULL AS TEXT) AS rejected FROM events WHERE event_id IN ({ids}) \
     UNION ALL SELECT event_id, CAST(NULL AS TEXT), CAST(NULL AS BIGINT), state_group_before, depth, 0, reason \
     FROM rejected_events WHERE event_id IN ({ids})";

const AUTH_CHAIN_SQL: &str = "WITH RECURSIVE chain(event_id) AS ( \
         SELECT auth_event_id FROM event_auth WHERE event_id IN ({ids}) \
         UNION SELECT a.auth_event_id FROM event_auth a JOIN chain c ON a.event_id = c.event_id \
     ) SELECT event_id FROM chain";

async fn places_in(
    conn: &mut sqlx::AnyConnection,
    ids: &[String],
) -> Result<HashMap<String, EventPlace>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(200) {
        let sql = PLACE_SQL.replace("{ids}", &placeholders(1, chunk.len()));
        let mut q = sqlx::query_as::<_, EventPlace>(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        for place in q.fetch_all(&mut *conn).await? {
            out.insert(place.event_id.clone(), place);
        }
    }
    Ok(out)
}

/// The chains of a room's events share most of their events, which each
/// recursive query walks once: as few queries as the backend binds well.
async fn auth_chain_in(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    ids: &[String],
) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    for chunk in ids.chunks(backend.rows_per_statement(1)) {
        let sql = AUTH_CHAIN_SQL.replace("{ids}", &placeholders(1, chunk.len()));
        let mut q = sqlx::query_as::<_, (String,)>(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        out.extend(q.fetch_all(&mut *conn).await?.into_iter().map(|(e,)| e));
    }
    Ok(out)
}

impl Db {
    /// The places of those of `ids` this server knows, accepted or rejected.
    pub async fn event_places(&self, ids: &[String]) -> Result<HashMap<String, EventPlace>> {
        places_in(&mut *self.pool().acquire().await?, ids).await
    }

    /// Every event reachable from `ids` through `auth_events` (not `ids` themselves).
    pub async fn auth_chain(&self, ids: &[String]) -> Result<HashSet<String>> {
        auth_chain_in(&mut *self.pool().acquire().await?, self.backend(), ids).await
    }

    /// `(event id, prev event ids, depth)` of known events of the room, for
    /// walking the graph backwards.
    pub async fn prev_events_of(
        &self,
        room_id: &str,
        ids: &[String],
    ) -> Result<Vec<(String, Vec<String>, i64)>> {
        let mut by_event: HashMap<String, (Vec<String>, i64)> = HashMap::new();
        for chunk in ids.chunks(200) {
            let sql = format!(
                "SELECT e.event_id, x.prev_event_id, e.depth FROM events e LEFT JOIN event_edges x ON x.event_id = e.event_id \
                 WHERE e.room_id = $1 AND e.event_id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String, Option<String>, i64)>(&sql).bind(room_id);
            for id in chunk {
                q = q.bind(id);
            }
            for (id, prev, depth) in q.fetch_all(self.pool()).await? {
                let entry = by_event.entry(id).or_insert_with(|| (Vec::new(), depth));
                entry.0.extend(prev);
            }
        }
        Ok(by_event
            .into_iter()
            .map(|(id, (prevs, depth))| (id, prevs, depth))
            .collect())
    }

    /// The servers with a joined member in the room.
    pub async fn room_servers(&self, room_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT server_name FROM memberships WHERE room_id = $1 AND membership = 'join'",
        )
        .bind(room_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    /// Whether any user of `server_name` is joined to the room.
    pub async fn server_in_room(&self, room_id: &str, server_name: &str) -> Result<bool> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM memberships WHERE room_id = $1 AND membership = 'join' AND server_name = $2 LIMIT 1",
        )
        .bind(room_id)
        .bind(server_name)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Destinations with something waiting in their outbox.
    pub async fn outbox_destinations(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT DISTINCT destination FROM federation_outbox")
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(|(d,)| d).collect())
    }

    /// The oldest items waiting for `destination`: up to `pdus` PDUs and `edus` EDUs.
    pub async fn outbox_batch(
        &self,
        destination: &str,
        pdus: i64,
        edus: i64,
    ) -> Result<Vec<OutboxItem>> {
        let mut items: Vec<OutboxItem> = sqlx::query_as(
            "SELECT position, event_id, edu_type, edu_content FROM federation_outbox \
             WHERE destination = $1 AND event_id IS NOT NULL ORDER BY position LIMIT $2",
        )
        .bind(destination)
        .bind(pdus)
        .fetch_all(self.pool())
        .await?;
        items.extend(
            sqlx::query_as::<_, OutboxItem>(
                "SELECT position, event_id, edu_type, edu_content FROM federation_outbox \
                 WHERE destination = $1 AND event_id IS NULL ORDER BY position LIMIT $2",
            )
            .bind(destination)
            .bind(edus)
            .fetch_all(self.pool())
            .await?,
        );
        Ok(items)
    }

    pub async fn outbox_remove(&self, destination: &str, positions: &[i64]) -> Result<()> {
        for chunk in positions.chunks(200) {
            let sql = format!(
                "DELETE FROM federation_outbox WHERE destination = $1 AND position IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(destination);
            for p in chunk {
                q = q.bind(*p);
            }
            q.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Queues items for destinations in a transaction of their own.
    pub async fn outbox_push(&self, items: &[(&str, Outgoing<'_>)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut w = self.write().await?;
        w.outbox_push(items).await?;
        w.commit().await
    }

    /// The answer given to a transaction, if it was received before.
    pub async fn inbound_txn(&self, origin: &str, txn_id: &str) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2",
        )
        .bind(origin)
        .bind(txn_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(r,)| r))
    }

    pub async fn record_inbound_txn(
        &self,
        origin: &str,
        txn_id: &str,
        response: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO federation_inbound_txns (origin, txn_id, response, received_ts) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (origin, txn_id) DO NOTHING",
        )
        .bind(origin)
        .bind(txn_id)
        .bind(response)
        .bind(crate::now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A rejected event's stored PDU.
    pub async fn rejected_event(&self, event_id: &str) -> Result<Option<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT room_id, pdu FROM rejected_events WHERE event_id = $1")
                .bind(event_id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Up to `limit` events of a room reached by walking `prev_events` back
    /// from `from` (included), deepest first: `/backfill`'s answer.
    pub async fn events_backwards(
        &self,
        room_id: &str,
        from: &[String],
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut frontier: Vec<String> = from.to_vec();
        let mut found: Vec<(i64, String)> = Vec::new();
        while !frontier.is_empty() && found.len() < limit {
            let known = self.prev_events_of(room_id, &frontier).await?;
            frontier.clear();
            for (id, prevs, depth) in known {
                if seen.insert(id.clone()) {
                    found.push((depth, id));
                    frontier.extend(prevs.into_iter().filter(|p| !seen.contains(p)));
                }
            }
            frontier.sort();
            frontier.dedup();
        }
        found.sort_by_key(|(depth, _)| std::cmp::Reverse(*depth));
        found.truncate(limit);
        let ids: Vec<String> = found.into_iter().map(|(_, id)| id).collect();
        let mut events = self.events(&ids).await?;
        events.sort_by_key(|e| ids.iter().position(|id| *id == e.event_id));
        Ok(events)
    }
}

impl WriteTx<'_> {
    /// [`Db::event_places`], read through this transaction.
    pub async fn event_places(&mut self, ids: &[String]) -> Result<HashMap<String, EventPlace>> {
        self.flush_if_staged(ids).await?;
        places_in(&mut self.tx, ids).await
    }

    /// [`Db::auth_chain`], read through this transaction.
    pub async fn auth_chain(&mut self, ids: &[String]) -> Result<HashSet<String>> {
        // Walks event_auth rows, which staged events only get when flushed.
        self.flush().await?;
        auth_chain_in(&mut self.tx, self.backend, ids).await
    }

    /// Events by id, read through this transaction.
    pub async fn events_by_id(&mut self, ids: &[String]) -> Result<Vec<StoredEvent>> {
        self.flush_if_staged(ids).await?;
        let mut out = Vec::new();
        for chunk in ids.chunks(200) {
            let sql = format!(
                "SELECT {} FROM events e WHERE e.event_id IN ({})",
                prefixed_event_columns("e"),
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, StoredEvent>(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            out.extend(q.fetch_all(&mut *self.tx).await?);
        }
        Ok(out)
    }

    /// The room's forward extremities, read through this transaction.
    pub async fn extremity_ids(&mut self, room_id: &str) -> Result<Vec<String>> {
        Ok(self
            .forward_extremities(room_id)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// The servers with a joined member in each of `rooms`.
    pub async fn servers_of_rooms(
        &mut self,
        rooms: &[&str],
    ) -> Result<HashMap<String, Vec<String>>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for chunk in rooms.chunks(200) {
            let sql = format!(
                "SELECT DISTINCT room_id, server_name FROM memberships WHERE room_id IN ({}) AND membership = 'join'",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String, String)>(&sql);
            for room in chunk {
                q = q.bind(*room);
            }
            for (room, server) in q.fetch_all(&mut *self.tx).await? {
                out.entry(room).or_default().push(server);
            }
        }
        Ok(out)
    }

    pub async fn insert_rejected(
        &mut self,
        event_id: &str,
        room_id: &str,
        pdu: &str,
        reason: &str,
        depth: i64,
        state_group_before: Option<i64>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO rejected_events (event_id, room_id, pdu, reason, depth, state_group_before, received_ts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(room_id)
        .bind(pdu)
        .bind(reason)
        .bind(depth)
        .bind(state_group_before)
        .bind(crate::now_ms())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Queues items for destinations; positions order a destination's
    /// outbox (an EDU takes a new stream position).
    pub async fn outbox_push(&mut self, items: &[(&str, Outgoing<'_>)]) -> Result<()> {
        for chunk in items.chunks(self.backend.rows_per_statement(5)) {
            let sql = format!(
                "INSERT INTO federation_outbox (destination, position, event_id, edu_type, edu_content) VALUES {}",
                values_rows(chunk.len(), 1, 5, "({})")
            );
            let mut q = sqlx::query(&sql);
            for (destination, item) in chunk {
                let position = match item {
                    Outgoing::Pdu { position, .. } => *position,
                    Outgoing::Edu { .. } => self.next_stream_position(StreamItem::Internal).await?,
                };
                q = q.bind(*destination).bind(position);
                q = match item {
                    Outgoing::Pdu { event_id, .. } => q
                        .bind(Some(*event_id))
                        .bind(None::<&str>)
                        .bind(None::<&str>),
                    Outgoing::Edu { edu_type, content } => q
                        .bind(None::<&str>)
                        .bind(Some(*edu_type))
                        .bind(Some(*content)),
                };
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }
}

impl Db {
    /// The room's forward extremities.
    pub async fn forward_extremity_ids(&self, room_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT event_id FROM room_forward_extremities WHERE room_id = $1")
                .bind(room_id)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(|(e,)| e).collect())
    }
}

impl Db {
    /// The servers with a member joined to a room `user_id` is joined to.
    pub async fn servers_sharing_rooms_with(&self, user_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT theirs.server_name FROM memberships mine CROSS JOIN memberships theirs \
             WHERE mine.user_id = $1 AND mine.membership = 'join' \
             AND theirs.room_id = mine.room_id AND theirs.membership = 'join'",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    /// A change of another server's user's devices (`device_id` empty: their
    /// cross-signing keys), put on the device-list stream.
    pub async fn record_remote_device_change(
        &self,
        user_id: &str,
        device_id: &str,
        deleted: bool,
    ) -> Result<()> {
        let mut w = self.write().await?;
        w.record_device_change(user_id, device_id, deleted).await?;
        w.commit().await
    }

    /// `(device id, deleted, position)` of the user's latest device change.
    pub async fn latest_device_change(&self, user_id: &str) -> Result<Option<(String, bool, i64)>> {
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT device_id, deleted, stream_ordering FROM device_list_changes WHERE user_id = $1 \
             ORDER BY stream_ordering DESC LIMIT 1",
        )
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(device, deleted, pos)| (device, deleted != 0, pos)))
    }
}

impl Db {
    /// The room's backward extremities: events its timeline events cite as
    /// prev events that this server does not hold (or holds only as
    /// outliers) — where older history would be fetched from.
    pub async fn backward_extremities(&self, room_id: &str, limit: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT x.prev_event_id FROM events e CROSS JOIN event_edges x \
             WHERE e.room_id = $1 AND e.outlier = 0 AND x.event_id = e.event_id \
             AND NOT EXISTS (SELECT 1 FROM events p WHERE p.event_id = x.prev_event_id AND p.outlier = 0) \
             AND NOT EXISTS (SELECT 1 FROM rejected_events r WHERE r.event_id = x.prev_event_id) \
             LIMIT $2",
        )
        .bind(room_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(e,)| e).collect())
    }
}

impl WriteTx<'_> {
    /// `count` positions of the backfill stream, which counts down from 0 so
    /// that older history sorts before everything else; newest first.
    pub async fn backfill_positions(&mut self, count: i64) -> Result<Vec<i64>> {
        let (last,): (i64,) = sqlx::query_as(
            "UPDATE stream_positions SET position = position - $1 WHERE name = 'backfill' RETURNING position",
        )
        .bind(count)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok((0..count).map(|i| last + count - 1 - i).collect())
    }
}

impl WriteTx<'_> {
    /// Drops the outlier rows of `ids` (and what was derived from them), so
    /// the events can be stored again in their place in the graph: an
    /// event first met as another's auth event, then received itself.
    pub async fn forget_outliers(&mut self, ids: &[String]) -> Result<()> {
        self.events_changed |= !ids.is_empty();
        for chunk in ids.chunks(200) {
            let list = placeholders(1, chunk.len());
            for sql in [
                format!(
                    "DELETE FROM event_relations WHERE event_id IN \
                     (SELECT event_id FROM events WHERE outlier = 1 AND event_id IN ({list}))"
                ),
                format!("DELETE FROM events WHERE outlier = 1 AND event_id IN ({list})"),
            ] {
                let mut q = sqlx::query(&sql);
                for id in chunk {
                    q = q.bind(id);
                }
                q.execute(&mut *self.tx).await?;
            }
        }
        Ok(())
    }
}

impl Db {
    /// Whether an event in the timeline cites this one as a prev event: an
    /// outlier that is older history than what the timeline holds.
    pub async fn cited_by_timeline(&self, event_id: &str) -> Result<bool> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM event_edges x CROSS JOIN events e \
             WHERE x.prev_event_id = $1 AND e.event_id = x.event_id AND e.outlier = 0 LIMIT 1",
        )
        .bind(event_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }
}

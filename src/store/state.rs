//! Room state as stored: state groups (snapshots kept as deltas over a
//! parent, with a full snapshot every [`MAX_DELTA_DEPTH`] deltas), and the
//! derived `current_state` and `memberships` tables.
//!
//! A state event's group has the event's stream ordering as its id and
//! holds the state after it. A state reached some other way (the resolution
//! of forks, the state a join brings) gets a group of its own, with an id
//! taken from the stream counter.

use std::collections::HashMap;

use super::{
    StreamItem, WriteTx,
    events::{NewEvent, StateMap},
    placeholders, values_rows,
};
use crate::Result;

/// A full snapshot is written after this many deltas, bounding the chain a read walks.
const MAX_DELTA_DEPTH: i64 = 64;

/// A current-state entry that changed: its key and the event now there
/// (`None`: the key left the state).
pub struct StateChange {
    pub event_type: String,
    pub state_key: String,
    pub event_id: Option<String>,
}

/// A state event becoming current: its key, id and (member events) membership.
struct CurrentEntry<'a> {
    key: (&'a str, &'a str),
    event_id: &'a str,
    membership: Option<&'a str>,
}

impl WriteTx<'_> {
    /// A local state event: its group, then the current state it now heads.
    pub(super) async fn apply_state_event(
        &mut self,
        ev: &NewEvent<'_>,
        state_key: &str,
        membership: Option<&str>,
    ) -> Result<()> {
        self.insert_event_group(ev, state_key).await?;
        self.set_room_state_group(ev.room_id, ev.stream_ordering)
            .await?;
        let entry = CurrentEntry {
            key: (ev.event_type, state_key),
            event_id: ev.event_id,
            membership,
        };
        self.set_current_entries(ev.room_id, &[entry], ev.stream_ordering)
            .await
    }

    /// The group of the state after a state event: its state before plus itself.
    pub(super) async fn insert_event_group(
        &mut self,
        ev: &NewEvent<'_>,
        state_key: &str,
    ) -> Result<()> {
        let entry = (ev.event_type, state_key, ev.event_id);
        let group = ev.stream_ordering;
        match self.delta_depth(ev.state_group_before).await? {
            Some(depth) if depth < MAX_DELTA_DEPTH => {
                self.insert_state_group(group, ev.room_id, ev.state_group_before, depth + 1)
                    .await?;
                self.insert_state_entries(group, &[entry]).await
            }
            _ => {
                let mut full = match ev.state_group_before {
                    Some(p) => self.state_map(p).await?,
                    None => StateMap::new(),
                };
                full.insert(
                    (ev.event_type.to_owned(), state_key.to_owned()),
                    ev.event_id.to_owned(),
                );
                self.insert_full_group(group, ev.room_id, &full).await
            }
        }
    }

    /// A new group holding `state`, written as a delta over `parent` when
    /// that keeps every key of the parent; returns its id.
    pub async fn insert_state_snapshot(
        &mut self,
        room_id: &str,
        parent: Option<i64>,
        state: &StateMap,
    ) -> Result<i64> {
        let group = self.next_stream_position(StreamItem::Internal).await?;
        let parent_state = match parent {
            Some(p) => Some((p, self.state_map(p).await?)),
            None => None,
        };
        let delta_over = match &parent_state {
            Some((p, before)) if before.keys().all(|k| state.contains_key(k)) => {
                match self.delta_depth(Some(*p)).await? {
                    Some(depth) if depth < MAX_DELTA_DEPTH => Some((*p, before, depth)),
                    _ => None,
                }
            }
            _ => None,
        };
        match delta_over {
            Some((p, before, depth)) => {
                let changed: Vec<(&str, &str, &str)> = state
                    .iter()
                    .filter(|(k, e)| before.get(*k) != Some(*e))
                    .map(|((t, k), e)| (t.as_str(), k.as_str(), e.as_str()))
                    .collect();
                self.insert_state_group(group, room_id, Some(p), depth + 1)
                    .await?;
                self.insert_state_entries(group, &changed).await?;
            }
            None => self.insert_full_group(group, room_id, state).await?,
        }
        Ok(group)
    }

    /// The state of a group, read through this transaction.
    pub async fn state_map(&mut self, group: i64) -> Result<StateMap> {
        load_state_group(&mut *self.tx, group).await
    }

    /// Makes `group` the room's current state, updating `current_state` and
    /// `memberships` where they differ from `old` (the state they hold now);
    /// changed entries are stamped with `position`. Returns what changed.
    pub async fn replace_current_state(
        &mut self,
        room_id: &str,
        group: i64,
        old: &StateMap,
        new: &StateMap,
        position: i64,
    ) -> Result<Vec<StateChange>> {
        self.set_room_state_group(room_id, group).await?;
        let mut changes: Vec<StateChange> = new
            .iter()
            .filter(|(k, e)| old.get(*k) != Some(*e))
            .map(|((t, k), e)| StateChange {
                event_type: t.clone(),
                state_key: k.clone(),
                event_id: Some(e.clone()),
            })
            .collect();
        changes.extend(
            old.keys()
                .filter(|k| !new.contains_key(*k))
                .map(|(t, k)| StateChange {
                    event_type: t.clone(),
                    state_key: k.clone(),
                    event_id: None,
                }),
        );
        let member_events: Vec<String> = changes
            .iter()
            .filter(|c| c.event_type == "m.room.member")
            .filter_map(|c| c.event_id.clone())
            .collect();
        let memberships = self.memberships_of_events(&member_events).await?;
        let entries: Vec<CurrentEntry<'_>> = changes
            .iter()
            .filter_map(|c| {
                let event_id = c.event_id.as_deref()?;
                Some(CurrentEntry {
                    key: (c.event_type.as_str(), c.state_key.as_str()),
                    event_id,
                    membership: memberships.get(event_id).map(String::as_str),
                })
            })
            .collect();
        self.set_current_entries(room_id, &entries, position)
            .await?;
        for change in changes.iter().filter(|c| c.event_id.is_none()) {
            let key = (change.event_type.as_str(), change.state_key.as_str());
            self.remove_current_entry(room_id, key).await?;
        }
        Ok(changes)
    }

    pub async fn set_room_state_group(&mut self, room_id: &str, group: i64) -> Result<()> {
        self.changes.record_head_change(room_id);
        sqlx::query("UPDATE rooms SET state_group = $2 WHERE room_id = $1")
            .bind(room_id)
            .bind(group)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Makes `entries` current, from `position` on: `current_state` rows,
    /// and `memberships` rows for the member events among them.
    async fn set_current_entries(
        &mut self,
        room_id: &str,
        entries: &[CurrentEntry<'_>],
        position: i64,
    ) -> Result<()> {
        self.changes.record_head_change(room_id);
        for chunk in entries.chunks(self.backend.rows_per_statement(4)) {
            let sql = format!(
                "INSERT INTO current_state (room_id, event_type, state_key, event_id, stream_ordering) VALUES {} \
                 ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id, \
                 stream_ordering = excluded.stream_ordering",
                values_rows(chunk.len(), 3, 3, "($1, {}, $2)")
            );
            let mut q = sqlx::query(&sql).bind(room_id).bind(position);
            for e in chunk {
                q = q.bind(e.key.0).bind(e.key.1).bind(e.event_id);
            }
            q.execute(&mut *self.tx).await?;
        }
        let members: Vec<(&str, &str, &str)> = entries
            .iter()
            .filter(|e| e.key.0 == "m.room.member")
            .filter_map(|e| Some((e.key.1, e.membership?, e.event_id)))
            .collect();
        self.changes.memberships |= !members.is_empty();
        for chunk in members.chunks(self.backend.rows_per_statement(4)) {
            let sql = format!(
                "INSERT INTO memberships (room_id, user_id, membership, event_id, server_name, stream_ordering) \
                 VALUES {} \
                 ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, event_id = excluded.event_id, \
                 stream_ordering = excluded.stream_ordering, forgotten = 0",
                values_rows(chunk.len(), 3, 4, "($1, {}, $2)")
            );
            let mut q = sqlx::query(&sql).bind(room_id).bind(position);
            for (user_id, membership, event_id) in chunk {
                let server_name = user_id.split_once(':').map_or("", |(_, s)| s);
                q = q
                    .bind(*user_id)
                    .bind(*membership)
                    .bind(*event_id)
                    .bind(server_name);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn remove_current_entry(
        &mut self,
        room_id: &str,
        (event_type, state_key): (&str, &str),
    ) -> Result<()> {
        self.changes.record_head_change(room_id);
        sqlx::query(
            "DELETE FROM current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3",
        )
        .bind(room_id)
        .bind(event_type)
        .bind(state_key)
        .execute(&mut *self.tx)
        .await?;
        if event_type == "m.room.member" {
            self.changes.memberships = true;
            sqlx::query("DELETE FROM memberships WHERE room_id = $1 AND user_id = $2")
                .bind(room_id)
                .bind(state_key)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// `event id → content.membership` of member events.
    async fn memberships_of_events(&mut self, ids: &[String]) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(200) {
            let sql = format!(
                "SELECT event_id, pdu FROM events WHERE event_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String, String)>(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for (id, pdu) in q.fetch_all(&mut *self.tx).await? {
                let membership =
                    serde_json::from_str::<serde_json::Value>(&pdu)?["content"]["membership"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                out.insert(id, membership);
            }
        }
        Ok(out)
    }

    async fn delta_depth(&mut self, group: Option<i64>) -> Result<Option<i64>> {
        let Some(group) = group else {
            return Ok(None);
        };
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT delta_depth FROM state_groups WHERE state_group = $1")
                .bind(group)
                .fetch_optional(&mut *self.tx)
                .await?;
        Ok(row.map(|(d,)| d))
    }

    async fn insert_full_group(
        &mut self,
        group: i64,
        room_id: &str,
        state: &StateMap,
    ) -> Result<()> {
        self.insert_state_group(group, room_id, None, 0).await?;
        let entries: Vec<(&str, &str, &str)> = state
            .iter()
            .map(|((t, k), e)| (t.as_str(), k.as_str(), e.as_str()))
            .collect();
        self.insert_state_entries(group, &entries).await
    }

    async fn insert_state_group(
        &mut self,
        group: i64,
        room_id: &str,
        prev: Option<i64>,
        depth: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO state_groups (state_group, room_id, prev_group, delta_depth) VALUES ($1, $2, $3, $4)")
            .bind(group)
            .bind(room_id)
            .bind(prev)
            .bind(depth)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn insert_state_entries(
        &mut self,
        group: i64,
        entries: &[(&str, &str, &str)],
    ) -> Result<()> {
        for chunk in entries.chunks(self.backend.rows_per_statement(3)) {
            let values = values_rows(chunk.len(), 2, 3, "($1, {})");
            let sql = format!(
                "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) VALUES {values}"
            );
            let mut q = sqlx::query(&sql).bind(group);
            for (t, k, e) in chunk {
                q = q.bind(*t).bind(*k).bind(*e);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }
}

impl super::Db {
    /// The state of a group as `(type, state key) → event id`.
    pub async fn state_map(&self, group: i64) -> Result<StateMap> {
        load_state_group(self.pool(), group).await
    }
}

/// Walks the delta chain from `group` to its full snapshot in one query; the
/// newest entry for each key wins.
async fn load_state_group<'e, E>(executor: E, group: i64) -> Result<StateMap>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "WITH RECURSIVE chain(state_group, prev_group, n) AS ( \
             SELECT state_group, prev_group, 0 FROM state_groups WHERE state_group = $1 \
             UNION ALL \
             SELECT g.state_group, g.prev_group, c.n + 1 FROM state_groups g JOIN chain c ON g.state_group = c.prev_group \
         ) \
         SELECT s.event_type, s.state_key, s.event_id, c.n FROM chain c CROSS JOIN state_group_entries s WHERE s.state_group = c.state_group \
         ORDER BY c.n DESC",
    )
    .bind(group)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|(t, k, e, _)| ((t, k), e)).collect())
}

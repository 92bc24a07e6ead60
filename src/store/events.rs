//! The room event graph: events, their edges, forward extremities, state
//! snapshots (state groups), and the derived `current_state` and
//! `memberships` tables, all written in the event's own transaction.

use std::{collections::HashMap, sync::Arc};

use super::{
    Backend, Db, WriteTx, placeholders,
    push::StagedNotification,
    read_cache::{GroupState, Memberships},
    relations::BUNDLED_RELATIONS,
    statements::Statements,
};
use crate::Result;

/// An event as stored: the PDU plus what this server knows about it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub pdu: String,
    /// Server-computed `unsigned` fields (prev_content, invite_room_state…), a JSON object.
    pub unsigned_extra: Option<String>,
    pub txn_device_id: Option<String>,
    pub txn_id: Option<String>,
    pub redacted_by: Option<String>,
    /// The state group of the state just before the event.
    pub state_group_before: Option<i64>,
    /// Whether other events relate to it in a way bundled aggregations
    /// show (1) or not (0); `None` when the read did not ask
    /// ([`with_related`]).
    #[sqlx(default)]
    pub related: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct TimedEvent {
    #[sqlx(flatten)]
    event: StoredEvent,
    origin_server_ts: i64,
}

impl Backend {
    /// SQL: the values of `column` over the rows joined into one, a line
    /// each (user ids have no line breaks). Many short values then cross
    /// from the database as one row instead of a row each, which for
    /// SQLite is a hand-off between threads each.
    fn joined_lines(self, column: &str) -> String {
        match self {
            Backend::Sqlite => format!("group_concat({column}, char(10))"),
            Backend::Postgres => format!("string_agg({column}, E'\\n')"),
        }
    }
}

/// The values of a [`Backend::joined_lines`] column.
fn lines(joined: Option<String>) -> impl Iterator<Item = String> {
    joined
        .into_iter()
        .flat_map(|j| j.split('\n').map(str::to_owned).collect::<Vec<_>>())
}

/// The events clients see in timelines: not outliers, not soft-failed.
pub(super) const IN_TIMELINE: &str = "AND outlier = 0 AND soft_failed = 0";

const EVENT_COLUMNS: &str = "stream_ordering, event_id, room_id, event_type, state_key, sender, pdu, \
     unsigned_extra, txn_device_id, txn_id, redacted_by, state_group_before";

/// SQL: [`StoredEvent::related`], for reads of timeline pages: their
/// bundled aggregations are then looked up only for the events that have
/// some.
fn with_related() -> String {
    format!(
        "CASE WHEN EXISTS (SELECT 1 FROM event_relations r WHERE r.relates_to_id = events.event_id \
         AND r.rel_type IN ({BUNDLED_RELATIONS})) THEN 1 ELSE 0 END AS related"
    )
}

pub struct NewEvent<'a> {
    pub stream_ordering: i64,
    pub event_id: &'a str,
    pub room_id: &'a str,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub sender: &'a str,
    pub origin_server_ts: i64,
    pub depth: i64,
    pub pdu: &'a str,
    pub prev_events: &'a [String],
    pub auth_events: &'a [String],
    pub unsigned_extra: Option<&'a str>,
    pub state_group_before: Option<i64>,
    pub txn: Option<TxnKey<'a>>,
    /// The event a redaction redacts.
    pub redacts: Option<&'a str>,
    pub placement: Placement,
}

/// How an event takes its place in the room's graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Built here on every forward extremity: it becomes the only one.
    Local,
    /// Received in order: it replaces the extremities it cites.
    Received,
    /// Received, but not allowed by the current state: in the graph, never
    /// shown to clients and never built upon (spec: "Soft failure").
    SoftFailed,
    /// Held without the state before it: never shown, never built upon.
    Outlier,
    /// Older history fetched with /backfill: shown, never an extremity.
    Backfilled,
}

/// A client transaction id with its scope (device and endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxnKey<'a> {
    pub device_id: &'a str,
    pub scope: &'a str,
    pub txn_id: &'a str,
}

/// Event rows staged in a write transaction, and the notifications of the
/// events, written by [`WriteTx::flush`].
#[derive(Default)]
pub struct Staged {
    events: Vec<StagedEvent>,
    pub(super) notifications: Vec<StagedNotification>,
}

struct StagedEvent {
    stream_ordering: i64,
    event_id: String,
    room_id: String,
    event_type: String,
    state_key: Option<String>,
    sender: String,
    origin_server_ts: i64,
    depth: i64,
    pdu: String,
    prev_events: Vec<String>,
    auth_events: Vec<String>,
    unsigned_extra: Option<String>,
    state_group_before: Option<i64>,
    txn: Option<OwnedTxnKey>,
    redacts: Option<String>,
    placement: Placement,
}

struct OwnedTxnKey {
    device_id: String,
    scope: String,
    txn_id: String,
}

impl NewEvent<'_> {
    /// The event as later reads of the same transaction see it.
    pub fn to_stored(&self) -> StoredEvent {
        StoredEvent {
            stream_ordering: self.stream_ordering,
            event_id: self.event_id.to_owned(),
            room_id: self.room_id.to_owned(),
            event_type: self.event_type.to_owned(),
            state_key: self.state_key.map(str::to_owned),
            sender: self.sender.to_owned(),
            pdu: self.pdu.to_owned(),
            unsigned_extra: self.unsigned_extra.map(str::to_owned),
            txn_device_id: self.txn.map(|t| t.device_id.to_owned()),
            txn_id: self.txn.map(|t| t.txn_id.to_owned()),
            redacted_by: None,
            state_group_before: self.state_group_before,
            related: None,
        }
    }
}

impl Staged {
    fn push(&mut self, ev: &NewEvent<'_>) {
        self.events.push(StagedEvent {
            stream_ordering: ev.stream_ordering,
            event_id: ev.event_id.to_owned(),
            room_id: ev.room_id.to_owned(),
            event_type: ev.event_type.to_owned(),
            state_key: ev.state_key.map(str::to_owned),
            sender: ev.sender.to_owned(),
            origin_server_ts: ev.origin_server_ts,
            depth: ev.depth,
            pdu: ev.pdu.to_owned(),
            prev_events: ev.prev_events.to_vec(),
            auth_events: ev.auth_events.to_vec(),
            unsigned_extra: ev.unsigned_extra.map(str::to_owned),
            state_group_before: ev.state_group_before,
            txn: ev.txn.map(|t| OwnedTxnKey {
                device_id: t.device_id.to_owned(),
                scope: t.scope.to_owned(),
                txn_id: t.txn_id.to_owned(),
            }),
            redacts: ev.redacts.map(str::to_owned),
            placement: ev.placement,
        });
    }

    fn holds_any(&self, ids: &[String]) -> bool {
        self.events.iter().any(|e| ids.contains(&e.event_id))
    }

    fn txn_event(&self, user_id: &str, txn: &TxnKey<'_>) -> Option<String> {
        self.events
            .iter()
            .find(|e| {
                e.sender == user_id
                    && e.txn.as_ref().is_some_and(|t| {
                        t.device_id == txn.device_id
                            && t.scope == txn.scope
                            && t.txn_id == txn.txn_id
                    })
            })
            .map(|e| e.event_id.clone())
    }
}

/// `(event type, state key) → event id`
pub type StateMap = HashMap<(String, String), String>;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RoomRow {
    pub room_id: String,
    pub room_version: String,
    pub creator: String,
    pub is_public: i64,
    pub state_group: Option<i64>,
}

impl Db {
    pub async fn room(&self, room_id: &str) -> Result<Option<RoomRow>> {
        Ok(sqlx::query_as("SELECT room_id, room_version, creator, is_public, state_group FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn event(&self, event_id: &str) -> Result<Option<StoredEvent>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1"
        ))
        .bind(event_id)
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn events(&self, event_ids: &[String]) -> Result<Vec<StoredEvent>> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({}) ORDER BY stream_ordering",
            placeholders(1, event_ids.len())
        );
        let mut q = sqlx::query_as(&sql);
        for id in event_ids {
            q = q.bind(id);
        }
        Ok(q.fetch_all(self.pool()).await?)
    }

    /// Events of a room with `after < stream_ordering <= upto`, newest first, at most `limit`.
    pub async fn room_events_desc(
        &self,
        room_id: &str,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS}, {} FROM events \
             WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 {IN_TIMELINE} \
             ORDER BY stream_ordering DESC LIMIT $4",
            with_related()
        ))
        .bind(room_id)
        .bind(after)
        .bind(upto)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// Up to `limit` events of a room after (`forward`) or before the point
    /// `(origin_server_ts, stream_ordering)` = `after`, nearest first, with
    /// their timestamps.
    pub async fn room_events_by_ts(
        &self,
        room_id: &str,
        after: (i64, i64),
        forward: bool,
        limit: i64,
    ) -> Result<Vec<(StoredEvent, i64)>> {
        let (cmp, order) = if forward { (">", "ASC") } else { ("<", "DESC") };
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, origin_server_ts FROM events WHERE room_id = $1 \
             AND (origin_server_ts {cmp} $2 OR (origin_server_ts = $2 AND stream_ordering {cmp} $3)) {IN_TIMELINE} \
             ORDER BY origin_server_ts {order}, stream_ordering {order} LIMIT $4"
        );
        let rows: Vec<TimedEvent> = sqlx::query_as(&sql)
            .bind(room_id)
            .bind(after.0)
            .bind(after.1)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.event, r.origin_server_ts))
            .collect())
    }

    /// Events of a room with `from <= stream_ordering < to`, oldest first, at most `limit`.
    pub async fn room_events_asc(
        &self,
        room_id: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS}, {} FROM events \
             WHERE room_id = $1 AND stream_ordering >= $2 AND stream_ordering < $3 {IN_TIMELINE} \
             ORDER BY stream_ordering ASC LIMIT $4",
            with_related()
        ))
        .bind(room_id)
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn current_state_events(&self, room_id: &str) -> Result<Vec<StoredEvent>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM current_state c JOIN events e ON e.event_id = c.event_id WHERE c.room_id = $1 ORDER BY e.stream_ordering",
            prefixed_event_columns("e")
        ))
        .bind(room_id)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn current_state_event(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<StoredEvent>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM current_state c JOIN events e ON e.event_id = c.event_id \
             WHERE c.room_id = $1 AND c.event_type = $2 AND c.state_key = $3",
            prefixed_event_columns("e")
        ))
        .bind(room_id)
        .bind(event_type)
        .bind(state_key)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Current state events changed in `(after, before)`; the state delta of an incremental sync.
    pub async fn current_state_changed_between(
        &self,
        room_id: &str,
        after: i64,
        before: i64,
    ) -> Result<Vec<StoredEvent>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM current_state c JOIN events e ON e.event_id = c.event_id \
             WHERE c.room_id = $1 AND c.stream_ordering > $2 AND c.stream_ordering < $3 ORDER BY e.stream_ordering",
            prefixed_event_columns("e")
        ))
        .bind(room_id)
        .bind(after)
        .bind(before)
        .fetch_all(self.pool())
        .await?)
    }

    /// The state events of a state group, oldest first.
    pub async fn state_events_at_group(&self, group: i64) -> Result<Vec<Arc<StoredEvent>>> {
        let state = self.group_state(group).await?;
        let mut events: Vec<Arc<StoredEvent>> = state.values().cloned().collect();
        events.sort_by_key(|e| e.stream_ordering);
        Ok(events)
    }

    /// A state group's state: its nearest cached ancestor's with the deltas
    /// below that applied, or the whole delta chain's down from its
    /// snapshot, newest entry per key winning. (`CROSS JOIN` fixes the join
    /// order for SQLite, whose planner otherwise may scan every state group
    /// entry in the database.)
    async fn group_state(&self, group: i64) -> Result<Arc<GroupState>> {
        if let Some(state) = self.state_cache.get(&group) {
            return Ok(state);
        }
        let generation = self.state_cache.generation();
        // The chain stops at the first group whose state is cached.
        let cached = self.state_cache.live_keys();
        let stop = match cached.is_empty() {
            true => String::new(),
            false => format!(
                "WHERE c.state_group NOT IN ({})",
                placeholders(2, cached.len())
            ),
        };
        let sql = format!(
            "WITH RECURSIVE chain(state_group, prev_group, n) AS ( \
                 SELECT state_group, prev_group, 0 FROM state_groups WHERE state_group = $1 \
                 UNION ALL \
                 SELECT g.state_group, g.prev_group, c.n + 1 FROM state_groups g JOIN chain c ON g.state_group = c.prev_group {stop} \
             ) \
             SELECT state_group FROM chain ORDER BY n"
        );
        let mut q = sqlx::query_as::<_, (i64,)>(&sql).bind(group);
        for g in &cached {
            q = q.bind(*g);
        }
        let chain = q.fetch_all(self.pool()).await?;
        let chain: Vec<i64> = chain.into_iter().map(|(g,)| g).collect();
        let cached = chain
            .iter()
            .enumerate()
            .skip(1)
            .find_map(|(i, g)| Some((i, self.state_cache.get(g)?)));
        let (deltas, mut state) = match cached {
            Some((i, base)) => (&chain[..i], GroupState::clone(&base)),
            None => (&chain[..], GroupState::new()),
        };
        #[derive(sqlx::FromRow)]
        struct Entry {
            state_group: i64,
            #[sqlx(flatten)]
            event: StoredEvent,
        }
        let mut entries: Vec<Entry> = Vec::new();
        for chunk in deltas.chunks(self.backend().rows_per_statement(1)) {
            let sql = format!(
                "SELECT s.state_group AS state_group, {} FROM state_group_entries s CROSS JOIN events e \
                 WHERE s.state_group IN ({}) AND e.event_id = s.event_id",
                prefixed_event_columns("e"),
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as(&sql);
            for g in chunk {
                q = q.bind(*g);
            }
            entries.extend(q.fetch_all(self.pool()).await?);
        }
        // Oldest delta first, so a newer entry for a key replaces an older one.
        let depth: HashMap<i64, usize> = deltas.iter().enumerate().map(|(i, g)| (*g, i)).collect();
        entries.sort_by_key(|e| std::cmp::Reverse(depth.get(&e.state_group).copied()));
        for Entry { event, .. } in entries {
            state.insert(
                (event.event_type.clone(), event.state_key.clone()),
                Arc::new(event),
            );
        }
        let state = Arc::new(state);
        self.state_cache.insert(group, state.clone(), generation);
        Ok(state)
    }

    /// The room's state right after `event`: its state group, and itself when it is a state event.
    pub async fn state_events_after(&self, event: &StoredEvent) -> Result<Vec<StoredEvent>> {
        let mut state = match event.state_group_before {
            Some(g) => self
                .state_events_at_group(g)
                .await?
                .iter()
                .map(|e| StoredEvent::clone(e))
                .collect(),
            None => Vec::new(),
        };
        if event.state_key.is_some() {
            state.retain(|e| e.event_type != event.event_type || e.state_key != event.state_key);
            state.push(event.clone());
        }
        Ok(state)
    }

    /// [`Db::memberships_of`] as of `upto` or later, where every position up
    /// to `upto` is known committed: kept from an earlier read while the
    /// journal shows no membership change since the position it was read
    /// at. Every woken `/sync` needs the user's rooms.
    pub async fn memberships_at(&self, user_id: &str, upto: i64) -> Result<Arc<Memberships>> {
        if let Some((read_at, rooms)) = self.rooms_cache.get(user_id)
            && read_at <= upto
            && self
                .changes_between(read_at, upto)
                .is_some_and(|moved| !moved.memberships)
        {
            return Ok(rooms);
        }
        let generation = self.rooms_cache.generation();
        let rooms = Arc::new(self.memberships_of(user_id).await?);
        let entry = (upto, rooms.clone());
        self.rooms_cache
            .insert(user_id.to_owned(), entry, generation);
        Ok(rooms)
    }

    /// `(room_id, membership, stream_ordering)` of every room the user has a membership in.
    pub async fn memberships_of(&self, user_id: &str) -> Result<Memberships> {
        Ok(sqlx::query_as(
            "SELECT room_id, membership, stream_ordering FROM memberships WHERE user_id = $1 AND forgotten = 0",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<(String, i64)>> {
        Ok(sqlx::query_as("SELECT membership, stream_ordering FROM memberships WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn room_member_ids(&self, room_id: &str, membership: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT user_id FROM memberships WHERE room_id = $1 AND membership = $2",
        )
        .bind(room_id)
        .bind(membership)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(u,)| u).collect())
    }

    /// Local users who should hear about new events in these rooms, each once.
    pub async fn users_to_notify(&self, rooms: &[&str]) -> Result<Vec<String>> {
        let mut users = Vec::new();
        for chunk in rooms.chunks(ROOMS_PER_STATEMENT) {
            let sql = format!(
                "SELECT {} FROM (SELECT DISTINCT user_id FROM memberships WHERE room_id IN ({}) \
                 AND membership IN ('join', 'invite', 'knock')) u",
                self.backend().joined_lines("user_id"),
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (Option<String>,)>(&sql);
            for room in chunk {
                q = q.bind(*room);
            }
            users.extend(lines(q.fetch_one(self.pool()).await?.0));
        }
        Ok(users)
    }

    /// Users joined to a room `user_id` is joined to.
    pub async fn users_sharing_a_room(&self, user_id: &str) -> Result<Vec<String>> {
        let (users,): (Option<String>,) = sqlx::query_as(&format!(
            "SELECT {} FROM (SELECT DISTINCT theirs.user_id FROM memberships mine \
             CROSS JOIN memberships theirs WHERE mine.user_id = $1 AND mine.membership = 'join' \
             AND theirs.room_id = mine.room_id AND theirs.membership = 'join' AND theirs.user_id <> $1) u",
            self.backend().joined_lines("user_id"),
        ))
        .bind(user_id)
        .fetch_one(self.pool())
        .await?;
        Ok(lines(users).collect())
    }

    /// Those of `candidates` joined to a room `user_id` is joined to.
    pub async fn users_sharing_a_room_among(
        &self,
        user_id: &str,
        candidates: &[String],
    ) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for chunk in candidates.chunks(500) {
            let sql = format!(
                "SELECT DISTINCT theirs.user_id FROM memberships mine \
                 CROSS JOIN memberships theirs WHERE mine.user_id = $1 AND mine.membership = 'join' \
                 AND theirs.room_id = mine.room_id AND theirs.membership = 'join' \
                 AND theirs.user_id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String,)>(&sql).bind(user_id);
            for user in chunk {
                q = q.bind(user);
            }
            found.extend(q.fetch_all(self.pool()).await?.into_iter().map(|(u,)| u));
        }
        Ok(found)
    }

    pub async fn forget_room(&self, room_id: &str, user_id: &str) -> Result<()> {
        sqlx::query("UPDATE memberships SET forgotten = 1 WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        // Forgetting takes no stream position: the journal does not show it.
        self.rooms_cache.remove(user_id);
        Ok(())
    }

    /// Which of `rooms` have events after `since`, with their newest position.
    pub async fn rooms_with_events_after(
        &self,
        rooms: &[String],
        since: i64,
    ) -> Result<HashMap<String, i64>> {
        let mut changed = HashMap::new();
        for chunk in rooms.chunks(500) {
            let sql = format!(
                "SELECT room_id, MAX(stream_ordering) FROM events WHERE stream_ordering > $1 AND room_id IN ({}) {IN_TIMELINE} GROUP BY room_id",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String, i64)>(&sql).bind(since);
            for room in chunk {
                q = q.bind(room);
            }
            changed.extend(q.fetch_all(self.pool()).await?);
        }
        Ok(changed)
    }

    /// Every value some state entries have had in a room, oldest first, in
    /// one query: for each `(event type, state key, content field)` asked,
    /// `(stream_ordering, content[field])`, e.g. a user's memberships.
    pub async fn state_histories(
        &self,
        room_id: &str,
        entries: &[(&str, &str, &str)],
    ) -> Result<Vec<Vec<(i64, String)>>> {
        let conditions = (0..entries.len())
            .map(|i| {
                format!(
                    "(event_type = ${} AND state_key = ${})",
                    2 + 2 * i,
                    3 + 2 * i
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!(
            "SELECT event_type, state_key, stream_ordering, pdu FROM events WHERE room_id = $1 AND ({conditions}) ORDER BY stream_ordering"
        );
        let mut q = sqlx::query_as::<_, (String, String, i64, String)>(&sql).bind(room_id);
        for (event_type, state_key, _) in entries {
            q = q.bind(*event_type).bind(*state_key);
        }
        let mut histories = vec![Vec::new(); entries.len()];
        for (event_type, state_key, pos, pdu) in q.fetch_all(self.pool()).await? {
            let Some(i) = entries
                .iter()
                .position(|(t, k, _)| *t == event_type && *k == state_key)
            else {
                continue;
            };
            let value = serde_json::from_str::<serde_json::Value>(&pdu)
                .ok()
                .and_then(|v| v["content"][entries[i].2].as_str().map(str::to_owned))
                .unwrap_or_default();
            histories[i].push((pos, value));
        }
        Ok(histories)
    }
}

/// Reads and writes inside an event's write transaction.
impl WriteTx<'_> {
    /// Locks the room for this transaction and returns it. On PostgreSQL the
    /// row lock serialises event creation per room across processes; SQLite
    /// is already serialised by the writer lock.
    pub async fn lock_room(
        &mut self,
        room_id: &str,
        backend: super::Backend,
    ) -> Result<Option<RoomRow>> {
        Ok(self.lock_rooms(&[room_id], backend).await?.pop())
    }

    /// [`WriteTx::lock_room`] for several rooms in one statement, locked in
    /// the order of their ids (so two processes never wait on each other in
    /// opposite orders); rooms this server does not know are left out.
    pub async fn lock_rooms(
        &mut self,
        room_ids: &[&str],
        backend: super::Backend,
    ) -> Result<Vec<RoomRow>> {
        let suffix = if backend == super::Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let mut rows = Vec::with_capacity(room_ids.len());
        for chunk in room_ids.chunks(ROOMS_PER_STATEMENT) {
            let sql = format!(
                "SELECT room_id, room_version, creator, is_public, state_group FROM rooms \
                 WHERE room_id IN ({}) ORDER BY room_id{suffix}",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, RoomRow>(&sql);
            for room in chunk {
                q = q.bind(*room);
            }
            rows.extend(q.fetch_all(&mut *self.tx).await?);
        }
        Ok(rows)
    }

    /// Inserts the room; `false` when the id is taken.
    pub async fn insert_room(
        &mut self,
        room_id: &str,
        version: &str,
        creator: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4) ON CONFLICT (room_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(version)
        .bind(creator)
        .bind(crate::now_ms())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// `(event_id, depth)` of the room's forward extremities.
    pub async fn forward_extremities(&mut self, room_id: &str) -> Result<Vec<(String, i64)>> {
        Ok(self
            .forward_extremities_of(&[room_id])
            .await?
            .remove(room_id)
            .unwrap_or_default())
    }

    /// [`WriteTx::forward_extremities`] of several rooms in one statement.
    pub async fn forward_extremities_of(
        &mut self,
        room_ids: &[&str],
    ) -> Result<HashMap<String, Vec<(String, i64)>>> {
        self.flush_rooms(room_ids).await?;
        let mut by_room: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        for chunk in room_ids.chunks(ROOMS_PER_STATEMENT) {
            let sql = format!(
                "SELECT f.room_id, f.event_id, e.depth FROM room_forward_extremities f \
                 JOIN events e ON e.event_id = f.event_id WHERE f.room_id IN ({}) \
                 ORDER BY e.stream_ordering",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String, String, i64)>(&sql);
            for room in chunk {
                q = q.bind(*room);
            }
            for (room, event, depth) in q.fetch_all(&mut *self.tx).await? {
                by_room.entry(room).or_default().push((event, depth));
            }
        }
        Ok(by_room)
    }

    /// The current state events with these keys.
    pub async fn current_state_for(
        &mut self,
        room_id: &str,
        keys: &[(String, String)],
    ) -> Result<Vec<StoredEvent>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // `current_state` of a key staged here points at an event row not written yet.
        let staged_key = self.staged.events.iter().any(|e| {
            e.room_id == room_id
                && keys
                    .iter()
                    .any(|(t, k)| *t == e.event_type && Some(k) == e.state_key.as_ref())
        });
        if staged_key {
            self.flush().await?;
        }
        let conditions = (0..keys.len())
            .map(|i| {
                format!(
                    "(c.event_type = ${} AND c.state_key = ${})",
                    2 + 2 * i,
                    3 + 2 * i
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!(
            "SELECT {} FROM current_state c JOIN events e ON e.event_id = c.event_id WHERE c.room_id = $1 AND ({conditions})",
            prefixed_event_columns("e")
        );
        let mut q = sqlx::query_as(&sql).bind(room_id);
        for (t, k) in keys {
            q = q.bind(t).bind(k);
        }
        Ok(q.fetch_all(&mut *self.tx).await?)
    }

    /// The events already sent under these transaction ids, one query for a batch.
    pub async fn txn_events<'k>(
        &mut self,
        keys: &[(&'k str, TxnKey<'k>)],
    ) -> Result<HashMap<(&'k str, TxnKey<'k>), Option<String>>> {
        let mut found: HashMap<(&str, TxnKey<'_>), Option<String>> =
            keys.iter().map(|k| (*k, None)).collect();
        for chunk in keys.chunks(self.backend.rows_per_statement(4)) {
            let conditions = (0..chunk.len())
                .map(|i| {
                    let n = 4 * i;
                    format!(
                        "(user_id = ${} AND device_id = ${} AND scope = ${} AND txn_id = ${})",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4
                    )
                })
                .collect::<Vec<_>>()
                .join(" OR ");
            let sql = format!(
                "SELECT user_id, device_id, scope, txn_id, event_id FROM txn_ids WHERE {conditions}"
            );
            let mut q = sqlx::query_as::<_, (String, String, String, String, String)>(&sql);
            for (user, t) in chunk {
                q = q.bind(*user).bind(t.device_id).bind(t.scope).bind(t.txn_id);
            }
            for (user, device, scope, txn_id, event_id) in q.fetch_all(&mut *self.tx).await? {
                let key = keys.iter().find(|(u, t)| {
                    *u == user && t.device_id == device && t.scope == scope && t.txn_id == txn_id
                });
                if let Some(key) = key {
                    found.insert(*key, Some(event_id));
                }
            }
        }
        Ok(found)
    }

    /// The event staged in this transaction under a transaction id, if any.
    pub fn staged_txn_event(&self, user_id: &str, txn: &TxnKey<'_>) -> Option<String> {
        self.staged.txn_event(user_id, txn)
    }

    pub async fn txn_event(&mut self, user_id: &str, txn: &TxnKey<'_>) -> Result<Option<String>> {
        if let Some(staged) = self.staged.txn_event(user_id, txn) {
            return Ok(Some(staged));
        }
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT event_id FROM txn_ids WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4",
        )
        .bind(user_id)
        .bind(txn.device_id)
        .bind(txn.scope)
        .bind(txn.txn_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(row.map(|(e,)| e))
    }

    /// Persists an accepted event: its state effects at once (later events
    /// of the transaction build on them), its rows when the transaction is
    /// flushed (see [`WriteTx::flush`]), so a batch writes them together.
    pub async fn stage_event(&mut self, ev: &NewEvent<'_>, membership: Option<&str>) -> Result<()> {
        if let Some(state_key) = ev.state_key {
            self.apply_state_event(ev, state_key, membership).await?;
        }
        self.staged.push(ev);
        Ok(())
    }

    /// Persists an event from another server (or one of ours that went
    /// through another server first): a state event gets its state group,
    /// unless the state before it is unknown (an outlier, backfilled
    /// history); the current state is the caller's to change.
    pub async fn stage_received(&mut self, ev: &NewEvent<'_>) -> Result<()> {
        if let Some(state_key) = ev.state_key
            && !matches!(ev.placement, Placement::Outlier | Placement::Backfilled)
        {
            self.insert_event_group(ev, state_key).await?;
        }
        self.staged.push(ev);
        Ok(())
    }

    /// A received event replaces the extremities it cites, unless a known
    /// event already cites it (it arrived after a child).
    fn replace_extremities<'q>(
        &self,
        statements: &mut Statements<'q>,
        room_id: &'q str,
        prev_events: &'q [String],
        event_id: &'q str,
    ) {
        for chunk in prev_events.chunks(self.backend.rows_per_statement(1)) {
            statements.push(
                1 + chunk.len(),
                |first| {
                    format!(
                        "DELETE FROM room_forward_extremities WHERE room_id = ${first} AND event_id IN ({})",
                        super::placeholders(first + 1, chunk.len())
                    )
                },
                |b| {
                    b.bind(room_id);
                    for id in chunk {
                        b.bind(id);
                    }
                },
            );
        }
        statements.push(
            2,
            |first| {
                let (room, event) = (first, first + 1);
                format!(
                    "INSERT INTO room_forward_extremities (room_id, event_id) SELECT ${room}, ${event} \
                     WHERE NOT EXISTS (SELECT 1 FROM event_edges WHERE prev_event_id = ${event})"
                )
            },
            |b| {
                b.bind(room_id).bind(event_id);
            },
        );
    }

    /// `INSERT INTO {into} VALUES …{tail}` of two-column rows.
    fn push_pairs<'q>(
        &self,
        statements: &mut Statements<'q>,
        into: &str,
        tail: &str,
        rows: &[(&'q str, &'q str)],
    ) {
        for chunk in rows.chunks(self.backend.rows_per_statement(2)) {
            statements.push(
                2 * chunk.len(),
                |first| {
                    let values = super::values_rows(chunk.len(), first, 2, "({})");
                    format!("INSERT INTO {into} VALUES {values}{tail}")
                },
                |b| {
                    for (one, other) in chunk {
                        b.bind(*one).bind(*other);
                    }
                },
            );
        }
    }

    /// Writes the staged rows: events, edges, transaction ids, each room's
    /// new forward extremity, and redaction marks, in a few multi-row
    /// statements sent together ([`Statements`]).
    pub async fn flush(&mut self) -> Result<()> {
        let staged = std::mem::take(&mut self.staged);
        if staged.events.is_empty() && staged.notifications.is_empty() {
            return Ok(());
        }
        for e in &staged.events {
            let in_timeline = matches!(e.placement, Placement::Local | Placement::Received);
            self.changes
                .record_event(&e.room_id, &e.event_type, in_timeline);
        }
        let mut statements = Statements::new(self.backend, staged.events.len());
        for chunk in staged.events.chunks(self.backend.rows_per_statement(15)) {
            statements.push(
                15 * chunk.len(),
                |first| {
                    format!(
                        "INSERT INTO events (stream_ordering, event_id, room_id, event_type, state_key, sender, origin_server_ts, \
                         depth, pdu, unsigned_extra, state_group_before, txn_device_id, txn_id, outlier, soft_failed) VALUES {}",
                        super::values_rows(chunk.len(), first, 15, "({})")
                    )
                },
                |b| {
                    for e in chunk {
                        b.bind(e.stream_ordering)
                            .bind(&e.event_id)
                            .bind(&e.room_id)
                            .bind(&e.event_type)
                            .bind(&e.state_key)
                            .bind(&e.sender)
                            .bind(e.origin_server_ts)
                            .bind(e.depth)
                            .bind(&e.pdu)
                            .bind(&e.unsigned_extra)
                            .bind(e.state_group_before)
                            .bind(e.txn.as_ref().map(|t| &t.device_id))
                            .bind(e.txn.as_ref().map(|t| &t.txn_id))
                            .bind(i64::from(e.placement == Placement::Outlier))
                            .bind(i64::from(e.placement == Placement::SoftFailed));
                    }
                },
            );
        }
        let prevs: Vec<(&str, &str)> = staged
            .events
            .iter()
            .flat_map(|e| {
                e.prev_events
                    .iter()
                    .map(|p| (e.event_id.as_str(), p.as_str()))
            })
            .collect();
        let auths: Vec<(&str, &str)> = staged
            .events
            .iter()
            .flat_map(|e| {
                e.auth_events
                    .iter()
                    .map(|a| (e.event_id.as_str(), a.as_str()))
            })
            .collect();
        let linked = " ON CONFLICT DO NOTHING";
        self.push_pairs(
            &mut statements,
            "event_edges (event_id, prev_event_id)",
            linked,
            &prevs,
        );
        self.push_pairs(
            &mut statements,
            "event_auth (event_id, auth_event_id)",
            linked,
            &auths,
        );
        let txns: Vec<(&StagedEvent, &OwnedTxnKey)> = staged
            .events
            .iter()
            .filter_map(|e| Some((e, e.txn.as_ref()?)))
            .collect();
        for chunk in txns.chunks(self.backend.rows_per_statement(5)) {
            statements.push(
                5 * chunk.len(),
                |first| {
                    format!(
                        "INSERT INTO txn_ids (user_id, device_id, scope, txn_id, event_id) VALUES {}",
                        super::values_rows(chunk.len(), first, 5, "({})")
                    )
                },
                |b| {
                    for (e, t) in chunk {
                        b.bind(&e.sender)
                            .bind(&t.device_id)
                            .bind(&t.scope)
                            .bind(&t.txn_id)
                            .bind(&e.event_id);
                    }
                },
            );
        }
        // Local events reference every forward extremity of their room as
        // prev_events, so the last one staged is the room's only extremity.
        let mut heads: HashMap<&str, &str> = HashMap::new();
        for e in staged
            .events
            .iter()
            .filter(|e| e.placement == Placement::Local)
        {
            heads.insert(&e.room_id, &e.event_id);
        }
        let heads: Vec<(&str, &str)> = heads.into_iter().collect();
        for chunk in heads.chunks(self.backend.rows_per_statement(2)) {
            statements.push(
                chunk.len(),
                |first| {
                    format!(
                        "DELETE FROM room_forward_extremities WHERE room_id IN ({})",
                        super::placeholders(first, chunk.len())
                    )
                },
                |b| {
                    for (room_id, _) in chunk {
                        b.bind(*room_id);
                    }
                },
            );
        }
        let extremities = "room_forward_extremities (room_id, event_id)";
        self.push_pairs(&mut statements, extremities, "", &heads);
        for e in staged
            .events
            .iter()
            .filter(|e| e.placement == Placement::Received)
        {
            self.replace_extremities(&mut statements, &e.room_id, &e.prev_events, &e.event_id);
        }
        for e in staged.events.iter().filter(|e| e.redacts.is_some()) {
            self.events_changed = true;
            statements.push(
                3,
                |first| {
                    let (redacts, room, by) = (first, first + 1, first + 2);
                    format!(
                        "UPDATE events SET redacted_by = ${by} WHERE event_id = ${redacts} \
                         AND room_id = ${room} AND redacted_by IS NULL"
                    )
                },
                |b| {
                    b.bind(e.redacts.as_deref())
                        .bind(&e.room_id)
                        .bind(&e.event_id);
                },
            );
        }
        super::push::push_notifications(self.backend, &mut statements, &staged.notifications)?;
        statements.execute(&mut self.tx).await
    }

    pub(super) async fn flush_if_staged(&mut self, ids: &[String]) -> Result<()> {
        if self.staged.holds_any(ids) {
            self.flush().await?;
        }
        Ok(())
    }

    /// Flushes first if staged events of `room_ids` could change what a read of them returns.
    async fn flush_rooms(&mut self, room_ids: &[&str]) -> Result<()> {
        if self
            .staged
            .events
            .iter()
            .any(|e| room_ids.contains(&e.room_id.as_str()))
        {
            self.flush().await?;
        }
        Ok(())
    }
}

pub(super) fn prefixed_event_columns(prefix: &str) -> String {
    EVENT_COLUMNS
        .split(", ")
        .map(|c| format!("{prefix}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Db {}

/// Reads for many rooms at once, for syncs that cover many rooms.
impl Db {
    /// The newest `limit` events of each room at or before `upto`, newest first:
    /// one index range scan per room, all in one statement.
    pub async fn newest_events_in_rooms(
        &self,
        rooms: &[String],
        upto: i64,
        limit: i64,
    ) -> Result<HashMap<String, Vec<StoredEvent>>> {
        let mut by_room: HashMap<String, Vec<StoredEvent>> = HashMap::new();
        for chunk in rooms.chunks(ROOMS_PER_STATEMENT) {
            let scans = (0..chunk.len())
                .map(|i| {
                    format!(
                        "SELECT * FROM (SELECT {EVENT_COLUMNS} FROM events WHERE room_id = ${} AND stream_ordering <= $1 {IN_TIMELINE} \
                         ORDER BY stream_ordering DESC LIMIT $2) AS r{i}",
                        i + 3
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let mut q = sqlx::query_as::<_, StoredEvent>(&scans)
                .bind(upto)
                .bind(limit);
            for room in chunk {
                q = q.bind(room);
            }
            for event in q.fetch_all(self.pool()).await? {
                by_room
                    .entry(event.room_id.clone())
                    .or_default()
                    .push(event);
            }
        }
        for events in by_room.values_mut() {
            events.sort_by_key(|e| std::cmp::Reverse(e.stream_ordering));
        }
        Ok(by_room)
    }

    /// The state events of several state groups in one query (see [`Db::state_events_at_group`]).
    pub async fn state_events_at_groups(
        &self,
        groups: &[i64],
    ) -> Result<HashMap<i64, Vec<StoredEvent>>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            root: i64,
            #[sqlx(flatten)]
            event: StoredEvent,
        }
        let mut by_group: HashMap<i64, HashMap<(String, Option<String>), StoredEvent>> =
            HashMap::new();
        for chunk in groups.chunks(self.backend().rows_per_statement(1)) {
            let rows: Vec<Row> = {
                let sql = format!(
                    "WITH RECURSIVE chain(root, state_group, prev_group, n) AS ( \
                         SELECT state_group, state_group, prev_group, 0 FROM state_groups WHERE state_group IN ({}) \
                         UNION ALL \
                         SELECT c.root, g.state_group, g.prev_group, c.n + 1 FROM chain c CROSS JOIN state_groups g \
                         WHERE g.state_group = c.prev_group \
                     ) \
                     SELECT c.root AS root, {} FROM chain c CROSS JOIN state_group_entries s CROSS JOIN events e \
                     WHERE s.state_group = c.state_group AND e.event_id = s.event_id ORDER BY c.root, c.n DESC",
                    super::placeholders(1, chunk.len()),
                    prefixed_event_columns("e")
                );
                let mut q = sqlx::query_as(&sql);
                for group in chunk {
                    q = q.bind(*group);
                }
                q.fetch_all(self.pool()).await?
            };
            for Row { root, event } in rows {
                by_group
                    .entry(root)
                    .or_default()
                    .insert((event.event_type.clone(), event.state_key.clone()), event);
            }
        }
        Ok(by_group
            .into_iter()
            .map(|(group, state)| {
                let mut events: Vec<StoredEvent> = state.into_values().collect();
                events.sort_by_key(|e| e.stream_ordering);
                (group, events)
            })
            .collect())
    }

    /// `(membership, count)` per room, and up to `heroes` other joined or invited members.
    pub async fn member_summaries(
        &self,
        rooms: &[String],
        user: &str,
        heroes: i64,
    ) -> Result<HashMap<String, MemberSummary>> {
        let mut summaries: HashMap<String, MemberSummary> = HashMap::new();
        for chunk in rooms.chunks(ROOMS_PER_STATEMENT) {
            let sql = format!(
                "SELECT room_id, membership, COUNT(*) FROM memberships WHERE room_id IN ({}) GROUP BY room_id, membership",
                super::placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String, String, i64)>(&sql);
            for room in chunk {
                q = q.bind(room);
            }
            for (room, membership, count) in q.fetch_all(self.pool()).await? {
                summaries
                    .entry(room)
                    .or_default()
                    .counts
                    .push((membership, count));
            }
            let scans = (0..chunk.len())
                .map(|i| {
                    format!(
                        "SELECT * FROM (SELECT room_id, user_id FROM memberships WHERE room_id = ${} AND user_id <> $1 \
                         AND membership IN ('join', 'invite') ORDER BY stream_ordering LIMIT $2) AS h{i}",
                        i + 3
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let mut q = sqlx::query_as::<_, (String, String)>(&scans)
                .bind(user)
                .bind(heroes);
            for room in chunk {
                q = q.bind(room);
            }
            for (room, hero) in q.fetch_all(self.pool()).await? {
                summaries.entry(room).or_default().heroes.push(hero);
            }
        }
        Ok(summaries)
    }
}

/// Who is in a room, for sync's room summary.
#[derive(Debug, Default, Clone)]
pub struct MemberSummary {
    /// `(membership, count)`
    pub counts: Vec<(String, i64)>,
    /// A few other members, oldest first.
    pub heroes: Vec<String>,
}

/// Rooms per statement in the many-rooms reads: each adds one bound parameter
/// and one small scan.
pub(super) const ROOMS_PER_STATEMENT: usize = 100;

//! spec: "Presence". Whether a user is online, idle (`unavailable`) or
//! offline, with `last_active_ago`, `currently_active` and a status message.
//!
//! Presence lives outside the database: in this process by default, or in
//! Redis (`redis.url`) so that several server processes share one view.
//! Both keep a record per user and a position per change; the presence
//! part of a sync token is such a position. Changes made by time passing
//! (idle → `unavailable`, no client syncing → `offline`) are written by a
//! sweep that runs every few seconds in each process (two processes may
//! both announce the same timeout: a repeated presence event, never a lost one).

mod memory;
mod redis;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{UserId, presence::PresenceState, serde::Raw};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Error, Result, Server, config::Presence as PresenceConfig};

/// A user counts as currently active for this long after their last action.
const ACTIVE_WINDOW_MS: i64 = 60_000;
/// A user of another server whose server has said nothing for this long is
/// shown offline (Synapse's federation presence timeout).
const REMOTE_PRESENCE_TIMEOUT_MS: i64 = 30 * 60 * 1000;

/// What is stored per user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    /// When a client of the user last synced or set presence.
    pub last_seen_ts: i64,
    pub currently_active: bool,
}

impl Record {
    fn offline() -> Self {
        Self {
            state: PresenceState::Offline.to_string(),
            status_msg: None,
            last_active_ts: 0,
            last_seen_ts: 0,
            currently_active: false,
        }
    }
}

/// Where records live: one interface, two implementations.
pub enum Store {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
}

impl Store {
    async fn get(&self, user: &str) -> Result<Option<Record>> {
        match self {
            Self::Memory(s) => Ok(s.get(user)),
            Self::Redis(s) => s.get(user).await,
        }
    }

    /// Stores the record; `announce` gives it a new position, so syncs
    /// deliver it.
    async fn put(&self, user: &str, record: &Record, announce: bool) -> Result<()> {
        match self {
            Self::Memory(s) => {
                s.put(user, record, announce);
                Ok(())
            }
            Self::Redis(s) => s.put(user, record, announce).await,
        }
    }

    async fn position(&self) -> Result<i64> {
        match self {
            Self::Memory(s) => Ok(s.position()),
            Self::Redis(s) => s.position().await,
        }
    }

    /// Records announced after `since` (all announced ones when `None`),
    /// up to position `upto`.
    async fn changed(&self, since: Option<i64>, upto: i64) -> Result<Vec<(String, Record)>> {
        match self {
            Self::Memory(s) => Ok(s.changed(since, upto)),
            Self::Redis(s) => s.changed(since, upto).await,
        }
    }

    /// Users who are not offline, with their records.
    async fn not_offline(&self) -> Result<Vec<(String, Record)>> {
        match self {
            Self::Memory(s) => Ok(s.not_offline()),
            Self::Redis(s) => s.not_offline().await,
        }
    }
}

pub struct Presence {
    store: Store,
    config: PresenceConfig,
    /// Local users with a `/sync` in flight: they are online however long
    /// their long-poll lasts.
    syncing: Mutex<HashMap<String, usize>>,
}

impl Presence {
    pub fn new(
        config: PresenceConfig,
        redis: Option<(::redis::aio::ConnectionManager, String)>,
    ) -> Self {
        let store = match redis {
            Some((conn, prefix)) => Store::Redis(redis::RedisStore::new(conn, prefix)),
            None => Store::Memory(memory::MemoryStore::default()),
        };
        Self {
            store,
            config,
            syncing: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    pub async fn position(&self) -> Result<i64> {
        self.store.position().await
    }
}

/// `PUT /presence/{userId}/status`.
pub async fn set_status(
    server: &Server,
    user: &UserId,
    state: &PresenceState,
    status_msg: Option<String>,
) -> Result<()> {
    let presence = &server.presence;
    let now = crate::now_ms();
    let old = presence
        .store
        .get(user.as_str())
        .await?
        .unwrap_or_else(Record::offline);
    let mut new = old.clone();
    new.state = state.to_string();
    new.status_msg = status_msg;
    new.last_seen_ts = now;
    if *state == PresenceState::Online {
        new.last_active_ts = now;
        new.currently_active = true;
    } else if *state == PresenceState::Offline {
        new.currently_active = false;
    }
    save(server, user.as_str(), &old, &new).await
}

/// `GET /presence/{userId}/status`: only for the user and whoever shares a
/// room with them (like Synapse); offline when nothing is known.
pub async fn visible_status(server: &Server, requester: &UserId, user: &UserId) -> Result<Record> {
    if requester != user {
        let shared = server
            .db
            .users_sharing_a_room_among(requester.as_str(), &[user.to_string()])
            .await?;
        if shared.is_empty() {
            return Err(Error::forbidden("You do not share a room with this user"));
        }
    }
    Ok(server
        .presence
        .store
        .get(user.as_str())
        .await?
        .unwrap_or_else(Record::offline))
}

/// Marks a sync by `user`: `set_presence` as the spec describes (`offline`:
/// the sync does not mark the user online). Returns a guard that keeps the
/// user online while the sync is in flight. A change it made is announced
/// (everyone sharing a room woken, other servers told) when the sync calls
/// [`SyncGuard::announce`] or ends, so the sync answers first.
pub async fn syncing(
    server: &Arc<Server>,
    user: &UserId,
    set_presence: &PresenceState,
) -> Result<Option<SyncGuard>> {
    let presence = &server.presence;
    if !presence.enabled() || *set_presence == PresenceState::Offline {
        return Ok(None);
    }
    let now = crate::now_ms();
    let old = presence
        .store
        .get(user.as_str())
        .await?
        .unwrap_or_else(Record::offline);
    let mut new = old.clone();
    new.last_seen_ts = now;
    if old.state != set_presence.as_str() {
        new.state = set_presence.to_string();
        if *set_presence == PresenceState::Online {
            new.last_active_ts = now;
            new.currently_active = true;
        }
    }
    let change = store(server, user.as_str(), &old, &new)
        .await?
        .then_some(new);
    *presence
        .syncing
        .lock()
        .expect("presence lock")
        .entry(user.to_string())
        .or_default() += 1;
    Ok(Some(SyncGuard {
        server: server.clone(),
        user: user.to_string(),
        change,
    }))
}

/// Ends a sync's hold on its user's presence.
pub struct SyncGuard {
    server: Arc<Server>,
    user: String,
    /// Stored by the sync, not announced yet.
    change: Option<Record>,
}

impl SyncGuard {
    /// Announces the change the sync made, in the background.
    pub fn announce(&mut self) {
        let Some(new) = self.change.take() else {
            return;
        };
        let (server, user) = (self.server.clone(), self.user.clone());
        tokio::spawn(async move {
            if let Err(e) = announce(&server, &user, &new).await {
                tracing::warn!(%e, "cannot announce a presence change");
            }
        });
    }
}

impl Drop for SyncGuard {
    fn drop(&mut self) {
        self.announce();
        let mut syncing = self.server.presence.syncing.lock().expect("presence lock");
        if let Some(n) = syncing.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                syncing.remove(&self.user);
            }
        }
        drop(syncing);
        // The sync just ended: the user was seen now.
        let server = self.server.clone();
        let user = std::mem::take(&mut self.user);
        tokio::spawn(async move {
            if let Err(e) = seen(&server, &user).await {
                tracing::warn!(error = %e, "presence update failed");
            }
        });
    }
}

async fn seen(server: &Server, user: &str) -> Result<()> {
    let Some(old) = server.presence.store.get(user).await? else {
        return Ok(());
    };
    let mut new = old.clone();
    new.last_seen_ts = crate::now_ms();
    save(server, user, &old, &new).await
}

/// The user did something (sent an event, a receipt, typed): they are
/// online and currently active.
pub async fn active(server: &Server, user: &UserId) -> Result<()> {
    if !server.presence.enabled() {
        return Ok(());
    }
    let now = crate::now_ms();
    let old = server
        .presence
        .store
        .get(user.as_str())
        .await?
        .unwrap_or_else(Record::offline);
    let mut new = old.clone();
    new.last_active_ts = now;
    new.last_seen_ts = now;
    new.currently_active = true;
    if old.state == PresenceState::Offline.as_str()
        || old.state == PresenceState::Unavailable.as_str()
    {
        new.state = PresenceState::Online.to_string();
    }
    save(server, user.as_str(), &old, &new).await
}

/// A user of another server's presence, as their server announced it.
pub async fn set_remote(
    server: &Server,
    user: &UserId,
    state: &PresenceState,
    status_msg: Option<String>,
    last_active_ago: i64,
    currently_active: bool,
) -> Result<()> {
    if !server.presence.enabled() {
        return Ok(());
    }
    let now = crate::now_ms();
    let old = server
        .presence
        .store
        .get(user.as_str())
        .await?
        .unwrap_or_else(Record::offline);
    let new = Record {
        state: state.to_string(),
        status_msg,
        last_active_ts: now - last_active_ago.max(0),
        last_seen_ts: now,
        currently_active,
    };
    save(server, user.as_str(), &old, &new).await
}

/// Whether the user is one of ours: only our users' timeouts are ours to
/// apply, and only their changes are ours to tell other servers.
fn is_local(server: &Server, user: &str) -> bool {
    UserId::parse(user).is_ok_and(|u| u.server_name() == server.server_name())
}

/// Stores `new`, announcing it (and waking whoever shares a room with the
/// user) when others would see a difference.
async fn save(server: &Server, user: &str, old: &Record, new: &Record) -> Result<()> {
    if store(server, user, old, new).await? {
        announce(server, user, new).await?;
    }
    Ok(())
}

/// Stores a change of the user's presence; returns whether others see it.
async fn store(server: &Server, user: &str, old: &Record, new: &Record) -> Result<bool> {
    let visible_change = old.state != new.state
        || old.status_msg != new.status_msg
        || old.currently_active != new.currently_active;
    if !visible_change && old == new {
        return Ok(false);
    }
    server.presence.store.put(user, new, visible_change).await?;
    Ok(visible_change)
}

/// Tells other servers (for a local user) and wakes the users who share a
/// room with the user, and the user.
async fn announce(server: &Server, user: &str, new: &Record) -> Result<()> {
    if is_local(server, user) {
        crate::service::federation::edu::send_presence(server, user, new).await?;
    }
    let mut wake = server.db.users_sharing_a_room(user).await?;
    wake.push(user.to_owned());
    server
        .notifier
        .notify_users(wake.iter().map(String::as_str));
    Ok(())
}

/// Runs until shutdown: applies the timeouts (idle → `unavailable`, no
/// client syncing → `offline`, `currently_active` lapsing).
pub async fn sweep_forever(server: Arc<Server>) {
    if !server.presence.enabled() {
        return;
    }
    // Often enough that a timeout is applied within a quarter of its length.
    let shortest = server
        .presence
        .config
        .idle_after_ms
        .min(server.presence.config.offline_after_ms);
    let interval = Duration::from_millis(shortest / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = server.notifier.shutting_down() => return,
        }
        if let Err(e) = sweep(&server).await {
            tracing::warn!(error = %e, "presence sweep failed");
        }
    }
}

async fn sweep(server: &Server) -> Result<()> {
    let presence = &server.presence;
    let now = crate::now_ms();
    let syncing: HashSet<String> = presence
        .syncing
        .lock()
        .expect("presence lock")
        .keys()
        .cloned()
        .collect();
    for (user, old) in presence.store.not_offline().await? {
        let mut new = old.clone();
        if !is_local(server, &user) {
            // Their server tells us of changes; silence this long means it is gone.
            if now - new.last_seen_ts > REMOTE_PRESENCE_TIMEOUT_MS {
                new.state = PresenceState::Offline.to_string();
                new.currently_active = false;
            }
        } else {
            if syncing.contains(&user) {
                new.last_seen_ts = now;
            }
            apply_timeouts(&mut new, &presence.config, now);
        }
        save(server, &user, &old, &new).await?;
    }
    Ok(())
}

fn apply_timeouts(record: &mut Record, config: &PresenceConfig, now: i64) {
    let idle = now - record.last_active_ts;
    if now - record.last_seen_ts > config.offline_after_ms as i64 {
        record.state = PresenceState::Offline.to_string();
        record.currently_active = false;
        return;
    }
    if record.state == PresenceState::Online.as_str() && idle > config.idle_after_ms as i64 {
        record.state = PresenceState::Unavailable.to_string();
    }
    if idle > ACTIVE_WINDOW_MS {
        record.currently_active = false;
    }
}

/// The presence part of a sync: changes in `(since, upto]` (every known
/// record up to `upto` when `since` is `None`) of users who share a room
/// with `user`.
pub async fn for_sync(
    server: &Server,
    user: &UserId,
    since: Option<i64>,
    upto: i64,
    filter: &ruma::api::client::filter::Filter,
) -> Result<Vec<Raw<ruma::events::presence::PresenceEvent>>> {
    let presence = &server.presence;
    if !presence.enabled() || since.is_some_and(|s| s >= upto) {
        return Ok(Vec::new());
    }
    let changed = presence.store.changed(since, upto).await?;
    let candidates: Vec<String> = changed
        .iter()
        .map(|(u, _)| u.clone())
        .filter(|u| super::filter::presence_wanted(filter, u))
        .collect();
    let visible: HashSet<String> = server
        .db
        .users_sharing_a_room_among(user.as_str(), &candidates)
        .await?
        .into_iter()
        .chain([user.to_string()])
        .collect();
    let now = crate::now_ms();
    let limit = filter.limit.map_or(usize::MAX, |l| u64::from(l) as usize);
    let events = changed
        .iter()
        .filter(|(u, _)| visible.contains(u) && candidates.contains(u))
        .take(limit)
        .map(|(u, r)| presence_event(u, r, now))
        .collect::<Result<_>>()?;
    Ok(events)
}

fn presence_event(
    user: &str,
    record: &Record,
    now: i64,
) -> Result<Raw<ruma::events::presence::PresenceEvent>> {
    let mut content = json!({
        "presence": record.state,
        "currently_active": record.currently_active,
    });
    if record.last_active_ts > 0 {
        content["last_active_ago"] = json!((now - record.last_active_ts).max(0));
    }
    if let Some(msg) = &record.status_msg {
        content["status_msg"] = json!(msg);
    }
    let event = json!({ "type": "m.presence", "sender": user, "content": content });
    Ok(Raw::from_json(serde_json::value::to_raw_value(&event)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PresenceConfig {
        PresenceConfig {
            enabled: true,
            idle_after_ms: 300_000,
            offline_after_ms: 60_000,
        }
    }

    fn online_at(t: i64) -> Record {
        Record {
            state: "online".into(),
            status_msg: None,
            last_active_ts: t,
            last_seen_ts: t,
            currently_active: true,
        }
    }

    #[test]
    fn timeouts() {
        let mut r = online_at(0);
        apply_timeouts(&mut r, &config(), 30_000);
        assert_eq!(r, online_at(0));
        apply_timeouts(&mut r, &config(), 61_000);
        assert_eq!((r.state.as_str(), r.currently_active), ("offline", false));

        let mut r = online_at(0);
        r.last_seen_ts = 400_000;
        apply_timeouts(&mut r, &config(), 400_000);
        assert_eq!(
            (r.state.as_str(), r.currently_active),
            ("unavailable", false)
        );
    }
}

//! In-memory copies of what hot paths read again and again: the full states
//! of recently read state groups, access tokens' owners (and, in the push
//! service, rooms' push contexts).
//!
//! A state group's entries never change, so a group is read as its nearest
//! cached ancestor plus the deltas below it: the first `/sync` of each user
//! who joins a big room reads only the few joins since the last one instead
//! of the room's whole state. The events in a state can still be redacted,
//! and tokens revoked: a redaction or a revocation committed by this process
//! empties its cache, and an entry older than the cache's time to live is
//! not used, which bounds how long a change made by another process (another
//! server process, the admin command) goes unseen.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::{accounts::TokenOwner, events::StoredEvent};

/// A room's state: the event at each `(type, state_key)`.
pub type GroupState = HashMap<(String, Option<String>), Arc<StoredEvent>>;

/// Full states by state group.
pub type StateCache = ReadCache<i64, Arc<GroupState>>;

/// Token owners by token hash.
pub type TokenCache = ReadCache<String, TokenOwner>;

pub fn state_cache() -> StateCache {
    ReadCache::new(8, Duration::from_secs(5))
}

/// Short-lived: a token revoked by another process keeps working here for
/// at most this long.
pub fn token_cache() -> TokenCache {
    ReadCache::new(10_000, Duration::from_secs(2))
}

pub struct ReadCache<K, V> {
    entries: Mutex<HashMap<K, Entry<V>>>,
    capacity: usize,
    ttl: Duration,
    /// Moves whenever the cache is emptied: a value read from the database
    /// while it moved may be the one the change replaced, so it is not kept.
    generation: AtomicU64,
}

struct Entry<V> {
    read_at: Instant,
    value: V,
    /// A caller was told to read it again ([`ReadCache::get_refreshing`]).
    refreshing: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> ReadCache<K, V> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            capacity,
            ttl,
            generation: AtomicU64::new(0),
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = self.entries.lock().expect("read cache lock");
        let entry = entries.get(key)?;
        (entry.read_at.elapsed() < self.ttl).then(|| entry.value.clone())
    }

    /// Like [`ReadCache::get`], and whether the caller should read the value
    /// again (and insert it) in the background: once an entry is past half
    /// its time to live, the first caller to ask is told. A value in steady
    /// use is then renewed before it expires instead of being read again in
    /// some request's path, and is still never older than the time to live.
    pub fn get_refreshing<Q>(&self, key: &Q) -> Option<(V, bool)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.entries.lock().expect("read cache lock");
        let entry = entries.get_mut(key)?;
        let age = entry.read_at.elapsed();
        if age >= self.ttl {
            return None;
        }
        let refresh = age >= self.ttl / 2 && !entry.refreshing;
        entry.refreshing |= refresh;
        Some((entry.value.clone(), refresh))
    }

    /// The keys of the live entries.
    pub fn live_keys(&self) -> Vec<K> {
        let entries = self.entries.lock().expect("read cache lock");
        entries
            .iter()
            .filter(|(_, e)| e.read_at.elapsed() < self.ttl)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Taken before reading what will be inserted, and handed to
    /// [`ReadCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Keeps `value` unless the cache was emptied since `generation`.
    pub fn insert(&self, key: K, value: V, generation: u64) {
        let mut entries = self.entries.lock().expect("read cache lock");
        if self.generation() != generation {
            return;
        }
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, e| e.read_at.elapsed() < ttl);
        }
        if entries.len() >= self.capacity
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.read_at)
                .map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        let entry = Entry {
            read_at: Instant::now(),
            value,
            refreshing: false,
        };
        entries.insert(key, entry);
    }

    /// Replaces a live entry's value by `change(value)`, keeping its age (so
    /// it still expires); a read that overlapped the change is not kept.
    pub fn modify<Q>(&self, key: &Q, change: impl FnOnce(&V) -> V)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.entries.lock().expect("read cache lock");
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(entry) = entries.get_mut(key)
            && entry.read_at.elapsed() < self.ttl
        {
            entry.value = change(&entry.value);
        }
    }

    /// `key`'s value may have changed: forget it.
    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.entries.lock().expect("read cache lock");
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.remove(key);
    }

    /// What is cached may have changed: forget all of it.
    pub fn clear(&self) {
        let mut entries = self.entries.lock().expect("read cache lock");
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_overlapped_a_clear_is_not_kept() {
        let cache = ReadCache::new(4, Duration::from_secs(5));
        cache.insert(1, "a", cache.generation());
        assert_eq!(cache.get(&1), Some("a"));
        let started = cache.generation();
        cache.clear();
        assert_eq!(cache.get(&1), None);
        cache.insert(2, "b", started);
        assert_eq!(cache.get(&2), None);
        cache.insert(2, "b", cache.generation());
        assert_eq!(cache.get(&2), Some("b"));
    }

    #[test]
    fn one_caller_is_told_to_renew_an_entry_past_half_its_life() {
        let cache = ReadCache::new(4, Duration::from_millis(200));
        cache.insert(1, "a", cache.generation());
        assert_eq!(cache.get_refreshing(&1), Some(("a", false)));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(cache.get_refreshing(&1), Some(("a", true)));
        assert_eq!(cache.get_refreshing(&1), Some(("a", false)));
        cache.insert(1, "b", cache.generation());
        assert_eq!(cache.get_refreshing(&1), Some(("b", false)));
        std::thread::sleep(Duration::from_millis(220));
        assert_eq!(cache.get_refreshing(&1), None);
    }

    #[test]
    fn the_oldest_entry_makes_room() {
        let cache = ReadCache::new(2, Duration::from_secs(5));
        for key in 0..3 {
            cache.insert(key, key, cache.generation());
        }
        assert_eq!(cache.get(&0), None);
        assert_eq!((cache.get(&1), cache.get(&2)), (Some(1), Some(2)));
    }

    #[test]
    fn changes_keep_the_age_and_stop_overlapping_reads() {
        let cache = ReadCache::new(4, Duration::from_secs(5));
        cache.insert(1, 10, cache.generation());
        let started = cache.generation();
        cache.modify(&1, |v| v + 1);
        assert_eq!(cache.get(&1), Some(11));
        cache.insert(2, 20, started);
        assert_eq!(cache.get(&2), None);
        cache.remove(&1);
        assert_eq!(cache.get(&1), None);
    }

    #[test]
    fn entries_expire() {
        let cache = ReadCache::new(2, Duration::ZERO);
        cache.insert(1, 1, cache.generation());
        assert_eq!(cache.get(&1), None);
    }
}

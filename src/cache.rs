//! Small in-process helpers: short-lived copies of what hot paths read again
//! and again (state groups and access tokens in the store; per-user settings
//! kept in account data, such as push rules and ignored users; rooms' push
//! contexts; other servers' signing keys), and per-key locks.
//!
//! A copy is never used older than its cache's time to live: the process
//! that changes what a value was read from updates or drops its entry at
//! once, and a change made by another process (another server process, the
//! admin command) is seen here within that time. Expired entries are swept
//! out as new ones come in, so a cache holds about what was read within its
//! time to live, not everything it was ever asked for.

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

pub struct ReadCache<K, V> {
    entries: Mutex<Entries<K, V>>,
    capacity: usize,
    ttl: Duration,
    /// Moves whenever an entry is changed or dropped: a value read from the
    /// database while it moved may be the one the change replaced, so it is
    /// not kept.
    generation: AtomicU64,
}

struct Entries<K, V> {
    map: HashMap<K, Entry<V>>,
    /// When expired entries were last dropped.
    swept_at: Instant,
}

struct Entry<V> {
    read_at: Instant,
    value: V,
    /// A caller was told to read it again ([`ReadCache::get_refreshing`]).
    refreshing: bool,
}

/// The usual cache: copies per user, room or server, each used for at most
/// five seconds, up to 100,000 of them.
impl<K: Hash + Eq + Clone, V: Clone> Default for ReadCache<K, V> {
    fn default() -> Self {
        Self::new(100_000, Duration::from_secs(5))
    }
}

impl<K: Hash + Eq + Clone, V: Clone> ReadCache<K, V> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                swept_at: Instant::now(),
            }),
            capacity,
            ttl,
            generation: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<K, V>> {
        self.entries.lock().expect("read cache lock")
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = self.lock();
        let entry = entries.map.get(key)?;
        (entry.read_at.elapsed() < self.ttl).then(|| entry.value.clone())
    }

    /// The live values of `keys`, in order, under one hold of the lock.
    pub fn get_many<Q>(&self, keys: &[&Q]) -> Vec<Option<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = self.lock();
        let now = Instant::now();
        keys.iter()
            .map(|key| {
                let entry = entries.map.get(*key)?;
                (now.duration_since(entry.read_at) < self.ttl).then(|| entry.value.clone())
            })
            .collect()
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
        let mut entries = self.lock();
        let entry = entries.map.get_mut(key)?;
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
        let entries = self.lock();
        entries
            .map
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

    /// Keeps `value`, read from the database, unless an entry was changed
    /// or dropped since `generation`.
    pub fn insert(&self, key: K, value: V, generation: u64) {
        let mut entries = self.lock();
        if self.generation() == generation {
            self.keep(&mut entries, key, value);
        }
    }

    /// This process changed what `key`'s value is read from: keeps `value`
    /// as its copy, and stops reads that overlapped the change.
    pub fn replace(&self, key: K, value: V) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.keep(&mut entries, key, value);
    }

    fn keep(&self, entries: &mut Entries<K, V>, key: K, value: V) {
        let now = Instant::now();
        if entries.map.len() >= self.capacity || now.duration_since(entries.swept_at) >= self.ttl {
            let ttl = self.ttl;
            entries
                .map
                .retain(|_, e| now.duration_since(e.read_at) < ttl);
            entries.swept_at = now;
        }
        if entries.map.len() >= self.capacity
            && let Some(oldest) = entries
                .map
                .iter()
                .min_by_key(|(_, e)| e.read_at)
                .map(|(k, _)| k.clone())
        {
            entries.map.remove(&oldest);
        }
        let entry = Entry {
            read_at: now,
            value,
            refreshing: false,
        };
        entries.map.insert(key, entry);
    }

    /// Replaces a live entry's value by `change(value)`, keeping its age (so
    /// it still expires); a read that overlapped the change is not kept.
    pub fn modify<Q>(&self, key: &Q, change: impl FnOnce(&V) -> V)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(entry) = entries.map.get_mut(key)
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
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.map.remove(key);
    }

    /// What is cached may have changed: forget all of it.
    pub fn clear(&self) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.map.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

/// One async mutex per key (a room, a server), made on first use and
/// forgotten once nobody holds or waits for it.
#[derive(Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().expect("keyed locks");
            if locks.len() > 1024 {
                locks.retain(|_, weak| weak.strong_count() > 0);
            }
            match locks.get(key).and_then(std::sync::Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
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
    fn get_many_answers_in_the_order_asked() {
        let cache = ReadCache::new(4, Duration::from_secs(5));
        cache.insert("b".to_owned(), 2, cache.generation());
        cache.insert("a".to_owned(), 1, cache.generation());
        assert_eq!(
            cache.get_many(&["a", "missing", "b"]),
            [Some(1), None, Some(2)]
        );
    }

    #[test]
    fn a_replaced_value_wins_over_a_read_that_overlapped_it() {
        let cache = ReadCache::new(4, Duration::from_secs(5));
        let started = cache.generation();
        cache.replace(1, "new");
        cache.insert(1, "read before the change", started);
        assert_eq!(cache.get(&1), Some("new"));
    }

    #[test]
    fn expired_entries_are_swept_out_as_new_ones_come_in() {
        let cache = ReadCache::new(100, Duration::from_millis(50));
        for key in 0..10 {
            cache.insert(key, key, cache.generation());
        }
        std::thread::sleep(Duration::from_millis(60));
        cache.insert(10, 10, cache.generation());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn entries_expire() {
        let cache = ReadCache::new(2, Duration::ZERO);
        cache.insert(1, 1, cache.generation());
        assert_eq!(cache.get(&1), None);
    }
}

//! Small in-process helpers: short-lived caches of what is read on hot
//! paths (per-user settings kept in account data such as push rules and
//! ignored users; other servers' signing keys), and per-key locks.
//!
//! A cache entry lives a few seconds: the process that changes a setting
//! updates its own entry at once, and a change made through another server
//! process is seen here within [`TtlCache::TTL`].

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::OwnedUserId;

pub struct TtlCache<V, K = OwnedUserId> {
    entries: Mutex<HashMap<K, (Instant, Arc<V>)>>,
}

impl<V, K> Default for TtlCache<V, K> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<V, K: Hash + Eq> TtlCache<V, K> {
    pub const TTL: Duration = Duration::from_secs(5);
    const CAPACITY: usize = 100_000;

    pub fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = self.entries.lock().expect("cache lock");
        let (at, value) = entries.get(key)?;
        (at.elapsed() < Self::TTL).then(|| value.clone())
    }

    /// The live values of `keys`, in order, under one hold of the lock.
    pub fn get_many<Q>(&self, keys: &[&Q]) -> Vec<Option<Arc<V>>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = self.entries.lock().expect("cache lock");
        let now = Instant::now();
        keys.iter()
            .map(|key| {
                let (at, value) = entries.get(*key)?;
                (now.duration_since(*at) < Self::TTL).then(|| value.clone())
            })
            .collect()
    }

    pub fn insert<Q>(&self, key: &Q, value: Arc<V>)
    where
        Q: ToOwned<Owned = K> + ?Sized,
    {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= Self::CAPACITY {
            entries.retain(|_, (at, _)| at.elapsed() < Self::TTL);
        }
        entries.insert(key.to_owned(), (Instant::now(), value));
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
    fn get_many_answers_in_the_order_asked() {
        let cache: TtlCache<u32, String> = TtlCache::default();
        cache.insert("b", Arc::new(2));
        cache.insert("a", Arc::new(1));
        let found = cache.get_many(&["a", "missing", "b"]);
        let found: Vec<Option<u32>> = found.into_iter().map(|v| v.map(|v| *v)).collect();
        assert_eq!(found, [Some(1), None, Some(2)]);
    }
}

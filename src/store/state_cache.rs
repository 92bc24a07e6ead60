//! The full states of recently read state groups, kept in memory.
//!
//! A group's entries never change, so a group is read as its nearest cached
//! ancestor plus the deltas below it: the first `/sync` of each user who
//! joins a big room reads only the few joins since the last one instead of
//! the room's whole state. The events in a state can still be redacted: a
//! redaction committed by this process empties the cache, and an entry
//! older than [`StateCache::TTL`] is not used, which bounds how long a
//! redaction stored by another process goes unseen.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::events::StoredEvent;

/// A room's state: the event at each `(type, state_key)`.
pub type GroupState = HashMap<(String, Option<String>), Arc<StoredEvent>>;

#[derive(Default)]
pub struct StateCache {
    groups: Mutex<HashMap<i64, (Instant, Arc<GroupState>)>>,
    /// Moves whenever the cache is emptied: a state read while it moved may
    /// hold an event as it was before a redaction, so it is not kept.
    generation: AtomicU64,
}

impl StateCache {
    pub const TTL: Duration = Duration::from_secs(5);
    const CAPACITY: usize = 32;

    pub fn get(&self, group: i64) -> Option<Arc<GroupState>> {
        let groups = self.groups.lock().expect("state cache lock");
        let (at, state) = groups.get(&group)?;
        (at.elapsed() < Self::TTL).then(|| state.clone())
    }

    /// Where a read starts: the value to hand back to [`StateCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Keeps `state` unless the cache was emptied since `generation`.
    pub fn insert(&self, group: i64, state: Arc<GroupState>, generation: u64) {
        let mut groups = self.groups.lock().expect("state cache lock");
        if self.generation() != generation {
            return;
        }
        if groups.len() >= Self::CAPACITY {
            groups.retain(|_, (at, _)| at.elapsed() < Self::TTL);
        }
        if groups.len() >= Self::CAPACITY
            && let Some(oldest) = groups
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(g, _)| *g)
        {
            groups.remove(&oldest);
        }
        groups.insert(group, (Instant::now(), state));
    }

    /// Events were redacted or replaced: no cached state can be trusted.
    pub fn clear(&self) {
        let mut groups = self.groups.lock().expect("state cache lock");
        self.generation.fetch_add(1, Ordering::SeqCst);
        groups.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_overlapped_a_clear_is_not_kept() {
        let cache = StateCache::default();
        let before = cache.generation();
        cache.insert(1, Arc::default(), before);
        assert!(cache.get(1).is_some());
        let started = cache.generation();
        cache.clear();
        assert!(cache.get(1).is_none());
        cache.insert(2, Arc::default(), started);
        assert!(cache.get(2).is_none());
        cache.insert(2, Arc::default(), cache.generation());
        assert!(cache.get(2).is_some());
    }

    #[test]
    fn the_oldest_group_makes_room() {
        let cache = StateCache::default();
        for group in 0..=StateCache::CAPACITY as i64 {
            cache.insert(group, Arc::default(), cache.generation());
        }
        assert!(cache.get(0).is_none());
        assert!(cache.get(StateCache::CAPACITY as i64).is_some());
    }
}

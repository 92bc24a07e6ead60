//! Presence kept in this process: the default, for a single server process.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use super::Record;

pub struct MemoryStore {
    inner: Mutex<Inner>,
}

struct Inner {
    /// User → (record, position of its latest announcement).
    records: HashMap<String, (Record, i64)>,
    /// Position → user, one entry per user: the latest announcement.
    changes: BTreeMap<i64, String>,
    /// Starts at the Unix time in milliseconds, so positions keep growing
    /// across restarts and an old sync token never hides a newer change.
    position: i64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                records: HashMap::new(),
                changes: BTreeMap::new(),
                position: crate::now_ms(),
            }),
        }
    }
}

impl MemoryStore {
    pub fn get(&self, user: &str) -> Option<Record> {
        let inner = self.inner.lock().expect("presence lock");
        inner.records.get(user).map(|(r, _)| r.clone())
    }

    pub fn put(&self, user: &str, record: &Record, announce: bool) {
        let mut inner = self.inner.lock().expect("presence lock");
        let old_pos = inner.records.get(user).map(|(_, p)| *p);
        let pos = match (announce, old_pos) {
            (false, Some(pos)) => pos,
            _ => {
                inner.position += 1;
                let pos = inner.position;
                if let Some(old) = old_pos {
                    inner.changes.remove(&old);
                }
                inner.changes.insert(pos, user.to_owned());
                pos
            }
        };
        inner.records.insert(user.to_owned(), (record.clone(), pos));
    }

    pub fn position(&self) -> i64 {
        self.inner.lock().expect("presence lock").position
    }

    pub fn changed(&self, since: Option<i64>, upto: i64) -> Vec<(String, Record)> {
        let inner = self.inner.lock().expect("presence lock");
        let from = since.map_or(i64::MIN, |s| s + 1);
        inner
            .changes
            .range(from..=upto)
            .filter_map(|(_, user)| Some((user.clone(), inner.records.get(user)?.0.clone())))
            .collect()
    }

    pub fn not_offline(&self) -> Vec<(String, Record)> {
        let inner = self.inner.lock().expect("presence lock");
        inner
            .records
            .iter()
            .filter(|(_, (r, _))| r.state != "offline")
            .map(|(u, (r, _))| (u.clone(), r.clone()))
            .collect()
    }
}

//! What the recently committed stream positions hold, by kind, so that an
//! incremental sync reads only the kinds of items that moved since its
//! token (a message wakes syncs that then need its room's timeline, not
//! every account-data, to-device and device-list table).
//!
//! Commits come in position order on both backends: SQLite's writers are
//! serialized, and on PostgreSQL a transaction holds the counter row's lock
//! from taking its positions until it commits (a rolled-back one gives them
//! back). Each commit of this process describes its own positions. When a
//! commit does not start where the last one ended, someone else took
//! positions in between (another server process on the same PostgreSQL
//! database, the admin command line): what they hold is unknown, and the
//! journal forgets everything before. So does a commit whose description
//! reaches the journal after a later one's (two tasks of this process). A
//! sync whose range the journal does not describe reads everything.

use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
};

/// What a write transaction (or a range of them) put on the stream, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Rooms with new events that timelines show.
    pub timeline_rooms: HashSet<String>,
    /// Whether a membership changed in any room.
    pub memberships: bool,
    pub receipt_rooms: HashSet<String>,
    /// Users with new account data (global or per room).
    pub account_data_users: HashSet<String>,
    /// Users with new to-device messages.
    pub to_device_users: HashSet<String>,
    /// Whether any device list or cross-signing key changed.
    pub device_lists: bool,
    /// Rooms whose head changed: forward extremities, current state or
    /// state group (what the event writer keeps between its transactions).
    pub head_rooms: HashSet<String>,
}

impl Changes {
    fn absorb(&mut self, other: &Changes) {
        self.timeline_rooms
            .extend(other.timeline_rooms.iter().cloned());
        self.memberships |= other.memberships;
        self.receipt_rooms
            .extend(other.receipt_rooms.iter().cloned());
        self.account_data_users
            .extend(other.account_data_users.iter().cloned());
        self.to_device_users
            .extend(other.to_device_users.iter().cloned());
        self.device_lists |= other.device_lists;
        self.head_rooms.extend(other.head_rooms.iter().cloned());
    }
}

/// A stream item a write transaction takes a position for, with what a
/// sync needs to know of it. Events are described when they are written
/// (their placement decides whether timelines show them), the rest here.
pub enum StreamItem<'a> {
    Event,
    Receipt {
        room_id: &'a str,
    },
    AccountData {
        user_id: &'a str,
    },
    ToDevice {
        user_id: &'a str,
    },
    DeviceList,
    /// Positions used as ids, which no sync reads: state groups, the
    /// federation queue's EDUs.
    Internal,
}

impl Changes {
    pub(super) fn record(&mut self, item: &StreamItem<'_>) {
        match item {
            StreamItem::Receipt { room_id } => {
                self.receipt_rooms.insert((*room_id).to_owned());
            }
            StreamItem::AccountData { user_id } => {
                self.account_data_users.insert((*user_id).to_owned());
            }
            StreamItem::ToDevice { user_id } => {
                self.to_device_users.insert((*user_id).to_owned());
            }
            StreamItem::DeviceList => self.device_lists = true,
            StreamItem::Event | StreamItem::Internal => {}
        }
    }

    /// An event written to `room_id` (`in_timeline`: one timelines show).
    pub(super) fn record_event(&mut self, room_id: &str, event_type: &str, in_timeline: bool) {
        if in_timeline && !self.timeline_rooms.contains(room_id) {
            self.timeline_rooms.insert(room_id.to_owned());
        }
        self.memberships |= event_type == "m.room.member";
        self.record_head_change(room_id);
    }

    pub(super) fn record_head_change(&mut self, room_id: &str) {
        if !self.head_rooms.contains(room_id) {
            self.head_rooms.insert(room_id.to_owned());
        }
    }
}

/// Commits kept; a sync further behind than this reads everything.
const CAPACITY: usize = 1024;

#[derive(Default)]
pub struct Journal {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Positions above this one are described, up to `last`; `None` before
    /// the first commit.
    known: Option<Known>,
    /// Each commit's positions (first, last) and changes, oldest first.
    commits: VecDeque<(i64, i64, Changes)>,
}

#[derive(Clone, Copy)]
struct Known {
    after: i64,
    last: i64,
}

impl Journal {
    /// A transaction that took the positions `first..=last` committed.
    /// Called before the position is published, so a sync that sees it
    /// finds its changes here.
    pub fn committed(&self, first: i64, last: i64, changes: Changes) {
        let mut inner = self.inner.lock().expect("journal lock");
        let contiguous = inner.known.is_some_and(|k| k.last + 1 == first);
        if !contiguous {
            inner.commits.clear();
            inner.known = Some(Known {
                after: first - 1,
                last,
            });
        }
        if inner.commits.len() == CAPACITY
            && let Some((_, dropped, _)) = inner.commits.pop_front()
            && let Some(known) = inner.known.as_mut()
        {
            known.after = dropped;
        }
        if let Some(known) = inner.known.as_mut() {
            known.last = last;
        }
        inner.commits.push_back((first, last, changes));
    }

    /// Everything committed in `(since, upto]`; `None` when the journal does
    /// not describe all of it.
    pub fn changes_between(&self, since: i64, upto: i64) -> Option<Changes> {
        let inner = self.inner.lock().expect("journal lock");
        let known = inner.known?;
        if since < known.after || upto > known.last {
            return None;
        }
        let mut changes = Changes::default();
        for (_, _, commit) in inner
            .commits
            .iter()
            .rev()
            .take_while(|(_, last, _)| *last > since)
            .filter(|(first, _, _)| *first <= upto)
        {
            changes.absorb(commit);
        }
        Some(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt_in(room: &str) -> Changes {
        let mut changes = Changes::default();
        changes.record(&StreamItem::Receipt { room_id: room });
        changes
    }

    #[test]
    fn a_range_gets_the_changes_of_the_commits_in_it() {
        let journal = Journal::default();
        journal.committed(11, 11, receipt_in("!a"));
        journal.committed(12, 14, receipt_in("!b"));
        journal.committed(15, 15, receipt_in("!c"));
        let rooms = |since, upto| {
            let mut rooms: Vec<String> = journal
                .changes_between(since, upto)
                .unwrap()
                .receipt_rooms
                .into_iter()
                .collect();
            rooms.sort();
            rooms
        };
        assert_eq!(rooms(10, 15), ["!a", "!b", "!c"]);
        assert_eq!(rooms(11, 14), ["!b"]);
        assert_eq!(rooms(13, 15), ["!b", "!c"]);
        assert_eq!(rooms(15, 15), Vec::<String>::new());
    }

    #[test]
    fn positions_it_did_not_see_are_unknown() {
        let journal = Journal::default();
        assert_eq!(journal.changes_between(0, 0), None);
        journal.committed(11, 11, receipt_in("!a"));
        // Before its first commit, and past its last.
        assert_eq!(journal.changes_between(9, 11), None);
        assert_eq!(journal.changes_between(10, 12), None);
        // Another process took 12..=13: what they hold is not known.
        journal.committed(14, 14, receipt_in("!b"));
        assert_eq!(journal.changes_between(10, 14), None);
        assert_eq!(journal.changes_between(11, 14), None);
        assert!(journal.changes_between(13, 14).is_some());
    }

    #[test]
    fn the_oldest_commits_are_forgotten_first() {
        let journal = Journal::default();
        for pos in 1..=CAPACITY as i64 + 1 {
            journal.committed(pos, pos, Changes::default());
        }
        assert_eq!(journal.changes_between(0, 2), None);
        assert!(journal.changes_between(1, 2).is_some());
    }
}

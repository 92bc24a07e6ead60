//! Who may see which events: spec client-server API, "History visibility".
//!
//! Both inputs are histories of one state entry, read once per request: the
//! user's memberships and the room's `m.room.history_visibility`. The value in
//! force for an event is the newest one before it.

use ruma::{RoomId, UserId};

use crate::{Result, Server, store::events::StoredEvent};

/// The visibility of rooms that never set one (spec: "shared" is the default).
const DEFAULT_VISIBILITY: &str = "shared";

pub struct Viewer {
    /// `(stream_ordering, membership)` of the user's member events, oldest first.
    memberships: Vec<(i64, String)>,
    /// `(stream_ordering, history_visibility)` of the room, oldest first.
    visibilities: Vec<(i64, String)>,
}

impl Viewer {
    pub async fn load(server: &Server, room_id: &RoomId, user: &UserId) -> Result<Self> {
        let entries = [
            ("m.room.member", user.as_str(), "membership"),
            ("m.room.history_visibility", "", "history_visibility"),
        ];
        let mut histories = server
            .db
            .state_histories(room_id.as_str(), &entries)
            .await?
            .into_iter();
        Ok(Self {
            memberships: histories.next().unwrap_or_default(),
            visibilities: histories.next().unwrap_or_default(),
        })
    }

    /// Whether the user has ever been joined (or invited) here.
    pub fn ever_member(&self) -> bool {
        self.memberships
            .iter()
            .any(|(_, m)| m == "join" || m == "invite")
    }

    pub fn is_joined(&self) -> bool {
        self.memberships.last().is_some_and(|(_, m)| m == "join")
    }

    /// World-readable rooms show their history to anyone.
    pub fn can_see_anything(&self) -> bool {
        self.visibilities
            .last()
            .is_some_and(|(_, v)| v == "world_readable")
    }

    /// The value in force just before position `pos` (an event's own state
    /// change applies to the events after it).
    fn before(history: &[(i64, String)], pos: i64) -> Option<&str> {
        history
            .iter()
            .rev()
            .find(|(p, _)| *p < pos)
            .map(|(_, v)| v.as_str())
    }

    /// The last position the user may see: where they left, or everything.
    pub fn visible_upto(&self) -> i64 {
        match self.memberships.last() {
            Some((pos, m)) if m == "leave" || m == "ban" => *pos,
            _ => i64::MAX,
        }
    }

    pub fn can_see(&self, event: &StoredEvent) -> bool {
        let pos = event.stream_ordering;
        if pos > self.visible_upto() {
            return false;
        }
        // The user's own membership events are always theirs to see.
        if self.memberships.iter().any(|(p, _)| *p == pos) {
            return true;
        }
        let visibility = Self::before(&self.visibilities, pos).unwrap_or(DEFAULT_VISIBILITY);
        if visibility == "world_readable" {
            return true;
        }
        match Self::before(&self.memberships, pos) {
            Some("join") => true,
            Some("invite") => visibility == "invited" || visibility == "shared",
            _ => {
                visibility == "shared"
                    && self
                        .memberships
                        .iter()
                        .any(|(p, m)| *p > pos && m == "join")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_at(pos: i64) -> StoredEvent {
        StoredEvent {
            stream_ordering: pos,
            event_id: format!("$e{pos}"),
            room_id: "!r:x".into(),
            event_type: "m.room.message".into(),
            state_key: None,
            sender: "@a:x".into(),
            pdu: "{}".into(),
            unsigned_extra: None,
            txn_device_id: None,
            txn_id: None,
            redacted_by: None,
            state_group_before: None,
            related: None,
        }
    }

    fn viewer(memberships: &[(i64, &str)], visibilities: &[(i64, &str)]) -> Viewer {
        let own = |v: &[(i64, &str)]| v.iter().map(|(p, s)| (*p, s.to_string())).collect();
        Viewer {
            memberships: own(memberships),
            visibilities: own(visibilities),
        }
    }

    #[test]
    fn shared_history_is_visible_to_later_members() {
        let v = viewer(&[(10, "join")], &[(2, "shared")]);
        assert!(v.can_see(&event_at(5)));
        assert!(v.can_see(&event_at(11)));
    }

    #[test]
    fn joined_visibility_hides_what_came_before_the_join() {
        let v = viewer(&[(10, "join")], &[(2, "joined")]);
        assert!(!v.can_see(&event_at(5)));
        assert!(v.can_see(&event_at(11)));
    }

    #[test]
    fn the_value_in_force_at_the_event_decides() {
        // Shared until 20, joined after: a user joining at 30 sees 15 but not 25.
        let v = viewer(&[(30, "join")], &[(2, "shared"), (20, "joined")]);
        assert!(v.can_see(&event_at(15)));
        assert!(!v.can_see(&event_at(25)));
    }

    #[test]
    fn leaving_ends_what_is_visible() {
        let v = viewer(&[(10, "join"), (20, "leave")], &[(2, "shared")]);
        assert!(v.can_see(&event_at(15)));
        assert!(v.can_see(&event_at(20)));
        assert!(!v.can_see(&event_at(21)));
    }

    #[test]
    fn world_readable_rooms_are_open_to_all() {
        let v = viewer(&[], &[(2, "world_readable")]);
        assert!(v.can_see_anything());
        assert!(v.can_see(&event_at(5)));
    }
}

//! Who may see which events: spec client-server API, "History visibility".
//!
//! The check uses the user's membership history in the room and the room's
//! current `m.room.history_visibility`; the value in force when each event
//! was sent would be more exact, and matters only for rooms that changed it.

use ruma::{RoomId, UserId};

use crate::{Result, Server, store::events::StoredEvent};

pub struct Viewer {
    /// `(stream_ordering, membership)` of the user's member events, oldest first.
    history: Vec<(i64, String)>,
    visibility: String,
}

impl Viewer {
    pub async fn load(server: &Server, room_id: &RoomId, user: &UserId) -> Result<Self> {
        let history = server
            .db
            .membership_history(room_id.as_str(), user.as_str())
            .await?;
        let visibility = server
            .db
            .current_state_event(room_id.as_str(), "m.room.history_visibility", "")
            .await?
            .and_then(|e| serde_json::from_str::<serde_json::Value>(&e.pdu).ok())
            .and_then(|v| {
                v["content"]["history_visibility"]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "shared".to_owned());
        Ok(Self {
            history,
            visibility,
        })
    }

    /// Whether the user has ever been joined (or invited) here.
    pub fn ever_member(&self) -> bool {
        self.history
            .iter()
            .any(|(_, m)| m == "join" || m == "invite")
    }

    /// World-readable rooms show their history to anyone.
    pub fn can_see_anything(&self) -> bool {
        self.visibility == "world_readable"
    }

    pub fn is_joined(&self) -> bool {
        self.history.last().is_some_and(|(_, m)| m == "join")
    }

    fn membership_at(&self, pos: i64) -> Option<&str> {
        self.history
            .iter()
            .rev()
            .find(|(p, _)| *p <= pos)
            .map(|(_, m)| m.as_str())
    }

    /// The last position the user may see: where they left, or everything.
    pub fn visible_upto(&self) -> i64 {
        match self.history.last() {
            Some((pos, m)) if m == "leave" || m == "ban" => *pos,
            _ => i64::MAX,
        }
    }

    pub fn can_see(&self, event: &StoredEvent) -> bool {
        if event.stream_ordering > self.visible_upto() {
            return false;
        }
        if self.visibility == "world_readable" {
            return true;
        }
        match self.membership_at(event.stream_ordering) {
            Some("join") => true,
            Some("invite") => self.visibility != "joined",
            _ => self.visibility == "shared" && self.ever_joined_after(event.stream_ordering),
        }
    }

    fn ever_joined_after(&self, pos: i64) -> bool {
        self.history.iter().any(|(p, m)| *p > pos && m == "join")
    }
}

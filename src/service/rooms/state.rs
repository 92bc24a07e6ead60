//! Reading room state: `/state`, `/members`, `/joined_members`.

use std::collections::BTreeMap;

use ruma::{RoomId, UserId};
use serde_json::Value;

use super::{
    events::{ClientEvent, Format, format_events},
    visibility::Viewer,
};
use crate::{Error, Result, Server, store::events::StoredEvent};

/// The state a user may read: current state while joined, the state when
/// they left otherwise (or current state in a world-readable room).
pub async fn visible_state(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
) -> Result<Vec<StoredEvent>> {
    super::require_room(server, room_id).await?;
    let viewer = Viewer::load(server, room_id, user).await?;
    if viewer.is_joined() || world_readable(server, room_id).await? {
        return server.db.current_state_events(room_id.as_str()).await;
    }
    let Some((membership, _)) = server
        .db
        .membership(room_id.as_str(), user.as_str())
        .await?
    else {
        return Err(Error::forbidden("You are not in this room"));
    };
    if membership != "leave" && membership != "ban" || !viewer.ever_member() {
        return Err(Error::forbidden("You are not in this room"));
    }
    let member_event = server
        .db
        .current_state_event(room_id.as_str(), "m.room.member", user.as_str())
        .await?
        .ok_or_else(|| Error::forbidden("You are not in this room"))?;
    server.db.state_events_after(&member_event).await
}

async fn world_readable(server: &Server, room_id: &RoomId) -> Result<bool> {
    Ok(server
        .db
        .current_state_event(room_id.as_str(), "m.room.history_visibility", "")
        .await?
        .is_some_and(|e| e.pdu.contains("\"world_readable\"")))
}

pub async fn state_events(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
) -> Result<Vec<ClientEvent>> {
    let state = visible_state(server, room_id, user).await?;
    format_events(server, &state, None, Format::Client).await
}

/// The content of one state event.
pub async fn state_content(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
    event_type: &str,
    state_key: &str,
) -> Result<Value> {
    let state = visible_state(server, room_id, user).await?;
    let event = state
        .iter()
        .find(|e| e.event_type == event_type && e.state_key.as_deref() == Some(state_key))
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let formatted =
        format_events(server, std::slice::from_ref(event), None, Format::Client).await?;
    let Some(event) = formatted.into_iter().next() else {
        return Ok(Value::Null);
    };
    Ok(serde_json::from_str::<Value>(event.get())?["content"].take())
}

/// `m.room.member` events, optionally at an earlier point (`at`, a position) and filtered by membership.
pub async fn members(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
    at: Option<i64>,
    membership: Option<&str>,
    not_membership: Option<&str>,
) -> Result<Vec<ClientEvent>> {
    let mut state = visible_state(server, room_id, user).await?;
    if let Some(pos) = at {
        let earlier = server
            .db
            .room_events_desc(room_id.as_str(), 0, pos, 1)
            .await?;
        if let Some(last) = earlier.first() {
            state = server.db.state_events_after(last).await?;
        }
    }
    let members: Vec<StoredEvent> = state
        .into_iter()
        .filter(|e| e.event_type == "m.room.member")
        .filter(|e| {
            let m = membership_of(e);
            membership.is_none_or(|want| m == want) && not_membership.is_none_or(|not| m != not)
        })
        .collect();
    format_events(server, &members, None, Format::Client).await
}

fn membership_of(event: &StoredEvent) -> String {
    serde_json::from_str::<Value>(&event.pdu)
        .ok()
        .and_then(|v| v["content"]["membership"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `user id → (display name, avatar url)` of joined members.
pub async fn joined_members(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
) -> Result<BTreeMap<String, (Option<String>, Option<String>)>> {
    let state = visible_state(server, room_id, user).await?;
    let mut out = BTreeMap::new();
    for e in state.iter().filter(|e| e.event_type == "m.room.member") {
        let v: Value = serde_json::from_str(&e.pdu)?;
        if v["content"]["membership"] == "join" {
            let name = v["content"]["displayname"].as_str().map(str::to_owned);
            let avatar = v["content"]["avatar_url"].as_str().map(str::to_owned);
            out.insert(e.state_key.clone().unwrap_or_default(), (name, avatar));
        }
    }
    Ok(out)
}

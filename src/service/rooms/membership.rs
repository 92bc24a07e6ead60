//! Membership changes: spec client-server API, "Room membership". Each is an
//! `m.room.member` event; the room version's authorization rules decide
//! whether it is allowed.

use std::sync::Arc;

use ruma::{OwnedRoomId, OwnedServerName, RoomId, UserId, events::TimelineEventType};
use serde_json::{Value, json};

use super::timeline::{self, Template};
use crate::{
    Error, Result, Server, service::federation::membership as remote, store::accounts::UserRow,
};

/// State events a user sees about a room before joining it (spec: "stripped state").
pub const STRIPPED_STATE_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

pub fn member_content(membership: &str, profile: Option<&UserRow>, reason: Option<&str>) -> Value {
    let mut content = json!({ "membership": membership });
    if let Some(p) = profile {
        if let Some(name) = &p.displayname {
            content["displayname"] = json!(name);
        }
        if let Some(avatar) = &p.avatar_url {
            content["avatar_url"] = json!(avatar);
        }
    }
    if let Some(r) = reason {
        content["reason"] = json!(r);
    }
    content
}

/// Whether this server holds the room's current state and builds events in
/// it itself: one of its users is joined, or nobody is and its copy of the
/// room is the last word (a room that never left this server). Otherwise a
/// membership change goes through a server that is in the room.
pub async fn resident(server: &Server, room_id: &RoomId) -> Result<bool> {
    let db = &server.db;
    if db
        .server_in_room(room_id.as_str(), server.server_name().as_str())
        .await?
    {
        return Ok(true);
    }
    let has_create = db
        .current_state_event(room_id.as_str(), "m.room.create", "")
        .await?
        .is_some();
    Ok(has_create && db.room_servers(room_id.as_str()).await?.is_empty())
}

/// Joins the room, locally when this server is in it, else through one of
/// `via` (or the server that invited the user, or the one in the room id).
pub async fn join(
    server: &Arc<Server>,
    room_id: &RoomId,
    user: &UserId,
    reason: Option<&str>,
    via: &[OwnedServerName],
) -> Result<OwnedRoomId> {
    // Read together: on PostgreSQL one round trip instead of three in a row.
    let (resident, membership, profile) = tokio::try_join!(
        resident(server, room_id),
        server.db.membership(room_id.as_str(), user.as_str()),
        server.db.user(user.as_str()),
    )?;
    if !resident {
        let mut via = via.to_vec();
        via.extend(inviter_server(server, room_id, user).await?);
        via.extend(room_id.server_name().map(ToOwned::to_owned));
        remote::join_remote(server, room_id, user, &via, reason).await?;
        return Ok(room_id.to_owned());
    }
    if membership.is_some_and(|(m, _)| m == "join") {
        return Ok(room_id.to_owned());
    }
    let content = member_content("join", profile.as_ref(), reason);
    timeline::append(
        server,
        room_id,
        user,
        Template::state(TimelineEventType::RoomMember, user.as_str(), content),
        None,
    )
    .await?;
    Ok(room_id.to_owned())
}

/// The server of whoever invited `user` to the room, if they are invited.
async fn inviter_server(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
) -> Result<Option<OwnedServerName>> {
    let own = server
        .db
        .current_state_event(room_id.as_str(), "m.room.member", user.as_str())
        .await?;
    Ok(own
        .and_then(|e| UserId::parse(&e.sender).ok())
        .map(|sender| sender.server_name().to_owned()))
}

pub async fn knock(
    server: &Arc<Server>,
    room_id: &RoomId,
    user: &UserId,
    reason: Option<&str>,
    via: &[OwnedServerName],
) -> Result<OwnedRoomId> {
    if !resident(server, room_id).await? {
        let mut via = via.to_vec();
        via.extend(room_id.server_name().map(ToOwned::to_owned));
        remote::knock_remote(server, room_id, user, &via, reason).await?;
        return Ok(room_id.to_owned());
    }
    let profile = server.db.user(user.as_str()).await?;
    let mut template = Template::state(
        TimelineEventType::RoomMember,
        user.as_str(),
        member_content("knock", profile.as_ref(), reason),
    );
    template.unsigned.insert(
        "knock_room_state".into(),
        Value::Array(stripped_state(server, room_id).await?),
    );
    timeline::append(server, room_id, user, template, None).await?;
    Ok(room_id.to_owned())
}

pub async fn invite(
    server: &Arc<Server>,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    reason: Option<&str>,
    is_direct: bool,
) -> Result<()> {
    super::require_room(server, room_id).await?;
    if target.server_name() != server.server_name() {
        let mut content = member_content("invite", None, reason);
        if is_direct {
            content["is_direct"] = json!(true);
        }
        return remote::invite_remote(server, room_id, sender, target, content).await;
    }
    let profile = server.db.user(target.as_str()).await?;
    if profile.is_none() {
        return Err(Error::not_found("Unknown user"));
    }
    let mut content = member_content("invite", profile.as_ref(), reason);
    if is_direct {
        content["is_direct"] = json!(true);
    }
    let mut template = Template::state(TimelineEventType::RoomMember, target.as_str(), content);
    template.unsigned.insert(
        "invite_room_state".into(),
        Value::Array(stripped_state(server, room_id).await?),
    );
    timeline::append(server, room_id, sender, template, None).await?;
    Ok(())
}

/// Leave, reject an invite, or retract a knock.
pub async fn leave(
    server: &Arc<Server>,
    room_id: &RoomId,
    user: &UserId,
    reason: Option<&str>,
) -> Result<()> {
    super::require_room(server, room_id).await?;
    match server
        .db
        .membership(room_id.as_str(), user.as_str())
        .await?
    {
        Some((m, _)) if m == "leave" => return Ok(()),
        None => return Err(Error::forbidden("You are not in this room")),
        _ => {}
    }
    if !resident(server, room_id).await? {
        return remote::leave_remote(server, room_id, user, reason).await;
    }
    change_membership(server, room_id, user, user, "leave", reason).await
}

pub async fn kick(
    server: &Server,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    reason: Option<&str>,
) -> Result<()> {
    let current = server
        .db
        .membership(room_id.as_str(), target.as_str())
        .await?;
    if current.is_none_or(|(m, _)| m == "leave") {
        return Err(Error::forbidden("The user is not in this room"));
    }
    change_membership(server, room_id, sender, target, "leave", reason).await
}

pub async fn ban(
    server: &Server,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    reason: Option<&str>,
) -> Result<()> {
    change_membership(server, room_id, sender, target, "ban", reason).await
}

pub async fn unban(
    server: &Server,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    reason: Option<&str>,
) -> Result<()> {
    let banned = server
        .db
        .membership(room_id.as_str(), target.as_str())
        .await?
        .is_some_and(|(m, _)| m == "ban");
    if !banned {
        return Err(Error::forbidden("The user is not banned"));
    }
    change_membership(server, room_id, sender, target, "leave", reason).await
}

/// Sends a membership event about `target`; the auth rules decide whether `sender` may.
async fn change_membership(
    server: &Server,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    membership: &str,
    reason: Option<&str>,
) -> Result<()> {
    super::require_room(server, room_id).await?;
    let content = member_content(membership, None, reason);
    timeline::append(
        server,
        room_id,
        sender,
        Template::state(TimelineEventType::RoomMember, target.as_str(), content),
        None,
    )
    .await?;
    Ok(())
}

pub async fn forget(server: &Server, room_id: &RoomId, user: &UserId) -> Result<()> {
    match server
        .db
        .membership(room_id.as_str(), user.as_str())
        .await?
    {
        Some((m, _)) if m == "join" || m == "invite" || m == "knock" => Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "You must leave the room before forgetting it",
        )),
        None => Err(Error::not_found("You have never been in this room")),
        Some(_) => server.db.forget_room(room_id.as_str(), user.as_str()).await,
    }
}

/// The stripped state events for invites and knocks.
pub async fn stripped_state(server: &Server, room_id: &RoomId) -> Result<Vec<Value>> {
    let state = server.db.current_state_events(room_id.as_str()).await?;
    state
        .iter()
        .filter(|e| STRIPPED_STATE_TYPES.contains(&e.event_type.as_str()))
        .map(|e| {
            let pdu: Value = serde_json::from_str(&e.pdu)?;
            Ok(json!({
                "type": pdu["type"],
                "state_key": pdu["state_key"],
                "sender": pdu["sender"],
                "content": pdu["content"],
            }))
        })
        .collect()
}

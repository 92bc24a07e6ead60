//! Room aliases and the public room directory: spec client-server API,
//! "Room aliases" and "Listing rooms".

use ruma::{
    OwnedRoomId, RoomAliasId, RoomId, ServerName, UInt, UserId,
    api::federation::query::get_room_information,
    directory::{PublicRoomsChunk, PublicRoomsChunkInit},
    room::JoinRuleKind,
};
use serde_json::Value;

use crate::{Error, Result, Server};

pub async fn create_alias(
    server: &Server,
    alias: &RoomAliasId,
    room_id: &RoomId,
    user: &UserId,
) -> Result<()> {
    if alias.server_name() != server.server_name() {
        return Err(Error::invalid_param("Alias must be on this server"));
    }
    super::rooms::require_room(server, room_id).await?;
    if !server
        .db
        .create_alias(alias.as_str(), room_id.as_str(), user.as_str())
        .await?
    {
        return Err(Error::new(
            http::StatusCode::CONFLICT,
            "M_UNKNOWN",
            "Room alias already exists",
        ));
    }
    Ok(())
}

/// The room an alias names, and servers to join it through; another
/// server's alias is asked of that server.
pub async fn resolve_alias(
    server: &Server,
    alias: &RoomAliasId,
) -> Result<(OwnedRoomId, Vec<ruma::OwnedServerName>)> {
    let origin = alias.server_name();
    if origin != server.server_name() {
        let request = get_room_information::v1::Request::new(alias.to_owned());
        let response = server
            .federation
            .send(origin, request)
            .await
            .map_err(|e| super::federation::remote_error(origin, "Alias lookup", &e))?;
        return Ok((response.room_id, response.servers));
    }
    let room_id = local_alias(server, alias).await?;
    Ok((room_id, vec![server.server_name().to_owned()]))
}

/// The room a local alias names.
pub async fn local_alias(server: &Server, alias: &RoomAliasId) -> Result<OwnedRoomId> {
    let room = server
        .db
        .alias_room(alias.as_str())
        .await?
        .ok_or_else(|| Error::not_found("Room alias not found"))?;
    room.try_into().map_err(Error::internal)
}

/// The alias's creator or a room member allowed to change `m.room.canonical_alias` may delete it.
pub async fn delete_alias(server: &Server, alias: &RoomAliasId, user: &UserId) -> Result<()> {
    let (room_id, creator) = server
        .db
        .alias(alias.as_str())
        .await?
        .ok_or_else(|| Error::not_found("Room alias not found"))?;
    if creator != user.as_str()
        && !can_send_state(server, &room_id, user, "m.room.canonical_alias").await?
    {
        return Err(Error::forbidden("You may not delete this alias"));
    }
    server.db.delete_alias(alias.as_str()).await
}

pub async fn room_aliases(server: &Server, room_id: &RoomId, user: &UserId) -> Result<Vec<String>> {
    super::rooms::require_room(server, room_id).await?;
    let joined = server
        .db
        .membership(room_id.as_str(), user.as_str())
        .await?
        .is_some_and(|(m, _)| m == "join");
    if !joined {
        return Err(Error::forbidden("You are not in this room"));
    }
    server.db.room_aliases(room_id.as_str()).await
}

pub async fn set_visibility(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
    public: bool,
) -> Result<()> {
    super::rooms::require_room(server, room_id).await?;
    if !can_send_state(server, room_id.as_str(), user, "m.room.canonical_alias").await? {
        return Err(Error::forbidden("You may not publish this room"));
    }
    server.db.set_room_public(room_id.as_str(), public).await
}

pub async fn is_public(server: &Server, room_id: &RoomId) -> Result<bool> {
    let room = server.db.room(room_id.as_str()).await?;
    Ok(room
        .ok_or_else(|| Error::not_found("Unknown room"))?
        .is_public
        != 0)
}

/// Whether the user's power level reaches what `event_type` needs.
async fn can_send_state(
    server: &Server,
    room_id: &str,
    user: &UserId,
    event_type: &str,
) -> Result<bool> {
    if server
        .db
        .membership(room_id, user.as_str())
        .await?
        .is_none_or(|(m, _)| m != "join")
    {
        return Ok(false);
    }
    let create = server
        .db
        .current_state_event(room_id, "m.room.create", "")
        .await?;
    if let Some(create) = &create {
        let v: Value = serde_json::from_str(&create.pdu)?;
        let version = v["content"]["room_version"].as_str().unwrap_or("1");
        let extra = v["content"]["additional_creators"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if version == "12"
            && (create.sender == user.as_str() || extra.iter().any(|c| c == user.as_str()))
        {
            return Ok(true);
        }
    }
    let Some(pl) = server
        .db
        .current_state_event(room_id, "m.room.power_levels", "")
        .await?
    else {
        return Ok(create.is_some_and(|c| c.sender == user.as_str()));
    };
    let pl: Value = serde_json::from_str::<Value>(&pl.pdu)?["content"].take();
    let level = |v: &Value| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    let user_level = level(&pl["users"][user.as_str()])
        .or_else(|| level(&pl["users_default"]))
        .unwrap_or(0);
    let needed = level(&pl["events"][event_type])
        .or_else(|| level(&pl["state_default"]))
        .unwrap_or(50);
    Ok(user_level >= needed)
}

pub struct PublicRoom {
    pub room_id: String,
    pub joined: i64,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub canonical_alias: Option<String>,
    pub avatar_url: Option<String>,
    pub join_rule: Option<String>,
    pub world_readable: bool,
    pub guest_can_join: bool,
    pub room_type: Option<String>,
}

/// A room as its current state describes it.
pub struct Description {
    pub room: PublicRoom,
    pub room_version: Option<String>,
    pub encryption: Option<String>,
    /// The `m.room.join_rules` content (for `allow` rules).
    pub join_rules: Value,
}

pub async fn describe(server: &Server, room_id: &str, joined: i64) -> Result<Description> {
    let mut room = PublicRoom {
        room_id: room_id.to_owned(),
        joined,
        name: None,
        topic: None,
        canonical_alias: None,
        avatar_url: None,
        join_rule: None,
        world_readable: false,
        guest_can_join: false,
        room_type: None,
    };
    let (mut room_version, mut encryption, mut join_rules) = (None, None, Value::Null);
    for e in server.db.current_state_events(room_id).await? {
        let c = serde_json::from_str::<Value>(&e.pdu)?["content"].take();
        let s = |k: &str| c[k].as_str().map(str::to_owned);
        match e.event_type.as_str() {
            "m.room.name" => room.name = s("name"),
            "m.room.topic" => room.topic = s("topic"),
            "m.room.canonical_alias" => room.canonical_alias = s("alias"),
            "m.room.avatar" => room.avatar_url = s("url"),
            "m.room.join_rules" => {
                room.join_rule = s("join_rule");
                join_rules = c;
            }
            "m.room.history_visibility" => {
                room.world_readable = c["history_visibility"] == "world_readable"
            }
            "m.room.guest_access" => room.guest_can_join = c["guest_access"] == "can_join",
            "m.room.create" => {
                room.room_type = s("type");
                room_version = Some(s("room_version").unwrap_or_else(|| "1".to_owned()));
            }
            "m.room.encryption" => encryption = s("algorithm"),
            _ => {}
        }
    }
    Ok(Description {
        room,
        room_version,
        encryption,
        join_rules,
    })
}

/// spec: "Room summary" — what a user may learn about a room before
/// joining: for members (any membership), and for anyone when the room is
/// world-readable or open to joining or knocking. `M_NOT_FOUND` otherwise,
/// so the answer does not reveal that a private room exists.
pub async fn summary(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
) -> Result<(Description, Option<String>)> {
    let not_found = || Error::not_found("Room not found or not accessible");
    server
        .db
        .room(room_id.as_str())
        .await?
        .ok_or_else(not_found)?;
    let membership = server
        .db
        .membership(room_id.as_str(), user.as_str())
        .await?
        .map(|(m, _)| m);
    let joined = server
        .db
        .room_member_ids(room_id.as_str(), "join")
        .await?
        .len() as i64;
    let description = describe(server, room_id.as_str(), joined).await?;
    let open = matches!(
        description.room.join_rule.as_deref(),
        Some("public" | "knock" | "restricted" | "knock_restricted")
    );
    let member = membership.as_deref().is_some_and(|m| m != "leave");
    if !(member || open || description.room.world_readable) {
        return Err(not_found());
    }
    Ok((description, membership))
}

/// A room summary as the spec's room summary and space hierarchy share it.
pub fn summary_json(d: Description) -> Value {
    let mut summary = serde_json::json!({
        "room_id": d.room.room_id,
        "num_joined_members": d.room.joined,
        "world_readable": d.room.world_readable,
        "guest_can_join": d.room.guest_can_join,
        "join_rule": d.room.join_rule.as_deref().unwrap_or("invite"),
    });
    let optional = [
        ("name", d.room.name),
        ("topic", d.room.topic),
        ("canonical_alias", d.room.canonical_alias),
        ("avatar_url", d.room.avatar_url),
        ("room_type", d.room.room_type),
        ("room_version", d.room_version),
        ("encryption", d.encryption),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            summary[key] = value.into();
        }
    }
    if let Some(allow) = d.join_rules.get("allow").and_then(Value::as_array) {
        let rooms: Vec<Value> = allow
            .iter()
            .filter_map(|a| a.get("room_id"))
            .cloned()
            .collect();
        summary["allowed_room_ids"] = rooms.into();
    }
    summary
}

/// Published rooms matching `search` (name, topic or alias), paginated by offset.
pub async fn public_rooms(
    server: &Server,
    search: Option<&str>,
    since: usize,
    limit: usize,
) -> Result<(Vec<PublicRoom>, usize)> {
    let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
    let mut rooms = Vec::new();
    for row in server.db.public_rooms().await? {
        let room = describe(server, &row.room_id, row.joined).await?.room;
        let matches = needle.as_ref().is_none_or(|n| {
            [&room.name, &room.topic, &room.canonical_alias]
                .iter()
                .any(|f| f.as_ref().is_some_and(|v| v.to_lowercase().contains(n)))
        });
        if matches {
            rooms.push(room);
        }
    }
    let total = rooms.len();
    Ok((rooms.into_iter().skip(since).take(limit).collect(), total))
}

const DEFAULT_PAGE: usize = 100;

fn page_bounds(since: Option<&str>, limit: Option<UInt>) -> Result<(usize, usize)> {
    let since = match since {
        Some(s) => s
            .strip_prefix('o')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::invalid_param("Invalid since token"))?,
        None => 0,
    };
    let limit = limit
        .map(|l| u64::from(l) as usize)
        .unwrap_or(DEFAULT_PAGE)
        .clamp(1, 500);
    Ok((since, limit))
}

fn chunk(room: PublicRoom) -> Result<PublicRoomsChunk> {
    let mut c: PublicRoomsChunk = PublicRoomsChunkInit {
        num_joined_members: UInt::new_saturating(room.joined as u64),
        room_id: room.room_id.try_into().map_err(Error::internal)?,
        world_readable: room.world_readable,
        guest_can_join: room.guest_can_join,
    }
    .into();
    c.name = room.name;
    c.topic = room.topic;
    c.canonical_alias = room.canonical_alias.and_then(|a| a.try_into().ok());
    c.avatar_url = room.avatar_url.map(Into::into);
    c.join_rule = room
        .join_rule
        .map(|j| JoinRuleKind::from(j.as_str()))
        .unwrap_or(JoinRuleKind::Public);
    c.room_type = room.room_type.map(|t| t.as_str().into());
    Ok(c)
}

pub struct Listing {
    pub chunk: Vec<PublicRoomsChunk>,
    pub next: Option<String>,
    pub prev: Option<String>,
    pub total: UInt,
}

/// One page of the public room directory, as the client and federation
/// endpoints both list it.
pub async fn public_room_listing(
    server: &Server,
    search: Option<&str>,
    since: Option<&str>,
    limit: Option<UInt>,
) -> Result<Listing> {
    let (since, limit) = page_bounds(since, limit)?;
    let (rooms, total) = public_rooms(server, search, since, limit).await?;
    Ok(Listing {
        chunk: rooms.into_iter().map(chunk).collect::<Result<_>>()?,
        next: (since + limit < total).then(|| format!("o{}", since + limit)),
        prev: (since > 0).then(|| format!("o{}", since.saturating_sub(limit))),
        total: UInt::new_saturating(total as u64),
    })
}

/// The public rooms another server lists (a client's `?server=`).
pub async fn ask_for_public_rooms<R>(
    server: &Server,
    origin: &ServerName,
    request: R,
) -> Result<R::IncomingResponse>
where
    R: ruma::api::OutgoingRequest<
            Authentication = ruma::api::federation::authentication::ServerSignatures,
            PathBuilder = ruma::api::path_builder::SinglePath,
        >,
{
    server
        .federation
        .send(origin, request)
        .await
        .map_err(|e| super::federation::remote_error(origin, "Listing public rooms", &e))
}

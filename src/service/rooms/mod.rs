//! Rooms: the event graph and everything built on it.

pub mod create;
pub mod events;
pub mod membership;
pub mod messages;
pub mod pdu;
pub mod relations;
pub mod resolve;
pub mod state;
pub mod timeline;
pub mod visibility;
pub mod writer;

use ruma::{OwnedRoomId, OwnedServerName, RoomAliasId, RoomId, RoomOrAliasId, RoomVersionId};

use crate::{Error, Result, Server};

/// Resolves `#alias:server` or `!room` to a room this server knows.
pub async fn resolve_room(server: &Server, id: &RoomOrAliasId) -> Result<OwnedRoomId> {
    let room_id: OwnedRoomId = if id.is_room_id() {
        id.as_str().try_into().map_err(Error::internal)?
    } else {
        let room = server.db.alias_room(id.as_str()).await?;
        room.ok_or_else(|| Error::not_found("Room alias not found"))?
            .try_into()
            .map_err(Error::internal)?
    };
    require_room(server, &room_id).await?;
    Ok(room_id)
}

/// The room an id or alias names, and servers to join it through: `via`,
/// and the servers the alias's directory names. The room may be unknown
/// here (a remote join).
pub async fn resolve_room_to_join(
    server: &Server,
    id: &RoomOrAliasId,
    via: &[OwnedServerName],
) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
    let mut servers = via.to_vec();
    let room_id = match <&RoomAliasId>::try_from(id) {
        Ok(alias) => {
            let (room_id, alias_servers) = super::directory::resolve_alias(server, alias).await?;
            servers.extend(alias_servers);
            room_id
        }
        Err(_) => OwnedRoomId::try_from(id.as_str()).map_err(Error::internal)?,
    };
    Ok((room_id, servers))
}

/// The room's version, or `M_NOT_FOUND` for a room this server does not know.
/// Versions never change, so they are cached after the first read.
pub async fn require_room(server: &Server, room_id: &RoomId) -> Result<RoomVersionId> {
    if let Some(version) = server.room_versions.get(room_id) {
        return Ok(version);
    }
    let room = server
        .db
        .room(room_id.as_str())
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    let version = RoomVersionId::try_from(room.room_version.as_str()).map_err(Error::internal)?;
    server.room_versions.insert(room_id, version.clone());
    Ok(version)
}

/// `M_FORBIDDEN` unless `user` is joined to the room now.
pub async fn require_joined(server: &Server, room_id: &RoomId, user: &ruma::UserId) -> Result<()> {
    match server
        .db
        .membership(room_id.as_str(), user.as_str())
        .await?
    {
        Some((membership, _)) if membership == "join" => Ok(()),
        _ => Err(Error::forbidden("You are not joined to this room")),
    }
}

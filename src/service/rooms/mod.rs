//! Rooms: the event graph and everything built on it.

pub mod create;
pub mod events;
pub mod membership;
pub mod messages;
pub mod pdu;
pub mod state;
pub mod timeline;
pub mod visibility;
pub mod writer;

use ruma::{OwnedRoomId, RoomId, RoomOrAliasId};

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

pub async fn require_room(
    server: &Server,
    room_id: &RoomId,
) -> Result<crate::store::events::RoomRow> {
    server
        .db
        .room(room_id.as_str())
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))
}

//! spec: "Room aliases", "Room directory" (`/publicRooms`, `/directory/list/room`).

use std::sync::Arc;

use ruma::{
    OwnedRoomAliasId, UInt,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{
            get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
        },
        room::{Visibility, aliases},
    },
    directory::{PublicRoomsChunk, PublicRoomsChunkInit},
    room::JoinRuleKind,
};

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::directory::{self, PublicRoom},
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(put_alias)
        .ruma(get_alias)
        .ruma(remove_alias)
        .ruma(room_aliases)
        .ruma(public_rooms)
        .ruma(public_rooms_filtered)
        .ruma(get_visibility)
        .ruma(set_visibility)
}

async fn put_alias(
    server: Arc<Server>,
    req: Ruma<create_alias::v3::Request>,
) -> Result<create_alias::v3::Response> {
    directory::create_alias(
        &server,
        &req.body.room_alias,
        &req.body.room_id,
        &req.user().user_id,
    )
    .await?;
    Ok(create_alias::v3::Response::new())
}

async fn get_alias(
    server: Arc<Server>,
    req: Ruma<get_alias::v3::Request>,
) -> Result<get_alias::v3::Response> {
    let (room_id, servers) = directory::resolve_alias(&server, &req.body.room_alias).await?;
    Ok(get_alias::v3::Response::new(room_id, servers))
}

async fn remove_alias(
    server: Arc<Server>,
    req: Ruma<delete_alias::v3::Request>,
) -> Result<delete_alias::v3::Response> {
    directory::delete_alias(&server, &req.body.room_alias, &req.user().user_id).await?;
    Ok(delete_alias::v3::Response::new())
}

async fn room_aliases(
    server: Arc<Server>,
    req: Ruma<aliases::v3::Request>,
) -> Result<aliases::v3::Response> {
    let list = directory::room_aliases(&server, &req.body.room_id, &req.user().user_id).await?;
    let parsed: Vec<OwnedRoomAliasId> =
        list.into_iter().filter_map(|a| a.try_into().ok()).collect();
    Ok(aliases::v3::Response::new(parsed))
}

async fn get_visibility(
    server: Arc<Server>,
    req: Ruma<get_room_visibility::v3::Request>,
) -> Result<get_room_visibility::v3::Response> {
    let public = directory::is_public(&server, &req.body.room_id).await?;
    Ok(get_room_visibility::v3::Response::new(if public {
        Visibility::Public
    } else {
        Visibility::Private
    }))
}

async fn set_visibility(
    server: Arc<Server>,
    req: Ruma<set_room_visibility::v3::Request>,
) -> Result<set_room_visibility::v3::Response> {
    let public = req.body.visibility == Visibility::Public;
    directory::set_visibility(&server, &req.body.room_id, &req.user().user_id, public).await?;
    Ok(set_room_visibility::v3::Response::new())
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

struct Listing {
    chunk: Vec<PublicRoomsChunk>,
    next: Option<String>,
    prev: Option<String>,
    total: UInt,
}

async fn list(
    server: &Server,
    search: Option<&str>,
    since: Option<&str>,
    limit: Option<UInt>,
) -> Result<Listing> {
    let (since, limit) = page_bounds(since, limit)?;
    let (rooms, total) = directory::public_rooms(server, search, since, limit).await?;
    Ok(Listing {
        chunk: rooms.into_iter().map(chunk).collect::<Result<_>>()?,
        next: (since + limit < total).then(|| format!("o{}", since + limit)),
        prev: (since > 0).then(|| format!("o{}", since.saturating_sub(limit))),
        total: UInt::new_saturating(total as u64),
    })
}

async fn public_rooms(
    server: Arc<Server>,
    req: Ruma<get_public_rooms::v3::Request>,
) -> Result<get_public_rooms::v3::Response> {
    let l = list(&server, None, req.body.since.as_deref(), req.body.limit).await?;
    let mut response = get_public_rooms::v3::Response::new(l.chunk);
    response.next_batch = l.next;
    response.prev_batch = l.prev;
    response.total_room_count_estimate = Some(l.total);
    Ok(response)
}

async fn public_rooms_filtered(
    server: Arc<Server>,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<get_public_rooms_filtered::v3::Response> {
    let b = &req.body;
    let l = list(
        &server,
        b.filter.generic_search_term.as_deref(),
        b.since.as_deref(),
        b.limit,
    )
    .await?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = l.chunk;
    response.next_batch = l.next;
    response.prev_batch = l.prev;
    response.total_room_count_estimate = Some(l.total);
    Ok(response)
}

//! spec: "Room aliases", "Room directory" (`/publicRooms`, `/directory/list/room`).

use std::sync::Arc;

use ruma::{
    OwnedRoomAliasId,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{
            get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
        },
        room::{Visibility, aliases},
    },
    api::federation::directory as federation_directory,
};

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::directory,
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

async fn public_rooms(
    server: Arc<Server>,
    req: Ruma<get_public_rooms::v3::Request>,
) -> Result<get_public_rooms::v3::Response> {
    let b = &req.body;
    if let Some(origin) = b.server.as_deref().filter(|s| *s != server.server_name()) {
        let mut request = federation_directory::get_public_rooms::v1::Request::new();
        request.limit = b.limit;
        request.since = b.since.clone();
        let remote = directory::ask_for_public_rooms(&server, origin, request).await?;
        let mut response = get_public_rooms::v3::Response::new(remote.chunk);
        response.next_batch = remote.next_batch;
        response.prev_batch = remote.prev_batch;
        response.total_room_count_estimate = remote.total_room_count_estimate;
        return Ok(response);
    }
    let l = directory::public_room_listing(&server, None, b.since.as_deref(), b.limit).await?;
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
    if let Some(origin) = b.server.as_deref().filter(|s| *s != server.server_name()) {
        let mut request = federation_directory::get_public_rooms_filtered::v1::Request::new();
        request.limit = b.limit;
        request.since = b.since.clone();
        request.filter = b.filter.clone();
        let remote = directory::ask_for_public_rooms(&server, origin, request).await?;
        let mut response = get_public_rooms_filtered::v3::Response::new();
        response.chunk = remote.chunk;
        response.next_batch = remote.next_batch;
        response.prev_batch = remote.prev_batch;
        response.total_room_count_estimate = remote.total_room_count_estimate;
        return Ok(response);
    }
    let l = directory::public_room_listing(
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

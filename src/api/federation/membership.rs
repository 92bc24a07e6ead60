//! spec: server-server API, "Joining Rooms", "Knocking upon a room",
//! "Inviting to a room", "Leaving Rooms (Rejecting Invites)".

use std::sync::Arc;

use ruma::api::federation::membership::{
    create_invite, create_join_event, create_knock_event, create_leave_event, prepare_join_event,
    prepare_knock_event, prepare_leave_event,
};

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::federation::membership,
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(make_join)
        .ruma(send_join)
        .ruma(make_leave)
        .ruma(send_leave)
        .ruma(make_knock)
        .ruma(send_knock)
        .ruma(invite)
}

async fn make_join(
    server: Arc<Server>,
    req: Ruma<prepare_join_event::v1::Request>,
) -> Result<prepare_join_event::v1::Response> {
    let body = &req.body;
    let (version, event) = membership::make(
        &server,
        req.origin(),
        &body.room_id,
        &body.user_id,
        "join",
        &body.ver,
    )
    .await?;
    let mut response = prepare_join_event::v1::Response::new(event);
    response.room_version = Some(version);
    Ok(response)
}

async fn send_join(
    server: Arc<Server>,
    req: Ruma<create_join_event::v2::Request>,
) -> Result<create_join_event::v2::Response> {
    let body = &req.body;
    let accepted = membership::send(
        &server,
        req.origin(),
        &body.room_id,
        &body.event_id,
        &body.pdu,
        "join",
    )
    .await?;
    let mut state = create_join_event::v2::RoomState::new();
    state.state = accepted.state;
    state.auth_chain = accepted.auth_chain;
    state.event = Some(accepted.event);
    state.servers_in_room = Some(accepted.servers_in_room);
    Ok(create_join_event::v2::Response::new(state))
}

async fn make_leave(
    server: Arc<Server>,
    req: Ruma<prepare_leave_event::v1::Request>,
) -> Result<prepare_leave_event::v1::Response> {
    let body = &req.body;
    let (version, event) = membership::make(
        &server,
        req.origin(),
        &body.room_id,
        &body.user_id,
        "leave",
        &[],
    )
    .await?;
    Ok(prepare_leave_event::v1::Response::new(Some(version), event))
}

async fn send_leave(
    server: Arc<Server>,
    req: Ruma<create_leave_event::v2::Request>,
) -> Result<create_leave_event::v2::Response> {
    let body = &req.body;
    membership::send(
        &server,
        req.origin(),
        &body.room_id,
        &body.event_id,
        &body.pdu,
        "leave",
    )
    .await?;
    Ok(create_leave_event::v2::Response::new())
}

async fn make_knock(
    server: Arc<Server>,
    req: Ruma<prepare_knock_event::v1::Request>,
) -> Result<prepare_knock_event::v1::Response> {
    let body = &req.body;
    let (version, event) = membership::make(
        &server,
        req.origin(),
        &body.room_id,
        &body.user_id,
        "knock",
        &body.ver,
    )
    .await?;
    Ok(prepare_knock_event::v1::Response::new(version, event))
}

async fn send_knock(
    server: Arc<Server>,
    req: Ruma<create_knock_event::v1::Request>,
) -> Result<create_knock_event::v1::Response> {
    let body = &req.body;
    membership::send(
        &server,
        req.origin(),
        &body.room_id,
        &body.event_id,
        &body.pdu,
        "knock",
    )
    .await?;
    let state = membership::knock_room_state(&server, &body.room_id).await?;
    Ok(create_knock_event::v1::Response::new(state))
}

async fn invite(
    server: Arc<Server>,
    req: Ruma<create_invite::v2::Request>,
) -> Result<create_invite::v2::Response> {
    let event = membership::receive_invite(&server, req.origin(), &req.body).await?;
    Ok(create_invite::v2::Response::new(event))
}

//! spec: "Room membership".

use std::sync::Arc;

use ruma::api::client::{
    knock::knock_room,
    membership::{
        ban_user, forget_room, get_member_events, invite_user, join_room_by_id,
        join_room_by_id_or_alias, joined_members, joined_rooms, kick_user, leave_room, unban_user,
    },
};

use super::room::raw;
use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::{
        rooms::{self, membership, state},
        sync::SyncToken,
    },
};
use invite_user::v3::InvitationRecipient;
use joined_members::v3::RoomMember;

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(join_by_id)
        .ruma(join)
        .ruma(knock)
        .ruma(invite)
        .ruma(leave)
        .ruma(forget)
        .ruma(kick)
        .ruma(ban)
        .ruma(unban)
        .ruma(members)
        .ruma(joined_members)
        .ruma(joined_rooms)
}

async fn join_by_id(
    server: Arc<Server>,
    req: Ruma<join_room_by_id::v3::Request>,
) -> Result<join_room_by_id::v3::Response> {
    let room_id = membership::join(
        &server,
        &req.body.room_id,
        &req.user().user_id,
        req.body.reason.as_deref(),
        &[],
    )
    .await?;
    Ok(join_room_by_id::v3::Response::new(room_id))
}

async fn join(
    server: Arc<Server>,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<join_room_by_id_or_alias::v3::Response> {
    let (room_id, via) =
        rooms::resolve_room_to_join(&server, &req.body.room_id_or_alias, &req.body.via).await?;
    let room_id = membership::join(
        &server,
        &room_id,
        &req.user().user_id,
        req.body.reason.as_deref(),
        &via,
    )
    .await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id))
}

async fn knock(
    server: Arc<Server>,
    req: Ruma<knock_room::v3::Request>,
) -> Result<knock_room::v3::Response> {
    let (room_id, via) =
        rooms::resolve_room_to_join(&server, &req.body.room_id_or_alias, &req.body.via).await?;
    let room_id = membership::knock(
        &server,
        &room_id,
        &req.user().user_id,
        req.body.reason.as_deref(),
        &via,
    )
    .await?;
    Ok(knock_room::v3::Response::new(room_id))
}

async fn invite(
    server: Arc<Server>,
    req: Ruma<invite_user::v3::Request>,
) -> Result<invite_user::v3::Response> {
    let InvitationRecipient::UserId(invitee) = &req.body.recipient else {
        return Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            "M_UNRECOGNIZED",
            "Third-party invites are not supported",
        ));
    };
    membership::invite(
        &server,
        &req.body.room_id,
        &req.user().user_id,
        &invitee.user_id,
        invitee.reason.as_deref(),
        false,
    )
    .await?;
    Ok(invite_user::v3::Response::new())
}

async fn leave(
    server: Arc<Server>,
    req: Ruma<leave_room::v3::Request>,
) -> Result<leave_room::v3::Response> {
    membership::leave(
        &server,
        &req.body.room_id,
        &req.user().user_id,
        req.body.reason.as_deref(),
    )
    .await?;
    Ok(leave_room::v3::Response::new())
}

async fn forget(
    server: Arc<Server>,
    req: Ruma<forget_room::v3::Request>,
) -> Result<forget_room::v3::Response> {
    membership::forget(&server, &req.body.room_id, &req.user().user_id).await?;
    Ok(forget_room::v3::Response::new())
}

async fn kick(
    server: Arc<Server>,
    req: Ruma<kick_user::v3::Request>,
) -> Result<kick_user::v3::Response> {
    let b = &req.body;
    membership::kick(
        &server,
        &b.room_id,
        &req.user().user_id,
        &b.user_id,
        b.reason.as_deref(),
    )
    .await?;
    Ok(kick_user::v3::Response::new())
}

async fn ban(
    server: Arc<Server>,
    req: Ruma<ban_user::v3::Request>,
) -> Result<ban_user::v3::Response> {
    let b = &req.body;
    membership::ban(
        &server,
        &b.room_id,
        &req.user().user_id,
        &b.user_id,
        b.reason.as_deref(),
    )
    .await?;
    Ok(ban_user::v3::Response::new())
}

async fn unban(
    server: Arc<Server>,
    req: Ruma<unban_user::v3::Request>,
) -> Result<unban_user::v3::Response> {
    let b = &req.body;
    membership::unban(
        &server,
        &b.room_id,
        &req.user().user_id,
        &b.user_id,
        b.reason.as_deref(),
    )
    .await?;
    Ok(unban_user::v3::Response::new())
}

async fn members(
    server: Arc<Server>,
    req: Ruma<get_member_events::v3::Request>,
) -> Result<get_member_events::v3::Response> {
    let b = &req.body;
    let at =
        b.at.as_deref()
            .map(SyncToken::parse)
            .transpose()?
            .map(|t| t.pos);
    let events = state::members(
        &server,
        &b.room_id,
        &req.user().user_id,
        at,
        b.membership.as_ref().map(|m| m.as_str()),
        b.not_membership.as_ref().map(|m| m.as_str()),
    )
    .await?;
    Ok(get_member_events::v3::Response::new(
        events.into_iter().map(raw).collect(),
    ))
}

async fn joined_members(
    server: Arc<Server>,
    req: Ruma<joined_members::v3::Request>,
) -> Result<joined_members::v3::Response> {
    let joined = state::joined_members(&server, &req.body.room_id, &req.user().user_id).await?;
    let mut members = std::collections::BTreeMap::new();
    for (user, (name, avatar)) in joined {
        let mut member = RoomMember::new();
        member.display_name = name;
        member.avatar_url = avatar.map(Into::into);
        members.insert(user.try_into().map_err(Error::internal)?, member);
    }
    Ok(joined_members::v3::Response::new(members))
}

async fn joined_rooms(
    server: Arc<Server>,
    req: Ruma<joined_rooms::v3::Request>,
) -> Result<joined_rooms::v3::Response> {
    let rooms = server
        .db
        .memberships_of(req.user().user_id.as_str())
        .await?;
    let joined = rooms
        .into_iter()
        .filter(|(_, m, _)| m == "join")
        .map(|(r, _, _)| r.try_into().map_err(Error::internal))
        .collect::<Result<_>>()?;
    Ok(joined_rooms::v3::Response::new(joined))
}

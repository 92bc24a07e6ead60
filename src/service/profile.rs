//! Profiles: spec client-server API, "Profiles". A change is copied into the
//! user's member event in every room they are joined to.

use ruma::{UserId, api::federation::query::get_profile_information, events::TimelineEventType};
use serde_json::json;

use super::rooms::timeline::{self, Template};
use crate::{Error, Result, Server, store::accounts::ProfileField};

pub struct Profile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// A user's profile; another server's user is looked up on their server.
pub async fn get(server: &Server, user: &UserId) -> Result<Profile> {
    if user.server_name() != server.server_name() {
        return get_remote(server, user).await;
    }
    let row = server
        .db
        .user(user.as_str())
        .await?
        .filter(|u| u.deactivated == 0);
    let row = row.ok_or_else(|| Error::not_found("Profile not found"))?;
    Ok(Profile {
        displayname: row.displayname,
        avatar_url: row.avatar_url,
    })
}

async fn get_remote(server: &Server, user: &UserId) -> Result<Profile> {
    let origin = user.server_name();
    let request = get_profile_information::v1::Request::new(user.to_owned());
    let response = server
        .federation
        .send(origin, request)
        .await
        .map_err(|e| super::federation::remote_error(origin, "Profile lookup", &e))?;
    let text = |key: &str| {
        response
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    Ok(Profile {
        displayname: text("displayname"),
        avatar_url: text("avatar_url"),
    })
}

pub async fn set(
    server: &Server,
    user: &UserId,
    field: ProfileField,
    value: Option<&str>,
) -> Result<()> {
    server
        .db
        .set_profile_field(user.as_str(), field, value)
        .await?;
    let key = match field {
        ProfileField::Displayname => "displayname",
        ProfileField::AvatarUrl => "avatar_url",
    };
    for (room_id, membership, _) in server.db.memberships_of(user.as_str()).await? {
        if membership != "join" {
            continue;
        }
        let Some(current) = server
            .db
            .current_state_event(&room_id, "m.room.member", user.as_str())
            .await?
        else {
            continue;
        };
        let mut content =
            serde_json::from_str::<serde_json::Value>(&current.pdu)?["content"].take();
        match value {
            Some(v) => content[key] = json!(v),
            None => {
                content.as_object_mut().map(|c| c.remove(key));
            }
        }
        let room_id: ruma::OwnedRoomId = room_id.try_into().map_err(Error::internal)?;
        let template = Template::state(TimelineEventType::RoomMember, user.as_str(), content);
        if let Err(e) = timeline::append(server, &room_id, user, template, None).await {
            // One room refusing (e.g. a power level change) must not stop the others.
            tracing::warn!(%room_id, error = %e, "profile change not propagated");
        }
    }
    Ok(())
}

//! spec: "Rooms" — creation, events by id, context, room summaries.

use std::sync::Arc;

use ruma::{
    RoomAliasId,
    api::client::{
        context::get_context,
        room::{Visibility, create_room, get_room_event, get_summary},
    },
    events::TimelineEventType,
    serde::Raw,
};
use serde_json::{Map, Value};

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::{
        directory,
        rooms::{
            self,
            create::{self, DEFAULT_ROOM_VERSION, NewRoom, Preset},
            events::ClientEvent,
            messages,
        },
    },
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(create_room)
        .ruma(event)
        .ruma(context)
        .ruma(summary)
}

/// `GET /room_summary/{roomIdOrAlias}`.
async fn summary(
    server: Arc<Server>,
    req: Ruma<get_summary::v1::Request>,
) -> Result<get_summary::v1::Response> {
    let room_id = rooms::resolve_room(&server, &req.body.room_id_or_alias)
        .await
        .map_err(|_| Error::not_found("Room not found or not accessible"))?;
    let (d, membership) = directory::summary(&server, &room_id, &req.user().user_id).await?;
    let summary = directory::summary_json(d);
    let summary = serde_json::from_value(summary).map_err(Error::internal)?;
    let mut response = get_summary::v1::Response::new(summary);
    response.membership = membership.map(|m| m.as_str().into());
    Ok(response)
}

async fn create_room(
    server: Arc<Server>,
    req: Ruma<create_room::v3::Request>,
) -> Result<create_room::v3::Response> {
    let user = req.user().user_id.clone();
    let body = req.body;
    let preset = match body.preset.as_ref().map(|p| p.as_str()) {
        Some("public_chat") => Preset::PublicChat,
        Some("trusted_private_chat") => Preset::TrustedPrivateChat,
        Some("private_chat") => Preset::PrivateChat,
        Some(other) => return Err(Error::invalid_param(format!("Unknown preset {other}"))),
        None if body.visibility == Visibility::Public => Preset::PublicChat,
        None => Preset::PrivateChat,
    };
    let alias = body
        .room_alias_name
        .as_deref()
        .map(|name| {
            RoomAliasId::parse(format!("#{name}:{}", server.server_name())).map_err(|e| {
                Error::new(
                    http::StatusCode::BAD_REQUEST,
                    "M_INVALID_PARAM",
                    format!("Invalid alias: {e}"),
                )
            })
        })
        .transpose()?;
    let initial_state = body
        .initial_state
        .iter()
        .map(|raw| {
            let v: Value = serde_json::from_str(raw.json().get())
                .map_err(|e| Error::bad_json(e.to_string()))?;
            let kind = v["type"]
                .as_str()
                .ok_or_else(|| Error::bad_json("initial_state event without type"))?;
            if !v["content"].is_object() {
                return Err(Error::bad_json(
                    "initial_state event content must be an object",
                ));
            }
            Ok((
                TimelineEventType::from(kind),
                v["state_key"].as_str().unwrap_or("").to_owned(),
                v["content"].clone(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let new_room = NewRoom {
        version: body.room_version.clone().unwrap_or(DEFAULT_ROOM_VERSION),
        preset,
        creation_content: object(body.creation_content.as_ref().map(Raw::json))?,
        initial_state,
        power_level_override: body
            .power_level_content_override
            .as_ref()
            .map(|raw| object(Some(raw.json())))
            .transpose()?,
        name: body.name.clone(),
        topic: body.topic.clone(),
        alias,
        invite: body.invite.clone(),
        is_direct: body.is_direct,
        publish: body.visibility == Visibility::Public,
    };
    let room_id = create::create_room(&server, &user, new_room).await?;
    Ok(create_room::v3::Response::new(room_id))
}

fn object(raw: Option<&serde_json::value::RawValue>) -> Result<Map<String, Value>> {
    match raw.map(|r| serde_json::from_str::<Value>(r.get())) {
        None => Ok(Map::new()),
        Some(Ok(Value::Object(o))) => Ok(o),
        _ => Err(Error::bad_json("Expected a JSON object")),
    }
}

async fn event(
    server: Arc<Server>,
    req: Ruma<get_room_event::v3::Request>,
) -> Result<get_room_event::v3::Response> {
    let user = req.user();
    let event = messages::event(
        &server,
        &req.body.room_id,
        &user.user_id,
        user.device_id.as_str(),
        &req.body.event_id,
    )
    .await?;
    Ok(get_room_event::v3::Response::new(raw(event)))
}

async fn context(
    server: Arc<Server>,
    req: Ruma<get_context::v3::Request>,
) -> Result<get_context::v3::Response> {
    let user = req.user();
    let limit = u64::from(req.body.limit) as usize;
    let ctx = messages::context(
        &server,
        &req.body.room_id,
        &user.user_id,
        user.device_id.as_str(),
        &req.body.event_id,
        limit,
        &req.body.filter,
    )
    .await?;
    let mut response = get_context::v3::Response::new();
    response.start = Some(ctx.start);
    response.end = Some(ctx.end);
    response.event = Some(raw(ctx.event));
    response.events_before = ctx.before.into_iter().map(raw).collect();
    response.events_after = ctx.after.into_iter().map(raw).collect();
    response.state = ctx.state.into_iter().map(raw).collect();
    Ok(response)
}

/// A formatted event as the ruma type its response field wants.
pub(super) fn raw<T>(event: ClientEvent) -> Raw<T> {
    Raw::from_json(event)
}

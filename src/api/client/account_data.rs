//! spec: "Client config" (account data) and "Room tagging". Tags are stored
//! as the `m.tag` room account data event, which is what sync delivers.

use std::sync::Arc;

use ruma::{
    RoomId, UserId,
    api::client::{
        config::{
            get_global_account_data, get_room_account_data, set_global_account_data,
            set_room_account_data,
        },
        tag::{create_tag, delete_tag, get_tags},
    },
    events::tag::Tags,
    serde::Raw,
};
use serde_json::{Value, json};

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(set_global)
        .ruma(get_global)
        .ruma(set_room)
        .ruma(get_room)
        .ruma(put_tag)
        .ruma(remove_tag)
        .ruma(tags)
}

fn own(req_user: &UserId, path_user: &UserId) -> Result<()> {
    if req_user != path_user {
        return Err(Error::forbidden(
            "You may only access your own account data",
        ));
    }
    Ok(())
}

/// spec: the server manages these types itself; clients may not set them here.
fn settable(event_type: &str) -> Result<()> {
    if event_type == "m.fully_read" || event_type == "m.push_rules" {
        return Err(Error::new(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "M_BAD_JSON",
            format!("Cannot set {event_type} through this API"),
        ));
    }
    Ok(())
}

fn object_content(raw: &str) -> Result<&str> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(_)) => Ok(raw),
        _ => Err(Error::bad_json(
            "Account data content must be a JSON object",
        )),
    }
}

async fn set_global(
    server: Arc<Server>,
    req: Ruma<set_global_account_data::v3::Request>,
) -> Result<set_global_account_data::v3::Response> {
    own(&req.user().user_id, &req.body.user_id)?;
    let event_type = req.body.event_type.to_string();
    settable(&event_type)?;
    let content = object_content(req.body.data.json().get())?;
    server
        .db
        .put_account_data(req.body.user_id.as_str(), "", &event_type, content)
        .await?;
    server.notifier.notify_users([req.body.user_id.as_str()]);
    Ok(set_global_account_data::v3::Response::new())
}

async fn get_global(
    server: Arc<Server>,
    req: Ruma<get_global_account_data::v3::Request>,
) -> Result<get_global_account_data::v3::Response> {
    own(&req.user().user_id, &req.body.user_id)?;
    let content = server
        .db
        .account_data(
            req.body.user_id.as_str(),
            "",
            &req.body.event_type.to_string(),
        )
        .await?;
    let content = content.ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(get_global_account_data::v3::Response::new(Raw::from_json(
        serde_json::value::RawValue::from_string(content)?,
    )))
}

async fn set_room(
    server: Arc<Server>,
    req: Ruma<set_room_account_data::v3::Request>,
) -> Result<set_room_account_data::v3::Response> {
    own(&req.user().user_id, &req.body.user_id)?;
    let event_type = req.body.event_type.to_string();
    settable(&event_type)?;
    crate::service::rooms::require_room(&server, &req.body.room_id).await?;
    let content = object_content(req.body.data.json().get())?;
    server
        .db
        .put_account_data(
            req.body.user_id.as_str(),
            req.body.room_id.as_str(),
            &event_type,
            content,
        )
        .await?;
    server.notifier.notify_users([req.body.user_id.as_str()]);
    Ok(set_room_account_data::v3::Response::new())
}

async fn get_room(
    server: Arc<Server>,
    req: Ruma<get_room_account_data::v3::Request>,
) -> Result<get_room_account_data::v3::Response> {
    own(&req.user().user_id, &req.body.user_id)?;
    let content = server
        .db
        .account_data(
            req.body.user_id.as_str(),
            req.body.room_id.as_str(),
            &req.body.event_type.to_string(),
        )
        .await?;
    let content = content.ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(get_room_account_data::v3::Response::new(Raw::from_json(
        serde_json::value::RawValue::from_string(content)?,
    )))
}

async fn load_tags(server: &Server, user: &UserId, room: &RoomId) -> Result<Value> {
    let content = server
        .db
        .account_data(user.as_str(), room.as_str(), "m.tag")
        .await?;
    Ok(content
        .map(|c| serde_json::from_str(&c))
        .transpose()?
        .unwrap_or_else(|| json!({ "tags": {} })))
}

async fn put_tag(
    server: Arc<Server>,
    req: Ruma<create_tag::v3::Request>,
) -> Result<create_tag::v3::Response> {
    own(&req.user().user_id, &req.body.user_id)?;
    crate::service::rooms::require_room(&server, &req.body.room_id).await?;
    let mut content = load_tags(&server, &req.body.user_id, &req.body.room_id).await?;
    content["tags"][&req.body.tag] = serde_json::to_value(&req.body.tag_info)?;
    server
        .db
        .put_account_data(
            req.body.user_id.as_str(),
            req.body.room_id.as_str(),
            "m.tag",
            &content.to_string(),
        )
        .await?;
    server.notifier.notify_users([req.body.user_id.as_str()]);
    Ok(create_tag::v3::Response::new())
}

async fn remove_tag(
    server: Arc<Server>,
    req: Ruma<delete_tag::v3::Request>,
) -> Result<delete_tag::v3::Response> {
    own(&req.user().user_id, &req.body.user_id)?;
    let mut content = load_tags(&server, &req.body.user_id, &req.body.room_id).await?;
    if let Some(tags) = content["tags"].as_object_mut() {
        tags.remove(&req.body.tag);
    }
    server
        .db
        .put_account_data(
            req.body.user_id.as_str(),
            req.body.room_id.as_str(),
            "m.tag",
            &content.to_string(),
        )
        .await?;
    server.notifier.notify_users([req.body.user_id.as_str()]);
    Ok(delete_tag::v3::Response::new())
}

async fn tags(
    server: Arc<Server>,
    req: Ruma<get_tags::v3::Request>,
) -> Result<get_tags::v3::Response> {
    own(&req.user().user_id, &req.body.user_id)?;
    let content = load_tags(&server, &req.body.user_id, &req.body.room_id).await?;
    let tags: Tags = serde_json::from_value(content["tags"].clone()).unwrap_or_default();
    Ok(get_tags::v3::Response::new(tags))
}

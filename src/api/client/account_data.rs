//! spec: "Client config" (account data) and "Room tagging".

use std::sync::Arc;

use ruma::{
    api::client::{
        config::{
            get_global_account_data, get_room_account_data, set_global_account_data,
            set_room_account_data,
        },
        tag::{create_tag, delete_tag, get_tags},
    },
    serde::Raw,
};
use serde_json::value::RawValue;

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::account_data::{self, check_owner},
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

async fn set_global(
    server: Arc<Server>,
    req: Ruma<set_global_account_data::v3::Request>,
) -> Result<set_global_account_data::v3::Response> {
    let b = &req.body;
    check_owner(&req.user().user_id, &b.user_id)?;
    account_data::put(
        &server,
        &b.user_id,
        None,
        &b.event_type.to_string(),
        b.data.json().get(),
    )
    .await?;
    Ok(set_global_account_data::v3::Response::new())
}

async fn get_global(
    server: Arc<Server>,
    req: Ruma<get_global_account_data::v3::Request>,
) -> Result<get_global_account_data::v3::Response> {
    let b = &req.body;
    check_owner(&req.user().user_id, &b.user_id)?;
    let content = account_data::get(&server, &b.user_id, None, &b.event_type.to_string()).await?;
    Ok(get_global_account_data::v3::Response::new(Raw::from_json(
        RawValue::from_string(content)?,
    )))
}

async fn set_room(
    server: Arc<Server>,
    req: Ruma<set_room_account_data::v3::Request>,
) -> Result<set_room_account_data::v3::Response> {
    let b = &req.body;
    check_owner(&req.user().user_id, &b.user_id)?;
    account_data::put(
        &server,
        &b.user_id,
        Some(&b.room_id),
        &b.event_type.to_string(),
        b.data.json().get(),
    )
    .await?;
    Ok(set_room_account_data::v3::Response::new())
}

async fn get_room(
    server: Arc<Server>,
    req: Ruma<get_room_account_data::v3::Request>,
) -> Result<get_room_account_data::v3::Response> {
    let b = &req.body;
    check_owner(&req.user().user_id, &b.user_id)?;
    let content = account_data::get(
        &server,
        &b.user_id,
        Some(&b.room_id),
        &b.event_type.to_string(),
    )
    .await?;
    Ok(get_room_account_data::v3::Response::new(Raw::from_json(
        RawValue::from_string(content)?,
    )))
}

async fn put_tag(
    server: Arc<Server>,
    req: Ruma<create_tag::v3::Request>,
) -> Result<create_tag::v3::Response> {
    let b = &req.body;
    check_owner(&req.user().user_id, &b.user_id)?;
    account_data::set_tag(
        &server,
        &b.user_id,
        &b.room_id,
        &b.tag,
        Some(serde_json::to_value(&b.tag_info)?),
    )
    .await?;
    Ok(create_tag::v3::Response::new())
}

async fn remove_tag(
    server: Arc<Server>,
    req: Ruma<delete_tag::v3::Request>,
) -> Result<delete_tag::v3::Response> {
    let b = &req.body;
    check_owner(&req.user().user_id, &b.user_id)?;
    account_data::set_tag(&server, &b.user_id, &b.room_id, &b.tag, None).await?;
    Ok(delete_tag::v3::Response::new())
}

async fn tags(
    server: Arc<Server>,
    req: Ruma<get_tags::v3::Request>,
) -> Result<get_tags::v3::Response> {
    let b = &req.body;
    check_owner(&req.user().user_id, &b.user_id)?;
    Ok(get_tags::v3::Response::new(
        account_data::tags(&server, &b.user_id, &b.room_id).await?,
    ))
}

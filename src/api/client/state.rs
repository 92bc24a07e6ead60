//! spec: "Room state" — reading and sending state events.

use std::sync::Arc;

use ruma::{
    api::client::state::{get_state_event_for_key, get_state_events, send_state_event},
    events::TimelineEventType,
};

use super::room::raw;
use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::rooms::{
        state,
        timeline::{self, Template},
    },
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(send).ruma(get_one).ruma(get_all)
}

async fn send(
    server: Arc<Server>,
    req: Ruma<send_state_event::v3::Request>,
) -> Result<send_state_event::v3::Response> {
    let user = req.user();
    let b = &req.body;
    let content = super::event_content(&b.body, &b.event_type.to_string())?;
    let event_type = TimelineEventType::from(b.event_type.to_string());
    if event_type == TimelineEventType::RoomCreate {
        return Err(Error::forbidden("The create event cannot be replaced"));
    }
    let template = Template::state(event_type, b.state_key.clone(), content);
    let event_id = timeline::append(&server, &b.room_id, &user.user_id, template, None).await?;
    Ok(send_state_event::v3::Response::new(event_id))
}

async fn get_one(
    server: Arc<Server>,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<get_state_event_for_key::v3::Response> {
    let b = &req.body;
    let content = state::state_content(
        &server,
        &b.room_id,
        &req.user().user_id,
        &b.event_type.to_string(),
        &b.state_key,
    )
    .await?;
    Ok(get_state_event_for_key::v3::Response::new(
        serde_json::value::to_raw_value(&content)?,
    ))
}

async fn get_all(
    server: Arc<Server>,
    req: Ruma<get_state_events::v3::Request>,
) -> Result<get_state_events::v3::Response> {
    let events = state::state_events(&server, &req.body.room_id, &req.user().user_id).await?;
    Ok(get_state_events::v3::Response::new(
        events.into_iter().map(raw).collect(),
    ))
}

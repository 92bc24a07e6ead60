//! spec: "Sending events to a room", "Getting events for a room" (`/messages`), "Redactions".

use std::sync::Arc;

use ruma::{
    api::client::{
        message::{get_message_events, send_message_event},
        redact::redact_event,
    },
    events::TimelineEventType,
};
use serde_json::json;

use super::room::raw;
use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::rooms::{
        messages, relations,
        timeline::{self, Template, Txn},
    },
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(send).ruma(history).ruma(redact)
}

async fn send(
    server: Arc<Server>,
    req: Ruma<send_message_event::v3::Request>,
) -> Result<send_message_event::v3::Response> {
    let user = req.user();
    let b = &req.body;
    let content = super::event_content(&b.body, &b.event_type.to_string())?;
    let event_type = TimelineEventType::from(b.event_type.to_string());
    if matches!(event_type, TimelineEventType::RoomRedaction) {
        return Err(Error::bad_json("Use the /redact endpoint to redact events"));
    }
    let scope = format!("send {}", b.room_id);
    let txn = Txn {
        device_id: user.device_id.as_str(),
        scope: &scope,
        txn_id: b.txn_id.as_str(),
    };
    relations::check_new(
        &server,
        &b.room_id,
        &user.user_id,
        &b.event_type.to_string(),
        &content,
        &txn,
    )
    .await?;
    let event_id = timeline::append(
        &server,
        &b.room_id,
        &user.user_id,
        Template::message(event_type, content),
        Some(txn),
    )
    .await?;
    Ok(send_message_event::v3::Response::new(event_id))
}

async fn redact(
    server: Arc<Server>,
    req: Ruma<redact_event::v3::Request>,
) -> Result<redact_event::v3::Response> {
    let user = req.user();
    let b = &req.body;
    let mut content = json!({});
    if let Some(reason) = &b.reason {
        content["reason"] = json!(reason);
    }
    let mut template = Template::message(TimelineEventType::RoomRedaction, content);
    template.redacts = Some(b.event_id.clone());
    let scope = format!("redact {}", b.room_id);
    let txn = Txn {
        device_id: user.device_id.as_str(),
        scope: &scope,
        txn_id: b.txn_id.as_str(),
    };
    let event_id =
        timeline::append(&server, &b.room_id, &user.user_id, template, Some(txn)).await?;
    Ok(redact_event::v3::Response::new(event_id))
}

async fn history(
    server: Arc<Server>,
    req: Ruma<get_message_events::v3::Request>,
) -> Result<get_message_events::v3::Response> {
    let user = req.user();
    let b = &req.body;
    let request = messages::PageRequest {
        from: b.from.as_deref(),
        to: b.to.as_deref(),
        dir: b.dir,
        limit: u64::from(b.limit) as usize,
        filter: &b.filter,
    };
    let page = messages::messages(
        &server,
        &b.room_id,
        &user.user_id,
        user.device_id.as_str(),
        request,
    )
    .await?;
    let mut response = get_message_events::v3::Response::new();
    response.start = page.start;
    response.end = page.end;
    response.chunk = page.chunk.into_iter().map(raw).collect();
    response.state = page.state.into_iter().map(raw).collect();
    Ok(response)
}

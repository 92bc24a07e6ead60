//! spec: "Sending events to a room", "Getting events for a room" (`/messages`), "Redactions".

use std::sync::Arc;

use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::client::{
        message::{get_message_events, send_message_event},
        peeking::get_current_state::{self, v3::PaginationChunk},
        redact::redact_event,
        room::{Visibility, get_event_by_timestamp},
    },
    events::TimelineEventType,
};
use serde_json::json;

use super::room::raw;
use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::{
        account_data, directory, presence,
        rooms::{
            messages::{self, PageRequest},
            relations, state,
            timeline::{self, Template, Txn},
        },
    },
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(send)
        .ruma(history)
        .ruma(redact)
        .ruma(room_initial_sync)
        .ruma(event_by_timestamp)
}

/// `GET /rooms/{roomId}/initialSync`: a snapshot of one room — its latest
/// messages, its state and the user's room account data — for a member, a
/// former member (as of leaving) or anyone when the room is world-readable.
async fn room_initial_sync(
    server: Arc<Server>,
    req: Ruma<get_current_state::v3::Request>,
) -> Result<get_current_state::v3::Response> {
    let user = req.user();
    let room_id = &req.body.room_id;
    let state_events = state::state_events(&server, room_id, &user.user_id).await?;
    let filter = ruma::api::client::filter::RoomEventFilter::default();
    let page = messages::messages(
        &server,
        room_id,
        &user.user_id,
        user.device_id.as_str(),
        PageRequest {
            from: None,
            to: None,
            dir: ruma::api::Direction::Backward,
            limit: INITIAL_SYNC_MESSAGES,
            filter: &filter,
        },
    )
    .await?;
    let mut chunk: Vec<_> = page.chunk.into_iter().map(raw).collect();
    chunk.reverse();
    let mut messages = PaginationChunk::new(chunk, page.start);
    messages.start = page.end;
    let mut response = get_current_state::v3::Response::new(room_id.clone());
    response.messages = Some(messages);
    response.state = state_events.into_iter().map(raw).collect();
    response.membership = server
        .db
        .membership(room_id.as_str(), user.user_id.as_str())
        .await?
        .map(|(m, _)| m.as_str().into());
    response.account_data = account_data::room_events(&server, &user.user_id, room_id).await?;
    response.visibility = Some(if directory::is_public(&server, room_id).await? {
        Visibility::Public
    } else {
        Visibility::Private
    });
    Ok(response)
}

const INITIAL_SYNC_MESSAGES: usize = 20;

/// `GET /rooms/{roomId}/timestamp_to_event`.
async fn event_by_timestamp(
    server: Arc<Server>,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<get_event_by_timestamp::v1::Response> {
    let b = &req.body;
    let (event_id, ts) = messages::event_near(
        &server,
        &b.room_id,
        &req.user().user_id,
        b.ts.get().into(),
        b.dir,
    )
    .await?;
    Ok(get_event_by_timestamp::v1::Response::new(
        event_id,
        MilliSecondsSinceUnixEpoch(UInt::new_saturating(ts as u64)),
    ))
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
    presence::active(&server, &user.user_id).await?;
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

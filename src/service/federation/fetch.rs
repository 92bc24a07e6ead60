//! Asking another server for events this server lacks: spec server-server
//! API, "Retrieving event authorisation information", "Backfilling and
//! retrieving missing events", "Retrieving events".

use ruma::{
    EventId, OwnedEventId, RoomId, ServerName, UInt,
    api::federation::{
        authorization::get_event_authorization, backfill::get_backfill, event::get_event,
        event::get_missing_events, event::get_room_state,
    },
};
use serde_json::value::RawValue;

use super::remote_error;
use crate::{Result, Server};

/// The auth chain of `event_id`, as `origin` knows it.
pub async fn auth_chain(
    server: &Server,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<Vec<Box<RawValue>>> {
    let request =
        get_event_authorization::v1::Request::new(room_id.to_owned(), event_id.to_owned());
    let response = server
        .federation
        .send(origin, request)
        .await
        .map_err(|e| remote_error(origin, "fetching an auth chain", &e))?;
    Ok(response.auth_chain)
}

/// Events between what we have (`earliest`) and `latest`, oldest first at
/// most `limit` of them.
pub async fn missing_events(
    server: &Server,
    origin: &ServerName,
    room_id: &RoomId,
    earliest: Vec<OwnedEventId>,
    latest: Vec<OwnedEventId>,
    limit: u32,
) -> Result<Vec<Box<RawValue>>> {
    let mut request = get_missing_events::v1::Request::new(room_id.to_owned(), earliest, latest);
    request.limit = UInt::from(limit);
    let response = server
        .federation
        .send(origin, request)
        .await
        .map_err(|e| remote_error(origin, "fetching missing events", &e))?;
    Ok(response.events)
}

/// The state before `event_id` and its auth chain, as full events.
pub async fn state_at(
    server: &Server,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<(Vec<Box<RawValue>>, Vec<Box<RawValue>>)> {
    let request = get_room_state::v1::Request::new(event_id.to_owned(), room_id.to_owned());
    let response = server
        .federation
        .send(origin, request)
        .await
        .map_err(|e| remote_error(origin, "fetching the state at an event", &e))?;
    Ok((response.pdus, response.auth_chain))
}

/// One event.
pub async fn event(
    server: &Server,
    origin: &ServerName,
    event_id: &EventId,
) -> Result<Box<RawValue>> {
    let response = server
        .federation
        .send(origin, get_event::v1::Request::new(event_id.to_owned()))
        .await
        .map_err(|e| remote_error(origin, "fetching an event", &e))?;
    Ok(response.pdu)
}

/// History before `from`, at most `limit` events.
pub async fn backfill(
    server: &Server,
    origin: &ServerName,
    room_id: &RoomId,
    from: Vec<OwnedEventId>,
    limit: u32,
) -> Result<Vec<Box<RawValue>>> {
    let request = get_backfill::v1::Request::new(room_id.to_owned(), from, UInt::from(limit));
    let response = server
        .federation
        .send(origin, request)
        .await
        .map_err(|e| remote_error(origin, "backfilling", &e))?;
    Ok(response.pdus)
}

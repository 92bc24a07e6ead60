//! Serving a room's events to other servers: spec server-server API,
//! "Retrieving events", "Retrieving event authorisation information",
//! "Backfilling and retrieving missing events". Only servers with a member
//! in the room are answered.

use std::collections::HashSet;

use ruma::{EventId, RoomId, ServerName};
use serde_json::value::RawValue;

use crate::{Error, Result, Server, store::events::StoredEvent};

/// Most events one `/get_missing_events` or `/backfill` answer carries.
const MAX_EVENTS: usize = 100;

/// `M_FORBIDDEN` unless a user of `origin` is joined to the room (or was
/// invited: its server may need the room's events to accept).
pub async fn require_server_in_room(
    server: &Server,
    room_id: &RoomId,
    origin: &ServerName,
) -> Result<()> {
    if server
        .db
        .server_in_room(room_id.as_str(), origin.as_str())
        .await?
    {
        return Ok(());
    }
    Err(Error::forbidden(format!("{origin} is not in {room_id}")))
}

/// One event, for a server in its room.
pub async fn event(
    server: &Server,
    origin: &ServerName,
    event_id: &EventId,
) -> Result<Box<RawValue>> {
    let event = server
        .db
        .event(event_id.as_str())
        .await?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let room_id = RoomId::parse(&event.room_id).map_err(Error::internal)?;
    require_server_in_room(server, &room_id, origin).await?;
    raw(&event)
}

/// The state before an event and the auth chain of that state, as ids.
pub async fn state_ids_before(
    server: &Server,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<(Vec<String>, Vec<String>)> {
    require_server_in_room(server, room_id, origin).await?;
    let places = server.db.event_places(&[event_id.to_string()]).await?;
    let place = places
        .get(event_id.as_str())
        .filter(|p| p.rejected.is_none() && p.outlier == 0)
        .ok_or_else(|| Error::not_found("No state is known at that event"))?;
    let state: Vec<String> = match place.state_group_before {
        Some(group) => server.db.state_map(group).await?.into_values().collect(),
        None => Vec::new(),
    };
    let chain = auth_chain(server, room_id, &state).await?;
    Ok((state, chain))
}

/// The auth chain of `ids`; from room version 12 on with the room's create
/// event, which no event names among its auth events any more but every
/// server needs to check them.
async fn auth_chain(server: &Server, room_id: &RoomId, ids: &[String]) -> Result<Vec<String>> {
    let mut chain = server.db.auth_chain(ids).await?;
    let version = crate::service::rooms::require_room(server, room_id).await?;
    let rules = corvid_federation::rules_for(&version).map_err(Error::internal)?;
    if rules.authorization.room_create_event_id_as_room_id {
        chain.insert(format!("${}", &room_id.as_str()[1..]));
    }
    Ok(chain.into_iter().collect())
}

/// The auth chain of an event, as ids.
pub async fn auth_chain_ids(
    server: &Server,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<Vec<String>> {
    require_server_in_room(server, room_id, origin).await?;
    let event = server
        .db
        .event(event_id.as_str())
        .await?
        .filter(|e| e.room_id == room_id.as_str())
        .ok_or_else(|| Error::not_found("Event not found"))?;
    auth_chain(server, room_id, std::slice::from_ref(&event.event_id)).await
}

/// The events of `ids` as PDUs, in stream order.
pub async fn pdus(server: &Server, ids: &[String]) -> Result<Vec<Box<RawValue>>> {
    server.db.events(ids).await?.iter().map(raw).collect()
}

/// The events before `latest` that are not `earliest` nor before them, at
/// least `min_depth` deep, oldest first.
pub async fn missing_events(
    server: &Server,
    origin: &ServerName,
    room_id: &RoomId,
    earliest: &[String],
    latest: &[String],
    limit: usize,
    min_depth: i64,
) -> Result<Vec<Box<RawValue>>> {
    require_server_in_room(server, room_id, origin).await?;
    let limit = limit.min(MAX_EVENTS);
    let mut seen: HashSet<String> = earliest.iter().chain(latest).cloned().collect();
    let mut frontier: Vec<String> = server
        .db
        .prev_events_of(room_id.as_str(), latest)
        .await?
        .into_iter()
        .flat_map(|(_, prevs, _)| prevs)
        .collect();
    let mut found: Vec<String> = Vec::new();
    while !frontier.is_empty() && found.len() < limit {
        frontier.retain(|id| seen.insert(id.clone()));
        let known = server
            .db
            .prev_events_of(room_id.as_str(), &frontier)
            .await?;
        frontier.clear();
        for (id, prevs, depth) in known {
            if depth < min_depth || found.len() == limit {
                continue;
            }
            found.push(id);
            frontier.extend(prevs);
        }
    }
    let mut events = server.db.events(&found).await?;
    events.sort_by_key(|e| (depth_of(e), e.stream_ordering));
    as_seen_by(server, origin, room_id, &events).await
}

/// `/backfill`: history from `from` backwards, at most `limit` events.
pub async fn backfill(
    server: &Server,
    origin: &ServerName,
    room_id: &RoomId,
    from: &[String],
    limit: usize,
) -> Result<Vec<Box<RawValue>>> {
    require_server_in_room(server, room_id, origin).await?;
    let events = server
        .db
        .events_backwards(room_id.as_str(), from, limit.min(MAX_EVENTS))
        .await?;
    as_seen_by(server, origin, room_id, &events).await
}

/// The events as `origin` may see them: in full where the room's history
/// visibility at the event lets one of its users see it, redacted (so the
/// graph stays whole) where not. spec: client-server API, "History
/// visibility", applied to a server's users as a whole.
async fn as_seen_by(
    server: &Server,
    origin: &ServerName,
    room_id: &RoomId,
    events: &[StoredEvent],
) -> Result<Vec<Box<RawValue>>> {
    let version = crate::service::rooms::require_room(server, room_id).await?;
    let rules = corvid_federation::rules_for(&version).map_err(Error::internal)?;
    let mut out = Vec::with_capacity(events.len());
    let mut by_group: std::collections::HashMap<i64, bool> = std::collections::HashMap::new();
    for event in events {
        let visible = match event.state_group_before {
            Some(group) => match by_group.get(&group) {
                Some(v) => *v,
                None => {
                    let v = server_may_see(server, origin, group).await?;
                    by_group.insert(group, v);
                    v
                }
            },
            // No state known before it (the room's create event, history
            // this server fetched itself): as shareable as the room is now.
            None => match server
                .db
                .room(room_id.as_str())
                .await?
                .and_then(|r| r.state_group)
            {
                Some(group) => server_may_see(server, origin, group).await?,
                None => false,
            },
        };
        if visible {
            out.push(raw(event)?);
        } else {
            let object: ruma::CanonicalJsonObject = serde_json::from_str(&event.pdu)?;
            let redacted = ruma::canonical_json::redact(object, &rules.redaction, None)
                .map_err(Error::internal)?;
            out.push(RawValue::from_string(serde_json::to_string(&redacted)?)?);
        }
    }
    Ok(out)
}

/// Whether a user of `origin` could see an event with the state of `group` before it.
async fn server_may_see(server: &Server, origin: &ServerName, group: i64) -> Result<bool> {
    let state = server.db.state_map(group).await?;
    let visibility = match state.get(&("m.room.history_visibility".to_owned(), String::new())) {
        Some(id) => match server.db.event(id).await? {
            Some(e) => {
                serde_json::from_str::<serde_json::Value>(&e.pdu)?["content"]["history_visibility"]
                    .as_str()
                    .unwrap_or("shared")
                    .to_owned()
            }
            None => "shared".to_owned(),
        },
        None => "shared".to_owned(),
    };
    if visibility == "world_readable" || visibility == "shared" {
        return Ok(true);
    }
    let suffix = format!(":{origin}");
    let members: Vec<String> = state
        .iter()
        .filter(|((t, k), _)| t == "m.room.member" && k.ends_with(&suffix))
        .map(|(_, id)| id.clone())
        .collect();
    for event in server.db.events(&members).await? {
        let membership =
            serde_json::from_str::<serde_json::Value>(&event.pdu)?["content"]["membership"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        if membership == "join" || (membership == "invite" && visibility == "invited") {
            return Ok(true);
        }
    }
    Ok(false)
}

fn depth_of(event: &StoredEvent) -> i64 {
    serde_json::from_str::<serde_json::Value>(&event.pdu)
        .ok()
        .and_then(|v| v["depth"].as_i64())
        .unwrap_or_default()
}

fn raw(event: &StoredEvent) -> Result<Box<RawValue>> {
    Ok(RawValue::from_string(event.pdu.clone())?)
}

/// `GET /timestamp_to_event`: the room's event closest to `ts` in direction
/// `forward` (at or after it) or back (at or before it).
pub async fn event_near(
    server: &Server,
    origin: &ServerName,
    room_id: &RoomId,
    ts: i64,
    forward: bool,
) -> Result<(String, i64)> {
    require_server_in_room(server, room_id, origin).await?;
    let cursor = (ts, if forward { i64::MIN } else { i64::MAX });
    let mut found = server
        .db
        .room_events_by_ts(room_id.as_str(), cursor, forward, 1)
        .await?;
    let (event, ts) = found
        .pop()
        .ok_or_else(|| Error::not_found("No event found in that direction"))?;
    Ok((event.event_id, ts))
}

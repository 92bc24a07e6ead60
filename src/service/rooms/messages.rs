//! History: `/messages`, `/context`, `/event`.
//!
//! A pagination token is a stream position `N` that sits between events `N`
//! and `N+1`: backwards from `N` returns events `<= N`, forwards returns
//! events `> N`. Sync's `prev_batch` and `next_batch` are the same kind of
//! token, so a client can page back from any sync.

use ruma::{
    EventId, RoomId, UserId,
    api::{Direction, client::filter::RoomEventFilter},
};

use super::{
    events::{ClientEvent, Format, format_events},
    visibility::Viewer,
};
use crate::{
    Error, Result, Server, service::filter, service::sync::SyncToken, store::events::StoredEvent,
};

pub struct Page {
    pub chunk: Vec<ClientEvent>,
    pub start: String,
    pub end: Option<String>,
    pub state: Vec<ClientEvent>,
}

const MAX_LIMIT: usize = 1000;
/// Rows read per query while filling a filtered page.
const BATCH: i64 = 100;

/// What `/messages` asks for.
pub struct PageRequest<'a> {
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub dir: Direction,
    pub limit: usize,
    pub filter: &'a RoomEventFilter,
}

/// A page of history the user may see, from the device's point of view
/// (its own transaction ids are echoed).
pub async fn messages(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
    device: &str,
    req: PageRequest<'_>,
) -> Result<Page> {
    let PageRequest {
        from,
        to,
        dir,
        limit,
        filter,
    } = req;
    super::require_room(server, room_id).await?;
    let limit = limit.min(MAX_LIMIT);
    let from = match from {
        Some(t) => SyncToken::parse(t)?.pos,
        None if dir == Direction::Backward => server.db.stream_position().await?,
        None => 0,
    };
    let to = to.map(SyncToken::parse).transpose()?.map(|t| t.pos);
    // The first rows are read beside the viewer's history (on PostgreSQL
    // one round trip instead of two in a row); they are used only once the
    // viewer may read the room.
    // A page that no filter thins out needs `limit` rows; later reads,
    // if any, take full batches.
    let first_size = (limit as i64).clamp(1, BATCH);
    let (viewer, first) = tokio::try_join!(
        Viewer::load(server, room_id, user),
        read_batch(server, room_id, dir, from, to, first_size),
    )?;
    if !viewer.ever_member() && !viewer.can_see_anything() {
        return Err(Error::forbidden("You are not in this room"));
    }
    let ignored = crate::service::ignore::ignored_by(server, user).await?;

    let mut chunk: Vec<StoredEvent> = Vec::new();
    let mut cursor = from;
    let mut exhausted = limit == 0;
    let mut may_backfill = dir == Direction::Backward && to.is_none();
    let mut read = Some((first, first_size));
    while chunk.len() < limit && !exhausted {
        let (batch, size) = match read.take() {
            Some(first) => first,
            None => (
                read_batch(server, room_id, dir, cursor, to, BATCH).await?,
                BATCH,
            ),
        };
        exhausted = (batch.len() as i64) < size;
        // Past the oldest event held here: ask the room's other servers for
        // older history (once per page), then read on.
        if exhausted && may_backfill && chunk.len() + batch.len() < limit {
            may_backfill = false;
            exhausted = crate::service::federation::backfill::backfill(server, room_id).await? == 0;
        }
        for event in batch {
            cursor = match dir {
                Direction::Backward => event.stream_ordering - 1,
                Direction::Forward => event.stream_ordering,
            };
            let hidden = event.state_key.is_none() && ignored.contains(&event.sender);
            if viewer.can_see(&event) && filter::matches(filter, &event) && !hidden {
                chunk.push(event);
                if chunk.len() == limit {
                    break;
                }
            }
        }
    }
    let end = (!exhausted || chunk.len() == limit).then(|| SyncToken::at(cursor).to_string());
    let state = if filter.lazy_load_options.is_disabled() {
        Vec::new()
    } else {
        lazy_members(server, room_id, &chunk).await?
    };
    Ok(Page {
        chunk: format_events(server, &chunk, Some((user, device)), Format::Client).await?,
        start: SyncToken::at(from).to_string(),
        end,
        state,
    })
}

/// Up to `size` events from the token `cursor` on in direction `dir`, not
/// past the token `to`.
async fn read_batch(
    server: &Server,
    room_id: &RoomId,
    dir: Direction,
    cursor: i64,
    to: Option<i64>,
    size: i64,
) -> Result<Vec<StoredEvent>> {
    let room = room_id.as_str();
    match dir {
        Direction::Backward => {
            let lower = to.unwrap_or(i64::MIN);
            server.db.room_events_desc(room, lower, cursor, size).await
        }
        Direction::Forward => {
            let upper = to.map(|t| t + 1).unwrap_or(i64::MAX);
            server
                .db
                .room_events_asc(room, cursor + 1, upper, size)
                .await
        }
    }
}

/// `GET /rooms/{roomId}/timestamp_to_event`: the visible event closest to
/// `ts` in direction `dir` (at or after it going forward, at or before it
/// going backward), as `(event id, origin_server_ts)`.
pub async fn event_near(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
    ts: i64,
    dir: Direction,
) -> Result<(ruma::OwnedEventId, i64)> {
    super::require_room(server, room_id).await?;
    let viewer = Viewer::load(server, room_id, user).await?;
    if !viewer.ever_member() && !viewer.can_see_anything() {
        return Err(Error::forbidden("You are not in this room"));
    }
    let forward = dir == Direction::Forward;
    let mut cursor = (ts, if forward { i64::MIN } else { i64::MAX });
    loop {
        let batch = server
            .db
            .room_events_by_ts(room_id.as_str(), cursor, forward, BATCH)
            .await?;
        let exhausted = (batch.len() as i64) < BATCH;
        for (event, event_ts) in batch {
            if viewer.can_see(&event) {
                let id = event
                    .event_id
                    .as_str()
                    .try_into()
                    .map_err(Error::internal)?;
                return Ok((id, event_ts));
            }
            cursor = (event_ts, event.stream_ordering);
        }
        if exhausted {
            return Err(Error::not_found("No event found in that direction"));
        }
    }
}

/// The member events of the senders of `events`, for lazy-loading clients.
pub async fn lazy_members(
    server: &Server,
    room_id: &RoomId,
    events: &[StoredEvent],
) -> Result<Vec<ClientEvent>> {
    let mut senders: Vec<&str> = events.iter().map(|e| e.sender.as_str()).collect();
    senders.sort_unstable();
    senders.dedup();
    let mut members = Vec::new();
    for sender in senders {
        if let Some(e) = server
            .db
            .current_state_event(room_id.as_str(), "m.room.member", sender)
            .await?
        {
            members.push(e);
        }
    }
    format_events(server, &members, None, Format::Client).await
}

/// One event, if the user may see it.
pub async fn event(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
    device: &str,
    event_id: &EventId,
) -> Result<ClientEvent> {
    let viewer = Viewer::load(server, room_id, user).await?;
    let event = visible_event(server, room_id, &viewer, event_id).await?;
    let mut out = format_events(server, &[event], Some((user, device)), Format::Client).await?;
    Ok(out.remove(0))
}

/// An event of the room, or `M_NOT_FOUND` when there is none the viewer may see.
pub(super) async fn visible_event(
    server: &Server,
    room_id: &RoomId,
    viewer: &Viewer,
    event_id: &EventId,
) -> Result<StoredEvent> {
    let event = server
        .db
        .event(event_id.as_str())
        .await?
        .filter(|e| e.room_id == room_id.as_str());
    let Some(event) = event else {
        return Err(Error::not_found("Event not found"));
    };
    if !viewer.can_see(&event) {
        return Err(Error::not_found("Event not found"));
    }
    Ok(event)
}

pub struct Context {
    pub event: ClientEvent,
    pub before: Vec<ClientEvent>,
    pub after: Vec<ClientEvent>,
    pub start: String,
    pub end: String,
    pub state: Vec<ClientEvent>,
}

/// spec: `/context/{eventId}`: the event, `limit` events around it, and the state at the last one returned.
pub async fn context(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
    device: &str,
    event_id: &EventId,
    limit: usize,
    filter: &RoomEventFilter,
) -> Result<Context> {
    let viewer = Viewer::load(server, room_id, user).await?;
    let event = visible_event(server, room_id, &viewer, event_id).await?;
    let half = limit.min(MAX_LIMIT) / 2;
    let before_token = SyncToken::at(event.stream_ordering - 1).to_string();
    let after_token = SyncToken::at(event.stream_ordering).to_string();
    let backward = PageRequest {
        from: Some(&before_token),
        to: None,
        dir: Direction::Backward,
        limit: half,
        filter,
    };
    let before = messages(server, room_id, user, device, backward).await?;
    let forward = PageRequest {
        from: Some(&after_token),
        to: None,
        dir: Direction::Forward,
        limit: limit.min(MAX_LIMIT) - half,
        filter,
    };
    let after = messages(server, room_id, user, device, forward).await?;
    let state_events = server.db.state_events_after(&event).await?;
    let state_events: Vec<StoredEvent> = if filter.lazy_load_options.is_disabled() {
        state_events
    } else {
        state_events
            .into_iter()
            .filter(|e| e.event_type != "m.room.member")
            .collect()
    };
    let mut state = format_events(server, &state_events, None, Format::Client).await?;
    state.extend(before.state);
    Ok(Context {
        event: format_events(server, &[event], Some((user, device)), Format::Client)
            .await?
            .remove(0),
        start: before.end.unwrap_or(before.start),
        end: after.end.unwrap_or(after.start),
        before: before.chunk,
        after: after.chunk,
        state,
    })
}

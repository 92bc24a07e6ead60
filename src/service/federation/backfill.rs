//! Fetching history from before this server joined a room: spec
//! server-server API, "Backfilling and retrieving missing events". Asked for
//! when a client pages back past the oldest events held here.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, RoomId};

use super::{fetch, ingest};
use crate::{Result, Server, service::rooms};

/// Events asked for per request.
const PER_REQUEST: u32 = 50;
/// A room whose servers had nothing older is not asked again for this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Rooms whose history could not be extended lately.
#[derive(Default)]
pub struct Exhausted {
    rooms: Mutex<HashMap<OwnedRoomId, Instant>>,
}

impl Exhausted {
    fn recently(&self, room_id: &RoomId) -> bool {
        let rooms = self.rooms.lock().expect("backfill throttle");
        rooms
            .get(room_id)
            .is_some_and(|at| at.elapsed() < RETRY_AFTER)
    }

    fn mark(&self, room_id: &RoomId) {
        let mut rooms = self.rooms.lock().expect("backfill throttle");
        if rooms.len() > 10_000 {
            rooms.retain(|_, at| at.elapsed() < RETRY_AFTER);
        }
        rooms.insert(room_id.to_owned(), Instant::now());
    }
}

/// Asks the room's other servers for the events before the oldest ones
/// held here; how many new events were stored.
pub async fn backfill(server: &Server, room_id: &RoomId) -> Result<usize> {
    if server.backfills.recently(room_id) {
        return Ok(0);
    }
    // Nobody else to ask (a room of this server alone): the common case, and
    // one indexed read, before the walk for the oldest events below.
    let servers: Vec<OwnedServerName> = server
        .db
        .room_servers(room_id.as_str())
        .await?
        .into_iter()
        .filter(|s| s != server.server_name().as_str())
        .filter_map(|s| s.try_into().ok())
        .collect();
    if servers.is_empty() {
        return Ok(0);
    }
    let from: Vec<OwnedEventId> = server
        .db
        .backward_extremities(room_id.as_str(), 20)
        .await?
        .into_iter()
        .filter_map(|id| id.try_into().ok())
        .collect();
    if from.is_empty() {
        server.backfills.mark(room_id);
        return Ok(0);
    }
    let version = rooms::require_room(server, room_id).await?;
    let rules = corvid_federation::rules_for(&version).map_err(crate::Error::internal)?;
    for destination in servers {
        match fetch::backfill(server, &destination, room_id, from.clone(), PER_REQUEST).await {
            Ok(pdus) => {
                let stored = ingest::store_backfilled(server, &rules, room_id, pdus).await?;
                if stored > 0 {
                    tracing::debug!(%room_id, %destination, stored, "backfilled");
                    return Ok(stored);
                }
            }
            Err(e) => tracing::info!(%room_id, %destination, error = %e.message, "backfill failed"),
        }
    }
    server.backfills.mark(room_id);
    Ok(0)
}

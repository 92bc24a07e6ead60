//! Receiving events into a room's graph: spec server-server API, "Checks
//! performed on receipt of a PDU". Steps 1 to 3 are [`super::pdu::verify`];
//! here the events are completed with what they depend on — missing auth
//! events (stored as outliers), missing prev events (`/get_missing_events`,
//! else the state at the gap from `/state`) — and handed to
//! [`super::place`] for steps 4 to 6 and the write.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use futures::future::join_all;
use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, RoomId, ServerName,
    room_version_rules::RoomVersionRules,
};
use serde_json::value::RawValue;

use super::{
    fetch,
    pdu::{IncomingPdu, Located},
    place::{self, StateBefore, create_event_id, new_event},
};
use crate::{
    Error, Result, Server,
    service::rooms::timeline,
    store::{
        StreamItem,
        events::{Placement, StateMap, StoredEvent},
        federation::EventPlace,
    },
};

/// Events asked of another server per `/get_missing_events`, and how many
/// answers one gap may take.
const MISSING_EVENTS_LIMIT: u32 = 100;
const GAP_ROUNDS: usize = 10;

/// What to do with an accepted event besides storing it.
#[derive(Debug, Clone, Copy)]
pub struct Handling {
    /// Send it to the other servers in the room: our own events, and the
    /// joins, leaves and knocks other servers hand us through make/send.
    pub broadcast: bool,
    /// Whether `origin` may be asked for missing prev events.
    pub fetch_missing: bool,
}

impl Handling {
    /// An event another server sent us in a transaction.
    pub const RECEIVED: Self = Self {
        broadcast: false,
        fetch_missing: true,
    };
    /// An event we must pass on to the room.
    pub const BROADCAST: Self = Self {
        broadcast: true,
        fetch_missing: true,
    };
}

/// Verifies and ingests PDUs of one room, in depth order. PDUs whose auth
/// and prev events are held (or come before them in the same
/// transaction) are placed together in one write; one that needs events
/// fetched first goes on its own. One room's PDUs are ingested one at a time.
pub async fn receive(
    server: &Arc<Server>,
    origin: &ServerName,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    objects: Vec<(OwnedEventId, CanonicalJsonObject)>,
) -> Vec<(OwnedEventId, Result<()>)> {
    let _room = server.room_ingest.lock(room_id.as_str()).await;
    let checked = join_all(objects.into_iter().map(|(id, object)| async move {
        (id, super::pdu::verify(server, object, rules, room_id).await)
    }))
    .await;
    let mut results = Vec::new();
    let mut verified = Vec::new();
    for (id, checked) in checked {
        match checked {
            Ok(pdu) => verified.push(pdu),
            Err(e) => results.push((id, Err(e))),
        }
    }
    verified.sort_by_key(|p| p.depth);
    let cited: Vec<String> = verified
        .iter()
        .flat_map(|p| {
            [p.event_id.to_string()]
                .into_iter()
                .chain(p.auth_ids.clone())
                .chain(p.prev_ids.clone())
        })
        .collect();
    let mut held = match server.db.event_places(&cited).await {
        Ok(places) => places,
        Err(e) => {
            let failed = verified
                .into_iter()
                .map(|p| (p.event_id, Err(Error::internal(&e.message))));
            return results.into_iter().chain(failed).collect();
        }
    };
    let mut batch: Vec<IncomingPdu> = Vec::new();
    for pdu in verified {
        let id = pdu.event_id.clone();
        let placed = match held.get(id.as_str()) {
            Some(place) => in_graph(server, place).await.unwrap_or(true),
            None => false,
        };
        if let Some(place) = held.get(id.as_str()).filter(|_| placed) {
            let known = match &place.rejected {
                Some(reason) => Err(Error::forbidden(format!("Event was rejected: {reason}"))),
                None => Ok(()),
            };
            results.push((id, known));
            continue;
        }
        let in_batch = |e: &String| batch.iter().any(|b| b.event_id.as_str() == e);
        let ready = pdu
            .auth_ids
            .iter()
            .all(|a| held.contains_key(a) || in_batch(a))
            && pdu.prev_ids.iter().all(|p| {
                in_batch(p)
                    || held
                        .get(p)
                        .is_some_and(|h| h.outlier == 0 || h.rejected.is_some())
            });
        if ready {
            batch.push(pdu);
            continue;
        }
        results.extend(place_batch(server, rules, std::mem::take(&mut batch)).await);
        let result = ingest(server, origin, rules, pdu, Handling::RECEIVED).await;
        if result.is_ok()
            && let Ok(mut places) = server.db.event_places(&[id.to_string()]).await
        {
            held.extend(places.drain());
        }
        results.push((id, result));
    }
    results.extend(place_batch(server, rules, batch).await);
    for (id, result) in &results {
        if let Err(e) = result {
            tracing::info!(event_id = %id, %origin, error = %e.message.as_str(), "PDU not accepted");
        }
    }
    results
}

/// Places a batch in one write; when that write fails, each on its own, so
/// one bad event never takes the others down.
async fn place_batch(
    server: &Arc<Server>,
    rules: &RoomVersionRules,
    batch: Vec<IncomingPdu>,
) -> Vec<(OwnedEventId, Result<()>)> {
    if batch.is_empty() {
        return Vec::new();
    }
    let events = batch
        .iter()
        .map(|p| (p, StateBefore::FromPrevEvents(Vec::new())))
        .collect();
    match place::place_all(server, rules, events, false).await {
        Ok(results) => batch
            .iter()
            .map(|p| p.event_id.clone())
            .zip(results)
            .collect(),
        Err(e) if batch.len() == 1 => vec![(batch[0].event_id.clone(), Err(e))],
        Err(e) => {
            tracing::warn!(error = %e.message, size = batch.len(), "placing a batch failed; placing its events one by one");
            let mut results = Vec::with_capacity(batch.len());
            for pdu in &batch {
                let before = StateBefore::FromPrevEvents(Vec::new());
                results.push((
                    pdu.event_id.clone(),
                    place::place(server, rules, pdu, before, false).await,
                ));
            }
            results
        }
    }
}

/// Ingests one verified event: fetches what it depends on, then persists
/// it. Known events are accepted again without effect.
pub async fn ingest(
    server: &Arc<Server>,
    origin: &ServerName,
    rules: &RoomVersionRules,
    pdu: IncomingPdu,
    handling: Handling,
) -> Result<()> {
    if let Some(place) = known(server, &pdu.event_id).await?
        && in_graph(server, &place).await?
    {
        return match place.rejected {
            Some(reason) => Err(Error::forbidden(format!("Event was rejected: {reason}"))),
            None => Ok(()),
        };
    }
    fill_auth_events(server, origin, rules, &pdu).await?;
    let extra_states = fill_prev_events(server, origin, rules, &pdu, handling).await?;
    let before = StateBefore::FromPrevEvents(extra_states);
    place::place(server, rules, &pdu, before, handling.broadcast).await
}

/// Whether a held event has its place in the graph already: placed, or an
/// outlier older than the timeline (history before this server joined,
/// which must not be placed now, after events that came after it). An
/// outlier at the front (first met as an auth event) is placed when it
/// arrives itself.
async fn in_graph(server: &Server, place: &EventPlace) -> Result<bool> {
    if place.outlier == 0 || place.rejected.is_some() {
        return Ok(true);
    }
    server.db.cited_by_timeline(&place.event_id).await
}

async fn known(server: &Server, event_id: &EventId) -> Result<Option<EventPlace>> {
    let id = event_id.to_string();
    Ok(server
        .db
        .event_places(std::slice::from_ref(&id))
        .await?
        .remove(&id))
}

/// Fetches the auth chain from `origin` when some auth events are unknown.
async fn fill_auth_events(
    server: &Arc<Server>,
    origin: &ServerName,
    rules: &RoomVersionRules,
    pdu: &IncomingPdu,
) -> Result<()> {
    let wanted = pdu.auth_ids.clone();
    let places = server.db.event_places(&wanted).await?;
    if wanted.iter().all(|id| places.contains_key(id)) {
        return Ok(());
    }
    let chain = fetch::auth_chain(server, origin, &pdu.room_id, &pdu.event_id).await?;
    store_outliers(server, rules, &pdu.room_id, chain).await?;
    let places = server.db.event_places(&wanted).await?;
    match wanted.iter().find(|id| !places.contains_key(*id)) {
        Some(missing) => Err(Error::forbidden(format!(
            "Auth event {missing} of {} could not be found",
            pdu.event_id
        ))),
        None => Ok(()),
    }
}

/// Makes the event's prev events known: asks `origin` for the events in
/// between, and for prev events still missing after that, for the state
/// after them (returned: the caller resolves it with the known ones).
async fn fill_prev_events(
    server: &Arc<Server>,
    origin: &ServerName,
    rules: &RoomVersionRules,
    pdu: &IncomingPdu,
    handling: Handling,
) -> Result<Vec<StateMap>> {
    let prevs = pdu.prev_ids.clone();
    let mut missing = without_state(server, &prevs).await?;
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    if handling.fetch_missing {
        fill_gap(server, origin, rules, pdu).await;
        missing = without_state(server, &prevs).await?;
    }
    let mut states = Vec::with_capacity(missing.len());
    if !missing.is_empty() {
        tracing::info!(event_id = %pdu.event_id, ?missing, %origin, "prev events missing: placing the event on the state at them");
    }
    for prev in missing {
        let prev = OwnedEventId::try_from(prev).map_err(|e| Error::bad_json(e.to_string()))?;
        states.push(remote_state_after(server, origin, rules, &pdu.room_id, &prev).await?);
    }
    Ok(states)
}

/// Those of `ids` whose state after is unknown: not held, or outliers.
async fn without_state(server: &Server, ids: &[String]) -> Result<Vec<String>> {
    let places = server.db.event_places(ids).await?;
    Ok(ids
        .iter()
        .filter(|id| {
            places
                .get(*id)
                .is_none_or(|p| p.outlier != 0 && p.rejected.is_none())
        })
        .cloned()
        .collect())
}

/// `/get_missing_events` from our forward extremities to the event, asked
/// again from the oldest events of each answer while they still cite events
/// we lack (at most [`GAP_ROUNDS`] answers): placing an event on the state at
/// a prev event instead would show it before that prev event once it came.
/// Then each event is ingested oldest first (without asking again).
async fn fill_gap(
    server: &Arc<Server>,
    origin: &ServerName,
    rules: &RoomVersionRules,
    pdu: &IncomingPdu,
) {
    let room_id = &pdu.room_id;
    let earliest: Vec<OwnedEventId> = match server.db.forward_extremity_ids(room_id.as_str()).await
    {
        Ok(ids) => ids
            .into_iter()
            .filter_map(|id| id.try_into().ok())
            .collect(),
        Err(_) => return,
    };
    let mut found: HashMap<String, IncomingPdu> = HashMap::new();
    let mut latest = vec![pdu.event_id.clone()];
    for _ in 0..GAP_ROUNDS {
        let events = match fetch::missing_events(
            server,
            origin,
            room_id,
            earliest.clone(),
            latest,
            MISSING_EVENTS_LIMIT,
        )
        .await
        {
            Ok(events) => events,
            Err(e) => {
                tracing::info!(%origin, error = %e.message.as_str(), "get_missing_events failed");
                break;
            }
        };
        let answered = events.len();
        let Ok(events) = verify_all(server, rules, room_id, events).await else {
            break;
        };
        for event in events {
            found.insert(event.event_id.to_string(), event);
        }
        let cited: Vec<String> = found.values().flat_map(|e| e.prev_ids.clone()).collect();
        let Ok(held) = server.db.event_places(&cited).await else {
            break;
        };
        let lacking = |id: &String| !found.contains_key(id) && !held.contains_key(id);
        latest = found
            .values()
            .filter(|e| e.prev_ids.iter().any(lacking))
            .map(|e| e.event_id.clone())
            .collect();
        if latest.is_empty() || answered < MISSING_EVENTS_LIMIT as usize {
            break;
        }
    }
    let mut found: Vec<IncomingPdu> = found.into_values().collect();
    found.sort_by_key(|p| p.depth);
    let quiet = Handling {
        fetch_missing: false,
        ..Handling::RECEIVED
    };
    for missing in found {
        let id = missing.event_id.clone();
        if let Err(e) = Box::pin(ingest(server, origin, rules, missing, quiet)).await {
            tracing::info!(event_id = %id, error = %e.message.as_str(), "missing event not accepted");
        }
    }
}

/// The state after an event we do not hold, from `origin`: the state
/// before it (`/state`) plus itself when it is a state event; those events
/// are stored as outliers (a message is not stored at all: it takes its
/// place in the timeline if it arrives itself).
async fn remote_state_after(
    server: &Arc<Server>,
    origin: &ServerName,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<StateMap> {
    let (state, auth_chain) = fetch::state_at(server, origin, room_id, event_id).await?;
    let event = fetch::event(server, origin, event_id).await?;
    let state_ids: Vec<(String, String, OwnedEventId)> = state
        .iter()
        .filter_map(|raw| state_key_of(server, rules, raw))
        .collect();
    let mut everything = state;
    everything.extend(auth_chain);
    let this = state_key_of(server, rules, &event);
    if this.is_some() {
        everything.push(event);
    }
    store_outliers(server, rules, room_id, everything).await?;
    let accepted: Vec<String> = state_ids
        .iter()
        .map(|(_, _, id)| id.to_string())
        .chain(this.iter().map(|(_, _, id)| id.to_string()))
        .collect();
    let places = server.db.event_places(&accepted).await?;
    let mut map = StateMap::new();
    for (t, k, id) in state_ids.into_iter().chain(this) {
        if places
            .get(id.as_str())
            .is_some_and(|p| p.rejected.is_none())
        {
            map.insert((t, k), id.to_string());
        }
    }
    Ok(map)
}

/// `(type, state key, event id)` of a raw state event.
fn state_key_of(
    _server: &Server,
    rules: &RoomVersionRules,
    raw: &RawValue,
) -> Option<(String, String, OwnedEventId)> {
    let object: CanonicalJsonObject = serde_json::from_str(raw.get()).ok()?;
    let kind = object.get("type")?.as_str()?.to_owned();
    let key = object.get("state_key")?.as_str()?.to_owned();
    let mut unsigned_free = object;
    unsigned_free.remove("unsigned");
    unsigned_free.remove("event_id");
    let id = corvid_federation::event_id_for(&unsigned_free, rules).ok()?;
    Some((kind, key, id))
}

/// Checks 1–3 for many raw PDUs at once; those failing are logged and left
/// out, and a PDU given twice is checked once.
async fn verify_all(
    server: &Server,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    raws: Vec<Box<RawValue>>,
) -> Result<Vec<IncomingPdu>> {
    let located = locate_all(rules, room_id, raws).await?;
    check_all(server, rules, located).await
}

/// [`verify_all`] for the PDUs we do not hold yet (a rejoin, or a backfill
/// that overlaps what we have, needs no second signature check).
async fn verify_new(
    server: &Server,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    raws: Vec<Box<RawValue>>,
) -> Result<Vec<IncomingPdu>> {
    let mut located = locate_all(rules, room_id, raws).await?;
    let ids: Vec<String> = located.iter().map(|l| l.event_id().to_string()).collect();
    let held = server.db.event_places(&ids).await?;
    located.retain(|l| !held.contains_key(l.event_id().as_str()));
    check_all(server, rules, located).await
}

/// Check 1, the event id and the room of each PDU, once per event id.
async fn locate_all(
    rules: &RoomVersionRules,
    room_id: &RoomId,
    raws: Vec<Box<RawValue>>,
) -> Result<Vec<Located>> {
    let objects = raws
        .iter()
        .filter_map(|raw| kept(super::pdu::parse_object(raw)))
        .collect();
    let mut ids = HashSet::new();
    Ok(super::pdu::locate_many(objects, rules, room_id)
        .await?
        .into_iter()
        .filter_map(kept)
        .filter(|l| ids.insert(l.event_id().to_owned()))
        .collect())
}

/// Checks 2 and 3 of located PDUs.
async fn check_all(
    server: &Server,
    rules: &RoomVersionRules,
    located: Vec<Located>,
) -> Result<Vec<IncomingPdu>> {
    Ok(super::pdu::check_many(server, located, rules)
        .await?
        .into_iter()
        .filter_map(kept)
        .collect())
}

/// The value of a check that passed; a failed one is logged and dropped.
fn kept<T>(checked: Result<T>) -> Option<T> {
    checked
        .inspect_err(
            |e| tracing::info!(error = %e.message.as_str(), "event from another server dropped"),
        )
        .ok()
}

/// Stores events whose place in the graph we do not know (auth chains, the
/// state at a gap or at a join) as outliers, each checked against its own
/// auth events (spec check 4; failures are stored as rejected).
pub async fn store_outliers(
    server: &Server,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    raws: Vec<Box<RawValue>>,
) -> Result<()> {
    store_without_state(server, rules, room_id, raws, Placement::Outlier).await?;
    Ok(())
}

/// Stores older history from `/backfill`: shown in the timeline before
/// everything else (positions counting down from 0, the deepest event
/// nearest), checked against its auth events; never an extremity, never
/// part of the current state. Returns how many events were new.
pub async fn store_backfilled(
    server: &Server,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    raws: Vec<Box<RawValue>>,
) -> Result<usize> {
    store_without_state(server, rules, room_id, raws, Placement::Backfilled).await
}

async fn store_without_state(
    server: &Server,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    raws: Vec<Box<RawValue>>,
    placement: Placement,
) -> Result<usize> {
    let mut pdus = verify_new(server, rules, room_id, raws).await?;
    if pdus.is_empty() {
        return Ok(0);
    }
    // Auth events before the events they authorise.
    pdus.sort_by_key(|p| p.depth);
    let mut auth_ids: Vec<String> = pdus
        .iter()
        .flat_map(|p| p.auth_ids.iter().cloned())
        .collect();
    auth_ids.extend(create_event_id(room_id, rules));
    auth_ids.sort();
    auth_ids.dedup();
    let mut accepted: HashMap<String, StoredEvent> = server
        .db
        .events(&auth_ids)
        .await?
        .into_iter()
        .map(|e| (e.event_id.clone(), e))
        .collect();
    let mut w = server.db.write().await?;
    let mut positions = match placement {
        // Newest first: the deepest event takes the position nearest 0.
        Placement::Backfilled => w.backfill_positions(pdus.len() as i64).await?,
        _ => {
            w.reserve_stream_positions(pdus.len() as i64).await?;
            Vec::new()
        }
    };
    let mut stored = 0;
    for pdu in &pdus {
        let mut auth: Vec<StoredEvent> = pdu
            .auth_ids
            .iter()
            .chain(create_event_id(room_id, rules).iter())
            .filter_map(|id| accepted.get(id).cloned())
            .collect();
        auth.dedup_by(|a, b| a.event_id == b.event_id);
        match timeline::authorize(rules, &pdu.pdu, &auth) {
            Ok(()) => {
                let position = match positions.pop() {
                    Some(p) => p,
                    None => w.next_stream_position(StreamItem::Event).await?,
                };
                let new_event = new_event(&position, pdu, None, placement, None);
                w.stage_received(&new_event).await?;
                accepted.insert(pdu.event_id.to_string(), new_event.to_stored());
                stored += 1;
            }
            Err(e) => {
                tracing::info!(event_id = %pdu.event_id, reason = %e.message.as_str(), "event without state rejected");
                let id = pdu.event_id.as_str();
                w.insert_rejected(id, room_id.as_str(), &pdu.json, &e.message, pdu.depth, None)
                    .await?;
            }
        }
    }
    w.commit().await?;
    Ok(stored)
}

//! Receiving events into a room's graph: spec server-server API, "Checks
//! performed on receipt of a PDU", steps 4 to 6 (steps 1 to 3 are
//! [`super::pdu::verify`]).
//!
//! fill in missing auth events (stored as outliers) → fill in missing prev
//! events (`/get_missing_events`, else the state at the gap from `/state`)
//! → in one write transaction: the state before the event (resolution over
//! its prev events' states), auth against its auth events and that state
//! (else rejected), against the current state (else soft-failed), persist,
//! the new current state over the forward extremities → wake the room.

use std::{collections::HashMap, sync::Arc};

use futures::future::join_all;
use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, RoomId, ServerName,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res,
};
use serde_json::{Map, Value, value::RawValue};

use super::{fetch, pdu::IncomingPdu, sender};
use crate::{
    Error, Result, Server,
    service::{
        push,
        rooms::{
            pdu::Pdu,
            resolve,
            timeline::{self, Appended, Template},
        },
    },
    store::{
        WriteTx,
        events::{NewEvent, Placement, StateMap, StoredEvent},
        federation::{EventPlace, Outgoing},
        push::NewPushAction,
    },
};

/// Events asked of another server for one gap, at most.
const MISSING_EVENTS_LIMIT: u32 = 50;

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

/// Where the state before an event comes from.
pub enum StateBefore {
    /// The resolution of its prev events' states, with the states after
    /// prev events we do not hold (fetched from another server).
    FromPrevEvents(Vec<StateMap>),
    /// Given: the state a resident server returned with a join.
    Known(StateMap),
}

/// Verifies and ingests PDUs of one room in depth order; one room's PDUs
/// are ingested one at a time.
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
    let mut ok = Vec::new();
    for (id, checked) in checked {
        match checked {
            Ok(pdu) => ok.push((id, pdu)),
            Err(e) => results.push((id, Err(e))),
        }
    }
    ok.sort_by_key(|(_, p)| p.depth);
    for (id, pdu) in ok {
        let result = ingest(server, origin, rules, pdu, Handling::RECEIVED).await;
        if let Err(e) = &result {
            tracing::info!(event_id = %id, %origin, error = %e.message.as_str(), "PDU not accepted");
        }
        results.push((id, result));
    }
    results
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
    if let Some(place) = known(server, &pdu.event_id).await? {
        return match place.rejected {
            Some(reason) => Err(Error::forbidden(format!("Event was rejected: {reason}"))),
            None => Ok(()),
        };
    }
    fill_auth_events(server, origin, rules, &pdu).await?;
    let extra_states = fill_prev_events(server, origin, rules, &pdu, handling).await?;
    persist(
        server,
        rules,
        &pdu,
        StateBefore::FromPrevEvents(extra_states),
        handling,
    )
    .await
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

/// `/get_missing_events` from our forward extremities to the event, each
/// result ingested oldest first (without asking again for their own gaps).
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
    let events = match fetch::missing_events(
        server,
        origin,
        room_id,
        earliest,
        vec![pdu.event_id.clone()],
        MISSING_EVENTS_LIMIT,
    )
    .await
    {
        Ok(events) => events,
        Err(e) => {
            tracing::info!(%origin, error = %e.message.as_str(), "get_missing_events failed");
            return;
        }
    };
    let mut verified = verify_all(server, rules, room_id, events).await;
    verified.sort_by_key(|p| p.depth);
    let quiet = Handling {
        fetch_missing: false,
        ..Handling::RECEIVED
    };
    for missing in verified {
        let id = missing.event_id.clone();
        if let Err(e) = Box::pin(ingest(server, origin, rules, missing, quiet)).await {
            tracing::info!(event_id = %id, error = %e.message.as_str(), "missing event not accepted");
        }
    }
}

/// The state after an event we do not hold, from `origin`: the state
/// before it (`/state`) plus itself; every event of it stored as an outlier.
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
    everything.push(event);
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

/// Checks 1–3 for many raw PDUs at once; those failing are logged and left out.
pub async fn verify_all(
    server: &Server,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    raws: Vec<Box<RawValue>>,
) -> Vec<IncomingPdu> {
    let checks = raws.into_iter().map(|raw| async move {
        let object = super::pdu::parse_object(&raw)?;
        super::pdu::verify(server, object, rules, room_id).await
    });
    let mut verified: Vec<IncomingPdu> = Vec::new();
    for result in join_all(checks).await {
        match result {
            Ok(pdu) if !verified.iter().any(|v| v.event_id == pdu.event_id) => verified.push(pdu),
            Ok(_) => {}
            Err(e) => {
                tracing::info!(error = %e.message.as_str(), "event from another server dropped")
            }
        }
    }
    verified
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
    let mut pdus = verify_all(server, rules, room_id, raws).await;
    let ids: Vec<String> = pdus.iter().map(|p| p.event_id.to_string()).collect();
    let held = server.db.event_places(&ids).await?;
    pdus.retain(|p| !held.contains_key(p.event_id.as_str()));
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
                    None => w.next_stream_position().await?,
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

/// v12: the create event is not among the auth events but is named by the room id.
fn create_event_id(room_id: &RoomId, rules: &RoomVersionRules) -> Option<String> {
    rules
        .authorization
        .room_create_event_id_as_room_id
        .then(|| format!("${}", &room_id.as_str()[1..]))
}

/// The row of a received event at `position`.
pub(super) fn new_event<'a>(
    position: &i64,
    pdu: &'a IncomingPdu,
    state_group_before: Option<i64>,
    placement: Placement,
    unsigned_extra: Option<&'a str>,
) -> NewEvent<'a> {
    NewEvent {
        stream_ordering: *position,
        event_id: pdu.event_id.as_str(),
        room_id: pdu.room_id.as_str(),
        event_type: pdu.kind_str(),
        state_key: pdu.state_key(),
        sender: pdu.pdu.sender.as_str(),
        origin_server_ts: pdu.pdu.origin_server_ts.get().into(),
        depth: pdu.depth,
        pdu: &pdu.json,
        prev_events: &pdu.prev_ids,
        auth_events: &pdu.auth_ids,
        unsigned_extra,
        state_group_before,
        txn: None,
        redacts: pdu.pdu.redacts.as_ref().map(|r| r.as_str()),
        placement,
    }
}

/// The state entries the auth rules read for `pdu`, with the create event.
fn auth_keys(rules: &RoomVersionRules, pdu: &Pdu) -> Result<Vec<(String, String)>> {
    let mut keys: Vec<(String, String)> = state_res::auth_types_for_event(
        &pdu.kind,
        &pdu.sender,
        pdu.state_key.as_deref(),
        &pdu.content,
        &rules.authorization,
    )
    .map_err(|e| Error::bad_json(format!("Invalid event content: {e}")))?
    .into_iter()
    .map(|(t, k)| (t.to_string(), k))
    .collect();
    keys.push((StateEventType::RoomCreate.to_string(), String::new()));
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The events of `state` at `keys`, read through `w`.
async fn state_events(
    w: &mut WriteTx<'_>,
    state: &StateMap,
    keys: &[(String, String)],
) -> Result<Vec<Pdu>> {
    let ids: Vec<String> = keys.iter().filter_map(|k| state.get(k).cloned()).collect();
    w.events_by_id(&ids)
        .await?
        .iter()
        .map(Pdu::from_stored)
        .collect()
}

/// Checks 4–6 and the write: the event, its state, the room's new current
/// state and forward extremities, its notifications and, when broadcast,
/// its place in other servers' outboxes. Returns once committed.
pub async fn persist(
    server: &Arc<Server>,
    rules: &RoomVersionRules,
    pdu: &IncomingPdu,
    before: StateBefore,
    handling: Handling,
) -> Result<()> {
    let room_id = &pdu.room_id;
    let template = template_of(pdu)?;
    let planned = push::plan(server, room_id, &pdu.pdu.sender, &template).await?;
    let mut w = server.db.write().await?;
    // The stream counter before the room, as the event writer takes them
    // (the other order deadlocks on PostgreSQL): the event and up to two
    // new state groups.
    w.reserve_stream_positions(3).await?;
    let room = w
        .lock_room(room_id.as_str(), server.db.backend())
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    let skip_soft_fail = matches!(before, StateBefore::Known(_));
    let (group_before, map_before) = state_before(&mut w, rules, pdu, before).await?;

    let keys = auth_keys(rules, &pdu.pdu)?;
    if let Err(reason) = check_auth(&mut w, rules, pdu, &map_before, &keys).await {
        w.insert_rejected(
            pdu.event_id.as_str(),
            room_id.as_str(),
            &pdu.json,
            reason.message.as_str(),
            pdu.depth,
            group_before,
        )
        .await?;
        w.commit().await?;
        return Err(reason);
    }
    let current = match room.state_group {
        Some(group) if group == group_before.unwrap_or(i64::MIN) => map_before.clone(),
        Some(group) => w.state_map(group).await?,
        None => StateMap::new(),
    };
    let soft_failed = !skip_soft_fail && {
        let current_events = state_events(&mut w, &current, &keys).await?;
        timeline::authorize_by_state(rules, &pdu.pdu, &current_events).is_err()
    };
    let placement = if soft_failed {
        tracing::info!(event_id = %pdu.event_id, "event soft-failed");
        Placement::SoftFailed
    } else {
        Placement::Received
    };

    let replaced = match pdu.state_key() {
        Some(key) => match map_before.get(&(pdu.kind_str().to_owned(), key.to_owned())) {
            Some(id) => w.events_by_id(std::slice::from_ref(id)).await?.pop(),
            None => None,
        },
        None => None,
    };
    let unsigned = timeline::unsigned_extra(Map::new(), replaced.as_ref())?;
    let position = w.next_stream_position().await?;
    let new_event = new_event(&position, pdu, group_before, placement, unsigned.as_deref());
    w.stage_received(&new_event).await?;
    if !soft_failed {
        update_current_state(&mut w, rules, room_id, room.state_group, &current, position).await?;
        let ts = crate::now_ms();
        let thread_ids: Vec<String> = planned.iter().map(|p| p.thread_id.clone()).collect();
        let rows: Vec<NewPushAction<'_>> = planned
            .iter()
            .zip(&thread_ids)
            .map(|(p, thread_id)| NewPushAction {
                user_id: p.user_id.as_str(),
                stream_ordering: position,
                room_id: room_id.as_str(),
                event_id: pdu.event_id.as_str(),
                thread_id,
                actions: &p.actions,
                highlight: p.highlight,
                ts,
            })
            .collect();
        w.insert_push_actions(&rows).await?;
    }
    let destinations = if handling.broadcast {
        queue_for_room(server, &mut w, pdu, position).await?
    } else {
        Vec::new()
    };
    w.commit().await?;
    tracing::debug!(event_id = %pdu.event_id, %room_id, ?placement, "event received");
    if !soft_failed {
        let member = (pdu.pdu.kind == TimelineEventType::RoomMember)
            .then(|| pdu.state_key().map(str::to_owned))
            .flatten();
        let appended = Appended {
            event_id: pdu.event_id.clone(),
            stream_ordering: position,
            room_id: room_id.clone(),
            member,
            event: new_event.to_stored(),
        };
        timeline::notify(server, &[appended]).await;
    }
    sender::wake(server, &destinations);
    Ok(())
}

/// The state before the event and its group (`None`: the empty state).
async fn state_before(
    w: &mut WriteTx<'_>,
    rules: &RoomVersionRules,
    pdu: &IncomingPdu,
    before: StateBefore,
) -> Result<(Option<i64>, StateMap)> {
    let room_id = pdu.room_id.as_str();
    let extra = match before {
        StateBefore::Known(map) => {
            let group = w.insert_state_snapshot(room_id, None, &map).await?;
            return Ok((Some(group), map));
        }
        StateBefore::FromPrevEvents(extra) => extra,
    };
    let places = w.event_places(&pdu.prev_ids).await?;
    let mut groups: Vec<i64> = places
        .values()
        .filter_map(EventPlace::state_group_after)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    match (groups.as_slice(), extra.is_empty()) {
        ([], true) => Ok((None, StateMap::new())),
        ([group], true) => Ok((Some(*group), w.state_map(*group).await?)),
        _ => {
            let mut maps = extra;
            for group in &groups {
                maps.push(w.state_map(*group).await?);
            }
            let resolved = resolve::resolve_maps(w, rules, maps).await?;
            let group = w
                .insert_state_snapshot(room_id, groups.first().copied(), &resolved)
                .await?;
            Ok((Some(group), resolved))
        }
    }
}

/// Checks 4 and 5: against the event's auth events, then the state before it.
async fn check_auth(
    w: &mut WriteTx<'_>,
    rules: &RoomVersionRules,
    pdu: &IncomingPdu,
    before: &StateMap,
    keys: &[(String, String)],
) -> Result<()> {
    let mut auth_ids = pdu.auth_ids.clone();
    auth_ids.extend(create_event_id(&pdu.room_id, rules));
    let auth = w.events_by_id(&auth_ids).await?;
    timeline::authorize(rules, &pdu.pdu, &auth)?;
    let before_events = state_events(w, before, keys).await?;
    timeline::authorize_by_state(rules, &pdu.pdu, &before_events)
}

/// The room's current state after the event: the state after its forward
/// extremities, resolved when they differ.
async fn update_current_state(
    w: &mut WriteTx<'_>,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    current_group: Option<i64>,
    current: &StateMap,
    position: i64,
) -> Result<()> {
    let extremities = w.extremity_ids(room_id.as_str()).await?;
    let places = w.event_places(&extremities).await?;
    let mut groups: Vec<i64> = places
        .values()
        .filter_map(EventPlace::state_group_after)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let (group, state) = match groups.as_slice() {
        [] => return Ok(()),
        [group] if Some(*group) == current_group => return Ok(()),
        [group] => (*group, w.state_map(*group).await?),
        _ => {
            let resolved = resolve::resolve_groups(w, rules, &groups).await?;
            if resolved == *current {
                return Ok(());
            }
            let group = w
                .insert_state_snapshot(room_id.as_str(), current_group, &resolved)
                .await?;
            (group, resolved)
        }
    };
    w.replace_current_state(room_id.as_str(), group, current, &state, position)
        .await?;
    Ok(())
}

/// Queues the event for every other server in the room (and the target of
/// a membership change, who may just have left); returns the destinations.
async fn queue_for_room(
    server: &Server,
    w: &mut WriteTx<'_>,
    pdu: &IncomingPdu,
    position: i64,
) -> Result<Vec<String>> {
    let mut destinations = w
        .servers_of_rooms(&[pdu.room_id.as_str()])
        .await?
        .remove(pdu.room_id.as_str())
        .unwrap_or_default();
    if pdu.pdu.kind == TimelineEventType::RoomMember
        && let Some((_, target_server)) = pdu.state_key().and_then(|k| k.split_once(':'))
    {
        destinations.push(target_server.to_owned());
    }
    destinations.sort();
    destinations.dedup();
    destinations.retain(|d| d != server.server_name().as_str());
    let items: Vec<(&str, Outgoing<'_>)> = destinations
        .iter()
        .map(|d| {
            (
                d.as_str(),
                Outgoing::Pdu {
                    event_id: pdu.event_id.as_str(),
                    position,
                },
            )
        })
        .collect();
    w.outbox_push(&items).await?;
    Ok(destinations)
}

/// The event as push rules see a client's send.
fn template_of(pdu: &IncomingPdu) -> Result<Template> {
    let content: Value = serde_json::from_str(pdu.pdu.content.get())?;
    Ok(Template {
        event_type: pdu.pdu.kind.clone(),
        content,
        state_key: pdu.pdu.state_key.clone(),
        redacts: pdu.pdu.redacts.clone(),
        unsigned: Map::new(),
    })
}

//! Placing received events in a room's graph: spec server-server API,
//! "Checks performed on receipt of a PDU", steps 4 to 6, and the write.
//!
//! Several events of one room are placed in one write transaction, in
//! order (a transaction of 50 messages costs one commit, not 50). For each:
//! the state before it (its prev events' states, resolved when they
//! differ), auth against its auth events and that state (else rejected),
//! against the current state (else soft-failed), then the row, the room's
//! new current state over its forward extremities, its notifications and,
//! when broadcast, its place in other servers' outboxes.
//!
//! The common case is cheap: an event whose prev events' state is the
//! room's current state is checked against the `current_state` table (steps
//! 5 and 6 are then one check), and a message on it changes no state.

use std::{collections::HashMap, sync::Arc};

use ruma::{
    RoomId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res,
};
use serde_json::{Map, Value};

use super::{pdu::IncomingPdu, sender};
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
        StreamItem, WriteTx,
        events::{NewEvent, Placement, StateMap, StoredEvent},
        federation::{EventPlace, Outgoing},
        push::{NewNotification, Recipients},
    },
};

/// Where the state before an event comes from.
pub enum StateBefore {
    /// The resolution of its prev events' states, with the states after
    /// prev events we do not hold (fetched from another server).
    FromPrevEvents(Vec<StateMap>),
    /// Given: the state a resident server returned with a join.
    Known(StateMap),
}

/// Places one event (see [`place_all`]).
pub async fn place(
    server: &Arc<Server>,
    rules: &RoomVersionRules,
    pdu: &IncomingPdu,
    before: StateBefore,
    broadcast: bool,
) -> Result<()> {
    let mut results = place_all(server, rules, vec![(pdu, before)], broadcast).await?;
    results.pop().unwrap_or(Ok(()))
}

/// Places events of one room, in order, in one write transaction; each
/// one's outcome (a rejection is an `Err` of its own). The outer error is
/// a failed transaction: nothing was written.
pub async fn place_all(
    server: &Arc<Server>,
    rules: &RoomVersionRules,
    events: Vec<(&IncomingPdu, StateBefore)>,
    broadcast: bool,
) -> Result<Vec<Result<()>>> {
    let Some((first, _)) = events.first() else {
        return Ok(Vec::new());
    };
    let room_id = first.room_id.clone();
    let mut plans = Vec::with_capacity(events.len());
    for (pdu, _) in &events {
        let template = template_of(pdu)?;
        plans.push(push::plan(server, &room_id, &pdu.pdu.sender, &template).await?);
    }
    let mut w = server.db.write().await?;
    // The stream counter before the room, as the event writer takes them
    // (the other order deadlocks on PostgreSQL): each event and up to two
    // new state groups.
    w.reserve_stream_positions(3 * events.len() as i64).await?;
    let room = w
        .lock_room(room_id.as_str(), server.db.backend())
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    // Events held as outliers until now take their place in the graph.
    let ids: Vec<String> = events.iter().map(|(p, _)| p.event_id.to_string()).collect();
    w.forget_outliers(&ids).await?;
    let mut placing = Placing {
        rules,
        room_id: &room_id,
        current_group: room.state_group,
        placed: HashMap::new(),
    };
    let mut results = Vec::with_capacity(events.len());
    let mut appended = Vec::new();
    let mut destinations = Vec::new();
    for ((pdu, before), plan) in events.into_iter().zip(plans) {
        match placing.place_in(&mut w, pdu, before, &plan).await {
            Ok(Placed { event, position }) => {
                if broadcast {
                    destinations.extend(queue_for_room(server, &mut w, pdu, position).await?);
                }
                appended.extend(event);
                results.push(Ok(()));
            }
            // A failed statement aborts the whole transaction.
            Err(e) if e.status.is_server_error() => return Err(e),
            Err(e) => results.push(Err(e)),
        }
    }
    w.commit().await?;
    timeline::notify(server, &appended).await;
    destinations.sort();
    destinations.dedup();
    sender::wake(server, &destinations);
    Ok(results)
}

/// An event written: what wakes the room (none when soft-failed) and its position.
struct Placed {
    event: Option<Appended>,
    position: i64,
}

/// One transaction's placing of events of a room.
struct Placing<'a> {
    rules: &'a RoomVersionRules,
    room_id: &'a RoomId,
    /// The room's current state group, as the events placed so far left it.
    current_group: Option<i64>,
    /// The events placed in this transaction.
    placed: HashMap<String, EventPlace>,
}

impl Placing<'_> {
    async fn place_in(
        &mut self,
        w: &mut WriteTx<'_>,
        pdu: &IncomingPdu,
        before: StateBefore,
        plan: &Arc<Recipients>,
    ) -> Result<Placed> {
        let mut keys = auth_keys(self.rules, &pdu.pdu)?;
        let replaces = pdu
            .state_key()
            .map(|k| (pdu.kind_str().to_owned(), k.to_owned()));
        let skip_soft_fail = matches!(before, StateBefore::Known(_));
        let prev_groups = self.prev_groups(w, pdu).await?;
        let on_current = matches!(&before, StateBefore::FromPrevEvents(extra) if extra.is_empty())
            && !prev_groups.is_empty()
            && prev_groups.iter().all(|g| Some(*g) == self.current_group);

        let (group_before, replaced, soft_failed) = if on_current {
            // The state before it is the current state: steps 5 and 6 are one.
            keys.extend(replaces.clone());
            let state = w.current_state_for(self.room_id.as_str(), &keys).await?;
            if let Err(reason) = self.check(w, pdu, &state).await {
                return self.reject(w, pdu, self.current_group, reason).await;
            }
            let replaced = replaces.as_ref().and_then(|(t, k)| {
                state
                    .iter()
                    .find(|e| e.event_type == *t && e.state_key.as_deref() == Some(k.as_str()))
                    .cloned()
            });
            (self.current_group, replaced, false)
        } else {
            let (group_before, map_before) = self.state_before(w, before, &prev_groups).await?;
            let ids: Vec<String> = keys
                .iter()
                .filter_map(|k| map_before.get(k).cloned())
                .collect();
            let state = w.events_by_id(&ids).await?;
            if let Err(reason) = self.check(w, pdu, &state).await {
                return self.reject(w, pdu, group_before, reason).await;
            }
            let current = self.current_map(w, group_before, &map_before).await?;
            let soft_failed = !skip_soft_fail && {
                let ids: Vec<String> = keys
                    .iter()
                    .filter_map(|k| current.get(k).cloned())
                    .collect();
                let state = pdus(&w.events_by_id(&ids).await?)?;
                timeline::authorize_by_state(self.rules, &pdu.pdu, &state).is_err()
            };
            let replaced = match replaces.as_ref().and_then(|k| map_before.get(k)) {
                Some(id) => w.events_by_id(std::slice::from_ref(id)).await?.pop(),
                None => None,
            };
            (group_before, replaced, soft_failed)
        };

        let placement = if soft_failed {
            tracing::info!(event_id = %pdu.event_id, "event soft-failed");
            Placement::SoftFailed
        } else {
            Placement::Received
        };
        let unsigned = timeline::unsigned_extra(Map::new(), replaced.as_ref())?;
        let position = w.next_stream_position(StreamItem::Event).await?;
        let row = new_event(&position, pdu, group_before, placement, unsigned.as_deref());
        w.stage_received(&row).await?;
        self.placed.insert(pdu.event_id.to_string(), place_of(&row));
        tracing::debug!(event_id = %pdu.event_id, room_id = %self.room_id, ?placement, "event received");
        if soft_failed {
            return Ok(Placed {
                event: None,
                position,
            });
        }
        // A message on the current state leaves it as it was.
        if !(on_current && pdu.state_key().is_none()) {
            self.update_current_state(w, position).await?;
        }
        stage_notifications(w, pdu, position, plan);
        let member = (pdu.pdu.kind == TimelineEventType::RoomMember)
            .then(|| pdu.state_key().map(str::to_owned))
            .flatten();
        Ok(Placed {
            event: Some(Appended {
                event_id: pdu.event_id.clone(),
                stream_ordering: position,
                room_id: self.room_id.to_owned(),
                member,
                event: row.to_stored(),
            }),
            position,
        })
    }

    /// The groups of the states after the event's prev events (those with a known state).
    async fn prev_groups(&self, w: &mut WriteTx<'_>, pdu: &IncomingPdu) -> Result<Vec<i64>> {
        let unplaced: Vec<String> = pdu
            .prev_ids
            .iter()
            .filter(|id| !self.placed.contains_key(*id))
            .cloned()
            .collect();
        let stored = w.event_places(&unplaced).await?;
        let mut groups: Vec<i64> = pdu
            .prev_ids
            .iter()
            .filter_map(|id| self.placed.get(id).or_else(|| stored.get(id)))
            .filter_map(EventPlace::state_group_after)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        Ok(groups)
    }

    /// Checks 4 and 5: the event's auth events, then `state` (the state
    /// before it, at the keys its auth rules read).
    async fn check(
        &self,
        w: &mut WriteTx<'_>,
        pdu: &IncomingPdu,
        state: &[StoredEvent],
    ) -> Result<()> {
        let mut auth_ids = pdu.auth_ids.clone();
        auth_ids.extend(create_event_id(self.room_id, self.rules));
        let auth = w.events_by_id(&auth_ids).await?;
        timeline::authorize(self.rules, &pdu.pdu, &auth)?;
        timeline::authorize_by_state(self.rules, &pdu.pdu, &pdus(state)?)
    }

    async fn reject(
        &self,
        w: &mut WriteTx<'_>,
        pdu: &IncomingPdu,
        group_before: Option<i64>,
        reason: Error,
    ) -> Result<Placed> {
        if reason.status.is_server_error() {
            return Err(reason);
        }
        tracing::info!(event_id = %pdu.event_id, reason = %reason.message, "event rejected");
        let (id, room) = (pdu.event_id.as_str(), self.room_id.as_str());
        w.insert_rejected(
            id,
            room,
            &pdu.json,
            &reason.message,
            pdu.depth,
            group_before,
        )
        .await?;
        Err(reason)
    }

    /// The state before the event and its group (`None`: the empty state).
    async fn state_before(
        &self,
        w: &mut WriteTx<'_>,
        before: StateBefore,
        groups: &[i64],
    ) -> Result<(Option<i64>, StateMap)> {
        let room_id = self.room_id.as_str();
        let extra = match before {
            StateBefore::Known(map) => {
                let group = w.insert_state_snapshot(room_id, None, &map).await?;
                return Ok((Some(group), map));
            }
            StateBefore::FromPrevEvents(extra) => extra,
        };
        match (groups, extra.is_empty()) {
            ([], true) => Ok((None, StateMap::new())),
            ([group], true) => Ok((Some(*group), w.state_map(*group).await?)),
            _ => {
                let mut maps = extra;
                for group in groups {
                    maps.push(w.state_map(*group).await?);
                }
                let resolved = resolve::resolve_maps(w, self.rules, maps).await?;
                let group = w
                    .insert_state_snapshot(room_id, groups.first().copied(), &resolved)
                    .await?;
                Ok((Some(group), resolved))
            }
        }
    }

    /// The current state as a map (the state before the event when that is it).
    async fn current_map(
        &self,
        w: &mut WriteTx<'_>,
        group_before: Option<i64>,
        before: &StateMap,
    ) -> Result<StateMap> {
        match self.current_group {
            Some(group) if Some(group) == group_before => Ok(before.clone()),
            Some(group) => w.state_map(group).await,
            None => Ok(StateMap::new()),
        }
    }

    /// The room's current state after the event: the state after its
    /// forward extremities, resolved when they differ.
    async fn update_current_state(&mut self, w: &mut WriteTx<'_>, position: i64) -> Result<()> {
        let room_id = self.room_id.as_str();
        let extremities = w.extremity_ids(room_id).await?;
        let places = w.event_places(&extremities).await?;
        let mut groups: Vec<i64> = places
            .values()
            .filter_map(EventPlace::state_group_after)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        let current = match self.current_group {
            Some(group) => w.state_map(group).await?,
            None => StateMap::new(),
        };
        let (group, state) = match groups.as_slice() {
            [] => return Ok(()),
            [group] if Some(*group) == self.current_group => return Ok(()),
            [group] => (*group, w.state_map(*group).await?),
            _ => {
                let resolved = resolve::resolve_groups(w, self.rules, &groups).await?;
                if resolved == current {
                    return Ok(());
                }
                let group = w
                    .insert_state_snapshot(room_id, self.current_group, &resolved)
                    .await?;
                (group, resolved)
            }
        };
        w.replace_current_state(room_id, group, &current, &state, position)
            .await?;
        self.current_group = Some(group);
        Ok(())
    }
}

/// Where a row just staged sits.
fn place_of(row: &NewEvent<'_>) -> EventPlace {
    EventPlace {
        event_id: row.event_id.to_owned(),
        state_key: row.state_key.map(str::to_owned),
        stream_ordering: Some(row.stream_ordering),
        state_group_before: row.state_group_before,
        depth: row.depth,
        outlier: i64::from(row.placement == Placement::Outlier),
        rejected: None,
    }
}

fn pdus(events: &[StoredEvent]) -> Result<Vec<Pdu>> {
    events.iter().map(Pdu::from_stored).collect()
}

/// The notifications the event causes, stored with it.
fn stage_notifications(
    w: &mut WriteTx<'_>,
    pdu: &IncomingPdu,
    position: i64,
    plan: &Arc<Recipients>,
) {
    w.stage_notifications(&[NewNotification {
        room_id: pdu.room_id.as_str(),
        stream_ordering: position,
        event_id: pdu.event_id.as_str(),
        ts: crate::now_ms(),
        recipients: plan,
    }]);
}

/// v12: the create event is not among the auth events but is named by the room id.
pub(super) fn create_event_id(room_id: &RoomId, rules: &RoomVersionRules) -> Option<String> {
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
    let event_id = pdu.event_id.as_str();
    let items: Vec<(&str, Outgoing<'_>)> = destinations
        .iter()
        .map(|d| (d.as_str(), Outgoing::Pdu { event_id, position }))
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

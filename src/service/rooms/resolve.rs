//! State resolution over stored state groups: the room version's algorithm
//! (ruma-state-res) fed from the database. spec: room versions, "State
//! resolution" (v2, and v2.1 from room version 12).

use std::collections::{HashMap, HashSet};

use ruma::{
    EventId, OwnedEventId,
    events::StateEventType,
    room_version_rules::RoomVersionRules,
    state_res::{self, StateMap as RumaStateMap, utils::event_id_set::EventIdSet},
};

use super::pdu::Pdu;
use crate::{
    Error, Result,
    store::{WriteTx, events::StateMap},
};

/// The resolved state of several state groups of a room, read through `w`.
pub async fn resolve_groups(
    w: &mut WriteTx<'_>,
    rules: &RoomVersionRules,
    groups: &[i64],
) -> Result<StateMap> {
    let mut groups = groups.to_vec();
    groups.sort_unstable();
    groups.dedup();
    let mut maps = Vec::with_capacity(groups.len());
    for group in &groups {
        maps.push(w.state_map(*group).await?);
    }
    resolve_maps(w, rules, maps).await
}

/// The resolved state of several states of a room, read through `w`.
pub async fn resolve_maps(
    w: &mut WriteTx<'_>,
    rules: &RoomVersionRules,
    mut maps: Vec<StateMap>,
) -> Result<StateMap> {
    maps.dedup();
    if maps.len() <= 1 {
        return Ok(maps.pop().unwrap_or_default());
    }
    let mut chains = Vec::with_capacity(maps.len());
    let mut wanted: HashSet<String> = HashSet::new();
    for map in &maps {
        let ids: Vec<String> = map.values().cloned().collect();
        let chain = w.auth_chain(&ids).await?;
        wanted.extend(ids);
        wanted.extend(chain.iter().cloned());
        chains.push(chain);
    }
    let wanted: Vec<String> = wanted.into_iter().collect();
    let events: HashMap<OwnedEventId, Pdu> = w
        .events_by_id(&wanted)
        .await?
        .iter()
        .map(|e| Pdu::from_stored(e).map(|p| (p.event_id.clone(), p)))
        .collect::<Result<_>>()?;
    let sides: Vec<RumaStateMap<OwnedEventId>> = maps.iter().map(to_ruma).collect::<Result<_>>()?;
    let chains: Vec<EventIdSet<OwnedEventId>> = chains
        .into_iter()
        .map(|chain| {
            chain
                .iter()
                .filter_map(|id| EventId::parse(id).ok())
                .collect()
        })
        .collect();
    let v2 = rules
        .state_res
        .v2_rules()
        .ok_or_else(|| Error::internal("room version without state resolution v2"))?;
    let resolved = state_res::resolve(
        &rules.authorization,
        v2,
        &sides,
        chains,
        |id| events.get(id).cloned(),
        |conflicted| Some(conflicted_state_subgraph(&events, conflicted)),
    )
    .map_err(|e| Error::internal(format!("state resolution failed: {e}")))?;
    Ok(resolved
        .into_iter()
        .map(|((t, k), id)| ((t.to_string(), k), id.to_string()))
        .collect())
}

fn to_ruma(map: &StateMap) -> Result<RumaStateMap<OwnedEventId>> {
    map.iter()
        .map(|((t, k), id)| {
            let id = OwnedEventId::try_from(id.as_str()).map_err(Error::internal)?;
            Ok(((StateEventType::from(t.as_str()), k.clone()), id))
        })
        .collect()
}

/// Room version 12: the events on an `auth_events` path from one conflicted
/// state event to another, endpoints included. Such a path only runs through
/// events in the conflicted events' auth chains, all of which `events` holds.
pub fn conflicted_state_subgraph(
    events: &HashMap<OwnedEventId, Pdu>,
    conflicted: &RumaStateMap<Vec<OwnedEventId>>,
) -> EventIdSet<OwnedEventId> {
    let starts: HashSet<&EventId> = conflicted.values().flatten().map(|e| e.as_ref()).collect();
    // Reached from a conflicted event by at least one edge.
    let below = reachable(starts.iter().copied(), |id| {
        events
            .get(id)
            .map(|e| e.auth_events.iter().map(|a| a.as_ref()).collect())
            .unwrap_or_default()
    });
    // Reaching a conflicted event by at least one edge.
    let mut children: HashMap<&EventId, Vec<&EventId>> = HashMap::new();
    for event in events.values() {
        for parent in &event.auth_events {
            children
                .entry(parent.as_ref())
                .or_default()
                .push(event.event_id.as_ref());
        }
    }
    let above = reachable(starts.iter().copied(), |id| {
        children.get(id).cloned().unwrap_or_default()
    });
    below
        .iter()
        .filter(|id| above.contains(*id))
        .chain(
            starts
                .iter()
                .filter(|id| below.contains(*id) || above.contains(*id)),
        )
        .map(|id| (*id).to_owned())
        .collect()
}

/// Every node reachable from `starts` by one edge or more.
fn reachable<'a>(
    starts: impl Iterator<Item = &'a EventId>,
    next: impl Fn(&'a EventId) -> Vec<&'a EventId>,
) -> HashSet<&'a EventId> {
    let mut seen = HashSet::new();
    let mut stack: Vec<&EventId> = starts.flat_map(&next).collect();
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            stack.extend(next(id));
        }
    }
    seen
}

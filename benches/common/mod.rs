//! A room event graph built in memory for the benchmarks: real signed room
//! version 12 PDUs (content hash, ed25519 signature, reference-hash event
//! ids, room id = create event hash) with auth events chosen the way
//! `service::rooms::timeline::append_in` chooses them, each checked against
//! the authorization rules as it is added, so a benchmark never times a
//! rejection by accident.
#![allow(dead_code)] // each bench binary uses a different part of this

use std::collections::HashMap;

use corvid::{service::rooms::pdu::Pdu, store::events::StoredEvent};
use corvid_federation::{ServerSigningKey, event_id_for, room_id_for_create, sign_pdu};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, OwnedUserId,
    canonical_json::to_canonical_value,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res::{self, StateMap, utils::event_id_set::EventIdSet},
};
use serde_json::{Value, json};

pub const SERVER: &str = "corvid.example.org";

pub fn user(localpart: &str) -> OwnedUserId {
    OwnedUserId::try_from(format!("@{localpart}:{SERVER}")).expect("valid user id")
}

pub fn signing_key() -> ServerSigningKey {
    let dir = std::env::temp_dir().join(format!("corvid-bench-key-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = ServerSigningKey::load_or_generate(&dir.join("signing.key")).expect("signing key");
    std::fs::remove_dir_all(&dir).expect("remove temp key dir");
    key
}

pub struct Event {
    pub pdu: Pdu,
    pub stored: StoredEvent,
}

/// One line of history: its state and its newest event. Clone it to fork.
#[derive(Clone, Default)]
pub struct Branch {
    pub state: HashMap<(String, String), OwnedEventId>,
    pub head: Option<OwnedEventId>,
    pub depth: i64,
}

pub struct Graph {
    pub rules: RoomVersionRules,
    pub room_id: Option<OwnedRoomId>,
    pub events: HashMap<OwnedEventId, Event>,
    key: ServerSigningKey,
    ts: u64,
    stream: i64,
}

impl Default for Graph {
    fn default() -> Self {
        Self::new()
    }
}

impl Graph {
    pub fn new() -> Self {
        Self {
            rules: RoomVersionRules::V12,
            room_id: None,
            events: HashMap::new(),
            key: signing_key(),
            ts: 1_764_000_000_000,
            stream: 0,
        }
    }

    pub fn get(&self, id: &EventId) -> Option<&Pdu> {
        self.events.get(id).map(|e| &e.pdu)
    }

    /// A public room made by `creator`: create, the creator's join, power
    /// levels (as `createRoom` sets them for v12), join rules, history visibility.
    pub fn public_room(&mut self, creator: &OwnedUserId) -> Branch {
        let mut b = Branch::default();
        self.append(
            &mut b,
            creator,
            "m.room.create",
            Some(""),
            json!({"room_version": "12"}),
        );
        self.join(&mut b, creator);
        self.append(
            &mut b,
            creator,
            "m.room.power_levels",
            Some(""),
            power_levels(json!({})),
        );
        self.append(
            &mut b,
            creator,
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": "public"}),
        );
        self.append(
            &mut b,
            creator,
            "m.room.history_visibility",
            Some(""),
            json!({"history_visibility": "shared"}),
        );
        b
    }

    pub fn join(&mut self, b: &mut Branch, who: &OwnedUserId) -> OwnedEventId {
        let content = json!({"membership": "join", "displayname": who.localpart()});
        self.append(b, who, "m.room.member", Some(who.as_str()), content)
    }

    /// Builds, signs and auth-checks an event on `b` without adding it.
    pub fn build(
        &mut self,
        b: &Branch,
        sender: &OwnedUserId,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Event {
        let rules = self.rules.clone();
        let rules = &rules;
        let kind_t = TimelineEventType::from(kind);
        let raw = serde_json::value::to_raw_value(&content).expect("raw content");
        let auth_types =
            state_res::auth_types_for_event(&kind_t, sender, state_key, &raw, &rules.authorization)
                .expect("auth types");
        let auth_events: Vec<&OwnedEventId> = auth_types
            .iter()
            .filter_map(|(t, k)| b.state.get(&(t.to_string(), k.clone())))
            .collect();
        self.ts += 1;
        let mut v = json!({
            "sender": sender,
            "type": kind,
            "origin_server_ts": self.ts,
            "depth": b.depth + 1,
            "prev_events": b.head.iter().collect::<Vec<_>>(),
            "auth_events": auth_events,
            "content": content,
        });
        if let Some(k) = state_key {
            v["state_key"] = json!(k);
        }
        if let Some(room_id) = &self.room_id {
            v["room_id"] = json!(room_id);
        }
        let mut object = to_object(v);
        sign_pdu(&mut object, SERVER, &self.key, rules).expect("sign");
        let event_id = event_id_for(&object, rules).expect("event id");
        if kind_t == TimelineEventType::RoomCreate {
            self.room_id = room_id_for_create(&object, rules).expect("room id");
        }
        let json = serde_json::to_string(&object).expect("serialise");
        let pdu = Pdu::parse(event_id.clone(), &json).expect("parse own PDU");

        state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, |id| {
            self.get(id)
        })
        .and_then(|()| {
            state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, |t, k| {
                b.state
                    .get(&(t.to_string(), k.to_owned()))
                    .and_then(|id| self.get(id))
            })
        })
        .unwrap_or_else(|e| panic!("bench set-up built a rejected {kind} event: {e}"));

        self.stream += 1;
        let stored = StoredEvent {
            stream_ordering: self.stream,
            event_id: event_id.to_string(),
            room_id: self.room_id.as_ref().expect("room id").to_string(),
            event_type: kind.to_owned(),
            state_key: state_key.map(str::to_owned),
            sender: sender.to_string(),
            pdu: json,
            unsigned_extra: None,
            txn_device_id: None,
            txn_id: None,
            redacted_by: None,
            state_group_before: None,
            related: None,
        };
        Event { pdu, stored }
    }

    /// Builds an event and appends it to `b`.
    pub fn append(
        &mut self,
        b: &mut Branch,
        sender: &OwnedUserId,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> OwnedEventId {
        let event = self.build(b, sender, kind, state_key, content);
        let id = event.pdu.event_id.clone();
        if let Some(k) = state_key {
            b.state.insert((kind.to_owned(), k.to_owned()), id.clone());
        }
        b.head = Some(id.clone());
        b.depth += 1;
        self.events.insert(id.clone(), event);
        id
    }

    pub fn stored(&self, id: &EventId) -> StoredEvent {
        self.events[id].stored.clone()
    }

    /// The branch's state in ruma-state-res's shape.
    pub fn state_map(&self, b: &Branch) -> StateMap<OwnedEventId> {
        b.state
            .iter()
            .map(|((t, k), id)| ((StateEventType::from(t.as_str()), k.clone()), id.clone()))
            .collect()
    }

    /// Every event reachable from the state through `auth_events`.
    pub fn full_auth_chain(&self, state: &StateMap<OwnedEventId>) -> EventIdSet<OwnedEventId> {
        let mut chain = EventIdSet::new();
        let mut stack: Vec<OwnedEventId> = state.values().cloned().collect();
        while let Some(id) = stack.pop() {
            if chain.contains(&id) {
                continue;
            }
            stack.extend(self.events[&id].pdu.auth_events.iter().cloned());
            chain.insert(id);
        }
        chain
    }

    /// Room version 12's conflicted state subgraph: the events on some
    /// `auth_events` path from one conflicted state event to another.
    /// Follows the reference implementation in ruma-state-res's tests
    /// (`tests/it/resolve/macros.rs`, MIT licence).
    pub fn conflicted_state_subgraph(
        &self,
        conflicted: &StateMap<Vec<OwnedEventId>>,
    ) -> Option<EventIdSet<OwnedEventId>> {
        let conflicted_ids: EventIdSet<OwnedEventId> =
            conflicted.values().flatten().cloned().collect();
        let mut subgraph = EventIdSet::new();
        let mut stack = vec![conflicted_ids.iter().cloned().collect::<Vec<_>>()];
        let mut path: Vec<OwnedEventId> = Vec::new();
        let mut seen = EventIdSet::new();
        let next = |stack: &mut Vec<Vec<OwnedEventId>>, path: &mut Vec<OwnedEventId>| {
            while stack.last().is_some_and(|s| s.is_empty()) {
                stack.pop();
                path.pop();
            }
            stack.last_mut().and_then(|s| s.pop())
        };
        while let Some(id) = next(&mut stack, &mut path) {
            path.push(id.clone());
            if subgraph.contains(&id) {
                if path.len() > 1 {
                    subgraph.extend(path.iter().cloned());
                }
                path.pop();
                continue;
            }
            if conflicted_ids.contains(&id) && path.len() > 1 {
                subgraph.extend(path.iter().cloned());
            }
            if seen.contains(&id) {
                path.pop();
                continue;
            }
            stack.push(self.events.get(&id)?.pdu.auth_events.clone());
            seen.insert(id);
        }
        Some(subgraph)
    }
}

/// Power levels as `createRoom` writes them for room version 12 (creators
/// are not listed: they hold infinite power), with `users` as given.
pub fn power_levels(users: Value) -> Value {
    json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 150,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 50,
        "notifications": { "room": 50 },
    })
}

fn to_object(v: Value) -> CanonicalJsonObject {
    match to_canonical_value(v).expect("canonical JSON") {
        CanonicalJsonValue::Object(o) => o,
        _ => unreachable!("template is an object"),
    }
}

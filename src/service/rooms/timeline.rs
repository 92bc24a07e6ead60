//! Appending a local event to a room: spec server-server API, "Checks
//! performed on receipt of a PDU", done for our own events before anyone
//! else sees them.
//!
//! txn check → build the PDU (prev_events = forward extremities, auth_events
//! from current state, depth) → hash, sign, event id → authorization rules →
//! persist with its state in one transaction → wake the room's syncers.
//!
//! [`append`] hands the event to the process's event writer (`writer.rs`),
//! which runs [`append_in`] for a batch of waiting events in one transaction.

use std::collections::{HashMap, HashSet};

use corvid_federation::{event_id_for, rules_for, sign_pdu};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId,
    UserId,
    canonical_json::to_canonical_value,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res::{self, Event as _},
};
use serde_json::{Map, Value, json};

use super::{pdu::Pdu, writer::OwnedTxn};
use crate::{
    Error, Result, Server,
    store::{
        StreamItem, WriteTx,
        events::{NewEvent, Placement, RoomRow, StoredEvent},
    },
};

/// What a client asks to send.
#[derive(Debug, Clone)]
pub struct Template {
    pub event_type: TimelineEventType,
    pub content: Value,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
    /// Extra `unsigned` data the server attaches (e.g. `invite_room_state`).
    pub unsigned: Map<String, Value>,
}

impl Template {
    pub fn message(event_type: TimelineEventType, content: Value) -> Self {
        Self {
            event_type,
            content,
            state_key: None,
            redacts: None,
            unsigned: Map::new(),
        }
    }

    pub fn state(
        event_type: TimelineEventType,
        state_key: impl Into<String>,
        content: Value,
    ) -> Self {
        Self {
            state_key: Some(state_key.into()),
            ..Self::message(event_type, content)
        }
    }
}

/// A client transaction: the same `(device, endpoint, txn id)` always yields the same event.
pub use crate::store::events::TxnKey as Txn;

#[derive(Debug, Clone)]
pub struct Appended {
    pub event_id: OwnedEventId,
    pub stream_ordering: i64,
    pub room_id: ruma::OwnedRoomId,
    /// The user a membership event is about.
    pub member: Option<String>,
    pub event: StoredEvent,
}

/// Builds, authorises and persists one event, then wakes syncers; returns
/// once the event is committed.
pub async fn append(
    server: &Server,
    room_id: &RoomId,
    sender: &UserId,
    template: Template,
    txn: Option<Txn<'_>>,
) -> Result<OwnedEventId> {
    let txn = txn.map(|t| OwnedTxn {
        device_id: t.device_id.to_owned(),
        scope: t.scope.to_owned(),
        txn_id: t.txn_id.to_owned(),
    });
    let push = crate::service::push::plan(server, room_id, sender, &template).await?;
    server
        .event_writer
        .append(room_id.to_owned(), sender.to_owned(), template, txn, push)
        .await
}

/// Wakes the local users events concern: the rooms' members and, for a
/// membership change, its subject (who may just have left). Brings what is
/// cached of the rooms' state up to date.
///
/// The members the push planner holds for a room (it has just planned the
/// events' notifications from them) are woken at once; the database's list,
/// which also has invited and knocking users and members another process
/// added, then wakes whoever that left out.
pub async fn notify(server: &Server, appended: &[Appended]) {
    for a in appended.iter().filter(|a| a.event.state_key.is_some()) {
        server.push_contexts.state_changed(server, &a.event);
    }
    let mut rooms: Vec<&RoomId> = appended.iter().map(|a| &*a.room_id).collect();
    rooms.sort_unstable();
    rooms.dedup();
    let contexts: Vec<_> = rooms
        .iter()
        .filter_map(|room| server.push_contexts.cached(room))
        .collect();
    let mut woken: HashSet<&str> = appended
        .iter()
        .filter_map(|a| a.member.as_deref())
        .collect();
    woken.extend(
        contexts
            .iter()
            .flat_map(|c| c.local_members().map(UserId::as_str)),
    );
    server.notifier.notify_users(woken.iter().copied());
    let rooms: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
    match server.db.users_to_notify(&rooms).await {
        Ok(members) => {
            let left_out: Vec<&str> = members
                .iter()
                .map(String::as_str)
                .filter(|u| !woken.contains(u))
                .collect();
            if !left_out.is_empty() {
                server.notifier.notify_users(left_out);
            }
        }
        Err(e) => tracing::warn!(%e, "cannot list room members to wake"),
    }
}

/// What the next event of a room builds on, kept for the length of one
/// write transaction so a batch reads each room once: the room row, its
/// forward extremities, and the current state entries read or written so far
/// (`None`: known to be absent).
pub struct RoomHead {
    room: RoomRow,
    rules: RoomVersionRules,
    extremities: Vec<(String, i64)>,
    state: HashMap<(String, String), Option<StoredEvent>>,
    /// The servers with a joined member, once read.
    servers: Option<Vec<String>>,
    /// Whether an event of this transaction redacted another: a state
    /// event held here may be one.
    redacted: bool,
    /// Whether a membership changed in this transaction: `servers`, read
    /// from the rows before it, no longer holds after it.
    members_changed: bool,
}

/// The heads of the rooms a write transaction has touched.
pub type RoomHeads = HashMap<OwnedRoomId, RoomHead>;

/// Rooms kept, beyond which the event writer starts afresh.
const MAX_KEPT_HEADS: usize = 256;
/// State entries kept per room. A head gathers the member event of each
/// sender (and each joiner): past this many, only the entries that are not
/// member events are kept, so a large room's head stays small.
const MAX_KEPT_STATE: usize = 32;

/// The heads the event writer keeps from one transaction to the next: a
/// message to a room written to moments ago then reads nothing to build on.
/// The journal says which rooms another transaction changed meanwhile (see
/// [`WriteTx::head_rooms_changed_since`]), or that it cannot tell.
#[derive(Default)]
pub struct KeptHeads {
    heads: RoomHeads,
    /// The last position of the transaction that left them.
    at: Option<i64>,
}

impl KeptHeads {
    /// The kept heads still current when `w` began; called once its
    /// positions are reserved.
    pub fn take_current(&mut self, w: &WriteTx<'_>) -> RoomHeads {
        let mut heads = std::mem::take(&mut self.heads);
        let changed = self.at.take().and_then(|at| w.head_rooms_changed_since(at));
        match changed {
            Some(changed) => heads.retain(|room, _| !changed.contains(room.as_str())),
            None => heads.clear(),
        }
        heads
    }

    /// Keeps the heads a transaction that took positions up to `at` committed.
    pub fn keep(&mut self, mut heads: RoomHeads, at: i64) {
        if heads.len() > MAX_KEPT_HEADS {
            return;
        }
        heads.retain(|_, head| !head.redacted);
        for head in heads.values_mut() {
            if head.state.len() > MAX_KEPT_STATE {
                head.state.retain(|(kind, _), _| kind != "m.room.member");
            }
            if std::mem::take(&mut head.members_changed) {
                head.servers = None;
            }
        }
        self.heads = heads;
        self.at = Some(at);
    }
}

/// The servers with a joined member in each of `rooms` (whose heads are
/// loaded), as the transaction began; read once per head.
pub async fn servers_of<'h>(
    w: &mut WriteTx<'_>,
    heads: &'h mut RoomHeads,
    rooms: &[&RoomId],
) -> Result<HashMap<&'h RoomId, &'h [String]>> {
    let unread: Vec<&RoomId> = rooms
        .iter()
        .copied()
        .filter(|r| heads.get(*r).is_some_and(|h| h.servers.is_none()))
        .collect();
    if !unread.is_empty() {
        let names: Vec<&str> = unread.iter().map(|r| r.as_str()).collect();
        let mut read = w.servers_of_rooms(&names).await?;
        for room in unread {
            if let Some(head) = heads.get_mut(room) {
                head.servers = Some(read.remove(room.as_str()).unwrap_or_default());
            }
        }
    }
    let heads: &'h RoomHeads = heads;
    Ok(rooms
        .iter()
        .filter_map(|r| {
            let (room_id, head) = heads.get_key_value(*r)?;
            Some((&**room_id, head.servers.as_deref()?))
        })
        .collect())
}

/// Reads the heads of `rooms` into `heads` (locking the rooms) with one
/// statement for all the rooms' rows and one for their extremities; rooms
/// this server does not know are left out.
pub async fn load_heads(
    server: &Server,
    w: &mut WriteTx<'_>,
    heads: &mut RoomHeads,
    rooms: &[&str],
) -> Result<()> {
    let rows = w.lock_rooms(rooms, server.db.backend()).await?;
    let mut extremities = w.forward_extremities_of(rooms).await?;
    for room in rows {
        let room_id = OwnedRoomId::try_from(room.room_id.as_str()).map_err(Error::internal)?;
        let version =
            RoomVersionId::try_from(room.room_version.as_str()).map_err(Error::internal)?;
        let head = RoomHead {
            rules: rules_for(&version)?,
            extremities: extremities
                .remove(room.room_id.as_str())
                .unwrap_or_default(),
            room,
            state: HashMap::new(),
            servers: None,
            redacted: false,
            members_changed: false,
        };
        heads.insert(room_id, head);
    }
    Ok(())
}

async fn head<'h>(
    server: &Server,
    w: &mut WriteTx<'_>,
    heads: &'h mut RoomHeads,
    room_id: &RoomId,
) -> Result<&'h mut RoomHead> {
    if !heads.contains_key(room_id) {
        load_heads(server, w, heads, &[room_id.as_str()]).await?;
    }
    heads
        .get_mut(room_id)
        .ok_or_else(|| Error::not_found("Unknown room"))
}

impl RoomHead {
    /// The current state entries for `keys`, reading only those not known yet.
    async fn state_for(
        &mut self,
        w: &mut WriteTx<'_>,
        room_id: &RoomId,
        keys: &[(String, String)],
    ) -> Result<Vec<StoredEvent>> {
        let missing: Vec<(String, String)> = keys
            .iter()
            .filter(|k| !self.state.contains_key(*k))
            .cloned()
            .collect();
        if !missing.is_empty() {
            for key in &missing {
                self.state.insert(key.clone(), None);
            }
            for e in w.current_state_for(room_id.as_str(), &missing).await? {
                let key = (
                    e.event_type.clone(),
                    e.state_key.clone().unwrap_or_default(),
                );
                self.state.insert(key, Some(e));
            }
        }
        Ok(keys
            .iter()
            .filter_map(|k| self.state.get(k).cloned().flatten())
            .collect())
    }

    fn advance(&mut self, event: StoredEvent, depth: i64, redacts: bool) {
        self.extremities = vec![(event.event_id.clone(), depth)];
        self.redacted |= redacts;
        self.members_changed |= event.event_type == "m.room.member";
        if let Some(key) = &event.state_key {
            self.room.state_group = Some(event.stream_ordering);
            self.state
                .insert((event.event_type.clone(), key.clone()), Some(event));
        }
    }
}

/// An event built on the room's head, not signed yet: what
/// [`append_in`] signs and stores, and what make_join and its kin hand to
/// another server to sign.
pub struct Built {
    pub object: CanonicalJsonObject,
    pub rules: RoomVersionRules,
    pub depth: i64,
    pub prev_events: Vec<String>,
    pub auth_events: Vec<String>,
    /// The current state the event's auth rules read.
    pub state: Vec<StoredEvent>,
    /// The state entry it replaces, for a state event.
    pub replaced: Option<StoredEvent>,
}

/// Builds an event on the room's forward extremities, with the auth events
/// its type needs from the current state.
pub async fn build_in(
    server: &Server,
    w: &mut WriteTx<'_>,
    heads: &mut RoomHeads,
    room_id: &RoomId,
    sender: &UserId,
    template: &Template,
) -> Result<Built> {
    let head = head(server, w, heads, room_id).await?;
    let rules = head.rules.clone();
    let depth = head.extremities.iter().map(|(_, d)| *d).max().unwrap_or(0) + 1;
    let prev_events: Vec<String> = head.extremities.iter().map(|(id, _)| id.clone()).collect();

    let content_raw =
        serde_json::value::to_raw_value(&template.content).map_err(Error::internal)?;
    let auth_types = state_res::auth_types_for_event(
        &template.event_type,
        sender,
        template.state_key.as_deref(),
        &content_raw,
        &rules.authorization,
    )
    .map_err(|e| Error::bad_json(format!("Invalid event content: {e}")))?;
    let mut wanted: Vec<(String, String)> = auth_types
        .iter()
        .map(|(t, k)| (t.to_string(), k.clone()))
        .collect();
    // The create event is needed by the auth rules even where (v12) it is not an auth event.
    wanted.push((StateEventType::RoomCreate.to_string(), String::new()));
    let replaces = template
        .state_key
        .as_ref()
        .map(|k| (template.event_type.to_string(), k.clone()));
    wanted.extend(replaces.clone());
    let state = head.state_for(w, room_id, &wanted).await?;
    let by_key = |key: &(String, String)| {
        state
            .iter()
            .find(|e| e.event_type == key.0 && e.state_key.as_deref() == Some(key.1.as_str()))
    };
    let auth_events: Vec<String> = auth_types
        .iter()
        .filter_map(|(t, k)| by_key(&(t.to_string(), k.clone())).map(|e| e.event_id.clone()))
        .collect();
    let replaced = replaces.as_ref().and_then(by_key).cloned();
    let object = pdu_template(
        template,
        room_id,
        sender,
        depth,
        &prev_events,
        &auth_events,
        &rules,
    )?;
    Ok(Built {
        object,
        rules,
        depth,
        prev_events,
        auth_events,
        state,
        replaced,
    })
}

/// [`append`] inside a caller's transaction: room creation sends many events
/// in one, and the event writer a batch of them.
pub async fn append_in(
    server: &Server,
    w: &mut WriteTx<'_>,
    heads: &mut RoomHeads,
    room_id: &RoomId,
    sender: &UserId,
    template: Template,
    txn: Option<Txn<'_>>,
) -> Result<Appended> {
    let Built {
        mut object,
        rules,
        depth,
        prev_events,
        auth_events,
        state,
        replaced,
    } = build_in(server, w, heads, room_id, sender, &template).await?;
    sign_pdu(
        &mut object,
        server.server_name().as_str(),
        &server.signing_key,
        &rules,
    )?;
    let event_id = event_id_for(&object, &rules)?;
    let pdu_json = serde_json::to_string(&object)?;
    let pdu = Pdu::parse(event_id.clone(), &pdu_json)?;
    authorize(&rules, &pdu, &state)?;

    let membership = membership_of(&template);
    let unsigned_extra = unsigned_extra(template.unsigned, replaced.as_ref())?;
    let stream_ordering = w.next_stream_position(StreamItem::Event).await?;
    let event_type = template.event_type.to_string();
    let head = heads.get_mut(room_id).expect("built on this head");
    let new_event = NewEvent {
        stream_ordering,
        event_id: event_id.as_str(),
        room_id: room_id.as_str(),
        event_type: &event_type,
        state_key: template.state_key.as_deref(),
        sender: sender.as_str(),
        origin_server_ts: pdu.origin_server_ts.get().into(),
        depth,
        pdu: &pdu_json,
        prev_events: &prev_events,
        auth_events: &auth_events,
        unsigned_extra: unsigned_extra.as_deref(),
        state_group_before: head.room.state_group,
        txn,
        redacts: pdu.redacts().map(|r| r.as_str()),
        placement: Placement::Local,
    };
    w.stage_event(&new_event, membership.as_deref()).await?;
    let stored = new_event.to_stored();
    head.advance(stored.clone(), depth, new_event.redacts.is_some());
    tracing::debug!(%event_id, %room_id, kind = %template.event_type, "event appended");
    Ok(Appended {
        event_id,
        stream_ordering,
        room_id: room_id.to_owned(),
        member: membership.and(template.state_key),
        event: stored,
    })
}

/// An event on the room's current head for another server to sign (or,
/// `signed`, signed by us and not stored: an invite the invitee's server
/// must countersign first), checked against the current state like our
/// own events. The write transaction only reads, then rolls back.
pub async fn build_for_remote(
    server: &Server,
    room_id: &RoomId,
    sender: &UserId,
    template: &Template,
    signed: bool,
) -> Result<(CanonicalJsonObject, RoomVersionRules)> {
    let mut w = server.db.write().await?;
    let mut heads = RoomHeads::new();
    let Built {
        mut object,
        rules,
        state,
        ..
    } = build_in(server, &mut w, &mut heads, room_id, sender, template).await?;
    drop(w);
    if signed {
        sign_pdu(
            &mut object,
            server.server_name().as_str(),
            &server.signing_key,
            &rules,
        )?;
    }
    let id = event_id_for(&object, &rules)?;
    let pdu = Pdu::parse(id, &serde_json::to_string(&object)?)?;
    authorize(&rules, &pdu, &state)?;
    Ok((object, rules))
}

fn membership_of(template: &Template) -> Option<String> {
    (template.event_type == TimelineEventType::RoomMember)
        .then(|| template.content["membership"].as_str().map(str::to_owned))
        .flatten()
}

/// The PDU fields before hashing and signing.
fn pdu_template(
    t: &Template,
    room_id: &RoomId,
    sender: &UserId,
    depth: i64,
    prev_events: &[String],
    auth_events: &[String],
    rules: &RoomVersionRules,
) -> Result<CanonicalJsonObject> {
    let mut content = t.content.clone();
    let mut v = json!({
        "room_id": room_id,
        "sender": sender,
        "type": t.event_type.to_string(),
        "origin_server_ts": crate::now_ms(),
        "depth": depth,
        "prev_events": prev_events,
        "auth_events": auth_events,
    });
    if let Some(key) = &t.state_key {
        v["state_key"] = json!(key);
    }
    if let Some(redacts) = &t.redacts {
        // spec: room version 11 moved `redacts` into the content; older
        // versions keep it top-level. We write both where allowed.
        if rules.redaction.content_field_redacts {
            content["redacts"] = json!(redacts);
        }
        v["redacts"] = json!(redacts);
    }
    v["content"] = content;
    to_object(v)
}

pub fn to_object(v: Value) -> Result<CanonicalJsonObject> {
    match to_canonical_value(v)
        .map_err(|e| Error::bad_json(format!("Event is not canonical JSON: {e}")))?
    {
        CanonicalJsonValue::Object(o) => Ok(o),
        _ => Err(Error::internal("event template is not an object")),
    }
}

/// Runs the room version's authorization rules: the checks of the event's
/// auth events (found among `state` by id), then those against `state`.
pub fn authorize(rules: &RoomVersionRules, pdu: &Pdu, state: &[StoredEvent]) -> Result<()> {
    let parsed: Vec<Pdu> = state.iter().map(Pdu::from_stored).collect::<Result<_>>()?;
    let by_id: HashMap<&ruma::EventId, &Pdu> =
        parsed.iter().map(|p| (p.event_id.as_ref(), p)).collect();
    state_res::check_state_independent_auth_rules(&rules.authorization, pdu, |id| {
        by_id.get(id).copied()
    })
    .map_err(|reason| Error::forbidden(format!("Event not allowed: {reason}")))?;
    authorize_by_state(rules, pdu, &parsed)
}

/// The authorization rules that depend on the room's state, against
/// `state` (which must hold the entries the event's auth types name).
pub fn authorize_by_state(rules: &RoomVersionRules, pdu: &Pdu, state: &[Pdu]) -> Result<()> {
    let by_key: HashMap<(String, String), &Pdu> = state
        .iter()
        .filter_map(|p| Some(((p.kind.to_string(), p.state_key.clone()?), p)))
        .collect();
    state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, |t, k| {
        by_key.get(&(t.to_string(), k.to_owned())).copied()
    })
    .map_err(|reason| Error::forbidden(format!("Event not allowed: {reason}")))
}

/// `unsigned` data computed once, at write time: what the event replaced.
pub(crate) fn unsigned_extra(
    mut extra: Map<String, Value>,
    replaced: Option<&StoredEvent>,
) -> Result<Option<String>> {
    if let Some(prev) = replaced {
        let prev_pdu: Value = serde_json::from_str(&prev.pdu)?;
        extra.insert("replaces_state".into(), json!(prev.event_id));
        extra.insert("prev_sender".into(), json!(prev.sender));
        if prev.redacted_by.is_none() {
            extra.insert("prev_content".into(), prev_pdu["content"].clone());
        }
    }
    Ok((!extra.is_empty()).then(|| Value::Object(extra).to_string()))
}

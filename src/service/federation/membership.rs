//! Membership across servers: spec server-server API, "Joining Rooms",
//! "Knocking upon a room", "Inviting to a room", "Leaving Rooms".
//!
//! Both ends: as the resident server we build templates (`make_*`) and
//! accept signed events (`send_*`), countersign invites for our users; as
//! the joining server we do the handshakes for our users and keep what we
//! know of rooms we are not in (an invite, a knock, a rejected invite) as
//! outliers that only the user's own `/sync` shows.

use std::sync::Arc;

use corvid_federation::{event_id_for, rules_for, sign_pdu};
use ruma::{
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedServerName,
    RoomId, RoomVersionId, ServerName, UserId,
    api::federation::membership::{
        RawStrippedState, create_invite, create_join_event, create_knock_event, create_leave_event,
        prepare_join_event, prepare_knock_event, prepare_leave_event,
    },
    events::TimelineEventType,
    room_version_rules::RoomVersionRules,
    signatures::sign_event,
};
use serde_json::{Value, json, value::RawValue};

use super::{
    history,
    ingest::{self, Handling},
    pdu::{self, IncomingPdu},
    place::{self, StateBefore},
    remote_error,
};
use crate::{
    Error, Result, Server,
    service::rooms::{
        self,
        membership::{STRIPPED_STATE_TYPES, member_content},
        timeline::{self, Appended, Template},
    },
    store::{StreamItem, events::Placement},
};

/// Room versions this server can join (and so lists in `ver`).
pub const SUPPORTED_VERSIONS: [RoomVersionId; 3] =
    [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];

fn incompatible(version: &RoomVersionId) -> Error {
    Error::new(
        http::StatusCode::BAD_REQUEST,
        "M_INCOMPATIBLE_ROOM_VERSION",
        format!("Room version {version} is not supported"),
    )
    .with("room_version", json!(version))
}

// ---- the resident side --------------------------------------------------

/// `make_join`, `make_leave`, `make_knock`: a membership event for
/// `user_id` on our head of the room, for its server to sign.
pub async fn make(
    server: &Server,
    origin: &ServerName,
    room_id: &RoomId,
    user_id: &UserId,
    membership: &str,
    versions: &[RoomVersionId],
) -> Result<(RoomVersionId, Box<RawValue>)> {
    if user_id.server_name() != origin {
        return Err(Error::forbidden(
            "The user does not belong to the requesting server",
        ));
    }
    let version = resident_room(server, room_id).await?;
    if membership != "leave" && !versions.contains(&version) {
        return Err(incompatible(&version));
    }
    let mut content = json!({ "membership": membership });
    if membership == "join"
        && let Some(authoriser) = restricted_join_authoriser(server, room_id, user_id).await?
    {
        content["join_authorised_via_users_server"] = json!(authoriser);
    }
    let template = Template::state(TimelineEventType::RoomMember, user_id.as_str(), content);
    let (object, _) =
        timeline::build_for_remote(server, room_id, user_id, &template, false).await?;
    Ok((
        version,
        RawValue::from_string(serde_json::to_string(&object)?)?,
    ))
}

/// The version of a room one of our users is joined to; `M_NOT_FOUND` otherwise.
async fn resident_room(server: &Server, room_id: &RoomId) -> Result<RoomVersionId> {
    let version = rooms::require_room(server, room_id).await?;
    if !server
        .db
        .server_in_room(room_id.as_str(), server.server_name().as_str())
        .await?
    {
        return Err(Error::not_found("This server is not in that room"));
    }
    Ok(version)
}

/// spec: "Restricted rooms". A user who is neither invited nor joined may
/// join a restricted room when joined to one of the rooms its join rule
/// allows; the join then names one of our users who may invite, whose
/// server (we) signs it. `None` when the room is not restricted or the
/// user needs no authoriser.
async fn restricted_join_authoriser(
    server: &Server,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<Option<String>> {
    let Some(rules) = server
        .db
        .current_state_event(room_id.as_str(), "m.room.join_rules", "")
        .await?
    else {
        return Ok(None);
    };
    let content = serde_json::from_str::<Value>(&rules.pdu)?["content"].take();
    let rule = content["join_rule"].as_str().unwrap_or_default();
    if rule != "restricted" && rule != "knock_restricted" {
        return Ok(None);
    }
    let membership = server
        .db
        .membership(room_id.as_str(), user_id.as_str())
        .await?;
    if membership.is_some_and(|(m, _)| m == "join" || m == "invite") {
        return Ok(None);
    }
    let allowed_rooms: Vec<&str> = content["allow"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "m.room_membership")
        .filter_map(|a| a["room_id"].as_str())
        .collect();
    let mut known_any = false;
    let mut satisfied = false;
    for allowed in allowed_rooms {
        if server.db.room(allowed).await?.is_some() {
            known_any = true;
            satisfied |= server
                .db
                .membership(allowed, user_id.as_str())
                .await?
                .is_some_and(|(m, _)| m == "join");
        }
    }
    if !known_any {
        return Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            "M_UNABLE_TO_AUTHORISE_JOIN",
            "This server cannot check the rooms the join rule allows",
        ));
    }
    if !satisfied {
        return Err(Error::forbidden(
            "You are not in a room that allows joining this one",
        ));
    }
    for member in server.db.room_member_ids(room_id.as_str(), "join").await? {
        if member.ends_with(&format!(":{}", server.server_name()))
            && may_invite(server, room_id, &member).await?
        {
            return Ok(Some(member));
        }
    }
    Err(Error::new(
        http::StatusCode::BAD_REQUEST,
        "M_UNABLE_TO_GRANT_JOIN",
        "No user of this server may authorise the join; try another server",
    ))
}

async fn may_invite(server: &Server, room_id: &RoomId, user: &str) -> Result<bool> {
    let user_id = UserId::parse(user).map_err(Error::internal)?;
    let template = Template::state(
        TimelineEventType::RoomMember,
        "@corvid-probe:invalid",
        json!({"membership": "invite"}),
    );
    Ok(
        timeline::build_for_remote(server, room_id, &user_id, &template, false)
            .await
            .is_ok(),
    )
}

/// What `send_join` accepted: the event (with our signature) and the state
/// before it.
pub struct Accepted {
    pub event: Box<RawValue>,
    pub state: Vec<Box<RawValue>>,
    pub auth_chain: Vec<Box<RawValue>>,
    pub servers_in_room: Vec<String>,
}

/// `send_join`, `send_leave`, `send_knock`: checks the event another server
/// signed for its user, countersigns a join, and takes it into the room
/// (and to the room's other servers).
pub async fn send(
    server: &Arc<Server>,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
    raw: &RawValue,
    membership: &str,
) -> Result<Accepted> {
    let version = resident_room(server, room_id).await?;
    let rules = rules_for(&version).map_err(|_| incompatible(&version))?;
    let mut object = pdu::parse_object(raw)?;
    object.remove("unsigned");
    if membership == "join" {
        sign_event(
            server.server_name().as_str(),
            server.signing_key.key_pair(),
            &mut object,
            &rules.redaction,
        )
        .map_err(|e| Error::bad_json(e.to_string()))?;
    }
    let incoming = pdu::verify(server, object, &rules, room_id).await?;
    check_membership_event(&incoming, event_id, origin, membership)?;
    let signed = RawValue::from_string(incoming.json.clone())?;
    let id = incoming.event_id.to_string();
    ingest::ingest(server, origin, &rules, incoming, Handling::BROADCAST).await?;
    let place = server.db.event_places(std::slice::from_ref(&id)).await?;
    if place.get(&id).is_none_or(|p| p.rejected.is_some()) {
        return Err(Error::forbidden("The event was rejected"));
    }
    if membership != "join" {
        return Ok(Accepted {
            event: signed,
            state: Vec::new(),
            auth_chain: Vec::new(),
            servers_in_room: Vec::new(),
        });
    }
    let (state, mut chain) = history::state_ids_before(server, origin, room_id, event_id).await?;
    chain.extend(server.db.auth_chain(std::slice::from_ref(&id)).await?);
    chain.sort();
    chain.dedup();
    Ok(Accepted {
        event: signed,
        state: history::pdus(server, &state).await?,
        auth_chain: history::pdus(server, &chain).await?,
        servers_in_room: server.db.room_servers(room_id.as_str()).await?,
    })
}

fn check_membership_event(
    pdu: &IncomingPdu,
    event_id: &EventId,
    origin: &ServerName,
    membership: &str,
) -> Result<()> {
    let content: Value = serde_json::from_str(pdu.pdu.content.get())?;
    let sender = &pdu.pdu.sender;
    let ok = pdu.event_id == event_id
        && pdu.pdu.kind == TimelineEventType::RoomMember
        && pdu.state_key() == Some(sender.as_str())
        && sender.server_name() == origin
        && content["membership"] == membership;
    if ok {
        Ok(())
    } else {
        Err(Error::bad_json(format!(
            "Not a {membership} of a user of {origin} with event id {event_id}"
        )))
    }
}

/// `PUT /invite`: countersigns an invite of one of our users and keeps it
/// for the user's `/sync` when we are not in the room.
pub async fn receive_invite(
    server: &Arc<Server>,
    origin: &ServerName,
    request: &create_invite::v2::Request,
) -> Result<Box<RawValue>> {
    let version = &request.room_version;
    let rules = supported_rules(version)?;
    let mut object = pdu::parse_object(&request.event)?;
    object.remove("unsigned");
    let target = object
        .get("state_key")
        .and_then(|k| k.as_str())
        .and_then(|k| UserId::parse(k).ok())
        .ok_or_else(|| Error::bad_json("An invite needs a user id as state_key"))?;
    if target.server_name() != server.server_name() {
        return Err(Error::bad_json("The invited user is not on this server"));
    }
    match server.db.user(target.as_str()).await? {
        Some(user) if user.deactivated == 0 => {}
        _ => return Err(Error::not_found("Unknown user")),
    }
    sign_event(
        server.server_name().as_str(),
        server.signing_key.key_pair(),
        &mut object,
        &rules.redaction,
    )
    .map_err(|e| Error::bad_json(e.to_string()))?;
    let incoming = pdu::verify(server, object, &rules, &request.room_id).await?;
    let content: Value = serde_json::from_str(incoming.pdu.content.get())?;
    if incoming.event_id != request.event_id
        || incoming.pdu.kind != TimelineEventType::RoomMember
        || content["membership"] != "invite"
        || incoming.pdu.sender.server_name() != origin
    {
        return Err(Error::bad_json(
            "Not an invite from a user of the requesting server",
        ));
    }
    let signed = RawValue::from_string(incoming.json.clone())?;
    let resident = server
        .db
        .server_in_room(request.room_id.as_str(), server.server_name().as_str())
        .await?;
    // A room we are in gets the invite through the inviting server's transaction.
    if !resident {
        let stripped: Vec<Value> = request
            .invite_room_state
            .iter()
            .filter_map(stripped_form)
            .collect();
        let unsigned = json!({ "invite_room_state": stripped });
        store_stub(server, version, &incoming, Some(unsigned)).await?;
    }
    Ok(signed)
}

/// A stripped state event from either form of `invite_room_state`.
fn stripped_form(state: &RawStrippedState) -> Option<Value> {
    let json = match state {
        RawStrippedState::Pdu(pdu) => pdu.get(),
        #[allow(deprecated)]
        RawStrippedState::Stripped(raw) => raw.json().get(),
        _ => return None,
    };
    let v: Value = serde_json::from_str(json).ok()?;
    Some(json!({
        "type": v.get("type")?,
        "state_key": v.get("state_key")?,
        "sender": v.get("sender")?,
        "content": v.get("content")?,
    }))
}

/// Keeps a membership event of a room we are not in (an invite, a knock,
/// its rejection) as an outlier heading the room's current state, so the
/// user's `/sync` lists the room.
async fn store_stub(
    server: &Arc<Server>,
    version: &RoomVersionId,
    pdu: &IncomingPdu,
    unsigned: Option<Value>,
) -> Result<()> {
    let room_id = pdu.room_id.as_str();
    let membership = serde_json::from_str::<Value>(pdu.pdu.content.get())?["membership"]
        .as_str()
        .map(str::to_owned);
    let mut w = server.db.write().await?;
    // The stream counter before the room, as everywhere (see ingest::persist).
    w.reserve_stream_positions(1).await?;
    w.insert_room(room_id, version.as_str(), pdu.pdu.sender.as_str())
        .await?;
    let room = w
        .lock_room(room_id, server.db.backend())
        .await?
        .ok_or_else(|| Error::internal("room row just inserted"))?;
    let id = pdu.event_id.to_string();
    if !w.event_places(std::slice::from_ref(&id)).await?.is_empty() {
        return Ok(());
    }
    let position = w.next_stream_position(StreamItem::Event).await?;
    let unsigned = unsigned.map(|u| u.to_string());
    let mut new_event = place::new_event(
        &position,
        pdu,
        room.state_group,
        Placement::Outlier,
        unsigned.as_deref(),
    );
    new_event.redacts = None;
    w.stage_event(&new_event, membership.as_deref()).await?;
    w.commit().await?;
    let appended = Appended {
        event_id: pdu.event_id.clone(),
        stream_ordering: position,
        room_id: pdu.room_id.clone(),
        member: pdu.state_key().map(str::to_owned),
        event: new_event.to_stored(),
    };
    timeline::notify(server, &[appended]).await;
    Ok(())
}

// ---- the joining side ---------------------------------------------------

/// Joins `user` to a room this server is not in, through the first of
/// `via` that helps.
pub async fn join_remote(
    server: &Arc<Server>,
    room_id: &RoomId,
    user: &UserId,
    via: &[OwnedServerName],
    reason: Option<&str>,
) -> Result<()> {
    through_first(server, via, "join", |candidate| async move {
        join_through(server, &candidate, room_id, user, reason).await
    })
    .await
}

/// `attempt` through each of `via` (but us, each once) until one succeeds;
/// the last failure otherwise.
async fn through_first<T, F, Fut>(
    server: &Server,
    via: &[OwnedServerName],
    what: &str,
    attempt: F,
) -> Result<T>
where
    F: Fn(OwnedServerName) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tried: Vec<&OwnedServerName> = Vec::new();
    let mut last = Error::not_found(format!("No server in the room is known to {what} through"));
    for candidate in via {
        if candidate == server.server_name() || tried.contains(&candidate) {
            continue;
        }
        tried.push(candidate);
        match attempt(candidate.clone()).await {
            Ok(done) => return Ok(done),
            Err(e) => {
                tracing::info!(%candidate, error = %e.message, "remote {what} failed");
                last = e;
            }
        }
    }
    Err(last)
}

async fn join_through(
    server: &Arc<Server>,
    resident: &ServerName,
    room_id: &RoomId,
    user: &UserId,
    reason: Option<&str>,
) -> Result<()> {
    let mut request = prepare_join_event::v1::Request::new(room_id.to_owned(), user.to_owned());
    request.ver = SUPPORTED_VERSIONS.to_vec();
    let made = server
        .federation
        .send(resident, request)
        .await
        .map_err(|e| remote_error(resident, "make_join", &e))?;
    let version = made.room_version.unwrap_or(RoomVersionId::V1);
    let rules = supported_rules(&version)?;
    let (object, event_id) =
        sign_template(server, &made.event, room_id, user, "join", reason, &rules).await?;
    let raw = RawValue::from_string(serde_json::to_string(&object)?)?;
    let request = create_join_event::v2::Request::new(room_id.to_owned(), event_id.clone(), raw);
    let joined = server
        .federation
        .send(resident, request)
        .await
        .map_err(|e| remote_error(resident, "send_join", &e))?
        .room_state;
    let event = match joined.event {
        Some(countersigned) => {
            let countersigned = pdu::parse_object(&countersigned)?;
            if pdu::event_id_of(&countersigned, &rules).as_ref() != Some(&event_id) {
                return Err(Error::bad_json(
                    "The resident server changed the join event",
                ));
            }
            countersigned
        }
        None => object,
    };
    let creator = create_sender(&joined.state).unwrap_or_else(|| user.to_string());
    let mut w = server.db.write().await?;
    w.insert_room(room_id.as_str(), version.as_str(), &creator)
        .await?;
    w.commit().await?;
    let state_ids: Vec<(String, String, String)> = joined
        .state
        .iter()
        .filter_map(|raw| state_entry(raw, &rules))
        .collect();
    let mut everything = joined.state;
    everything.extend(joined.auth_chain);
    ingest::store_outliers(server, &rules, room_id, everything).await?;
    let ids: Vec<String> = state_ids.iter().map(|(_, _, id)| id.clone()).collect();
    let held = server.db.event_places(&ids).await?;
    let state = state_ids
        .into_iter()
        .filter(|(_, _, id)| held.get(id).is_some_and(|p| p.rejected.is_none()))
        .map(|(t, k, id)| ((t, k), id))
        .collect();
    let join = pdu::verify(server, event, &rules, room_id).await?;
    let handling = Handling {
        broadcast: false,
        fetch_missing: false,
    };
    let _room = server.room_ingest.lock(room_id.as_str()).await;
    place::place(
        server,
        &rules,
        &join,
        StateBefore::Known(state),
        handling.broadcast,
    )
    .await?;
    tracing::info!(%room_id, %user, %resident, "joined over federation");
    Ok(())
}

fn supported_rules(version: &RoomVersionId) -> Result<RoomVersionRules> {
    if !SUPPORTED_VERSIONS.contains(version) {
        return Err(incompatible(version));
    }
    rules_for(version).map_err(|_| incompatible(version))
}

/// The sender of the create event among state events.
fn create_sender(state: &[Box<RawValue>]) -> Option<String> {
    state.iter().find_map(|raw| {
        let v: Value = serde_json::from_str(raw.get()).ok()?;
        (v["type"] == "m.room.create").then(|| v["sender"].as_str().map(str::to_owned))?
    })
}

/// `(type, state key, event id)` of a state event from another server.
fn state_entry(raw: &RawValue, rules: &RoomVersionRules) -> Option<(String, String, String)> {
    let object = pdu::parse_object(raw).ok()?;
    let kind = object.get("type")?.as_str()?.to_owned();
    let key = object.get("state_key")?.as_str()?.to_owned();
    let id = pdu::event_id_of(&object, rules)?;
    Some((kind, key, id.to_string()))
}

/// Fills in and signs a template from `make_*`, after checking it is the
/// membership event asked for.
async fn sign_template(
    server: &Server,
    template: &RawValue,
    room_id: &RoomId,
    user: &UserId,
    membership: &str,
    reason: Option<&str>,
    rules: &RoomVersionRules,
) -> Result<(CanonicalJsonObject, OwnedEventId)> {
    let mut v: Value = serde_json::from_str(template.get())?;
    let expected = v["type"] == "m.room.member"
        && v["sender"] == user.as_str()
        && v["state_key"] == user.as_str()
        && v["content"]["membership"] == membership
        && v.get("room_id").is_none_or(|r| r == room_id.as_str());
    if !expected {
        return Err(Error::bad_json(format!(
            "The resident server's template is not a {membership} of {user}"
        )));
    }
    let profile = server.db.user(user.as_str()).await?;
    let ours = member_content(membership, profile.as_ref(), reason);
    for (key, value) in ours.as_object().into_iter().flatten() {
        v["content"][key] = value.clone();
    }
    v["room_id"] = json!(room_id);
    v["origin_server_ts"] = json!(MilliSecondsSinceUnixEpoch::now());
    if let Some(fields) = v.as_object_mut() {
        for unwanted in ["event_id", "hashes", "signatures", "unsigned"] {
            fields.remove(unwanted);
        }
    }
    let mut object = timeline::to_object(v)?;
    sign_pdu(
        &mut object,
        server.server_name().as_str(),
        &server.signing_key,
        rules,
    )
    .map_err(|e| Error::bad_json(e.to_string()))?;
    let event_id = event_id_for(&object, rules).map_err(|e| Error::bad_json(e.to_string()))?;
    Ok((object, event_id))
}

/// Invites a user of another server: our signed invite goes to their
/// server, which countersigns it; then it enters the room like any event.
pub async fn invite_remote(
    server: &Arc<Server>,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    content: Value,
) -> Result<()> {
    let template = Template::state(TimelineEventType::RoomMember, target.as_str(), content);
    let (object, rules) =
        timeline::build_for_remote(server, room_id, sender, &template, true).await?;
    let version = rooms::require_room(server, room_id).await?;
    let event_id = event_id_for(&object, &rules).map_err(Error::internal)?;
    let event = RawValue::from_string(serde_json::to_string(&object)?)?;
    let room_state = invite_room_state(server, room_id).await?;
    let request = create_invite::v2::Request::new(
        room_id.to_owned(),
        event_id.clone(),
        version,
        event,
        room_state,
    );
    let destination = target.server_name();
    let response = server
        .federation
        .send(destination, request)
        .await
        .map_err(|e| remote_error(destination, "Invite", &e))?;
    let countersigned = pdu::parse_object(&response.event)?;
    if !signed_by(&countersigned, destination) {
        return Err(Error::bad_json(format!(
            "{destination} did not sign the invite"
        )));
    }
    let incoming = pdu::verify(server, countersigned, &rules, room_id).await?;
    if incoming.event_id != event_id {
        return Err(Error::bad_json(format!("{destination} changed the invite")));
    }
    let _room = server.room_ingest.lock(room_id.as_str()).await;
    let before = StateBefore::FromPrevEvents(Vec::new());
    place::place(server, &rules, &incoming, before, true).await
}

fn signed_by(object: &CanonicalJsonObject, server_name: &ServerName) -> bool {
    object
        .get("signatures")
        .and_then(|s| s.as_object())
        .is_some_and(|s| s.contains_key(server_name.as_str()))
}

/// What a knocking server learns of the room (`send_knock`'s answer).
pub async fn knock_room_state(server: &Server, room_id: &RoomId) -> Result<Vec<RawStrippedState>> {
    invite_room_state(server, room_id).await
}

/// The room's stripped-state events, as the full PDUs the spec asks for
/// since v1.16.
async fn invite_room_state(server: &Server, room_id: &RoomId) -> Result<Vec<RawStrippedState>> {
    let state = server.db.current_state_events(room_id.as_str()).await?;
    state
        .iter()
        .filter(|e| STRIPPED_STATE_TYPES.contains(&e.event_type.as_str()))
        .map(|e| Ok(RawStrippedState::Pdu(RawValue::from_string(e.pdu.clone())?)))
        .collect()
}

/// Leaves (rejects an invite to, retracts a knock on) a room this server
/// is not in, through the server that invited us or `via`.
pub async fn leave_remote(
    server: &Arc<Server>,
    room_id: &RoomId,
    user: &UserId,
    reason: Option<&str>,
) -> Result<()> {
    let version = rooms::require_room(server, room_id).await?;
    let rules = supported_rules(&version)?;
    let own = server
        .db
        .current_state_event(room_id.as_str(), "m.room.member", user.as_str())
        .await?
        .ok_or_else(|| Error::forbidden("You are not in this room"))?;
    let inviter = UserId::parse(&own.sender).map_err(Error::internal)?;
    let mut via = vec![inviter.server_name().to_owned()];
    via.extend(room_id.server_name().map(ToOwned::to_owned));
    let rules = &rules;
    let pdu = through_first(server, &via, "leave", |candidate| async move {
        leave_through(server, &candidate, room_id, user, reason, rules).await
    })
    .await?;
    store_stub(server, &version, &pdu, None).await
}

async fn leave_through(
    server: &Server,
    resident: &ServerName,
    room_id: &RoomId,
    user: &UserId,
    reason: Option<&str>,
    rules: &RoomVersionRules,
) -> Result<IncomingPdu> {
    let request = prepare_leave_event::v1::Request::new(room_id.to_owned(), user.to_owned());
    let made = server
        .federation
        .send(resident, request)
        .await
        .map_err(|e| remote_error(resident, "make_leave", &e))?;
    let (object, event_id) =
        sign_template(server, &made.event, room_id, user, "leave", reason, rules).await?;
    let raw = RawValue::from_string(serde_json::to_string(&object)?)?;
    let request = create_leave_event::v2::Request::new(room_id.to_owned(), event_id, raw);
    server
        .federation
        .send(resident, request)
        .await
        .map_err(|e| remote_error(resident, "send_leave", &e))?;
    pdu::verify(server, object, rules, room_id).await
}

/// Knocks on a room this server is not in, through `via`.
pub async fn knock_remote(
    server: &Arc<Server>,
    room_id: &RoomId,
    user: &UserId,
    via: &[OwnedServerName],
    reason: Option<&str>,
) -> Result<()> {
    through_first(server, via, "knock", |candidate| async move {
        knock_through(server, &candidate, room_id, user, reason).await
    })
    .await
}

async fn knock_through(
    server: &Arc<Server>,
    resident: &ServerName,
    room_id: &RoomId,
    user: &UserId,
    reason: Option<&str>,
) -> Result<()> {
    let mut request = prepare_knock_event::v1::Request::new(room_id.to_owned(), user.to_owned());
    request.ver = SUPPORTED_VERSIONS.to_vec();
    let made = server
        .federation
        .send(resident, request)
        .await
        .map_err(|e| remote_error(resident, "make_knock", &e))?;
    let rules = supported_rules(&made.room_version)?;
    let (object, event_id) =
        sign_template(server, &made.event, room_id, user, "knock", reason, &rules).await?;
    let raw = RawValue::from_string(serde_json::to_string(&object)?)?;
    let request = create_knock_event::v1::Request::new(room_id.to_owned(), event_id, raw);
    let knocked = server
        .federation
        .send(resident, request)
        .await
        .map_err(|e| remote_error(resident, "send_knock", &e))?;
    let stripped: Vec<Value> = knocked
        .knock_room_state
        .iter()
        .filter_map(stripped_form)
        .collect();
    let pdu = pdu::verify(server, object, &rules, room_id).await?;
    store_stub(
        server,
        &made.room_version,
        &pdu,
        Some(json!({ "knock_room_state": stripped })),
    )
    .await
}

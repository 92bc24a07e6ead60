//! `createRoom`: spec client-server API, "Creation". The events are sent in
//! the order the spec lists, all in one transaction, so a room is either
//! created whole or not at all.

use corvid_federation::{event_id_for, room_id_for_create, rules_for, sign_pdu};
use ruma::{
    OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
    events::TimelineEventType, room_version_rules::RoomVersionRules,
};
use serde_json::{Map, Value, json};

use super::{
    membership,
    pdu::Pdu,
    timeline::{self, Appended, Template, to_object},
};
use crate::{
    Error, Result, Server,
    store::{StreamItem, events::NewEvent},
};

pub const DEFAULT_ROOM_VERSION: RoomVersionId = RoomVersionId::V12;
pub const SUPPORTED_ROOM_VERSIONS: [RoomVersionId; 3] =
    [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// A validated `createRoom` request.
pub struct NewRoom {
    pub version: RoomVersionId,
    pub preset: Preset,
    pub creation_content: Map<String, Value>,
    pub initial_state: Vec<(TimelineEventType, String, Value)>,
    pub power_level_override: Option<Map<String, Value>>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub alias: Option<OwnedRoomAliasId>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub publish: bool,
}

pub async fn create_room(
    server: &std::sync::Arc<Server>,
    creator: &UserId,
    room: NewRoom,
) -> Result<OwnedRoomId> {
    if !SUPPORTED_ROOM_VERSIONS.contains(&room.version) {
        return Err(Error::unsupported_room_version(room.version.as_str()));
    }
    let rules = rules_for(&room.version)?;
    if let Some(alias) = &room.alias
        && server.db.alias_room(alias.as_str()).await?.is_some()
    {
        return Err(Error::room_in_use("Room alias already taken"));
    }
    let creator_profile = server.db.user(creator.as_str()).await?;

    let mut w = server.db.write().await?;
    let (room_id, create_appended) =
        insert_create_event(server, &mut w, creator, &room, &rules).await?;
    let mut appended = vec![create_appended];
    let mut heads = timeline::RoomHeads::new();
    let mut events = vec![Template::state(
        TimelineEventType::RoomMember,
        creator.as_str(),
        membership::member_content("join", creator_profile.as_ref(), None),
    )];
    events.push(Template::state(
        TimelineEventType::RoomPowerLevels,
        "",
        power_levels(creator, &room, &rules),
    ));
    if let Some(alias) = &room.alias {
        events.push(Template::state(
            TimelineEventType::RoomCanonicalAlias,
            "",
            json!({ "alias": alias }),
        ));
    }
    let (join_rule, guest_access) = match room.preset {
        Preset::PublicChat => ("public", "forbidden"),
        Preset::PrivateChat | Preset::TrustedPrivateChat => ("invite", "can_join"),
    };
    events.push(Template::state(
        TimelineEventType::RoomJoinRules,
        "",
        json!({ "join_rule": join_rule }),
    ));
    events.push(Template::state(
        TimelineEventType::RoomHistoryVisibility,
        "",
        json!({ "history_visibility": "shared" }),
    ));
    events.push(Template::state(
        TimelineEventType::RoomGuestAccess,
        "",
        json!({ "guest_access": guest_access }),
    ));
    for (kind, key, content) in &room.initial_state {
        events.push(Template::state(kind.clone(), key.clone(), content.clone()));
    }
    if let Some(name) = &room.name {
        events.push(Template::state(
            TimelineEventType::RoomName,
            "",
            json!({ "name": name }),
        ));
    }
    if let Some(topic) = &room.topic {
        events.push(Template::state(
            TimelineEventType::RoomTopic,
            "",
            topic_content(topic),
        ));
    }
    for template in events {
        appended.push(
            timeline::append_in(
                server, &mut w, &mut heads, &room_id, creator, template, None,
            )
            .await?,
        );
    }
    if let Some(alias) = &room.alias {
        w.insert_alias(alias.as_str(), room_id.as_str(), creator.as_str())
            .await?;
    }
    if room.publish {
        w.set_room_public(room_id.as_str(), true).await?;
    }
    w.commit().await?;
    timeline::notify(server, &appended).await;

    for invitee in &room.invite {
        membership::invite(server, &room_id, creator, invitee, None, room.is_direct).await?;
    }
    tracing::info!(%room_id, version = %room.version, "room created");
    Ok(room_id)
}

async fn insert_create_event(
    server: &Server,
    w: &mut crate::store::WriteTx<'_>,
    creator: &UserId,
    room: &NewRoom,
    rules: &RoomVersionRules,
) -> Result<(OwnedRoomId, Appended)> {
    let mut content = room.creation_content.clone();
    content.insert("room_version".into(), json!(room.version));
    if rules.authorization.use_room_create_sender {
        content.remove("creator");
    } else {
        content.insert("creator".into(), json!(creator));
    }
    if rules.authorization.additional_room_creators && room.preset == Preset::TrustedPrivateChat {
        let mut extra: Vec<Value> = content
            .get("additional_creators")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for invitee in &room.invite {
            if !extra.contains(&json!(invitee)) {
                extra.push(json!(invitee));
            }
        }
        content.insert("additional_creators".into(), Value::Array(extra));
    }
    let mut ts = crate::now_ms();
    let (room_id, event_id, pdu_json) = loop {
        let (room_id, event_id, pdu_json) =
            signed_create_event(server, creator, &content, ts, rules)?;
        if w.insert_room(room_id.as_str(), room.version.as_str(), creator.as_str())
            .await?
        {
            break (room_id, event_id, pdu_json);
        }
        // Room version 12 derives the room id from the create event, so one
        // user creating two alike rooms in the same millisecond would make
        // the same id; the later one moves to the next millisecond.
        ts += 1;
    };
    let pdu = Pdu::parse(event_id.clone(), &pdu_json)?;
    let stream_ordering = w.next_stream_position(StreamItem::Event).await?;
    let event = NewEvent {
        stream_ordering,
        event_id: event_id.as_str(),
        room_id: room_id.as_str(),
        event_type: "m.room.create",
        state_key: Some(""),
        sender: creator.as_str(),
        origin_server_ts: pdu.origin_server_ts.get().into(),
        depth: 1,
        pdu: &pdu_json,
        prev_events: &[],
        auth_events: &[],
        unsigned_extra: None,
        state_group_before: None,
        txn: None,
        redacts: None,
        placement: crate::store::events::Placement::Local,
    };
    w.stage_event(&event, None).await?;
    let event = event.to_stored();
    Ok((
        room_id.clone(),
        Appended {
            event_id,
            stream_ordering,
            room_id,
            member: None,
            event,
        },
    ))
}

/// The signed create event with this timestamp: `(room id, event id, PDU)`.
fn signed_create_event(
    server: &Server,
    creator: &UserId,
    content: &Map<String, Value>,
    ts: i64,
    rules: &RoomVersionRules,
) -> Result<(OwnedRoomId, ruma::OwnedEventId, String)> {
    let mut v = json!({
        "sender": creator,
        "type": "m.room.create",
        "state_key": "",
        "content": content,
        "origin_server_ts": ts,
        "depth": 1,
        "prev_events": [],
        "auth_events": [],
    });
    let v12 = rules.authorization.room_create_event_id_as_room_id;
    let legacy_room_id = RoomId::new_v1(server.server_name());
    if !v12 {
        v["room_id"] = json!(legacy_room_id);
    }
    let mut object = to_object(v)?;
    sign_pdu(
        &mut object,
        server.server_name().as_str(),
        &server.signing_key,
        rules,
    )?;
    let event_id = event_id_for(&object, rules)?;
    let room_id = room_id_for_create(&object, rules)?.unwrap_or(legacy_room_id);
    let pdu = Pdu::parse(event_id.clone(), &serde_json::to_string(&object)?)?;
    timeline::authorize(rules, &pdu, &[])?;
    Ok((room_id, event_id, serde_json::to_string(&object)?))
}

/// spec: createRoom step 3, with the room version 12 rule that creators hold
/// infinite power and must not be listed, and tombstones need more than
/// `state_default`.
fn power_levels(creator: &UserId, room: &NewRoom, rules: &RoomVersionRules) -> Value {
    let creators_listed = !rules.authorization.explicitly_privilege_room_creators;
    let mut users = Map::new();
    if creators_listed {
        users.insert(creator.to_string(), json!(100));
        if room.preset == Preset::TrustedPrivateChat {
            for invitee in &room.invite {
                users.insert(invitee.to_string(), json!(100));
            }
        }
    }
    let tombstone = if creators_listed { 100 } else { 150 };
    let mut content = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": tombstone,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": if room.preset == Preset::PublicChat { 50 } else { 0 },
        "notifications": { "room": 50 },
    });
    if let Some(overrides) = &room.power_level_override {
        for (key, value) in overrides {
            content[key] = value.clone();
        }
    }
    content
}

/// Room version-independent topic content: plain text plus the `m.topic` block (spec v1.15+).
pub fn topic_content(topic: &str) -> Value {
    json!({ "topic": topic, "m.topic": { "m.text": [{ "body": topic, "mimetype": "text/plain" }] } })
}

//! PDUs as clients see them: spec client-server API, "Room event format"
//! (and the sync format, which omits `room_id`).

use std::collections::{BTreeMap, HashMap};

use ruma::{RoomVersionId, UserId, canonical_json::redact};
use serde_json::{
    Map, Value, json,
    value::{RawValue, to_raw_value},
};

use super::timeline::to_object;
use crate::{Error, Result, Server, store::events::StoredEvent};

/// Fields of a PDU that clients never see.
const FEDERATION_ONLY: [&str; 6] = [
    "auth_events",
    "prev_events",
    "depth",
    "hashes",
    "signatures",
    "origin",
];

/// An event as clients get it, serialised.
pub type ClientEvent = Box<RawValue>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// With `room_id` (`/messages`, `/event`, `/state`…).
    Client,
    /// Without `room_id` (`/sync` timelines and state).
    Sync,
}

/// Formats events for `viewer`; redacted events are redacted with their room
/// version's rules and carry `redacted_because`. Events served to a viewer
/// carry their bundled aggregations (`unsigned."m.relations"`).
pub async fn format_events(
    server: &Server,
    events: &[StoredEvent],
    viewer: Option<(&UserId, &str)>,
    format: Format,
) -> Result<Vec<ClientEvent>> {
    let mut bundles = match viewer {
        Some(viewer) => super::relations::bundles(server, events, viewer, format).await?,
        None => HashMap::new(),
    };
    format_with(server, events, viewer, format, &mut bundles).await
}

/// [`format_events`] with the bundled aggregations already known, by event id.
pub async fn format_with(
    server: &Server,
    events: &[StoredEvent],
    viewer: Option<(&UserId, &str)>,
    format: Format,
    bundles: &mut HashMap<String, Box<RawValue>>,
) -> Result<Vec<ClientEvent>> {
    let mut versions: HashMap<String, RoomVersionId> = HashMap::new();
    let redaction_ids: Vec<String> = events
        .iter()
        .filter_map(|e| e.redacted_by.clone())
        .collect();
    let redactions: HashMap<String, StoredEvent> = server
        .db
        .events(&redaction_ids)
        .await?
        .into_iter()
        .map(|e| (e.event_id.clone(), e))
        .collect();
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let version = match versions.get(&event.room_id) {
            Some(v) => v.clone(),
            None => {
                let room_id: &ruma::RoomId =
                    event.room_id.as_str().try_into().map_err(Error::internal)?;
                let v = super::require_room(server, room_id).await?;
                versions.insert(event.room_id.clone(), v.clone());
                v
            }
        };
        let because = event
            .redacted_by
            .as_ref()
            .and_then(|id| redactions.get(id))
            .map(|r| format_one(r, &version, viewer, format, Unsigned::default()))
            .transpose()?;
        let extra = Unsigned {
            redacted_because: because,
            relations: bundles.remove(&event.event_id),
        };
        out.push(format_one(event, &version, viewer, format, extra)?);
    }
    Ok(out)
}

/// The `unsigned` fields made of other events, spliced in already serialised.
#[derive(Default)]
pub struct Unsigned {
    pub redacted_because: Option<ClientEvent>,
    /// The bundled aggregations, `m.relations`.
    pub relations: Option<Box<RawValue>>,
}

/// One event in the client format. The PDU is read only one level deep:
/// `content` and the other values are copied through as they are stored.
pub fn format_one(
    event: &StoredEvent,
    version: &RoomVersionId,
    viewer: Option<(&UserId, &str)>,
    format: Format,
    extra: Unsigned,
) -> Result<ClientEvent> {
    let mut fields: BTreeMap<String, Box<RawValue>> = match &extra.redacted_because {
        None => serde_json::from_str(&event.pdu)?,
        Some(_) => {
            let rules = corvid_federation::rules_for(version)?;
            let pdu: Value = serde_json::from_str(&event.pdu)?;
            let redacted =
                redact(to_object(pdu)?, &rules.redaction, None).map_err(Error::internal)?;
            serde_json::from_str(&serde_json::to_string(&redacted)?)?
        }
    };
    for key in FEDERATION_ONLY {
        fields.remove(key);
    }
    fields.insert("event_id".into(), to_raw_value(&event.event_id)?);
    match format {
        Format::Client => fields.insert("room_id".into(), to_raw_value(&event.room_id)?),
        Format::Sync => fields.remove("room_id"),
    };
    let mut unsigned: Map<String, Value> = match &event.unsigned_extra {
        Some(extra) => serde_json::from_str(extra)?,
        None => Map::new(),
    };
    if let Some(ts) = fields
        .get("origin_server_ts")
        .and_then(|ts| ts.get().parse::<i64>().ok())
    {
        unsigned.insert("age".into(), json!((crate::now_ms() - ts).max(0)));
    }
    if let (Some((user, device)), Some(txn_device), Some(txn_id)) =
        (viewer, &event.txn_device_id, &event.txn_id)
        && user.as_str() == event.sender
        && device == txn_device
    {
        unsigned.insert("transaction_id".into(), json!(txn_id));
    }
    let mut unsigned = to_raw_value(&unsigned)?;
    for (key, value) in [
        ("redacted_because", extra.redacted_because),
        ("m.relations", extra.relations),
    ] {
        if let Some(value) = value {
            unsigned = splice(&unsigned, key, &value)?;
        }
    }
    fields.insert("unsigned".into(), unsigned);
    Ok(to_raw_value(&fields)?)
}

/// Adds `key: value` to a serialised object without parsing either again.
fn splice(object: &RawValue, key: &str, value: &RawValue) -> Result<Box<RawValue>> {
    let body = object.get();
    let sep = if body == "{}" { "" } else { "," };
    Ok(RawValue::from_string(format!(
        "{}{sep}{}:{}}}",
        &body[..body.len() - 1],
        serde_json::to_string(key)?,
        value.get()
    ))?)
}

//! PDUs as clients see them: spec client-server API, "Room event format"
//! (and the sync format, which omits `room_id`).

use std::{
    borrow::Borrow,
    collections::{BTreeMap, HashMap},
};

use ruma::{RoomVersionId, UserId, canonical_json::redact};
use serde_json::{Value, value::RawValue};

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
pub async fn format_with<E: Borrow<StoredEvent>>(
    server: &Server,
    events: &[E],
    viewer: Option<(&UserId, &str)>,
    format: Format,
    bundles: &mut HashMap<String, Box<RawValue>>,
) -> Result<Vec<ClientEvent>> {
    let mut versions: HashMap<String, RoomVersionId> = HashMap::new();
    let redaction_ids: Vec<String> = events
        .iter()
        .filter_map(|e| e.borrow().redacted_by.clone())
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
        let event = event.borrow();
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

/// One event in the client format. The PDU is read only one level deep,
/// without copying: `content` and the other values are written out as they
/// are stored, then `event_id`, `room_id` (client format) and `unsigned`.
pub fn format_one(
    event: &StoredEvent,
    version: &RoomVersionId,
    viewer: Option<(&UserId, &str)>,
    format: Format,
    extra: Unsigned,
) -> Result<ClientEvent> {
    let redacted = match &extra.redacted_because {
        None => None,
        Some(_) => {
            let rules = corvid_federation::rules_for(version)?;
            let pdu: Value = serde_json::from_str(&event.pdu)?;
            let redacted =
                redact(to_object(pdu)?, &rules.redaction, None).map_err(Error::internal)?;
            Some(serde_json::to_string(&redacted)?)
        }
    };
    let pdu = redacted.as_deref().unwrap_or(&event.pdu);
    let fields = Fields::parse(pdu)?;
    let mut out = String::with_capacity(pdu.len() + 128);
    out.push('{');
    let mut origin_server_ts = None;
    for (key, value) in fields.pairs() {
        if FEDERATION_ONLY.contains(&key) || matches!(key, "event_id" | "room_id" | "unsigned") {
            continue;
        }
        if key == "origin_server_ts" {
            origin_server_ts = value.get().parse::<i64>().ok();
        }
        push_field(&mut out, key, value.get())?;
    }
    push_field(
        &mut out,
        "event_id",
        &serde_json::to_string(&event.event_id)?,
    )?;
    if format == Format::Client {
        push_field(&mut out, "room_id", &serde_json::to_string(&event.room_id)?)?;
    }
    // The stored server-computed fields, written as stored, then those
    // computed now.
    let stored = match &event.unsigned_extra {
        Some(extra) => Fields::parse(extra)?,
        None => Fields::Borrowed(BTreeMap::new()),
    };
    let mut unsigned = String::with_capacity(64);
    unsigned.push('{');
    for (key, value) in stored.pairs() {
        if !COMPUTED_UNSIGNED.contains(&key) {
            push_field(&mut unsigned, key, value.get())?;
        }
    }
    if let Some(ts) = origin_server_ts {
        push_field(
            &mut unsigned,
            "age",
            &(crate::now_ms() - ts).max(0).to_string(),
        )?;
    }
    if let (Some((user, device)), Some(txn_device), Some(txn_id)) =
        (viewer, &event.txn_device_id, &event.txn_id)
        && user.as_str() == event.sender
        && device == txn_device
    {
        push_field(
            &mut unsigned,
            "transaction_id",
            &serde_json::to_string(txn_id)?,
        )?;
    }
    if let Some(because) = &extra.redacted_because {
        push_field(&mut unsigned, "redacted_because", because.get())?;
    }
    if let Some(relations) = &extra.relations {
        push_field(&mut unsigned, "m.relations", relations.get())?;
    }
    unsigned.push('}');
    push_field(&mut out, "unsigned", &unsigned)?;
    out.push('}');
    Ok(RawValue::from_string(out)?)
}

/// Appends `"key":value` (and the comma before it) to an object being
/// written, `{` and all fields so far.
fn push_field(out: &mut String, key: &str, value: &str) -> Result<()> {
    if out.len() > 1 {
        out.push(',');
    }
    out.push_str(&serde_json::to_string(key)?);
    out.push(':');
    out.push_str(value);
    Ok(())
}

/// The `unsigned` fields computed when an event is served, never taken
/// from what is stored.
const COMPUTED_UNSIGNED: [&str; 4] = ["age", "transaction_id", "redacted_because", "m.relations"];

/// A JSON object's fields in key order, borrowed from its text unless a
/// key has an escape in it.
enum Fields<'a> {
    Borrowed(BTreeMap<&'a str, &'a RawValue>),
    Owned(BTreeMap<String, Box<RawValue>>),
}

impl<'a> Fields<'a> {
    fn parse(json: &'a str) -> Result<Self> {
        Ok(match serde_json::from_str(json) {
            Ok(fields) => Self::Borrowed(fields),
            Err(_) => Self::Owned(serde_json::from_str(json)?),
        })
    }

    fn pairs(&self) -> Vec<(&str, &RawValue)> {
        match self {
            Self::Borrowed(fields) => fields.iter().map(|(k, v)| (*k, *v)).collect(),
            Self::Owned(fields) => fields.iter().map(|(k, v)| (k.as_str(), &**v)).collect(),
        }
    }
}

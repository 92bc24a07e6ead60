//! A PDU from another server, checked as far as it can be without the room's
//! graph: spec server-server API, "Checks performed on receipt of a PDU",
//! steps 1 to 3 (format, signatures, content hash).

use std::collections::BTreeMap;

use corvid_federation::{event_id_for, room_id_for_create};
use futures::future::join_all;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, RoomId,
    canonical_json::redact,
    room_version_rules::RoomVersionRules,
    signatures::{
        PublicKeyMap, Verified, required_server_signatures_to_verify_event, verify_event,
    },
    state_res::check_pdu_format,
};
use serde_json::value::RawValue;

use super::server_keys;
use crate::{Error, Result, Server, service::rooms::pdu::Pdu};

/// A PDU that passed the format and signature checks.
pub struct IncomingPdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    /// The event as it will be stored: no `unsigned`, redacted when its
    /// content hash did not match.
    pub object: CanonicalJsonObject,
    pub json: String,
    pub pdu: Pdu,
    pub depth: i64,
    pub prev_ids: Vec<String>,
    pub auth_ids: Vec<String>,
    kind: String,
}

impl IncomingPdu {
    pub fn state_key(&self) -> Option<&str> {
        self.pdu.state_key.as_deref()
    }

    pub fn kind_str(&self) -> &str {
        &self.kind
    }
}

/// The parts of a PDU needed to find its room before checking it.
pub fn parse_object(raw: &RawValue) -> Result<CanonicalJsonObject> {
    serde_json::from_str(raw.get()).map_err(|e| Error::bad_json(format!("Invalid PDU: {e}")))
}

/// The room a PDU claims to be in; a v12 create event names none and is
/// its own room's id.
pub fn claimed_room(object: &CanonicalJsonObject) -> Option<&str> {
    object.get("room_id").and_then(|r| r.as_str())
}

/// The event id of a received PDU (its `unsigned` and any `event_id` field
/// are not part of it).
pub fn event_id_of(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Option<OwnedEventId> {
    let mut object = object.clone();
    object.remove("unsigned");
    object.remove("event_id");
    event_id_for(&object, rules).ok()
}

/// Checks 1–3 for a PDU of a room with `rules`; `expected_room` is the
/// room the PDU must be in.
pub async fn verify(
    server: &Server,
    object: CanonicalJsonObject,
    rules: &RoomVersionRules,
    expected_room: &RoomId,
) -> Result<IncomingPdu> {
    let placed = locate(object, rules, expected_room)?;
    let keys = signing_keys(server, &placed.object, rules).await?;
    check_signatures(placed, &keys, rules)
}

/// [`locate`] for many PDUs (the state and auth chain of a join, a
/// backfill), spread over the cores: computing event ids is hashing.
/// Results in the order of `objects`.
pub async fn locate_many(
    objects: Vec<CanonicalJsonObject>,
    rules: &RoomVersionRules,
    expected_room: &RoomId,
) -> Result<Vec<Result<Located>>> {
    let (rules, room) = (rules.clone(), expected_room.to_owned());
    on_all_cores(objects, move |o| locate(o, &rules, &room)).await
}

/// Checks 2 and 3 for many located PDUs: their servers' keys (those not
/// cached yet asked for side by side), then the signature and hash checks
/// spread over the cores. Results in the order of `located`.
pub async fn check_many(
    server: &Server,
    located: Vec<Located>,
    rules: &RoomVersionRules,
) -> Result<Vec<Result<IncomingPdu>>> {
    let keyed = join_all(located.into_iter().map(|placed| async move {
        let keys = signing_keys(server, &placed.object, rules).await?;
        Ok((placed, keys))
    }))
    .await;
    let rules = rules.clone();
    on_all_cores(keyed, move |k| {
        k.and_then(|(p, keys)| check_signatures(p, &keys, &rules))
    })
    .await
}

/// A PDU of the right format in the right room, its signatures unchecked.
pub struct Located {
    object: CanonicalJsonObject,
    event_id: OwnedEventId,
    room_id: OwnedRoomId,
}

impl Located {
    pub fn event_id(&self) -> &EventId {
        &self.event_id
    }
}

/// Check 1 (format), the event id, and the room.
fn locate(
    mut object: CanonicalJsonObject,
    rules: &RoomVersionRules,
    expected_room: &RoomId,
) -> Result<Located> {
    object.remove("unsigned");
    object.remove("event_id");
    check_pdu_format(&object, &rules.event_format)
        .map_err(|e| Error::bad_json(format!("Invalid PDU: {e}")))?;
    let event_id = event_id_for(&object, rules).map_err(|e| Error::bad_json(e.to_string()))?;
    let room_id = match claimed_room(&object) {
        Some(r) => OwnedRoomId::try_from(r).map_err(|e| Error::bad_json(e.to_string()))?,
        None => room_id_for_create(&object, rules)
            .map_err(|e| Error::bad_json(e.to_string()))?
            .ok_or_else(|| Error::bad_json("PDU without room_id"))?,
    };
    if room_id != expected_room {
        return Err(Error::bad_json(format!(
            "{event_id} is in {room_id}, not {expected_room}"
        )));
    }
    Ok(Located {
        object,
        event_id,
        room_id,
    })
}

/// Checks 2 and 3: signatures (a failure refuses the event) and content
/// hash (a mismatch redacts it).
fn check_signatures(
    located: Located,
    keys: &PublicKeyMap,
    rules: &RoomVersionRules,
) -> Result<IncomingPdu> {
    let Located {
        object,
        event_id,
        room_id,
    } = located;
    let object = match verify_event(keys, &object, rules) {
        Ok(Verified::All) => object,
        Ok(Verified::Signatures) => {
            tracing::info!(%event_id, "content hash mismatch: event redacted");
            redact(object, &rules.redaction, None).map_err(|e| Error::bad_json(e.to_string()))?
        }
        Err(e) => {
            return Err(Error::forbidden(format!(
                "Signature check failed for {event_id}: {e}"
            )));
        }
    };
    let json = serde_json::to_string(&object).map_err(Error::internal)?;
    let pdu = Pdu::parse(event_id.clone(), &json)?;
    let depth = match object.get("depth") {
        Some(CanonicalJsonValue::Integer(d)) => i64::from(*d),
        _ => 0,
    };
    Ok(IncomingPdu {
        event_id,
        room_id,
        object,
        json,
        prev_ids: pdu.prev_events.iter().map(|e| e.to_string()).collect(),
        auth_ids: pdu.auth_events.iter().map(|e| e.to_string()).collect(),
        kind: pdu.kind.to_string(),
        pdu,
        depth,
    })
}

/// `f` over `items`, in order; a large batch is split over the blocking
/// pool, one part per core.
async fn on_all_cores<T, R, F>(items: Vec<T>, f: F) -> Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> R + Clone + Send + 'static,
{
    const WORTH_SPLITTING: usize = 64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if items.len() < WORTH_SPLITTING || cores == 1 {
        return Ok(items.into_iter().map(f).collect());
    }
    let part = items.len().div_ceil(cores);
    let mut items = items.into_iter();
    let mut parts = Vec::with_capacity(cores);
    loop {
        let chunk: Vec<T> = items.by_ref().take(part).collect();
        if chunk.is_empty() {
            break;
        }
        let f = f.clone();
        parts.push(tokio::task::spawn_blocking(move || {
            chunk.into_iter().map(f).collect::<Vec<R>>()
        }));
    }
    let mut out = Vec::with_capacity(part * parts.len());
    for part in parts {
        out.extend(part.await.map_err(Error::internal)?);
    }
    Ok(out)
}

/// The keys of every server whose signature the event needs, valid when
/// the event says it was sent where the room version requires it.
async fn signing_keys(
    server: &Server,
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<PublicKeyMap> {
    let required = required_server_signatures_to_verify_event(object, &rules.signatures)
        .map_err(|e| Error::bad_json(format!("Invalid PDU: {e}")))?;
    let sent_at = match object.get("origin_server_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
        _ => 0,
    };
    let valid_at = if rules.enforce_key_validity {
        sent_at
    } else {
        0
    };
    let signatures = object.get("signatures").and_then(|s| s.as_object());
    let mut keys = BTreeMap::new();
    for origin in required {
        let key_ids: Vec<&str> = signatures
            .and_then(|s| s.get(origin.as_str()))
            .and_then(|s| s.as_object())
            .map(|s| s.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let found = server_keys::public_keys(server, &origin, &key_ids, valid_at).await?;
        keys.insert(origin.to_string(), found);
    }
    Ok(keys)
}

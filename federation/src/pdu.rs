//! Turning an event template into a signed PDU.
//!
//! spec: server-server API, "Signing events" and "Calculating the reference
//! hash for an event"; room versions 3+ derive the event id from the reference
//! hash, and room version 12 derives the room id from the create event's.

use ruma::{
    CanonicalJsonObject, OwnedEventId, OwnedRoomId, RoomVersionId,
    room_version_rules::{RoomIdFormatVersion, RoomVersionRules},
    signatures::{JsonError, hash_and_sign_event, reference_hash},
};

use crate::ServerSigningKey;

#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("room version {0} is not supported")]
    UnsupportedRoomVersion(RoomVersionId),
    #[error("event cannot be hashed or signed: {0}")]
    Json(#[from] JsonError),
    #[error("computed identifier is invalid: {0}")]
    Id(#[from] ruma::IdParseError),
}

pub fn rules_for(version: &RoomVersionId) -> Result<RoomVersionRules, PduError> {
    version
        .rules()
        .ok_or_else(|| PduError::UnsupportedRoomVersion(version.clone()))
}

/// Adds the content hash and this server's signature to `pdu`.
pub fn sign_pdu(
    pdu: &mut CanonicalJsonObject,
    server_name: &str,
    key: &ServerSigningKey,
    rules: &RoomVersionRules,
) -> Result<(), PduError> {
    hash_and_sign_event(server_name, key.key_pair(), pdu, &rules.redaction)?;
    Ok(())
}

/// The event id of a signed PDU: `$` + its reference hash (room versions 3+).
pub fn event_id_for(
    pdu: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<OwnedEventId, PduError> {
    let hash = reference_hash(pdu, rules)?;
    Ok(OwnedEventId::try_from(format!("${hash}"))?)
}

/// Room version 12: the room id is `!` + the create event's reference hash.
/// Earlier versions return `None`: their room id is chosen by the creating server.
pub fn room_id_for_create(
    create_pdu: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<Option<OwnedRoomId>, PduError> {
    if rules.room_id_format != RoomIdFormatVersion::V2 {
        return Ok(None);
    }
    let hash = reference_hash(create_pdu, rules)?;
    Ok(Some(OwnedRoomId::try_from(format!("!{hash}"))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::{CanonicalJsonValue, canonical_json::to_canonical_value};
    use serde_json::json;

    fn key() -> ServerSigningKey {
        let dir = std::env::temp_dir().join(format!(
            "corvid-pdu-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let key = ServerSigningKey::load_or_generate(&dir.join("k")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        key
    }

    fn template(room_id: Option<&str>) -> CanonicalJsonObject {
        let mut v = json!({
            "type": "m.room.create",
            "state_key": "",
            "sender": "@alice:localhost",
            "origin_server_ts": 1_700_000_000_000u64,
            "content": {"room_version": "12"},
            "depth": 1,
            "prev_events": [],
            "auth_events": [],
        });
        if let Some(r) = room_id {
            v["room_id"] = json!(r);
        }
        match to_canonical_value(v).unwrap() {
            CanonicalJsonValue::Object(o) => o,
            _ => unreachable!(),
        }
    }

    #[test]
    fn signing_adds_hash_and_signature_and_id_is_stable() {
        let key = key();
        let rules = RoomVersionRules::V12;
        let mut pdu = template(None);
        sign_pdu(&mut pdu, "localhost", &key, &rules).unwrap();
        assert!(pdu["hashes"].as_object().unwrap().contains_key("sha256"));
        let sigs = pdu["signatures"].as_object().unwrap()["localhost"]
            .as_object()
            .unwrap();
        assert!(sigs.contains_key(&key.key_id()));
        let a = event_id_for(&pdu, &rules).unwrap();
        let b = event_id_for(&pdu, &rules).unwrap();
        assert_eq!(a, b);
        // Unsigned data is not part of the reference hash.
        pdu.insert(
            "unsigned".into(),
            to_canonical_value(json!({"age": 5})).unwrap(),
        );
        assert_eq!(event_id_for(&pdu, &rules).unwrap(), a);
    }

    #[test]
    fn v12_room_id_is_the_create_event_hash() {
        let key = key();
        let rules = RoomVersionRules::V12;
        let mut pdu = template(None);
        sign_pdu(&mut pdu, "localhost", &key, &rules).unwrap();
        let room_id = room_id_for_create(&pdu, &rules).unwrap().unwrap();
        let event_id = event_id_for(&pdu, &rules).unwrap();
        assert_eq!(&room_id.as_str()[1..], &event_id.as_str()[1..]);
        assert!(
            room_id_for_create(&pdu, &RoomVersionRules::V11)
                .unwrap()
                .is_none()
        );
    }
}

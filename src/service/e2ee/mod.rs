//! spec: client-server API, "End-to-End Encryption". The server brokers
//! keys and never decrypts: it stores what devices sign and upload, hands
//! out one-time keys, tells devices whose keys changed, and keeps encrypted
//! key backups.

pub mod backup;
pub mod cross_signing;
pub mod dehydrated;
pub mod device_lists;
pub mod keys;

use base64::Engine as _;
use ruma::{CanonicalJsonObject, SigningKeyAlgorithm, serde::Raw};
use serde_json::{Map, Value};

use crate::{Error, Result};

/// A signed key object as a client sent it: checked to be a JSON object.
fn json_object<T>(raw: &Raw<T>, what: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(raw.json().get()) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Error::bad_json(format!("{what} must be a JSON object"))),
    }
}

/// Whether `object` carries a valid ed25519 signature by `signer`'s key
/// `key_id` (`ed25519:<id>`), made with `public_key` (unpadded base64).
fn signed_by(object: &Map<String, Value>, signer: &str, key_id: &str, public_key: &str) -> bool {
    let Some(signature) = object
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(|s| s.get(key_id))
        .and_then(Value::as_str)
    else {
        return false;
    };
    let (Some(public_key), Some(signature)) = (decode_base64(public_key), decode_base64(signature))
    else {
        return false;
    };
    let Ok(canonical) =
        serde_json::from_value::<CanonicalJsonObject>(Value::Object(object.clone()))
    else {
        return false;
    };
    let Ok(signed_bytes) = ruma::signatures::to_canonical_json_string_for_signing(&canonical)
    else {
        return false;
    };
    ruma::signatures::verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        &public_key,
        &signature,
        signed_bytes.as_bytes(),
    )
    .is_ok()
}

/// Unpadded base64 as the spec writes keys and signatures (padding tolerated).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

/// The object without `signatures` and `unsigned`: what a signature covers.
fn signed_part(object: &Map<String, Value>) -> Map<String, Value> {
    let mut part = object.clone();
    part.remove("signatures");
    part.remove("unsigned");
    part
}

/// Adds `signer`'s signature `key_id` → `signature` to a key object.
fn add_signature(object: &mut Map<String, Value>, signer: &str, key_id: &str, signature: &str) {
    let signatures = object
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(signatures) = signatures
        && let Value::Object(by_signer) = signatures
            .entry(signer)
            .or_insert_with(|| Value::Object(Map::new()))
    {
        by_signer.insert(key_id.to_owned(), Value::String(signature.to_owned()));
    }
}

fn to_raw<T>(object: Map<String, Value>) -> Result<Raw<T>> {
    let json = serde_json::value::to_raw_value(&Value::Object(object)).map_err(Error::internal)?;
    Ok(Raw::from_json(json))
}

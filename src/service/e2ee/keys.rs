//! spec: "Key management API": `/keys/upload`, `/keys/query`,
//! `/keys/claim`, `/keys/changes`.

use std::collections::BTreeMap;

use ruma::{
    DeviceId, DeviceKeyAlgorithm, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId,
    OwnedUserId, UInt, UserId,
    api::client::keys::{claim_keys, get_keys},
    encryption::{CrossSigningKey, DeviceKeys, OneTimeKey},
    serde::Raw,
};
use serde_json::{Map, Value, json};

use super::{add_signature, device_lists, to_raw};
use crate::{
    Error, Result, Server,
    store::keys::{NewKey, SignatureRow, UploadConflict},
};

/// `/keys/upload`: stores the device's identity keys (which must name this
/// user and device), new one-time keys and fallback keys; returns the
/// device's one-time key counts.
pub async fn upload(
    server: &Server,
    user: &UserId,
    device_id: &DeviceId,
    device_keys: Option<&Raw<DeviceKeys>>,
    one_time_keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    fallback_keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
    if let Some(keys) = device_keys {
        check_device_keys(user, device_id, keys)?;
    }
    let one_time = new_keys(one_time_keys)?;
    let fallback = new_keys(fallback_keys)?;
    let stored = server
        .db
        .upload_keys(
            user.as_str(),
            device_id.as_str(),
            device_keys.map(|k| k.json().get()),
            &one_time,
            &fallback,
        )
        .await?;
    match stored {
        Ok(Some(_)) => device_lists::announce(server, user).await?,
        Ok(None) => {}
        Err(UploadConflict::OneTimeKey { key_id }) => {
            return Err(Error::invalid_param(format!(
                "One-time key {key_id} already exists with different content"
            )));
        }
    }
    one_time_key_counts(server, user, device_id.as_str()).await
}

fn check_device_keys(user: &UserId, device_id: &DeviceId, raw: &Raw<DeviceKeys>) -> Result<()> {
    let keys: DeviceKeys = raw
        .deserialize()
        .map_err(|e| Error::bad_json(format!("Invalid device_keys: {e}")))?;
    if keys.user_id != user || keys.device_id != device_id {
        return Err(Error::invalid_param(
            "device_keys must name the user and device they are uploaded for",
        ));
    }
    if !keys
        .keys
        .keys()
        .any(|id| id.algorithm() == DeviceKeyAlgorithm::Ed25519 && id.key_name() == keys.device_id)
    {
        return Err(Error::invalid_param(
            "device_keys must hold the device's ed25519 key",
        ));
    }
    Ok(())
}

fn new_keys(keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>) -> Result<Vec<NewKey<'_>>> {
    keys.iter()
        .map(|(id, raw)| {
            raw.deserialize()
                .map_err(|e| Error::bad_json(format!("Invalid key {id}: {e}")))?;
            let (algorithm, key_id) = id.as_str().split_once(':').unwrap_or((id.as_str(), ""));
            Ok(NewKey {
                algorithm,
                key_id,
                key_json: raw.json().get(),
            })
        })
        .collect()
}

/// The device's unclaimed one-time keys per algorithm. `signed_curve25519`
/// is always listed, 0 included: clients read a missing count as "unknown"
/// and would not replenish.
pub async fn one_time_key_counts(
    server: &Server,
    user: &UserId,
    device_id: &str,
) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
    let mut counts = BTreeMap::from([(OneTimeKeyAlgorithm::SignedCurve25519, UInt::MIN)]);
    for (algorithm, count) in server
        .db
        .one_time_key_counts(user.as_str(), device_id)
        .await?
    {
        counts.insert(
            algorithm.as_str().into(),
            UInt::try_from(count).unwrap_or_default(),
        );
    }
    Ok(counts)
}

/// Algorithms of the device's fallback keys that nobody has used yet.
pub async fn unused_fallback_key_types(
    server: &Server,
    user: &UserId,
    device_id: &str,
) -> Result<Vec<OneTimeKeyAlgorithm>> {
    Ok(server
        .db
        .unused_fallback_algorithms(user.as_str(), device_id)
        .await?
        .into_iter()
        .map(|a| a.as_str().into())
        .collect())
}

/// `/keys/query`: the identity keys of the asked devices (all of a user's
/// when the list is empty) and the users' cross-signing keys, with the
/// signatures `requester` may see.
pub async fn query(
    server: &Server,
    requester: &UserId,
    wanted: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
) -> Result<get_keys::v3::Response> {
    let mut response = get_keys::v3::Response::new();
    let (local, remote): (Vec<_>, Vec<_>) = wanted
        .iter()
        .partition(|(user, _)| user.server_name() == server.server_name());
    record_remote_failures(
        &mut response.failures,
        remote.iter().map(|(u, _)| u.as_ref()),
    );

    let local_ids: Vec<&str> = local.iter().map(|(u, _)| u.as_str()).collect();
    let signatures = server.db.key_signatures(&local_ids).await?;
    let signatures_on = |user: &str, key_id: &str| -> Vec<&SignatureRow> {
        signatures
            .iter()
            .filter(|s| s.target_user_id == user && s.target_key_id == key_id)
            .collect()
    };

    for (user, devices) in local {
        let devices: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
        let mut user_devices = BTreeMap::new();
        for row in server.db.device_keys(user.as_str(), &devices).await? {
            let mut keys = stored_object(&row.key_json)?;
            for s in signatures_on(user.as_str(), &row.device_id) {
                add_signature(&mut keys, &s.signer_user_id, &s.signer_key_id, &s.signature);
            }
            if let Some(name) = row.display_name {
                keys.insert("unsigned".into(), json!({ "device_display_name": name }));
            }
            user_devices.insert(OwnedDeviceId::from(row.device_id), to_raw(keys)?);
        }
        response.device_keys.insert(user.clone(), user_devices);

        for (key_type, json) in server.db.cross_signing_keys(user.as_str()).await? {
            let mut key = stored_object(&json)?;
            match key_type.as_str() {
                "master" => {
                    let public = public_key(&key).unwrap_or_default();
                    // Signatures by other users' user-signing keys are for
                    // their signer's eyes only.
                    for s in signatures_on(user.as_str(), &public)
                        .into_iter()
                        .filter(|s| {
                            s.signer_user_id == user.as_str()
                                || s.signer_user_id == requester.as_str()
                        })
                    {
                        add_signature(&mut key, &s.signer_user_id, &s.signer_key_id, &s.signature);
                    }
                    response.master_keys.insert(user.clone(), to_raw(key)?);
                }
                "self_signing" => {
                    response
                        .self_signing_keys
                        .insert(user.clone(), to_raw::<CrossSigningKey>(key)?);
                }
                "user_signing" if user == requester => {
                    response
                        .user_signing_keys
                        .insert(user.clone(), to_raw(key)?);
                }
                _ => {}
            }
        }
    }
    Ok(response)
}

/// `/keys/claim`: one key per asked device, a one-time key if one is left
/// (never handed out twice), else the device's fallback key.
pub async fn claim(
    server: &Server,
    wanted: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
) -> Result<claim_keys::v3::Response> {
    let mut response = claim_keys::v3::Response::new(BTreeMap::new());
    let (local, remote): (Vec<_>, Vec<_>) = wanted
        .iter()
        .partition(|(user, _)| user.server_name() == server.server_name());
    record_remote_failures(
        &mut response.failures,
        remote.iter().map(|(u, _)| u.as_ref()),
    );
    for (user, devices) in local {
        let mut claimed = BTreeMap::new();
        for (device_id, algorithm) in devices {
            let Some((key_id, json)) = server
                .db
                .claim_key(user.as_str(), device_id.as_str(), algorithm.as_str())
                .await?
            else {
                continue;
            };
            let Ok(id) = OwnedOneTimeKeyId::try_from(format!("{algorithm}:{key_id}")) else {
                continue;
            };
            let raw = serde_json::value::RawValue::from_string(json).map_err(Error::internal)?;
            claimed
                .entry(device_id.clone())
                .or_insert_with(BTreeMap::new)
                .insert(id, Raw::from_json(raw));
        }
        if !claimed.is_empty() {
            response.one_time_keys.insert(user.clone(), claimed);
        }
    }
    Ok(response)
}

/// Users on other servers cannot be reached until federation is built:
/// the spec's `failures` map says so per server instead of leaving them out
/// silently.
fn record_remote_failures<'a>(
    failures: &mut BTreeMap<String, Value>,
    users: impl Iterator<Item = &'a UserId>,
) {
    for user in users {
        failures.insert(
            user.server_name().to_string(),
            json!({ "status": 503, "message": "Federation is not available on this server" }),
        );
    }
}

fn stored_object(json: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(json) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Error::internal("stored key is not a JSON object")),
    }
}

/// The public key of a cross-signing key (its one `keys` entry).
pub(super) fn public_key(key: &Map<String, Value>) -> Option<String> {
    key.get("keys")?
        .as_object()?
        .values()
        .next()?
        .as_str()
        .map(str::to_owned)
}

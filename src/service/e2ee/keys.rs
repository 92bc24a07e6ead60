//! spec: "Key management API": `/keys/upload`, `/keys/query`,
//! `/keys/claim`, `/keys/changes`.

use std::{collections::BTreeMap, time::Duration};

use ruma::{
    DeviceId, DeviceKeyAlgorithm, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId,
    OwnedServerName, OwnedUserId, ServerName, UInt, UserId,
    api::{
        client::keys::{claim_keys, get_keys},
        federation::keys as federation_keys,
    },
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
    let counts = server
        .db
        .one_time_key_counts(user.as_str(), device_id)
        .await?;
    Ok(counts_by_algorithm(counts))
}

/// The spec's `one_time_key_counts`: signed_curve25519 is always listed.
fn counts_by_algorithm(counts: Vec<(String, i64)>) -> BTreeMap<OneTimeKeyAlgorithm, UInt> {
    let mut by_algorithm = BTreeMap::from([(OneTimeKeyAlgorithm::SignedCurve25519, UInt::MIN)]);
    for (algorithm, count) in counts {
        by_algorithm.insert(
            algorithm.as_str().into(),
            UInt::try_from(count).unwrap_or_default(),
        );
    }
    by_algorithm
}

/// What a sync reports of a device's keys: its unclaimed one-time keys per
/// algorithm (signed_curve25519 always listed) and the algorithms of its
/// fallback keys that nobody has used yet.
pub async fn key_stock(
    server: &Server,
    user: &UserId,
    device_id: &str,
) -> Result<(
    BTreeMap<OneTimeKeyAlgorithm, UInt>,
    Vec<OneTimeKeyAlgorithm>,
)> {
    let stock = server.db.key_stock(user.as_str(), device_id).await?;
    Ok((
        counts_by_algorithm(stock.one_time),
        stock
            .unused_fallback
            .into_iter()
            .map(|a| a.as_str().into())
            .collect(),
    ))
}

/// How long a `/keys/query` or `/keys/claim` waits for other servers.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(10);

/// `/keys/query`: the identity keys of the asked devices (all of a user's
/// when the list is empty) and the users' cross-signing keys, with the
/// signatures `requester` may see; other servers' users are asked of
/// their servers, all at once.
pub async fn query(
    server: &Server,
    requester: &UserId,
    wanted: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
) -> Result<get_keys::v3::Response> {
    let (local, remote) = split_by_server(server, wanted);
    let mut response = local_keys(server, Some(requester), &local).await?;
    let asked = remote.into_iter().map(|(destination, users)| async move {
        let request = federation_keys::get_keys::v1::Request::new(users);
        let answer = ask(server, &destination, request).await;
        (destination, answer)
    });
    for (destination, answer) in futures::future::join_all(asked).await {
        match answer {
            Ok(keys) => {
                let theirs = |user: &OwnedUserId| user.server_name() == destination;
                response
                    .device_keys
                    .extend(keys.device_keys.into_iter().filter(|(u, _)| theirs(u)));
                response
                    .master_keys
                    .extend(keys.master_keys.into_iter().filter(|(u, _)| theirs(u)));
                response.self_signing_keys.extend(
                    keys.self_signing_keys
                        .into_iter()
                        .filter(|(u, _)| theirs(u)),
                );
            }
            Err(failure) => {
                response.failures.insert(destination.to_string(), failure);
            }
        }
    }
    Ok(response)
}

/// `/user/keys/query` from another server: our users' keys, with only the
/// signatures anyone may see.
pub async fn query_for_server(
    server: &Server,
    wanted: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
) -> Result<federation_keys::get_keys::v1::Response> {
    let (local, _) = split_by_server(server, wanted);
    let keys = local_keys(server, None, &local).await?;
    let mut response = federation_keys::get_keys::v1::Response::new(keys.device_keys);
    response.master_keys = keys.master_keys;
    response.self_signing_keys = keys.self_signing_keys;
    Ok(response)
}

/// `/user/devices/{userId}` from another server: the user's devices with
/// their keys, and the user's cross-signing keys.
pub async fn devices_for_server(
    server: &Server,
    user: &UserId,
) -> Result<ruma::api::federation::device::get_devices::v1::Response> {
    use ruma::api::federation::device::get_devices::v1 as get_devices;
    if user.server_name() != server.server_name() {
        return Err(Error::not_found("Not one of this server's users"));
    }
    let user = user.to_owned();
    let all_devices = Vec::new();
    let mut keys = local_keys(server, None, &[(&user, &all_devices)]).await?;
    // The version of the list: the stream position is past every change to it.
    let stream_id =
        UInt::try_from(server.db.stream_position().await?.max(0) as u64).unwrap_or(UInt::MAX);
    let mut response = get_devices::Response::new(user.clone(), stream_id);
    for (device_id, device_keys) in keys.device_keys.remove(&user).unwrap_or_default() {
        let name = device_keys
            .get_field::<Value>("unsigned")
            .ok()
            .flatten()
            .and_then(|u| u.get("device_display_name")?.as_str().map(str::to_owned));
        let mut device = get_devices::UserDevice::new(device_id, device_keys);
        device.device_display_name = name;
        response.devices.push(device);
    }
    response.master_key = keys.master_keys.remove(&user);
    response.self_signing_key = keys.self_signing_keys.remove(&user);
    Ok(response)
}

type ByServer<T> = BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>>;

/// This server's users, and the others grouped by their server.
fn split_by_server<'a, T: Clone>(
    server: &Server,
    wanted: &'a BTreeMap<OwnedUserId, T>,
) -> (Vec<(&'a OwnedUserId, &'a T)>, ByServer<T>) {
    let mut local = Vec::new();
    let mut remote = ByServer::new();
    for (user, value) in wanted {
        if user.server_name() == server.server_name() {
            local.push((user, value));
        } else {
            remote
                .entry(user.server_name().to_owned())
                .or_default()
                .insert(user.clone(), value.clone());
        }
    }
    (local, remote)
}

/// Sends a keys request to another server; a failure is the spec's
/// `failures` entry for that server.
async fn ask<R>(
    server: &Server,
    destination: &ServerName,
    request: R,
) -> Result<R::IncomingResponse, Value>
where
    R: ruma::api::OutgoingRequest<
            Authentication = ruma::api::federation::authentication::ServerSignatures,
            PathBuilder = ruma::api::path_builder::SinglePath,
        >,
{
    match tokio::time::timeout(REMOTE_TIMEOUT, server.federation.send(destination, request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => {
            tracing::info!(%destination, error = %e, "keys request over federation failed");
            let status = e.status().map_or(503, |s| s.as_u16());
            Err(json!({ "status": status, "message": e.to_string() }))
        }
        Err(_) => Err(json!({ "status": 504, "message": "The server did not answer in time" })),
    }
}

/// The keys of local users; `requester` is `None` when another server asks.
async fn local_keys(
    server: &Server,
    requester: Option<&UserId>,
    local: &[(&OwnedUserId, &Vec<OwnedDeviceId>)],
) -> Result<get_keys::v3::Response> {
    let mut response = get_keys::v3::Response::new();
    let local_ids: Vec<&str> = local.iter().map(|(u, _)| u.as_str()).collect();
    let signatures = server.db.key_signatures(&local_ids).await?;
    let signatures_on = |user: &str, key_id: &str| -> Vec<&SignatureRow> {
        signatures
            .iter()
            .filter(|s| s.target_user_id == user && s.target_key_id == key_id)
            .collect()
    };

    for &(user, devices) in local {
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
                                || requester.is_some_and(|r| s.signer_user_id == r.as_str())
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
                "user_signing" if requester == Some(user.as_ref()) => {
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
/// (never handed out twice), else the device's fallback key; other
/// servers' devices are claimed from their servers.
pub async fn claim(
    server: &Server,
    wanted: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
) -> Result<claim_keys::v3::Response> {
    let (local, remote) = split_by_server(server, wanted);
    let mut response = claim_keys::v3::Response::new(claim_local(server, &local).await?);
    let asked = remote.into_iter().map(|(destination, users)| async move {
        let request = federation_keys::claim_keys::v1::Request::new(users);
        let answer = ask(server, &destination, request).await;
        (destination, answer)
    });
    for (destination, answer) in futures::future::join_all(asked).await {
        match answer {
            Ok(claimed) => response.one_time_keys.extend(
                claimed
                    .one_time_keys
                    .into_iter()
                    .filter(|(user, _)| user.server_name() == destination),
            ),
            Err(failure) => {
                response.failures.insert(destination.to_string(), failure);
            }
        }
    }
    Ok(response)
}

/// `/user/keys/claim` from another server, for our users' devices.
pub async fn claim_for_server(
    server: &Server,
    wanted: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
) -> Result<federation_keys::claim_keys::v1::Response> {
    let (local, _) = split_by_server(server, wanted);
    Ok(federation_keys::claim_keys::v1::Response::new(
        claim_local(server, &local).await?,
    ))
}

type Claimed =
    BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>>>;

async fn claim_local(
    server: &Server,
    local: &[(&OwnedUserId, &BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>)],
) -> Result<Claimed> {
    let mut one_time_keys = Claimed::new();
    for (user, devices) in local {
        let mut claimed = BTreeMap::new();
        for (device_id, algorithm) in devices.iter() {
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
            one_time_keys.insert((*user).clone(), claimed);
        }
    }
    Ok(one_time_keys)
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

//! Dehydrated devices (MSC3814, unstable `org.matrix.msc3814.v1`): a
//! device whose encrypted pickle the server keeps, so messages sent while
//! all of a user's devices were offline can be decrypted by the next one.
//! Its to-device messages wait in the ordinary to-device queue.

use ruma::{
    DeviceId, OwnedDeviceId, UserId,
    api::client::dehydrated_device::{DehydratedDeviceData, put_dehydrated_device},
    events::AnyToDeviceEvent,
    serde::Raw,
};

use super::{device_lists, keys};
use crate::{Error, Result, Server, service::to_device};

/// Messages handed out per `/dehydrated_device/{id}/events` call.
const EVENTS_PER_BATCH: usize = 100;

/// Creates the user's dehydrated device (replacing any previous one) with
/// its keys.
pub async fn put(
    server: &Server,
    user: &UserId,
    req: &put_dehydrated_device::unstable::Request,
) -> Result<()> {
    let device_data: serde_json::Value = serde_json::from_str(req.device_data.json().get())
        .map_err(|e| Error::bad_json(e.to_string()))?;
    if !device_data.is_object() {
        return Err(Error::bad_json("device_data must be a JSON object"));
    }
    server
        .db
        .put_dehydrated_device(
            user.as_str(),
            req.device_id.as_str(),
            req.initial_device_display_name.as_deref(),
            req.device_data.json().get(),
        )
        .await?;
    keys::upload(
        server,
        user,
        &req.device_id,
        Some(&req.device_keys),
        &req.one_time_keys,
        &req.fallback_keys,
    )
    .await?;
    device_lists::announce(server, user).await
}

pub async fn get(
    server: &Server,
    user: &UserId,
) -> Result<(OwnedDeviceId, Raw<DehydratedDeviceData>)> {
    let (device_id, data) = server
        .db
        .dehydrated_device(user.as_str())
        .await?
        .ok_or_else(|| Error::not_found("No dehydrated device"))?;
    let data = serde_json::value::RawValue::from_string(data).map_err(Error::internal)?;
    Ok((device_id.into(), Raw::from_json(data)))
}

pub async fn delete(server: &Server, user: &UserId) -> Result<OwnedDeviceId> {
    let device_id = server
        .db
        .delete_dehydrated_device(user.as_str())
        .await?
        .ok_or_else(|| Error::not_found("No dehydrated device"))?;
    device_lists::announce(server, user).await?;
    Ok(device_id.into())
}

/// The dehydrated device's to-device messages after `next_batch` (whose
/// earlier messages are acknowledged and deleted), and the next token.
pub async fn events(
    server: &Server,
    user: &UserId,
    device_id: &DeviceId,
    next_batch: Option<&str>,
) -> Result<(Vec<Raw<AnyToDeviceEvent>>, String)> {
    let owned = server.db.dehydrated_device(user.as_str()).await?;
    if owned.is_none_or(|(id, _)| id != device_id.as_str()) {
        return Err(Error::forbidden("That is not your dehydrated device"));
    }
    let after = match next_batch {
        Some(token) => token
            .parse::<i64>()
            .map_err(|_| Error::invalid_param("Invalid next_batch"))?,
        None => 0,
    };
    let (events, last) =
        to_device::receive(server, user, device_id, after, i64::MAX, EVENTS_PER_BATCH).await?;
    Ok((events, last.unwrap_or(after).to_string()))
}

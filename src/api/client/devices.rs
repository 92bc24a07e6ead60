//! spec: "Device management".

use std::sync::Arc;

use ruma::api::client::device::{
    delete_device, delete_devices, get_device, get_devices, update_device,
};
use serde::Serialize;

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::{e2ee::device_lists, uia},
    store::accounts::DeviceRow,
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma_json(list)
        .ruma_json(get)
        .ruma(update)
        .ruma(delete)
        .ruma(delete_many)
}

/// spec `client_device.yaml`: unset optional fields are left out. (ruma's
/// `Device` writes them as `null`, which the schema does not allow.)
#[derive(Serialize)]
struct Device {
    device_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen_ts: Option<i64>,
}

#[derive(Serialize)]
struct DeviceList {
    devices: Vec<Device>,
}

fn to_device(row: DeviceRow) -> Device {
    Device {
        device_id: row.device_id,
        display_name: row.display_name,
        last_seen_ip: row.last_seen_ip,
        last_seen_ts: row.last_seen_ts,
    }
}

async fn list(server: Arc<Server>, req: Ruma<get_devices::v3::Request>) -> Result<DeviceList> {
    let rows = server.db.devices(req.user().user_id.as_str()).await?;
    Ok(DeviceList {
        devices: rows.into_iter().map(to_device).collect(),
    })
}

async fn get(server: Arc<Server>, req: Ruma<get_device::v3::Request>) -> Result<Device> {
    let row = server
        .db
        .device(req.user().user_id.as_str(), req.body.device_id.as_str())
        .await?;
    Ok(to_device(
        row.ok_or_else(|| Error::not_found("Unknown device"))?,
    ))
}

async fn update(
    server: Arc<Server>,
    req: Ruma<update_device::v3::Request>,
) -> Result<update_device::v3::Response> {
    let user = req.user();
    if !server
        .db
        .rename_device(
            user.user_id.as_str(),
            req.body.device_id.as_str(),
            req.body.display_name.as_deref(),
        )
        .await?
    {
        return Err(Error::not_found("Unknown device"));
    }
    Ok(update_device::v3::Response::new())
}

async fn delete(
    server: Arc<Server>,
    req: Ruma<delete_device::v3::Request>,
) -> Result<delete_device::v3::Response> {
    let user = req.user();
    if server
        .db
        .device(user.user_id.as_str(), req.body.device_id.as_str())
        .await?
        .is_none()
    {
        return Err(Error::not_found("Unknown device"));
    }
    uia::confirm_password(&server, req.body.auth.as_ref(), &user.user_id).await?;
    server
        .db
        .delete_devices(user.user_id.as_str(), &[req.body.device_id.to_string()])
        .await?;
    device_lists::announce(&server, &user.user_id).await?;
    Ok(delete_device::v3::Response::new())
}

async fn delete_many(
    server: Arc<Server>,
    req: Ruma<delete_devices::v3::Request>,
) -> Result<delete_devices::v3::Response> {
    let user = req.user();
    uia::confirm_password(&server, req.body.auth.as_ref(), &user.user_id).await?;
    let ids: Vec<String> = req.body.devices.iter().map(|d| d.to_string()).collect();
    server
        .db
        .delete_devices(user.user_id.as_str(), &ids)
        .await?;
    device_lists::announce(&server, &user.user_id).await?;
    Ok(delete_devices::v3::Response::new())
}

//! spec: server-server API, "Device Management": a user's device list.

use std::sync::Arc;

use ruma::api::federation::device::get_devices;

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::e2ee::keys,
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(devices)
}

async fn devices(
    server: Arc<Server>,
    req: Ruma<get_devices::v1::Request>,
) -> Result<get_devices::v1::Response> {
    keys::devices_for_server(&server, &req.body.user_id).await
}

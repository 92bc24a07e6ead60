//! spec: "Send-to-Device messaging".

use std::sync::Arc;

use ruma::api::client::to_device::send_event_to_device;

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::to_device,
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(send)
}

async fn send(
    server: Arc<Server>,
    req: Ruma<send_event_to_device::v3::Request>,
) -> Result<send_event_to_device::v3::Response> {
    let b = &req.body;
    to_device::send(
        &server,
        req.user(),
        &b.event_type.to_string(),
        b.txn_id.as_str(),
        &b.messages,
    )
    .await?;
    Ok(send_event_to_device::v3::Response::new())
}

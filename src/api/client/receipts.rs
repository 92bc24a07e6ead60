//! spec: "Receipts" and "Read and unread markers".

use std::sync::Arc;

use ruma::api::client::{read_marker::set_read_marker, receipt::create_receipt};

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::{presence, receipts},
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(receipt).ruma(read_markers)
}

async fn receipt(
    server: Arc<Server>,
    req: Ruma<create_receipt::v3::Request>,
) -> Result<create_receipt::v3::Response> {
    let b = &req.body;
    let user = &req.user().user_id;
    receipts::send(
        &server,
        user,
        &b.room_id,
        b.receipt_type.as_str(),
        &b.event_id,
        &b.thread,
    )
    .await?;
    presence::active(&server, user).await?;
    Ok(create_receipt::v3::Response::new())
}

async fn read_markers(
    server: Arc<Server>,
    req: Ruma<set_read_marker::v3::Request>,
) -> Result<set_read_marker::v3::Response> {
    let b = &req.body;
    let user = &req.user().user_id;
    receipts::set_read_markers(
        &server,
        user,
        &b.room_id,
        b.fully_read.as_deref(),
        b.read_receipt.as_deref(),
        b.private_read_receipt.as_deref(),
    )
    .await?;
    presence::active(&server, user).await?;
    Ok(set_read_marker::v3::Response::new())
}

//! spec: "Threading", "Querying threads in a room" (`/threads`).

use std::sync::Arc;

use ruma::api::client::threads::get_threads;

use super::room::raw;
use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::rooms::relations,
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(threads)
}

async fn threads(
    server: Arc<Server>,
    req: Ruma<get_threads::v1::Request>,
) -> Result<get_threads::v1::Response> {
    let user = req.user();
    let b = &req.body;
    let viewer = (user.user_id.as_ref(), user.device_id.as_str());
    let page = relations::threads(
        &server,
        &b.room_id,
        viewer,
        &b.include,
        b.from.as_deref(),
        b.limit,
    )
    .await?;
    let mut response = get_threads::v1::Response::new(page.chunk.into_iter().map(raw).collect());
    response.next_batch = page.next_batch;
    Ok(response)
}

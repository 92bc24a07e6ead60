//! spec: client-server API, "Spaces".

use std::sync::Arc;

use ruma::api::client::space::get_hierarchy;

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::space::{self, HierarchyRequest},
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(hierarchy)
}

async fn hierarchy(
    server: Arc<Server>,
    req: Ruma<get_hierarchy::v1::Request>,
) -> Result<get_hierarchy::v1::Response> {
    let body = &req.body;
    let request = HierarchyRequest {
        from: body.from.as_deref(),
        limit: body.limit.map(|l| u64::from(l) as usize),
        max_depth: body.max_depth.map(|d| u64::from(d) as usize),
        suggested_only: body.suggested_only,
    };
    let (rooms, next_batch) =
        space::hierarchy(&server, &req.user().user_id, &body.room_id, request).await?;
    let mut response = get_hierarchy::v1::Response::new();
    response.rooms = rooms
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(Error::internal)?;
    response.next_batch = next_batch;
    Ok(response)
}

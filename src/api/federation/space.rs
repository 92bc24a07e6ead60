//! spec: server-server API, "Spaces".

use std::sync::Arc;

use ruma::api::federation::space::get_hierarchy;

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::space,
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(hierarchy)
}

async fn hierarchy(
    server: Arc<Server>,
    req: Ruma<get_hierarchy::v1::Request>,
) -> Result<get_hierarchy::v1::Response> {
    let body = &req.body;
    let (room, children, inaccessible) =
        space::hierarchy_for_server(&server, req.origin(), &body.room_id, body.suggested_only)
            .await?;
    let room = serde_json::from_value(room).map_err(Error::internal)?;
    let mut response = get_hierarchy::v1::Response::new(room);
    response.children = children
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(Error::internal)?;
    response.inaccessible_children = inaccessible;
    Ok(response)
}

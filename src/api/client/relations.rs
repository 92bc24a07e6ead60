//! spec: "Relationships API" (`/relations`), in "Forming relationships between events".

use std::sync::Arc;

use ruma::api::client::relations::{
    get_relating_events, get_relating_events_with_rel_type,
    get_relating_events_with_rel_type_and_event_type,
};

use super::room::raw;
use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::rooms::relations::{self, RelationsRequest},
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(children)
        .ruma(children_by_rel_type)
        .ruma(children_by_rel_and_event_type)
}

/// The three endpoints differ only in the filters their paths carry and in
/// their ruma types: one body, given the request's `rel_type` and
/// `event_type` filters.
macro_rules! relations_page {
    ($server:expr, $req:expr, $endpoint:ident, $rel_type:expr, $event_type:expr) => {{
        let user = $req.user();
        let b = &$req.body;
        let request = RelationsRequest {
            rel_type: $rel_type,
            event_type: $event_type,
            from: b.from.as_deref(),
            to: b.to.as_deref(),
            dir: b.dir,
            limit: b.limit,
            recurse: b.recurse,
        };
        let viewer = (user.user_id.as_ref(), user.device_id.as_str());
        let page = relations::relations(&$server, &b.room_id, viewer, &b.event_id, request).await?;
        let chunk = page.chunk.into_iter().map(raw).collect();
        let mut response = $endpoint::v1::Response::new(chunk);
        response.next_batch = page.next_batch;
        response.prev_batch = page.prev_batch;
        response.recursion_depth = page.recursion_depth;
        Ok(response)
    }};
}

async fn children(
    server: Arc<Server>,
    req: Ruma<get_relating_events::v1::Request>,
) -> Result<get_relating_events::v1::Response> {
    relations_page!(server, req, get_relating_events, None, None)
}

async fn children_by_rel_type(
    server: Arc<Server>,
    req: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type::v1::Response> {
    let rel_type = req.body.rel_type.to_string();
    relations_page!(
        server,
        req,
        get_relating_events_with_rel_type,
        Some(rel_type.as_str()),
        None
    )
}

async fn children_by_rel_and_event_type(
    server: Arc<Server>,
    req: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let rel_type = req.body.rel_type.to_string();
    let event_type = req.body.event_type.to_string();
    relations_page!(
        server,
        req,
        get_relating_events_with_rel_type_and_event_type,
        Some(rel_type.as_str()),
        Some(event_type.as_str())
    )
}

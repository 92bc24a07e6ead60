//! spec: server-server API, "Public Room Directory": the rooms published
//! here, for other servers' users.

use std::sync::Arc;

use ruma::{
    UInt,
    api::federation::directory::{get_public_rooms, get_public_rooms_filtered},
    directory::PublicRoomsChunk,
};
use serde::Serialize;

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::directory,
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma_json(public_rooms)
        .ruma_json(public_rooms_filtered)
}

/// ruma's federation responses serialise absent batch tokens as `null`,
/// which the spec's schema does not allow; this body leaves them out.
#[derive(Serialize)]
struct Page {
    chunk: Vec<PublicRoomsChunk>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_batch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_batch: Option<String>,
    total_room_count_estimate: UInt,
}

impl From<directory::Listing> for Page {
    fn from(listing: directory::Listing) -> Self {
        Self {
            chunk: listing.chunk,
            next_batch: listing.next,
            prev_batch: listing.prev,
            total_room_count_estimate: listing.total,
        }
    }
}

async fn public_rooms(
    server: Arc<Server>,
    req: Ruma<get_public_rooms::v1::Request>,
) -> Result<Page> {
    let b = &req.body;
    let listing =
        directory::public_room_listing(&server, None, b.since.as_deref(), b.limit).await?;
    Ok(listing.into())
}

async fn public_rooms_filtered(
    server: Arc<Server>,
    req: Ruma<get_public_rooms_filtered::v1::Request>,
) -> Result<Page> {
    let b = &req.body;
    let search = b.filter.generic_search_term.as_deref();
    let listing =
        directory::public_room_listing(&server, search, b.since.as_deref(), b.limit).await?;
    Ok(listing.into())
}

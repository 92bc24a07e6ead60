//! spec: "Server Side Search" (`/search`).

use std::sync::Arc;

use ruma::api::client::search::search_events::v3::{Request, Response, ResultCategories};

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::search::{self, Searcher},
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(search)
}

async fn search(server: Arc<Server>, req: Ruma<Request>) -> Result<Response> {
    let user = req.user();
    let who = Searcher {
        user: &user.user_id,
        device: user.device_id.as_str(),
    };
    let mut categories = ResultCategories::new();
    // `room_events` is the only category the spec defines.
    if let Some(criteria) = &req.body.search_categories.room_events {
        categories.room_events =
            search::room_events(&server, who, criteria, req.body.next_batch.as_deref()).await?;
    }
    Ok(Response::new(categories))
}

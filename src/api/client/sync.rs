//! spec: "Syncing".

use std::{sync::Arc, time::Duration};

use ruma::api::client::{
    filter::FilterDefinition,
    sync::sync_events::{self, v3::Filter},
};

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::sync::{self, SyncRequest, SyncToken},
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(sync_events)
}

async fn sync_events(
    server: Arc<Server>,
    req: Ruma<sync_events::v3::Request>,
) -> Result<sync_events::v3::Response> {
    let user = req.user().clone();
    let b = req.body;
    let filter = match b.filter {
        None => FilterDefinition::default(),
        Some(Filter::FilterDefinition(def)) => def,
        Some(Filter::FilterId(id)) => {
            let id: i64 = id
                .parse()
                .map_err(|_| Error::invalid_param("Unknown filter id"))?;
            let json = server
                .db
                .filter(user.user_id.as_str(), id)
                .await?
                .ok_or_else(|| Error::invalid_param("Unknown filter id"))?;
            serde_json::from_str(&json)?
        }
        Some(_) => return Err(Error::invalid_param("Unsupported filter")),
    };
    let request = SyncRequest {
        since: b.since.as_deref().map(SyncToken::parse).transpose()?,
        full_state: b.full_state,
        filter,
        timeout: b.timeout.unwrap_or(Duration::ZERO),
        set_presence: b.set_presence,
    };
    sync::sync(&server, &user, request).await
}

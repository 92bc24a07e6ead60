//! spec: "Filtering".

use std::sync::Arc;

use ruma::{
    UserId,
    api::client::filter::{create_filter, get_filter},
};

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(create).ruma(get)
}

fn own(req_user: &UserId, path_user: &UserId) -> Result<()> {
    if req_user != path_user {
        return Err(Error::forbidden("You may only manage your own filters"));
    }
    Ok(())
}

async fn create(
    server: Arc<Server>,
    req: Ruma<create_filter::v3::Request>,
) -> Result<create_filter::v3::Response> {
    own(&req.user().user_id, &req.body.user_id)?;
    let json = serde_json::to_string(&req.body.filter)?;
    let id = server
        .db
        .create_filter(req.body.user_id.as_str(), &json)
        .await?;
    Ok(create_filter::v3::Response::new(id.to_string()))
}

async fn get(
    server: Arc<Server>,
    req: Ruma<get_filter::v3::Request>,
) -> Result<get_filter::v3::Response> {
    own(&req.user().user_id, &req.body.user_id)?;
    let id: i64 = req
        .body
        .filter_id
        .parse()
        .map_err(|_| Error::not_found("Unknown filter"))?;
    let json = server
        .db
        .filter(req.body.user_id.as_str(), id)
        .await?
        .ok_or_else(|| Error::not_found("Unknown filter"))?;
    Ok(get_filter::v3::Response::new(serde_json::from_str(&json)?))
}

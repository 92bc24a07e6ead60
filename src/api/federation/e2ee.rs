//! spec: server-server API, "End-to-End Encryption": our users' device
//! keys and one-time keys, for other servers' users.

use std::sync::Arc;

use ruma::api::federation::keys::{claim_keys, get_keys};

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::e2ee::keys,
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(query).ruma(claim)
}

async fn query(
    server: Arc<Server>,
    req: Ruma<get_keys::v1::Request>,
) -> Result<get_keys::v1::Response> {
    keys::query_for_server(&server, &req.body.device_keys).await
}

async fn claim(
    server: Arc<Server>,
    req: Ruma<claim_keys::v1::Request>,
) -> Result<claim_keys::v1::Response> {
    keys::claim_for_server(&server, &req.body.one_time_keys).await
}

//! spec: server-server API, "Retrieving server keys": our keys, and the
//! notary endpoints that serve other servers' keys countersigned by us.

use std::{collections::BTreeMap, sync::Arc};

use ruma::api::federation::discovery::{
    get_remote_server_keys, get_remote_server_keys_batch, get_server_keys,
};

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::federation::server_keys,
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(server_keys).ruma(query).ruma(query_batch)
}

async fn server_keys(
    server: Arc<Server>,
    _: Ruma<get_server_keys::v2::Request>,
) -> Result<get_server_keys::v2::Response> {
    Ok(get_server_keys::v2::Response::new(
        server_keys::own_keys_raw(&server)?,
    ))
}

async fn query(
    server: Arc<Server>,
    req: Ruma<get_remote_server_keys::v2::Request>,
) -> Result<get_remote_server_keys::v2::Response> {
    let r = req.body;
    let min_valid = i64::from(r.minimum_valid_until_ts.get());
    // No key ids: every key of the server.
    let wanted = BTreeMap::from([(r.server_name, BTreeMap::new())]);
    let mut keys = server_keys::notary_query(&server, &wanted).await?;
    if min_valid > 0 {
        keys.retain(|raw| valid_until(raw) >= min_valid);
    }
    Ok(get_remote_server_keys::v2::Response::new(keys))
}

async fn query_batch(
    server: Arc<Server>,
    req: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> Result<get_remote_server_keys_batch::v2::Response> {
    let wanted = req
        .body
        .server_keys
        .into_iter()
        .map(|(origin, keys)| {
            let keys = keys
                .into_iter()
                .map(|(id, criteria)| {
                    let min = criteria.minimum_valid_until_ts.map(|t| i64::from(t.get()));
                    (id, min.unwrap_or(0))
                })
                .collect();
            (origin, keys)
        })
        .collect();
    let keys = server_keys::notary_query(&server, &wanted).await?;
    Ok(get_remote_server_keys_batch::v2::Response::new(keys))
}

fn valid_until<T>(raw: &ruma::serde::Raw<T>) -> i64 {
    raw.get_field::<i64>("valid_until_ts")
        .ok()
        .flatten()
        .unwrap_or(0)
}

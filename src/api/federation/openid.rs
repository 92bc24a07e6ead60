//! spec: server-server API, "OpenID": who an OpenID token belongs to.

use std::sync::Arc;

use ruma::api::federation::openid::get_openid_userinfo;

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::openid,
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(userinfo)
}

async fn userinfo(
    server: Arc<Server>,
    req: Ruma<get_openid_userinfo::v1::Request>,
) -> Result<get_openid_userinfo::v1::Response> {
    let user = openid::userinfo(&server, &req.body.access_token).await?;
    Ok(get_openid_userinfo::v1::Response::new(user))
}

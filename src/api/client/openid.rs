//! spec: "OpenID".

use std::sync::Arc;

use ruma::{api::client::account::request_openid_token, authentication::TokenType};

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::openid,
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(request_token)
}

async fn request_token(
    server: Arc<Server>,
    req: Ruma<request_openid_token::v3::Request>,
) -> Result<request_openid_token::v3::Response> {
    if req.user().user_id != req.body.user_id {
        return Err(Error::forbidden(
            "You may only ask for your own OpenID token",
        ));
    }
    let token = openid::request_token(&server, &req.body.user_id).await?;
    Ok(request_openid_token::v3::Response::new(
        token,
        TokenType::Bearer,
        server.server_name().to_owned(),
        openid::LIFETIME,
    ))
}

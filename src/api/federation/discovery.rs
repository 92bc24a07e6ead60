//! spec: server-server API, "Server implementation".

use std::sync::Arc;

use ruma::api::federation::discovery::get_server_version;

use crate::{
    Result, Server,
    api::{Routes, Ruma},
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(version)
}

async fn version(
    _: Arc<Server>,
    _: Ruma<get_server_version::v1::Request>,
) -> Result<get_server_version::v1::Response> {
    let mut about = get_server_version::v1::Server::default();
    about.name = Some("Corvid".to_owned());
    about.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut response = get_server_version::v1::Response::new();
    response.server = Some(about);
    Ok(response)
}

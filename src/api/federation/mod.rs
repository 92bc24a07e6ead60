//! Server-server API handlers, one module per spec section. Every
//! `/_matrix/federation` request is X-Matrix authenticated by [`super::Ruma`]
//! before its handler runs; the key endpoints need no authentication.

mod devices;
mod directory;
mod discovery;
mod e2ee;
mod keys;
mod media;
mod openid;
mod query;

use super::Routes;

pub fn routes(router: Routes) -> Routes {
    let router = devices::routes(router);
    let router = directory::routes(router);
    let router = discovery::routes(router);
    let router = e2ee::routes(router);
    let router = keys::routes(router);
    let router = media::routes(router);
    let router = openid::routes(router);
    query::routes(router)
}

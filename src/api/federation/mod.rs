//! Server-server API handlers, one module per spec section. Every
//! `/_matrix/federation` request is X-Matrix authenticated by [`super::Ruma`]
//! before its handler runs; the key endpoints need no authentication.

mod devices;
mod directory;
mod discovery;
mod e2ee;
mod events;
mod keys;
mod media;
mod membership;
mod openid;
mod query;
mod space;
mod transactions;

use super::Routes;

pub fn routes(router: Routes) -> Routes {
    let router = devices::routes(router);
    let router = directory::routes(router);
    let router = discovery::routes(router);
    let router = e2ee::routes(router);
    let router = events::routes(router);
    let router = keys::routes(router);
    let router = media::routes(router);
    let router = membership::routes(router);
    let router = openid::routes(router);
    let router = query::routes(router);
    let router = space::routes(router);
    transactions::routes(router)
}

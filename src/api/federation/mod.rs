//! Server-server API handlers, one module per spec section. Every
//! `/_matrix/federation` request is X-Matrix authenticated by [`super::Ruma`]
//! before its handler runs; the key endpoints need no authentication.

mod discovery;
mod keys;
mod media;
mod query;

use super::Routes;

pub fn routes(router: Routes) -> Routes {
    let router = discovery::routes(router);
    let router = keys::routes(router);
    let router = media::routes(router);
    query::routes(router)
}

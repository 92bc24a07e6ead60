//! Client-server API handlers, one module per spec section.

mod account;
mod account_data;
mod devices;
mod directory;
mod discovery;
mod filter;
mod membership;
mod message;
mod profile;
mod push;
mod room;
mod session;
mod state;
mod sync;

use super::Routes;

pub fn routes(router: Routes) -> Routes {
    let router = discovery::routes(router);
    let router = account::routes(router);
    let router = session::routes(router);
    let router = devices::routes(router);
    let router = profile::routes(router);
    let router = push::routes(router);
    let router = filter::routes(router);
    let router = account_data::routes(router);
    let router = room::routes(router);
    let router = membership::routes(router);
    let router = message::routes(router);
    let router = state::routes(router);
    let router = directory::routes(router);
    sync::routes(router)
}

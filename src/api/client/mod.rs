//! Client-server API handlers, one module per spec section.

mod account;
mod account_data;
mod backup;
mod dehydrated_device;
mod devices;
mod directory;
mod discovery;
pub use discovery::SPEC_VERSIONS;
mod filter;
mod keys;
mod media;
pub(crate) use media::disposition as media_disposition;
pub use media::safe_headers as media_safe_headers;
mod membership;
mod message;
mod openid;
mod presence;
mod profile;
mod push;
mod receipts;
mod relations;
mod report;
mod room;
mod search;
mod session;
mod space;
mod state;
mod sync;
mod threads;
mod to_device;
mod typing;
mod user_directory;

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
    let router = receipts::routes(router);
    let router = typing::routes(router);
    let router = presence::routes(router);
    let router = report::routes(router);
    let router = search::routes(router);
    let router = user_directory::routes(router);
    let router = relations::routes(router);
    let router = threads::routes(router);
    let router = space::routes(router);
    let router = keys::routes(router);
    let router = to_device::routes(router);
    let router = backup::routes(router);
    let router = dehydrated_device::routes(router);
    let router = media::routes(router);
    let router = openid::routes(router);
    sync::routes(router)
}

/// Client-sent event content: a JSON object and, for the event types the spec
/// defines, of the shape it defines (a malformed power levels event is a 400,
/// not an authorization failure).
fn event_content<T: ruma::events::EventContentFromType>(
    raw: &ruma::serde::Raw<T>,
    event_type: &str,
) -> crate::Result<serde_json::Value> {
    use ruma::events::RawExt as _;
    let content: serde_json::Value = serde_json::from_str(raw.json().get())
        .map_err(|e| crate::Error::bad_json(e.to_string()))?;
    if !content.is_object() {
        return Err(crate::Error::bad_json(
            "Event content must be a JSON object",
        ));
    }
    raw.deserialize_with_type(event_type)
        .map_err(|e| crate::Error::bad_json(format!("Invalid {event_type} content: {e}")))?;
    Ok(content)
}

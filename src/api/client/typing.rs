//! spec: "Typing notifications".

use std::sync::Arc;

use ruma::api::client::typing::create_typing_event::{self, v3::Typing};

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::{account_data::check_owner, presence, typing},
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(set_typing)
}

async fn set_typing(
    server: Arc<Server>,
    req: Ruma<create_typing_event::v3::Request>,
) -> Result<create_typing_event::v3::Response> {
    let b = &req.body;
    check_owner(&req.user().user_id, &b.user_id)?;
    let timeout = match &b.state {
        Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    typing::set_typing(&server, &b.room_id, &b.user_id, timeout).await?;
    if timeout.is_some() {
        presence::active(&server, &b.user_id).await?;
    }
    Ok(create_typing_event::v3::Response::new())
}

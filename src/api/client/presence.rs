//! spec: "Presence".

use std::{sync::Arc, time::Duration};

use ruma::{
    api::client::presence::{get_presence, set_presence},
    presence::PresenceState,
};

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::{account_data::check_owner, presence},
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(set_status).ruma(status)
}

async fn set_status(
    server: Arc<Server>,
    req: Ruma<set_presence::v3::Request>,
) -> Result<set_presence::v3::Response> {
    let b = &req.body;
    check_owner(&req.user().user_id, &b.user_id)?;
    if !matches!(
        b.presence,
        PresenceState::Online | PresenceState::Offline | PresenceState::Unavailable
    ) {
        return Err(Error::invalid_param(format!(
            "Unknown presence state {}",
            b.presence
        )));
    }
    presence::set_status(&server, &b.user_id, &b.presence, b.status_msg.clone()).await?;
    Ok(set_presence::v3::Response::new())
}

async fn status(
    server: Arc<Server>,
    req: Ruma<get_presence::v3::Request>,
) -> Result<get_presence::v3::Response> {
    let b = &req.body;
    let record = presence::visible_status(&server, &req.user().user_id, &b.user_id).await?;
    let mut response = get_presence::v3::Response::new(record.state.as_str().into());
    response.status_msg = record.status_msg;
    response.currently_active = Some(record.currently_active);
    if record.last_active_ts > 0 {
        let ago = (crate::now_ms() - record.last_active_ts).max(0) as u64;
        response.last_active_ago = Some(Duration::from_millis(ago));
    }
    Ok(response)
}

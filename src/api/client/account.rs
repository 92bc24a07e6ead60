//! spec: "Account registration and management".

use std::{sync::Arc, time::Duration};

use ruma::api::client::account::{
    ThirdPartyIdRemovalStatus, change_password, check_registration_token_validity, deactivate,
    get_username_availability, register, whoami,
};

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::{accounts, uia},
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(register)
        .ruma(available)
        .ruma(token_validity)
        .ruma(whoami)
        .ruma(change_password)
        .ruma(deactivate)
}

async fn token_validity(
    server: Arc<Server>,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<check_registration_token_validity::v1::Response> {
    let valid = accounts::registration_token_valid(&server, &req.body.token).await?;
    Ok(check_registration_token_validity::v1::Response::new(valid))
}

async fn register(
    server: Arc<Server>,
    req: Ruma<register::v3::Request>,
) -> Result<register::v3::Response> {
    let body = req.body;
    if body.kind == register::RegistrationKind::Guest {
        return Err(Error::new(
            http::StatusCode::FORBIDDEN,
            "M_GUEST_ACCESS_FORBIDDEN",
            "Guest access is disabled",
        ));
    }
    let user_id = accounts::register(
        &server,
        body.username.as_deref(),
        body.password.as_deref(),
        body.auth.as_ref(),
    )
    .await?;
    if body.inhibit_login {
        return Ok(register::v3::Response::new(user_id));
    }
    let session = accounts::start_session(
        &server,
        &user_id,
        body.device_id,
        body.initial_device_display_name.as_deref(),
        body.refresh_token,
    )
    .await?;
    let mut response = register::v3::Response::new(user_id);
    response.access_token = Some(session.access_token);
    response.device_id = Some(session.device_id);
    response.refresh_token = session.refresh_token;
    response.expires_in = session.expires_in_ms.map(Duration::from_millis);
    Ok(response)
}

async fn available(
    server: Arc<Server>,
    req: Ruma<get_username_availability::v3::Request>,
) -> Result<get_username_availability::v3::Response> {
    accounts::check_available(&server, &req.body.username).await?;
    Ok(get_username_availability::v3::Response::new(true))
}

async fn whoami(_: Arc<Server>, req: Ruma<whoami::v3::Request>) -> Result<whoami::v3::Response> {
    let user = req.user();
    let mut response = whoami::v3::Response::new(user.user_id.clone(), false);
    response.device_id = Some(user.device_id.clone());
    Ok(response)
}

async fn change_password(
    server: Arc<Server>,
    req: Ruma<change_password::v3::Request>,
) -> Result<change_password::v3::Response> {
    let user = req.user();
    uia::confirm_password(&server, req.body.auth.as_ref(), &user.user_id).await?;
    accounts::change_password(
        &server,
        user,
        &req.body.new_password,
        req.body.logout_devices,
    )
    .await?;
    Ok(change_password::v3::Response::new())
}

async fn deactivate(
    server: Arc<Server>,
    req: Ruma<deactivate::v3::Request>,
) -> Result<deactivate::v3::Response> {
    let user = req.user();
    uia::confirm_password(&server, req.body.auth.as_ref(), &user.user_id).await?;
    for (room_id, membership, _) in server.db.memberships_of(user.user_id.as_str()).await? {
        if membership == "join" || membership == "invite" || membership == "knock" {
            let room_id: ruma::OwnedRoomId = room_id.try_into().map_err(Error::internal)?;
            crate::service::rooms::membership::leave(&server, &room_id, &user.user_id, None)
                .await?;
        }
    }
    server.db.deactivate_user(user.user_id.as_str()).await?;
    Ok(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    ))
}

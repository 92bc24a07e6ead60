//! spec: "Login", "Logout", "Refreshing access tokens".

use std::{sync::Arc, time::Duration};

use ruma::api::client::{
    session::{
        get_login_token,
        get_login_types::{
            self,
            v3::{LoginType, PasswordLoginType, TokenLoginType},
        },
        login::{self, v3::LoginInfo},
        logout, logout_all, refresh_token,
    },
    uiaa::UserIdentifier,
};

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::{accounts, uia},
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(login_types)
        .ruma(login)
        .ruma(login_token)
        .ruma(logout)
        .ruma(logout_all)
        .ruma(refresh)
}

async fn login_types(
    _: Arc<Server>,
    _: Ruma<get_login_types::v3::Request>,
) -> Result<get_login_types::v3::Response> {
    let mut token = TokenLoginType::new();
    token.get_login_token = true;
    Ok(get_login_types::v3::Response::new(vec![
        LoginType::Password(PasswordLoginType::new()),
        LoginType::Token(token),
    ]))
}

/// `POST /login/get_token`: after re-authenticating, a token that logs the
/// user in once on another device.
async fn login_token(
    server: Arc<Server>,
    req: Ruma<get_login_token::v1::Request>,
) -> Result<get_login_token::v1::Response> {
    let user = &req.user().user_id;
    uia::confirm_password(&server, req.body.auth.as_ref(), user).await?;
    let token = accounts::create_login_token(&server, user).await?;
    Ok(get_login_token::v1::Response::new(
        accounts::LOGIN_TOKEN_LIFETIME,
        token,
    ))
}

async fn login(server: Arc<Server>, req: Ruma<login::v3::Request>) -> Result<login::v3::Response> {
    let body = req.body;
    let user_id = match &body.login_info {
        LoginInfo::Password(password) => {
            #[allow(deprecated)] // `user` is how clients before r0.4 name the account.
            let user = match (&password.identifier, &password.user) {
                (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
                (None, Some(user)) => user.clone(),
                _ => {
                    return Err(Error::new(
                        http::StatusCode::BAD_REQUEST,
                        "M_UNKNOWN",
                        "Unsupported identifier type",
                    ));
                }
            };
            accounts::check_password(&server, &user, &password.password).await?
        }
        LoginInfo::Token(token) => accounts::check_login_token(&server, &token.token).await?,
        _ => {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "Unsupported login type",
            ));
        }
    };
    let session = accounts::start_session(
        &server,
        &user_id,
        body.device_id,
        body.initial_device_display_name.as_deref(),
        body.refresh_token,
    )
    .await?;
    let mut response = login::v3::Response::new(user_id, session.access_token, session.device_id);
    response.refresh_token = session.refresh_token;
    response.expires_in = session.expires_in_ms.map(Duration::from_millis);
    Ok(response)
}

async fn logout(
    server: Arc<Server>,
    req: Ruma<logout::v3::Request>,
) -> Result<logout::v3::Response> {
    let user = req.user();
    server
        .db
        .delete_devices(user.user_id.as_str(), &[user.device_id.to_string()])
        .await?;
    Ok(logout::v3::Response::new())
}

async fn logout_all(
    server: Arc<Server>,
    req: Ruma<logout_all::v3::Request>,
) -> Result<logout_all::v3::Response> {
    let user = req.user();
    let devices: Vec<String> = server
        .db
        .devices(user.user_id.as_str())
        .await?
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    server
        .db
        .delete_devices(user.user_id.as_str(), &devices)
        .await?;
    Ok(logout_all::v3::Response::new())
}

async fn refresh(
    server: Arc<Server>,
    req: Ruma<refresh_token::v3::Request>,
) -> Result<refresh_token::v3::Response> {
    let session = accounts::refresh(&server, &req.body.refresh_token).await?;
    let mut response = refresh_token::v3::Response::new(session.access_token);
    response.refresh_token = session.refresh_token;
    response.expires_in_ms = session.expires_in_ms.map(Duration::from_millis);
    Ok(response)
}

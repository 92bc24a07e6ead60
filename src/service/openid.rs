//! spec: client-server API, "OpenID": short-lived tokens that let a third
//! party learn a user's id from the user's homeserver, and nothing else.

use std::time::Duration;

use ruma::{OwnedUserId, UserId};

use crate::{Error, Result, Server, now_ms, service::accounts};

/// How long a token proves who its user is.
pub const LIFETIME: Duration = Duration::from_secs(3600);

/// A fresh token for `user`.
pub async fn request_token(server: &Server, user: &UserId) -> Result<String> {
    let token = accounts::random_string(32);
    let expires_ts = now_ms() + LIFETIME.as_millis() as i64;
    server
        .db
        .create_openid_token(&accounts::hash_token(&token), user.as_str(), expires_ts)
        .await?;
    Ok(token)
}

/// The user a valid token was issued to.
pub async fn userinfo(server: &Server, token: &str) -> Result<OwnedUserId> {
    let unknown = || {
        Error::new(
            http::StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Unknown or expired OpenID token",
        )
    };
    let user = server
        .db
        .openid_token_user(&accounts::hash_token(token), now_ms())
        .await?
        .ok_or_else(unknown)?;
    OwnedUserId::try_from(user).map_err(Error::internal)
}

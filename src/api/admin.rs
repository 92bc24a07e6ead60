//! Shared-secret registration, as Synapse documents it
//! (`/_synapse/admin/v1/register`), for deployment tools. Enabled only when
//! `registration_shared_secret` is configured.

use std::sync::Arc;

use axum::{Json, extract::State, routing::get};
use hmac::{Hmac, Mac};
use http::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::Sha1;

use super::Routes;
use crate::{Error, Result, Server, service::accounts};

pub fn routes(routes: Routes) -> Routes {
    const PATH: &str = "/_synapse/admin/v1/register";
    routes.raw(
        &[Method::GET, Method::POST],
        PATH,
        get(nonce).post(register),
    )
}

fn secret(server: &Server) -> Result<&str> {
    server
        .config
        .registration_shared_secret
        .as_deref()
        .ok_or_else(|| Error::forbidden("Shared secret registration is not enabled"))
}

async fn nonce(State(server): State<Arc<Server>>) -> Result<Json<Value>> {
    secret(&server)?;
    let nonce = accounts::random_string(32);
    server.db.save_admin_nonce(&nonce).await?;
    Ok(Json(json!({ "nonce": nonce })))
}

#[derive(Deserialize)]
struct RegisterBody {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    mac: String,
    displayname: Option<String>,
}

async fn register(
    State(server): State<Arc<Server>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let secret = secret(&server)?.to_owned();
    let body: RegisterBody = serde_json::from_slice(&body).map_err(|e| {
        if serde_json::from_slice::<Value>(&body).is_err() {
            Error::not_json("Body is not JSON")
        } else {
            Error::bad_json(e.to_string())
        }
    })?;
    if !mac_matches(&secret, &body) {
        return Err(Error::forbidden("HMAC incorrect"));
    }
    if !server.db.take_admin_nonce(&body.nonce).await? {
        return Err(Error::invalid_param("Unrecognised nonce"));
    }
    let user_id = accounts::validate_localpart(&server, &body.username.to_lowercase())?;
    accounts::create_user(&server, &user_id, Some(&body.password), body.admin).await?;
    if let Some(name) = body.displayname.as_deref() {
        server
            .db
            .set_profile_field(
                user_id.as_str(),
                crate::store::accounts::ProfileField::Displayname,
                Some(name),
            )
            .await?;
    }
    let session = accounts::start_session(&server, &user_id, None, None, false).await?;
    Ok(Json(json!({
        "user_id": user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": server.server_name(),
    })))
}

/// HMAC-SHA1 over `nonce NUL username NUL password NUL admin|notadmin`.
fn mac_matches(secret: &str, body: &RegisterBody) -> bool {
    let Ok(expected) = hex::decode(&body.mac) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(body.nonce.as_bytes());
    mac.update(b"\0");
    mac.update(body.username.as_bytes());
    mac.update(b"\0");
    mac.update(body.password.as_bytes());
    mac.update(b"\0");
    mac.update(if body.admin { b"admin" } else { b"notadmin" });
    mac.verify_slice(&expected).is_ok()
}

//! The X-Matrix check on inbound requests (spec: server-server API,
//! "Request Authentication").

use ruma::{OwnedServerName, api::federation::authentication::XMatrix, signatures::PublicKeyMap};

use crate::{Error, Result, Server, now_ms};

/// The origin of a request, once its signature verifies with a key of the
/// origin's that is valid now.
pub async fn authenticate(
    server: &Server,
    request: &http::Request<&[u8]>,
) -> Result<OwnedServerName> {
    let x_matrix = XMatrix::extract_from_http_headers(request.headers())
        .map_err(|e| Error::unauthorized(format!("X-Matrix authorization: {e}")))?;
    // spec: a destination that is not us is refused with 401.
    if x_matrix
        .destination
        .as_deref()
        .is_some_and(|d| d != server.server_name())
    {
        return Err(Error::unauthorized(
            "The request is for another destination",
        ));
    }
    if x_matrix.origin == server.server_name() {
        return Err(Error::unauthorized(
            "The request claims to come from this server",
        ));
    }
    let origin = x_matrix.origin.clone();
    let keys = super::server_keys::public_keys(server, &origin, &[x_matrix.key.as_str()], now_ms())
        .await?;
    if !keys.contains_key(x_matrix.key.as_str()) {
        return Err(Error::unauthorized(format!(
            "No valid key {} of {origin} is known",
            x_matrix.key
        )));
    }
    let map = PublicKeyMap::from([(origin.to_string(), keys)]);
    x_matrix
        .verify_http_request(request, server.server_name(), &map)
        .map_err(|e| {
            tracing::info!(%origin, error = %e, "rejected a federation request");
            Error::unauthorized("The request's signature does not verify")
        })?;
    Ok(origin)
}

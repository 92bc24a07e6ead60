//! Requests as another server makes them: X-Matrix signed with that
//! server's key (read from its data directory), for tests that play a
//! server — a well-behaved one or not.

use reqwest::{Method, StatusCode, header};
use ruma::api::federation::authentication::{XMatrix, XMatrixSigningInput};
use serde_json::Value;

use super::{TestServer, json_of};

/// `path` on the server's federation listener.
pub fn federation_url(s: &TestServer, path: &str) -> String {
    format!(
        "{}{path}",
        s.federation_base.as_ref().expect("federation listener")
    )
}

/// The signing key of `s`, read from its data directory, as a test that
/// plays that server needs it.
pub fn signing_key(s: &TestServer) -> corvid_federation::ServerSigningKey {
    let path = s
        .data_dir()
        .join(format!("{}.signing.key", s.server_name()));
    corvid_federation::ServerSigningKey::load_or_generate(&path).unwrap()
}

/// The `Authorization` header `origin` would send for this request to `destination`.
pub fn x_matrix(
    key: &corvid_federation::ServerSigningKey,
    origin: &str,
    destination: &str,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> String {
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let request = http::Request::builder()
        .method(method.as_str())
        .uri(path)
        .body(bytes)
        .unwrap();
    let input = XMatrixSigningInput::new(
        origin.try_into().unwrap(),
        destination.try_into().unwrap(),
        key.key_pair(),
    );
    let signed = XMatrix::sign_http_request(&request, input).unwrap();
    http::HeaderValue::from(&signed)
        .to_str()
        .unwrap()
        .to_owned()
}

/// A request to `to` signed as `from` (whose keys `to` fetches from `from`).
pub async fn signed(
    from: &TestServer,
    to: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let auth = x_matrix(
        &signing_key(from),
        from.server_name(),
        to.server_name(),
        &method,
        path,
        body.as_ref(),
    );
    let mut req = to
        .http()
        .request(method, federation_url(to, path))
        .header(header::AUTHORIZATION, auth);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

/// [`signed`], with the JSON answer validated against the spec.
pub async fn signed_json(
    from: &TestServer,
    to: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let res = signed(from, to, method.clone(), path, body).await;
    json_of(res, &method, path).await
}

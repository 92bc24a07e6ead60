//! The outbound federation client: discovery, TLS, X-Matrix signing, and
//! ruma's request/response types on both ends.
//!
//! Connections are HTTP/1.1 over rustls, kept per destination and reused
//! while idle. Every request has a deadline, and every response body a size
//! cap, because the other end is untrusted.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use ruma::{
    OwnedServerName, ServerName,
    api::{
        IncomingResponseExt, OutgoingRequest, OutgoingRequestExt,
        auth_scheme::NoAuthentication,
        federation::authentication::{ServerSignatures, XMatrixSigningInput},
        path_builder::SinglePath,
    },
};
use tokio_rustls::TlsConnector;

use crate::{
    ServerSigningKey,
    discovery::{self, Destination, Resolver},
};

/// JSON responses larger than this are refused.
const MAX_JSON_RESPONSE: usize = 32 * 1024 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_IDLE_PER_DESTINATION: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot build the request: {0}")]
    Build(String),
    #[error("cannot reach {destination}: {reason}")]
    Unreachable { destination: String, reason: String },
    #[error("{destination} took longer than {timeout:?}")]
    Timeout {
        destination: String,
        timeout: Duration,
    },
    #[error("{destination} answered {status}: {body}")]
    Remote {
        destination: String,
        status: StatusCode,
        body: String,
    },
    #[error("{destination} sent an invalid response: {reason}")]
    BadResponse { destination: String, reason: String },
}

impl ClientError {
    /// The remote's HTTP status, when it answered with an error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Remote { status, .. } => Some(*status),
            _ => None,
        }
    }
}

type Connection = SendRequest<Full<Bytes>>;

pub struct FederationClient {
    origin: OwnedServerName,
    key: Arc<ServerSigningKey>,
    tls: TlsConnector,
    resolver: Resolver,
    idle: Mutex<HashMap<String, Vec<Connection>>>,
}

impl FederationClient {
    pub fn new(
        origin: OwnedServerName,
        key: Arc<ServerSigningKey>,
        tls: rustls::ClientConfig,
    ) -> Self {
        Self {
            origin,
            key,
            tls: TlsConnector::from(Arc::new(tls)),
            resolver: Resolver::new(),
            idle: Mutex::default(),
        }
    }

    /// Sends a request that is authenticated with an X-Matrix signature.
    pub async fn send<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, ClientError>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        let input = XMatrixSigningInput::new(
            self.origin.clone(),
            destination.to_owned(),
            self.key.key_pair(),
        );
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&base_url(destination), input, ())
            .map_err(|e| ClientError::Build(e.to_string()))?;
        self.exchange::<R>(destination, http_request).await
    }

    /// Sends a request that needs no authentication (the key endpoints).
    pub async fn send_unauthenticated<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, ClientError>
    where
        R: OutgoingRequest<Authentication = NoAuthentication, PathBuilder = SinglePath>,
    {
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&base_url(destination), (), ())
            .map_err(|e| ClientError::Build(e.to_string()))?;
        self.exchange::<R>(destination, http_request).await
    }

    async fn exchange<R: OutgoingRequest>(
        &self,
        destination: &ServerName,
        request: http::Request<Vec<u8>>,
    ) -> Result<R::IncomingResponse, ClientError> {
        let name = destination.as_str();
        let response = self.request(name, request).await?;
        let status = response.status();
        let (parts, body) = response.into_parts();
        let bytes = read_limited(name, body, MAX_JSON_RESPONSE).await?;
        if !status.is_success() {
            return Err(ClientError::Remote {
                destination: name.to_owned(),
                status,
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned(),
            });
        }
        let response = http::Response::from_parts(parts, bytes.as_ref());
        R::IncomingResponse::try_from_http_response(response).map_err(|e| {
            ClientError::BadResponse {
                destination: name.to_owned(),
                reason: e.to_string(),
            }
        })
    }

    /// A signed GET whose body the caller streams (media downloads).
    pub async fn get_streaming(
        &self,
        destination: &ServerName,
        path_and_query: &str,
    ) -> Result<http::Response<Incoming>, ClientError> {
        let uri = format!("{}{path_and_query}", base_url(destination));
        let request = http::Request::get(uri)
            .body(Vec::new())
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let request = self.sign(destination, request)?;
        self.request(destination.as_str(), request).await
    }

    /// An unauthenticated GET of an `https` URL (a media redirect target).
    pub async fn get_url(&self, url: &str) -> Result<http::Response<Incoming>, ClientError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ClientError::Build(e.to_string()))?;
        let (Some("https"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(ClientError::Build(format!("not an https URL: {url}")));
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let destination = Destination {
            connect_host: host.to_owned(),
            port: authority.port_u16().unwrap_or(443),
            host_header: authority.as_str().to_owned(),
            tls_name: host.to_owned(),
        };
        let request = http::Request::get(uri.clone())
            .body(Vec::new())
            .map_err(|e| ClientError::Build(e.to_string()))?;
        self.send_to(authority.as_str(), &destination, request)
            .await
    }

    fn sign(
        &self,
        destination: &ServerName,
        mut request: http::Request<Vec<u8>>,
    ) -> Result<http::Request<Vec<u8>>, ClientError> {
        let input = XMatrixSigningInput::new(
            self.origin.clone(),
            destination.to_owned(),
            self.key.key_pair(),
        );
        let x_matrix =
            ruma::api::federation::authentication::XMatrix::sign_http_request(&request, input)
                .map_err(|e| ClientError::Build(e.to_string()))?;
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, HeaderValue::from(&x_matrix));
        Ok(request)
    }

    async fn request(
        &self,
        server_name: &str,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Incoming>, ClientError> {
        let destination = self
            .resolver
            .resolve(server_name, |host| self.well_known(host))
            .await;
        self.send_to(server_name, &destination, request).await
    }

    async fn send_to(
        &self,
        server_name: &str,
        destination: &Destination,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Incoming>, ClientError> {
        let timeout = |_| ClientError::Timeout {
            destination: server_name.to_owned(),
            timeout: REQUEST_TIMEOUT,
        };
        let request = origin_form(request, &destination.host_header)?;
        let pool_key = format!(
            "{}:{}/{}",
            destination.connect_host, destination.port, destination.tls_name
        );
        let mut connection = match self.idle_connection(&pool_key) {
            Some(connection) => connection,
            None => tokio::time::timeout(CONNECT_TIMEOUT, self.connect(destination))
                .await
                .map_err(timeout)?
                .map_err(|reason| ClientError::Unreachable {
                    destination: server_name.to_owned(),
                    reason,
                })?,
        };
        let response = tokio::time::timeout(REQUEST_TIMEOUT, connection.send_request(request))
            .await
            .map_err(timeout)?
            .map_err(|e| ClientError::Unreachable {
                destination: server_name.to_owned(),
                reason: e.to_string(),
            })?;
        self.keep_idle(pool_key, connection);
        Ok(response)
    }

    fn idle_connection(&self, key: &str) -> Option<Connection> {
        let mut idle = self.idle.lock().expect("connection pool");
        let connections = idle.get_mut(key)?;
        while let Some(connection) = connections.pop() {
            if connection.is_ready() {
                return Some(connection);
            }
        }
        None
    }

    /// A connection goes back to the pool once its response has been
    /// read; until then `is_ready` is false and it is skipped.
    fn keep_idle(&self, key: String, connection: Connection) {
        if connection.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("connection pool");
        let connections = idle.entry(key).or_default();
        if connections.len() < MAX_IDLE_PER_DESTINATION {
            connections.push(connection);
        }
    }

    async fn connect(&self, destination: &Destination) -> Result<Connection, String> {
        let tcp =
            tokio::net::TcpStream::connect((destination.connect_host.as_str(), destination.port))
                .await
                .map_err(|e| {
                    format!(
                        "connect to {}:{}: {e}",
                        destination.connect_host, destination.port
                    )
                })?;
        tcp.set_nodelay(true).ok();
        let tls_name = rustls::pki_types::ServerName::try_from(destination.tls_name.clone())
            .map_err(|e| format!("invalid TLS name {}: {e}", destination.tls_name))?;
        let tls = self
            .tls
            .connect(tls_name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", destination.tls_name))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "federation connection closed");
            }
        });
        Ok(sender)
    }

    /// `https://<hostname>/.well-known/matrix/server`, following a few redirects.
    async fn well_known(&self, hostname: String) -> discovery::WellKnown {
        let mut url = format!("https://{hostname}/.well-known/matrix/server");
        for _ in 0..3 {
            let response = match self.get_url(&url).await {
                Ok(response) => response,
                Err(e) => {
                    tracing::debug!(%hostname, error = %e, "no .well-known/matrix/server");
                    return None;
                }
            };
            if response.status().is_redirection() {
                url = response
                    .headers()
                    .get(header::LOCATION)?
                    .to_str()
                    .ok()?
                    .to_owned();
                continue;
            }
            if response.status() != StatusCode::OK {
                return None;
            }
            let ttl = discovery::well_known_ttl(
                response
                    .headers()
                    .get(header::CACHE_CONTROL)
                    .and_then(|v| v.to_str().ok()),
            );
            let body = read_limited(&hostname, response.into_body(), 64 * 1024)
                .await
                .ok()?;
            return discovery::parse_well_known(&body).map(|m_server| (m_server, ttl));
        }
        None
    }
}

fn base_url(destination: &ServerName) -> String {
    format!("https://{destination}")
}

/// Requests go out in origin form (`/path?query`) with the `Host` header
/// the discovery step chose.
fn origin_form(
    request: http::Request<Vec<u8>>,
    host_header: &str,
) -> Result<http::Request<Full<Bytes>>, ClientError> {
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    parts.uri = path
        .parse()
        .map_err(|e: http::uri::InvalidUri| ClientError::Build(e.to_string()))?;
    let host = HeaderValue::from_str(host_header).map_err(|e| ClientError::Build(e.to_string()))?;
    parts.headers.insert(header::HOST, host);
    if !body.is_empty() {
        parts
            .headers
            .entry(header::CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
    }
    Ok(http::Request::from_parts(
        parts,
        Full::new(Bytes::from(body)),
    ))
}

/// Reads a whole body, refusing more than `limit` bytes.
pub async fn read_limited(
    destination: &str,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, ClientError> {
    let bad = |reason: String| ClientError::BadResponse {
        destination: destination.to_owned(),
        reason,
    };
    let collected = tokio::time::timeout(REQUEST_TIMEOUT, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ClientError::Timeout {
            destination: destination.to_owned(),
            timeout: REQUEST_TIMEOUT,
        })?
        .map_err(|e| bad(format!("body: {e}")))?;
    Ok(collected.to_bytes())
}

//! The HTTP boundary: every handler has the same shape,
//! `async fn(server, Ruma<Request>) -> Result<Response>`, where `Request`
//! and `Response` are ruma's types for the endpoint. [`Ruma`] reads the
//! body (size-limited), authenticates, applies rate limits and parses the
//! request; [`Routes::ruma`] mounts a handler on every path the
//! endpoint's spec history lists, legacy `r0` paths included.

pub mod admin;
pub mod client;
pub mod federation;

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, FromRequest, FromRequestParts as _, RawPathParams, Request, State},
    response::{IntoResponse, Response},
    routing::{MethodFilter, MethodRouter, on},
};
use bytes::BytesMut;
use http::{Method, StatusCode, header};
use ruma::{
    OwnedDeviceId, OwnedServerName, OwnedUserId,
    api::{
        IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
        auth_scheme::{
            AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional,
            NoAccessToken, NoAuthentication,
        },
        error::{DeserializationError, FromHttpRequestError},
        federation::authentication::ServerSignatures,
        path_builder::PathBuilder,
    },
};
use tower_http::cors::{Any, CorsLayer};

use crate::{Error, Result, Server, service::accounts};

/// A parsed, authenticated request for endpoint `T`.
pub struct Ruma<T> {
    pub body: T,
    pub user: Option<AuthedUser>,
    /// The verified origin of a federation request.
    pub origin: Option<OwnedServerName>,
}

impl<T> Ruma<T> {
    /// The authenticated user of an endpoint that requires authentication.
    pub fn user(&self) -> &AuthedUser {
        self.user
            .as_ref()
            .expect("endpoint requires an access token")
    }

    /// The origin server of an endpoint that requires an X-Matrix signature.
    pub fn origin(&self) -> &ruma::ServerName {
        self.origin
            .as_deref()
            .expect("endpoint requires a server signature")
    }
}

#[derive(Debug, Clone)]
pub struct AuthedUser {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub token_hash: String,
}

/// How an endpoint's ruma auth scheme translates into our access-token check.
pub trait TokenPolicy {
    const REQUIRED: bool;
    const ACCEPTED: bool;
    /// Federation endpoints: the request must carry a valid X-Matrix signature.
    const SERVER_SIGNED: bool = false;
}

macro_rules! token_policy {
    ($($scheme:ty => $required:expr, $accepted:expr;)*) => {
        $(impl TokenPolicy for $scheme {
            const REQUIRED: bool = $required;
            const ACCEPTED: bool = $accepted;
        })*
    };
}

impl TokenPolicy for ServerSignatures {
    const REQUIRED: bool = false;
    const ACCEPTED: bool = false;
    const SERVER_SIGNED: bool = true;
}

token_policy! {
    AccessToken => true, true;
    AppserviceToken => true, true;
    AccessTokenOptional => false, true;
    AppserviceTokenOptional => false, true;
    NoAuthentication => false, false;
    NoAccessToken => false, false;
}

impl<T> FromRequest<Arc<Server>> for Ruma<T>
where
    T: IncomingRequest + Send,
    T::Authentication: TokenPolicy,
{
    type Rejection = Error;

    async fn from_request(req: Request, server: &Arc<Server>) -> Result<Self> {
        let (mut parts, body) = req.into_parts();
        let path_params = RawPathParams::from_request_parts(&mut parts, server)
            .await
            .map_err(|_| Error::unrecognized(StatusCode::NOT_FOUND))?;
        let mut path_args: Vec<String> = path_params.iter().map(|(_, v)| v.to_owned()).collect();
        // The empty-state-key routes (see `Routes::ruma`) match one argument short.
        path_args.resize(
            T::PATH_BUILDER
                ._path_parameters()
                .len()
                .max(path_args.len()),
            String::new(),
        );
        let client_ip = client_ip(&parts);
        let user = authenticate::<T::Authentication>(server, &parts, client_ip.as_deref()).await?;
        if T::RATE_LIMITED {
            rate_limit(server, user.as_ref(), client_ip)?;
        }

        let limit = server.config.max_request_size;
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| Error::too_large(format!("Request body is larger than {limit} bytes")))?;
        let http_req = http::Request::from_parts(parts, bytes.as_ref());
        let origin = if T::Authentication::SERVER_SIGNED {
            let origin =
                crate::service::federation::request_auth::authenticate(server, &http_req).await?;
            crate::service::federation::sender::reachable(server, origin.as_str());
            Some(origin)
        } else {
            None
        };
        let path_refs: Vec<&str> = path_args.iter().map(String::as_str).collect();
        let body =
            T::try_from_http_request(http_req, &path_refs).map_err(|e| parse_error(e, &bytes))?;
        Ok(Self { body, user, origin })
    }
}

/// Authentication and rate limiting for the few handlers that stream their
/// body (media uploads) instead of reading it whole through [`Ruma`].
pub(crate) async fn authenticated_user(
    server: &Server,
    parts: &http::request::Parts,
) -> Result<AuthedUser> {
    let ip = client_ip(parts);
    let user = authenticate::<AccessToken>(server, parts, ip.as_deref())
        .await?
        .ok_or_else(Error::missing_token)?;
    rate_limit(server, Some(&user), ip)?;
    Ok(user)
}

fn client_ip(parts: &http::request::Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// Per user when authenticated, per IP otherwise.
fn rate_limit(server: &Server, user: Option<&AuthedUser>, ip: Option<String>) -> Result<()> {
    let key = user
        .map(|u| u.user_id.to_string())
        .or(ip)
        .unwrap_or_default();
    server
        .rate_limiter
        .check(&key)
        .map_err(|wait| Error::limit_exceeded(wait.as_millis() as u64 + 1))
}

async fn authenticate<A: TokenPolicy>(
    server: &Server,
    parts: &http::request::Parts,
    client_ip: Option<&str>,
) -> Result<Option<AuthedUser>> {
    if !A::ACCEPTED {
        return Ok(None);
    }
    match access_token(parts) {
        Some(token) => accounts::authenticate(server, token, client_ip)
            .await
            .map(Some),
        None if A::REQUIRED => Err(Error::missing_token()),
        None => Ok(None),
    }
}

/// The token from `Authorization: Bearer …` or the deprecated `access_token` query parameter.
fn access_token(parts: &http::request::Parts) -> Option<&str> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        return value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
    }
    parts
        .uri
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
}

fn parse_error(error: FromHttpRequestError, body: &[u8]) -> Error {
    match error {
        FromHttpRequestError::MethodMismatch { .. } => {
            Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED)
        }
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
                Error::not_json("Request body is not valid JSON")
            } else {
                Error::bad_json(e.to_string())
            }
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(e)) => {
            Error::invalid_param(format!("Invalid identifier: {e}"))
        }
        FromHttpRequestError::Deserialization(e) => Error::invalid_param(e.to_string()),
        other => Error::invalid_param(other.to_string()),
    }
}

/// A ruma response, serialised as the spec describes.
pub struct RumaResponse<R>(pub R);

impl<R: OutgoingResponse> IntoResponse for RumaResponse<R> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(res) => res.map(|body| Body::from(body.freeze())).into_response(),
            Err(e) => Error::internal(format_args!("serialising response: {e}")).into_response(),
        }
    }
}

/// The router under construction, with a table of what it serves (the
/// spec coverage map in `spec/` is checked against that table).
pub struct Routes {
    router: Router<Arc<Server>>,
    table: Vec<(Method, String)>,
}

impl Routes {
    fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    /// Mounts `handler` on every path of endpoint `T` (legacy `r0` paths included).
    pub fn ruma<T, F, Fut>(self, handler: F) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: TokenPolicy,
        T::OutgoingResponse: Send,
        F: Fn(Arc<Server>, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T::OutgoingResponse>> + Send + 'static,
    {
        self.mount::<T, _, _, _>(move |server, req| {
            let response = handler(server, req);
            async move { response.await.map(RumaResponse) }
        })
    }

    /// Like [`Routes::ruma`], for the few responses whose ruma type does not
    /// serialise as the spec's schema says; the body is `B` as JSON.
    pub fn ruma_json<T, B, F, Fut>(self, handler: F) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: TokenPolicy,
        B: serde::Serialize + Send + 'static,
        F: Fn(Arc<Server>, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<B>> + Send + 'static,
    {
        self.mount::<T, _, _, _>(move |server, req| {
            let response = handler(server, req);
            async move { response.await.map(axum::Json) }
        })
    }

    /// Like [`Routes::ruma`], for endpoints whose response is not JSON
    /// (media bytes, streamed from disk); the handler also gets the
    /// request's headers (`Range`), which ruma's request types drop.
    pub fn ruma_raw<T, R, F, Fut>(self, handler: F) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: TokenPolicy,
        R: IntoResponse + Send + 'static,
        F: Fn(Arc<Server>, Ruma<T>, http::HeaderMap) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        let filter =
            MethodFilter::try_from(T::METHOD).expect("ruma endpoints use standard methods");
        self.on_paths_of::<T>(|| {
            let handler = handler.clone();
            on(
                filter,
                move |State(server): State<Arc<Server>>, headers: http::HeaderMap, req: Ruma<T>| {
                    handler(server, req, headers)
                },
            )
        })
    }

    /// Mounts a hand-written handler on every path of endpoint `T`, for
    /// the uploads, which stream their body instead of parsing it with ruma.
    pub fn streaming<T: IncomingRequest>(self, route: MethodRouter<Arc<Server>>) -> Self {
        self.on_paths_of::<T>(|| route.clone())
    }

    fn mount<T, R, F, Fut>(self, handler: F) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: TokenPolicy,
        R: IntoResponse + Send + 'static,
        F: Fn(Arc<Server>, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        let filter =
            MethodFilter::try_from(T::METHOD).expect("ruma endpoints use standard methods");
        self.on_paths_of::<T>(|| {
            let handler = handler.clone();
            on(
                filter,
                move |State(server): State<Arc<Server>>, req: Ruma<T>| handler(server, req),
            )
        })
    }

    fn on_paths_of<T: IncomingRequest>(
        mut self,
        route: impl Fn() -> MethodRouter<Arc<Server>>,
    ) -> Self {
        for path in T::PATH_BUILDER.all_paths() {
            self.table.push((T::METHOD, path.to_owned()));
            let mut paths = vec![path.to_owned()];
            // spec: a state key may be empty, and clients then end the path
            // with the event type, with or without a trailing slash.
            if let Some(prefix) = path.strip_suffix("/{state_key}") {
                paths.push(format!("{prefix}/"));
                paths.push(prefix.to_owned());
            }
            for path in paths {
                self.router = self.router.route(&path, route());
            }
        }
        self
    }

    /// Mounts a route that has no ruma type (Synapse's admin API).
    pub fn raw(
        mut self,
        methods: &[Method],
        path: &str,
        route: axum::routing::MethodRouter<Arc<Server>>,
    ) -> Self {
        self.table
            .extend(methods.iter().map(|m| (m.clone(), path.to_owned())));
        self.router = self.router.route(path, route);
        self
    }
}

/// Which APIs a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apis {
    /// Client, media and admin.
    Client,
    /// Federation and keys.
    Federation,
    /// Everything, on one port.
    All,
}

fn routes_for(apis: Apis) -> Routes {
    let mut routes = Routes::new();
    if apis != Apis::Federation {
        routes = admin::routes(client::routes(routes));
    }
    if apis != Apis::Client {
        routes = federation::routes(routes);
    }
    routes
}

/// `(method, path)` of every route served, paths as the spec writes them.
pub fn route_table() -> Vec<(Method, String)> {
    let mut table = routes_for(Apis::All).table;
    table.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
    table.dedup();
    table
}

/// The HTTP application of a listener.
pub fn router(server: Arc<Server>, apis: Apis) -> Router {
    routes_for(apis)
        .router
        .fallback(|| async { Error::unrecognized(StatusCode::NOT_FOUND) })
        .method_not_allowed_fallback(|| async {
            Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED)
        })
        .layer(axum::middleware::from_fn(client::media_safe_headers))
        .layer(cors())
        .with_state(server)
}

/// spec: client-server API, "Web Browser Clients".
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
        ])
        .expose_headers([header::HeaderName::from_static("content-disposition")])
        .max_age(std::time::Duration::from_secs(86400))
        .vary([] as [header::HeaderName; 0])
}

//! The one error type of the server.
//!
//! Services return [`Error`] with a Matrix error code already chosen, because
//! the code is part of the behaviour the spec prescribes (a ban is
//! `M_FORBIDDEN`, an unknown alias `M_NOT_FOUND`), not a presentation detail.
//! At the HTTP boundary it becomes `{"errcode", "error"}` with the status
//! the spec gives. Storage failures are the only 500s, and their details go to
//! the log, not to the client.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Map, Value, json};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug)]
pub struct Error {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: String,
    /// Extra fields some error codes carry (`retry_after_ms`, `soft_logout`, UIA flows…).
    pub extra: Map<String, Value>,
}

impl Error {
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
            extra: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", m)
    }
    pub fn bad_json(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", m)
    }
    pub fn not_json(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", m)
    }
    pub fn invalid_param(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", m)
    }
    pub fn missing_param(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", m)
    }
    pub fn unrecognized(status: StatusCode) -> Self {
        Self::new(status, "M_UNRECOGNIZED", "Unrecognized request")
    }
    /// spec: federation requests whose X-Matrix signature is missing or wrong.
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", m)
    }
    pub fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing access token",
        )
    }
    pub fn unknown_token(soft_logout: bool) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Unknown or expired access token",
        )
        .with("soft_logout", json!(soft_logout))
    }
    pub fn user_in_use() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "M_USER_IN_USE",
            "User ID already taken",
        )
    }
    pub fn invalid_username(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_USERNAME", m)
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", m)
    }
    pub fn limit_exceeded(retry_after_ms: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            "Too many requests",
        )
        .with("retry_after_ms", json!(retry_after_ms))
    }
    pub fn unsupported_room_version(v: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "M_UNSUPPORTED_ROOM_VERSION",
            format!("Room version {v} is not supported"),
        )
    }
    pub fn room_in_use(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_ROOM_IN_USE", m)
    }
    pub fn unknown(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", m)
    }

    /// The 401 that opens a user-interactive authentication; it carries no
    /// `errcode` (the caller adds `flows`, `session`, …).
    pub fn uia_challenge() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "", "")
    }

    /// A failure of the server itself; the cause is logged, the client gets a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::unknown("Internal server error")
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.errcode,
            self.message
        )
    }
}

impl std::error::Error for Error {}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(format_args!("database: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::internal(format_args!("stored JSON: {e}"))
    }
}

impl From<corvid_federation::PduError> for Error {
    fn from(e: corvid_federation::PduError) -> Self {
        match e {
            corvid_federation::PduError::UnsupportedRoomVersion(v) => {
                Self::unsupported_room_version(v.as_str())
            }
            corvid_federation::PduError::Json(ruma::signatures::JsonError::PduTooLarge) => {
                Self::too_large("Event is larger than 65536 bytes")
            }
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut body = self.extra;
        if !self.errcode.is_empty() {
            body.insert("errcode".into(), json!(self.errcode));
            body.insert("error".into(), json!(self.message));
        }
        (self.status, axum::Json(Value::Object(body))).into_response()
    }
}

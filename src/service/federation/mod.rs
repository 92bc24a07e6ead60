//! Federation: what this server does for and with other servers.
//!
//! - [`server_keys`]: our published keys, and other servers' keys fetched
//!   directly or through notaries, verified and cached;
//! - [`request_auth`]: the X-Matrix check on every inbound request;
//! - [`pdu`], [`ingest`] and [`place`]: events from other servers, checked,
//!   completed with what they depend on, and placed in the room's graph;
//!   [`fetch`]: asking other servers for what is missing;
//! - [`sender`]: the per-destination queues of outgoing transactions.

pub mod backfill;
pub mod edu;
pub mod fetch;
pub mod history;
pub mod ingest;
pub mod membership;
pub mod pdu;
pub mod place;
pub mod request_auth;
pub mod sender;
pub mod server_keys;
pub mod transaction;

use corvid_federation::{
    ClientError,
    tls::{self, OutboundTls, TlsError},
};
use http::StatusCode;
use ruma::ServerName;

use crate::Error;

/// A failed request to another server, as the local client sees it: the
/// remote's refusals (403, 404 and the join errors) keep their status and
/// code, anything else is a 502.
pub fn remote_error(origin: &ServerName, what: &str, e: &ClientError) -> Error {
    tracing::info!(%origin, error = %e, "{what} over federation failed");
    const PASSED_ON: [&str; 6] = [
        "M_FORBIDDEN",
        "M_NOT_FOUND",
        "M_INCOMPATIBLE_ROOM_VERSION",
        "M_UNABLE_TO_AUTHORISE_JOIN",
        "M_UNABLE_TO_GRANT_JOIN",
        "M_BAD_JSON",
    ];
    if let ClientError::Remote { status, body, .. } = e
        && (status.is_client_error())
    {
        let remote: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let code = remote["errcode"].as_str().unwrap_or_default();
        if let Some(code) = PASSED_ON.iter().find(|c| **c == code) {
            let message = remote["error"].as_str().unwrap_or(what);
            return Error::new(*status, code, format!("{what}: {origin}: {message}"));
        }
        if *status == StatusCode::NOT_FOUND {
            return Error::not_found(format!("{what}: not found on {origin}"));
        }
    }
    Error::new(
        StatusCode::BAD_GATEWAY,
        "M_UNKNOWN",
        format!("{what}: {origin} could not be asked"),
    )
}

/// The TLS outbound requests use, from `[federation]`.
pub fn outbound_tls(config: &crate::config::Federation) -> Result<rustls::ClientConfig, TlsError> {
    let mode = if config.insecure_skip_tls_verify_for_local_development {
        OutboundTls::insecure_for_local_development()
    } else {
        OutboundTls::Verified {
            extra_ca_files: &config.extra_ca_files,
        }
    };
    tls::client_config(mode)
}

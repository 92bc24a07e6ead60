//! Federation: what this server does for and with other servers.
//!
//! - [`server_keys`]: our published keys, and other servers' keys fetched
//!   directly or through notaries, verified and cached;
//! - [`request_auth`]: the X-Matrix check on every inbound request.

pub mod request_auth;
pub mod server_keys;

use corvid_federation::tls::{self, OutboundTls, TlsError};

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

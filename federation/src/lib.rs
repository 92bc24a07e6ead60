//! Federation for Corvid: the protocol pieces that do not need the database.
//!
//! - [`keys`]: the server's ed25519 signing key;
//! - [`pdu`]: event template → PDU (content hash, signature, event id per
//!   room version), used for local and remote events alike;
//! - [`discovery`]: server name → address, `Host` header and TLS name;
//! - [`tls`]: rustls configuration for listeners and outbound connections;
//! - [`client`]: signed outbound requests with ruma's endpoint types.
//! - [`media`]: the `multipart/mixed` bodies of federation media.

pub mod client;
pub mod discovery;
pub mod keys;
pub mod media;
pub mod pdu;
pub mod tls;

pub use client::{ClientError, FederationClient};
pub use keys::{KeyError, ServerSigningKey};
pub use pdu::{PduError, event_id_for, room_id_for_create, rules_for, sign_pdu};

//! Federation primitives for Corvid.
//!
//! Everything here is pure protocol: the server's ed25519 signing key, and the
//! steps that turn an event template into a PDU (content hash, signature,
//! event id per room version). The homeserver uses the same code for local
//! events as federation will use for remote ones, so a room that never leaves
//! this server is still a correct Matrix event graph.

pub mod keys;
pub mod pdu;

pub use keys::{KeyError, ServerSigningKey};
pub use pdu::{PduError, event_id_for, room_id_for_create, rules_for, sign_pdu};

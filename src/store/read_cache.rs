//! The store's in-memory copies: the full states of recently read state
//! groups, access tokens' owners, and users' rooms.
//!
//! A state group's entries never change, so a group is read as its nearest
//! cached ancestor plus the deltas below it: the first `/sync` of each user
//! who joins a big room reads only the few joins since the last one instead
//! of the room's whole state. The events in a state can still be redacted,
//! and tokens revoked: a redaction or a revocation committed by this process
//! empties its cache, and an entry older than the cache's time to live is
//! not used, which bounds how long a change made by another process (another
//! server process, the admin command) goes unseen.

use std::{collections::HashMap, sync::Arc, time::Duration};

use super::{accounts::TokenOwner, events::StoredEvent};
use crate::cache::ReadCache;

/// A room's state: the event at each `(type, state_key)`.
pub type GroupState = HashMap<(String, Option<String>), Arc<StoredEvent>>;

/// Full states by state group.
pub type StateCache = ReadCache<i64, Arc<GroupState>>;

/// Users' rooms, as read at a stream position (see
/// [`super::Db::memberships_at`]).
pub type RoomsCache = ReadCache<String, (i64, Arc<Memberships>)>;

/// `(room_id, membership, stream_ordering)` of each room a user has a
/// membership in.
pub type Memberships = Vec<(String, String, i64)>;

/// Token owners by token hash.
pub type TokenCache = ReadCache<String, TokenOwner>;

pub fn state_cache() -> StateCache {
    ReadCache::new(8, Duration::from_secs(5))
}

/// Short-lived: a token revoked by another process keeps working here for
/// at most this long.
pub fn token_cache() -> TokenCache {
    ReadCache::new(10_000, Duration::from_secs(2))
}

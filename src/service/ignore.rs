//! spec: "Ignoring users" — `m.ignored_user_list` account data. The
//! server hides an ignored user's timeline events and invites from the
//! user who ignores them, and their messages never notify.

use std::{collections::HashSet, sync::Arc};

use ruma::UserId;
use serde_json::Value;

use crate::{Result, Server, cache::TtlCache};

pub const IGNORED_USER_LIST: &str = "m.ignored_user_list";

pub type IgnoreCache = TtlCache<HashSet<String>>;

/// The users `user` ignores.
pub async fn ignored_by(server: &Server, user: &UserId) -> Result<Arc<HashSet<String>>> {
    if let Some(set) = server.ignored_users.get(user) {
        return Ok(set);
    }
    let content = server
        .db
        .account_data(user.as_str(), "", IGNORED_USER_LIST)
        .await?;
    let set = Arc::new(content.map(|c| parse(&c)).unwrap_or_default());
    server.ignored_users.insert(user, set.clone());
    Ok(set)
}

/// The users each of `users` ignores, in order (one read for those not cached).
pub async fn ignored_by_each(
    server: &Server,
    users: &[&UserId],
) -> Result<Vec<Arc<HashSet<String>>>> {
    super::account_data::settings_of(
        server,
        &server.ignored_users,
        users,
        IGNORED_USER_LIST,
        |_, content| Ok(content.map(parse).unwrap_or_default()),
    )
    .await
}

/// Keeps the cache in step with a new `m.ignored_user_list`.
pub fn changed(server: &Server, user: &UserId, content: &str) {
    server.ignored_users.insert(user, Arc::new(parse(content)));
}

fn parse(content: &str) -> HashSet<String> {
    serde_json::from_str::<Value>(content)
        .ok()
        .and_then(|v| v.get("ignored_users")?.as_object().cloned())
        .map(|users| users.keys().cloned().collect())
        .unwrap_or_default()
}

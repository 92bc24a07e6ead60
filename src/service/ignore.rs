//! spec: "Ignoring users" — `m.ignored_user_list` account data. The
//! server hides an ignored user's timeline events and invites from the
//! user who ignores them, and their messages never notify.

use std::{collections::HashSet, sync::Arc};

use ruma::UserId;
use serde_json::Value;

use super::account_data;
use crate::{Result, Server};

pub const IGNORED_USER_LIST: &str = "m.ignored_user_list";

pub type IgnoreCache = account_data::SettingCache<HashSet<String>>;

/// The users `user` ignores.
pub async fn ignored_by(server: &Server, user: &UserId) -> Result<Arc<HashSet<String>>> {
    account_data::setting_of(
        server,
        &server.ignored_users,
        user,
        IGNORED_USER_LIST,
        stored_list,
    )
    .await
}

/// The users each of `users` ignores, in order (one read for those not cached).
pub async fn ignored_by_each(
    server: &Server,
    users: &[&UserId],
) -> Result<Vec<Arc<HashSet<String>>>> {
    account_data::settings_of(
        server,
        &server.ignored_users,
        users,
        IGNORED_USER_LIST,
        stored_list,
    )
    .await
}

/// What a stored `m.ignored_user_list` (if any) says.
fn stored_list(_: &UserId, content: Option<&str>) -> Result<HashSet<String>> {
    Ok(content.map(parse).unwrap_or_default())
}

/// Keeps the cache in step with a new `m.ignored_user_list`.
pub fn changed(server: &Server, user: &UserId, content: &str) {
    server
        .ignored_users
        .replace(user.to_owned(), Arc::new(parse(content)));
}

fn parse(content: &str) -> HashSet<String> {
    serde_json::from_str::<Value>(content)
        .ok()
        .and_then(|v| v.get("ignored_users")?.as_object().cloned())
        .map(|users| users.keys().cloned().collect())
        .unwrap_or_default()
}

//! Account data, global and per room, and room tags (stored as the `m.tag`
//! room account data event, which is what sync delivers): spec client-server
//! API, "Client config" and "Room tagging".

use std::{collections::HashMap, sync::Arc};

use ruma::{OwnedUserId, RoomId, UserId, events::tag::Tags};
use serde_json::{Value, json};

use crate::{Error, Result, Server, cache::ReadCache};

/// Global account data is stored with this room id.
const GLOBAL: &str = "";

/// What each user's setting (see [`settings_of`]) was read as.
pub type SettingCache<V> = ReadCache<OwnedUserId, Arc<V>>;

/// What `parse` makes of the global `data_type` account data of each of
/// `users`, in order: from `cache`, and the users it does not hold read in
/// one go (and cached). Planning an event's notifications in a large room
/// needs every member's settings.
pub async fn settings_of<V>(
    server: &Server,
    cache: &SettingCache<V>,
    users: &[&UserId],
    data_type: &str,
    parse: impl Fn(&UserId, Option<&str>) -> Result<V>,
) -> Result<Vec<Arc<V>>> {
    let generation = cache.generation();
    let cached = cache.get_many(users);
    let missing: Vec<&str> = users
        .iter()
        .zip(&cached)
        .filter(|(_, value)| value.is_none())
        .map(|(user, _)| user.as_str())
        .collect();
    let stored: HashMap<String, String> = match missing.is_empty() {
        true => HashMap::new(),
        false => server
            .db
            .global_account_data_of(&missing, data_type)
            .await?
            .into_iter()
            .collect(),
    };
    users
        .iter()
        .zip(cached)
        .map(|(user, cached)| match cached {
            Some(value) => Ok(value),
            None => {
                let value = Arc::new(parse(user, stored.get(user.as_str()).map(String::as_str))?);
                cache.insert((*user).to_owned(), value.clone(), generation);
                Ok(value)
            }
        })
        .collect()
}

/// [`settings_of`] for one user.
pub async fn setting_of<V>(
    server: &Server,
    cache: &SettingCache<V>,
    user: &UserId,
    data_type: &str,
    parse: impl Fn(&UserId, Option<&str>) -> Result<V>,
) -> Result<Arc<V>> {
    settings_of(server, cache, &[user], data_type, parse)
        .await?
        .pop()
        .ok_or_else(|| Error::internal("a setting read for one user came back empty"))
}

/// Users may only read and write their own account data.
pub fn check_owner(requester: &UserId, owner: &UserId) -> Result<()> {
    if requester != owner {
        return Err(Error::forbidden(
            "You may only access your own account data",
        ));
    }
    Ok(())
}

/// Stores a client's account data event (`room` None: global) and wakes its syncs.
pub async fn put(
    server: &Server,
    user: &UserId,
    room: Option<&RoomId>,
    event_type: &str,
    content: &str,
) -> Result<()> {
    // spec: the server manages these types itself; clients may not set them here.
    if event_type == "m.fully_read" || event_type == "m.push_rules" {
        return Err(Error::new(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "M_BAD_JSON",
            format!("Cannot set {event_type} through this API"),
        ));
    }
    if !matches!(serde_json::from_str::<Value>(content), Ok(Value::Object(_))) {
        return Err(Error::bad_json(
            "Account data content must be a JSON object",
        ));
    }
    store(server, user, room, event_type, content).await
}

/// Stores account data whatever its type: for the types the server itself
/// manages (`m.fully_read`, `m.push_rules`).
pub(super) async fn store(
    server: &Server,
    user: &UserId,
    room: Option<&RoomId>,
    event_type: &str,
    content: &str,
) -> Result<()> {
    if let Some(room) = room {
        super::rooms::require_room(server, room).await?;
    }
    let room = room.map_or(GLOBAL, |r| r.as_str());
    server
        .db
        .put_account_data(user.as_str(), room, event_type, content)
        .await?;
    if room == GLOBAL && event_type == super::ignore::IGNORED_USER_LIST {
        super::ignore::changed(server, user, content);
    }
    if room == GLOBAL && event_type == super::receipts::RECEIPT_SETTINGS {
        super::receipts::settings_changed(server, user, content);
    }
    server.notifier.notify_users([user.as_str()]);
    Ok(())
}

/// All of the user's account data for a room, as events.
pub async fn room_events(
    server: &Server,
    user: &UserId,
    room: &RoomId,
) -> Result<Vec<ruma::serde::Raw<ruma::events::AnyRoomAccountDataEvent>>> {
    let rows = server
        .db
        .room_account_data(user.as_str(), room.as_str())
        .await?;
    rows.into_iter()
        .map(|row| {
            let content: Value = serde_json::from_str(&row.content)?;
            let event = json!({ "type": row.data_type, "content": content });
            Ok(ruma::serde::Raw::from_json(
                serde_json::value::to_raw_value(&event)?,
            ))
        })
        .collect()
}

/// The stored content, as JSON text.
pub async fn get(
    server: &Server,
    user: &UserId,
    room: Option<&RoomId>,
    event_type: &str,
) -> Result<String> {
    let room = room.map_or(GLOBAL, |r| r.as_str());
    let content = server
        .db
        .account_data(user.as_str(), room, event_type)
        .await?;
    content.ok_or_else(|| Error::not_found("Account data not found"))
}

async fn tag_content(server: &Server, user: &UserId, room: &RoomId) -> Result<Value> {
    let content = server
        .db
        .account_data(user.as_str(), room.as_str(), "m.tag")
        .await?;
    Ok(content
        .map(|c| serde_json::from_str(&c))
        .transpose()?
        .unwrap_or_else(|| json!({ "tags": {} })))
}

pub async fn tags(server: &Server, user: &UserId, room: &RoomId) -> Result<Tags> {
    let content = tag_content(server, user, room).await?;
    Ok(serde_json::from_value(content["tags"].clone()).unwrap_or_default())
}

/// Adds or replaces a tag (`info` Some) or removes it (`info` None).
pub async fn set_tag(
    server: &Server,
    user: &UserId,
    room: &RoomId,
    tag: &str,
    info: Option<Value>,
) -> Result<()> {
    let mut content = tag_content(server, user, room).await?;
    match info {
        Some(info) => content["tags"][tag] = info,
        None => {
            if let Some(tags) = content["tags"].as_object_mut() {
                tags.remove(tag);
            }
        }
    }
    store(server, user, Some(room), "m.tag", &content.to_string()).await
}

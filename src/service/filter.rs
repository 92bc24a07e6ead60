//! Event filters: spec client-server API, "Filtering".

use ruma::api::client::filter::{RoomEventFilter, UrlFilter};

use crate::store::events::StoredEvent;

/// `*` matches any run of characters, as the spec allows in type filters.
fn glob(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((prefix, rest)) => {
            let Some(tail) = value.strip_prefix(prefix) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

/// Whether the filter lets every event through (only a limit, at most).
pub fn is_unfiltered(filter: &RoomEventFilter) -> bool {
    filter.types.is_none()
        && filter.not_types.is_empty()
        && filter.senders.is_none()
        && filter.not_senders.is_empty()
        && filter.rooms.is_none()
        && filter.not_rooms.is_empty()
        && filter.url_filter.is_none()
}

pub fn matches(filter: &RoomEventFilter, event: &StoredEvent) -> bool {
    if filter.not_types.iter().any(|t| glob(t, &event.event_type)) {
        return false;
    }
    if let Some(types) = &filter.types
        && !types.iter().any(|t| glob(t, &event.event_type))
    {
        return false;
    }
    if filter
        .not_senders
        .iter()
        .any(|s| s.as_str() == event.sender)
    {
        return false;
    }
    if let Some(senders) = &filter.senders
        && !senders.iter().any(|s| s.as_str() == event.sender)
    {
        return false;
    }
    if filter.not_rooms.iter().any(|r| r.as_str() == event.room_id) {
        return false;
    }
    if let Some(rooms) = &filter.rooms
        && !rooms.iter().any(|r| r.as_str() == event.room_id)
    {
        return false;
    }
    if let Some(url_filter) = &filter.url_filter {
        let has_url = serde_json::from_str::<serde_json::Value>(&event.pdu)
            .map(|v| v["content"]["url"].is_string())
            .unwrap_or(false);
        if has_url != matches!(url_filter, UrlFilter::EventsWithUrl) {
            return false;
        }
    }
    true
}

/// Whether a filter's `types` / `not_types` let `event_type` through.
pub fn type_wanted(types: Option<&[String]>, not_types: &[String], event_type: &str) -> bool {
    !not_types.iter().any(|t| glob(t, event_type))
        && types.is_none_or(|types| types.iter().any(|t| glob(t, event_type)))
}

/// Whether a presence filter lets through the presence of `user`.
pub fn presence_wanted(filter: &ruma::api::client::filter::Filter, user: &str) -> bool {
    type_wanted(filter.types.as_deref(), &filter.not_types, "m.presence")
        && filter
            .senders
            .as_ref()
            .is_none_or(|senders| senders.iter().any(|s| s.as_str() == user))
        && !filter.not_senders.iter().any(|s| s.as_str() == user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("m.room.*", "m.room.message"));
        assert!(glob("*", "anything"));
        assert!(glob("m.*.message", "m.room.message"));
        assert!(!glob("m.room.*", "m.call.invite"));
        assert!(glob("m.room.message", "m.room.message"));
        assert!(!glob("m.room.message", "m.room.message2"));
    }
}

//! spec: "Reporting content" — reports of events, rooms and users, kept for
//! the server's admins.

use ruma::{EventId, RoomId, UserId};

use super::rooms::visibility::Viewer;
use crate::{Error, Result, Server, store::rooms::NewReport};

/// An event the reporter can see; 404 otherwise, so a report does not tell
/// whether an event exists.
pub async fn report_event(
    server: &Server,
    reporter: &UserId,
    room: &RoomId,
    event_id: &EventId,
    reason: Option<&str>,
) -> Result<()> {
    let not_found = || Error::not_found("Event not found");
    super::rooms::require_room(server, room).await?;
    let event = server
        .db
        .event(event_id.as_str())
        .await?
        .filter(|e| e.room_id == room.as_str())
        .ok_or_else(not_found)?;
    if !Viewer::load(server, room, reporter).await?.can_see(&event) {
        return Err(not_found());
    }
    store(server, reporter, Some(room), Some(event_id), None, reason).await
}

pub async fn report_room(
    server: &Server,
    reporter: &UserId,
    room: &RoomId,
    reason: &str,
) -> Result<()> {
    super::rooms::require_room(server, room).await?;
    store(server, reporter, Some(room), None, None, Some(reason)).await
}

pub async fn report_user(
    server: &Server,
    reporter: &UserId,
    user: &UserId,
    reason: &str,
) -> Result<()> {
    if server.db.user(user.as_str()).await?.is_none() {
        return Err(Error::not_found("Unknown user"));
    }
    store(server, reporter, None, None, Some(user), Some(reason)).await
}

async fn store(
    server: &Server,
    reporter: &UserId,
    room: Option<&RoomId>,
    event: Option<&EventId>,
    user: Option<&UserId>,
    reason: Option<&str>,
) -> Result<()> {
    server
        .db
        .insert_report(&NewReport {
            reporter: reporter.as_str(),
            room_id: room.map(|r| r.as_str()),
            event_id: event.map(|e| e.as_str()),
            user_id: user.map(|u| u.as_str()),
            reason,
        })
        .await?;
    tracing::info!(reporter = %reporter, room = ?room, event = ?event, user = ?user, "content reported");
    Ok(())
}

//! spec: "Typing notifications". Typing is ephemeral: kept in memory with a
//! deadline per user, never persisted.
//!
//! Each change of a room's typing list takes a new serial from a counter
//! that starts at the current Unix time in milliseconds, so serials (the
//! typing part of a sync token) keep growing across restarts and an old
//! token never hides a newer change.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::{sync::Notify, time::Instant};

use crate::{Result, Server, service::rooms};

/// Longest a client may claim to be typing for; longer requests are capped.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Typing {
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
    serial: AtomicI64,
    /// Wakes the expiry task when a sooner deadline arrives.
    rearm: Notify,
}

#[derive(Default)]
struct RoomTyping {
    users: HashMap<OwnedUserId, Instant>,
    serial: i64,
}

impl Default for Typing {
    fn default() -> Self {
        Self {
            rooms: Mutex::default(),
            serial: AtomicI64::new(crate::now_ms()),
            rearm: Notify::new(),
        }
    }
}

impl Typing {
    /// The serial of the latest change.
    pub fn position(&self) -> i64 {
        self.serial.load(Ordering::SeqCst)
    }

    /// Starts (`Some(timeout)`) or stops (`None`) `user` typing in `room`;
    /// whether the room's typing list changed.
    fn set(&self, room: &RoomId, user: &UserId, timeout: Option<Duration>) -> bool {
        let mut rooms = self.rooms.lock().expect("typing lock");
        let entry = rooms.entry(room.to_owned()).or_default();
        let changed = match timeout {
            Some(t) => entry
                .users
                .insert(user.to_owned(), Instant::now() + t.min(MAX_TIMEOUT))
                .is_none(),
            None => entry.users.remove(user).is_some(),
        };
        if changed {
            entry.serial = self.serial.fetch_add(1, Ordering::SeqCst) + 1;
        }
        if timeout.is_some() {
            self.rearm.notify_one();
        }
        changed
    }

    /// Removes every expired entry; the rooms whose lists changed.
    fn expire(&self, now: Instant) -> Vec<OwnedRoomId> {
        let mut rooms = self.rooms.lock().expect("typing lock");
        let mut changed = Vec::new();
        for (room, typing) in rooms.iter_mut() {
            let before = typing.users.len();
            typing.users.retain(|_, deadline| *deadline > now);
            if typing.users.len() != before {
                typing.serial = self.serial.fetch_add(1, Ordering::SeqCst) + 1;
                changed.push(room.clone());
            }
        }
        rooms.retain(|_, t| !t.users.is_empty() || t.serial > 0);
        changed
    }

    fn next_deadline(&self) -> Option<Instant> {
        let rooms = self.rooms.lock().expect("typing lock");
        rooms.values().flat_map(|t| t.users.values()).min().copied()
    }

    /// The typing lists of those of `rooms` that changed after serial
    /// `since` (all non-empty lists when `since` is `None`).
    pub fn changed_since(
        &self,
        rooms: &[OwnedRoomId],
        since: Option<i64>,
    ) -> HashMap<OwnedRoomId, Vec<OwnedUserId>> {
        let all = self.rooms.lock().expect("typing lock");
        rooms
            .iter()
            .filter_map(|room| {
                let typing = all.get(room)?;
                let news = match since {
                    Some(s) => typing.serial > s,
                    None => !typing.users.is_empty(),
                };
                news.then(|| (room.clone(), typing.users.keys().cloned().collect()))
            })
            .collect()
    }
}

/// `PUT /rooms/{roomId}/typing/{userId}`: the user must be joined. The
/// other servers in the room hear of every start (a refresh of their
/// timeout) and stop.
pub async fn set_typing(
    server: &Server,
    room: &RoomId,
    user: &UserId,
    timeout: Option<Duration>,
) -> Result<()> {
    rooms::require_joined(server, room, user).await?;
    let changed = server.typing.set(room, user, timeout);
    if changed {
        notify_room(server, room).await?;
    }
    if changed || timeout.is_some() {
        crate::service::federation::edu::send_typing(server, room, user, timeout.is_some()).await?;
    }
    Ok(())
}

/// A user of another server started (`Some(timeout)`) or stopped typing.
pub async fn set_remote(
    server: &Server,
    room: &RoomId,
    user: &UserId,
    timeout: Option<Duration>,
) -> Result<()> {
    if server.typing.set(room, user, timeout) {
        notify_room(server, room).await?;
    }
    Ok(())
}

async fn notify_room(server: &Server, room: &RoomId) -> Result<()> {
    let members = server.db.room_member_ids(room.as_str(), "join").await?;
    server
        .notifier
        .notify_users(members.iter().map(String::as_str));
    Ok(())
}

/// Runs until shutdown: drops typing entries at their deadline and wakes the
/// rooms' members.
pub async fn expire_forever(server: Arc<Server>) {
    loop {
        let wait = async {
            match server.typing.next_deadline() {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait => {}
            () = server.typing.rearm.notified() => continue,
            () = server.notifier.shutting_down() => return,
        }
        for room in server.typing.expire(Instant::now()) {
            if let Err(e) = notify_room(&server, &room).await {
                tracing::warn!(room = %room, error = %e, "typing expiry wake-up failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (OwnedRoomId, OwnedUserId) {
        (
            "!r:example.org".try_into().unwrap(),
            "@a:example.org".try_into().unwrap(),
        )
    }

    #[test]
    fn start_stop_and_serials() {
        let typing = Typing::default();
        let (room, user) = ids();
        let start = typing.position();
        assert!(typing.set(&room, &user, Some(Duration::from_secs(10))));
        assert!(!typing.set(&room, &user, Some(Duration::from_secs(10))));
        let rooms = [room.clone()];
        assert_eq!(
            typing.changed_since(&rooms, Some(start))[&room],
            std::slice::from_ref(&user)
        );
        let after_start = typing.position();
        assert!(typing.changed_since(&rooms, Some(after_start)).is_empty());
        assert!(typing.set(&room, &user, None));
        assert!(typing.changed_since(&rooms, Some(after_start))[&room].is_empty());
        assert!(typing.changed_since(&rooms, None).is_empty());
    }

    #[test]
    fn expiry_changes_the_list() {
        let typing = Typing::default();
        let (room, user) = ids();
        typing.set(&room, &user, Some(Duration::from_millis(1)));
        let before = typing.position();
        assert_eq!(
            typing.expire(Instant::now() + Duration::from_secs(1)),
            std::slice::from_ref(&room)
        );
        assert!(typing.position() > before);
        assert!(
            typing
                .changed_since(&[room], Some(before))
                .values()
                .all(Vec::is_empty)
        );
    }
}

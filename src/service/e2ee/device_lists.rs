//! Device lists (spec: "Tracking the device list for a user"): which users'
//! devices or cross-signing keys changed since a sync position, and with
//! whom the syncing user started or stopped sharing a room. Every room
//! counts, encrypted or not: telling a client too much only costs it a key
//! query; telling it too little breaks encryption.

use std::collections::BTreeSet;

use ruma::{OwnedUserId, UserId};

use crate::{Result, Server};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
}

/// The device-list changes `user` should hear about in `(since, upto]`.
pub async fn changes(server: &Server, user: &UserId, since: i64, upto: i64) -> Result<Changes> {
    let me = user.as_str();
    let mut changed = BTreeSet::new();
    let mut left_candidates = BTreeSet::new();

    let (key_changes, membership_changes) = tokio::try_join!(
        server.db.users_with_key_changes(since, upto),
        server.db.membership_changes_around(me, since),
    )?;
    if key_changes.iter().any(|u| u == me) {
        changed.insert(me.to_owned());
    }
    let others: Vec<String> = key_changes.into_iter().filter(|u| u != me).collect();
    if !others.is_empty() {
        changed.extend(server.db.users_sharing_a_room_among(me, &others).await?);
    }

    for row in membership_changes {
        if row.user_id == me {
            continue;
        }
        let they_are_in = row.their_membership == "join";
        let they_left = matches!(row.their_membership.as_str(), "leave" | "ban");
        match (row.my_membership == "join", they_are_in) {
            (true, true) => {
                changed.insert(row.user_id);
            }
            (true, false) if they_left => {
                left_candidates.insert(row.user_id);
            }
            (false, true) => {
                left_candidates.insert(row.user_id);
            }
            _ => {}
        }
    }

    let candidates: Vec<String> = left_candidates.into_iter().collect();
    let still_sharing: BTreeSet<String> = if candidates.is_empty() {
        BTreeSet::new()
    } else {
        server
            .db
            .users_sharing_a_room_among(me, &candidates)
            .await?
            .into_iter()
            .collect()
    };
    let left: BTreeSet<String> = candidates
        .into_iter()
        .filter(|u| !still_sharing.contains(u))
        .collect();
    Ok(Changes {
        changed: to_user_ids(changed.into_iter().filter(|u| !left.contains(u))),
        left: to_user_ids(left.into_iter()),
    })
}

/// `user`'s devices or cross-signing keys changed: wakes everyone who
/// tracks them and, for our own users, tells the other servers sharing a
/// room with them.
pub async fn announce(server: &Server, user: &UserId) -> Result<()> {
    wake_trackers(server, user).await?;
    if user.server_name() == server.server_name() {
        crate::service::federation::edu::send_device_changes(server, user).await?;
    }
    Ok(())
}

/// Wakes the syncs of everyone who tracks `user`'s devices: the user and
/// the users sharing a room with them.
pub async fn wake_trackers(server: &Server, user: &UserId) -> Result<()> {
    let mut users = server.db.users_sharing_a_room(user.as_str()).await?;
    users.push(user.as_str().to_owned());
    server
        .notifier
        .notify_users(users.iter().map(String::as_str));
    Ok(())
}

fn to_user_ids(users: impl Iterator<Item = String>) -> Vec<OwnedUserId> {
    users.filter_map(|u| UserId::parse(u).ok()).collect()
}

//! Wake-ups for long-polling `/sync`.
//!
//! Each local user has a version counter in a `watch` channel. A writer bumps
//! the counters of the users an event concerns after its transaction commits;
//! a syncing client subscribes before it reads the database, so nothing that
//! commits between the read and the wait is missed. Channels exist only while
//! someone is listening.

use std::{collections::HashMap, sync::Mutex};

use tokio::sync::watch;

#[derive(Default)]
pub struct Notifier {
    users: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Notifier {
    /// A receiver that changes whenever `user_id` is notified from now on.
    pub fn subscribe(&self, user_id: &str) -> watch::Receiver<u64> {
        let mut users = self.users.lock().expect("notifier lock");
        users.retain(|_, tx| tx.receiver_count() > 0);
        users
            .entry(user_id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    pub fn notify_users<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>) {
        let users = self.users.lock().expect("notifier lock");
        for user in user_ids {
            if let Some(tx) = users.get(user) {
                tx.send_modify(|v| *v += 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_sees_notifications_sent_after_subscribing() {
        let n = Notifier::default();
        let mut rx = n.subscribe("@a:x");
        n.notify_users(["@b:x"]);
        assert!(!rx.has_changed().unwrap());
        n.notify_users(["@a:x"]);
        rx.changed().await.unwrap();
    }
}

//! Wake-ups for long-polling `/sync`.
//!
//! Each local user has a version counter in a `watch` channel. A writer bumps
//! the counters of the users an event concerns after its transaction commits;
//! a syncing client subscribes before it reads the database, so nothing that
//! commits between the read and the wait is missed. Channels exist only while
//! someone is listening.

use std::{collections::HashMap, sync::Mutex};

use tokio::sync::watch;

pub struct Notifier {
    users: Mutex<HashMap<String, watch::Sender<u64>>>,
    shutdown: watch::Sender<bool>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            users: Mutex::default(),
            shutdown: watch::channel(false).0,
        }
    }
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

    /// Wakes every waiter for good: the server is stopping.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once shutdown has begun.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|stopping| *stopping).await;
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

    #[tokio::test]
    async fn shutdown_releases_waiters() {
        let n = std::sync::Arc::new(Notifier::default());
        let waiter = tokio::spawn({
            let n = n.clone();
            async move { n.shutting_down().await }
        });
        n.shut_down();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        n.shutting_down().await; // already stopping: resolves at once
    }
}

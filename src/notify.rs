//! Wake-ups for long-polling `/sync`.
//!
//! Each local user has a version counter in a `watch` channel. A writer bumps
//! the counters of the users an event concerns after its transaction commits;
//! a syncing client subscribes before it reads the database, so nothing that
//! commits between the read and the wait is missed. Channels exist only while
//! someone is listening.
//!
//! With Redis configured, every wake-up is also published on a channel that
//! all server processes subscribe to, so a sync held by one process wakes
//! when another one commits (DESIGN.md, "Scale-out").

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use futures::StreamExt as _;
use tokio::sync::{mpsc, watch};

pub struct Notifier {
    users: Mutex<HashMap<String, watch::Sender<u64>>>,
    shutdown: watch::Sender<bool>,
    /// Publishes wake-ups to the other processes, when Redis is configured.
    bus: OnceLock<mpsc::UnboundedSender<Vec<String>>>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            users: Mutex::default(),
            shutdown: watch::channel(false).0,
            bus: OnceLock::new(),
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
        match self.bus.get() {
            Some(bus) => {
                let user_ids: Vec<String> = user_ids.into_iter().map(str::to_owned).collect();
                self.notify_here(user_ids.iter().map(String::as_str));
                let _ = bus.send(user_ids);
            }
            None => self.notify_here(user_ids),
        }
    }

    fn notify_here<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>) {
        let users = self.users.lock().expect("notifier lock");
        for user in user_ids {
            if let Some(tx) = users.get(user) {
                tx.send_modify(|v| *v += 1);
            }
        }
    }
}

/// Joins the wake-ups of every process sharing the Redis at `client`: starts
/// a publisher and a subscriber task on `<prefix>:notify`.
pub fn join_redis_bus(
    notifier: std::sync::Weak<crate::Server>,
    client: redis::Client,
    conn: redis::aio::ConnectionManager,
    prefix: &str,
) {
    let Some(server) = notifier.upgrade() else {
        return;
    };
    let channel = format!("{prefix}:notify");
    let origin = format!("{:016x}", rand::random::<u64>());
    let (tx, rx) = mpsc::unbounded_channel();
    if server.notifier.bus.set(tx).is_err() {
        return;
    }
    tokio::spawn(publish_forever(rx, conn, channel.clone(), origin.clone()));
    tokio::spawn(subscribe_forever(notifier, client, channel, origin));
}

/// A message is the origin process's id and the user ids, space-separated.
async fn publish_forever(
    mut rx: mpsc::UnboundedReceiver<Vec<String>>,
    mut conn: redis::aio::ConnectionManager,
    channel: String,
    origin: String,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        let mut message = origin.clone();
        for user in batch.drain(..).flatten() {
            message.push(' ');
            message.push_str(&user);
        }
        let sent: redis::RedisResult<()> = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(message)
            .query_async(&mut conn)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "publishing a wake-up to redis failed");
        }
    }
}

async fn subscribe_forever(
    server: std::sync::Weak<crate::Server>,
    client: redis::Client,
    channel: String,
    origin: String,
) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Some(server) = server.upgrade() else {
                            return;
                        };
                        let Ok(text) = msg.get_payload::<String>() else {
                            continue;
                        };
                        let mut parts = text.split(' ');
                        if parts.next() != Some(origin.as_str()) {
                            server.notifier.notify_here(parts);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "subscribing to redis wake-ups failed"),
            },
            Err(e) => tracing::warn!(error = %e, "connecting to redis for wake-ups failed"),
        }
        if server.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
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

//! Sending to other servers: one queue per destination, one transaction in
//! flight per destination (spec server-server API, "Transactions": at most
//! 50 PDUs and 100 EDUs each).
//!
//! PDUs and the EDUs that must not be lost (receipts, device list updates,
//! to-device messages) wait in the database outbox, written in the same
//! transaction as what caused them, so a restart loses nothing; typing and
//! presence EDUs wait in memory only (they are stale a moment later anyway).
//! A failed transaction is retried as it was, after an exponential backoff
//! capped at `federation.retry_max_ms`; a request from the destination
//! itself (it is back) ends the wait at once.
//!
//! With several processes on one PostgreSQL, one is elected to send (it
//! holds an advisory lock; another takes over when it goes): the others
//! queue in the outbox and wake it through the Redis bus, and it also looks
//! at the outbox every few seconds. `federation.send_transactions = false`
//! keeps a process out of the election.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use http::StatusCode;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId,
    api::federation::transactions::send_transaction_message, serde::Raw,
};
use serde_json::{Value, value::RawValue};
use tokio::sync::Notify;

use crate::{Server, service::rooms::timeline, store::federation::OutboxItem};

const MAX_PDUS: i64 = 50;
const MAX_EDUS: usize = 100;
/// How often an idle queue looks at the outbox for items other processes queued.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// The PostgreSQL advisory lock whose holder sends (with the server name).
const SENDER_LOCK: i32 = 7302;
/// The notifier key other processes wake the elected sender with.
const OUTBOX_KEY: &str = "\u{1}federation-outbox";

/// The queues of this process, by destination.
pub struct Sender {
    server: Weak<Server>,
    /// Whether this process is the one that sends.
    elected: std::sync::atomic::AtomicBool,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    started_ms: i64,
    next_txn: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Queue {
    /// Something was queued.
    queued: Notify,
    /// The destination contacted us: stop backing off.
    reachable: Notify,
    /// Typing and presence EDUs not sent yet.
    ephemeral: Mutex<Vec<Value>>,
}

impl Sender {
    pub fn new(server: Weak<Server>) -> Self {
        Self {
            server,
            elected: Default::default(),
            queues: Mutex::default(),
            started_ms: crate::now_ms(),
            next_txn: Default::default(),
        }
    }

    fn queue(&self, server: &Server, destination: &str) -> Option<Arc<Queue>> {
        if !self.elected.load(std::sync::atomic::Ordering::SeqCst)
            || destination == server.server_name().as_str()
        {
            return None;
        }
        let mut queues = self.queues.lock().expect("sender queues");
        if let Some(queue) = queues.get(destination) {
            return Some(queue.clone());
        }
        let name = OwnedServerName::try_from(destination).ok()?;
        let queue = Arc::new(Queue::default());
        queues.insert(destination.to_owned(), queue.clone());
        tokio::spawn(run(self.server.clone(), name, queue.clone()));
        Some(queue)
    }

    fn txn_id(&self) -> OwnedTransactionId {
        let n = self
            .next_txn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}.{n}", self.started_ms).into()
    }
}

/// Something was queued for these destinations in the outbox.
pub fn wake(server: &Server, destinations: &[String]) {
    if destinations.is_empty() {
        return;
    }
    if !server
        .federation_sender
        .elected
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        // The elected process, elsewhere, hears of it through the bus.
        server.notifier.notify_users([OUTBOX_KEY]);
        return;
    }
    for destination in destinations {
        if let Some(queue) = server.federation_sender.queue(server, destination) {
            queue.queued.notify_one();
        }
    }
}

/// Runs until shutdown: takes part in the election of the sending process
/// and, once elected, sends what is waiting and what the others queue.
pub async fn run_election(server: Arc<Server>) {
    if !server.config.federation.send_transactions {
        return;
    }
    let mut outbox = server.notifier.subscribe(OUTBOX_KEY);
    let _held = loop {
        let name = server.server_name().as_str();
        match server.db.try_session_lock(SENDER_LOCK, name).await {
            Ok(Some(connection)) => break connection,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e.message, "sender election failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(IDLE_POLL) => {}
            () = server.notifier.shutting_down() => return,
        }
    };
    tracing::info!("this process sends to other servers");
    server
        .federation_sender
        .elected
        .store(true, std::sync::atomic::Ordering::SeqCst);
    loop {
        resume(&server).await;
        tokio::select! {
            _ = outbox.changed() => {}
            () = tokio::time::sleep(IDLE_POLL) => {}
            () = server.notifier.shutting_down() => return,
        }
    }
}

/// Queues a typing or presence EDU (`{"edu_type", "content"}`) in memory.
pub fn send_ephemeral(server: &Server, destination: &str, edu: Value) {
    if let Some(queue) = server.federation_sender.queue(server, destination) {
        queue.ephemeral.lock().expect("ephemeral edus").push(edu);
        queue.queued.notify_one();
    }
}

/// `origin` just made a request to us: it is up, so retry now.
pub fn reachable(server: &Server, origin: &str) {
    let queue = server
        .federation_sender
        .queues
        .lock()
        .expect("sender queues")
        .get(origin)
        .cloned();
    if let Some(queue) = queue {
        queue.reachable.notify_one();
    }
}

/// Starts the queues of every destination with something in the outbox
/// (what was waiting when the server last stopped).
pub async fn resume(server: &Server) {
    match server.db.outbox_destinations().await {
        Ok(destinations) => wake(server, &destinations),
        Err(e) => tracing::warn!(error = %e.message, "cannot read the federation outbox"),
    }
}

/// One destination's loop: take a batch, send it until it is accepted (or
/// refused for good), remove it, repeat; idle when there is nothing.
async fn run(server: Weak<Server>, destination: OwnedServerName, queue: Arc<Queue>) {
    let mut backoff: Option<Duration> = None;
    loop {
        let Some(strong) = server.upgrade() else {
            return;
        };
        let batch = match Batch::take(&strong, destination.as_str(), &queue).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(%destination, error = %e.message, "cannot read the outbox");
                drop(strong);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            drop(strong);
            let _ = tokio::time::timeout(IDLE_POLL, queue.queued.notified()).await;
            continue;
        }
        drop(strong);
        loop {
            let Some(strong) = server.upgrade() else {
                return;
            };
            match batch.send(&strong, &destination).await {
                Outcome::Delivered | Outcome::Refused => {
                    let positions = &batch.positions;
                    if let Err(e) = strong
                        .db
                        .outbox_remove(destination.as_str(), positions)
                        .await
                    {
                        tracing::warn!(%destination, error = %e.message, "cannot clear the outbox");
                    }
                    backoff = None;
                    break;
                }
                Outcome::Retry => {
                    let wait = next_backoff(&strong, backoff);
                    backoff = Some(wait);
                    let wait_ms = wait.as_millis() as u64;
                    tracing::info!(%destination, wait_ms, "transaction failed; retrying later");
                    drop(strong);
                    let _ = tokio::time::timeout(wait, queue.reachable.notified()).await;
                }
            }
        }
    }
}

fn next_backoff(server: &Server, last: Option<Duration>) -> Duration {
    let config = &server.config.federation;
    let max = Duration::from_millis(config.retry_max_ms);
    match last {
        None => Duration::from_millis(config.retry_min_ms).min(max),
        Some(last) => (last * 2).min(max),
    }
}

enum Outcome {
    Delivered,
    /// The destination refused the transaction itself (not a passing
    /// failure): retrying it would never succeed.
    Refused,
    Retry,
}

/// One transaction's worth of a destination's queue.
struct Batch {
    txn_id: OwnedTransactionId,
    pdus: Vec<Box<RawValue>>,
    edus: Vec<Raw<ruma::api::federation::transactions::edu::Edu>>,
    /// The outbox items it carries.
    positions: Vec<i64>,
}

impl Batch {
    async fn take(server: &Arc<Server>, destination: &str, queue: &Queue) -> crate::Result<Self> {
        let ephemeral: Vec<Value> = {
            let mut waiting = queue.ephemeral.lock().expect("ephemeral edus");
            let n = waiting.len().min(MAX_EDUS / 2);
            waiting.drain(..n).collect()
        };
        let items = server
            .db
            .outbox_batch(destination, MAX_PDUS, (MAX_EDUS - ephemeral.len()) as i64)
            .await?;
        let positions = items.iter().map(|i| i.position).collect();
        let event_ids: Vec<String> = items.iter().filter_map(|i| i.event_id.clone()).collect();
        let mut events = server.db.events(&event_ids).await?;
        events.sort_by_key(|e| e.stream_ordering);
        let pdus = events
            .into_iter()
            .map(|e| RawValue::from_string(e.pdu))
            .collect::<Result<Vec<_>, _>>()?;
        let edus = items
            .iter()
            .filter_map(stored_edu)
            .chain(ephemeral)
            .map(|edu| serde_json::value::to_raw_value(&edu).map(Raw::from_json))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            txn_id: server.federation_sender.txn_id(),
            pdus,
            edus,
            positions,
        })
    }

    fn is_empty(&self) -> bool {
        self.pdus.is_empty() && self.edus.is_empty() && self.positions.is_empty()
    }

    async fn send(&self, server: &Server, destination: &OwnedServerName) -> Outcome {
        let mut request = send_transaction_message::v1::Request::new(
            self.txn_id.clone(),
            server.server_name().to_owned(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        request.pdus = self.pdus.clone();
        request.edus = self.edus.clone();
        match server.federation.send(destination, request).await {
            Ok(response) => {
                for (event_id, result) in response.pdus {
                    if let Err(reason) = result {
                        tracing::info!(%destination, %event_id, %reason, "PDU not accepted by destination");
                    }
                }
                Outcome::Delivered
            }
            Err(e) => match e.status() {
                Some(StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) => {
                    tracing::warn!(%destination, error = %e, "transaction refused; dropping it");
                    Outcome::Refused
                }
                _ => {
                    tracing::debug!(%destination, error = %e, "transaction failed");
                    Outcome::Retry
                }
            },
        }
    }
}

fn stored_edu(item: &OutboxItem) -> Option<Value> {
    let content: Value = serde_json::from_str(item.edu_content.as_deref()?).ok()?;
    Some(serde_json::json!({ "edu_type": item.edu_type.as_deref()?, "content": content }))
}

/// Queues our new events for every other server in their rooms (and the
/// server of a membership change's target, who may just have left), in
/// the events' own write transaction; returns the destinations to wake.
pub async fn queue_local_events(
    server: &Server,
    w: &mut crate::store::WriteTx<'_>,
    heads: &mut timeline::RoomHeads,
    appended: &[timeline::Appended],
) -> crate::Result<Vec<String>> {
    let mut rooms: Vec<&ruma::RoomId> = appended.iter().map(|a| &*a.room_id).collect();
    rooms.sort_unstable();
    rooms.dedup();
    let servers = timeline::servers_of(w, heads, &rooms).await?;
    let ours = server.server_name().as_str();
    let mut items: Vec<(String, i64, &str)> = Vec::new();
    for a in appended {
        let mut destinations: Vec<&str> = servers
            .get(&*a.room_id)
            .map(|s| s.iter().map(String::as_str).collect())
            .unwrap_or_default();
        if let Some((_, target)) = a.member.as_deref().and_then(|m| m.split_once(':')) {
            destinations.push(target);
        }
        destinations.sort_unstable();
        destinations.dedup();
        for destination in destinations.into_iter().filter(|d| *d != ours) {
            items.push((
                destination.to_owned(),
                a.stream_ordering,
                a.event_id.as_str(),
            ));
        }
    }
    let outgoing: Vec<(&str, crate::store::federation::Outgoing<'_>)> = items
        .iter()
        .map(|(destination, position, event_id)| {
            let item = crate::store::federation::Outgoing::Pdu {
                event_id,
                position: *position,
            };
            (destination.as_str(), item)
        })
        .collect();
    w.outbox_push(&outgoing).await?;
    let mut destinations: Vec<String> = items.into_iter().map(|(d, _, _)| d).collect();
    destinations.sort();
    destinations.dedup();
    Ok(destinations)
}

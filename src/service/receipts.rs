//! spec: "Receipts", "Read and unread markers"; and our delivered receipts
//! (`org.corvid.delivered`, spec/extensions.md).
//!
//! Receipts are stored with a position on the main stream, so an
//! incremental sync delivers each change exactly once, and they only move
//! forward: a receipt for an older event than the user's current one of the
//! same type and thread is ignored.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use ruma::{EventId, OwnedRoomId, RoomId, UserId, events::receipt::ReceiptThread, serde::Raw};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{account_data, rooms::visibility::Viewer};
use crate::{
    Error, Result, Server,
    store::{
        events::StoredEvent,
        receipts::{NewReceipt, ReceiptRow},
    },
};

pub const READ: &str = "m.read";
pub const READ_PRIVATE: &str = "m.read.private";
pub const FULLY_READ: &str = "m.fully_read";
pub const DELIVERED: &str = "org.corvid.delivered";

/// `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`.
pub async fn send(
    server: &Server,
    user: &UserId,
    room: &RoomId,
    receipt_type: &str,
    event_id: &EventId,
    thread: &ReceiptThread,
) -> Result<()> {
    let event = visible_event(server, user, room, event_id).await?;
    match receipt_type {
        FULLY_READ if *thread != ReceiptThread::Unthreaded => Err(Error::invalid_param(
            "m.fully_read receipts cannot have a thread_id",
        )),
        FULLY_READ => set_fully_read(server, user, room, event_id).await,
        READ | READ_PRIVATE => {
            let thread_id = thread_id_for(thread, &event)?;
            store_read(server, user, room, receipt_type, thread_id, &event).await
        }
        other => Err(Error::invalid_param(format!(
            "Unknown receipt type {other}"
        ))),
    }
}

/// `POST /rooms/{roomId}/read_markers`.
pub async fn set_read_markers(
    server: &Server,
    user: &UserId,
    room: &RoomId,
    fully_read: Option<&EventId>,
    read: Option<&EventId>,
    read_private: Option<&EventId>,
) -> Result<()> {
    for (receipt_type, event_id) in [(READ, read), (READ_PRIVATE, read_private)] {
        if let Some(event_id) = event_id {
            let event = visible_event(server, user, room, event_id).await?;
            store_read(server, user, room, receipt_type, String::new(), &event).await?;
        }
    }
    if let Some(event_id) = fully_read {
        visible_event(server, user, room, event_id).await?;
        set_fully_read(server, user, room, event_id).await?;
    }
    Ok(())
}

async fn set_fully_read(
    server: &Server,
    user: &UserId,
    room: &RoomId,
    event: &EventId,
) -> Result<()> {
    let content = json!({ "event_id": event }).to_string();
    account_data::store(server, user, Some(room), FULLY_READ, &content).await
}

async fn store_read(
    server: &Server,
    user: &UserId,
    room: &RoomId,
    receipt_type: &str,
    thread_id: String,
    event: &StoredEvent,
) -> Result<()> {
    let receipt = NewReceipt {
        room_id: room.to_string(),
        receipt_type: receipt_type.to_owned(),
        user_id: user.to_string(),
        thread_id,
        event_id: event.event_id.clone(),
        event_stream_ordering: event.stream_ordering,
        ts: crate::now_ms(),
    };
    let stored = server.db.put_receipts(&[receipt]).await?;
    let Some(stored) = stored.first() else {
        return Ok(());
    };
    if receipt_type == READ_PRIVATE {
        server.notifier.notify_users([user.as_str()]);
    } else {
        crate::service::federation::edu::send_receipt(server, stored).await?;
        let members = server.db.room_member_ids(room.as_str(), "join").await?;
        server
            .notifier
            .notify_users(members.iter().map(String::as_str));
    }
    Ok(())
}

/// The event, if it is in the room and the user may see it.
async fn visible_event(
    server: &Server,
    user: &UserId,
    room: &RoomId,
    event_id: &EventId,
) -> Result<StoredEvent> {
    super::rooms::require_room(server, room).await?;
    let event = server
        .db
        .event(event_id.as_str())
        .await?
        .filter(|e| e.room_id == room.as_str())
        .ok_or_else(|| Error::not_found("Event not found in this room"))?;
    let viewer = Viewer::load(server, room, user).await?;
    if !viewer.can_see(&event) {
        return Err(Error::not_found("Event not found in this room"));
    }
    Ok(event)
}

/// The stored `thread_id` of a receipt: `""` unthreaded, `main`, or a
/// thread root, which must be the thread the event is in.
fn thread_id_for(thread: &ReceiptThread, event: &StoredEvent) -> Result<String> {
    let in_thread = thread_root(event);
    match thread {
        ReceiptThread::Unthreaded => Ok(String::new()),
        ReceiptThread::Main if in_thread.is_none() => Ok("main".to_owned()),
        ReceiptThread::Thread(root)
            if in_thread.as_deref() == Some(root.as_str()) || event.event_id == root.as_str() =>
        {
            Ok(root.to_string())
        }
        ReceiptThread::Main | ReceiptThread::Thread(_) => Err(Error::invalid_param(
            "The event is not in the thread given by thread_id",
        )),
        _ => Err(Error::invalid_param(
            "thread_id must be \"main\" or an event id",
        )),
    }
}

/// The root of the thread the event is in (spec: "Threading"), if any.
pub fn thread_root(event: &StoredEvent) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Pdu {
        content: Content,
    }
    #[derive(serde::Deserialize)]
    struct Content {
        #[serde(rename = "m.relates_to")]
        relates_to: Option<Relation>,
    }
    #[derive(serde::Deserialize)]
    struct Relation {
        rel_type: Option<String>,
        event_id: Option<String>,
    }
    let pdu: Pdu = serde_json::from_str(&event.pdu).ok()?;
    let relation = pdu.content.relates_to?;
    (relation.rel_type.as_deref() == Some("m.thread"))
        .then_some(relation.event_id)
        .flatten()
}

/// A room's `m.receipt` event for one sync.
pub struct ReceiptEvent {
    pub event: Raw<ruma::events::AnySyncEphemeralRoomEvent>,
    /// Whether it should end a long-poll: anything but other users'
    /// delivered receipts of events the syncing user did not send. Those
    /// matter to the events' senders only and otherwise ride along with the
    /// next response (in a busy group every member's delivered receipt
    /// would wake every other member's sync).
    pub wakes: bool,
}

/// The `m.receipt` ephemeral event of each of `rooms` with receipts changed
/// in `(since, upto]` that `user` is shown.
pub async fn ephemeral(
    server: &Server,
    user: &UserId,
    rooms: &[String],
    since: Option<i64>,
    upto: i64,
) -> Result<HashMap<String, ReceiptEvent>> {
    let rows = server.db.receipts_between(rooms, since, upto).await?;
    let mut by_room: HashMap<String, BTreeMap<String, Value>> = HashMap::new();
    let mut waking: HashSet<String> = HashSet::new();
    for row in rows {
        let own = row.user_id == user.as_str();
        // Private receipts are for their owner only; delivered receipts are
        // for everyone else (a user knows what reached their own devices).
        if (row.receipt_type == READ_PRIVATE && !own) || (row.receipt_type == DELIVERED && own) {
            continue;
        }
        if row.receipt_type != DELIVERED || row.event_sender.as_deref() == Some(user.as_str()) {
            waking.insert(row.room_id.clone());
        }
        let content = by_room.entry(row.room_id.clone()).or_default();
        add_to_content(content, &row);
    }
    by_room
        .into_iter()
        .map(|(room, content)| {
            let event = json!({ "type": "m.receipt", "content": content });
            let event = Raw::from_json(serde_json::value::to_raw_value(&event)?);
            let wakes = waking.contains(&room);
            Ok((room, ReceiptEvent { event, wakes }))
        })
        .collect()
}

/// `content[event_id][receipt_type][user_id] = {ts, thread_id?}`.
fn add_to_content(content: &mut BTreeMap<String, Value>, row: &ReceiptRow) {
    let mut receipt = json!({ "ts": row.ts });
    if !row.thread_id.is_empty() {
        receipt["thread_id"] = json!(row.thread_id);
    }
    let by_type = content
        .entry(row.event_id.clone())
        .or_insert_with(|| json!({}));
    by_type[&row.receipt_type][&row.user_id] = receipt;
}

/// One device's sync delivered events to a user: the newest event of a room
/// in the response, and who sent the events (the users who care).
pub struct Delivery {
    pub user_id: String,
    pub room_id: OwnedRoomId,
    pub event_id: String,
    pub event_stream_ordering: i64,
    pub senders: HashSet<String>,
}

/// How long delivered receipts gather before they are stored together.
const DELIVERY_BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);
const MAX_DELIVERY_BATCH: usize = 5_000;

/// Records delivered receipts off the sync path: syncs queue deliveries and
/// one task stores whatever has queued up in one transaction.
pub struct DeliveryRecorder {
    queue: mpsc::UnboundedSender<Delivery>,
}

impl DeliveryRecorder {
    pub fn start(server: std::sync::Weak<Server>) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(record_forever(server, rx));
        Self { queue }
    }

    pub fn record(&self, delivery: Delivery) {
        let _ = self.queue.send(delivery);
    }
}

async fn record_forever(
    server: std::sync::Weak<Server>,
    mut rx: mpsc::UnboundedReceiver<Delivery>,
) {
    let mut batch = Vec::new();
    // The members of a room sync within moments of each other when a
    // message arrives: one transaction for all of their deliveries, stored
    // after their syncs have been answered rather than beside them.
    while crate::batch::gather(
        &mut rx,
        &mut batch,
        DELIVERY_BATCH_WINDOW,
        MAX_DELIVERY_BATCH,
    )
    .await
    {
        let Some(server) = server.upgrade() else {
            return;
        };
        if let Err(e) = record_batch(&server, std::mem::take(&mut batch)).await {
            tracing::warn!(error = %e, "storing delivered receipts failed");
        }
    }
}

async fn record_batch(server: &Arc<Server>, batch: Vec<Delivery>) -> Result<()> {
    let mut users: Vec<&str> = batch.iter().map(|d| d.user_id.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    let silent = users_not_sending_delivered(server, &users).await?;
    let mut receipts = Vec::new();
    let mut wake: HashMap<(String, String), HashSet<String>> = HashMap::new();
    for d in batch {
        if silent.contains(&d.user_id) {
            continue;
        }
        wake.entry((d.room_id.to_string(), d.user_id.clone()))
            .or_default()
            .extend(d.senders);
        receipts.push(NewReceipt {
            room_id: d.room_id.to_string(),
            receipt_type: DELIVERED.to_owned(),
            user_id: d.user_id,
            thread_id: String::new(),
            event_id: d.event_id,
            event_stream_ordering: d.event_stream_ordering,
            ts: crate::now_ms(),
        });
    }
    for stored in server.db.put_receipts(&receipts).await? {
        if let Some(senders) = wake.remove(&(stored.room_id, stored.user_id)) {
            server
                .notifier
                .notify_users(senders.iter().map(String::as_str));
        }
    }
    Ok(())
}

/// Account data of a user's receipt settings: `{"send_delivered": false}`
/// keeps others from seeing their delivered receipts.
pub const RECEIPT_SETTINGS: &str = "org.corvid.receipts";

/// Whether each user lets others see their delivered receipts.
pub type DeliveredSettings = account_data::SettingCache<bool>;

/// Those of `users` who do not let others see delivered receipts.
async fn users_not_sending_delivered(server: &Server, users: &[&str]) -> Result<HashSet<String>> {
    let users: Vec<&UserId> = users
        .iter()
        .filter_map(|user| <&UserId>::try_from(*user).ok())
        .collect();
    let sends = account_data::settings_of(
        server,
        &server.delivered_settings,
        &users,
        RECEIPT_SETTINGS,
        |_, content| Ok(content.is_none_or(sends_delivered)),
    )
    .await?;
    Ok(users
        .into_iter()
        .zip(sends)
        .filter(|(_, sends)| !**sends)
        .map(|(user, _)| user.to_string())
        .collect())
}

fn sends_delivered(content: &str) -> bool {
    let setting = serde_json::from_str::<Value>(content)
        .ok()
        .and_then(|c| c.get("send_delivered").and_then(Value::as_bool));
    setting != Some(false)
}

/// Keeps the cache in step with new receipt settings.
pub fn settings_changed(server: &Server, user: &UserId, content: &str) {
    let sends = Arc::new(sends_delivered(content));
    server.delivered_settings.replace(user.to_owned(), sends);
}

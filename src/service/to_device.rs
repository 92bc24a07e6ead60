//! spec: client-server API, "Send-to-Device messaging". Messages wait in a
//! per-device queue at main-stream positions; a device's sync hands out up
//! to [`MAX_PER_SYNC`] of them and the device acknowledges them by syncing
//! with a token past them, only then are they deleted: each message is
//! delivered until acknowledged, and never after (also across restarts).

use std::{
    collections::{BTreeMap, HashSet},
    sync::Mutex,
};

use ruma::{
    DeviceId, UserId, api::client::to_device::send_event_to_device::v3::Messages,
    events::AnyToDeviceEvent, serde::Raw, to_device::DeviceIdOrAllDevices,
};
use serde_json::{Value, json};

use crate::{
    Error, Result, Server,
    api::AuthedUser,
    store::{events::TxnKey, to_device::Outgoing},
};

/// Messages per sync response (Synapse's figure; the spec sets none).
pub const MAX_PER_SYNC: usize = 100;

/// The devices whose last sync handed out messages: their next sync
/// acknowledges (deletes) them, so it reads the queue even when nothing new
/// was queued. Kept in memory: after a restart, delivered messages are
/// deleted by the sync that next reads the queue.
#[derive(Default)]
pub struct AwaitingAck {
    devices: Mutex<HashSet<(String, String)>>,
}

impl AwaitingAck {
    pub fn awaited(&self, user: &UserId, device: &DeviceId) -> bool {
        let key = (user.as_str().to_owned(), device.as_str().to_owned());
        self.devices.lock().expect("to-device acks").contains(&key)
    }

    fn set(&self, user: &UserId, device: &DeviceId, awaited: bool) {
        let key = (user.as_str().to_owned(), device.as_str().to_owned());
        let mut devices = self.devices.lock().expect("to-device acks");
        match awaited {
            true => devices.insert(key),
            false => devices.remove(&key),
        };
    }
}

/// Messages by recipient user and device (`*`: all the user's devices).
type ByDevice = BTreeMap<ruma::OwnedUserId, BTreeMap<DeviceIdOrAllDevices, Value>>;

/// `PUT /sendToDevice/{eventType}/{txnId}`: queues each message for the
/// named device, or all of the user's devices for `*`; messages for other
/// servers' users go to their servers as `m.direct_to_device` EDUs. A
/// retried transaction id queues nothing again.
pub async fn send(
    server: &Server,
    sender: &AuthedUser,
    event_type: &str,
    txn_id: &str,
    messages: &Messages,
) -> Result<()> {
    let mut local = ByDevice::new();
    let mut remote: BTreeMap<String, ByDevice> = BTreeMap::new();
    for (user, devices) in messages {
        let target = if user.server_name() == server.server_name() {
            &mut local
        } else {
            remote.entry(user.server_name().to_string()).or_default()
        };
        for (device, content) in devices {
            let content: Value = serde_json::from_str(content.json().get())
                .map_err(|e| Error::bad_json(e.to_string()))?;
            if !content.is_object() {
                return Err(Error::bad_json("Message content must be a JSON object"));
            }
            let by_device = target.entry(user.clone()).or_default();
            by_device.insert(device.clone(), content);
        }
    }
    let scope = format!("sendToDevice {event_type}");
    let txn = TxnKey {
        device_id: sender.device_id.as_str(),
        scope: &scope,
        txn_id,
    };
    let message_id = message_id(&txn);
    let edus: Vec<(String, String)> = remote
        .into_iter()
        .map(|(destination, messages)| {
            let content = json!({
                "sender": sender.user_id,
                "type": event_type,
                "message_id": message_id,
                "messages": messages,
            });
            (destination, content.to_string())
        })
        .collect();
    queue(server, &sender.user_id, &txn, event_type, &local, &edus).await?;
    let destinations: Vec<String> = edus.into_iter().map(|(d, _)| d).collect();
    crate::service::federation::sender::wake(server, &destinations);
    Ok(())
}

/// The federation message id of a client's to-device transaction: the
/// same request always yields the same id, so a retry is recognised there too.
fn message_id(txn: &TxnKey<'_>) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{}\n{}\n{}", txn.device_id, txn.scope, txn.txn_id));
    hex::encode(&digest[..16])
}

/// An `m.direct_to_device` EDU from another server: its messages for our
/// users' devices, queued once per `message_id`.
pub async fn receive_remote(
    server: &Server,
    sender: &UserId,
    event_type: &str,
    message_id: &str,
    messages: &ByDevice,
) -> Result<()> {
    let txn = TxnKey {
        device_id: "",
        scope: "federation m.direct_to_device",
        txn_id: message_id,
    };
    queue(server, sender, &txn, event_type, messages, &[]).await
}

/// Queues the messages for our users' devices (and `edus` for other
/// servers) under the transaction, once; wakes the recipients.
async fn queue(
    server: &Server,
    sender: &UserId,
    txn: &TxnKey<'_>,
    event_type: &str,
    local: &ByDevice,
    edus: &[(String, String)],
) -> Result<()> {
    let mut contents = Vec::new();
    let mut recipients = Vec::new();
    for (user, devices) in local {
        let known: Vec<String> = server
            .db
            .devices(user.as_str())
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        for (target, content) in devices {
            let targets = known.iter().filter(|known| match target {
                DeviceIdOrAllDevices::AllDevices => true,
                DeviceIdOrAllDevices::DeviceId(id) => known.as_str() == id.as_str(),
            });
            for device in targets {
                recipients.push((user.as_str(), device.clone(), contents.len()));
            }
            contents.push(content.to_string());
        }
    }
    let outgoing: Vec<Outgoing<'_>> = recipients
        .iter()
        .map(|(user_id, device_id, content)| Outgoing {
            user_id,
            device_id: device_id.as_str(),
            content: &contents[*content],
        })
        .collect();
    let edus: Vec<(&str, &str)> = edus.iter().map(|(d, c)| (d.as_str(), c.as_str())).collect();
    let queued = server
        .db
        .queue_to_device(sender.as_str(), txn, event_type, &outgoing, &edus)
        .await?;
    if queued {
        let users: BTreeMap<&str, ()> = recipients.iter().map(|(u, _, _)| (*u, ())).collect();
        server.notifier.notify_users(users.into_keys());
    }
    Ok(())
}

/// A device's sync: deletes the messages it has acknowledged (those up to
/// `acknowledged`) and returns up to `limit` messages in `(acknowledged,
/// upto]`, with the position of the last one.
pub async fn receive(
    server: &Server,
    user: &UserId,
    device: &DeviceId,
    acknowledged: i64,
    upto: i64,
    limit: usize,
) -> Result<(Vec<Raw<AnyToDeviceEvent>>, Option<i64>)> {
    let (user_id, device_id) = (user.as_str(), device.as_str());
    let (has_acknowledged, rows) = server
        .db
        .to_device_inbox(user_id, device_id, acknowledged, upto, limit)
        .await?;
    if has_acknowledged {
        server
            .db
            .delete_to_device_messages(user_id, device_id, acknowledged)
            .await?;
    }
    server.to_device_acks.set(user, device, !rows.is_empty());
    let last = rows.last().map(|r| r.stream_ordering);
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let content: Value = serde_json::from_str(&row.content).map_err(Error::internal)?;
        let event = json!({ "type": row.event_type, "sender": row.sender, "content": content });
        events.push(Raw::from_json(
            serde_json::value::to_raw_value(&event).map_err(Error::internal)?,
        ));
    }
    Ok((events, last))
}

//! EDUs: spec server-server API, "EDUs", "Typing Notifications",
//! "Presence", "Receipts", "Device Management", "End-to-End Encryption",
//! "Send-to-device messaging".
//!
//! Received: each EDU is about users of the server that sent it, and is
//! applied only for those (a server speaks for its own users only) and only
//! in rooms they are joined to. Sent: typing and presence in memory (stale
//! a moment later anyway), receipts and device changes through the outbox.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ruma::{
    OwnedUserId, RoomId, ServerName, UserId,
    api::federation::transactions::edu::{
        DeviceListUpdateContent, DirectDeviceContent, Edu, PresenceContent, ReceiptContent,
        SigningKeyUpdateContent, TypingContent,
    },
    serde::Raw,
    to_device::DeviceIdOrAllDevices,
};
use serde_json::{Value, json};

use super::sender;
use crate::{
    Result, Server,
    service::{presence, receipts, to_device},
    store::{federation::Outgoing, receipts::NewReceipt},
};

/// How long a remote user's typing lasts without a refresh (Synapse's figure).
const REMOTE_TYPING: Duration = Duration::from_secs(30);

/// Applies a transaction's EDUs; a malformed one, or one about another
/// server's users, is skipped.
pub async fn receive(server: &Arc<Server>, origin: &ServerName, edus: Vec<Raw<Edu>>) {
    for raw in edus {
        let result = match raw.deserialize() {
            Ok(edu) => apply(server, origin, edu).await,
            Err(e) => {
                tracing::info!(%origin, error = %e, "malformed EDU skipped");
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!(%origin, error = %e.message, "applying an EDU failed");
        }
    }
}

async fn apply(server: &Arc<Server>, origin: &ServerName, edu: Edu) -> Result<()> {
    match edu {
        Edu::Typing(typing) => receive_typing(server, origin, typing).await,
        Edu::Receipt(receipt) => receive_receipts(server, origin, receipt).await,
        Edu::Presence(presence) => receive_presence(server, origin, presence).await,
        Edu::DeviceListUpdate(update) => receive_device_list_update(server, origin, update).await,
        Edu::SigningKeyUpdate(update) => receive_signing_key_update(server, origin, update).await,
        Edu::DirectToDevice(message) => receive_to_device(server, origin, message).await,
        _ => Ok(()),
    }
}

/// Whether `user` belongs to `origin` and is joined to the room.
async fn speaks_for(
    server: &Server,
    origin: &ServerName,
    user: &UserId,
    room: &RoomId,
) -> Result<bool> {
    if user.server_name() != origin {
        return Ok(false);
    }
    Ok(server
        .db
        .membership(room.as_str(), user.as_str())
        .await?
        .is_some_and(|(m, _)| m == "join"))
}

async fn receive_typing(server: &Server, origin: &ServerName, typing: TypingContent) -> Result<()> {
    if !speaks_for(server, origin, &typing.user_id, &typing.room_id).await? {
        return Ok(());
    }
    let timeout = typing.typing.then_some(REMOTE_TYPING);
    crate::service::typing::set_remote(server, &typing.room_id, &typing.user_id, timeout).await
}

async fn receive_receipts(
    server: &Server,
    origin: &ServerName,
    content: ReceiptContent,
) -> Result<()> {
    for (room_id, map) in content.receipts {
        let mut stored = Vec::new();
        for (user_id, data) in map.read {
            if !speaks_for(server, origin, &user_id, &room_id).await? {
                continue;
            }
            let ids: Vec<String> = data.event_ids.iter().map(|e| e.to_string()).collect();
            let Some(event) = server
                .db
                .events(&ids)
                .await?
                .into_iter()
                .filter(|e| e.room_id == room_id.as_str())
                .max_by_key(|e| e.stream_ordering)
            else {
                continue;
            };
            let thread_id = match &data.data.thread {
                ruma::events::receipt::ReceiptThread::Unthreaded => String::new(),
                thread => thread.as_str().map(str::to_owned).unwrap_or_default(),
            };
            let ts = data
                .data
                .ts
                .map_or_else(crate::now_ms, |ts| i64::from(ts.get()));
            stored.push(NewReceipt {
                room_id: room_id.to_string(),
                receipt_type: receipts::READ.to_owned(),
                user_id: user_id.to_string(),
                thread_id,
                event_id: event.event_id,
                event_stream_ordering: event.stream_ordering,
                ts,
            });
        }
        if !server.db.put_receipts(&stored).await?.is_empty() {
            let members = server.db.room_member_ids(room_id.as_str(), "join").await?;
            server
                .notifier
                .notify_users(members.iter().map(String::as_str));
        }
    }
    Ok(())
}

async fn receive_presence(
    server: &Server,
    origin: &ServerName,
    content: PresenceContent,
) -> Result<()> {
    for update in content.push {
        if update.user_id.server_name() != origin {
            continue;
        }
        presence::set_remote(
            server,
            &update.user_id,
            &update.presence,
            update.status_msg.clone(),
            u64::from(update.last_active_ago) as i64,
            update.currently_active,
        )
        .await?;
    }
    Ok(())
}

async fn receive_device_list_update(
    server: &Server,
    origin: &ServerName,
    update: DeviceListUpdateContent,
) -> Result<()> {
    if update.user_id.server_name() != origin {
        return Ok(());
    }
    let deleted = update.deleted.unwrap_or(false);
    server
        .db
        .record_remote_device_change(update.user_id.as_str(), update.device_id.as_str(), deleted)
        .await?;
    crate::service::e2ee::device_lists::wake_trackers(server, &update.user_id).await
}

async fn receive_signing_key_update(
    server: &Server,
    origin: &ServerName,
    update: SigningKeyUpdateContent,
) -> Result<()> {
    if update.user_id.server_name() != origin {
        return Ok(());
    }
    // The keys themselves are asked of the user's server when a client
    // queries them; what matters here is that trackers hear of the change.
    server
        .db
        .record_remote_device_change(update.user_id.as_str(), "", false)
        .await?;
    crate::service::e2ee::device_lists::wake_trackers(server, &update.user_id).await
}

async fn receive_to_device(
    server: &Server,
    origin: &ServerName,
    message: DirectDeviceContent,
) -> Result<()> {
    if message.sender.server_name() != origin {
        return Ok(());
    }
    let mut local: BTreeMap<OwnedUserId, BTreeMap<DeviceIdOrAllDevices, Value>> = BTreeMap::new();
    for (user, devices) in message.messages {
        if user.server_name() != server.server_name() {
            continue;
        }
        for (device, content) in devices {
            let content: Value = serde_json::from_str(content.json().get())?;
            if content.is_object() {
                local
                    .entry(user.clone())
                    .or_default()
                    .insert(device, content);
            }
        }
    }
    to_device::receive_remote(
        server,
        &message.sender,
        message.ev_type.to_string().as_str(),
        message.message_id.as_str(),
        &local,
    )
    .await
}

// ---- sending -----------------------------------------------------------

/// The other servers in a room.
async fn room_destinations(server: &Server, room_id: &RoomId) -> Result<Vec<String>> {
    let mut servers = server.db.room_servers(room_id.as_str()).await?;
    servers.retain(|s| s != server.server_name().as_str());
    Ok(servers)
}

/// A local user started or stopped typing.
pub async fn send_typing(
    server: &Server,
    room_id: &RoomId,
    user: &UserId,
    typing: bool,
) -> Result<()> {
    let edu = json!({
        "edu_type": "m.typing",
        "content": { "room_id": room_id, "user_id": user, "typing": typing },
    });
    for destination in room_destinations(server, room_id).await? {
        sender::send_ephemeral(server, &destination, edu.clone());
    }
    Ok(())
}

/// A local user's public read receipt moved.
pub async fn send_receipt(server: &Server, receipt: &NewReceipt) -> Result<()> {
    let room_id = RoomId::parse(&receipt.room_id).map_err(crate::Error::internal)?;
    let destinations = room_destinations(server, &room_id).await?;
    if destinations.is_empty() {
        return Ok(());
    }
    let mut data = json!({ "ts": receipt.ts });
    if !receipt.thread_id.is_empty() {
        data["thread_id"] = json!(receipt.thread_id);
    }
    let content = json!({
        receipt.room_id.clone(): { receipts::READ: { receipt.user_id.clone(): {
            "data": data,
            "event_ids": [receipt.event_id],
        }}}
    })
    .to_string();
    queue_edu(server, &destinations, "m.receipt", &content).await
}

/// A local user's presence changed as others see it.
pub async fn send_presence(server: &Server, user: &str, record: &presence::Record) -> Result<()> {
    let destinations = sharing_destinations(server, user).await?;
    if destinations.is_empty() {
        return Ok(());
    }
    let mut update = json!({
        "user_id": user,
        "presence": record.state,
        "currently_active": record.currently_active,
        "last_active_ago": (crate::now_ms() - record.last_active_ts).max(0),
    });
    if let Some(msg) = &record.status_msg {
        update["status_msg"] = json!(msg);
    }
    let edu = json!({ "edu_type": "m.presence", "content": { "push": [update] } });
    for destination in destinations {
        sender::send_ephemeral(server, &destination, edu.clone());
    }
    Ok(())
}

/// A local user's devices or cross-signing keys changed: the latest device
/// change and the current cross-signing keys go to every server sharing a
/// room with them (which then asks us for the keys).
pub async fn send_device_changes(server: &Server, user: &UserId) -> Result<()> {
    let destinations = sharing_destinations(server, user.as_str()).await?;
    if destinations.is_empty() {
        return Ok(());
    }
    if let Some((device_id, deleted, position)) =
        server.db.latest_device_change(user.as_str()).await?
    {
        let mut content = json!({
            "user_id": user,
            "device_id": device_id,
            "stream_id": position,
            "prev_id": [],
        });
        if deleted {
            content["deleted"] = json!(true);
        }
        queue_edu(
            server,
            &destinations,
            "m.device_list_update",
            &content.to_string(),
        )
        .await?;
    }
    let keys = server.db.cross_signing_keys(user.as_str()).await?;
    let mut content = json!({ "user_id": user });
    for (kind, key) in keys {
        let field = match kind.as_str() {
            "master" => "master_key",
            "self_signing" => "self_signing_key",
            _ => continue,
        };
        content[field] = serde_json::from_str(&key)?;
    }
    if content.as_object().is_some_and(|c| c.len() > 1) {
        queue_edu(
            server,
            &destinations,
            "m.signing_key_update",
            &content.to_string(),
        )
        .await?;
    }
    Ok(())
}

/// Servers (not us) with a member in a room `user` is joined to.
async fn sharing_destinations(server: &Server, user: &str) -> Result<Vec<String>> {
    let mut servers = server.db.servers_sharing_rooms_with(user).await?;
    servers.retain(|s| s != server.server_name().as_str());
    Ok(servers)
}

async fn queue_edu(
    server: &Server,
    destinations: &[String],
    edu_type: &str,
    content: &str,
) -> Result<()> {
    let items: Vec<(&str, Outgoing<'_>)> = destinations
        .iter()
        .map(|d| (d.as_str(), Outgoing::Edu { edu_type, content }))
        .collect();
    server.db.outbox_push(&items).await?;
    sender::wake(server, destinations);
    Ok(())
}

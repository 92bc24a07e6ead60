//! spec: "Server-side key backups". The server keeps encrypted Megolm
//! sessions per backup version; it cannot read them, but it can tell which
//! of two copies of a session is better from their clear-text metadata.

use std::collections::BTreeMap;

use http::StatusCode;
use ruma::{
    OwnedRoomId, UInt, UserId,
    api::client::backup::{BackupAlgorithm, KeyBackupData, RoomKeyBackup},
    serde::Raw,
};
use serde_json::{Value, json};

use crate::{
    Error, Result, Server,
    store::backup::{BackupRow, KeyScope, NotCurrent, RoomKeyRow},
};

/// A backup version as `GET /room_keys/version` shows it.
pub struct BackupInfo {
    pub algorithm: Raw<BackupAlgorithm>,
    pub count: UInt,
    pub etag: String,
    pub version: String,
}

/// `(etag, count)` after a write to a backup's keys.
pub struct Written {
    pub etag: String,
    pub count: UInt,
}

pub async fn create(
    server: &Server,
    user: &UserId,
    algorithm: &Raw<BackupAlgorithm>,
) -> Result<String> {
    let (name, auth_data) = algorithm_parts(algorithm)?;
    let version = server
        .db
        .create_backup(user.as_str(), &name, &auth_data)
        .await?;
    Ok(version.to_string())
}

/// A version's info; `None` asks for the latest.
pub async fn info(server: &Server, user: &UserId, version: Option<&str>) -> Result<BackupInfo> {
    let version = version.map(parse_version).transpose()?;
    let (row, count) = server
        .db
        .backup(user.as_str(), version)
        .await?
        .ok_or_else(|| Error::not_found("No backup found"))?;
    let BackupRow {
        version,
        algorithm,
        auth_data,
        etag,
    } = row;
    let auth_data: Value = serde_json::from_str(&auth_data).map_err(Error::internal)?;
    let algorithm = json!({ "algorithm": algorithm, "auth_data": auth_data });
    Ok(BackupInfo {
        algorithm: Raw::from_json(
            serde_json::value::to_raw_value(&algorithm).map_err(Error::internal)?,
        ),
        count: to_uint(count),
        etag: etag.to_string(),
        version: version.to_string(),
    })
}

/// spec: only `auth_data` may change; the algorithm must stay the same.
pub async fn update(
    server: &Server,
    user: &UserId,
    version: &str,
    algorithm: &Raw<BackupAlgorithm>,
) -> Result<()> {
    let number = parse_version(version)?;
    let (name, auth_data) = algorithm_parts(algorithm)?;
    if let Some(body_version) = serde_json::from_str::<Value>(algorithm.json().get())
        .ok()
        .and_then(|v| v.get("version").and_then(Value::as_str).map(str::to_owned))
        && body_version != version
    {
        return Err(Error::invalid_param(
            "The version in the body does not match the path",
        ));
    }
    let (current, _) = server
        .db
        .backup(user.as_str(), Some(number))
        .await?
        .ok_or_else(|| Error::not_found("No such backup version"))?;
    if current.algorithm != name {
        return Err(Error::invalid_param("A backup's algorithm cannot change"));
    }
    if !server
        .db
        .update_backup(user.as_str(), number, &auth_data)
        .await?
    {
        return Err(Error::not_found("No such backup version"));
    }
    Ok(())
}

pub async fn delete(server: &Server, user: &UserId, version: &str) -> Result<()> {
    if !server
        .db
        .delete_backup(user.as_str(), parse_version(version)?)
        .await?
    {
        return Err(Error::not_found("No such backup version"));
    }
    Ok(())
}

/// Stores sessions, keeping for each the better of the new and the stored copy.
pub async fn put_keys(
    server: &Server,
    user: &UserId,
    version: &str,
    rooms: BTreeMap<OwnedRoomId, RoomKeyBackup>,
) -> Result<Written> {
    let mut rows = Vec::new();
    for (room_id, backup) in rooms {
        for (session_id, data) in backup.sessions {
            rows.push(key_row(room_id.as_str(), session_id, &data)?);
        }
    }
    let written = server
        .db
        .put_room_keys(user.as_str(), parse_version(version)?, &rows, better)
        .await?;
    to_written(written)
}

pub async fn get_keys(
    server: &Server,
    user: &UserId,
    version: &str,
    scope: KeyScope<'_>,
) -> Result<BTreeMap<OwnedRoomId, RoomKeyBackup>> {
    let number = parse_version(version)?;
    if server
        .db
        .backup(user.as_str(), Some(number))
        .await?
        .is_none()
    {
        return Err(Error::not_found("No such backup version"));
    }
    let mut rooms: BTreeMap<OwnedRoomId, RoomKeyBackup> = BTreeMap::new();
    for row in server.db.room_keys(user.as_str(), number, scope).await? {
        let Ok(room_id) = OwnedRoomId::try_from(row.room_id.as_str()) else {
            continue;
        };
        let session_id = row.session_id.clone();
        rooms
            .entry(room_id)
            .or_insert_with(|| RoomKeyBackup::new(BTreeMap::new()))
            .sessions
            .insert(session_id, key_data(row)?);
    }
    Ok(rooms)
}

pub async fn delete_keys(
    server: &Server,
    user: &UserId,
    version: &str,
    scope: KeyScope<'_>,
) -> Result<Written> {
    let written = server
        .db
        .delete_room_keys(user.as_str(), parse_version(version)?, scope)
        .await?;
    to_written(written)
}

/// spec: a session replaces the stored one if it is verified and the stored
/// one is not; else if its first known message index is lower; else if it
/// was forwarded fewer times.
fn better(new: &RoomKeyRow, old: &RoomKeyRow) -> bool {
    (
        new.is_verified,
        -new.first_message_index,
        -new.forwarded_count,
    ) > (
        old.is_verified,
        -old.first_message_index,
        -old.forwarded_count,
    )
}

/// A session as uploaded. Only the clear-text metadata is read; the
/// `session_data` is the algorithm's business and is kept as sent.
fn key_row(room_id: &str, session_id: String, data: &Raw<KeyBackupData>) -> Result<RoomKeyRow> {
    let invalid = |what: &str| Error::bad_json(format!("Invalid key backup data: {what}"));
    let value: Value =
        serde_json::from_str(data.json().get()).map_err(|e| invalid(&e.to_string()))?;
    let count = |field: &str| {
        value
            .get(field)
            .and_then(Value::as_u64)
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| invalid(&format!("{field} must be a non-negative integer")))
    };
    let is_verified = value
        .get("is_verified")
        .and_then(Value::as_bool)
        .ok_or_else(|| invalid("is_verified must be a boolean"))?;
    let session_data = value
        .get("session_data")
        .filter(|d| d.is_object())
        .ok_or_else(|| invalid("session_data must be a JSON object"))?;
    Ok(RoomKeyRow {
        room_id: room_id.to_owned(),
        session_id,
        first_message_index: count("first_message_index")?,
        forwarded_count: count("forwarded_count")?,
        is_verified: i64::from(is_verified),
        session_data: session_data.to_string(),
    })
}

fn key_data(row: RoomKeyRow) -> Result<Raw<KeyBackupData>> {
    let session_data: Value = serde_json::from_str(&row.session_data).map_err(Error::internal)?;
    let data = json!({
        "first_message_index": row.first_message_index,
        "forwarded_count": row.forwarded_count,
        "is_verified": row.is_verified != 0,
        "session_data": session_data,
    });
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(&data).map_err(Error::internal)?,
    ))
}

/// The algorithm's name and its `auth_data` as JSON text.
fn algorithm_parts(algorithm: &Raw<BackupAlgorithm>) -> Result<(String, String)> {
    let value: Value =
        serde_json::from_str(algorithm.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    let name = value
        .get("algorithm")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_json("Missing algorithm"))?;
    let auth_data = value
        .get("auth_data")
        .filter(|a| a.is_object())
        .ok_or_else(|| Error::bad_json("auth_data must be a JSON object"))?;
    Ok((name.to_owned(), auth_data.to_string()))
}

/// Versions are the decimal numbers this server hands out; anything else
/// names no backup.
fn parse_version(version: &str) -> Result<i64> {
    version
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0 && v.to_string() == version)
        .ok_or_else(|| Error::not_found("No such backup version"))
}

fn to_written(written: std::result::Result<(i64, i64), NotCurrent>) -> Result<Written> {
    match written {
        Ok((etag, count)) => Ok(Written {
            etag: etag.to_string(),
            count: to_uint(count),
        }),
        Err(NotCurrent::Unknown) => Err(Error::not_found("Unknown backup version")),
        Err(NotCurrent::WrongVersion(current)) => Err(Error::new(
            StatusCode::FORBIDDEN,
            "M_WRONG_ROOM_KEYS_VERSION",
            "This is not the current backup version",
        )
        .with("current_version", json!(current.to_string()))),
    }
}

fn to_uint(n: i64) -> UInt {
    UInt::try_from(n).unwrap_or_default()
}

//! spec: "Server-side key backups".

use std::{collections::BTreeMap, sync::Arc};

use ruma::api::client::backup::{
    RoomKeyBackup, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
    create_backup_version, delete_backup_keys, delete_backup_keys_for_room,
    delete_backup_keys_for_session, delete_backup_version, get_backup_info, get_backup_keys,
    get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
    update_backup_version,
};

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::e2ee::backup,
    store::backup::KeyScope,
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(create_version)
        .ruma(latest_version)
        .ruma(version)
        .ruma(update_version)
        .ruma(delete_version)
        .ruma(put_keys)
        .ruma(put_room_keys)
        .ruma(put_session_key)
        .ruma(get_keys)
        .ruma(get_room_keys)
        .ruma(get_session_key)
        .ruma(delete_keys)
        .ruma(delete_room_keys)
        .ruma(delete_session_key)
}

async fn create_version(
    server: Arc<Server>,
    req: Ruma<create_backup_version::v3::Request>,
) -> Result<create_backup_version::v3::Response> {
    let version = backup::create(&server, &req.user().user_id, &req.body.algorithm).await?;
    Ok(create_backup_version::v3::Response::new(version))
}

async fn latest_version(
    server: Arc<Server>,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<get_latest_backup_info::v3::Response> {
    let info = backup::info(&server, &req.user().user_id, None).await?;
    Ok(get_latest_backup_info::v3::Response::new(
        info.algorithm,
        info.count,
        info.etag,
        info.version,
    ))
}

async fn version(
    server: Arc<Server>,
    req: Ruma<get_backup_info::v3::Request>,
) -> Result<get_backup_info::v3::Response> {
    let info = backup::info(&server, &req.user().user_id, Some(&req.body.version)).await?;
    Ok(get_backup_info::v3::Response::new(
        info.algorithm,
        info.count,
        info.etag,
        info.version,
    ))
}

async fn update_version(
    server: Arc<Server>,
    req: Ruma<update_backup_version::v3::Request>,
) -> Result<update_backup_version::v3::Response> {
    let b = &req.body;
    backup::update(&server, &req.user().user_id, &b.version, &b.algorithm).await?;
    Ok(update_backup_version::v3::Response::new())
}

async fn delete_version(
    server: Arc<Server>,
    req: Ruma<delete_backup_version::v3::Request>,
) -> Result<delete_backup_version::v3::Response> {
    backup::delete(&server, &req.user().user_id, &req.body.version).await?;
    Ok(delete_backup_version::v3::Response::new())
}

async fn put_keys(
    server: Arc<Server>,
    req: Ruma<add_backup_keys::v3::Request>,
) -> Result<add_backup_keys::v3::Response> {
    let user = req.user().user_id.clone();
    let b = req.body;
    let written = backup::put_keys(&server, &user, &b.version, b.rooms).await?;
    Ok(add_backup_keys::v3::Response::new(
        written.etag,
        written.count,
    ))
}

async fn put_room_keys(
    server: Arc<Server>,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<add_backup_keys_for_room::v3::Response> {
    let user = req.user().user_id.clone();
    let b = req.body;
    let rooms = BTreeMap::from([(b.room_id, RoomKeyBackup::new(b.sessions))]);
    let written = backup::put_keys(&server, &user, &b.version, rooms).await?;
    Ok(add_backup_keys_for_room::v3::Response::new(
        written.etag,
        written.count,
    ))
}

async fn put_session_key(
    server: Arc<Server>,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<add_backup_keys_for_session::v3::Response> {
    let user = req.user().user_id.clone();
    let b = req.body;
    let sessions = BTreeMap::from([(b.session_id, b.session_data)]);
    let rooms = BTreeMap::from([(b.room_id, RoomKeyBackup::new(sessions))]);
    let written = backup::put_keys(&server, &user, &b.version, rooms).await?;
    Ok(add_backup_keys_for_session::v3::Response::new(
        written.etag,
        written.count,
    ))
}

async fn get_keys(
    server: Arc<Server>,
    req: Ruma<get_backup_keys::v3::Request>,
) -> Result<get_backup_keys::v3::Response> {
    let rooms = backup::get_keys(
        &server,
        &req.user().user_id,
        &req.body.version,
        KeyScope::All,
    )
    .await?;
    Ok(get_backup_keys::v3::Response::new(rooms))
}

async fn get_room_keys(
    server: Arc<Server>,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<get_backup_keys_for_room::v3::Response> {
    let b = &req.body;
    let scope = KeyScope::Room(b.room_id.as_str());
    let mut rooms = backup::get_keys(&server, &req.user().user_id, &b.version, scope).await?;
    let sessions = rooms
        .remove(&b.room_id)
        .map(|room| room.sessions)
        .unwrap_or_default();
    Ok(get_backup_keys_for_room::v3::Response::new(sessions))
}

async fn get_session_key(
    server: Arc<Server>,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<get_backup_keys_for_session::v3::Response> {
    let b = &req.body;
    let scope = KeyScope::Session(b.room_id.as_str(), &b.session_id);
    let mut rooms = backup::get_keys(&server, &req.user().user_id, &b.version, scope).await?;
    let key = rooms
        .remove(&b.room_id)
        .and_then(|mut room| room.sessions.remove(&b.session_id))
        .ok_or_else(|| Error::not_found("Key not found"))?;
    Ok(get_backup_keys_for_session::v3::Response::new(key))
}

async fn delete_keys(
    server: Arc<Server>,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> Result<delete_backup_keys::v3::Response> {
    let written = backup::delete_keys(
        &server,
        &req.user().user_id,
        &req.body.version,
        KeyScope::All,
    )
    .await?;
    Ok(delete_backup_keys::v3::Response::new(
        written.etag,
        written.count,
    ))
}

async fn delete_room_keys(
    server: Arc<Server>,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<delete_backup_keys_for_room::v3::Response> {
    let b = &req.body;
    let scope = KeyScope::Room(b.room_id.as_str());
    let written = backup::delete_keys(&server, &req.user().user_id, &b.version, scope).await?;
    Ok(delete_backup_keys_for_room::v3::Response::new(
        written.etag,
        written.count,
    ))
}

async fn delete_session_key(
    server: Arc<Server>,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<delete_backup_keys_for_session::v3::Response> {
    let b = &req.body;
    let scope = KeyScope::Session(b.room_id.as_str(), &b.session_id);
    let written = backup::delete_keys(&server, &req.user().user_id, &b.version, scope).await?;
    Ok(delete_backup_keys_for_session::v3::Response::new(
        written.etag,
        written.count,
    ))
}

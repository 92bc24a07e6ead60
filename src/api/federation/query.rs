//! spec: server-server API, "Querying for information": our room aliases
//! and our users' profiles, for other servers.

use std::sync::Arc;

use ruma::{
    api::federation::query::{get_profile_information, get_room_information},
    profile::ProfileFieldName,
};

use crate::{
    Error, Result, Server,
    api::{Routes, Ruma},
    service::{directory, profile},
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(directory).ruma(profile)
}

async fn directory(
    server: Arc<Server>,
    req: Ruma<get_room_information::v1::Request>,
) -> Result<get_room_information::v1::Response> {
    let alias = &req.body.room_alias;
    if alias.server_name() != server.server_name() {
        return Err(Error::not_found("Room alias not found"));
    }
    let room_id = directory::local_alias(&server, alias).await?;
    let mut servers = vec![server.server_name().to_owned()];
    for name in server.db.room_servers(room_id.as_str()).await? {
        if let Ok(name) = ruma::OwnedServerName::try_from(name)
            && !servers.contains(&name)
        {
            servers.push(name);
        }
    }
    Ok(get_room_information::v1::Response::new(room_id, servers))
}

async fn profile(
    server: Arc<Server>,
    req: Ruma<get_profile_information::v1::Request>,
) -> Result<get_profile_information::v1::Response> {
    let user = &req.body.user_id;
    // Never relay: a query about a third server's user is not ours to answer.
    if user.server_name() != server.server_name() {
        return Err(Error::not_found("Profile not found"));
    }
    let p = profile::get(&server, user).await?;
    let wanted = |field: ProfileFieldName| req.body.field.as_ref().is_none_or(|f| *f == field);
    let mut response = get_profile_information::v1::Response::new();
    if let Some(name) = p
        .displayname
        .filter(|_| wanted(ProfileFieldName::DisplayName))
    {
        response.set("displayname".to_owned(), name.into());
    }
    if let Some(url) = p.avatar_url.filter(|_| wanted(ProfileFieldName::AvatarUrl)) {
        response.set("avatar_url".to_owned(), url.into());
    }
    Ok(response)
}

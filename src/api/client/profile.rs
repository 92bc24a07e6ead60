//! spec: "Profiles".

use std::sync::Arc;

use ruma::{
    OwnedMxcUri, UserId,
    api::client::profile::{
        ProfileFieldValue, get_avatar_url, get_display_name, get_profile, set_avatar_url,
        set_display_name,
    },
};

use crate::{
    Error, Result, Server,
    api::{AuthedUser, Routes, Ruma},
    service::profile,
    store::accounts::ProfileField,
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(get_all)
        .ruma(get_name)
        .ruma(set_name)
        .ruma(get_avatar)
        .ruma(set_avatar)
}

async fn get_all(
    server: Arc<Server>,
    req: Ruma<get_profile::v3::Request>,
) -> Result<get_profile::v3::Response> {
    let p = profile::get(&server, &req.body.user_id).await?;
    let mut fields = Vec::new();
    if let Some(name) = p.displayname {
        fields.push(ProfileFieldValue::DisplayName(name));
    }
    if let Some(url) = p.avatar_url {
        fields.push(ProfileFieldValue::AvatarUrl(OwnedMxcUri::from(url)));
    }
    Ok(fields.into_iter().collect())
}

async fn get_name(
    server: Arc<Server>,
    req: Ruma<get_display_name::v3::Request>,
) -> Result<get_display_name::v3::Response> {
    let p = profile::get(&server, &req.body.user_id).await?;
    Ok(get_display_name::v3::Response::new(p.displayname))
}

async fn get_avatar(
    server: Arc<Server>,
    req: Ruma<get_avatar_url::v3::Request>,
) -> Result<get_avatar_url::v3::Response> {
    let p = profile::get(&server, &req.body.user_id).await?;
    Ok(get_avatar_url::v3::Response::new(
        p.avatar_url.map(OwnedMxcUri::from),
    ))
}

fn own_profile(user: &AuthedUser, target: &UserId) -> Result<()> {
    if user.user_id != target {
        return Err(Error::forbidden("You may only change your own profile"));
    }
    Ok(())
}

async fn set_name(
    server: Arc<Server>,
    req: Ruma<set_display_name::v3::Request>,
) -> Result<set_display_name::v3::Response> {
    own_profile(req.user(), &req.body.user_id)?;
    let name = req.body.displayname.as_deref().filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.len() > 256) {
        return Err(Error::invalid_param(
            "Display name is longer than 256 bytes",
        ));
    }
    profile::set(&server, &req.body.user_id, ProfileField::Displayname, name).await?;
    Ok(set_display_name::v3::Response::new())
}

async fn set_avatar(
    server: Arc<Server>,
    req: Ruma<set_avatar_url::v3::Request>,
) -> Result<set_avatar_url::v3::Response> {
    own_profile(req.user(), &req.body.user_id)?;
    let url = req
        .body
        .avatar_url
        .as_ref()
        .map(|u| u.as_str())
        .filter(|u| !u.is_empty());
    if let Some(u) = url
        && !u.starts_with("mxc://")
    {
        return Err(Error::invalid_param("avatar_url must be an mxc:// URI"));
    }
    profile::set(&server, &req.body.user_id, ProfileField::AvatarUrl, url).await?;
    Ok(set_avatar_url::v3::Response::new())
}

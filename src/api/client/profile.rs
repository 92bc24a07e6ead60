//! spec: "Profiles".

use std::sync::Arc;

use ruma::{
    OwnedMxcUri, UserId,
    api::client::profile::{
        ProfileFieldName, ProfileFieldValue, delete_profile_field, get_profile, get_profile_field,
        set_profile_field,
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
        .ruma(get_field)
        .ruma(set_field)
        .ruma(delete_field)
}

/// `DELETE /profile/{userId}/{keyName}` (Matrix 1.16): clears a field.
async fn delete_field(
    server: Arc<Server>,
    req: Ruma<delete_profile_field::v3::Request>,
) -> Result<delete_profile_field::v3::Response> {
    own_profile(req.user(), &req.body.user_id)?;
    let field = known_field(&req.body.field)?;
    profile::set(&server, &req.body.user_id, field, None).await?;
    Ok(delete_profile_field::v3::Response::new())
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

fn own_profile(user: &AuthedUser, target: &UserId) -> Result<()> {
    if user.user_id != target {
        return Err(Error::forbidden("You may only change your own profile"));
    }
    Ok(())
}

/// The field of ours a spec key names: `displayname` or `avatar_url`.
fn known_field(name: &ProfileFieldName) -> Result<ProfileField> {
    match name {
        ProfileFieldName::DisplayName => Ok(ProfileField::Displayname),
        ProfileFieldName::AvatarUrl => Ok(ProfileField::AvatarUrl),
        other => Err(Error::invalid_param(format!(
            "Custom profile fields are not supported: {other}"
        ))),
    }
}

async fn get_field(
    server: Arc<Server>,
    req: Ruma<get_profile_field::v3::Request>,
) -> Result<get_profile_field::v3::Response> {
    let p = profile::get(&server, &req.body.user_id).await?;
    let value = match known_field(&req.body.field)? {
        ProfileField::Displayname => p.displayname.map(ProfileFieldValue::DisplayName),
        ProfileField::AvatarUrl => p
            .avatar_url
            .map(|u| ProfileFieldValue::AvatarUrl(OwnedMxcUri::from(u))),
    };
    let value = value.ok_or_else(|| Error::not_found("The user has not set this field"))?;
    Ok(get_profile_field::v3::Response::new(value))
}

async fn set_field(
    server: Arc<Server>,
    req: Ruma<set_profile_field::v3::Request>,
) -> Result<set_profile_field::v3::Response> {
    own_profile(req.user(), &req.body.user_id)?;
    let (field, value) = match &req.body.value {
        ProfileFieldValue::DisplayName(name) => (ProfileField::Displayname, name.as_str()),
        ProfileFieldValue::AvatarUrl(url) => (ProfileField::AvatarUrl, url.as_str()),
        other => {
            return Err(Error::invalid_param(format!(
                "Custom profile fields are not supported: {}",
                other.field_name()
            )));
        }
    };
    let value = Some(value).filter(|v| !v.is_empty());
    match field {
        ProfileField::Displayname if value.is_some_and(|n| n.len() > 256) => {
            return Err(Error::invalid_param(
                "Display name is longer than 256 bytes",
            ));
        }
        ProfileField::AvatarUrl if value.is_some_and(|u| !u.starts_with("mxc://")) => {
            return Err(Error::invalid_param("avatar_url must be an mxc:// URI"));
        }
        _ => {}
    }
    profile::set(&server, &req.body.user_id, field, value).await?;
    Ok(set_profile_field::v3::Response::new())
}

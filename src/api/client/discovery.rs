//! spec: "Server discovery", "API standards" (`/versions`), "Capabilities negotiation".

use std::{collections::BTreeMap, sync::Arc};

#[allow(deprecated)] // the capability types of Matrix < 1.16, see `capabilities`
use ruma::api::client::discovery::{
    discover_homeserver::{self, HomeserverInfo},
    get_capabilities::{
        self,
        v3::{
            Capabilities, ChangePasswordCapability, GetLoginTokenCapability, RoomVersionStability,
            RoomVersionsCapability, SetAvatarUrlCapability, SetDisplayNameCapability,
            ThirdPartyIdChangesCapability,
        },
    },
    get_supported_versions,
};

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::rooms::create::{DEFAULT_ROOM_VERSION, SUPPORTED_ROOM_VERSIONS},
};

/// The spec versions whose required endpoints (the client-server API's core,
/// outside the optional modules) this server serves: exactly those
/// `spec/coverage.md` shows advertised, which `tests/spec_coverage.rs` checks.
pub const SPEC_VERSIONS: [&str; 22] = [
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18",
    "v1.19",
];

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(versions)
        .ruma(well_known)
        .ruma(server_well_known)
        .ruma(capabilities)
}

async fn versions(
    _: Arc<Server>,
    _: Ruma<get_supported_versions::Request>,
) -> Result<get_supported_versions::Response> {
    let mut response = get_supported_versions::Response::new(
        SPEC_VERSIONS.iter().map(|v| v.to_string()).collect(),
    );
    response.unstable_features = BTreeMap::new();
    Ok(response)
}

/// spec: server-server API, "Server discovery": where other servers reach
/// this one, when it delegates (`federation.well_known_server`); served
/// beside the client well-known, on the listener the server name points at.
async fn server_well_known(
    server: Arc<Server>,
    _: Ruma<ruma::api::federation::discovery::discover_homeserver::Request>,
) -> Result<ruma::api::federation::discovery::discover_homeserver::Response> {
    let delegate = server
        .config
        .federation
        .well_known_server
        .clone()
        .ok_or_else(|| crate::Error::not_found("This server does not delegate federation"))?;
    Ok(ruma::api::federation::discovery::discover_homeserver::Response::new(delegate))
}

async fn well_known(
    server: Arc<Server>,
    _: Ruma<discover_homeserver::Request>,
) -> Result<discover_homeserver::Response> {
    let base = server
        .config
        .public_baseurl
        .clone()
        .unwrap_or_else(|| format!("http://{}", server.config.listen.client));
    Ok(discover_homeserver::Response::new(HomeserverInfo::new(
        base,
    )))
}

// `m.set_displayname` and `m.set_avatar_url` are deprecated since Matrix 1.16
// but are what clients older than that read.
#[allow(deprecated)]
async fn capabilities(
    _: Arc<Server>,
    _: Ruma<get_capabilities::v3::Request>,
) -> Result<get_capabilities::v3::Response> {
    let mut caps = Capabilities::new();
    caps.change_password = ChangePasswordCapability::new(true);
    caps.room_versions = RoomVersionsCapability::new(
        DEFAULT_ROOM_VERSION,
        SUPPORTED_ROOM_VERSIONS
            .iter()
            .map(|v| (v.clone(), RoomVersionStability::Stable))
            .collect(),
    );
    caps.set_displayname = SetDisplayNameCapability::new(true);
    caps.set_avatar_url = SetAvatarUrlCapability::new(true);
    caps.thirdparty_id_changes = ThirdPartyIdChangesCapability::new(false);
    caps.get_login_token = GetLoginTokenCapability::new(true);
    Ok(get_capabilities::v3::Response::new(caps))
}

//! spec: "End-to-End Encryption" — key management and cross-signing.

use std::{collections::BTreeMap, sync::Arc};

use ruma::api::client::keys::{
    claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
};
use serde::Serialize;

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::{
        e2ee::{
            cross_signing::{self, Failure, SigningKeys},
            device_lists, keys,
        },
        sync::SyncToken,
    },
};

pub fn routes(router: Routes) -> Routes {
    router
        .ruma(upload)
        .ruma(query)
        .ruma(claim)
        .ruma(changes)
        .ruma(upload_signing)
        .ruma_json(upload_signatures)
}

async fn upload(
    server: Arc<Server>,
    req: Ruma<upload_keys::v3::Request>,
) -> Result<upload_keys::v3::Response> {
    let user = req.user();
    let b = &req.body;
    let counts = keys::upload(
        &server,
        &user.user_id,
        &user.device_id,
        b.device_keys.as_ref(),
        &b.one_time_keys,
        &b.fallback_keys,
    )
    .await?;
    Ok(upload_keys::v3::Response::new(counts))
}

async fn query(
    server: Arc<Server>,
    req: Ruma<get_keys::v3::Request>,
) -> Result<get_keys::v3::Response> {
    keys::query(&server, &req.user().user_id, &req.body.device_keys).await
}

async fn claim(
    server: Arc<Server>,
    req: Ruma<claim_keys::v3::Request>,
) -> Result<claim_keys::v3::Response> {
    keys::claim(&server, &req.body.one_time_keys).await
}

async fn changes(
    server: Arc<Server>,
    req: Ruma<get_key_changes::v3::Request>,
) -> Result<get_key_changes::v3::Response> {
    let from = SyncToken::parse(&req.body.from)?;
    let to = SyncToken::parse(&req.body.to)?;
    let changes = device_lists::changes(&server, &req.user().user_id, from.pos, to.pos).await?;
    Ok(get_key_changes::v3::Response::new(
        changes.changed,
        changes.left,
    ))
}

async fn upload_signing(
    server: Arc<Server>,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> Result<upload_signing_keys::v3::Response> {
    let b = &req.body;
    let keys = SigningKeys {
        master: b.master_key.as_ref(),
        self_signing: b.self_signing_key.as_ref(),
        user_signing: b.user_signing_key.as_ref(),
    };
    cross_signing::upload_keys(&server, req.user(), keys, b.auth.as_ref()).await?;
    Ok(upload_signing_keys::v3::Response::new())
}

/// spec `cross_signing.yaml`: failures keyed by user and key id.
#[derive(Serialize)]
struct SignatureFailures {
    failures: BTreeMap<String, BTreeMap<String, Failure>>,
}

async fn upload_signatures(
    server: Arc<Server>,
    req: Ruma<upload_signatures::v3::Request>,
) -> Result<SignatureFailures> {
    let failures =
        cross_signing::upload_signatures(&server, req.user(), &req.body.signed_keys).await?;
    Ok(SignatureFailures { failures })
}

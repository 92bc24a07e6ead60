//! spec: "Cross-signing": uploading a user's master, self-signing and
//! user-signing keys, and signatures made with them (or with a device, on
//! the master key). Every signature is verified before it is kept.

use std::collections::BTreeMap;

use http::StatusCode;
use ruma::{
    OwnedUserId, UserId,
    api::client::{keys::upload_signatures::v3::SignedKeys, uiaa::AuthData},
    encryption::{CrossSigningKey, KeyUsage},
    serde::Raw,
};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{device_lists, json_object, keys::public_key, signed_by, signed_part};
use crate::{
    Error, Result, Server,
    api::AuthedUser,
    service::uia,
    store::keys::{KeyKind, SignatureRow},
};

/// The three cross-signing keys as a request carries them.
pub struct SigningKeys<'a> {
    pub master: Option<&'a Raw<CrossSigningKey>>,
    pub self_signing: Option<&'a Raw<CrossSigningKey>>,
    pub user_signing: Option<&'a Raw<CrossSigningKey>>,
}

/// `/keys/device_signing/upload`. User-interactive auth is required unless
/// the user has no master key yet or the request changes nothing (spec
/// v1.11: the first upload is exempt, and a client may retry it).
pub async fn upload_keys(
    server: &Server,
    user: &AuthedUser,
    keys: SigningKeys<'_>,
    auth: Option<&AuthData>,
) -> Result<()> {
    let me = &user.user_id;
    let provided: Vec<(&str, Map<String, Value>)> = [
        ("master", keys.master, KeyUsage::Master),
        ("self_signing", keys.self_signing, KeyUsage::SelfSigning),
        ("user_signing", keys.user_signing, KeyUsage::UserSigning),
    ]
    .into_iter()
    .filter_map(|(kind, raw, usage)| raw.map(|raw| (kind, raw, usage)))
    .map(|(kind, raw, usage)| Ok((kind, checked_key(me, raw, usage, kind)?)))
    .collect::<Result<_>>()?;

    let existing: BTreeMap<String, Map<String, Value>> = server
        .db
        .cross_signing_keys(me.as_str())
        .await?
        .into_iter()
        .filter_map(|(kind, json)| match serde_json::from_str(&json) {
            Ok(Value::Object(map)) => Some((kind, map)),
            _ => None,
        })
        .collect();
    let unchanged = provided
        .iter()
        .all(|(kind, key)| existing.get(*kind) == Some(key));
    if unchanged {
        return Ok(());
    }
    if existing.contains_key("master") {
        uia::confirm_password(server, auth, me).await?;
    }

    let new_master = provided.iter().find(|(kind, _)| *kind == "master");
    let master = new_master
        .map(|(_, key)| key)
        .or_else(|| existing.get("master"))
        .ok_or_else(|| {
            Error::invalid_param("A master key is needed before other cross-signing keys")
        })?;
    let master_public = public_key(master).unwrap_or_default();
    for (kind, key) in &provided {
        if *kind != "master"
            && !signed_by(
                key,
                me.as_str(),
                &format!("ed25519:{master_public}"),
                &master_public,
            )
        {
            return Err(invalid_signature(format!(
                "The {kind} key is not signed by the master key"
            )));
        }
    }

    let old_master_public = match (new_master, existing.get("master")) {
        (Some((_, new)), Some(old)) if public_key(new) != public_key(old) => public_key(old),
        _ => None,
    };
    let rows: Vec<(&str, String)> = provided
        .iter()
        .map(|(kind, key)| (*kind, Value::Object(key.clone()).to_string()))
        .collect();
    server
        .db
        .put_cross_signing_keys(me.as_str(), &rows, old_master_public.as_deref())
        .await?;
    device_lists::announce(server, me).await
}

/// A cross-signing key of `owner` with the given usage and one ed25519 key.
fn checked_key(
    owner: &UserId,
    raw: &Raw<CrossSigningKey>,
    usage: KeyUsage,
    kind: &str,
) -> Result<Map<String, Value>> {
    let typed: CrossSigningKey = raw
        .deserialize()
        .map_err(|e| Error::bad_json(format!("Invalid {kind} key: {e}")))?;
    if typed.user_id != owner {
        return Err(Error::invalid_param(format!(
            "The {kind} key belongs to another user"
        )));
    }
    if !typed.usage.contains(&usage) {
        return Err(Error::invalid_param(format!(
            "The {kind} key's usage must include {}",
            usage.as_str()
        )));
    }
    let mut keys = typed.keys.iter();
    match (keys.next(), keys.next()) {
        (Some((id, public)), None) if id.key_name().as_str() == public => {}
        _ => {
            return Err(Error::invalid_param(format!(
                "The {kind} key must hold exactly one key, named after itself"
            )));
        }
    }
    json_object(raw, kind)
}

fn invalid_signature(message: String) -> Error {
    Error::new(StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE", message)
}

/// spec: a failure of one signed key in `/keys/signatures/upload`.
#[derive(Debug, Serialize)]
pub struct Failure {
    errcode: &'static str,
    error: String,
}

impl Failure {
    fn new(errcode: &'static str, error: impl Into<String>) -> Self {
        Self {
            errcode,
            error: error.into(),
        }
    }
}

pub type Failures = BTreeMap<String, BTreeMap<String, Failure>>;

/// `/keys/signatures/upload`: the uploader's new signatures on their own
/// devices (by their self-signing key), on their own master key (by one of
/// their devices) and on other users' master keys (by their user-signing
/// key). Each key either gets its signatures stored or a failure.
pub async fn upload_signatures(
    server: &Server,
    user: &AuthedUser,
    signed: &BTreeMap<OwnedUserId, SignedKeys>,
) -> Result<Failures> {
    let me = user.user_id.as_str();
    let mine = CrossSigning::load(server, me).await?;
    let mut accepted = Vec::new();
    let mut failures = Failures::new();
    for (target, keys) in signed {
        let theirs = match target.as_str() == me {
            true => None,
            false if target.server_name() == server.server_name() => {
                Some(CrossSigning::load(server, target.as_str()).await?)
            }
            false => None,
        };
        for (key_id, raw) in keys {
            let outcome = match serde_json::from_str(raw.get()) {
                Ok(Value::Object(object)) => {
                    check_signatures(server, me, &mine, target, theirs.as_ref(), key_id, &object)
                        .await?
                }
                _ => Err(Failure::new(
                    "M_BAD_JSON",
                    "The signed key is not a JSON object",
                )),
            };
            match outcome {
                Ok(rows) => accepted.extend(rows),
                Err(failure) => {
                    failures
                        .entry(target.to_string())
                        .or_default()
                        .insert(key_id.to_owned(), failure);
                }
            }
        }
    }
    if !accepted.is_empty() {
        server.db.add_key_signatures(&accepted).await?;
        device_lists::announce(server, &user.user_id).await?;
        for target in signed.keys().filter(|t| t.as_str() != me) {
            device_lists::announce(server, target).await?;
        }
    }
    Ok(failures)
}

/// A user's cross-signing public keys.
struct CrossSigning {
    master: Option<(String, Map<String, Value>)>,
    self_signing: Option<String>,
    user_signing: Option<String>,
}

impl CrossSigning {
    async fn load(server: &Server, user: &str) -> Result<Self> {
        let mut keys = Self {
            master: None,
            self_signing: None,
            user_signing: None,
        };
        for (kind, json) in server.db.cross_signing_keys(user).await? {
            let Ok(Value::Object(key)) = serde_json::from_str::<Value>(&json) else {
                continue;
            };
            let Some(public) = public_key(&key) else {
                continue;
            };
            match kind.as_str() {
                "master" => keys.master = Some((public, key)),
                "self_signing" => keys.self_signing = Some(public),
                "user_signing" => keys.user_signing = Some(public),
                _ => {}
            }
        }
        Ok(keys)
    }
}

/// The signatures on one uploaded key that can be kept, or why none can.
async fn check_signatures(
    server: &Server,
    me: &str,
    mine: &CrossSigning,
    target: &UserId,
    theirs: Option<&CrossSigning>,
    key_id: &str,
    object: &Map<String, Value>,
) -> Result<std::result::Result<Vec<(SignatureRow, KeyKind)>, Failure>> {
    let row = |signer_key_id: &str, signature: &str| SignatureRow {
        target_user_id: target.to_string(),
        target_key_id: key_id.to_owned(),
        signer_user_id: me.to_owned(),
        signer_key_id: signer_key_id.to_owned(),
        signature: signature.to_owned(),
    };
    let my_signature = |signer_key_id: &str| {
        object
            .get("signatures")
            .and_then(|s| s.get(me))
            .and_then(|s| s.get(signer_key_id))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let unknown = || Failure::new("M_NOT_FOUND", format!("Unknown key {key_id}"));

    // Another user's master key, signed with my user-signing key.
    if target.as_str() != me {
        let Some((master_public, master)) = theirs.and_then(|t| t.master.as_ref()) else {
            return Ok(Err(unknown()));
        };
        if master_public != key_id {
            return Ok(Err(unknown()));
        }
        let Some(usk) = &mine.user_signing else {
            return Ok(Err(Failure::new(
                "M_INVALID_SIGNATURE",
                "You have no user-signing key",
            )));
        };
        return Ok(verified(object, master, me, usk)
            .map(|signature| vec![(row(&format!("ed25519:{usk}"), &signature), KeyKind::Master)]));
    }

    // My own master key, signed by my devices.
    if let Some((master_public, master)) = &mine.master
        && master_public == key_id
    {
        if signed_part(object) != signed_part(master) {
            return Ok(Err(mismatch()));
        }
        let mut rows = Vec::new();
        for signer_key_id in object
            .get("signatures")
            .and_then(|s| s.get(me))
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let Some(device_id) = signer_key_id.strip_prefix("ed25519:") else {
                continue;
            };
            if device_id == master_public {
                continue;
            }
            let Some(device_key) = device_ed25519(server, me, device_id).await? else {
                continue;
            };
            if signed_by(object, me, &signer_key_id, &device_key)
                && let Some(signature) = my_signature(&signer_key_id)
            {
                rows.push((row(&signer_key_id, &signature), KeyKind::Master));
            }
        }
        return Ok(if rows.is_empty() {
            Err(Failure::new(
                "M_INVALID_SIGNATURE",
                "No valid device signature on the master key",
            ))
        } else {
            Ok(rows)
        });
    }

    // One of my devices, signed with my self-signing key.
    let Some(stored) = server
        .db
        .device_keys(me, &[key_id.to_owned()])
        .await?
        .into_iter()
        .next()
    else {
        return Ok(Err(unknown()));
    };
    let Ok(Value::Object(device)) = serde_json::from_str::<Value>(&stored.key_json) else {
        return Ok(Err(unknown()));
    };
    let Some(ssk) = &mine.self_signing else {
        return Ok(Err(Failure::new(
            "M_INVALID_SIGNATURE",
            "You have no self-signing key",
        )));
    };
    Ok(verified(object, &device, me, ssk)
        .map(|signature| vec![(row(&format!("ed25519:{ssk}"), &signature), KeyKind::Device)]))
}

/// `signer`'s signature with `public` on `object`, if `object` is the
/// stored key and the signature is valid.
fn verified(
    object: &Map<String, Value>,
    stored: &Map<String, Value>,
    signer: &str,
    public: &str,
) -> std::result::Result<String, Failure> {
    if signed_part(object) != signed_part(stored) {
        return Err(mismatch());
    }
    let key_id = format!("ed25519:{public}");
    if !signed_by(object, signer, &key_id, public) {
        return Err(Failure::new(
            "M_INVALID_SIGNATURE",
            format!("Missing or invalid signature by {key_id}"),
        ));
    }
    Ok(object["signatures"][signer][&key_id]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

fn mismatch() -> Failure {
    Failure::new(
        "M_INVALID_PARAM",
        "The signed key does not match the stored key",
    )
}

/// The ed25519 public key of one of `user`'s devices.
async fn device_ed25519(server: &Server, user: &str, device_id: &str) -> Result<Option<String>> {
    let rows = server.db.device_keys(user, &[device_id.to_owned()]).await?;
    Ok(rows.into_iter().next().and_then(|row| {
        let keys: Value = serde_json::from_str(&row.key_json).ok()?;
        keys.get("keys")?
            .get(format!("ed25519:{device_id}"))?
            .as_str()
            .map(str::to_owned)
    }))
}

//! Server signing keys (spec: server-server API, "Retrieving server keys").
//!
//! Ours are published signed, with `valid_until_ts` and the configured
//! `old_verify_keys`. Other servers' keys are fetched from the server
//! itself, or from the configured notaries when it cannot be reached; every
//! response must carry the server's own signature by each of its
//! `verify_keys` (and, from a notary, the notary's), and is cached with its
//! validity so the notary endpoints can serve it again.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, OwnedServerSigningKeyId, ServerName,
    api::federation::discovery::{
        ServerSigningKeys, get_remote_server_keys_batch, get_server_keys,
    },
    serde::{Base64, Raw},
    signatures::{PublicKeyMap, PublicKeySet},
};
use serde_json::value::to_raw_value;

use crate::{
    Error, Result, Server,
    cache::ReadCache,
    now_ms,
    store::server_keys::{FetchedKey, ServerKeyRow},
};

/// spec (room versions 5+): a key's `valid_until_ts` is trusted at most
/// 7 days into the future from when it was fetched.
const MAX_TRUSTED_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;
/// A server that did not give us a key it was asked for is not asked again
/// for this long.
const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// What this process knows of other servers' keys besides the database.
#[derive(Default)]
pub struct RemoteKeys {
    /// Each server's stored keys, read once for the many events of one
    /// server that are verified together (a join brings thousands).
    stored: ReadCache<OwnedServerName, Arc<Vec<ServerKeyRow>>>,
    /// When each server was last asked for its keys.
    last: Mutex<HashMap<OwnedServerName, Instant>>,
    /// One fetch per server at a time: the others wait for its result
    /// (many events of one server are verified side by side).
    in_flight: crate::cache::KeyedLocks,
}

impl RemoteKeys {
    /// Whether `server` may be asked now; records the attempt if so.
    fn try_start(&self, server: &ServerName) -> bool {
        let mut last = self.last.lock().expect("key fetch throttle");
        let now = Instant::now();
        if last.len() > 10_000 {
            last.retain(|_, at| now.duration_since(*at) < REFETCH_AFTER);
        }
        match last.get(server) {
            Some(at) if now.duration_since(*at) < REFETCH_AFTER => false,
            _ => {
                last.insert(server.to_owned(), now);
                true
            }
        }
    }
}

/// Our `/_matrix/key/v2/server` object, signed by our key.
pub fn own_keys(server: &Server) -> Result<CanonicalJsonObject> {
    let key = &server.signing_key;
    let old: serde_json::Map<String, serde_json::Value> = server
        .config
        .federation
        .old_verify_keys
        .iter()
        .map(|(id, old)| {
            let entry = serde_json::json!({"key": old.key, "expired_ts": old.expired_ts});
            (id.clone(), entry)
        })
        .collect();
    let object = serde_json::json!({
        "server_name": server.server_name(),
        "verify_keys": {key.key_id(): {"key": key.public_key_base64()}},
        "old_verify_keys": old,
        "valid_until_ts": now_ms() + server.config.federation.key_validity_ms as i64,
    });
    let mut object = canonical(object)?;
    sign(server, &mut object)?;
    Ok(object)
}

pub fn own_keys_raw(server: &Server) -> Result<Raw<ServerSigningKeys>> {
    raw(&own_keys(server)?)
}

fn sign(server: &Server, object: &mut CanonicalJsonObject) -> Result<()> {
    ruma::signatures::sign_json(
        server.server_name().as_str(),
        server.signing_key.key_pair(),
        object,
    )
    .map_err(Error::internal)
}

fn canonical(value: serde_json::Value) -> Result<CanonicalJsonObject> {
    match CanonicalJsonValue::try_from(value).map_err(Error::internal)? {
        CanonicalJsonValue::Object(object) => Ok(object),
        _ => Err(Error::internal("key object is not an object")),
    }
}

fn raw(object: &CanonicalJsonObject) -> Result<Raw<ServerSigningKeys>> {
    Ok(Raw::from_json(
        to_raw_value(object).map_err(Error::internal)?,
    ))
}

/// `origin`'s keys that may verify a signature made at `valid_at` (ms),
/// fetched when the cache lacks one of `key_ids`. Keys we cannot get are
/// simply absent: the signature check that follows then fails.
pub async fn public_keys(
    server: &Server,
    origin: &ServerName,
    key_ids: &[&str],
    valid_at: i64,
) -> Result<PublicKeySet> {
    if origin == server.server_name() {
        return Ok(own_public_keys(server));
    }
    // No key ids asked for (a notary query for "all keys"): any valid key will do.
    let satisfied = |keys: &PublicKeySet| match key_ids {
        [] => !keys.is_empty(),
        ids => ids.iter().all(|id| keys.contains_key(*id)),
    };
    let cached = cached_keys(server, origin, valid_at).await?;
    if satisfied(&cached) {
        return Ok(cached);
    }
    let _fetching = server.remote_keys.in_flight.lock(origin.as_str()).await;
    let cached = stored_keys(server, origin, valid_at).await?;
    if satisfied(&cached) || !server.remote_keys.try_start(origin) {
        return Ok(cached);
    }
    if let Err(e) = fetch_direct(server, origin).await {
        tracing::info!(%origin, error = %e, "fetching keys from the server itself failed");
    }
    let keys = stored_keys(server, origin, valid_at).await?;
    if satisfied(&keys) {
        return Ok(keys);
    }
    for notary in &server.config.federation.trusted_key_servers {
        if notary == origin || notary == server.server_name() {
            continue;
        }
        match fetch_via_notary(server, notary, origin).await {
            Ok(()) => {
                let keys = stored_keys(server, origin, valid_at).await?;
                if satisfied(&keys) {
                    return Ok(keys);
                }
            }
            Err(e) => tracing::info!(%origin, %notary, error = %e, "notary key query failed"),
        }
    }
    stored_keys(server, origin, valid_at).await
}

fn own_public_keys(server: &Server) -> PublicKeySet {
    let key = &server.signing_key;
    let mut keys = PublicKeySet::new();
    if let Ok(public) = Base64::parse(key.public_key_base64()) {
        keys.insert(key.key_id(), public);
    }
    keys
}

/// `origin`'s keys valid at `valid_at`, as this process last read them.
/// Stored keys are only ever added or extended, so a key found here is
/// one the database holds; one missing is looked for in the database.
async fn cached_keys(server: &Server, origin: &ServerName, valid_at: i64) -> Result<PublicKeySet> {
    match server.remote_keys.stored.get(origin) {
        Some(rows) => Ok(valid_keys(&rows, valid_at)),
        None => stored_keys(server, origin, valid_at).await,
    }
}

async fn stored_keys(server: &Server, origin: &ServerName, valid_at: i64) -> Result<PublicKeySet> {
    let stored = &server.remote_keys.stored;
    let generation = stored.generation();
    let rows = server.db.server_keys(origin.as_str()).await?;
    let keys = valid_keys(&rows, valid_at);
    stored.insert(origin.to_owned(), Arc::new(rows), generation);
    Ok(keys)
}

fn valid_keys(rows: &[ServerKeyRow], valid_at: i64) -> PublicKeySet {
    rows.iter()
        .filter(|row| row.valid_until_ts >= valid_at)
        .filter_map(|row| Some((row.key_id.clone(), Base64::parse(&row.public_key).ok()?)))
        .collect()
}

/// `GET /_matrix/key/v2/server` on `origin` itself.
async fn fetch_direct(server: &Server, origin: &ServerName) -> Result<()> {
    let response = server
        .federation
        .send_unauthenticated(origin, get_server_keys::v2::Request::new())
        .await
        .map_err(|e| Error::unknown(e.to_string()))?;
    let object = parse_object(response.server_key.json().get())?;
    store_verified(server, origin, object).await
}

/// `POST /_matrix/key/v2/query` on `notary`, for all of `origin`'s keys.
async fn fetch_via_notary(server: &Server, notary: &ServerName, origin: &ServerName) -> Result<()> {
    let request = get_remote_server_keys_batch::v2::Request::new(BTreeMap::from([(
        origin.to_owned(),
        BTreeMap::new(),
    )]));
    let response = server
        .federation
        .send_unauthenticated(notary, request)
        .await
        .map_err(|e| Error::unknown(e.to_string()))?;
    let notary_keys = notary_public_keys(server, notary).await?;
    for key_response in response.server_keys {
        let object = parse_object(key_response.json().get())?;
        verify_entity(&object, notary, &notary_keys)?;
        store_verified(server, origin, object).await?;
    }
    Ok(())
}

/// A notary's own keys, straight from the notary.
async fn notary_public_keys(server: &Server, notary: &ServerName) -> Result<PublicKeySet> {
    let keys = cached_keys(server, notary, now_ms()).await?;
    if !keys.is_empty() {
        return Ok(keys);
    }
    fetch_direct(server, notary).await?;
    cached_keys(server, notary, now_ms()).await
}

fn parse_object(json: &str) -> Result<CanonicalJsonObject> {
    serde_json::from_str(json).map_err(|e| Error::unknown(format!("key response: {e}")))
}

/// Checks a key response's self-signatures and stores its keys.
async fn store_verified(
    server: &Server,
    origin: &ServerName,
    object: CanonicalJsonObject,
) -> Result<()> {
    let keys = verified_key_response(&object, origin)?;
    let now = now_ms();
    let trusted_until = (now + MAX_TRUSTED_VALIDITY_MS).min(keys.valid_until_ts.get().into());
    let current = keys
        .verify_keys
        .iter()
        .map(|(id, key)| (id, key, trusted_until));
    let old = keys
        .old_verify_keys
        .iter()
        .map(|(id, old)| (id, &old.key, i64::from(old.expired_ts.get())));
    let encoded: Vec<(String, String, i64)> = current
        .map(|(id, key, until)| (id.to_string(), key.key.encode(), until))
        .chain(old.map(|(id, key, until)| (id.to_string(), key.encode(), until)))
        .collect();
    let rows: Vec<FetchedKey<'_>> = encoded
        .iter()
        .map(|(key_id, public_key, valid_until_ts)| FetchedKey {
            key_id,
            public_key,
            valid_until_ts: *valid_until_ts,
        })
        .collect();
    let json = serde_json::to_string(&object).map_err(Error::internal)?;
    server
        .db
        .store_server_keys(origin.as_str(), &rows, &json, now)
        .await
}

/// The parsed response, if it names `origin` and is signed by every one of
/// its `verify_keys`.
pub fn verified_key_response(
    object: &CanonicalJsonObject,
    origin: &ServerName,
) -> Result<ServerSigningKeys> {
    let keys: ServerSigningKeys = serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|e| Error::unknown(format!("key response of {origin}: {e}")))?;
    if keys.server_name != origin {
        return Err(Error::unknown(format!(
            "key response of {origin} is for {}",
            keys.server_name
        )));
    }
    if keys.verify_keys.is_empty() {
        return Err(Error::unknown(format!("{origin} published no verify_keys")));
    }
    let signed_by: Option<Vec<&String>> = object
        .get("signatures")
        .and_then(|s| s.as_object())
        .and_then(|s| s.get(origin.as_str()))
        .and_then(|s| s.as_object())
        .map(|s| s.keys().collect());
    let public: PublicKeySet = keys
        .verify_keys
        .iter()
        .map(|(id, key)| (id.to_string(), key.key.clone()))
        .collect();
    let every_key_signed = signed_by.is_some_and(|ids| {
        keys.verify_keys
            .keys()
            .all(|id| ids.iter().any(|s| s.as_str() == id.as_str()))
    });
    if !every_key_signed {
        return Err(Error::unknown(format!(
            "{origin}'s keys are not signed by each of its verify_keys"
        )));
    }
    verify_entity(object, origin, &public)?;
    Ok(keys)
}

/// Checks the signatures `entity` made on `object` with `keys`, ignoring
/// other entities' signatures.
pub fn verify_entity(
    object: &CanonicalJsonObject,
    entity: &ServerName,
    keys: &PublicKeySet,
) -> Result<()> {
    let signatures = object
        .get("signatures")
        .and_then(|s| s.as_object())
        .and_then(|s| s.get(entity.as_str()))
        .cloned()
        .ok_or_else(|| Error::unknown(format!("no signature by {entity}")))?;
    let mut only_entity = object.clone();
    only_entity.insert(
        "signatures".to_owned(),
        CanonicalJsonValue::Object(CanonicalJsonObject::from([(
            entity.to_string(),
            signatures,
        )])),
    );
    let map = PublicKeyMap::from([(entity.to_string(), keys.clone())]);
    ruma::signatures::verify_json(&map, &only_entity)
        .map_err(|e| Error::unknown(format!("signature by {entity}: {e}")))
}

/// The notary endpoints: the cached (or freshly fetched) key responses of
/// each server asked for, countersigned by us.
pub async fn notary_query(
    server: &Server,
    query: &BTreeMap<OwnedServerName, BTreeMap<OwnedServerSigningKeyId, i64>>,
) -> Result<Vec<Raw<ServerSigningKeys>>> {
    let mut out = Vec::new();
    for (origin, wanted) in query {
        if origin == server.server_name() {
            out.push(own_keys_raw(server)?);
            continue;
        }
        let min_valid = wanted.values().copied().max().unwrap_or(0);
        let key_ids: Vec<&str> = wanted.keys().map(|id| id.as_str()).collect();
        // Refreshes the cache when it cannot satisfy the query; whatever we
        // hold is served, and the requester judges whether it is fresh enough.
        public_keys(server, origin, &key_ids, min_valid.max(now_ms())).await?;
        let mut responses: Vec<String> = server
            .db
            .server_keys(origin.as_str())
            .await?
            .into_iter()
            .map(|row| row.response_json)
            .collect();
        responses.sort();
        responses.dedup();
        for json in responses {
            let mut object = parse_object(&json)?;
            sign(server, &mut object)?;
            out.push(raw(&object)?);
        }
    }
    Ok(out)
}

//! End-to-end encryption brokering: device, one-time and fallback keys,
//! claims under concurrency, device lists in sync and `/keys/changes`,
//! to-device messages delivered exactly once (also across a restart),
//! cross-signing with verified signatures, key backup and dehydrated devices.

mod common;

use std::collections::HashSet;

use base64::Engine as _;
use common::{TestServer, User};
use reqwest::{Method, StatusCode};
use ruma::{
    CanonicalJsonObject,
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};

on_both_backends!(
    keys_upload_and_query,
    one_time_key_claims_never_repeat_and_fall_back,
    device_lists_follow_keys_and_rooms,
    to_device_is_delivered_exactly_once_across_restarts,
    cross_signing_keys_and_signatures,
    key_backup_versions_and_sessions,
    dehydrated_device_round_trip
);

/// A logged-in device with its ed25519 identity key.
struct Device {
    user: User,
    device_id: String,
    key: Ed25519KeyPair,
}

fn new_key(version: Option<&str>) -> (Ed25519KeyPair, String) {
    let der = Ed25519KeyPair::generate();
    let probe = Ed25519KeyPair::from_der(&der, String::new()).unwrap();
    let public = unpadded(&probe.public_key());
    let version = version.map_or_else(|| public.clone(), str::to_owned);
    (Ed25519KeyPair::from_der(&der, version).unwrap(), public)
}

fn unpadded(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

fn sign(signer: &str, key: &Ed25519KeyPair, value: Value) -> Value {
    let mut object: CanonicalJsonObject = serde_json::from_value(value).unwrap();
    sign_json(signer, key, &mut object).unwrap();
    serde_json::to_value(object).unwrap()
}

async fn device(s: &TestServer, user: &User) -> Device {
    let (_, whoami) = s
        .get("/_matrix/client/v3/account/whoami", &user.token)
        .await;
    let device_id = whoami["device_id"].as_str().unwrap().to_owned();
    let (key, _) = new_key(Some(&device_id));
    Device {
        user: user.clone(),
        device_id,
        key,
    }
}

async fn login_again(s: &TestServer, user: &User) -> Device {
    device(s, &s.login(user, None).await).await
}

fn device_keys(d: &Device) -> Value {
    let public = unpadded(&d.key.public_key());
    sign(
        &d.user.user_id,
        &d.key,
        json!({
            "user_id": d.user.user_id,
            "device_id": d.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", d.device_id): "curve-public",
                format!("ed25519:{}", d.device_id): public,
            },
        }),
    )
}

fn one_time_keys(d: &Device, from: usize, count: usize) -> Value {
    let keys: serde_json::Map<String, Value> = (from..from + count)
        .map(|i| {
            let key = sign(&d.user.user_id, &d.key, json!({ "key": format!("otk{i}") }));
            (format!("signed_curve25519:AAAA{i}"), key)
        })
        .collect();
    Value::Object(keys)
}

async fn upload(s: &TestServer, d: &Device, body: Value) -> (StatusCode, Value) {
    s.post("/_matrix/client/v3/keys/upload", &d.user.token, body)
        .await
}

async fn query(s: &TestServer, by: &User, users: &[&str]) -> Value {
    let wanted: serde_json::Map<String, Value> =
        users.iter().map(|u| ((*u).to_owned(), json!([]))).collect();
    let (status, body) = s
        .post(
            "/_matrix/client/v3/keys/query",
            &by.token,
            json!({ "device_keys": wanted }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

async fn keys_upload_and_query(s: TestServer) {
    let alice = device(&s, &s.register("alice").await).await;
    let bob = s.register("bob").await;

    let fallback = sign(
        &alice.user.user_id,
        &alice.key,
        json!({"key": "fb", "fallback": true}),
    );
    let (status, body) = upload(
        &s,
        &alice,
        json!({
            "device_keys": device_keys(&alice),
            "one_time_keys": one_time_keys(&alice, 0, 3),
            "fallback_keys": { "signed_curve25519:FB1": fallback },
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 3);

    // The same keys again change nothing; a different key under a used id is refused.
    let (status, body) = upload(
        &s,
        &alice,
        json!({"one_time_keys": one_time_keys(&alice, 0, 3)}),
    )
    .await;
    assert_eq!(
        (status, &body["one_time_key_counts"]["signed_curve25519"]),
        (StatusCode::OK, &json!(3))
    );
    let other = sign(&alice.user.user_id, &alice.key, json!({"key": "b3RoZXI"}));
    let clash = json!({ "signed_curve25519:AAAA0": other });
    let (status, body) = upload(&s, &alice, json!({"one_time_keys": clash})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM"))
    );

    // Device keys must be this user's and this device's.
    let mut foreign = device_keys(&alice);
    foreign["device_id"] = json!("SOMEONEELSE");
    let (status, body) = upload(&s, &alice, json!({"device_keys": foreign})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM"))
    );

    let found = query(&s, &bob, &[&alice.user.user_id, "@nobody:127.0.0.1:1"]).await;
    let keys = &found["device_keys"][&alice.user.user_id][&alice.device_id];
    assert_eq!(
        keys["keys"][format!("ed25519:{}", alice.device_id)],
        unpadded(&alice.key.public_key())
    );
    assert!(
        keys["signatures"][&alice.user.user_id].is_object(),
        "signatures kept: {keys}"
    );
    assert!(found["failures"]["127.0.0.1:1"].is_object(), "{found}");

    let sync = s.sync(&alice.user, None, 0).await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 3);
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );
}

async fn one_time_key_claims_never_repeat_and_fall_back(s: TestServer) {
    let alice = device(&s, &s.register("alice").await).await;
    let bob = s.register("bob").await;
    let fallback = sign(
        &alice.user.user_id,
        &alice.key,
        json!({"key": "fb", "fallback": true}),
    );
    let (status, _) = upload(
        &s,
        &alice,
        json!({
            "device_keys": device_keys(&alice),
            "one_time_keys": one_time_keys(&alice, 0, 10),
            "fallback_keys": { "signed_curve25519:FB1": fallback },
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let claim =
        json!({"one_time_keys": {&alice.user.user_id: {&alice.device_id: "signed_curve25519"}}});
    let claims =
        (0..20).map(|_| s.post("/_matrix/client/v3/keys/claim", &bob.token, claim.clone()));
    let mut one_time = HashSet::new();
    let mut fallbacks = 0;
    for (status, body) in futures::future::join_all(claims).await {
        assert_eq!(status, StatusCode::OK, "{body}");
        let keys = body["one_time_keys"][&alice.user.user_id][&alice.device_id]
            .as_object()
            .unwrap_or_else(|| panic!("a key for every claim: {body}"));
        let (id, _) = keys.iter().next().unwrap();
        if id == "signed_curve25519:FB1" {
            fallbacks += 1;
        } else {
            assert!(one_time.insert(id.clone()), "{id} handed out twice");
        }
    }
    assert_eq!((one_time.len(), fallbacks), (10, 10));

    let sync = s.sync(&alice.user, None, 0).await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(sync["device_unused_fallback_key_types"], json!([]));
}

async fn device_lists_follow_keys_and_rooms(s: TestServer) {
    let alice = device(&s, &s.register("alice").await).await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = s.create_room(&bob, json!({"preset": "public_chat"})).await;
    s.join(&alice.user, &room).await;
    let since = next_batch(&s.sync(&bob, None, 0).await);

    // New keys wake the long-poll of someone sharing a room.
    let poll = s.long_poll(&bob, &since);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    upload(&s, &alice, json!({"device_keys": device_keys(&alice)})).await;
    let (waited, sync) = poll.await.unwrap();
    assert!(
        waited.as_secs() < 10,
        "woken by the upload, not the timeout"
    );
    assert_eq!(
        sync["device_lists"]["changed"],
        json!([alice.user.user_id]),
        "{sync}"
    );
    let after_keys = next_batch(&sync);
    let (_, changes) = s
        .get(
            &format!("/_matrix/client/v3/keys/changes?from={since}&to={after_keys}"),
            &bob.token,
        )
        .await;
    assert_eq!(changes["changed"], json!([alice.user.user_id]));

    // Someone joining a shared room is new to track; leaving it, gone.
    s.join(&carol, &room).await;
    let sync = s.sync(&bob, Some(&after_keys), 0).await;
    assert_eq!(
        sync["device_lists"]["changed"],
        json!([carol.user_id]),
        "{sync}"
    );
    let after_join = next_batch(&sync);
    s.post(
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        &carol.token,
        json!({}),
    )
    .await;
    let sync = s.sync(&bob, Some(&after_join), 0).await;
    assert_eq!(
        sync["device_lists"]["left"],
        json!([carol.user_id]),
        "{sync}"
    );

    // Someone who shares no room is not announced.
    let since = next_batch(&sync);
    let loner = device(&s, &s.register("loner").await).await;
    upload(&s, &loner, json!({"device_keys": device_keys(&loner)})).await;
    let sync = s.sync(&bob, Some(&since), 0).await;
    assert!(
        sync["device_lists"]["changed"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "{sync}"
    );

    // A device logging out is a change too.
    let since = next_batch(&sync);
    s.post("/_matrix/client/v3/logout", &alice.user.token, json!({}))
        .await;
    let sync = s.sync(&bob, Some(&since), 0).await;
    assert_eq!(
        sync["device_lists"]["changed"],
        json!([alice.user.user_id]),
        "{sync}"
    );
    let found = query(&s, &bob, &[&alice.user.user_id]).await;
    assert_eq!(
        found["device_keys"][&alice.user.user_id],
        json!({}),
        "keys go with the device"
    );
}

async fn send_to_device(s: &TestServer, from: &User, txn: &str, messages: Value) -> StatusCode {
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/sendToDevice/m.room_key_request/{txn}"),
            &from.token,
            json!({ "messages": messages }),
        )
        .await;
    assert!(status != StatusCode::OK || body == json!({}), "{body}");
    status
}

fn to_device_ids(sync: &Value) -> Vec<u64> {
    sync["to_device"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| e["content"]["n"].as_u64().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

async fn to_device_is_delivered_exactly_once_across_restarts(mut s: TestServer) {
    let alice = s.register("alice").await;
    let bob = device(&s, &s.register("bob").await).await;
    let bob2 = login_again(&s, &bob.user).await;
    let since = next_batch(&s.sync(&bob.user, None, 0).await);

    let to_bob = |n: u64| json!({ &bob.user.user_id: { &bob.device_id: {"n": n} } });
    assert_eq!(
        send_to_device(&s, &alice, "t1", to_bob(1)).await,
        StatusCode::OK
    );
    assert_eq!(
        send_to_device(&s, &alice, "t1", to_bob(1)).await,
        StatusCode::OK,
        "retry"
    );
    let all = json!({ &bob.user.user_id: { "*": {"n": 2} } });
    assert_eq!(send_to_device(&s, &alice, "t2", all).await, StatusCode::OK);

    let first = s.sync(&bob.user, Some(&since), 0).await;
    assert_eq!(to_device_ids(&first), [1, 2], "{first}");
    assert_eq!(first["to_device"]["events"][0]["sender"], alice.user_id);
    // Not acknowledged yet: the same token gets them again.
    let again = s.sync(&bob.user, Some(&since), 0).await;
    assert_eq!(to_device_ids(&again), [1, 2]);
    // The second device got only the message for all devices.
    assert_eq!(to_device_ids(&s.sync(&bob2.user, None, 0).await), [2]);

    s.restart().await;
    let after = s.sync(&bob.user, Some(&next_batch(&first)), 0).await;
    assert_eq!(
        to_device_ids(&after),
        Vec::<u64>::new(),
        "acknowledged: {after}"
    );

    // More than one response holds: the rest come with the next token.
    for n in 0..130 {
        send_to_device(&s, &alice, &format!("bulk{n}"), to_bob(100 + n)).await;
    }
    let page = s.sync(&bob.user, Some(&next_batch(&after)), 0).await;
    let rest = s.sync(&bob.user, Some(&next_batch(&page)), 0).await;
    let got: Vec<u64> = to_device_ids(&page)
        .into_iter()
        .chain(to_device_ids(&rest))
        .collect();
    assert_eq!(to_device_ids(&page).len(), 100);
    assert_eq!(got, (100..230).collect::<Vec<_>>());

    let bad = json!({ &bob.user.user_id: { &bob.device_id: "not an object" } });
    assert_eq!(
        send_to_device(&s, &alice, "bad", bad).await,
        StatusCode::BAD_REQUEST
    );
}

/// A user's three cross-signing keys, the others signed by the master.
struct CrossSigning {
    master: (Ed25519KeyPair, String),
    self_signing: (Ed25519KeyPair, String),
    user_signing: (Ed25519KeyPair, String),
}

impl CrossSigning {
    fn new() -> Self {
        Self {
            master: new_key(None),
            self_signing: new_key(None),
            user_signing: new_key(None),
        }
    }

    fn key(&self, user: &str, usage: &str) -> Value {
        let (_, public) = match usage {
            "master" => &self.master,
            "self_signing" => &self.self_signing,
            _ => &self.user_signing,
        };
        let key = json!({ "user_id": user, "usage": [usage], "keys": { format!("ed25519:{public}"): public } });
        if usage == "master" {
            key
        } else {
            sign(user, &self.master.0, key)
        }
    }

    fn upload_body(&self, user: &str) -> Value {
        json!({
            "master_key": self.key(user, "master"),
            "self_signing_key": self.key(user, "self_signing"),
            "user_signing_key": self.key(user, "user_signing"),
        })
    }
}

async fn signing_upload(s: &TestServer, user: &User, body: Value) -> (StatusCode, Value) {
    s.post(
        "/_matrix/client/v3/keys/device_signing/upload",
        &user.token,
        body,
    )
    .await
}

async fn signatures_upload(s: &TestServer, user: &User, body: Value) -> (StatusCode, Value) {
    s.post(
        "/_matrix/client/v3/keys/signatures/upload",
        &user.token,
        body,
    )
    .await
}

async fn cross_signing_keys_and_signatures(s: TestServer) {
    let alice = device(&s, &s.register("alice").await).await;
    let bob = device(&s, &s.register("bob").await).await;
    let carol = s.register("carol").await;
    upload(&s, &alice, json!({"device_keys": device_keys(&alice)})).await;
    let a = &alice.user.user_id;
    let alice_keys = CrossSigning::new();

    // A self-signing key the master did not sign is refused.
    let mut unsigned = alice_keys.upload_body(a);
    unsigned["self_signing_key"] = json!({ "user_id": a, "usage": ["self_signing"],
        "keys": { format!("ed25519:{}", alice_keys.self_signing.1): alice_keys.self_signing.1 } });
    let (status, body) = signing_upload(&s, &alice.user, unsigned).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_SIGNATURE"))
    );

    // The first upload needs no password; replacing the keys does.
    let (status, body) = signing_upload(&s, &alice.user, alice_keys.upload_body(a)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = signing_upload(&s, &alice.user, alice_keys.upload_body(a)).await;
    assert_eq!(status, StatusCode::OK, "re-sending the same keys is exempt");
    let replacement = CrossSigning::new();
    let (status, challenge) = signing_upload(&s, &alice.user, replacement.upload_body(a)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    let mut with_auth = replacement.upload_body(a);
    with_auth["auth"] = json!({"type": "m.login.password", "session": challenge["session"],
        "identifier": {"type": "m.id.user", "user": a}, "password": "secret-pw"});
    let (status, body) = signing_upload(&s, &alice.user, with_auth).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice_keys = replacement;

    // Alice signs her device with her self-signing key; a forged one fails.
    let signed_device = sign(a, &alice_keys.self_signing.0, device_keys(&alice));
    let forged = sign(
        a,
        &new_key(Some(&alice_keys.self_signing.1)).0,
        device_keys(&alice),
    );
    let (status, body) = signatures_upload(
        &s,
        &alice.user,
        json!({ a: { &alice.device_id: signed_device } }),
    )
    .await;
    assert_eq!(
        (status, &body["failures"]),
        (StatusCode::OK, &json!({})),
        "{body}"
    );
    let (_, body) = signatures_upload(
        &s,
        &alice.user,
        json!({ a: { &alice.device_id: forged, "NOSUCHKEY": {} } }),
    )
    .await;
    assert_eq!(
        body["failures"][a][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE",
        "{body}"
    );
    assert_eq!(
        body["failures"][a]["NOSUCHKEY"]["errcode"], "M_NOT_FOUND",
        "{body}"
    );

    let found = query(&s, &bob.user, &[a]).await;
    let ssk_id = format!("ed25519:{}", alice_keys.self_signing.1);
    assert!(
        found["device_keys"][a][&alice.device_id]["signatures"][a][&ssk_id].is_string(),
        "{found}"
    );
    assert_eq!(
        found["master_keys"][a]["keys"][format!("ed25519:{}", alice_keys.master.1)],
        alice_keys.master.1
    );
    assert!(found["self_signing_keys"][a].is_object());
    assert!(
        found["user_signing_keys"].get(a).is_none(),
        "only Alice sees her user-signing key"
    );
    assert!(query(&s, &alice.user, &[a]).await["user_signing_keys"][a].is_object());

    // Bob signs Alice's master key with his user-signing key: only Bob sees that.
    let b = &bob.user.user_id;
    let bob_keys = CrossSigning::new();
    signing_upload(&s, &bob.user, bob_keys.upload_body(b)).await;
    let master = alice_keys.key(a, "master");
    let signed_master = sign(b, &bob_keys.user_signing.0, master);
    let (_, body) = signatures_upload(
        &s,
        &bob.user,
        json!({ a: { &alice_keys.master.1: signed_master } }),
    )
    .await;
    assert_eq!(body["failures"], json!({}), "{body}");
    let usk_id = format!("ed25519:{}", bob_keys.user_signing.1);
    let seen_by_bob = query(&s, &bob.user, &[a]).await;
    assert!(
        seen_by_bob["master_keys"][a]["signatures"][b][&usk_id].is_string(),
        "{seen_by_bob}"
    );
    let seen_by_carol = query(&s, &carol, &[a]).await;
    assert!(
        seen_by_carol["master_keys"][a]["signatures"]
            .get(b)
            .is_none(),
        "{seen_by_carol}"
    );
}

const BACKUP_ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

fn session(first_index: u64, forwarded: u64, verified: bool, marker: &str) -> Value {
    json!({
        "first_message_index": first_index,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": {"ephemeral": marker, "ciphertext": marker, "mac": marker},
    })
}

async fn key_backup_versions_and_sessions(s: TestServer) {
    let alice = s.register("alice").await;
    let t = &alice.token;
    let (status, body) = s.get("/_matrix/client/v3/room_keys/version", t).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );

    let auth_data = json!({"public_key": "pk", "signatures": {}});
    let (status, body) = s
        .post(
            "/_matrix/client/v3/room_keys/version",
            t,
            json!({"algorithm": BACKUP_ALGORITHM, "auth_data": auth_data}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v1 = body["version"].as_str().unwrap().to_owned();

    let room = "!room:localhost";
    let keys_path = |version: &str| format!("/_matrix/client/v3/room_keys/keys?version={version}");
    let room_path = |room: &str, version: &str| {
        let room = common::urlencode(room);
        format!("/_matrix/client/v3/room_keys/keys/{room}?version={version}")
    };
    let session_path = |version: &str| {
        let room = common::urlencode(room);
        format!("/_matrix/client/v3/room_keys/keys/{room}/sess1?version={version}")
    };
    let (status, body) = s
        .put(&session_path(&v1), t, session(5, 1, false, "first"))
        .await;
    assert_eq!(
        (status, &body["count"]),
        (StatusCode::OK, &json!(1)),
        "{body}"
    );
    let etag1 = body["etag"].clone();

    // A worse copy is ignored (etag unchanged); a better one replaces it.
    let (_, body) = s
        .put(&session_path(&v1), t, session(9, 0, false, "worse"))
        .await;
    assert_eq!(body["etag"], etag1);
    let (_, body) = s
        .put(&session_path(&v1), t, session(9, 0, true, "verified"))
        .await;
    assert_ne!(body["etag"], etag1);
    let (status, key) = s.get(&session_path(&v1), t).await;
    assert_eq!(
        (status, &key["session_data"]["ciphertext"]),
        (StatusCode::OK, &json!("verified"))
    );

    let bulk = json!({"rooms": {room: {"sessions": {"sess2": session(0, 0, false, "two")}}}});
    let (_, body) = s.put(&keys_path(&v1), t, bulk).await;
    assert_eq!(body["count"], 2);
    let (_, all) = s.get(&keys_path(&v1), t).await;
    assert_eq!(all["rooms"][room]["sessions"].as_object().unwrap().len(), 2);
    let (status, empty) = s.get(&room_path("!other:localhost", &v1), t).await;
    assert_eq!((status, empty), (StatusCode::OK, json!({"sessions": {}})));

    let (_, info) = s.get("/_matrix/client/v3/room_keys/version", t).await;
    assert_eq!(
        (info["version"].as_str(), &info["count"]),
        (Some(v1.as_str()), &json!(2))
    );
    assert_eq!(info["auth_data"], auth_data);

    let more = json!({"sessions": {"sess3": session(0, 0, false, "three")}});
    let (_, body) = s.put(&room_path(room, &v1), t, more).await;
    assert_eq!(body["count"], 3);
    let (_, listed) = s.get(&room_path(room, &v1), t).await;
    assert_eq!(listed["sessions"].as_object().unwrap().len(), 3);
    let other_room = room_path("!other:localhost", &v1);
    let (_, body) = s.request(Method::DELETE, &other_room, Some(t), None).await;
    assert_eq!(body["count"], 3);
    let (_, body) = s
        .request(Method::DELETE, &keys_path(&v1), Some(t), None)
        .await;
    assert_eq!(body["count"], 0);

    // Updating the auth data keeps the algorithm; a different algorithm is refused.
    let new_auth = json!({"public_key": "pk2", "signatures": {}});
    let version_path = format!("/_matrix/client/v3/room_keys/version/{v1}");
    let (status, _) = s
        .put(
            &version_path,
            t,
            json!({"algorithm": BACKUP_ALGORITHM, "auth_data": new_auth}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .put(
            &version_path,
            t,
            json!({"algorithm": "m.other", "auth_data": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A newer version makes writes to the old one fail with the current version.
    let (_, body) = s
        .post(
            "/_matrix/client/v3/room_keys/version",
            t,
            json!({"algorithm": BACKUP_ALGORITHM, "auth_data": auth_data}),
        )
        .await;
    let v2 = body["version"].as_str().unwrap().to_owned();
    let (status, body) = s
        .put(&session_path(&v1), t, session(0, 0, true, "late"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        (body["errcode"].as_str(), body["current_version"].as_str()),
        (Some("M_WRONG_ROOM_KEYS_VERSION"), Some(v2.as_str()))
    );

    let (status, body) = s
        .request(Method::DELETE, &session_path(&v2), Some(t), None)
        .await;
    assert_eq!((status, &body["count"]), (StatusCode::OK, &json!(0)));
    let (status, _) = s
        .request(
            Method::DELETE,
            &format!("/_matrix/client/v3/room_keys/version/{v2}"),
            Some(t),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .get(&format!("/_matrix/client/v3/room_keys/version/{v2}"), t)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, info) = s.get("/_matrix/client/v3/room_keys/version", t).await;
    assert_eq!(
        info["version"].as_str(),
        Some(v1.as_str()),
        "the older version is current again"
    );
}

const DEHYDRATED: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device";

async fn dehydrated_device_round_trip(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let (status, _) = s.get(DEHYDRATED, &alice.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let parked = Device {
        user: alice.clone(),
        device_id: "PARKED".into(),
        key: new_key(Some("PARKED")).0,
    };
    let body = json!({
        "device_id": "PARKED",
        "device_data": {"algorithm": "org.matrix.msc3814.v2", "device_pickle": "opaque", "nonce": "n"},
        "initial_device_display_name": "Dehydrated device",
        "device_keys": device_keys(&parked),
        "one_time_keys": one_time_keys(&parked, 0, 2),
    });
    let (status, res) = s.put(DEHYDRATED, &alice.token, body).await;
    assert_eq!(
        (status, &res["device_id"]),
        (StatusCode::OK, &json!("PARKED")),
        "{res}"
    );
    let (_, got) = s.get(DEHYDRATED, &alice.token).await;
    assert_eq!(got["device_data"]["device_pickle"], "opaque");
    let found = query(&s, &bob, &[&alice.user_id]).await;
    assert!(
        found["device_keys"][&alice.user_id]["PARKED"].is_object(),
        "{found}"
    );

    let to_parked = json!({ &alice.user_id: { "PARKED": {"n": 1} } });
    send_to_device(&s, &bob, "p1", to_parked).await;
    let events_path = format!("{DEHYDRATED}/PARKED/events");
    let (status, page) = s.post(&events_path, &alice.token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["events"][0]["content"]["n"], 1);
    let (_, next) = s
        .post(
            &events_path,
            &alice.token,
            json!({"next_batch": page["next_batch"]}),
        )
        .await;
    assert_eq!(next["events"], json!([]));
    let (status, _) = s
        .post(
            &format!("{DEHYDRATED}/OTHER/events"),
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, res) = s
        .request(Method::DELETE, DEHYDRATED, Some(&alice.token), None)
        .await;
    assert_eq!(
        (status, &res["device_id"]),
        (StatusCode::OK, &json!("PARKED"))
    );
    let found = query(&s, &bob, &[&alice.user_id]).await;
    assert!(found["device_keys"][&alice.user_id].get("PARKED").is_none());
}

mod across_servers {
    use super::common::{Backend, postgres_configured};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::devices_and_to_device_across_servers(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if postgres_configured() {
            super::devices_and_to_device_across_servers(Backend::Postgres).await;
        }
    }
}

/// Syncs `user` on `s` from `since` until `done` holds (15 s at most);
/// returns the responses' to-device events and the last token.
async fn sync_until(
    s: &TestServer,
    user: &User,
    mut since: String,
    done: impl Fn(&Value, &[Value]) -> bool,
) -> (Vec<Value>, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut to_device = Vec::new();
    loop {
        let body = s.sync(user, Some(&since), 500).await;
        to_device.extend(
            body["to_device"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        since = body["next_batch"].as_str().unwrap().to_owned();
        if done(&body, &to_device) {
            return (to_device, since);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never happened; last sync {body}"
        );
    }
}

/// Users of two servers sharing a room: one's new device keys reach the
/// other's device list changes and key queries; to-device messages cross
/// once, also when the sender retries its transaction.
async fn devices_and_to_device_across_servers(backend: common::Backend) {
    let fast = |c: &mut corvid::Config| c.federation.retry_min_ms = 100;
    let a = TestServer::start_federating(backend, "127.0.0.1", fast)
        .await
        .unwrap();
    let b = TestServer::start_federating(backend, "localhost", fast)
        .await
        .unwrap();
    let alice = device(&a, &a.register("alice").await).await;
    let bob = device(&b, &b.register("bob").await).await;
    let (_, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            &alice.user.token,
            json!({"preset": "public_chat"}),
        )
        .await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    let join = format!(
        "/_matrix/client/v3/join/{}?via={}",
        common::urlencode(&room),
        common::urlencode(a.server_name())
    );
    let (status, body) = b.post(&join, &bob.user.token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let since = a.sync(&alice.user, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, body) = upload(&b, &bob, json!({"device_keys": device_keys(&bob)})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bob_id = bob.user.user_id.clone();
    let (_, since) = sync_until(&a, &alice.user, since, |body, _| {
        body["device_lists"]["changed"]
            .as_array()
            .is_some_and(|c| c.contains(&json!(bob_id)))
    })
    .await;
    let (status, found) = a
        .post(
            "/_matrix/client/v3/keys/query",
            &alice.user.token,
            json!({"device_keys": {&bob_id: []}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert!(
        found["device_keys"][&bob_id][&bob.device_id].is_object(),
        "{found}"
    );

    let bob_since = b.sync(&bob.user, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = "/_matrix/client/v3/sendToDevice/org.example.ping/td1";
    let message = json!({"messages": {&bob_id: {&bob.device_id: {"n": 1}}}});
    for _ in 0..2 {
        let (status, body) = a.put(path, &alice.user.token, message.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (received, bob_since) = sync_until(&b, &bob.user, bob_since, |_, to_device| {
        !to_device.is_empty()
    })
    .await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["sender"], alice.user.user_id);
    assert_eq!(received[0]["type"], "org.example.ping");
    assert_eq!(received[0]["content"], json!({"n": 1}));
    // Nothing more arrives (the retry was the same transaction).
    let later = b.sync(&bob.user, Some(&bob_since), 1_000).await;
    assert!(
        later["to_device"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{later}"
    );
    let _ = since;
}

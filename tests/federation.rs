//! Federation between real Corvid servers on loopback, over TLS with
//! certificates from a test CA: published and notarised keys, X-Matrix
//! verification of inbound requests (and the refusals), remote media
//! fetched over federation and served from the cache, and the client and
//! federation APIs on one port.

mod common;

use std::io::Cursor;

use common::{
    Backend, TestServer, json_of,
    signed::{federation_url, signed, signed_json, signing_key, x_matrix},
};
use image::{ImageFormat, RgbImage};
use rand::RngCore;
use reqwest::{Method, StatusCode, header};
use ruma::{CanonicalJsonObject, serde::Base64, signatures::PublicKeyMap};
use serde_json::{Value, json};

each_backend!(
    keys_are_self_signed_and_notaries_countersign,
    signed_requests_are_verified_and_bad_ones_refused,
    remote_media_is_fetched_over_federation_and_cached,
    one_listener_serves_client_and_federation,
    profiles_and_aliases_are_asked_of_their_server,
    keys_of_other_servers_users_are_queried_and_claimed,
    public_rooms_of_another_server,
    openid_tokens_prove_who_a_user_is,
    forged_and_malformed_events_are_refused,
    room_events_are_served_to_servers_in_the_room,
    server_well_known_delegates_when_configured,
);

/// Two servers: one named by IP literal, one by `localhost` (discovery
/// steps 1 and 2), each trusting the test CA.
async fn pair(backend: Backend) -> (TestServer, TestServer) {
    let a = TestServer::start_federating(backend, "127.0.0.1", |_| {})
        .await
        .unwrap();
    let b = TestServer::start_federating(backend, "localhost", |_| {})
        .await
        .unwrap();
    (a, b)
}

/// An unauthenticated request to the federation listener (the key API).
async fn unsigned(
    s: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = s.http().request(method.clone(), federation_url(s, path));
    if let Some(body) = body {
        req = req.json(&body);
    }
    json_of(req.send().await.unwrap(), &method, path).await
}

fn canonical(value: &Value) -> CanonicalJsonObject {
    serde_json::from_value(value.clone()).unwrap()
}

/// Checks `object`'s signature by `entity` with `entity`'s `verify_keys`.
fn assert_signed_by(object: &Value, entity: &str, verify_keys: &Value) {
    let keys = verify_keys
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, k)| {
            let key = Base64::parse(k["key"].as_str().unwrap()).unwrap();
            (id.clone(), key)
        })
        .collect();
    let mut only = canonical(object);
    let signatures = json!({entity: object["signatures"][entity]});
    only.insert(
        "signatures".into(),
        serde_json::from_value(signatures).unwrap(),
    );
    let map = PublicKeyMap::from([(entity.to_owned(), keys)]);
    ruma::signatures::verify_json(&map, &only)
        .unwrap_or_else(|e| panic!("signature by {entity} on {object}: {e}"));
}

async fn keys_are_self_signed_and_notaries_countersign(backend: Backend) {
    let (a, b) = pair(backend).await;
    let (status, own) = unsigned(&a, Method::GET, "/_matrix/key/v2/server", None).await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(own["server_name"], a.server_name());
    assert!(own["valid_until_ts"].as_i64().unwrap() > corvid::now_ms());
    assert!(own["old_verify_keys"].is_object());
    assert_signed_by(&own, a.server_name(), &own["verify_keys"]);

    // b fetches a's keys over TLS and relays them, signed by both.
    let query = json!({"server_keys": {a.server_name(): {}}});
    let (status, relayed) = unsigned(&b, Method::POST, "/_matrix/key/v2/query", Some(query)).await;
    assert_eq!(status, StatusCode::OK, "{relayed}");
    let keys = relayed["server_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{relayed}");
    let (_, b_own) = unsigned(&b, Method::GET, "/_matrix/key/v2/server", None).await;
    assert_eq!(keys[0]["verify_keys"], own["verify_keys"]);
    assert_signed_by(&keys[0], a.server_name(), &own["verify_keys"]);
    assert_signed_by(&keys[0], b.server_name(), &b_own["verify_keys"]);

    // The GET form, served from b's cache.
    let path = format!("/_matrix/key/v2/query/{}", a.server_name());
    let (status, cached) = unsigned(&b, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{cached}");
    assert_eq!(cached["server_keys"][0]["verify_keys"], own["verify_keys"]);

    // A server nobody can reach: no keys, not an error.
    let query = json!({"server_keys": {"127.0.0.1:1": {}}});
    let (status, none) = unsigned(&b, Method::POST, "/_matrix/key/v2/query", Some(query)).await;
    assert_eq!(status, StatusCode::OK, "{none}");
    assert_eq!(none["server_keys"], json!([]));
}

async fn signed_requests_are_verified_and_bad_ones_refused(backend: Backend) {
    let (a, b) = pair(backend).await;
    let version = "/_matrix/federation/v1/version";
    let (status, body) = signed_json(&b, &a, Method::GET, version, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["server"]["name"], "Corvid");

    // An endpoint that requires a signature: b's verifies once a has
    // fetched b's keys from b (the media is unknown, so 404 past the check).
    let path = "/_matrix/federation/v1/media/download/unknown";
    let refused = |(status, body): (StatusCode, Value)| {
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("M_UNAUTHORIZED")),
            "{body}"
        );
    };
    let (status, body) = signed_json(&b, &a, Method::GET, path, None).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );

    // No Authorization header.
    refused(unsigned(&a, Method::GET, path, None).await);

    let send_with = |auth: String| async {
        let res = a
            .http()
            .get(federation_url(&a, path))
            .header(header::AUTHORIZATION, auth)
            .send()
            .await
            .unwrap();
        json_of(res, &Method::GET, path).await
    };
    let b_key = signing_key(&b);
    let (b_name, a_name) = (b.server_name(), a.server_name());
    // Signed for another destination.
    let auth = x_matrix(
        &b_key,
        b_name,
        "elsewhere.example",
        &Method::GET,
        path,
        None,
    );
    refused(send_with(auth).await);
    // Signed for one URI, sent to another.
    let other = "/_matrix/federation/v1/media/download/other";
    refused(send_with(x_matrix(&b_key, b_name, a_name, &Method::GET, other, None)).await);
    // A forged origin: a key that is not b's, claiming to be b.
    let dir = tempfile::tempdir().unwrap();
    let stranger =
        corvid_federation::ServerSigningKey::load_or_generate(&dir.path().join("k")).unwrap();
    refused(
        send_with(x_matrix(
            &stranger,
            b_name,
            a_name,
            &Method::GET,
            path,
            None,
        ))
        .await,
    );
    // An origin that cannot be reached for its keys.
    refused(
        send_with(x_matrix(
            &stranger,
            "127.0.0.1:1",
            a_name,
            &Method::GET,
            path,
            None,
        ))
        .await,
    );
    // A header that is not X-Matrix at all.
    refused(send_with("Bearer abc".into()).await);
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Uploads to `s` as `user`; the `mxc://` id's media id.
async fn upload(s: &TestServer, user: &common::User, bytes: Vec<u8>, content_type: &str) -> String {
    let res = s
        .http()
        .post(format!("{}/_matrix/media/v3/upload?filename=f.bin", s.base))
        .bearer_auth(&user.token)
        .header(header::CONTENT_TYPE, content_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    let uri = body["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned();
    uri.rsplit('/').next().unwrap().to_owned()
}

/// The file part of a federation media response, read as it streams.
async fn read_multipart(res: reqwest::Response) -> (corvid_federation::media::FilePart, Vec<u8>) {
    let content_type = res.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let boundary = corvid_federation::media::boundary(&content_type).unwrap();
    let mut reader =
        corvid_federation::media::MultipartReader::new(Box::pin(res.bytes_stream()), &boundary);
    let part = reader.read_head().await.unwrap();
    let mut got = Vec::new();
    let mut stream = Box::pin(reader.into_file());
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        got.extend_from_slice(&chunk.unwrap());
    }
    (part, got)
}

async fn remote_media_is_fetched_over_federation_and_cached(backend: Backend) {
    let (mut a, b) = pair(backend).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let file = random_bytes(3 * 1024 * 1024 + 17);
    let media_id = upload(&a, &alice, file.clone(), "application/octet-stream").await;
    let picture = upload(&a, &alice, png(640, 480), "image/png").await;

    // a serves its own media to b as multipart/mixed.
    let path = format!("/_matrix/federation/v1/media/download/{media_id}");
    let res = signed(&b, &a, Method::GET, &path, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (part, got) = read_multipart(res).await;
    assert_eq!(
        part.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert!(got == file, "federation download is byte-exact");
    let missing = signed(
        &b,
        &a,
        Method::GET,
        "/_matrix/federation/v1/media/download/nope",
        None,
    )
    .await;
    let (status, body) = json_of(
        missing,
        &Method::GET,
        "/_matrix/federation/v1/media/download/nope",
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );

    // A thumbnail over federation: the same framing, an image inside.
    let path =
        format!("/_matrix/federation/v1/media/thumbnail/{picture}?width=64&height=64&method=crop");
    let res = signed(&b, &a, Method::GET, &path, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (part, bytes) = read_multipart(res).await;
    assert!(part.content_type.unwrap().starts_with("image/"));
    let image = image::load_from_memory(&bytes).unwrap();
    // spec: at least the size asked for (a pre-generated 96×96 crop may serve).
    assert_eq!(image.width(), image.height());
    assert!((64..=96).contains(&image.width()), "{}", image.width());

    // bob on b asks b for a's media: b fetches it over federation.
    let a_name = a.server_name().to_owned();
    let download = |media: &str| {
        format!(
            "{}/_matrix/client/v1/media/download/{}/{media}",
            b.base, a_name
        )
    };
    let res = b
        .http()
        .get(download(&media_id))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()[header::CONTENT_TYPE],
        "application/octet-stream"
    );
    assert!(
        res.bytes().await.unwrap() == file,
        "remote download is byte-exact"
    );
    // A thumbnail of remote media, made from the cached original.
    let thumb = format!(
        "{}/_matrix/client/v1/media/thumbnail/{}/{picture}?width=96&height=96&method=scale",
        b.base,
        a.server_name()
    );
    let res = b
        .http()
        .get(&thumb)
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let image = image::load_from_memory(&res.bytes().await.unwrap()).unwrap();
    assert!(image.width() <= 96 && image.height() <= 96 && image.width() > 0);
    // Unknown remote media is a 404 for the client.
    let res = b
        .http()
        .get(download("nope"))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(
        res,
        &Method::GET,
        &format!("/_matrix/client/v1/media/download/{}/nope", a.server_name()),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );

    // With a down, b still serves what it cached; what it never had is a 502.
    a.shut_down().await;
    let res = b
        .http()
        .get(download(&media_id))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.bytes().await.unwrap() == file,
        "cached copy is byte-exact"
    );
    let res = b
        .http()
        .get(download("neverseen"))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    let path = format!(
        "/_matrix/client/v1/media/download/{}/neverseen",
        a.server_name()
    );
    let (status, body) = json_of(res, &Method::GET, &path).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
}

async fn one_listener_serves_client_and_federation(backend: Backend) {
    // TLS on the one listener that serves everything.
    let ca = common::tls::TestCa::get();
    let Some(s) = TestServer::start_with(backend, |config| {
        config.tls = Some(corvid::config::Tls {
            certificate: ca.certificate(),
            private_key: ca.private_key(),
            listeners: vec![corvid::config::ListenerKind::Client],
        });
    })
    .await
    else {
        return;
    };
    assert!(s.base.starts_with("https://"));
    let (status, _) = s
        .request(Method::GET, "/_matrix/client/versions", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, keys) = s
        .request(Method::GET, "/_matrix/key/v2/server", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys["server_name"], s.server_name());

    // With a federation listener of its own, the client port serves no federation.
    let (a, _b) = pair(backend).await;
    let (status, body) = a
        .request(Method::GET, "/_matrix/key/v2/server", None, None)
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_UNRECOGNIZED"))
    );
    let res = a
        .http()
        .get(federation_url(&a, "/_matrix/client/versions"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

async fn profiles_and_aliases_are_asked_of_their_server(backend: Backend) {
    let (a, b) = pair(backend).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let alice_id = &alice.user_id;
    let path = format!("/_matrix/client/v3/profile/{alice_id}/displayname");
    let (status, _) = a
        .put(&path, &alice.token, json!({"displayname": "Alice A"}))
        .await;
    assert_eq!(status, StatusCode::OK);

    // bob's server asks alice's.
    let (status, profile) = b
        .get(
            &format!("/_matrix/client/v3/profile/{alice_id}"),
            &bob.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["displayname"], "Alice A");
    let (status, name) = b.get(&path, &bob.token).await;
    assert_eq!(
        (status, &name["displayname"]),
        (StatusCode::OK, &json!("Alice A"))
    );
    let nobody = format!("/_matrix/client/v3/profile/@nobody:{}", a.server_name());
    let (status, body) = b.get(&nobody, &bob.token).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );

    // The federation endpoint answers only for its own users, one field when asked.
    let query = format!(
        "/_matrix/federation/v1/query/profile?user_id={}&field=displayname",
        common::urlencode(alice_id)
    );
    let (status, body) = signed_json(&b, &a, Method::GET, &query, None).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"displayname": "Alice A"}))
    );
    let query = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        common::urlencode(&bob.user_id)
    );
    let (status, _) = signed_json(&b, &a, Method::GET, &query, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Aliases resolve on the alias's server.
    let room = a
        .create_room(&alice, json!({"room_alias_name": "chat"}))
        .await;
    let alias = format!("#chat:{}", a.server_name());
    let lookup = format!(
        "/_matrix/client/v3/directory/room/{}",
        common::urlencode(&alias)
    );
    let (status, found) = b.get(&lookup, &bob.token).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["room_id"], room);
    assert_eq!(found["servers"], json!([a.server_name()]));
    let query = format!(
        "/_matrix/federation/v1/query/directory?room_alias={}",
        common::urlencode(&alias)
    );
    let (status, body) = signed_json(&b, &a, Method::GET, &query, None).await;
    assert_eq!((status, &body["room_id"]), (StatusCode::OK, &json!(room)));
    let missing = format!(
        "/_matrix/client/v3/directory/room/{}",
        common::urlencode(&format!("#nope:{}", a.server_name()))
    );
    let (status, body) = b.get(&missing, &bob.token).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
}

/// alice's device on `a`, with signed identity keys and two one-time keys uploaded.
async fn upload_device_keys(a: &TestServer, alice: &common::User) -> String {
    let (_, whoami) = a
        .get("/_matrix/client/v3/account/whoami", &alice.token)
        .await;
    let device_id = whoami["device_id"].as_str().unwrap().to_owned();
    let der = ruma::signatures::Ed25519KeyPair::generate();
    let key = ruma::signatures::Ed25519KeyPair::from_der(&der, device_id.clone()).unwrap();
    let public =
        Base64::<ruma::serde::base64::Standard, _>::new(key.public_key().to_vec()).encode();
    let sign = |value: Value| {
        let mut object = canonical(&value);
        ruma::signatures::sign_json(&alice.user_id, &key, &mut object).unwrap();
        serde_json::to_value(object).unwrap()
    };
    let device_keys = sign(json!({
        "user_id": alice.user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device_id}"): "curve-public",
            format!("ed25519:{device_id}"): public,
        },
    }));
    let one_time_keys = json!({
        "signed_curve25519:AAAA1": sign(json!({"key": "otk1"})),
        "signed_curve25519:AAAA2": sign(json!({"key": "otk2"})),
    });
    let body = json!({"device_keys": device_keys, "one_time_keys": one_time_keys});
    let (status, res) = a
        .post("/_matrix/client/v3/keys/upload", &alice.token, body)
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    device_id
}

async fn keys_of_other_servers_users_are_queried_and_claimed(backend: Backend) {
    let (a, b) = pair(backend).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let device_id = upload_device_keys(&a, &alice).await;

    // bob's /keys/query reaches a; an unreachable server is a failure entry.
    let body = json!({"device_keys": {alice.user_id.clone(): [], "@x:127.0.0.1:1": []}});
    let (status, keys) = b
        .post("/_matrix/client/v3/keys/query", &bob.token, body)
        .await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let device = &keys["device_keys"][&alice.user_id][&device_id];
    assert_eq!(device["device_id"], device_id.as_str(), "{keys}");
    assert!(
        keys["failures"]["127.0.0.1:1"]["status"].is_number(),
        "{keys}"
    );
    assert!(keys["failures"].get(a.server_name()).is_none(), "{keys}");

    // Claims go to a too, each one-time key handed out once.
    let claim =
        json!({"one_time_keys": {alice.user_id.clone(): {device_id.clone(): "signed_curve25519"}}});
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let (status, res) = b
            .post("/_matrix/client/v3/keys/claim", &bob.token, claim.clone())
            .await;
        assert_eq!(status, StatusCode::OK, "{res}");
        if let Some(keys) = res["one_time_keys"][&alice.user_id][&device_id].as_object() {
            claimed.extend(keys.keys().cloned());
        }
    }
    claimed.sort();
    assert_eq!(
        claimed,
        ["signed_curve25519:AAAA1", "signed_curve25519:AAAA2"]
    );

    // The federation endpoints themselves.
    let devices = format!(
        "/_matrix/federation/v1/user/devices/{}",
        common::urlencode(&alice.user_id)
    );
    let (status, list) = signed_json(&b, &a, Method::GET, &devices, None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["user_id"], alice.user_id.as_str());
    assert_eq!(
        list["devices"][0]["device_id"],
        device_id.as_str(),
        "{list}"
    );
    assert!(list["stream_id"].as_u64().unwrap() > 0);
    let elsewhere = format!(
        "/_matrix/federation/v1/user/devices/{}",
        common::urlencode(&bob.user_id)
    );
    let (status, _) = signed_json(&b, &a, Method::GET, &elsewhere, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let path = "/_matrix/federation/v1/user/keys/query";
    let body = json!({"device_keys": {alice.user_id.clone(): []}});
    let (status, res) = signed_json(&b, &a, Method::POST, path, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{res}");
    assert!(
        res["device_keys"][&alice.user_id][&device_id].is_object(),
        "{res}"
    );
    let path = "/_matrix/federation/v1/user/keys/claim";
    let (status, res) = signed_json(&b, &a, Method::POST, path, Some(claim)).await;
    assert_eq!(
        (status, &res["one_time_keys"]),
        (StatusCode::OK, &json!({})),
        "{res}"
    );
}

async fn public_rooms_of_another_server(backend: Backend) {
    let (a, b) = pair(backend).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(
            &alice,
            json!({"visibility": "public", "name": "Lobby", "preset": "public_chat"}),
        )
        .await;
    a.create_room(&alice, json!({"name": "Private"})).await;

    let listing = format!(
        "/_matrix/client/v3/publicRooms?server={}",
        common::urlencode(a.server_name())
    );
    let (status, body) = b.get(&listing, &bob.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rooms: Vec<&Value> = body["chunk"].as_array().unwrap().iter().collect();
    assert_eq!(rooms.len(), 1, "{body}");
    assert_eq!(
        (&rooms[0]["room_id"], &rooms[0]["name"]),
        (&json!(room), &json!("Lobby"))
    );

    let filtered = format!(
        "/_matrix/client/v3/publicRooms?server={}",
        common::urlencode(a.server_name())
    );
    let (status, found) = b
        .post(
            &filtered,
            &bob.token,
            json!({"filter": {"generic_search_term": "lob"}}),
        )
        .await;
    assert_eq!(
        (status, found["chunk"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1)),
        "{found}"
    );
    let (_, none) = b
        .post(
            &filtered,
            &bob.token,
            json!({"filter": {"generic_search_term": "zzz"}}),
        )
        .await;
    assert_eq!(none["chunk"], json!([]));

    // The federation endpoints, GET and POST.
    let path = "/_matrix/federation/v1/publicRooms";
    let (status, body) = signed_json(&b, &a, Method::GET, path, None).await;
    assert_eq!(
        (status, body["chunk"][0]["room_id"].as_str()),
        (StatusCode::OK, Some(room.as_str()))
    );
    let query = json!({"limit": 5, "filter": {"generic_search_term": "lobby"}});
    let (status, body) = signed_json(&b, &a, Method::POST, path, Some(query)).await;
    assert_eq!(
        (status, body["chunk"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
    // A server that cannot be reached: 502 for the client.
    let (status, body) = b
        .get(
            "/_matrix/client/v3/publicRooms?server=127.0.0.1:1",
            &bob.token,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
}

async fn openid_tokens_prove_who_a_user_is(backend: Backend) {
    let a = TestServer::start_federating(backend, "127.0.0.1", |_| {})
        .await
        .unwrap();
    let alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let path = format!(
        "/_matrix/client/v3/user/{}/openid/request_token",
        common::urlencode(&alice.user_id)
    );
    let (status, token) = a.post(&path, &alice.token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["matrix_server_name"], a.server_name());
    assert!(token["expires_in"].as_u64().unwrap() > 0);
    let (status, body) = a.post(&path, &bob.token, json!({})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN"))
    );

    // A third party asks the federation listener, with no other credentials.
    let access_token = token["access_token"].as_str().unwrap();
    let userinfo = format!("/_matrix/federation/v1/openid/userinfo?access_token={access_token}");
    let (status, who) = unsigned(&a, Method::GET, &userinfo, None).await;
    assert_eq!(
        (status, &who["sub"]),
        (StatusCode::OK, &json!(alice.user_id))
    );
    let wrong = "/_matrix/federation/v1/openid/userinfo?access_token=nope";
    let (status, body) = unsigned(&a, Method::GET, wrong, None).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN"))
    );
    // The OpenID token is no access token.
    let (status, _) = a
        .get("/_matrix/client/v3/account/whoami", access_token)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A PDU of `room` (version 12) from `sender`, built on `prev` with
/// `auth_events`, signed by `key` as `origin`; its event id.
fn pdu(
    key: &corvid_federation::ServerSigningKey,
    origin: &str,
    room: &str,
    sender: &str,
    (prev, depth): (&str, i64),
    auth_events: &[&str],
    content: Value,
) -> (String, CanonicalJsonObject) {
    let rules = ruma::room_version_rules::RoomVersionRules::V12;
    let mut object = canonical(&json!({
        "room_id": room,
        "sender": sender,
        "type": "m.room.message",
        "content": content,
        "origin_server_ts": corvid::now_ms(),
        "depth": depth,
        "prev_events": [prev],
        "auth_events": auth_events,
    }));
    corvid_federation::sign_pdu(&mut object, origin, key, &rules).unwrap();
    let id = corvid_federation::event_id_for(&object, &rules).unwrap();
    (id.to_string(), object)
}

/// Events another server sends are checked like the spec says: a valid one
/// is accepted, one whose content does not match its hash is redacted, one
/// with a signature by an unknown key is dropped, one its sender may not
/// send is rejected; the transaction is applied once, and malformed or
/// misattributed requests are refused.
async fn forged_and_malformed_events_are_refused(backend: Backend) {
    let (a, b) = pair(backend).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let (status, res) = b
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                common::urlencode(&room),
                common::urlencode(a.server_name())
            ),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    let (_, state) = a
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state",
                common::urlencode(&room)
            ),
            &alice.token,
        )
        .await;
    let id_of = |kind: &str, key: &str| {
        state
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == kind && e["state_key"] == key)
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let (levels, bob_join) = (
        id_of("m.room.power_levels", ""),
        id_of("m.room.member", &bob.user_id),
    );
    let path = format!(
        "/_matrix/federation/v1/event/{}",
        common::urlencode(&bob_join)
    );
    let (status, join) = signed_json(&b, &a, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{join}");
    let depth = join["pdus"][0]["depth"].as_i64().unwrap() + 1;

    let b_key = signing_key(&b);
    let b_name = b.server_name();
    let auth = [levels.as_str(), bob_join.as_str()];
    let text = |body: &str| json!({"msgtype": "m.text", "body": body});
    let (good, good_pdu) = pdu(
        &b_key,
        b_name,
        &room,
        &bob.user_id,
        (&bob_join, depth),
        &auth,
        text("fine"),
    );
    let (tampered, mut tampered_pdu) = pdu(
        &b_key,
        b_name,
        &room,
        &bob.user_id,
        (&bob_join, depth),
        &auth,
        text("original"),
    );
    tampered_pdu.insert(
        "content".into(),
        canonical(&json!({"c": text("changed")}))
            .remove("c")
            .unwrap(),
    );
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger_key =
        corvid_federation::ServerSigningKey::load_or_generate(&stranger_dir.path().join("k"))
            .unwrap();
    let (unknown_key, unknown_key_pdu) = pdu(
        &stranger_key,
        b_name,
        &room,
        &bob.user_id,
        (&bob_join, depth),
        &auth,
        text("who signed this"),
    );
    let mallory = format!("@mallory:{b_name}");
    let (outsider, outsider_pdu) = pdu(
        &b_key,
        b_name,
        &room,
        &mallory,
        (&bob_join, depth),
        &[&levels],
        text("let me talk"),
    );

    let txn = json!({
        "origin": b_name,
        "origin_server_ts": corvid::now_ms(),
        "pdus": [good_pdu, tampered_pdu, unknown_key_pdu, outsider_pdu],
    });
    let send = "/_matrix/federation/v1/send/forged-1";
    let (status, results) = signed_json(&b, &a, Method::PUT, send, Some(txn.clone())).await;
    assert_eq!(status, StatusCode::OK, "{results}");
    let result = |id: &str| results["pdus"][id].clone();
    assert_eq!(result(&good), json!({}), "{results}");
    assert_eq!(
        result(&tampered),
        json!({}),
        "a hash mismatch redacts, it does not reject: {results}"
    );
    assert!(result(&unknown_key)["error"].is_string(), "{results}");
    assert!(result(&outsider)["error"].is_string(), "{results}");

    let event = |id: &str| {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            common::urlencode(&room),
            common::urlencode(id)
        );
        let (a, token) = (&a, alice.token.clone());
        async move { a.get(&path, &token).await }
    };
    let (status, fine) = event(&good).await;
    assert_eq!(
        (status, &fine["content"]["body"]),
        (StatusCode::OK, &json!("fine"))
    );
    let (status, redacted) = event(&tampered).await;
    assert_eq!(status, StatusCode::OK, "{redacted}");
    assert_eq!(
        redacted["content"],
        json!({}),
        "stored redacted: {redacted}"
    );
    for dropped in [&unknown_key, &outsider] {
        assert_eq!(event(dropped).await.0, StatusCode::NOT_FOUND);
    }

    // The same transaction again: the same answer, nothing applied twice.
    let (status, again) = signed_json(&b, &a, Method::PUT, send, Some(txn)).await;
    assert_eq!((status, &again), (StatusCode::OK, &results));
    let (_, page) = a
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
                common::urlencode(&room)
            ),
            &alice.token,
        )
        .await;
    let copies = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["content"]["body"] == "fine")
        .count();
    assert_eq!(copies, 1);

    // Misattributed and oversized transactions.
    let misattributed = json!({"origin": "evil.example", "origin_server_ts": 1, "pdus": []});
    let path = "/_matrix/federation/v1/send/forged-2";
    let (status, body) = signed_json(&b, &a, Method::PUT, path, Some(misattributed)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let too_many = json!({"origin": b_name, "origin_server_ts": 1, "pdus": vec![json!({}); 51]});
    let path = "/_matrix/federation/v1/send/forged-3";
    let (status, body) = signed_json(&b, &a, Method::PUT, path, Some(too_many)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // A join template for another server's user, and events of a room the
    // asking server is not in.
    let path = format!(
        "/_matrix/federation/v1/make_join/{}/{}",
        common::urlencode(&room),
        common::urlencode(&alice.user_id)
    );
    let (status, body) = signed_json(&b, &a, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let private = a
        .create_room(&alice, json!({"preset": "private_chat"}))
        .await;
    let path = format!(
        "/_matrix/federation/v1/state_ids/{}?event_id={}",
        common::urlencode(&private),
        common::urlencode(&good)
    );
    let (status, body) = signed_json(&b, &a, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

/// The event endpoints other servers use, answered for a server with a
/// member in the room (and checked against the spec's schemas).
async fn room_events_are_served_to_servers_in_the_room(backend: Backend) {
    let (a, b) = pair(backend).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let enc = common::urlencode;
    let join = format!(
        "/_matrix/client/v3/join/{}?via={}",
        enc(&room),
        enc(a.server_name())
    );
    let (status, res) = b.post(&join, &bob.token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{res}");
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(
            a.send_text(&alice, &room, &format!("e{n}"), &format!("m{n}"))
                .await,
        );
    }
    let (first, last) = (&sent[0], &sent[4]);
    let get = |path: String| {
        let (a, b) = (&a, &b);
        async move { signed_json(b, a, Method::GET, &path, None).await }
    };

    let (status, event) = get(format!("/_matrix/federation/v1/event/{}", enc(last))).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["pdus"][0]["content"]["body"], "m4");

    let (status, ids) = get(format!(
        "/_matrix/federation/v1/state_ids/{}?event_id={}",
        enc(&room),
        enc(last)
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{ids}");
    let state_ids = ids["pdu_ids"].as_array().unwrap().len();
    assert!(
        state_ids >= 6,
        "create, member x2, power levels, join rules, history visibility: {ids}"
    );
    assert!(!ids["auth_chain_ids"].as_array().unwrap().is_empty());
    let (status, state) = get(format!(
        "/_matrix/federation/v1/state/{}?event_id={}",
        enc(&room),
        enc(last)
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["pdus"].as_array().unwrap().len(), state_ids);

    let (status, chain) = get(format!(
        "/_matrix/federation/v1/event_auth/{}/{}",
        enc(&room),
        enc(last)
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{chain}");
    assert!(
        chain["auth_chain"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create")
    );

    let path = format!("/_matrix/federation/v1/get_missing_events/{}", enc(&room));
    let body = json!({"earliest_events": [first], "latest_events": [last], "limit": 10});
    let (status, missing) = signed_json(&b, &a, Method::POST, &path, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{missing}");
    let bodies: Vec<&str> = missing["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(
        bodies,
        ["m1", "m2", "m3"],
        "the events in between, oldest first"
    );

    let (status, history) = get(format!(
        "/_matrix/federation/v1/backfill/{}?v={}&limit=3",
        enc(&room),
        enc(last)
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let bodies: Vec<&str> = history["pdus"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(
        bodies,
        ["m4", "m3", "m2"],
        "from the given event back, newest first"
    );

    let (status, near) = get(format!(
        "/_matrix/federation/v1/timestamp_to_event/{}?ts=0&dir=f",
        enc(&room)
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{near}");
    let (status, create) = get(format!(
        "/_matrix/federation/v1/event/{}",
        enc(near["event_id"].as_str().unwrap())
    ))
    .await;
    assert_eq!(
        (status, &create["pdus"][0]["type"]),
        (StatusCode::OK, &json!("m.room.create"))
    );

    // A server with nobody in the room is told no.
    let c = TestServer::start_federating(backend, "127.0.0.1", |_| {})
        .await
        .unwrap();
    let path = format!("/_matrix/federation/v1/event/{}", enc(last));
    let (status, body) = signed_json(&c, &a, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

/// `/.well-known/matrix/server` names the configured delegate, and is 404
/// when the server does not delegate.
async fn server_well_known_delegates_when_configured(backend: Backend) {
    let delegating = TestServer::start_with(backend, |c| {
        c.federation.well_known_server = Some("matrix.example.org:8448".try_into().unwrap());
    })
    .await
    .unwrap();
    let (status, body) = delegating
        .request(Method::GET, "/.well-known/matrix/server", None, None)
        .await;
    assert_eq!(
        (status, &body["m.server"]),
        (StatusCode::OK, &json!("matrix.example.org:8448"))
    );
    let plain = TestServer::start(backend).await.unwrap();
    let (status, body) = plain
        .request(Method::GET, "/.well-known/matrix/server", None, None)
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
}

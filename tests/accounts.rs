//! Accounts, sessions, devices, profile, shared-secret registration.

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_backends!(
    register_login_whoami_logout,
    uia_challenge_and_user_in_use,
    devices_and_password_change,
    profile_propagates_to_rooms,
    refresh_tokens_rotate,
    shared_secret_registration,
    deactivation_leaves_rooms_and_locks_out,
    discovery_capabilities_and_push_rules,
    login_tokens_log_in_once,
    registration_token_validity,
    deleting_profile_fields,
    devices_seen_together_are_all_recorded,
);

async fn login_tokens_log_in_once(s: TestServer) {
    let alice = s.register("alice").await;
    let (_, flows) = s
        .request(Method::GET, "/_matrix/client/v3/login", None, None)
        .await;
    assert!(
        flows["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "m.login.token" && f["get_login_token"] == true)
    );
    // Re-authentication first (user-interactive auth).
    let (status, challenge) = s
        .post(
            "/_matrix/client/v1/login/get_token",
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    let auth = json!({"auth": {"type": "m.login.password", "session": challenge["session"],
        "identifier": {"type": "m.id.user", "user": "alice"}, "password": "secret-pw"}});
    let (status, token) = s
        .post("/_matrix/client/v1/login/get_token", &alice.token, auth)
        .await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert!(token["expires_in_ms"].as_u64().is_some_and(|ms| ms > 0));
    let login = json!({"type": "m.login.token", "token": token["login_token"]});
    let (status, session) = s
        .request(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(login.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["user_id"], alice.user_id);
    let (status, again) = s
        .request(Method::POST, "/_matrix/client/v3/login", None, Some(login))
        .await;
    assert_eq!(
        (status, again["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN"))
    );
    let (_, caps) = s.get("/_matrix/client/v3/capabilities", &alice.token).await;
    assert_eq!(caps["capabilities"]["m.get_login_token"]["enabled"], true);
}

async fn registration_token_validity(s: TestServer) {
    let path = |t: &str| {
        format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={t}")
    };
    let (status, body) = s.request(Method::GET, &path("nope"), None, None).await;
    assert_eq!((status, &body["valid"]), (StatusCode::OK, &json!(false)));
    let dir = s.data_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corvid"))
        .args(["registration-token", "create", "opensesame", "--uses", "1"])
        .env("CORVID_DATABASE_URL", &s.config.database_url)
        .env("CORVID_DATA_DIR", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = s
        .request(Method::GET, &path("opensesame"), None, None)
        .await;
    assert_eq!((status, &body["valid"]), (StatusCode::OK, &json!(true)));
}

async fn deleting_profile_fields(s: TestServer) {
    let alice = s.register("alice").await;
    let field = format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id);
    s.put(&field, &alice.token, json!({"displayname": "Alice"}))
        .await;
    let (status, _) = s
        .request(Method::DELETE, &field, Some(&alice.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, profile) = s
        .get(
            &format!("/_matrix/client/v3/profile/{}", alice.user_id),
            &alice.token,
        )
        .await;
    assert!(profile.get("displayname").is_none(), "{profile}");
    let bob = s.register("bob").await;
    let (status, _) = s
        .request(Method::DELETE, &field, Some(&bob.token), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let custom = format!(
        "/_matrix/client/v3/profile/{}/org.example.pronouns",
        alice.user_id
    );
    let (status, _) = s
        .request(Method::DELETE, &custom, Some(&alice.token), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn register_login_whoami_logout(s: TestServer) {
    let alice = s.register("alice").await;
    let (status, me) = s
        .get("/_matrix/client/v3/account/whoami", &alice.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user_id"], "@alice:localhost");

    let (status, login) = s
        .request(Method::POST, "/_matrix/client/v3/login", None, Some(json!({
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "secret-pw"
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let token2 = login["access_token"].as_str().unwrap();

    let (status, bad) = s
        .request(
            Method::POST,
            "/_matrix/client/r0/login",
            None,
            Some(json!({
                "type": "m.login.password", "user": "alice", "password": "wrong"
            })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(bad["errcode"], "M_FORBIDDEN");

    let (status, _) = s.post("/_matrix/client/v3/logout", token2, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, gone) = s.get("/_matrix/client/v3/account/whoami", token2).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(gone["errcode"], "M_UNKNOWN_TOKEN");
    let (status, _) = s
        .get("/_matrix/client/v3/account/whoami", &alice.token)
        .await;
    assert_eq!(status, StatusCode::OK, "other sessions survive a logout");

    let (status, _) = s
        .post("/_matrix/client/v3/logout/all", &alice.token, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .get("/_matrix/client/v3/account/whoami", &alice.token)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn uia_challenge_and_user_in_use(s: TestServer) {
    let (status, challenge) = s
        .request(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "carol", "password": "pw"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge["flows"][0]["stages"][0], "m.login.dummy");
    let session = challenge["session"].as_str().unwrap();
    let (status, done) = s
        .request(Method::POST, "/_matrix/client/v3/register", None, Some(json!({
            "username": "carol", "password": "pw", "auth": {"type": "m.login.dummy", "session": session}
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let (status, taken) = s
        .request(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({
                "username": "carol", "password": "pw", "auth": {"type": "m.login.dummy"}
            })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(taken["errcode"], "M_USER_IN_USE");
    let (status, avail) = s
        .request(
            Method::GET,
            "/_matrix/client/v3/register/available?username=carol",
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, avail["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_USER_IN_USE"))
    );
    let (status, avail) = s
        .request(
            Method::GET,
            "/_matrix/client/v3/register/available?username=dave",
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, avail["available"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, bad) = s
        .request(
            Method::GET,
            "/_matrix/client/v3/register/available?username=Bad%20Name",
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, bad["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_USERNAME"))
    );
}

async fn devices_and_password_change(s: TestServer) {
    let alice = s.register("alice").await;
    // "Last seen" is written shortly after a request, off its path.
    let mut devices = json!(null);
    for _ in 0..100 {
        devices = s.get("/_matrix/client/v3/devices", &alice.token).await.1;
        if devices["devices"][0]["last_seen_ip"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let device_id = devices["devices"][0]["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        devices["devices"][0]["last_seen_ip"], "127.0.0.1",
        "{devices}"
    );
    assert!(devices["devices"][0]["last_seen_ts"].as_u64().is_some());
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/devices/{device_id}"),
            &alice.token,
            json!({"display_name": "phone"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, device) = s
        .get(
            &format!("/_matrix/client/v3/devices/{device_id}"),
            &alice.token,
        )
        .await;
    assert_eq!(device["display_name"], "phone");

    // Deleting a device needs the password (user-interactive auth).
    let (status, challenge) = s
        .request(
            Method::DELETE,
            &format!("/_matrix/client/v3/devices/{device_id}"),
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge["flows"][0]["stages"][0], "m.login.password");

    let (status, _) = s
        .post("/_matrix/client/v3/account/password", &alice.token, json!({
            "new_password": "new-pw",
            "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "secret-pw"}
        }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .request(Method::POST, "/_matrix/client/v3/login", None, Some(json!({
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@alice:localhost"}, "password": "new-pw"
        })))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .request(Method::DELETE, &format!("/_matrix/client/v3/devices/{device_id}"), Some(&alice.token), Some(json!({
            "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "new-pw"}
        })))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .get("/_matrix/client/v3/account/whoami", &alice.token)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a deleted device's token is dead"
    );
}

async fn profile_propagates_to_rooms(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let (status, _) = s
        .put(
            "/_matrix/client/v3/profile/@alice:localhost/displayname",
            &alice.token,
            json!({"displayname": "Alice A."}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, profile) = s
        .get("/_matrix/client/v3/profile/@alice:localhost", &alice.token)
        .await;
    assert_eq!(profile["displayname"], "Alice A.");
    let (_, member) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@alice:localhost"),
            &alice.token,
        )
        .await;
    assert_eq!(member["displayname"], "Alice A.");
    assert_eq!(member["membership"], "join");
    let (status, _) = s
        .put(
            "/_matrix/client/v3/profile/@bob:localhost/displayname",
            &alice.token,
            json!({"displayname": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn refresh_tokens_rotate(s: TestServer) {
    let (status, reg) = s
        .request(Method::POST, "/_matrix/client/v3/register", None, Some(json!({
            "username": "erin", "password": "pw", "refresh_token": true, "auth": {"type": "m.login.dummy"}
        })))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(reg["expires_in_ms"].as_u64().unwrap() > 0);
    let refresh = reg["refresh_token"].as_str().unwrap();
    let (status, fresh) = s
        .request(
            Method::POST,
            "/_matrix/client/v3/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    let (status, _) = s
        .get(
            "/_matrix/client/v3/account/whoami",
            fresh["access_token"].as_str().unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .get(
            "/_matrix/client/v3/account/whoami",
            reg["access_token"].as_str().unwrap(),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old access token is replaced"
    );
    let (status, again) = s
        .request(
            Method::POST,
            "/_matrix/client/v3/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(
        (status, again["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN"))
    );
}

async fn shared_secret_registration(s: TestServer) {
    use hmac::{Hmac, Mac};
    let (status, nonce) = s
        .request(Method::GET, "/_synapse/admin/v1/register", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let nonce = nonce["nonce"].as_str().unwrap();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"test-shared-secret").unwrap();
    mac.update(format!("{nonce}\0root\0pw\0admin").as_bytes());
    let mac = hex::encode(mac.finalize().into_bytes());
    let body =
        json!({"nonce": nonce, "username": "root", "password": "pw", "admin": true, "mac": mac});
    let (status, res) = s
        .request(
            Method::POST,
            "/_synapse/admin/v1/register",
            None,
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    assert_eq!(res["user_id"], "@root:localhost");
    let (status, _) = s
        .request(
            Method::POST,
            "/_synapse/admin/v1/register",
            None,
            Some(body),
        )
        .await;
    assert_ne!(status, StatusCode::OK, "a nonce works once");
}

async fn deactivation_leaves_rooms_and_locks_out(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s.create_room(&bob, json!({"preset": "public_chat"})).await;
    assert_eq!(s.join(&alice, &room).await.0, StatusCode::OK);
    let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "secret-pw"});
    let (status, _) = s
        .post(
            "/_matrix/client/v3/account/deactivate",
            &alice.token,
            json!({"auth": auth}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .get("/_matrix/client/v3/account/whoami", &alice.token)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, err) = s
        .request(Method::POST, "/_matrix/client/v3/login", None, Some(json!({
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "secret-pw"
        })))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (_, joined) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            &bob.token,
        )
        .await;
    assert!(
        joined["joined"].get("@alice:localhost").is_none(),
        "{joined}"
    );
    let (status, _) = s
        .request(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({
                "username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}
            })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a deactivated id is never reissued"
    );
}

async fn discovery_capabilities_and_push_rules(s: TestServer) {
    let alice = s.register("alice").await;
    let (_, versions) = s
        .request(Method::GET, "/_matrix/client/versions", None, None)
        .await;
    assert!(
        versions["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "v1.1")
    );
    let (status, wk) = s
        .request(Method::GET, "/.well-known/matrix/client", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(wk["m.homeserver"]["base_url"], s.base);
    let (_, caps) = s.get("/_matrix/client/v3/capabilities", &alice.token).await;
    assert_eq!(caps["capabilities"]["m.room_versions"]["default"], "12");
    assert_eq!(
        caps["capabilities"]["m.room_versions"]["available"]["10"],
        "stable"
    );
    // Absent means enabled (ruma leaves out capabilities at their default).
    assert_ne!(caps["capabilities"]["m.change_password"]["enabled"], false);
    let (_, rules) = s.get("/_matrix/client/v3/pushrules/", &alice.token).await;
    let overrides = rules["global"]["override"].as_array().unwrap();
    assert!(overrides.iter().any(|r| r["rule_id"] == ".m.rule.master"));
    let underride = rules["global"]["underride"].as_array().unwrap();
    assert!(underride.iter().any(|r| r["rule_id"] == ".m.rule.message"));
    let (_, login) = s
        .request(Method::GET, "/_matrix/client/r0/login", None, None)
        .await;
    assert_eq!(login["flows"][0]["type"], "m.login.password");
}

/// "Last seen" of devices active in the same second is written in one
/// batch: each of them gets its address, and a device that made no request
/// keeps none.
async fn devices_seen_together_are_all_recorded(s: TestServer) {
    let users = [
        s.register("alice").await,
        s.register("bob").await,
        s.register("carol").await,
    ];
    // A second device of Alice's that never makes a request.
    s.login(&users[0], Some("IDLE")).await;
    for user in &users {
        let mut seen = false;
        for _ in 0..100 {
            let (_, devices) = s.get("/_matrix/client/v3/devices", &user.token).await;
            let active = devices["devices"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["device_id"] != "IDLE")
                .cloned()
                .unwrap();
            if active["last_seen_ip"].is_string() {
                assert_eq!(active["last_seen_ip"], "127.0.0.1", "{devices}");
                assert!(active["last_seen_ts"].as_u64().is_some(), "{devices}");
                seen = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(seen, "{} never seen", user.user_id);
    }
    let (_, devices) = s.get("/_matrix/client/v3/devices", &users[0].token).await;
    let idle = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == "IDLE")
        .cloned()
        .unwrap();
    assert!(idle["last_seen_ip"].is_null(), "{devices}");
}

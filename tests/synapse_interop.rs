//! Corvid federating with a real Synapse on loopback, over TLS with
//! certificates from the test CA: Synapse fetches and notarises Corvid's
//! keys, and each server asks the other for a user's profile, so each
//! verifies the other's X-Matrix signatures; rooms of either server are
//! joined from the other (by invite and by room id), and messages, typing
//! and receipts cross both ways.

mod common;
#[path = "common/synapse.rs"]
mod synapse;

use common::{Backend, TestServer, json_of, urlencode};
use reqwest::{Method, StatusCode};
use ruma::{CanonicalJsonObject, serde::Base64, signatures::PublicKeyMap};
use serde_json::{Value, json};
use synapse::TestSynapse;

each_backend!(keys_and_profiles_both_ways, rooms_shared_with_synapse);

/// A federating Corvid named `localhost:PORT` and a Synapse; `None` when
/// Synapse cannot be installed outside CI.
async fn corvid_and_synapse(backend: Backend) -> Option<(TestServer, TestSynapse)> {
    let synapse = TestSynapse::start().await?;
    let corvid = TestServer::start_federating(backend, "localhost", |_| {}).await?;
    Some((corvid, synapse))
}

/// The server keys `base` publishes at `/_matrix/key/v2/server`.
async fn own_keys(http: &reqwest::Client, base: &str) -> Value {
    let path = "/_matrix/key/v2/server";
    let res = http.get(format!("{base}{path}")).send().await.unwrap();
    let (status, keys) = json_of(res, &Method::GET, path).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    keys
}

/// Checks `object`'s signature by `entity` with `entity`'s `verify_keys`.
fn assert_signed_by(object: &Value, entity: &str, verify_keys: &Value) {
    let keys = (verify_keys.as_object().unwrap().iter())
        .map(|(id, k)| {
            (
                id.clone(),
                Base64::parse(k["key"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    let mut only: CanonicalJsonObject = serde_json::from_value(object.clone()).unwrap();
    let signatures = json!({entity: object["signatures"][entity]});
    only.insert(
        "signatures".into(),
        serde_json::from_value(signatures).unwrap(),
    );
    let map = PublicKeyMap::from([(entity.to_owned(), keys)]);
    ruma::signatures::verify_json(&map, &only)
        .unwrap_or_else(|e| panic!("signature by {entity} on {object}: {e}"));
}

async fn keys_and_profiles_both_ways(backend: Backend) {
    let Some((corvid, synapse)) = corvid_and_synapse(backend).await else {
        return;
    };
    let corvid_name = corvid.server_name().to_owned();
    let synapse_name = synapse.server_name();

    // Synapse, as a notary, fetches Corvid's keys over TLS and relays them
    // with Corvid's signature and its own.
    let published = own_keys(corvid.http(), corvid.federation_base.as_ref().unwrap()).await;
    // Synapse answers an empty criteria object ("all keys") from its cache
    // only, never fetching: ask for the key ids Corvid publishes. It also
    // refuses criteria without `minimum_valid_until_ts` (null is accepted),
    // though the spec makes it optional.
    let criteria = json!({"minimum_valid_until_ts": corvid::now_ms()});
    let key_ids: serde_json::Map<String, Value> = (published["verify_keys"].as_object())
        .expect("verify_keys")
        .keys()
        .map(|id| (id.clone(), criteria.clone()))
        .collect();
    let query = json!({"server_keys": {&corvid_name: key_ids}});
    let (status, relayed) = synapse
        .request(Method::POST, "/_matrix/key/v2/query", None, Some(query))
        .await;
    let context = || format!("{relayed}\n{}", synapse.log_tail(30));
    assert_eq!(status, StatusCode::OK, "{}", context());
    let relayed = (relayed["server_keys"].as_array())
        .and_then(|all| {
            all.iter()
                .find(|k| k["server_name"] == corvid_name.as_str())
        })
        .unwrap_or_else(|| panic!("Synapse relayed no keys of {corvid_name}: {}", context()))
        .clone();
    assert_eq!(relayed["verify_keys"], published["verify_keys"]);
    assert_signed_by(&relayed, &corvid_name, &published["verify_keys"]);
    let synapse_keys = own_keys(synapse.http(), &synapse.base()).await;
    assert_signed_by(&relayed, &synapse_name, &synapse_keys["verify_keys"]);

    // Corvid asks Synapse for a Synapse user's profile (a request Corvid
    // signs and Synapse verifies with Corvid's keys).
    let bob = synapse.register("bob").await;
    let alice = corvid.register("alice").await;
    let bob_profile = format!("/_matrix/client/v3/profile/{}", urlencode(&bob.user_id));
    let (status, res) = synapse
        .put(
            &format!("{bob_profile}/displayname"),
            &bob.token,
            json!({"displayname": "Bob on Synapse"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    let (status, profile) = corvid.get(&bob_profile, &alice.token).await;
    assert_eq!(
        (status, &profile["displayname"]),
        (StatusCode::OK, &json!("Bob on Synapse")),
        "{profile}\n{}",
        synapse.log_tail(30)
    );
    let (status, name) = corvid
        .get(&format!("{bob_profile}/displayname"), &alice.token)
        .await;
    assert_eq!(
        (status, &name["displayname"]),
        (StatusCode::OK, &json!("Bob on Synapse"))
    );
    let nobody = format!(
        "/_matrix/client/v3/profile/{}",
        urlencode(&format!("@nobody:{synapse_name}"))
    );
    let (status, body) = corvid.get(&nobody, &alice.token).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")),
        "{body}"
    );

    // Synapse asks Corvid for a Corvid user's profile (signed by Synapse,
    // verified by Corvid with Synapse's keys).
    let alice_profile = format!("/_matrix/client/v3/profile/{}", urlencode(&alice.user_id));
    let (status, res) = corvid
        .put(
            &format!("{alice_profile}/displayname"),
            &alice.token,
            json!({"displayname": "Alice on Corvid"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    let (status, profile) = synapse.get(&alice_profile, &bob.token).await;
    assert_eq!(
        (status, &profile["displayname"]),
        (StatusCode::OK, &json!("Alice on Corvid")),
        "{profile}\n{}",
        synapse.log_tail(30)
    );
    let nobody = format!(
        "/_matrix/client/v3/profile/{}",
        urlencode(&format!("@nobody:{corvid_name}"))
    );
    let (status, body) = synapse.get(&nobody, &bob.token).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")),
        "{body}\n{}",
        synapse.log_tail(30)
    );
}

/// Either server, as a client sees it.
#[derive(Clone, Copy)]
enum Host<'a> {
    Corvid(&'a TestServer),
    Synapse(&'a TestSynapse),
}

impl Host<'_> {
    async fn request(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        match self {
            Host::Corvid(s) => s.request(method, path, Some(token), body).await,
            Host::Synapse(s) => s.request(method, path, Some(token), body).await,
        }
    }

    fn name(&self) -> String {
        match self {
            Host::Corvid(s) => s.server_name().to_owned(),
            Host::Synapse(s) => s.server_name(),
        }
    }

    fn log(&self) -> String {
        match self {
            Host::Corvid(_) => String::new(),
            Host::Synapse(s) => s.log_tail(40),
        }
    }

    async fn send_text(&self, user: &common::User, room: &str, text: &str) {
        let txn = format!("t{}", corvid::now_ms());
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            urlencode(room)
        );
        let body = json!({"msgtype": "m.text", "body": text});
        let (status, res) = self
            .request(Method::PUT, &path, &user.token, Some(body))
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "send on {}: {res}\n{}",
            self.name(),
            self.log()
        );
    }

    async fn join(&self, user: &common::User, room: &str, via: &str) {
        let path = format!(
            "/_matrix/client/v3/join/{}?via={}",
            urlencode(room),
            urlencode(via)
        );
        let (status, res) = self
            .request(Method::POST, &path, &user.token, Some(json!({})))
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "join on {}: {res}\n{}",
            self.name(),
            self.log()
        );
    }

    /// Polls the room's recent history until it holds `text` (30 s at most).
    async fn wait_for_text(&self, user: &common::User, room: &str, text: &str) {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
            urlencode(room)
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (status, page) = self.request(Method::GET, &path, &user.token, None).await;
            let found = status == StatusCode::OK
                && page["chunk"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|e| e["content"]["body"] == text));
            if found {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{text:?} never reached {} on {}: {status} {page}\n{}",
                user.user_id,
                self.name(),
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Polls `/sync` until the user is invited to the room (30 s at most).
    async fn wait_for_invite(&self, user: &common::User, room: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (status, body) = self
                .request(
                    Method::GET,
                    "/_matrix/client/v3/sync?timeout=500",
                    &user.token,
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if !body["rooms"]["invite"][room].is_null() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no invite to {room} for {} on {}\n{}",
                user.user_id,
                self.name(),
                self.log()
            );
        }
    }
}

/// A Corvid room joined from Synapse after an invite, and a Synapse room
/// joined from Corvid by id; messages both ways in each.
async fn rooms_shared_with_synapse(backend: Backend) {
    let Some((corvid, synapse)) = corvid_and_synapse(backend).await else {
        return;
    };
    let (c, s) = (Host::Corvid(&corvid), Host::Synapse(&synapse));
    let alice = corvid.register("alice").await;
    let bob = synapse.register("bob").await;

    // A Corvid room: alice invites bob, whose Synapse countersigns the
    // invite; bob joins through Corvid (make_join / send_join).
    let room = corvid
        .create_room(
            &alice,
            json!({"preset": "private_chat", "name": "On Corvid"}),
        )
        .await;
    let (status, res) = corvid
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", urlencode(&room)),
            &alice.token,
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "invite to Synapse: {res}\n{}",
        s.log()
    );
    s.wait_for_invite(&bob, &room).await;
    s.join(&bob, &room, corvid.server_name()).await;
    c.send_text(&alice, &room, "hello from Corvid").await;
    s.send_text(&bob, &room, "hello from Synapse").await;
    s.wait_for_text(&bob, &room, "hello from Corvid").await;
    c.wait_for_text(&alice, &room, "hello from Synapse").await;

    // A Synapse room: alice joins it by id through Synapse.
    let (status, res) = synapse
        .post(
            "/_matrix/client/v3/createRoom",
            &bob.token,
            json!({"preset": "public_chat", "name": "On Synapse"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    let their_room = res["room_id"].as_str().unwrap().to_owned();
    s.send_text(&bob, &their_room, "before alice came").await;
    c.join(&alice, &their_room, &synapse.server_name()).await;
    s.send_text(&bob, &their_room, "welcome alice").await;
    c.send_text(&alice, &their_room, "thanks bob").await;
    c.wait_for_text(&alice, &their_room, "welcome alice").await;
    s.wait_for_text(&bob, &their_room, "thanks bob").await;
}

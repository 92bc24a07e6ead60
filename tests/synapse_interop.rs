//! Corvid federating with a real Synapse on loopback, over TLS with
//! certificates from the test CA: Synapse fetches and notarises Corvid's
//! keys, and each server asks the other for a user's profile, so each
//! verifies the other's X-Matrix signatures; rooms of either server are
//! joined from the other (by invite and by room id), and messages, edits,
//! reactions, typing and receipts cross both ways; matrix-js-sdk clients
//! with Rust crypto on each server share an encrypted DM.

mod common;
#[path = "common/synapse.rs"]
mod synapse;

use std::{
    path::Path,
    process::{Command, Stdio},
};

use common::{Backend, TestServer, json_of, tls::TestCa, urlencode};
use reqwest::{Method, StatusCode};
use ruma::{CanonicalJsonObject, serde::Base64, signatures::PublicKeyMap};
use serde_json::{Value, json};
use synapse::TestSynapse;

each_backend!(
    keys_and_profiles_both_ways,
    rooms_shared_with_synapse,
    relations_receipts_typing_with_synapse,
    encrypted_dm_with_synapse,
);

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

    /// Sends an event and returns its id.
    async fn send(&self, user: &common::User, room: &str, kind: &str, content: Value) -> String {
        let txn = format!("t{}-{}", corvid::now_ms(), rand::random::<u32>());
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/{kind}/{txn}",
            urlencode(room)
        );
        let (status, res) = self
            .request(Method::PUT, &path, &user.token, Some(content))
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "send {kind} on {}: {res}\n{}",
            self.name(),
            self.log()
        );
        res["event_id"].as_str().expect("event_id").to_owned()
    }

    async fn send_text(&self, user: &common::User, room: &str, text: &str) -> String {
        let body = json!({"msgtype": "m.text", "body": text});
        self.send(user, room, "m.room.message", body).await
    }

    /// A request that must succeed.
    async fn expect_ok(&self, method: Method, path: &str, user: &common::User, body: Value) {
        let (status, res) = self.request(method, path, &user.token, Some(body)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{path} on {}: {res}\n{}",
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
        self.expect_ok(Method::POST, &path, user, json!({})).await;
    }

    /// GETs `path` as `user` until `found` holds for the answer (30 s at
    /// most) and returns that answer.
    async fn poll(
        &self,
        user: &common::User,
        path: &str,
        what: &str,
        found: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (status, answer) = self.request(Method::GET, path, &user.token, None).await;
            if status == StatusCode::OK && found(&answer) {
                return answer;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not seen by {} on {} within 30 s; last answer to {path}: {status} {answer}\n{}",
                user.user_id,
                self.name(),
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Polls the room's recent history until it holds `text`.
    async fn wait_for_text(&self, user: &common::User, room: &str, text: &str) {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
            urlencode(room)
        );
        self.poll(user, &path, &format!("message {text:?}"), |page| {
            (page["chunk"].as_array())
                .is_some_and(|c| c.iter().any(|e| e["content"]["body"] == text))
        })
        .await;
    }

    /// Polls `/sync` until the user is invited to the room.
    async fn wait_for_invite(&self, user: &common::User, room: &str) {
        let path = "/_matrix/client/v3/sync?timeout=500";
        self.poll(user, path, &format!("invite to {room}"), |sync| {
            !sync["rooms"]["invite"][room].is_null()
        })
        .await;
    }

    /// The `next_batch` of a sync, a point to look for changes after.
    async fn sync_token(&self, user: &common::User) -> String {
        let sync = self
            .poll(user, "/_matrix/client/v3/sync?timeout=0", "a sync", |_| {
                true
            })
            .await;
        sync["next_batch"].as_str().expect("next_batch").to_owned()
    }

    /// Follows incremental `/sync`s from `since` (each from the last one's
    /// `next_batch`, as a client does: Synapse answers a repeated request
    /// from its cache) until the room's ephemeral events include one of
    /// `kind` for which `found` holds (30 s at most).
    async fn wait_for_ephemeral(
        &self,
        user: &common::User,
        room: &str,
        since: &str,
        kind: &str,
        found: impl Fn(&Value) -> bool,
    ) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut since = since.to_owned();
        let mut seen = Vec::new();
        loop {
            let path = format!(
                "/_matrix/client/v3/sync?timeout=500&since={}",
                urlencode(&since)
            );
            let (status, sync) = self.request(Method::GET, &path, &user.token, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {sync}\n{}", self.log());
            let events = sync["rooms"]["join"][room]["ephemeral"]["events"].as_array();
            let events = events.into_iter().flatten().filter(|e| e["type"] == kind);
            for event in events {
                if found(event) {
                    return;
                }
                seen.push(event.clone());
            }
            since = sync["next_batch"].as_str().expect("next_batch").to_owned();
            assert!(
                std::time::Instant::now() < deadline,
                "{kind} in {room}: not seen by {} on {} within 30 s; got {seen:?}\n{}",
                user.user_id,
                self.name(),
                self.log()
            );
        }
    }

    /// Polls `/relations/{target}/{rel_type}` until it lists `event_id`.
    async fn wait_for_relation(
        &self,
        user: &common::User,
        room: &str,
        target: &str,
        rel_type: &str,
        event_id: &str,
    ) -> Value {
        let path = format!(
            "/_matrix/client/v1/rooms/{}/relations/{}/{rel_type}",
            urlencode(room),
            urlencode(target)
        );
        let what = format!("{rel_type} {event_id} of {target}");
        let page = self
            .poll(user, &path, &what, |page| {
                (page["chunk"].as_array())
                    .is_some_and(|c| c.iter().any(|e| e["event_id"] == event_id))
            })
            .await;
        let chunk = page["chunk"].as_array().unwrap();
        chunk
            .iter()
            .find(|e| e["event_id"] == event_id)
            .unwrap()
            .clone()
    }
}

/// A Corvid room: alice invites bob, whose Synapse countersigns the invite;
/// bob joins through Corvid (make_join / send_join).
async fn corvid_room_joined_from_synapse(
    corvid: &TestServer,
    synapse: &TestSynapse,
    alice: &common::User,
    bob: &common::User,
) -> String {
    let room = corvid
        .create_room(
            alice,
            json!({"preset": "private_chat", "name": "On Corvid"}),
        )
        .await;
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", urlencode(&room));
    let body = json!({"user_id": bob.user_id});
    (Host::Corvid(corvid))
        .expect_ok(Method::POST, &invite, alice, body)
        .await;
    let s = Host::Synapse(synapse);
    s.wait_for_invite(bob, &room).await;
    s.join(bob, &room, corvid.server_name()).await;
    room
}

/// A Synapse room with a message of bob's from before alice joins it by id
/// through Synapse.
async fn synapse_room_joined_from_corvid(
    synapse: &TestSynapse,
    alice: &common::User,
    bob: &common::User,
    corvid: &TestServer,
) -> String {
    let (status, res) = synapse
        .post(
            "/_matrix/client/v3/createRoom",
            &bob.token,
            json!({"preset": "public_chat", "name": "On Synapse"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    let room = res["room_id"].as_str().unwrap().to_owned();
    (Host::Synapse(synapse))
        .send_text(bob, &room, "before alice came")
        .await;
    (Host::Corvid(corvid))
        .join(alice, &room, &synapse.server_name())
        .await;
    room
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

    let room = corvid_room_joined_from_synapse(&corvid, &synapse, &alice, &bob).await;
    c.send_text(&alice, &room, "hello from Corvid").await;
    s.send_text(&bob, &room, "hello from Synapse").await;
    s.wait_for_text(&bob, &room, "hello from Corvid").await;
    c.wait_for_text(&alice, &room, "hello from Synapse").await;

    let their_room = synapse_room_joined_from_corvid(&synapse, &alice, &bob, &corvid).await;
    s.wait_for_text(&bob, &their_room, "before alice came")
        .await;
    s.send_text(&bob, &their_room, "welcome alice").await;
    c.send_text(&alice, &their_room, "thanks bob").await;
    c.wait_for_text(&alice, &their_room, "welcome alice").await;
    s.wait_for_text(&bob, &their_room, "thanks bob").await;
}

/// One side of a shared room: a host, its user and a message of theirs.
#[derive(Clone, Copy)]
struct Side<'a> {
    host: Host<'a>,
    user: &'a common::User,
    message: &'a str,
}

/// In a room of each server, each side edits its own message (an edit by
/// anyone else is not applied: spec, "Event replacements"), reacts to the
/// other's, types and sends a read receipt; the other side sees each.
async fn relations_receipts_typing_with_synapse(backend: Backend) {
    let Some((corvid, synapse)) = corvid_and_synapse(backend).await else {
        return;
    };
    let (c, s) = (Host::Corvid(&corvid), Host::Synapse(&synapse));
    let alice = corvid.register("alice").await;
    let bob = synapse.register("bob").await;
    let rooms = [
        corvid_room_joined_from_synapse(&corvid, &synapse, &alice, &bob).await,
        synapse_room_joined_from_corvid(&synapse, &alice, &bob, &corvid).await,
    ];
    for room in &rooms {
        let alices = c.send_text(&alice, room, "alice's message").await;
        let bobs = s.send_text(&bob, room, "bob's message").await;
        s.wait_for_text(&bob, room, "alice's message").await;
        c.wait_for_text(&alice, room, "bob's message").await;
        let on_corvid = Side {
            host: c,
            user: &alice,
            message: &alices,
        };
        let on_synapse = Side {
            host: s,
            user: &bob,
            message: &bobs,
        };
        edit_react_type_and_read(room, on_corvid, on_synapse).await;
        edit_react_type_and_read(room, on_synapse, on_corvid).await;
    }
}

/// `from` edits its message, reacts to `to`'s, types and reads `to`'s
/// message, then stops typing; `to` sees each.
async fn edit_react_type_and_read(room: &str, from: Side<'_>, to: Side<'_>) {
    let since = to.host.sync_token(to.user).await;
    let new_body = format!("edited by {}", from.user.user_id);
    let edit = json!({
        "msgtype": "m.text",
        "body": format!("* {new_body}"),
        "m.new_content": {"msgtype": "m.text", "body": new_body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": from.message},
    });
    let edit = from
        .host
        .send(from.user, room, "m.room.message", edit)
        .await;
    let reaction = json!({"m.relates_to": {
        "rel_type": "m.annotation", "event_id": to.message, "key": "👍",
    }});
    let reaction = from
        .host
        .send(from.user, room, "m.reaction", reaction)
        .await;
    let typing = format!(
        "/_matrix/client/v3/rooms/{}/typing/{}",
        urlencode(room),
        urlencode(&from.user.user_id)
    );
    let start = json!({"typing": true, "timeout": 30_000});
    from.host
        .expect_ok(Method::PUT, &typing, from.user, start)
        .await;
    let receipt = format!(
        "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
        urlencode(room),
        urlencode(to.message)
    );
    from.host
        .expect_ok(Method::POST, &receipt, from.user, json!({}))
        .await;

    let seen = (to.host)
        .wait_for_relation(to.user, room, from.message, "m.replace", &edit)
        .await;
    assert_eq!(seen["content"]["m.new_content"]["body"], new_body, "{seen}");
    let original = format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        urlencode(room),
        urlencode(from.message)
    );
    (to.host)
        .poll(
            to.user,
            &original,
            "the edit bundled with the original",
            |e| e["unsigned"]["m.relations"]["m.replace"]["event_id"] == edit.as_str(),
        )
        .await;
    let seen = (to.host)
        .wait_for_relation(to.user, room, to.message, "m.annotation", &reaction)
        .await;
    assert_eq!(
        (&seen["sender"], &seen["content"]["m.relates_to"]["key"]),
        (&json!(from.user.user_id), &json!("👍")),
        "{seen}"
    );
    let typer = json!(from.user.user_id);
    let typing_users = |e: &Value| {
        e["content"]["user_ids"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    (to.host)
        .wait_for_ephemeral(to.user, room, &since, "m.typing", |e| {
            typing_users(e).contains(&typer)
        })
        .await;
    (to.host)
        .wait_for_ephemeral(to.user, room, &since, "m.receipt", |e| {
            e["content"][to.message]["m.read"][&from.user.user_id]["ts"].is_u64()
        })
        .await;

    let since = to.host.sync_token(to.user).await;
    let stop = json!({"typing": false});
    from.host
        .expect_ok(Method::PUT, &typing, from.user, stop)
        .await;
    (to.host)
        .wait_for_ephemeral(to.user, room, &since, "m.typing", |e| {
            !typing_users(e).contains(&typer)
        })
        .await;
}

/// matrix-js-sdk with its Rust crypto on each server (`conformance/js/
/// e2ee_federated.mjs`): cross-signing, an encrypted DM opened on each
/// server with the other's user, messages both ways decrypted by the other,
/// and a second device on each side that the other learns of and encrypts to.
async fn encrypted_dm_with_synapse(backend: Backend) {
    let Some(node) = common::conformance_tool("js", "matrix-js-sdk (Node 22)") else {
        return;
    };
    let Some((corvid, synapse)) = corvid_and_synapse(backend).await else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/js/e2ee_federated.mjs");
    let mut command = Command::new(node);
    command
        .arg(script)
        .arg("--servers")
        .args([&corvid.base, corvid.server_name()])
        .args([synapse.base(), synapse.server_name()])
        // Synapse's client API is TLS with the test CA's certificate.
        .env("NODE_EXTRA_CA_CERTS", TestCa::get().ca_file())
        .env("JS_CONFORMANCE_TIMEOUT_S", "180")
        .stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed, 0 failed"),
        "e2ee_federated.mjs failed ({})\n--- stdout\n{stdout}\n--- stderr\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        synapse.log_tail(60)
    );
    println!("{stdout}");
}

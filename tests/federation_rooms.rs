//! Rooms shared by several Corvid servers on loopback (TLS with a test CA):
//! joins, invites, leaves and knocks over federation, messages delivered
//! through transactions exactly once, catch-up after a server was down, and
//! concurrent conflicting state resolved alike everywhere.

mod common;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use common::{Backend, TestServer, User, urlencode};
use reqwest::StatusCode;
use serde_json::{Value, json};

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Backend::Sqlite).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if crate::common::postgres_configured() {
                    super::$name(super::Backend::Postgres).await;
                }
            })*
        }
    };
}

on_both_backends!(join_and_talk_across_two_servers);

/// A federating server that retries failed transactions quickly.
async fn server(backend: Backend, host: &str) -> TestServer {
    TestServer::start_federating(backend, host, |config| {
        config.federation.retry_min_ms = 100;
        config.federation.retry_max_ms = 1_000;
    })
    .await
    .expect("federating server")
}

/// What one user has seen of rooms through `/sync`, gathered incrementally.
struct Seen {
    since: Option<String>,
    /// Room → timeline events in the order sync delivered them.
    timelines: HashMap<String, Vec<Value>>,
    invites: HashSet<String>,
}

impl Seen {
    fn new() -> Self {
        Self {
            since: None,
            timelines: HashMap::new(),
            invites: HashSet::new(),
        }
    }

    fn events(&self, room: &str) -> &[Value] {
        self.timelines.get(room).map(Vec::as_slice).unwrap_or(&[])
    }

    fn bodies(&self, room: &str) -> Vec<String> {
        self.events(room)
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    }

    /// Syncs until `done` holds, for at most `within`.
    async fn until(
        &mut self,
        server: &TestServer,
        user: &User,
        within: Duration,
        done: impl Fn(&Self) -> bool,
    ) {
        let deadline = Instant::now() + within;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{} did not see it in {within:?}; saw {:?}",
                user.user_id,
                self.timelines
            );
            let body = server.sync(user, self.since.as_deref(), 1_000).await;
            self.since = body["next_batch"].as_str().map(str::to_owned);
            for (room, joined) in body["rooms"]["join"].as_object().into_iter().flatten() {
                let events = joined["timeline"]["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                self.timelines
                    .entry(room.clone())
                    .or_default()
                    .extend(events);
            }
            for room in body["rooms"]["invite"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(r, _)| r)
            {
                self.invites.insert(room.clone());
            }
        }
    }
}

async fn join_via(s: &TestServer, user: &User, room: &str, via: &str) -> (StatusCode, Value) {
    s.post(
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            urlencode(room),
            urlencode(via)
        ),
        &user.token,
        json!({}),
    )
    .await
}

async fn join_and_talk_across_two_servers(backend: Backend) {
    let a = server(backend, "127.0.0.1").await;
    let b = server(backend, "localhost").await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({"preset": "public_chat", "name": "Across"}))
        .await;

    let (status, body) = join_via(&b, &bob, &room, a.server_name()).await;
    assert_eq!(status, StatusCode::OK, "join over federation: {body}");
    assert_eq!(body["room_id"], room);

    // bob's server now holds the room's state.
    let (status, name) = b
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.name/",
                urlencode(&room)
            ),
            &bob.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{name}");
    assert_eq!(name["name"], "Across");

    let mut alice_seen = Seen::new();
    alice_seen
        .until(&a, &alice, Duration::from_secs(10), |s| {
            s.events(&room)
                .iter()
                .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id)
        })
        .await;

    a.send_text(&alice, &room, "a1", "hello from A").await;
    b.send_text(&bob, &room, "b1", "hello from B").await;
    let mut bob_seen = Seen::new();
    let both = |s: &Seen| {
        let bodies = s.bodies(&room);
        bodies.contains(&"hello from A".to_owned()) && bodies.contains(&"hello from B".to_owned())
    };
    bob_seen
        .until(&b, &bob, Duration::from_secs(10), both)
        .await;
    alice_seen
        .until(&a, &alice, Duration::from_secs(10), both)
        .await;

    // Both servers list both members as joined.
    for (s, user) in [(&a, &alice), (&b, &bob)] {
        let (status, members) = s
            .get(
                &format!(
                    "/_matrix/client/v3/rooms/{}/joined_members",
                    urlencode(&room)
                ),
                &user.token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{members}");
        let joined = members["joined"].as_object().unwrap();
        assert!(joined.contains_key(alice.user_id.as_str()), "{members}");
        assert!(joined.contains_key(bob.user_id.as_str()), "{members}");
    }
}

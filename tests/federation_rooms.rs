//! Rooms shared by several Corvid servers on loopback (TLS with a test CA):
//! joins, invites, leaves and knocks over federation, messages delivered
//! through transactions exactly once, catch-up after a server was down, and
//! concurrent conflicting state resolved alike everywhere.

mod common;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use common::{Backend, TestServer, User, gate::Gate, signed::signed_json, urlencode};
use reqwest::StatusCode;
use serde_json::{Value, json};

each_backend!(
    join_and_talk_across_two_servers,
    three_servers_deliver_every_message_once,
    partitioned_servers_resolve_conflicting_state_alike,
    invites_rejections_knocks_and_leaves_across_servers,
    restricted_rooms_are_joined_through_a_resident_server,
    space_hierarchies_span_servers,
    history_from_before_a_join_is_backfilled,
);

/// Two processes of one server on PostgreSQL and Redis: one is elected to
/// send; events made on either reach the other server once, also after the
/// elected process stops and the other takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_out_server_sends_through_one_elected_process() {
    let (Some(redis), true) = (common::redis_url(), common::postgres_configured()) else {
        return;
    };
    let mut a = TestServer::start_federating(Backend::Postgres, "127.0.0.1", |config| {
        config.federation.retry_min_ms = 100;
        common::use_redis(config, &redis);
    })
    .await
    .unwrap();
    let a2 = a.sibling().await;
    let b = server(Backend::Postgres, "localhost").await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let (status, res) = join_via(&b, &bob, &room, a.server_name()).await;
    assert_eq!(status, StatusCode::OK, "{res}");
    for n in 0..10 {
        let through = if n % 2 == 0 { &a } else { &a2 };
        through
            .send_text(&alice, &room, &format!("s{n}"), &format!("scaled {n}"))
            .await;
    }
    let mut seen = Seen::new();
    let all = |s: &Seen, n: usize| {
        s.bodies(&room)
            .iter()
            .filter(|b| b.starts_with("scaled"))
            .count()
            >= n
    };
    seen.until(&b, &bob, Duration::from_secs(15), |s| all(s, 10))
        .await;

    a.shut_down().await;
    for n in 10..15 {
        a2.send_text(&alice, &room, &format!("s{n}"), &format!("scaled {n}"))
            .await;
    }
    seen.until(&b, &bob, Duration::from_secs(30), |s| all(s, 15))
        .await;
    let bodies = seen.bodies(&room);
    let distinct: HashSet<&String> = bodies.iter().collect();
    assert_eq!(bodies.len(), distinct.len(), "each event once: {bodies:?}");
}

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
    ephemeral: HashMap<String, Vec<Value>>,
    presence: Vec<Value>,
    invites: HashSet<String>,
    last: Value,
}

impl Seen {
    fn new() -> Self {
        Self {
            since: None,
            timelines: HashMap::new(),
            ephemeral: HashMap::new(),
            presence: Vec::new(),
            invites: HashSet::new(),
            last: Value::Null,
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

    /// Room → ephemeral events (typing, receipts) as delivered.
    fn ephemeral_of(body: &Value, room: &str) -> Vec<Value> {
        body["rooms"]["join"][room]["ephemeral"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
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
                    .iter()
                    .map(|(room, events)| (room, events.len(), self.bodies(room).len()))
                    .collect::<Vec<_>>()
            );
            let body = sync_all(server, user, self.since.as_deref()).await;
            self.since = body["next_batch"].as_str().map(str::to_owned);
            self.last = body.clone();
            for (room, _) in body["rooms"]["join"].as_object().into_iter().flatten() {
                self.ephemeral
                    .entry(room.clone())
                    .or_default()
                    .extend(Self::ephemeral_of(&body, room));
            }
            self.presence.extend(
                body["presence"]["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
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

/// A sync whose timelines are never cut short (the tests count every event).
async fn sync_all(server: &TestServer, user: &User, since: Option<&str>) -> Value {
    let filter = urlencode(r#"{"room":{"timeline":{"limit":1000}}}"#);
    let mut path = format!("/_matrix/client/v3/sync?timeout=1000&filter={filter}");
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    let (status, body) = server.get(&path, &user.token).await;
    assert_eq!(status, StatusCode::OK, "sync: {body}");
    assert!(
        body["rooms"]["join"]
            .as_object()
            .into_iter()
            .flatten()
            .all(|(_, r)| r["timeline"]["limited"] != true || since.is_none()),
        "a timeline was cut short: {body}"
    );
    body
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
    let from_b = b.send_text(&bob, &room, "b1", "hello from B").await;
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

    // A's next event builds on bob's, which reached A after A's event
    // writer last wrote to the room.
    let next = a.send_text(&alice, &room, "a2", "after yours").await;
    let path = format!("/_matrix/federation/v1/event/{}", urlencode(&next));
    let (status, body) = signed_json(&b, &a, reqwest::Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["pdus"][0]["prev_events"]
            .as_array()
            .unwrap()
            .contains(&json!(from_b)),
        "alice's next event cites bob's: {body}"
    );

    // Push rules count the members of every server: two, so bob's message
    // notifies alice as one-to-one does (with a sound).
    let (status, list) = a
        .get("/_matrix/client/v3/notifications", &alice.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let from_bob = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["event"]["sender"] == bob.user_id)
        .unwrap_or_else(|| panic!("bob's message notifies alice: {list}"));
    assert!(
        from_bob["actions"]
            .as_array()
            .unwrap()
            .contains(&json!({"set_tweak": "sound", "value": "default"})),
        "{from_bob}"
    );

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

/// Three servers, one room with a user on each: 300 messages sent at once
/// from all three reach every user exactly once, each after the events it
/// cites as prev events (so each sender's in the order it sent them);
/// typing, read receipts and presence cross servers; a server that was down
/// catches up on what it missed.
async fn three_servers_deliver_every_message_once(backend: Backend) {
    let a = server(backend, "127.0.0.1").await;
    let b = server(backend, "localhost").await;
    let mut c = server(backend, "127.0.0.1").await;
    let users = [
        a.register("alice").await,
        b.register("bob").await,
        c.register("carol").await,
    ];
    let servers = [&a, &b, &c];
    let room = a
        .create_room(&users[0], json!({"preset": "public_chat"}))
        .await;
    for i in [1, 2] {
        let (status, body) = join_via(servers[i], &users[i], &room, a.server_name()).await;
        assert_eq!(status, StatusCode::OK, "join: {body}");
    }
    // Everyone hears of the last join before anyone talks.
    let mut seen: Vec<Seen> = (0..3).map(|_| Seen::new()).collect();
    let carol_id = users[2].user_id.clone();
    for i in 0..3 {
        seen[i]
            .until(servers[i], &users[i], Duration::from_secs(15), |s| {
                s.events(&room).iter().any(|e| {
                    e["type"] == "m.room.member"
                        && e["state_key"] == carol_id
                        && e["content"]["membership"] == "join"
                })
            })
            .await;
    }

    const PER_USER: usize = 100;
    let sends = (0..3).map(|i| {
        let (s, user, room) = (servers[i], &users[i], room.clone());
        async move {
            for n in 0..PER_USER {
                s.send_text(user, &room, &format!("m{i}-{n}"), &format!("{i}:{n}"))
                    .await;
            }
        }
    });
    futures::future::join_all(sends).await;
    for i in 0..3 {
        seen[i]
            .until(servers[i], &users[i], Duration::from_secs(60), |s| {
                s.bodies(&room).len() >= 3 * PER_USER
            })
            .await;
        let bodies = seen[i].bodies(&room);
        assert_eq!(
            bodies.len(),
            3 * PER_USER,
            "{} saw duplicates",
            users[i].user_id
        );
        let distinct: HashSet<&String> = bodies.iter().collect();
        assert_eq!(
            distinct.len(),
            3 * PER_USER,
            "{} saw duplicates",
            users[i].user_id
        );
        for sender in 0..3 {
            let order: Vec<usize> = bodies
                .iter()
                .filter_map(|b| b.strip_prefix(&format!("{sender}:")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(
                order,
                (0..PER_USER).collect::<Vec<_>>(),
                "order of {sender}'s messages at {i}"
            );
        }
    }
    // Every server delivers each message after the events it cites.
    for i in 0..3 {
        assert_dag_order(servers[(i + 1) % 3], servers[i], seen[i].events(&room)).await;
    }

    // Typing on B, a read receipt on C and presence on A reach the others.
    let last_message = seen[2].events(&room).last().unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = b
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                urlencode(&room),
                urlencode(&users[1].user_id)
            ),
            &users[1].token,
            json!({"typing": true, "timeout": 20_000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = c
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                urlencode(&room),
                urlencode(&last_message)
            ),
            &users[2].token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = a
        .put(
            &format!(
                "/_matrix/client/v3/presence/{}/status",
                urlencode(&users[0].user_id)
            ),
            &users[0].token,
            json!({"presence": "online", "status_msg": "on A"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bob_id = users[1].user_id.clone();
    seen[0]
        .until(&a, &users[0], Duration::from_secs(15), |s| {
            let ephemeral = s.ephemeral.get(&room).map(Vec::as_slice).unwrap_or(&[]);
            let typing = ephemeral.iter().any(|e| {
                e["type"] == "m.typing"
                    && e["content"]["user_ids"]
                        .as_array()
                        .is_some_and(|u| u.contains(&json!(bob_id)))
            });
            let receipt = ephemeral.iter().any(|e| {
                e["type"] == "m.receipt"
                    && !e["content"][&last_message]["m.read"][&carol_id].is_null()
            });
            typing && receipt
        })
        .await;
    let alice_id = users[0].user_id.clone();
    for i in [1, 2] {
        seen[i]
            .until(servers[i], &users[i], Duration::from_secs(15), |s| {
                s.presence
                    .iter()
                    .any(|p| p["sender"] == alice_id && p["content"]["status_msg"] == "on A")
            })
            .await;
    }

    // C goes down; A and B keep talking; C comes back and catches up.
    c.shut_down().await;
    for n in 0..20 {
        a.send_text(
            &users[0],
            &room,
            &format!("down-a{n}"),
            &format!("while down a{n}"),
        )
        .await;
        b.send_text(
            &users[1],
            &room,
            &format!("down-b{n}"),
            &format!("while down b{n}"),
        )
        .await;
    }
    c.restart().await;
    seen[2]
        .until(&c, &users[2], Duration::from_secs(60), |s| {
            s.bodies(&room)
                .iter()
                .filter(|b| b.starts_with("while down"))
                .count()
                >= 40
        })
        .await;
    let bodies = seen[2].bodies(&room);
    let missed: Vec<&String> = bodies
        .iter()
        .filter(|b| b.starts_with("while down"))
        .collect();
    let distinct: HashSet<&&String> = missed.iter().collect();
    assert_eq!(
        (missed.len(), distinct.len()),
        (40, 40),
        "C caught up exactly once"
    );
}

/// A network partition between A and B (C hears both, but neither hears
/// C): on B a moderator bans one of A's users; a moment later, on A, the
/// room's admin demotes that moderator and bans one of B's users. Once the
/// partition heals every server holds the same state, the one state
/// resolution v2 gives: power events sort by their senders' power first, so
/// the demotion applies before the (earlier) ban, which then fails its auth
/// check: A's user stays in, B's user is banned, the moderator is at 0.
async fn partitioned_servers_resolve_conflicting_state_alike(backend: Backend) {
    let (gate_a, gate_b) = (Gate::new().await, Gate::new().await);
    let fast = |config: &mut corvid::Config| {
        config.federation.retry_min_ms = 100;
        config.federation.retry_max_ms = 500;
    };
    let a = TestServer::start_federating_behind(backend, "127.0.0.1", &gate_a, fast)
        .await
        .unwrap();
    let b = TestServer::start_federating_behind(backend, "localhost", &gate_b, fast)
        .await
        .unwrap();
    let c = server(backend, "127.0.0.1").await;
    let (alice, erin) = (a.register("alice").await, a.register("erin").await);
    let (bob, dave) = (b.register("bob").await, b.register("dave").await);
    let carol = c.register("carol").await;
    let room = a
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "room_version": "11",
                "power_level_content_override": {"users": {&alice.user_id: 100, &bob.user_id: 50}},
            }),
        )
        .await;
    assert_eq!(a.join(&erin, &room).await.0, StatusCode::OK);
    for (s, user) in [(&b, &bob), (&b, &dave), (&c, &carol)] {
        let (status, body) = join_via(s, user, &room, a.server_name()).await;
        assert_eq!(status, StatusCode::OK, "join: {body}");
        // dave's join is B's own event (B is in the room by then) and
        // reaches A in a transaction: carol's server, joining through A,
        // learns of it only once A has it (or from a later event citing it).
        let id = user.user_id.clone();
        wait_for_state(&a, &alice, &room, |state| membership(state, &id) == "join").await;
    }
    let observers = [(&a, &alice), (&b, &bob), (&c, &carol)];
    for (s, user) in observers {
        wait_for_state(s, user, &room, |state| joined(state).len() == 5).await;
    }

    gate_a.close();
    gate_b.close();
    let (status, body) = ban(&b, &bob, &room, &erin).await;
    assert_eq!(status, StatusCode::OK, "bob bans erin on B: {body}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, body) = a
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
                urlencode(&room)
            ),
            &alice.token,
            power_levels_with(&a, &alice, &room, &bob.user_id, 0).await,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "alice demotes bob on A: {body}");
    let (status, body) = ban(&a, &alice, &room, &dave).await;
    assert_eq!(status, StatusCode::OK, "alice bans dave on A: {body}");
    // Each side sees only its own changes.
    wait_for_state(&a, &alice, &room, |state| {
        membership(state, &dave.user_id) == "ban"
    })
    .await;
    wait_for_state(&b, &bob, &room, |state| {
        membership(state, &erin.user_id) == "ban"
    })
    .await;

    gate_a.open();
    gate_b.open();
    let expected = |state: &[Value]| {
        membership(state, &erin.user_id) == "join"
            && membership(state, &dave.user_id) == "ban"
            && power_level(state, &bob.user_id) == Some(0)
    };
    let mut resolved = Vec::new();
    for (s, user) in observers {
        resolved.push(wait_for_state(s, user, &room, expected).await);
    }
    let ids = |state: &[Value]| {
        let mut ids: Vec<String> = state
            .iter()
            .map(|e| format!("{} {} {}", e["type"], e["state_key"], e["event_id"]))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(&resolved[0]),
        ids(&resolved[1]),
        "A and B resolved alike"
    );
    assert_eq!(
        ids(&resolved[0]),
        ids(&resolved[2]),
        "A and C resolved alike"
    );
}

async fn ban(s: &TestServer, by: &User, room: &str, target: &User) -> (StatusCode, Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/ban", urlencode(room));
    s.post(&path, &by.token, json!({"user_id": target.user_id}))
        .await
}

/// Polls the room's state as `user` sees it on `s` until `done` holds (30 s at most).
async fn wait_for_state(
    s: &TestServer,
    user: &User,
    room: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, state) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{}/state", urlencode(room)),
                &user.token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{state}");
        let state = state.as_array().cloned().unwrap_or_default();
        if done(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "{} never reached the expected state: {state:?}",
            s.server_name()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn membership<'a>(state: &'a [Value], user: &str) -> &'a str {
    state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == user)
        .and_then(|e| e["content"]["membership"].as_str())
        .unwrap_or("")
}

fn joined(state: &[Value]) -> Vec<&str> {
    state
        .iter()
        .filter(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "join")
        .filter_map(|e| e["state_key"].as_str())
        .collect()
}

fn power_level(state: &[Value], user: &str) -> Option<i64> {
    let levels = state.iter().find(|e| e["type"] == "m.room.power_levels")?;
    Some(levels["content"]["users"][user].as_i64().unwrap_or(0))
}

/// The room's power levels with `user` set to `level`.
async fn power_levels_with(s: &TestServer, by: &User, room: &str, user: &str, level: i64) -> Value {
    let (status, mut levels) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
                urlencode(room)
            ),
            &by.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{levels}");
    levels["users"][user] = json!(level);
    levels
}

/// Invites to users of another server (accepted and rejected), a knock
/// answered with an invite, and a leave, each seen on both sides.
async fn invites_rejections_knocks_and_leaves_across_servers(backend: Backend) {
    let a = server(backend, "127.0.0.1").await;
    let b = server(backend, "localhost").await;
    let alice = a.register("alice").await;
    let (bob, dave, erin) = (
        b.register("bob").await,
        b.register("dave").await,
        b.register("erin").await,
    );
    let room = a
        .create_room(
            &alice,
            json!({"preset": "private_chat", "name": "Invite only"}),
        )
        .await;
    let invite = |who: &User| {
        let path = format!("/_matrix/client/v3/rooms/{}/invite", urlencode(&room));
        (path, json!({"user_id": who.user_id}))
    };

    // bob is invited, sees the room's name in the invite, and joins.
    let (path, body) = invite(&bob);
    let (status, res) = a.post(&path, &alice.token, body).await;
    assert_eq!(status, StatusCode::OK, "remote invite: {res}");
    let mut bob_seen = Seen::new();
    bob_seen
        .until(&b, &bob, Duration::from_secs(10), |s| {
            s.invites.contains(&room)
        })
        .await;
    let stripped = &bob_seen.last["rooms"]["invite"][&room]["invite_state"]["events"];
    assert!(
        stripped
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Invite only"),
        "invite state: {stripped}"
    );
    let (status, res) = b.join(&bob, &room).await;
    assert_eq!(status, StatusCode::OK, "join after invite: {res}");

    // dave is invited and declines.
    let (path, body) = invite(&dave);
    assert_eq!(a.post(&path, &alice.token, body).await.0, StatusCode::OK);
    let mut dave_seen = Seen::new();
    dave_seen
        .until(&b, &dave, Duration::from_secs(10), |s| {
            s.invites.contains(&room)
        })
        .await;
    let (status, res) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", urlencode(&room)),
            &dave.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "reject a remote invite: {res}");
    let (status, rooms) = b.get("/_matrix/client/v3/joined_rooms", &dave.token).await;
    assert_eq!(
        (status, rooms["joined_rooms"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );
    wait_for_state(&a, &alice, &room, |state| {
        membership(state, &bob.user_id) == "join" && membership(state, &dave.user_id) == "leave"
    })
    .await;

    // erin knocks on a knockable room, is let in by an invite, and joins.
    let knock_room = a
        .create_room(
            &alice,
            json!({"preset": "private_chat", "initial_state": [
                {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}
            ]}),
        )
        .await;
    let (status, res) = b
        .post(
            &format!(
                "/_matrix/client/v3/knock/{}?via={}",
                urlencode(&knock_room),
                urlencode(a.server_name())
            ),
            &erin.token,
            json!({"reason": "let me in"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "remote knock: {res}");
    wait_for_state(&a, &alice, &knock_room, |state| {
        membership(state, &erin.user_id) == "knock"
    })
    .await;
    let (status, res) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", urlencode(&knock_room)),
            &alice.token,
            json!({"user_id": erin.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "invite the knocker: {res}");
    let mut erin_seen = Seen::new();
    erin_seen
        .until(&b, &erin, Duration::from_secs(10), |s| {
            s.invites.contains(&knock_room)
        })
        .await;
    assert_eq!(b.join(&erin, &knock_room).await.0, StatusCode::OK);
    wait_for_state(&a, &alice, &knock_room, |state| {
        membership(state, &erin.user_id) == "join"
    })
    .await;

    // bob leaves; both servers agree.
    let (status, res) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", urlencode(&room)),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "leave: {res}");
    wait_for_state(&a, &alice, &room, |state| {
        membership(state, &bob.user_id) == "leave"
    })
    .await;
}

/// A restricted room admits members of the room it names: the resident
/// server vouches for the join (`join_authorised_via_users_server`) and
/// signs it; a user of that server who is not in the named room is refused.
async fn restricted_rooms_are_joined_through_a_resident_server(backend: Backend) {
    let a = server(backend, "127.0.0.1").await;
    let b = server(backend, "localhost").await;
    let alice = a.register("alice").await;
    let (bob, frank) = (b.register("bob").await, b.register("frank").await);
    let space = a
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let (status, res) = join_via(&b, &bob, &space, a.server_name()).await;
    assert_eq!(status, StatusCode::OK, "{res}");
    let restricted = a
        .create_room(
            &alice,
            json!({"preset": "private_chat", "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}
            }]}),
        )
        .await;

    // Refused by the resident server (B is not in the room yet): the refusal
    // reaches the client as it was given.
    let (status, res) = join_via(&b, &frank, &restricted, a.server_name()).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "not in the allowed room: {res}"
    );
    assert_eq!(res["errcode"], "M_FORBIDDEN");

    let (status, res) = join_via(&b, &bob, &restricted, a.server_name()).await;
    assert_eq!(status, StatusCode::OK, "restricted join: {res}");
    let state = wait_for_state(&a, &alice, &restricted, |state| {
        membership(state, &bob.user_id) == "join"
    })
    .await;
    let join = state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id)
        .unwrap();
    assert_eq!(
        join["content"]["join_authorised_via_users_server"],
        alice.user_id
    );

    // Now B holds the room: its own auth rules refuse frank (no user of B
    // may vouch for someone outside the allowed room).
    let (status, res) = join_via(&b, &frank, &restricted, a.server_name()).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "not in the allowed room: {res}"
    );
}

/// A space on A lists a public and a private room of A and a public room
/// of B: each user sees, depth first in the links' order, the rooms they
/// may see, rooms of the other server described by that server.
async fn space_hierarchies_span_servers(backend: Backend) {
    let a = server(backend, "127.0.0.1").await;
    let b = server(backend, "localhost").await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let space = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "creation_content": {"type": "m.space"}}),
        )
        .await;
    let public = a
        .create_room(&alice, json!({"preset": "public_chat", "name": "Public"}))
        .await;
    let private = a
        .create_room(&alice, json!({"preset": "private_chat", "name": "Private"}))
        .await;
    let theirs = b
        .create_room(&bob, json!({"preset": "public_chat", "name": "Bob's"}))
        .await;
    for (child, order, via) in [
        (&public, "a", a.server_name()),
        (&private, "b", a.server_name()),
        (&theirs, "c", b.server_name()),
    ] {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.space.child/{}",
            urlencode(&space),
            urlencode(child)
        );
        let (status, res) = a
            .put(&path, &alice.token, json!({"via": [via], "order": order}))
            .await;
        assert_eq!(status, StatusCode::OK, "{res}");
    }
    let (status, res) = join_via(&b, &bob, &space, a.server_name()).await;
    assert_eq!(status, StatusCode::OK, "{res}");

    let (ids, body) = hierarchy(&a, &alice, &space).await;
    assert_eq!(
        ids,
        [
            space.clone(),
            public.clone(),
            private.clone(),
            theirs.clone()
        ],
        "{body}"
    );
    let theirs_chunk = body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == theirs)
        .unwrap();
    assert_eq!(
        theirs_chunk["name"], "Bob's",
        "described by B: {theirs_chunk}"
    );
    assert_eq!(
        body["rooms"][0]["children_state"].as_array().unwrap().len(),
        3
    );

    let (ids, body) = hierarchy(&b, &bob, &space).await;
    assert_eq!(
        ids,
        [space.clone(), public.clone(), theirs.clone()],
        "the private room stays hidden: {body}"
    );

    // Paged one room at a time, the same walk.
    let mut paged = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..10 {
        let mut path = format!(
            "/_matrix/client/v1/rooms/{}/hierarchy?limit=1",
            urlencode(&space)
        );
        if let Some(from) = &from {
            path.push_str(&format!("&from={from}"));
        }
        let (status, body) = a.get(&path, &alice.token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        paged.extend(
            body["rooms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["room_id"].as_str().unwrap().to_owned()),
        );
        match body["next_batch"].as_str() {
            Some(next) => from = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        paged,
        [
            space.clone(),
            public.clone(),
            private.clone(),
            theirs.clone()
        ]
    );
}

/// The room ids of a space's hierarchy as `user` sees it, and the answer.
async fn hierarchy(s: &TestServer, user: &User, space: &str) -> (Vec<String>, Value) {
    let path = format!("/_matrix/client/v1/rooms/{}/hierarchy", urlencode(space));
    let (status, body) = s.get(&path, &user.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids = body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect();
    (ids, body)
}

/// A user who joins a room of another server pages back past their join:
/// the history from before (shared with new members) is fetched with
/// `/backfill` and paged in order, each event once; history only members
/// at the time could see arrives redacted.
async fn history_from_before_a_join_is_backfilled(backend: Backend) {
    let a = server(backend, "127.0.0.1").await;
    let b = server(backend, "localhost").await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    for n in 0..30 {
        a.send_text(&alice, &room, &format!("h{n}"), &format!("history {n}"))
            .await;
    }
    let (status, res) = join_via(&b, &bob, &room, a.server_name()).await;
    assert_eq!(status, StatusCode::OK, "{res}");

    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..20 {
        let mut path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10",
            urlencode(&room)
        );
        if let Some(from) = &from {
            path.push_str(&format!("&from={}", urlencode(from)));
        }
        let (status, page) = b.get(&path, &bob.token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        bodies.extend(
            page["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)),
        );
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..30).rev().map(|n| format!("history {n}")).collect();
    assert_eq!(bodies, expected, "history paged back once, newest first");

    // History only members could see reaches a new member's server redacted.
    let secret = a
        .create_room(
            &alice,
            json!({"preset": "private_chat", "initial_state": [{
                "type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}
            }]}),
        )
        .await;
    a.send_text(&alice, &secret, "s1", "before you came").await;
    let (status, res) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", urlencode(&secret)),
            &alice.token,
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    assert_eq!(b.join(&bob, &secret).await.0, StatusCode::OK);
    let (status, page) = b
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
                urlencode(&secret)
            ),
            &bob.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        !page.to_string().contains("before you came"),
        "history bob's server could not see was backfilled in full: {page}"
    );
}

/// `timeline` (as a user of `at` received it) lists every event after its
/// prev events that it lists too; the prev events are read over federation
/// as `asker` (another server in the room).
async fn assert_dag_order(asker: &TestServer, at: &TestServer, timeline: &[Value]) {
    let index: HashMap<&str, usize> = timeline
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((e["event_id"].as_str()?, i)))
        .collect();
    for (i, event) in timeline.iter().enumerate() {
        let id = event["event_id"].as_str().unwrap();
        let path = format!("/_matrix/federation/v1/event/{}", urlencode(id));
        let (status, body) = signed_json(asker, at, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for prev in body["pdus"][0]["prev_events"].as_array().unwrap() {
            if let Some(&p) = index.get(prev.as_str().unwrap()) {
                assert!(
                    p < i,
                    "{id} came before its prev event {prev} at {}",
                    at.server_name()
                );
            }
        }
    }
}

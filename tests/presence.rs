//! Presence: the status endpoints, the `presence` section of sync,
//! `set_presence`, the idle and offline timeouts — each on both presence
//! stores (in-process and Redis) — and presence and wake-ups shared by two
//! server processes through Redis.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestServer, User};
use corvid::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Runs each scenario on both databases, each with both presence stores.
macro_rules! on_both_presence_stores {
    ($($name:ident),* $(,)?) => {
        on_both_presence_stores!(@store memory, false, $($name),*);
        on_both_presence_stores!(@store redis, true, $($name),*);
    };
    (@store $store:ident, $redis:expr, $($name:ident),*) => {
        mod $store {
            mod sqlite {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = $crate::start($crate::Backend::Sqlite, $redis).await {
                        super::super::$name(s).await;
                    }
                })*
            }
            mod postgres {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = $crate::start($crate::Backend::Postgres, $redis).await {
                        super::super::$name(s).await;
                    }
                })*
            }
        }
    };
}

on_both_presence_stores!(
    status_round_trip_and_access,
    presence_reaches_those_who_share_a_room_once,
    set_presence_on_sync,
    idle_and_offline_timeouts
);

/// Short timeouts, so the timeout scenario takes seconds.
fn fast(config: &mut Config) {
    config.presence.idle_after_ms = 600;
    config.presence.offline_after_ms = 2_000;
}

/// A server with short presence timeouts, on Redis presence if `redis`.
async fn start(backend: Backend, redis: bool) -> Option<TestServer> {
    let url = if redis {
        Some(common::redis_url()?)
    } else {
        None
    };
    TestServer::start_with(backend, |c| {
        fast(c);
        if let Some(url) = &url {
            common::use_redis(c, url);
        }
    })
    .await
}

async fn set_status(s: &TestServer, user: &User, body: Value) -> (StatusCode, Value) {
    s.put(
        &format!("/_matrix/client/v3/presence/{}/status", user.user_id),
        &user.token,
        body,
    )
    .await
}

async fn get_status(s: &TestServer, asker: &User, user: &User) -> (StatusCode, Value) {
    s.get(
        &format!("/_matrix/client/v3/presence/{}/status", user.user_id),
        &asker.token,
    )
    .await
}

/// `(sender, content)` of the presence events in a sync response.
fn presence_of(sync: &Value) -> Vec<(String, Value)> {
    sync["presence"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["sender"].as_str().unwrap().to_owned(),
                e["content"].clone(),
            )
        })
        .collect()
}

async fn sync_quietly(s: &TestServer, user: &User, since: Option<&str>, timeout_ms: u64) -> Value {
    let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&set_presence=offline");
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    let (status, body) = s.get(&path, &user.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

async fn two_in_a_room(s: &TestServer) -> (User, User) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    (alice, bob)
}

async fn status_round_trip_and_access(s: TestServer) {
    let (alice, bob) = two_in_a_room(&s).await;
    let (status, body) = get_status(&s, &bob, &alice).await;
    assert_eq!(
        (status, &body["presence"]),
        (StatusCode::OK, &json!("offline"))
    );

    let (status, body) = set_status(
        &s,
        &alice,
        json!({"presence": "online", "status_msg": "at lunch"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = get_status(&s, &bob, &alice).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["presence"], "online");
    assert_eq!(body["status_msg"], "at lunch");
    assert_eq!(body["currently_active"], true);
    assert!(
        body["last_active_ago"]
            .as_u64()
            .is_some_and(|ago| ago < 60_000),
        "{body}"
    );

    let stranger = s.register("stranger").await;
    let (status, _) = get_status(&s, &stranger, &alice).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", alice.user_id),
            &bob.token,
            json!({"presence": "offline"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = set_status(&s, &alice, json!({"presence": "busy"})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM"))
    );
}

async fn presence_reaches_those_who_share_a_room_once(s: TestServer) {
    let (alice, bob) = two_in_a_room(&s).await;
    let stranger = s.register("stranger").await;
    let bob_since = next_batch(&sync_quietly(&s, &bob, None, 0).await);
    let stranger_since = next_batch(&sync_quietly(&s, &stranger, None, 0).await);

    set_status(
        &s,
        &alice,
        json!({"presence": "unavailable", "status_msg": "brb"}),
    )
    .await;
    let sync = sync_quietly(&s, &bob, Some(&bob_since), 5_000).await;
    let seen = presence_of(&sync);
    let alice_seen: Vec<_> = seen.iter().filter(|(u, _)| *u == alice.user_id).collect();
    assert_eq!(alice_seen.len(), 1, "{sync}");
    assert_eq!(alice_seen[0].1["presence"], "unavailable");
    assert_eq!(alice_seen[0].1["status_msg"], "brb");

    // Once: nothing new about Alice in the next sync.
    let again = sync_quietly(&s, &bob, Some(&next_batch(&sync)), 0).await;
    assert!(
        presence_of(&again).iter().all(|(u, _)| *u != alice.user_id),
        "{again}"
    );

    // A user who shares no room with Alice never hears of her.
    let sync = sync_quietly(&s, &stranger, Some(&stranger_since), 0).await;
    assert!(
        presence_of(&sync).iter().all(|(u, _)| *u != alice.user_id),
        "{sync}"
    );
    let initial = sync_quietly(&s, &stranger, None, 0).await;
    assert!(
        presence_of(&initial)
            .iter()
            .all(|(u, _)| *u != alice.user_id),
        "{initial}"
    );

    // A filter can turn presence off.
    let (_, body) = s
        .get(
            &format!(
                "/_matrix/client/v3/sync?set_presence=offline&filter={}",
                common::urlencode(r#"{"presence":{"not_types":["*"]}}"#)
            ),
            &bob.token,
        )
        .await;
    assert!(presence_of(&body).is_empty(), "{body}");
}

async fn set_presence_on_sync(s: TestServer) {
    let (alice, bob) = two_in_a_room(&s).await;
    let bob_since = next_batch(&sync_quietly(&s, &bob, None, 0).await);
    // `offline`: syncing does not make Alice online.
    sync_quietly(&s, &alice, None, 0).await;
    let (_, body) = get_status(&s, &bob, &alice).await;
    assert_eq!(body["presence"], "offline");
    // The default (`online`) does, and Bob's long-poll hears of it.
    s.sync(&alice, None, 0).await;
    let sync = sync_quietly(&s, &bob, Some(&bob_since), 5_000).await;
    let alice_seen: Vec<_> = presence_of(&sync)
        .into_iter()
        .filter(|(u, _)| *u == alice.user_id)
        .collect();
    assert_eq!(alice_seen.len(), 1, "{sync}");
    assert_eq!(alice_seen[0].1["presence"], "online");
    // `unavailable` on sync.
    let (status, _) = s
        .get(
            "/_matrix/client/v3/sync?timeout=0&set_presence=unavailable",
            &alice.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = get_status(&s, &bob, &alice).await;
    assert_eq!(body["presence"], "unavailable");
}

async fn idle_and_offline_timeouts(s: TestServer) {
    let (alice, bob) = two_in_a_room(&s).await;
    set_status(&s, &alice, json!({"presence": "online"})).await;
    let started = Instant::now();
    let mut states = Vec::new();
    let mut since = next_batch(&sync_quietly(&s, &bob, None, 0).await);
    // Alice keeps a client syncing (online) for a while without acting:
    // she turns idle. Then her client goes away: she goes offline.
    let alice_client = {
        let (base, token) = (s.base.clone(), alice.token.clone());
        tokio::spawn(async move {
            let url = format!("{base}/_matrix/client/v3/sync?timeout=1500");
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
        })
    };
    while !states.ends_with(&["offline".to_owned()]) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "states so far: {states:?}"
        );
        let sync = sync_quietly(&s, &bob, Some(&since), 3_000).await;
        since = next_batch(&sync);
        for (user, content) in presence_of(&sync) {
            if user == alice.user_id {
                states.push(content["presence"].as_str().unwrap().to_owned());
            }
        }
    }
    alice_client.await.unwrap();
    let idle = states.iter().position(|s| s == "unavailable");
    assert!(idle.is_some(), "never idle: {states:?}");
    let (_, body) = get_status(&s, &bob, &alice).await;
    assert_eq!(
        (
            body["presence"].as_str(),
            body["currently_active"].as_bool()
        ),
        (Some("offline"), Some(false))
    );
}

on_both_backends!(scale_out_shares_presence_and_wake_ups);

/// Two server processes on one database and one Redis: a user on one sees
/// presence set on the other, and a long-poll held by one wakes when the
/// other persists an event.
async fn scale_out_shares_presence_and_wake_ups(first: TestServer) {
    if matches!(first.config.database_url.split(':').next(), Some("sqlite")) {
        return; // two processes on one SQLite file is not a supported set-up
    }
    let Some(url) = common::redis_url() else {
        return;
    };
    drop(first);
    let Some(first) =
        TestServer::start_with(Backend::Postgres, |c| common::use_redis(c, &url)).await
    else {
        return;
    };
    let second = first.sibling().await;
    let (alice, bob, room) = first.alice_and_bob_in_a_room().await;
    let since = next_batch(&sync_quietly(&second, &bob, None, 0).await);

    // A long-poll on the second process wakes for a message sent on the first.
    let poll = second.long_poll(&bob, &since);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = first
        .send_text(&alice, &room, "a1", "across processes")
        .await;
    let (elapsed, body) = poll.await.unwrap();
    assert!(
        elapsed < Duration::from_secs(10),
        "long-poll held for {elapsed:?}"
    );
    let events = body["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap();
    assert!(events.iter().any(|e| e["event_id"] == sent), "{body}");

    // Presence set through the first process is what the second one serves
    // and what its syncs deliver.
    set_status(
        &first,
        &alice,
        json!({"presence": "unavailable", "status_msg": "shared"}),
    )
    .await;
    let (status, status_body) = get_status(&second, &bob, &alice).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            status_body["presence"].as_str(),
            status_body["status_msg"].as_str()
        ),
        (Some("unavailable"), Some("shared"))
    );
    let sync = sync_quietly(&second, &bob, Some(&next_batch(&body)), 5_000).await;
    let alice_seen: Vec<_> = presence_of(&sync)
        .into_iter()
        .filter(|(u, c)| *u == alice.user_id && c["status_msg"] == "shared")
        .collect();
    assert_eq!(alice_seen.len(), 1, "{sync}");
}

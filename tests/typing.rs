//! Typing notifications: start, stop and expiry reach members' syncs, and
//! wake their long-polls at once.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, User};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    typing_starts_stops_and_expires,
    typing_needs_membership_and_ownership,
    typing_wakes_a_long_poll
);

async fn set_typing(s: &TestServer, user: &User, room: &str, body: Value) -> (StatusCode, Value) {
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/typing/{}", user.user_id),
        &user.token,
        body,
    )
    .await
}

fn typing_users(sync: &Value, room: &str) -> Option<Vec<String>> {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == "m.typing")
        .map(|e| {
            e["content"]["user_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap().to_owned())
                .collect()
        })
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

async fn two_in_a_room(s: &TestServer) -> (User, User, String) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    (alice, bob, room)
}

async fn typing_starts_stops_and_expires(s: TestServer) {
    let (alice, bob, room) = two_in_a_room(&s).await;
    let since = next_batch(&s.sync(&bob, None, 0).await);

    let (status, body) =
        set_typing(&s, &alice, &room, json!({"typing": true, "timeout": 30000})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sync = s.sync(&bob, Some(&since), 0).await;
    assert_eq!(
        typing_users(&sync, &room),
        Some(vec![alice.user_id.clone()])
    );
    // A new member's first sync shows who is typing now.
    let initial = s.sync(&bob, None, 0).await;
    assert_eq!(
        typing_users(&initial, &room),
        Some(vec![alice.user_id.clone()])
    );

    let since = next_batch(&sync);
    set_typing(&s, &alice, &room, json!({"typing": false})).await;
    let sync = s.sync(&bob, Some(&since), 0).await;
    assert_eq!(typing_users(&sync, &room), Some(vec![]));

    // Expiry: the list empties by itself once the timeout passes.
    let since = next_batch(&sync);
    set_typing(&s, &alice, &room, json!({"typing": true, "timeout": 500})).await;
    let sync = s.sync(&bob, Some(&since), 0).await;
    assert_eq!(
        typing_users(&sync, &room),
        Some(vec![alice.user_id.clone()])
    );
    let mut since = next_batch(&sync);
    let started = Instant::now();
    loop {
        let sync = s.sync(&bob, Some(&since), 5_000).await;
        since = next_batch(&sync);
        if typing_users(&sync, &room) == Some(vec![]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "typing never expired"
        );
    }
}

async fn typing_needs_membership_and_ownership(s: TestServer) {
    let (alice, bob, room) = two_in_a_room(&s).await;
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", bob.user_id),
            &alice.token,
            json!({"typing": true, "timeout": 1000}),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN"))
    );
    let stranger = s.register("stranger").await;
    let (status, _) = set_typing(
        &s,
        &stranger,
        &room,
        json!({"typing": true, "timeout": 1000}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = set_typing(&s, &alice, &room, json!({"typing": "yes"})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_BAD_JSON"))
    );
}

async fn typing_wakes_a_long_poll(s: TestServer) {
    let (alice, bob, room) = two_in_a_room(&s).await;
    let since = next_batch(&s.sync(&bob, None, 0).await);
    let poll = s.long_poll(&bob, &since);
    tokio::time::sleep(Duration::from_millis(300)).await;
    set_typing(&s, &alice, &room, json!({"typing": true, "timeout": 10000})).await;
    let (elapsed, body) = poll.await.unwrap();
    assert!(
        elapsed < Duration::from_secs(10),
        "long-poll held for {elapsed:?}"
    );
    assert_eq!(
        typing_users(&body, &room),
        Some(vec![alice.user_id.clone()]),
        "{body}"
    );
}

//! Receipts (`m.read`, `m.read.private`, threaded), read markers and our
//! delivered receipts (`org.corvid.delivered`, spec/extensions.md).

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, User};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    read_receipts_reach_members_once_and_only_move_forward,
    private_receipts_stay_private,
    threaded_receipts,
    read_markers_set_fully_read_and_receipts,
    bad_receipts_are_refused,
    delivered_receipts_tell_the_sender,
    delivered_receipts_respect_the_opt_out,
    receipt_wakes_a_long_poll,
    others_delivered_receipts_ride_along,
    two_devices_receiving_at_once_give_one_delivered_receipt
);

/// Alice's room with Bob joined, and a message from Bob in it.
async fn room_with_message(s: &TestServer) -> (User, User, String, String) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    let event = s.send_text(&bob, &room, "b1", "hello").await;
    (alice, bob, room, event)
}

async fn post_receipt(
    s: &TestServer,
    user: &User,
    room: &str,
    kind: &str,
    event: &str,
    body: Value,
) -> (StatusCode, Value) {
    s.post(
        &format!("/_matrix/client/v3/rooms/{room}/receipt/{kind}/{event}"),
        &user.token,
        body,
    )
    .await
}

/// Every `m.receipt` content of the room in one sync response.
fn receipts(sync: &Value, room: &str) -> Vec<Value> {
    ephemeral(sync, room, "m.receipt")
}

fn ephemeral(sync: &Value, room: &str, kind: &str) -> Vec<Value> {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == kind)
        .map(|e| e["content"].clone())
        .collect()
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

async fn read_receipts_reach_members_once_and_only_move_forward(s: TestServer) {
    let (alice, bob, room, event) = room_with_message(&s).await;
    let since = next_batch(&s.sync(&bob, None, 0).await);

    let (status, body) = post_receipt(&s, &alice, &room, "m.read", &event, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sync = s.sync(&bob, Some(&since), 0).await;
    let got = receipts(&sync, &room);
    assert_eq!(got.len(), 1, "{sync}");
    let receipt = &got[0][&event]["m.read"][&alice.user_id];
    assert!(receipt["ts"].is_u64(), "{receipt}");
    assert!(receipt.get("thread_id").is_none());

    // Delivered once: the next change does not repeat it.
    let since = next_batch(&sync);
    s.send_text(&alice, &room, "a1", "later").await;
    let sync = s.sync(&bob, Some(&since), 0).await;
    assert!(
        receipts(&sync, &room)
            .iter()
            .all(|c| c.get(&event).is_none()),
        "{sync}"
    );

    // A receipt for an older event than the current one changes nothing.
    let since = next_batch(&sync);
    let first = s.send_text(&bob, &room, "b2", "newer").await;
    post_receipt(&s, &alice, &room, "m.read", &first, json!({})).await;
    let sync = s.sync(&bob, Some(&since), 0).await;
    assert!(
        receipts(&sync, &room)
            .iter()
            .any(|c| c.get(&first).is_some())
    );
    let since = next_batch(&sync);
    let (status, _) = post_receipt(&s, &alice, &room, "m.read", &event, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let sync = s.sync(&bob, Some(&since), 0).await;
    assert!(receipts(&sync, &room).is_empty(), "moved backwards: {sync}");

    // A new member's first sync of the room carries the current receipts.
    let carol = s.register("carol").await;
    s.join(&carol, &room).await;
    let sync = s.sync(&carol, None, 0).await;
    let all = receipts(&sync, &room);
    assert!(
        all.iter()
            .any(|c| c[&first]["m.read"][&alice.user_id].is_object()),
        "{sync}"
    );
}

async fn private_receipts_stay_private(s: TestServer) {
    let (alice, bob, room, event) = room_with_message(&s).await;
    let bob_since = next_batch(&s.sync(&bob, None, 0).await);
    let alice_since = next_batch(&s.sync(&alice, None, 0).await);
    let (status, _) = post_receipt(&s, &alice, &room, "m.read.private", &event, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let bob_sync = s.sync(&bob, Some(&bob_since), 0).await;
    assert!(
        receipts(&bob_sync, &room)
            .iter()
            .all(|c| c[&event].get("m.read.private").is_none()),
        "{bob_sync}"
    );
    let alice_sync = s.sync(&alice, Some(&alice_since), 0).await;
    let got = receipts(&alice_sync, &room);
    assert!(
        got[0][&event]["m.read.private"][&alice.user_id].is_object(),
        "{alice_sync}"
    );
}

async fn threaded_receipts(s: TestServer) {
    let (alice, bob, room, root) = room_with_message(&s).await;
    let (_, reply) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
            &bob.token,
            json!({"msgtype": "m.text", "body": "in thread",
                   "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
        )
        .await;
    let reply = reply["event_id"].as_str().unwrap().to_owned();
    let since = next_batch(&s.sync(&bob, None, 0).await);

    let (status, body) = post_receipt(
        &s,
        &alice,
        &room,
        "m.read",
        &reply,
        json!({"thread_id": root}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post_receipt(
        &s,
        &alice,
        &room,
        "m.read",
        &root,
        json!({"thread_id": "main"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sync = s.sync(&bob, Some(&since), 0).await;
    let content = &receipts(&sync, &room)[0];
    assert_eq!(content[&reply]["m.read"][&alice.user_id]["thread_id"], root);
    assert_eq!(
        content[&root]["m.read"][&alice.user_id]["thread_id"],
        "main"
    );

    // The event must be in the thread named.
    let (status, body) = post_receipt(
        &s,
        &alice,
        &room,
        "m.read",
        &reply,
        json!({"thread_id": "main"}),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM"))
    );
    let (status, body) = post_receipt(
        &s,
        &alice,
        &room,
        "m.fully_read",
        &root,
        json!({"thread_id": "main"}),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM"))
    );
}

async fn read_markers_set_fully_read_and_receipts(s: TestServer) {
    let (alice, bob, room, event) = room_with_message(&s).await;
    let since = next_batch(&s.sync(&bob, None, 0).await);
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/read_markers"),
            &alice.token,
            json!({"m.fully_read": event, "m.read": event}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, marker) = s
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{room}/account_data/m.fully_read",
                alice.user_id
            ),
            &alice.token,
        )
        .await;
    assert_eq!(
        (status, &marker["event_id"]),
        (StatusCode::OK, &json!(event))
    );
    let sync = s.sync(&bob, Some(&since), 0).await;
    assert!(receipts(&sync, &room)[0][&event]["m.read"][&alice.user_id].is_object());

    // m.fully_read through the receipt endpoint too.
    let later = s.send_text(&bob, &room, "b2", "more").await;
    let (status, _) = post_receipt(&s, &alice, &room, "m.fully_read", &later, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let sync = s.sync(&alice, None, 0).await;
    let room_data = sync["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        room_data
            .iter()
            .any(|e| e["type"] == "m.fully_read" && e["content"]["event_id"] == later)
    );
}

async fn bad_receipts_are_refused(s: TestServer) {
    let (alice, _bob, room, event) = room_with_message(&s).await;
    let (status, body) = post_receipt(&s, &alice, &room, "m.read", "$nope", json!({})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
    let (status, body) =
        post_receipt(&s, &alice, &room, "org.corvid.delivered", &event, json!({})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM"))
    );
    let stranger = s.register("stranger").await;
    let private_room = s
        .create_room(&alice, json!({"preset": "private_chat"}))
        .await;
    let secret = s.send_text(&alice, &private_room, "s1", "secret").await;
    let (status, _) =
        post_receipt(&s, &stranger, &private_room, "m.read", &secret, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn delivered_receipts_tell_the_sender(s: TestServer) {
    let (alice, bob, room, _) = room_with_message(&s).await;
    let bob_since = next_batch(&s.sync(&bob, None, 0).await);
    let _ = s.sync(&alice, None, 0).await;
    let sent = s.send_text(&bob, &room, "b2", "did you get this?").await;
    // Alice's device receives the message...
    let alice_sync = s.sync(&alice, None, 0).await;
    assert!(alice_sync["rooms"]["join"][&room].is_object());
    // ...and Bob sees it delivered, without polling: his long-poll wakes.
    let started = Instant::now();
    let mut since = bob_since;
    let delivered = loop {
        let sync = s.sync(&bob, Some(&since), 5_000).await;
        since = next_batch(&sync);
        let found = receipts(&sync, &room)
            .into_iter()
            .find(|c| c[&sent]["org.corvid.delivered"][&alice.user_id].is_object());
        if let Some(c) = found {
            break c;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no delivered receipt"
        );
    };
    assert!(delivered[&sent]["org.corvid.delivered"][&alice.user_id]["ts"].is_u64());
}

async fn delivered_receipts_respect_the_opt_out(s: TestServer) {
    let (alice, bob, room, _) = room_with_message(&s).await;
    // Alice's first delivery is recorded while she still sends them: the
    // server keeps her setting, and must drop it when she changes it.
    let _ = s.sync(&alice, None, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = s
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/org.corvid.receipts",
                alice.user_id
            ),
            &alice.token,
            json!({"send_delivered": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let sent = s.send_text(&bob, &room, "b2", "ping").await;
    let _ = s.sync(&alice, None, 0).await;
    // A read receipt afterwards shows that the recorder has caught up.
    let bob_since = next_batch(&s.sync(&bob, None, 0).await);
    post_receipt(&s, &alice, &room, "m.read", &sent, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sync = s.sync(&bob, Some(&bob_since), 0).await;
    let all = receipts(&sync, &room);
    assert!(all.iter().any(|c| c[&sent]["m.read"].is_object()), "{sync}");
    let from_alice = |c: &Value| {
        c[&sent]["org.corvid.delivered"]
            .get(&alice.user_id)
            .is_some()
    };
    assert!(!all.iter().any(from_alice), "{sync}");
    let initial = s.sync(&bob, None, 0).await;
    assert!(
        !receipts(&initial, &room).iter().any(from_alice),
        "{initial}"
    );
}

async fn receipt_wakes_a_long_poll(s: TestServer) {
    let (alice, bob, room, event) = room_with_message(&s).await;
    let since = next_batch(&s.sync(&bob, None, 0).await);
    let poll = s.long_poll(&bob, &since);
    tokio::time::sleep(Duration::from_millis(300)).await;
    post_receipt(&s, &alice, &room, "m.read", &event, json!({})).await;
    let (elapsed, body) = poll.await.unwrap();
    assert!(
        elapsed < Duration::from_secs(10),
        "long-poll held for {elapsed:?}"
    );
    assert!(!receipts(&body, &room).is_empty(), "{body}");
}

/// Bob's delivered receipt on Alice's message wakes Alice, not Carol: Carol
/// gets it with her next response instead of an extra one.
async fn others_delivered_receipts_ride_along(s: TestServer) {
    let (alice, bob, room, _) = room_with_message(&s).await;
    let carol = s.register("carol").await;
    s.join(&carol, &room).await;
    let sent = s.send_text(&alice, &room, "a1", "to everyone").await;
    let since = next_batch(&s.sync(&carol, None, 0).await);
    s.sync(&bob, None, 0).await;
    // The receipt is recorded off the sync path: wait until Alice has it.
    let started = Instant::now();
    loop {
        let sync = s.sync(&alice, None, 0).await;
        if receipts(&sync, &room)
            .iter()
            .any(|c| c[&sent]["org.corvid.delivered"][&bob.user_id].is_object())
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no delivered receipt"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let sync = s
        .get(
            &format!("/_matrix/client/v3/sync?timeout=1000&since={since}&set_presence=offline"),
            &carol.token,
        )
        .await
        .1;
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "woken early: {sync}"
    );
    assert!(
        receipts(&sync, &room)
            .iter()
            .any(|c| c[&sent]["org.corvid.delivered"][&bob.user_id].is_object()),
        "{sync}"
    );
}

/// Two devices of one user syncing together: their deliveries are stored in
/// one batch, which holds two receipts for the same user, room and type.
async fn two_devices_receiving_at_once_give_one_delivered_receipt(s: TestServer) {
    let (alice, bob, room, _) = room_with_message(&s).await;
    let phone = s.login(&alice, None).await;
    let bob_since = next_batch(&s.sync(&bob, None, 0).await);
    let sent = s.send_text(&bob, &room, "b2", "to both devices").await;
    let (laptop_sync, phone_sync) = tokio::join!(s.sync(&alice, None, 0), s.sync(&phone, None, 0));
    for sync in [&laptop_sync, &phone_sync] {
        assert!(sync["rooms"]["join"][&room].is_object(), "{sync}");
    }
    let started = Instant::now();
    let mut since = bob_since;
    let mut seen = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let sync = s.sync(&bob, Some(&since), 500).await;
        since = next_batch(&sync);
        seen += receipts(&sync, &room)
            .iter()
            .filter(|c| c[&sent]["org.corvid.delivered"][&alice.user_id].is_object())
            .count();
    }
    assert_eq!(seen, 1, "Alice's delivered receipt should reach Bob once");
}

//! Push rules (the spec's defaults and a user's changes), unread counts in
//! sync (per room and per thread, reset by receipts), mentions and
//! `GET /notifications`.

mod common;

use common::{TestServer, User, urlencode};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    default_rules_and_editing_them,
    unread_counts_rise_and_reset,
    mentions_highlight_and_room_mentions_need_power,
    one_message_counts_for_each_recipient,
    thread_counts_and_threaded_receipts,
    muted_room_does_not_count,
    notifications_list_and_invites,
    notifications_survive_the_move_to_one_row_per_event
);

const RULES: &str = "/_matrix/client/v3/pushrules/global";

async fn two_in_a_room(s: &TestServer) -> (User, User, String) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    (alice, bob, room)
}

async fn send(s: &TestServer, user: &User, room: &str, txn: &str, content: Value) -> String {
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            &user.token,
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

/// `(notification_count, highlight_count)` of a room in a sync response.
fn counts(sync: &Value, room: &str) -> (u64, u64) {
    let unread = &sync["rooms"]["join"][room]["unread_notifications"];
    (
        unread["notification_count"].as_u64().unwrap_or(0),
        unread["highlight_count"].as_u64().unwrap_or(0),
    )
}

async fn read_up_to(s: &TestServer, user: &User, room: &str, event: &str, thread: Option<&str>) {
    let body = thread.map_or(json!({}), |t| json!({"thread_id": t}));
    let (status, res) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"),
            &user.token,
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
}

async fn default_rules_and_editing_them(s: TestServer) {
    let alice = s.register("alice").await;
    let (status, all) = s.get("/_matrix/client/v3/pushrules/", &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    let overrides = all["global"]["override"].as_array().unwrap();
    assert!(
        overrides
            .iter()
            .any(|r| r["rule_id"] == ".m.rule.is_user_mention")
    );
    assert!(
        overrides
            .iter()
            .any(|r| r["rule_id"] == ".m.rule.is_room_mention")
    );
    let (status, master) = s
        .get(&format!("{RULES}/override/.m.rule.master"), &alice.token)
        .await;
    assert_eq!(
        (status, &master["enabled"]),
        (StatusCode::OK, &json!(false))
    );

    // Enable, read back, and see it in sync's account data.
    let (status, _) = s
        .put(
            &format!("{RULES}/override/.m.rule.master/enabled"),
            &alice.token,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, enabled) = s
        .get(
            &format!("{RULES}/override/.m.rule.master/enabled"),
            &alice.token,
        )
        .await;
    assert_eq!(enabled["enabled"], true);
    let sync = s.sync(&alice, None, 0).await;
    let pushed = sync["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .cloned()
        .expect("m.push_rules in account data");
    assert!(pushed["content"]["global"]["override"].is_array());

    // A content rule of one's own, placed before another, with actions.
    let (status, body) = s
        .put(
            &format!("{RULES}/content/cats"),
            &alice.token,
            json!({"pattern": "cat*", "actions": ["notify"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = s
        .put(
            &format!("{RULES}/content/dogs?before=cats"),
            &alice.token,
            json!({"pattern": "dog*", "actions": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, content) = s.get(&format!("{RULES}/"), &alice.token).await;
    let ids: Vec<&str> = content["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap())
        .collect();
    let (dogs, cats) = (
        ids.iter().position(|i| *i == "dogs").unwrap(),
        ids.iter().position(|i| *i == "cats").unwrap(),
    );
    assert!(dogs < cats, "{ids:?}");
    let (status, _) = s
        .put(
            &format!("{RULES}/content/cats/actions"),
            &alice.token,
            json!({"actions": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, actions) = s
        .get(&format!("{RULES}/content/cats/actions"), &alice.token)
        .await;
    assert_eq!(actions["actions"], json!([]));

    let (status, _) = s
        .request(
            reqwest::Method::DELETE,
            &format!("{RULES}/content/cats"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s.get(&format!("{RULES}/content/cats"), &alice.token).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
    let (status, _) = s
        .request(
            reqwest::Method::DELETE,
            &format!("{RULES}/override/.m.rule.master"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s
        .put(
            &format!("{RULES}/content/.mine"),
            &alice.token,
            json!({"pattern": "x", "actions": []}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s
        .put(
            &format!("{RULES}/content/x?before=nope"),
            &alice.token,
            json!({"pattern": "x", "actions": []}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn unread_counts_rise_and_reset(s: TestServer) {
    let (alice, bob, room) = two_in_a_room(&s).await;
    let mut last = String::new();
    for i in 0..3 {
        last = send(
            &s,
            &bob,
            &room,
            &format!("b{i}"),
            json!({"msgtype": "m.text", "body": format!("hi {i}")}),
        )
        .await;
    }
    let sync = s.sync(&alice, None, 0).await;
    assert_eq!(
        counts(&sync, &room),
        (3, 0),
        "{}",
        sync["rooms"]["join"][&room]
    );
    // Her own messages never count for her.
    send(
        &s,
        &alice,
        &room,
        "a1",
        json!({"msgtype": "m.text", "body": "me"}),
    )
    .await;
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    read_up_to(&s, &alice, &room, &last, None).await;
    let sync = s.sync(&alice, Some(&since), 0).await;
    assert_eq!(
        counts(&sync, &room),
        (0, 0),
        "{}",
        sync["rooms"]["join"][&room]
    );
    send(
        &s,
        &bob,
        &room,
        "b9",
        json!({"msgtype": "m.text", "body": "again"}),
    )
    .await;
    let sync = s
        .sync(&alice, Some(sync["next_batch"].as_str().unwrap()), 0)
        .await;
    assert_eq!(counts(&sync, &room), (1, 0));
}

async fn mentions_highlight_and_room_mentions_need_power(s: TestServer) {
    let (alice, bob, room) = two_in_a_room(&s).await;
    // Bob (power 0) mentions Alice: a highlight for her.
    send(
        &s,
        &bob,
        &room,
        "m1",
        json!({"msgtype": "m.text", "body": "alice: look", "m.mentions": {"user_ids": [alice.user_id]}}),
    )
    .await;
    let sync = s.sync(&alice, None, 0).await;
    assert_eq!(counts(&sync, &room), (1, 1));
    // A room mention needs the `room` notification power level (50): Bob's
    // notifies without highlighting; Alice's (the creator) highlights for Bob.
    send(
        &s,
        &bob,
        &room,
        "m2",
        json!({"msgtype": "m.text", "body": "all", "m.mentions": {"room": true}}),
    )
    .await;
    let sync = s.sync(&alice, None, 0).await;
    assert_eq!(counts(&sync, &room), (2, 1));
    send(
        &s,
        &alice,
        &room,
        "m3",
        json!({"msgtype": "m.text", "body": "all", "m.mentions": {"room": true}}),
    )
    .await;
    let sync = s.sync(&bob, None, 0).await;
    assert_eq!(
        counts(&sync, &room).1,
        1,
        "{}",
        sync["rooms"]["join"][&room]
    );
}

/// A message stored together with what it adds to every recipient's unread
/// counts: two recipients, one of them highlighted, over two messages.
async fn one_message_counts_for_each_recipient(s: TestServer) {
    let (alice, bob, room) = two_in_a_room(&s).await;
    let carol = s.register("carol").await;
    s.join(&carol, &room).await;
    send(
        &s,
        &alice,
        &room,
        "c1",
        json!({"msgtype": "m.text", "body": "hi carol", "m.mentions": {"user_ids": [carol.user_id]}}),
    )
    .await;
    send(
        &s,
        &alice,
        &room,
        "c2",
        json!({"msgtype": "m.text", "body": "and bob"}),
    )
    .await;
    assert_eq!(counts(&s.sync(&bob, None, 0).await, &room), (2, 0));
    assert_eq!(counts(&s.sync(&carol, None, 0).await, &room), (2, 1));
    assert_eq!(counts(&s.sync(&alice, None, 0).await, &room), (0, 0));
}

async fn thread_counts_and_threaded_receipts(s: TestServer) {
    let (alice, bob, room) = two_in_a_room(&s).await;
    let root = send(
        &s,
        &alice,
        &room,
        "root",
        json!({"msgtype": "m.text", "body": "thread root"}),
    )
    .await;
    let in_thread = |i: u32| {
        json!({"msgtype": "m.text", "body": format!("reply {i}"),
               "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
    };
    let mut last_reply = String::new();
    for i in 0..2 {
        last_reply = send(&s, &bob, &room, &format!("t{i}"), in_thread(i)).await;
    }
    let main = send(
        &s,
        &bob,
        &room,
        "main",
        json!({"msgtype": "m.text", "body": "main"}),
    )
    .await;
    let filter = urlencode(r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#);
    let path = format!("/_matrix/client/v3/sync?filter={filter}");
    let (_, sync) = s.get(&path, &alice.token).await;
    let joined = &sync["rooms"]["join"][&room];
    assert_eq!(
        joined["unread_notifications"]["notification_count"], 1,
        "{joined}"
    );
    assert_eq!(
        joined["unread_thread_notifications"][&root]["notification_count"], 2,
        "{joined}"
    );
    // Without the option, one total.
    let sync = s.sync(&alice, None, 0).await;
    assert_eq!(counts(&sync, &room), (3, 0));

    // Reading the thread clears the thread only.
    read_up_to(&s, &alice, &room, &last_reply, Some(&root)).await;
    let (_, sync) = s.get(&path, &alice.token).await;
    let joined = &sync["rooms"]["join"][&room];
    assert_eq!(
        joined["unread_notifications"]["notification_count"], 1,
        "{joined}"
    );
    assert!(
        joined["unread_thread_notifications"].get(&root).is_none(),
        "{joined}"
    );
    read_up_to(&s, &alice, &room, &main, Some("main")).await;
    let sync = s.sync(&alice, None, 0).await;
    assert_eq!(counts(&sync, &room), (0, 0));
}

async fn muted_room_does_not_count(s: TestServer) {
    let (alice, bob, room) = two_in_a_room(&s).await;
    let (status, body) = s
        .put(
            &format!("{RULES}/room/{}", urlencode(&room)),
            &alice.token,
            json!({"actions": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    send(
        &s,
        &bob,
        &room,
        "b1",
        json!({"msgtype": "m.text", "body": "quiet"}),
    )
    .await;
    let sync = s.sync(&alice, None, 0).await;
    assert_eq!(counts(&sync, &room), (0, 0));
}

/// Bob sends a message Alice then reads, and one mentioning her; returns
/// both event ids.
async fn one_read_one_mention(
    s: &TestServer,
    alice: &User,
    bob: &User,
    room: &str,
) -> (String, String) {
    let first = send(
        s,
        bob,
        room,
        "b1",
        json!({"msgtype": "m.text", "body": "one"}),
    )
    .await;
    let second = send(
        s,
        bob,
        room,
        "b2",
        json!({"msgtype": "m.text", "body": "two", "m.mentions": {"user_ids": [alice.user_id]}}),
    )
    .await;
    read_up_to(s, alice, room, &first, None).await;
    (first, second)
}

async fn notifications_list_and_invites(s: TestServer) {
    let (alice, bob, room) = two_in_a_room(&s).await;
    let (first, second) = one_read_one_mention(&s, &alice, &bob, &room).await;
    let (status, list) = s
        .get("/_matrix/client/v3/notifications?limit=1", &alice.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let n = &list["notifications"][0];
    assert_eq!(
        (&n["event"]["event_id"], &n["read"], &n["room_id"]),
        (&json!(second), &json!(false), &json!(room))
    );
    let next = list["next_token"].as_str().expect("more to come");
    let (_, page2) = s
        .get(
            &format!("/_matrix/client/v3/notifications?limit=1&from={next}"),
            &alice.token,
        )
        .await;
    assert_eq!(page2["notifications"][0]["event"]["event_id"], first);
    assert_eq!(page2["notifications"][0]["read"], true);
    let (_, highlights) = s
        .get(
            "/_matrix/client/v3/notifications?only=highlight",
            &alice.token,
        )
        .await;
    let ids: Vec<&Value> = highlights["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["event"]["event_id"])
        .collect();
    assert_eq!(ids, [&json!(second)]);
    let (status, _) = s
        .get("/_matrix/client/v3/notifications?from=zzz", &alice.token)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // An invite notifies the invitee.
    let carol = s.register("carol").await;
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            &alice.token,
            json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = s
        .get("/_matrix/client/v3/notifications", &carol.token)
        .await;
    let invite = &list["notifications"][0]["event"];
    assert_eq!(
        (&invite["type"], &invite["content"]["membership"]),
        (&json!("m.room.member"), &json!("invite"))
    );
}

/// Migration 12 moved push actions from one row per recipient to one row per
/// event: undone by hand here (the old table rebuilt from the new one), it
/// runs again on restart and nothing a user sees changes.
async fn notifications_survive_the_move_to_one_row_per_event(mut s: TestServer) {
    let (alice, bob, room) = two_in_a_room(&s).await;
    let carol = s.register("carol").await;
    s.join(&carol, &room).await;
    one_read_one_mention(&s, &alice, &bob, &room).await;
    let before = (
        notifications_of(&s, &alice).await,
        notifications_of(&s, &carol).await,
    );
    assert_eq!(before.0.0["notifications"].as_array().unwrap().len(), 2);
    assert_eq!(before.0.1["notifications"].as_array().unwrap().len(), 1);

    let recipients = if s.config.database_url.starts_with("postgres") {
        "json_each(n.recipients::json) j"
    } else {
        "json_each(n.recipients) j"
    };
    let highlight = if s.config.database_url.starts_with("postgres") {
        "jsonb_exists(n.highlights::jsonb, j.key)"
    } else {
        "json_type(n.highlights, '$.\"' || j.key || '\"') IS NOT NULL"
    };
    let undo = format!(
        "CREATE TABLE event_push_actions (user_id TEXT NOT NULL, stream_ordering BIGINT NOT NULL, \
         room_id TEXT NOT NULL, event_id TEXT NOT NULL, thread_id TEXT NOT NULL, actions TEXT NOT NULL, \
         highlight BIGINT NOT NULL, ts BIGINT NOT NULL, PRIMARY KEY (user_id, stream_ordering)); \
         INSERT INTO event_push_actions SELECT j.key, n.stream_ordering, n.room_id, n.event_id, \
         n.thread_id, CAST(j.value AS TEXT), CASE WHEN {highlight} THEN 1 ELSE 0 END, n.ts \
         FROM event_notifications n, {recipients}; \
         DROP TABLE event_notifications; DELETE FROM schema_migrations WHERE version = 12;"
    );
    let db = corvid::store::Db::connect(&s.config.database_url)
        .await
        .unwrap();
    sqlx::raw_sql(&undo).execute(db.pool()).await.unwrap();
    let (moved,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM event_push_actions")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(moved, 4, "two messages, each notifying two users");
    db.close().await;
    s.restart().await;

    assert_eq!(
        (
            notifications_of(&s, &alice).await,
            notifications_of(&s, &carol).await
        ),
        before
    );
}

/// A user's `GET /notifications`, all of them and only the highlights,
/// without the events' `unsigned.age` (it grows between two calls).
async fn notifications_of(s: &TestServer, user: &User) -> (Value, Value) {
    let list = |path: &'static str| async move {
        let (status, mut body) = s.get(path, &user.token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for n in body["notifications"].as_array_mut().unwrap() {
            n["event"]["unsigned"].take();
        }
        body
    };
    (
        list("/_matrix/client/v3/notifications").await,
        list("/_matrix/client/v3/notifications?only=highlight").await,
    )
}

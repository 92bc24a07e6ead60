//! `/sync`: initial and incremental, exactly-once delivery, long-poll
//! wake-ups, invites, leaves, account data, filters, restarts.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, urlencode};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    incremental_sync_delivers_each_event_once,
    long_poll_wakes_on_new_event,
    invites_and_leaves_appear,
    account_data_and_tags_sync,
    filters_limit_the_timeline,
    tokens_survive_a_restart,
    shutdown_ends_long_polls,
    initial_sync_of_many_rooms,
    forgotten_rooms_leave_sync
);

fn timeline_bodies(sync: &Value, room: &str) -> Vec<String> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn incremental_sync_delivers_each_event_once(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({"name": "r"})).await;
    let initial = s.sync(&alice, None, 0).await;
    assert!(
        initial["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    );
    let mut since = initial["next_batch"].as_str().unwrap().to_owned();
    let mut received = Vec::new();
    for batch in 0..3 {
        for i in 0..5 {
            s.send_text(
                &alice,
                &room,
                &format!("t{batch}-{i}"),
                &format!("m{batch}-{i}"),
            )
            .await;
        }
        let next = s.sync(&alice, Some(&since), 0).await;
        received.extend(timeline_bodies(&next, &room));
        since = next["next_batch"].as_str().unwrap().to_owned();
    }
    let expected: Vec<String> = (0..3)
        .flat_map(|b| (0..5).map(move |i| format!("m{b}-{i}")))
        .collect();
    assert_eq!(received, expected);
    let quiet = s.sync(&alice, Some(&since), 0).await;
    assert!(
        quiet["rooms"]["join"].get(&room).is_none(),
        "nothing new: {quiet}"
    );
    let (_, full) = s
        .get(
            &format!("/_matrix/client/v3/sync?since={since}&full_state=true"),
            &alice.token,
        )
        .await;
    let state = full["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .expect("full state");
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{full}");
    assert!(
        timeline_bodies(&full, &room).is_empty(),
        "full_state repeats no timeline events"
    );
}

async fn long_poll_wakes_on_new_event(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    // Alice's first message also makes her present: a change that, coming
    // after the one below, could end the idle poll at the end.
    s.send_text(&alice, &room, "t0", "hello").await;
    let since = s.sync(&bob, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    let (sync, _) = tokio::join!(s.sync(&bob, Some(&since), 20_000), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.send_text(&alice, &room, "t", "wake up").await
    });
    assert_eq!(timeline_bodies(&sync, &room), vec!["wake up"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woke by the event, not the timeout"
    );
    let started = Instant::now();
    let idle = s
        .sync(&bob, Some(sync["next_batch"].as_str().unwrap()), 500)
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "waited for the timeout"
    );
    assert!(idle["rooms"]["join"].get(&room).is_none());
}

async fn invites_and_leaves_appear(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let since = s.sync(&bob, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let room = s
        .create_room(
            &alice,
            json!({"invite": [bob.user_id], "is_direct": true, "name": "dm"}),
        )
        .await;
    let sync = s.sync(&bob, Some(&since), 0).await;
    let invite = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
    let events = invite.as_array().expect("invite section");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "dm")
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["content"]["is_direct"] == true)
    );
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let joined = s.sync(&bob, Some(&since), 0).await;
    let section = &joined["rooms"]["join"][&room];
    let state_and_timeline: Vec<&Value> = ["state", "timeline"]
        .iter()
        .flat_map(|k| section[k]["events"].as_array().into_iter().flatten())
        .collect();
    assert!(
        state_and_timeline
            .iter()
            .any(|e| e["type"] == "m.room.create"),
        "a newly joined room comes whole: {section}"
    );
    let since = joined["next_batch"].as_str().unwrap().to_owned();
    s.post(
        &format!("/_matrix/client/v3/rooms/{room}/kick"),
        &alice.token,
        json!({"user_id": bob.user_id}),
    )
    .await;
    let left = s.sync(&bob, Some(&since), 0).await;
    let timeline = left["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .expect("leave section");
    assert_eq!(timeline.last().unwrap()["content"]["membership"], "leave");
}

/// spec: a forgotten room is not in `/sync`, not even among the rooms left.
/// (Forgetting takes no stream position: a sync's cached list of the
/// user's rooms must still drop it.)
async fn forgotten_rooms_leave_sync(s: TestServer) {
    let (_, bob, room) = s.alice_and_bob_in_a_room().await;
    let leave = format!("/_matrix/client/v3/rooms/{room}/leave");
    assert_eq!(
        s.post(&leave, &bob.token, json!({})).await.0,
        StatusCode::OK
    );
    let with_left_rooms = "/_matrix/client/v3/sync?timeout=0&filter=%7B%22room%22%3A%7B%22include_leave%22%3Atrue%7D%7D";
    let (status, sync) = s.get(with_left_rooms, &bob.token).await;
    assert_eq!(status, StatusCode::OK, "{sync}");
    assert!(sync["rooms"]["leave"].get(&room).is_some(), "{sync}");

    let forget = format!("/_matrix/client/v3/rooms/{room}/forget");
    assert_eq!(
        s.post(&forget, &bob.token, json!({})).await.0,
        StatusCode::OK
    );
    let (status, sync) = s.get(with_left_rooms, &bob.token).await;
    assert_eq!(status, StatusCode::OK, "{sync}");
    assert!(sync["rooms"]["leave"].get(&room).is_none(), "{sync}");
}

async fn account_data_and_tags_sync(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let since = s.sync(&alice, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = s
        .put(
            "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.theme",
            &alice.token,
            json!({"dark": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/user/@alice:localhost/rooms/{room}/tags/m.favourite"),
            &alice.token,
            json!({"order": 0.5}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let sync = s.sync(&alice, Some(&since), 0).await;
    assert!(
        sync["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "org.example.theme" && e["content"]["dark"] == true)
    );
    let room_data = sync["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap();
    assert_eq!(room_data[0]["type"], "m.tag");
    assert_eq!(room_data[0]["content"]["tags"]["m.favourite"]["order"], 0.5);
    let (_, theme) = s
        .get(
            "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.theme",
            &alice.token,
        )
        .await;
    assert_eq!(theme, json!({"dark": true}));
    let (status, _) = s
        .get(
            "/_matrix/client/v3/user/@alice:localhost/account_data/none.here",
            &alice.token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn filters_limit_the_timeline(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    for i in 0..8 {
        s.send_text(&alice, &room, &format!("t{i}"), &format!("m{i}"))
            .await;
    }
    let (status, created) = s
        .post("/_matrix/client/v3/user/@alice:localhost/filter", &alice.token, json!({"room": {"timeline": {"limit": 3, "types": ["m.room.message"]}, "state": {"lazy_load_members": true}}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = created["filter_id"].as_str().unwrap();
    let (_, stored) = s
        .get(
            &format!("/_matrix/client/v3/user/@alice:localhost/filter/{id}"),
            &alice.token,
        )
        .await;
    assert_eq!(stored["room"]["timeline"]["limit"], 3);
    let (_, sync) = s
        .get(
            &format!("/_matrix/client/v3/sync?filter={id}"),
            &alice.token,
        )
        .await;
    assert_eq!(timeline_bodies(&sync, &room), vec!["m5", "m6", "m7"]);
    assert_eq!(sync["rooms"]["join"][&room]["timeline"]["limited"], true);
    let inline = urlencode(r#"{"room":{"timeline":{"limit":1}}}"#);
    let (_, sync) = s
        .get(
            &format!("/_matrix/client/v3/sync?filter={inline}"),
            &alice.token,
        )
        .await;
    assert_eq!(timeline_bodies(&sync, &room), vec!["m7"]);
    // prev_batch continues backwards from the timeline's start.
    let prev = sync["rooms"]["join"][&room]["timeline"]["prev_batch"]
        .as_str()
        .unwrap();
    let (_, older) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1&from={prev}"),
            &alice.token,
        )
        .await;
    assert_eq!(older["chunk"][0]["content"]["body"], "m6");
}

async fn tokens_survive_a_restart(mut s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let before = s.send_text(&alice, &room, "a", "before").await;
    let since = s.sync(&alice, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    s.restart().await;
    s.send_text(&alice, &room, "b", "after").await;
    let sync = s.sync(&alice, Some(&since), 0).await;
    assert_eq!(timeline_bodies(&sync, &room), vec!["after"]);
    let retried = s.send_text(&alice, &room, "a", "before").await;
    assert_eq!(retried, before, "transaction ids survive a restart");
}

async fn shutdown_ends_long_polls(mut s: TestServer) {
    let alice = s.register("alice").await;
    let since = s.sync(&alice, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!(
        "{}/_matrix/client/v3/sync?since={since}&timeout=60000",
        s.base
    );
    let token = alice.token.clone();
    let poll = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    s.restart().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?} for a long-poll",
        started.elapsed()
    );
    assert_eq!(
        poll.await.unwrap().unwrap(),
        StatusCode::OK,
        "the long-poll got its answer before the server stopped"
    );
}

async fn initial_sync_of_many_rooms(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let mut rooms = Vec::new();
    for r in 0..3 {
        let room = s
            .create_room(
                &alice,
                json!({"preset": "public_chat", "name": format!("room {r}")}),
            )
            .await;
        assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
        for i in 0..(4 * r + 2) {
            s.send_text(&alice, &room, &format!("t{r}-{i}"), &format!("r{r}-m{i}"))
                .await;
        }
        rooms.push(room);
    }
    let sync = s.sync(&bob, None, 0).await;
    for (r, room) in rooms.iter().enumerate() {
        let section = &sync["rooms"]["join"][room];
        let sent = 4 * r + 2;
        let expected: Vec<String> = (sent.saturating_sub(10)..sent)
            .map(|i| format!("r{r}-m{i}"))
            .collect();
        let bodies = timeline_bodies(&sync, room);
        assert_eq!(
            bodies[bodies.len().saturating_sub(expected.len())..],
            expected[..],
            "room {r}: {section}"
        );
        let events = section["timeline"]["events"].as_array().unwrap();
        assert!(events.len() <= 10);
        // Creating a room and bob's join make 8 events: room 0 (10 events) fits the default limit of
        // 10, the others do not and come limited, with the state before their timeline.
        assert_eq!(
            section["timeline"]["limited"].as_bool().unwrap_or(false),
            r > 0,
            "room {r}"
        );
        let state_and_timeline: Vec<&Value> = ["state", "timeline"]
            .iter()
            .flat_map(|k| section[k]["events"].as_array().into_iter().flatten())
            .collect();
        assert!(
            state_and_timeline
                .iter()
                .any(|e| e["type"] == "m.room.create"),
            "room {r}"
        );
        assert!(
            state_and_timeline
                .iter()
                .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == format!("room {r}"))
        );
        assert_eq!(section["summary"]["m.joined_member_count"], 2);
        assert_eq!(section["summary"]["m.heroes"], json!([alice.user_id]));
    }
}

/// Two server processes on one PostgreSQL database, without Redis: each
/// process knows only its own commits, so a sync must not trust its own
/// record of what moved across positions the other process took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_see_what_another_process_wrote() {
    let Some((first, second)) = TestServer::two_processes_on_postgres().await else {
        return;
    };
    let alice = first.register("alice").await;
    let bob = first.register("bob").await;
    let quiet = first
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let busy = first
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    first.join(&bob, &quiet).await;
    first.join(&bob, &busy).await;
    let since = second.sync(&bob, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // The second process writes, its sync reads what it wrote...
    second.send_text(&alice, &busy, "s1", "second 1").await;
    let after_s1 = second.sync(&bob, Some(&since), 0).await;
    assert_eq!(timeline_bodies(&after_s1, &busy), vec!["second 1"]);
    let since = after_s1["next_batch"].as_str().unwrap().to_owned();

    // ...then the first process writes to another room, and the second
    // writes again: the second knows its two commits, not the one between.
    first.send_text(&alice, &quiet, "f1", "first 1").await;
    second.send_text(&alice, &busy, "s2", "second 2").await;
    let sync = second.sync(&bob, Some(&since), 0).await;
    assert_eq!(timeline_bodies(&sync, &quiet), vec!["first 1"], "{sync}");
    assert_eq!(timeline_bodies(&sync, &busy), vec!["second 2"], "{sync}");
}

/// A process knows the positions it committed, not those committed after
/// them by another: a long-poll from the latest token it gave out still
/// asks the database, and returns the other process's message at once
/// (without Redis, no wake-up would come from there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_sees_another_processs_later_write() {
    let Some((first, second)) = TestServer::two_processes_on_postgres().await else {
        return;
    };
    let (alice, bob, room) = first.alice_and_bob_in_a_room().await;
    second.send_text(&alice, &room, "s1", "second 1").await;
    let since = second.sync(&bob, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    first.send_text(&alice, &room, "f1", "first 1").await;
    let started = std::time::Instant::now();
    let sync = second.sync(&bob, Some(&since), 20_000).await;
    assert_eq!(timeline_bodies(&sync, &room), vec!["first 1"], "{sync}");
    let waited = started.elapsed();
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
}

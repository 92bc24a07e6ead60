//! Server-side search (`/search`) and the user directory
//! (`/user_directory/search`).

mod common;

use std::collections::HashSet;

use common::{TestServer, User, urlencode};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    finds_old_messages_with_context_and_profile,
    rank_and_recent_orders,
    filters_narrow_the_search,
    groupings_by_room_and_sender,
    paging_returns_each_result_once,
    history_visibility_decides_what_is_found,
    redacted_and_encrypted_events_are_not_found,
    bad_search_requests,
    user_directory_finds_visible_users,
    user_directory_limit,
);

async fn search_raw(
    s: &TestServer,
    user: &User,
    body: Value,
    next: Option<&str>,
) -> (StatusCode, Value) {
    let path = match next {
        Some(token) => format!("/_matrix/client/v3/search?next_batch={}", urlencode(token)),
        None => "/_matrix/client/v3/search".to_owned(),
    };
    s.post(&path, &user.token, body).await
}

/// `search_categories.room_events` of a successful search.
async fn search(s: &TestServer, user: &User, criteria: Value) -> Value {
    search_page(s, user, criteria, None).await
}

async fn search_page(s: &TestServer, user: &User, criteria: Value, next: Option<&str>) -> Value {
    let body = json!({"search_categories": {"room_events": criteria}});
    let (status, res) = search_raw(s, user, body, next).await;
    assert_eq!(status, StatusCode::OK, "search: {res}");
    res["search_categories"]["room_events"].clone()
}

fn result_ids(found: &Value) -> Vec<String> {
    found["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|r| r["result"]["event_id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn bodies(events: &Value) -> Vec<&str> {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect()
}

async fn set_displayname(s: &TestServer, user: &User, name: &str) {
    let (status, res) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", user.user_id),
            &user.token,
            json!({"displayname": name}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
}

async fn send(
    s: &TestServer,
    user: &User,
    room: &str,
    txn: &str,
    event_type: &str,
    content: Value,
) -> String {
    let (status, res) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/{event_type}/{txn}"),
            &user.token,
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "send: {res}");
    res["event_id"].as_str().unwrap().to_owned()
}

async fn set_state(
    s: &TestServer,
    user: &User,
    room: &str,
    event_type: &str,
    content: Value,
) -> String {
    let (status, res) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/{event_type}/"),
            &user.token,
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "state: {res}");
    res["event_id"].as_str().unwrap().to_owned()
}

async fn finds_old_messages_with_context_and_profile(s: TestServer) {
    let alice = s.register("alice").await;
    set_displayname(&s, &alice, "Alice Old").await;
    let room = s.create_room(&alice, json!({"name": "Observatory"})).await;
    for i in 1..=3 {
        s.send_text(&alice, &room, &format!("b{i}"), &format!("before {i}"))
            .await;
    }
    let target = s
        .send_text(&alice, &room, "t", "The Martians have landed")
        .await;
    for i in 1..=3 {
        s.send_text(&alice, &room, &format!("a{i}"), &format!("after {i}"))
            .await;
    }
    // A later name change does not rewrite the profile at the time of the message.
    set_displayname(&s, &alice, "Alice New").await;

    let found = search(
        &s,
        &alice,
        json!({
            "search_term": "martian",
            "event_context": {"before_limit": 2, "after_limit": 2, "include_profile": true},
            "include_state": true,
        }),
    )
    .await;
    assert_eq!(result_ids(&found), [target], "{found}");
    assert_eq!(found["count"], 1);
    let highlights: Vec<&str> = found["highlights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(highlights.contains(&"martians"), "{highlights:?}");
    assert!(found.get("next_batch").is_none());
    let result = &found["results"][0];
    assert!(result["rank"].as_f64().unwrap() > 0.0);
    assert_eq!(
        result["result"]["content"]["body"],
        "The Martians have landed"
    );
    assert_eq!(result["result"]["room_id"], room.as_str());
    let context = &result["context"];
    assert_eq!(bodies(&context["events_before"]), ["before 3", "before 2"]);
    assert_eq!(bodies(&context["events_after"]), ["after 1", "after 2"]);
    assert!(context["start"].is_string() && context["end"].is_string());
    assert_eq!(
        context["profile_info"][&alice.user_id]["displayname"], "Alice Old",
        "{context}"
    );
    let state = found["state"][&room].as_array().expect("state of the room");
    assert!(state.iter().any(|e| e["type"] == "m.room.create"));
    assert!(state.iter().any(|e| e["type"] == "m.room.name"));

    // Room names are searched too.
    let found = search(&s, &alice, json!({"search_term": "observ"})).await;
    assert_eq!(
        found["results"][0]["result"]["type"], "m.room.name",
        "{found}"
    );
}

async fn rank_and_recent_orders(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let old = s
        .send_text(
            &alice,
            &room,
            "1",
            "apple banana cherry date elderberry fig",
        )
        .await;
    let best = s
        .send_text(&alice, &room, "2", "apple apple apple apple")
        .await;
    s.send_text(&alice, &room, "3", "nothing to see").await;
    let new = s.send_text(&alice, &room, "4", "apple grape").await;

    let recent = search(
        &s,
        &alice,
        json!({"search_term": "apple", "order_by": "recent"}),
    )
    .await;
    assert_eq!(
        result_ids(&recent),
        [new.clone(), best.clone(), old.clone()]
    );

    let ranked = search(
        &s,
        &alice,
        json!({"search_term": "apple", "order_by": "rank"}),
    )
    .await;
    let ids = result_ids(&ranked);
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], best, "{ranked}");
    let ranks: Vec<f64> = ranked["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rank"].as_f64().unwrap())
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{ranks:?}");
    let default = search(&s, &alice, json!({"search_term": "apple"})).await;
    assert_eq!(result_ids(&default), ids, "rank is the default order");

    // Every word must match, each as a word prefix.
    let both = search(&s, &alice, json!({"search_term": "APPLE gra"})).await;
    assert_eq!(result_ids(&both), [new]);
    let inside = search(&s, &alice, json!({"search_term": "pple"})).await;
    assert_eq!(inside["count"], 0, "{inside}");
}

/// Two rooms with alice and bob, "kiwi" said in both, and a room named after it.
async fn kiwi_rooms(s: &TestServer) -> (User, User, String, String, Vec<String>) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let r1 = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let r2 = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    assert_eq!(s.join(&bob, &r1).await.0, StatusCode::OK);
    assert_eq!(s.join(&bob, &r2).await.0, StatusCode::OK);
    let events = vec![
        s.send_text(&alice, &r1, "k1", "kiwi from alice").await,
        s.send_text(&bob, &r1, "k2", "kiwi from bob").await,
        s.send_text(&alice, &r2, "k3", "kiwi again").await,
        set_state(s, &alice, &r2, "m.room.name", json!({"name": "Kiwi club"})).await,
        set_state(
            s,
            &alice,
            &r2,
            "m.room.topic",
            json!({"topic": "all about kiwis"}),
        )
        .await,
    ];
    (alice, bob, r1, r2, events)
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn filters_narrow_the_search(s: TestServer) {
    let (alice, bob, r1, r2, e) = kiwi_rooms(&s).await;
    let all = search(&s, &alice, json!({"search_term": "kiwi"})).await;
    assert_eq!(sorted(result_ids(&all)), sorted(e.clone()), "{all}");

    let cases = [
        (json!({"rooms": [r1]}), vec![&e[0], &e[1]]),
        (json!({"not_rooms": [r1]}), vec![&e[2], &e[3], &e[4]]),
        (json!({"senders": [bob.user_id]}), vec![&e[1]]),
        (
            json!({"not_senders": [bob.user_id]}),
            vec![&e[0], &e[2], &e[3], &e[4]],
        ),
        (json!({"types": ["m.room.name"]}), vec![&e[3]]),
        (
            json!({"types": ["m.room.*"], "not_types": ["m.room.message"]}),
            vec![&e[3], &e[4]],
        ),
        (
            json!({"rooms": [r2], "senders": [alice.user_id], "types": ["m.room.message"]}),
            vec![&e[2]],
        ),
    ];
    for (filter, expected) in cases {
        let found = search(&s, &alice, json!({"search_term": "kiwi", "filter": filter})).await;
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(
            sorted(result_ids(&found)),
            sorted(expected),
            "{filter}: {found}"
        );
    }
    let topics = search(
        &s,
        &alice,
        json!({"search_term": "kiwi", "keys": ["content.topic"]}),
    )
    .await;
    assert_eq!(result_ids(&topics), [e[4].clone()]);
    let names_and_bodies = search(
        &s,
        &bob,
        json!({"search_term": "kiwi", "keys": ["content.name", "content.body"], "filter": {"rooms": [r2]}}),
    )
    .await;
    assert_eq!(
        sorted(result_ids(&names_and_bodies)),
        sorted(vec![e[2].clone(), e[3].clone()])
    );
}

async fn groupings_by_room_and_sender(s: TestServer) {
    let (alice, bob, r1, r2, e) = kiwi_rooms(&s).await;
    let found = search(
        &s,
        &alice,
        json!({
            "search_term": "kiwi",
            "order_by": "recent",
            "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
        }),
    )
    .await;
    let by_room = &found["groups"]["room_id"];
    // Newest first: r2's events, then r1's.
    assert_eq!(by_room[&r2]["order"], 1, "{found}");
    assert_eq!(by_room[&r1]["order"], 2);
    assert_eq!(by_room[&r2]["results"], json!([e[4], e[3], e[2]]));
    assert_eq!(by_room[&r1]["results"], json!([e[1], e[0]]));
    let by_sender = &found["groups"]["sender"];
    assert_eq!(
        by_sender[&alice.user_id]["results"],
        json!([e[4], e[3], e[2], e[0]])
    );
    assert_eq!(by_sender[&bob.user_id]["results"], json!([e[1]]));
    assert!(
        by_room[&r1].get("next_batch").is_none(),
        "everything fits one page"
    );
}

async fn paging_returns_each_result_once(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let other = s.create_room(&alice, json!({})).await;
    let mut sent = HashSet::new();
    for i in 0..25 {
        let target = if i % 5 == 0 { &other } else { &room };
        sent.insert(
            s.send_text(&alice, target, &format!("p{i}"), &format!("page word {i}"))
                .await,
        );
    }
    for order in ["recent", "rank"] {
        let criteria = json!({"search_term": "word", "order_by": order, "filter": {"limit": 10}});
        let mut seen = Vec::new();
        let mut late = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let found = search_page(&s, &alice, criteria.clone(), next.as_deref()).await;
            assert_eq!(found["count"], sent.len(), "{order}: {found}");
            seen.extend(result_ids(&found));
            match found["next_batch"].as_str() {
                Some(token) => next = Some(token.to_owned()),
                None => break,
            }
            assert!(late.len() < 2, "{order}: more than three pages");
            // Later messages do not slip into a search under way, nor shift it.
            let txn = format!("late-{order}-{}", late.len());
            late.push(s.send_text(&alice, &room, &txn, "late word").await);
        }
        assert_eq!(late.len(), 2, "{order}: three pages");
        assert_eq!(seen.len(), sent.len(), "{order}: every result once");
        assert_eq!(
            seen.iter().cloned().collect::<HashSet<_>>(),
            sent,
            "{order}"
        );
        sent.extend(late);
    }

    // A group's token pages through that group alone.
    let criteria = json!({
        "search_term": "page", "order_by": "recent", "filter": {"limit": 6},
        "groupings": {"group_by": [{"key": "room_id"}]},
    });
    let first = search(&s, &alice, criteria.clone()).await;
    let mut in_other: Vec<String> =
        serde_json::from_value(first["groups"]["room_id"][&other]["results"].clone())
            .unwrap_or_default();
    let mut token = first["groups"]["room_id"][&other]["next_batch"]
        .as_str()
        .map(str::to_owned);
    assert!(token.is_some(), "{first}");
    while let Some(t) = token {
        let page = search_page(&s, &alice, criteria.clone(), Some(&t)).await;
        for result in page["results"].as_array().into_iter().flatten() {
            assert_eq!(result["result"]["room_id"], other.as_str());
        }
        in_other.extend(result_ids(&page));
        token = page["next_batch"].as_str().map(str::to_owned);
    }
    assert_eq!(in_other.len(), 5, "{in_other:?}");
    assert_eq!(in_other.iter().collect::<HashSet<_>>().len(), 5);
}

async fn history_visibility_decides_what_is_found(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let dave = s.register("dave").await;
    let joined = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    set_state(
        &s,
        &alice,
        &joined,
        "m.room.history_visibility",
        json!({"history_visibility": "joined"}),
    )
    .await;
    s.send_text(&alice, &joined, "j1", "hidden treasure").await;
    let shared = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    set_state(
        &s,
        &alice,
        &shared,
        "m.room.history_visibility",
        json!({"history_visibility": "shared"}),
    )
    .await;
    let old_shared = s.send_text(&alice, &shared, "s1", "shared treasure").await;

    assert_eq!(s.join(&bob, &joined).await.0, StatusCode::OK);
    assert_eq!(s.join(&carol, &shared).await.0, StatusCode::OK);
    let found = search(&s, &bob, json!({"search_term": "treasure"})).await;
    assert_eq!(found["count"], 0, "joined later, history 'joined': {found}");
    let after_join = s.send_text(&alice, &joined, "j2", "treasure now").await;
    let found = search(&s, &bob, json!({"search_term": "treasure"})).await;
    assert_eq!(result_ids(&found), [after_join]);

    let found = search(&s, &carol, json!({"search_term": "treasure"})).await;
    assert_eq!(
        result_ids(&found),
        std::slice::from_ref(&old_shared),
        "history 'shared'"
    );

    let found = search(&s, &dave, json!({"search_term": "treasure"})).await;
    assert_eq!(found["count"], 0, "not in the rooms: {found}");
    assert!(result_ids(&found).is_empty());

    // After leaving, what came later is out of reach.
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{shared}/leave"),
            &carol.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    s.send_text(&alice, &shared, "s2", "treasure after carol left")
        .await;
    let found = search(&s, &carol, json!({"search_term": "treasure"})).await;
    assert_eq!(result_ids(&found), [old_shared]);
}

async fn redacted_and_encrypted_events_are_not_found(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let kept = s.send_text(&alice, &room, "1", "zebra one").await;
    let gone = s.send_text(&alice, &room, "2", "zebra two").await;
    let empty = s.send_text(&alice, &room, "3", "").await;
    send(
        &s,
        &alice,
        &room,
        "4",
        "m.room.encrypted",
        json!({
            "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "zebra", "body": "zebra",
            "device_id": "DEV", "sender_key": "key", "session_id": "session",
        }),
    )
    .await;
    for (txn, target) in [("r1", &gone), ("r2", &empty)] {
        let (status, res) = s
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{room}/redact/{}/{txn}",
                    urlencode(target)
                ),
                &alice.token,
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{res}");
    }
    let found = search(&s, &alice, json!({"search_term": "zebra"})).await;
    assert_eq!(result_ids(&found), [kept], "{found}");
}

async fn bad_search_requests(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    s.send_text(&alice, &room, "1", "hello there").await;
    let bad = |criteria: Value, next: Option<&'static str>| {
        let s = &s;
        let alice = &alice;
        async move {
            let body = json!({"search_categories": {"room_events": criteria}});
            let (status, err) = search_raw(s, alice, body, next).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
            err["errcode"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(
        bad(json!({"search_term": "hello"}), Some("garbage")).await,
        "M_INVALID_PARAM"
    );
    assert_eq!(
        bad(json!({"search_term": "hello", "order_by": "loudest"}), None).await,
        "M_INVALID_PARAM"
    );
    assert_eq!(
        bad(
            json!({"search_term": "hello", "keys": ["content.nope"]}),
            None
        )
        .await,
        "M_INVALID_PARAM"
    );
    assert_eq!(
        bad(
            json!({"search_term": "hello", "groupings": {"group_by": [{"key": "colour"}]}}),
            None
        )
        .await,
        "M_INVALID_PARAM"
    );
    assert_eq!(bad(json!({}), None).await, "M_BAD_JSON");

    // A token only continues the order it came from.
    for i in 0..3 {
        s.send_text(&alice, &room, &format!("m{i}"), "hello again")
            .await;
    }
    let page = search(
        &s,
        &alice,
        json!({"search_term": "hello", "order_by": "recent", "filter": {"limit": 1}}),
    )
    .await;
    let token = page["next_batch"].as_str().unwrap().to_owned();
    let body =
        json!({"search_categories": {"room_events": {"search_term": "hello", "order_by": "rank"}}});
    let (status, err) = search_raw(&s, &alice, body, Some(&token)).await;
    assert_eq!(
        (status, err["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM"))
    );

    // Nothing to search for finds nothing; no category asked, none answered.
    let found = search(&s, &alice, json!({"search_term": " *!? "})).await;
    assert_eq!(found["count"], 0, "{found}");
    let (status, res) = s
        .post(
            "/_matrix/client/v3/search",
            &alice.token,
            json!({"search_categories": {}}),
        )
        .await;
    assert_eq!(
        (status, res),
        (StatusCode::OK, json!({"search_categories": {}}))
    );
}

async fn user_directory(s: &TestServer, user: &User, body: Value) -> Value {
    let (status, res) = s
        .post(
            "/_matrix/client/v3/user_directory/search",
            &user.token,
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    res
}

fn user_ids(found: &Value) -> Vec<&str> {
    found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect()
}

async fn user_directory_finds_visible_users(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let dave = s.register("dave").await;
    set_displayname(&s, &bob, "Bobby Tables").await;
    set_displayname(&s, &carol, "Caroline Public").await;
    set_displayname(&s, &dave, "Dave Stranger").await;
    let private = s
        .create_room(&alice, json!({"preset": "private_chat"}))
        .await;
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/invite"),
            &alice.token,
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.join(&bob, &private).await.0, StatusCode::OK);
    s.create_room(&carol, json!({"preset": "public_chat"}))
        .await;
    s.create_room(&dave, json!({"preset": "private_chat"}))
        .await;

    for term in ["bobby", "TAB", "bob", "@bob:localhost", "bobby tables"] {
        let found = user_directory(&s, &alice, json!({"search_term": term})).await;
        assert_eq!(user_ids(&found), [bob.user_id.as_str()], "{term}: {found}");
        assert_eq!(found["results"][0]["display_name"], "Bobby Tables");
        assert_eq!(found["limited"], false);
    }
    for term in ["carol", "caroline", "publ", "carol:localhost"] {
        let found = user_directory(&s, &alice, json!({"search_term": term})).await;
        assert_eq!(
            user_ids(&found),
            [carol.user_id.as_str()],
            "{term}: {found}"
        );
    }
    for term in ["dave", "stranger", "obby", "", "zzz"] {
        let found = user_directory(&s, &alice, json!({"search_term": term})).await;
        assert!(user_ids(&found).is_empty(), "{term}: {found}");
    }
    // Dave finds carol (public room) but not bob (private room he is not in).
    let found = user_directory(&s, &dave, json!({"search_term": "b"})).await;
    assert!(user_ids(&found).is_empty(), "{found}");
    let found = user_directory(&s, &dave, json!({"search_term": "c"})).await;
    assert_eq!(user_ids(&found), [carol.user_id.as_str()]);

    // Deactivated users are not found.
    let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "carol"}, "password": "secret-pw"});
    let (status, _) = s
        .post(
            "/_matrix/client/v3/account/deactivate",
            &carol.token,
            json!({"auth": auth}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let found = user_directory(&s, &alice, json!({"search_term": "carol"})).await;
    assert!(user_ids(&found).is_empty(), "{found}");
}

async fn user_directory_limit(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let mut twins = Vec::new();
    for i in 1..=3 {
        let twin = s.register(&format!("twin{i}")).await;
        assert_eq!(s.join(&twin, &room).await.0, StatusCode::OK);
        twins.push(twin.user_id);
    }
    let found = user_directory(&s, &alice, json!({"search_term": "twin", "limit": 2})).await;
    assert_eq!(user_ids(&found), [twins[0].as_str(), twins[1].as_str()]);
    assert_eq!(found["limited"], true);
    let found = user_directory(&s, &alice, json!({"search_term": "twin"})).await;
    assert_eq!(user_ids(&found).len(), 3);
    assert_eq!(found["limited"], false);
    // Names that start with the term come before those where a later word does.
    let zed = s.register("zed").await;
    set_displayname(&s, &zed, "Apple Twin").await;
    assert_eq!(s.join(&zed, &room).await.0, StatusCode::OK);
    let found = user_directory(&s, &alice, json!({"search_term": "twin"})).await;
    assert_eq!(user_ids(&found).len(), 4, "{found}");
    assert_eq!(user_ids(&found)[3], zed.user_id, "{found}");
    assert_eq!(found["results"][3]["display_name"], "Apple Twin");
}

/// Events stored before migration 3 are indexed by it.
async fn migration_indexes_existing_events(url: &str, core: &str) {
    use corvid::store::{
        Db,
        search::{EventSearch, SearchOrder},
    };
    let db = Db::connect(url).await.expect("connect");
    let before = format!(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_ts BIGINT NOT NULL); \
         {core} \
         INSERT INTO schema_migrations (version, applied_ts) VALUES (1, 0); \
         INSERT INTO events (stream_ordering, event_id, room_id, event_type, sender, origin_server_ts, depth, pdu) VALUES \
         (1, '$old', '!r:x', 'm.room.message', '@a:x', 0, 1, '{{\"content\":{{\"body\":\"ancient scroll\"}}}}'), \
         (2, '$gone', '!r:x', 'm.room.message', '@a:x', 0, 2, '{{\"content\":{{\"body\":\"ancient ruin\"}}}}'), \
         (3, '$secret', '!r:x', 'm.room.encrypted', '@a:x', 0, 3, '{{\"content\":{{\"body\":\"ancient key\"}}}}'); \
         UPDATE events SET redacted_by = '$r' WHERE event_id = '$gone';"
    );
    sqlx::raw_sql(&before)
        .execute(db.pool())
        .await
        .expect("old schema");
    assert!(db.migrate().await.expect("migrate").contains(&3));
    let search = EventSearch {
        terms: &["ancient".to_owned()],
        rooms: &["!r:x".to_owned()],
        event_types: &["m.room.message", "m.room.encrypted"],
        upto: 10,
        order: SearchOrder::Recent,
    };
    let hits = db.search_events(&search, None, 10).await.expect("search");
    let ids: Vec<&str> = hits.iter().map(|h| h.event.event_id.as_str()).collect();
    assert_eq!(ids, ["$old"]);
    db.close().await;
}

#[tokio::test]
async fn sqlite_migration_indexes_existing_events() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    migration_indexes_existing_events(&url, include_str!("../migrations/sqlite/0001_core.sql"))
        .await;
}

#[tokio::test]
async fn postgres_migration_indexes_existing_events() {
    let Ok(url) = std::env::var(common::POSTGRES_ENV) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} must be set in CI",
            common::POSTGRES_ENV
        );
        eprintln!(
            "skipping PostgreSQL run: set {} to enable it",
            common::POSTGRES_ENV
        );
        return;
    };
    let url = common::fresh_schema(&url).await;
    migration_indexes_existing_events(&url, include_str!("../migrations/postgres/0001_core.sql"))
        .await;
}

//! Rooms as an event graph: creation per room version, membership rules,
//! sending, state, history, redaction, aliases and the directory.

mod common;

use common::{TestServer, urlencode};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_backends!(
    room_versions_10_11_12,
    invite_only_rooms_need_an_invite,
    kick_ban_unban_follow_power_levels,
    send_is_idempotent_per_transaction,
    history_pagination_and_context,
    redaction_strips_content,
    aliases_and_public_directory,
    state_events_round_trip,
    knocking_needs_a_knock_room,
    v12_creators_hold_infinite_power,
    alike_rooms_created_together_get_distinct_ids,
    room_initial_sync_snapshot,
    timestamp_to_event_finds_the_nearest,
    room_summary_for_members_and_open_rooms,
);

async fn room_initial_sync_snapshot(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s
        .create_room(&alice, json!({"name": "snap", "preset": "private_chat"}))
        .await;
    for i in 0..25 {
        s.send_text(&alice, &room, &format!("t{i}"), &format!("m{i}"))
            .await;
    }
    let (status, body) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/initialSync"),
            &alice.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["membership"], "join");
    assert_eq!(body["visibility"], "private");
    let chunk = body["messages"]["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 20);
    assert_eq!(
        chunk.last().unwrap()["content"]["body"],
        "m24",
        "oldest first, newest last"
    );
    assert!(
        body["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name")
    );
    // Paginating back from `start` continues the history.
    let start = body["messages"]["start"].as_str().unwrap();
    let (_, older) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from={start}&limit=1"),
            &alice.token,
        )
        .await;
    assert_eq!(older["chunk"][0]["content"]["body"], "m4");
    let bob = s.register("bob").await;
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/initialSync"),
            &bob.token,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn timestamp_to_event_finds_the_nearest(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let first = s.send_text(&alice, &room, "t1", "first").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (_, event) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{first}"),
            &alice.token,
        )
        .await;
    let ts = event["origin_server_ts"].as_u64().unwrap();
    let second = s.send_text(&alice, &room, "t2", "second").await;
    let path = |ts: u64, dir: &str| {
        format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir={dir}")
    };
    let (status, found) = s.get(&path(ts, "f"), &alice.token).await;
    assert_eq!(
        (status, &found["event_id"]),
        (StatusCode::OK, &json!(first))
    );
    let (_, found) = s.get(&path(ts + 1, "f"), &alice.token).await;
    assert_eq!(found["event_id"], second);
    let (_, found) = s.get(&path(ts + 1, "b"), &alice.token).await;
    assert_eq!(found["event_id"], first);
    assert_eq!(found["origin_server_ts"], ts);
    let (status, body) = s.get(&path(ts + 3_600_000, "f"), &alice.token).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
    let stranger = s.register("stranger").await;
    let (status, _) = s.get(&path(ts, "f"), &stranger.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn room_summary_for_members_and_open_rooms(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let public = s
        .create_room(&alice, json!({"preset": "public_chat", "name": "Lobby", "topic": "hi", "room_alias_name": "lobby"}))
        .await;
    let private = s
        .create_room(&alice, json!({"preset": "private_chat", "name": "Secret"}))
        .await;
    let path = |r: &str| format!("/_matrix/client/v1/room_summary/{}", urlencode(r));
    let (status, body) = s.get(&path("#lobby:localhost"), &bob.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], public);
    assert_eq!(
        (body["name"].as_str(), body["topic"].as_str()),
        (Some("Lobby"), Some("hi"))
    );
    // ruma leaves out the default join rule, `public`.
    assert!(
        matches!(body["join_rule"].as_str(), None | Some("public")),
        "{body}"
    );
    assert_eq!(body["num_joined_members"], 1);
    assert!(body.get("membership").is_none());
    let (status, body) = s.get(&path(&private), &alice.token).await;
    assert_eq!(
        (status, body["membership"].as_str()),
        (StatusCode::OK, Some("join"))
    );
    let (status, body) = s.get(&path(&private), &bob.token).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
}

async fn room_versions_10_11_12(s: TestServer) {
    let alice = s.register("alice").await;
    for version in ["10", "11", "12"] {
        let room = s
            .create_room(
                &alice,
                json!({"room_version": version, "name": format!("v{version}")}),
            )
            .await;
        assert_eq!(
            room.contains(':'),
            version != "12",
            "v12 room ids are the create event's hash: {room}"
        );
        let (_, create) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/"),
                &alice.token,
            )
            .await;
        assert_eq!(create["room_version"], version);
        assert_eq!(
            create.get("creator").is_some(),
            version == "10",
            "creator is gone from v11 on: {create}"
        );
        let (_, pl) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
                &alice.token,
            )
            .await;
        assert_eq!(
            pl["users"].get("@alice:localhost").is_some(),
            version != "12",
            "v12 creators are not listed: {pl}"
        );
        s.send_text(&alice, &room, "t1", "hello").await;
    }
    let (status, err) = s
        .post(
            "/_matrix/client/v3/createRoom",
            &alice.token,
            json!({"room_version": "1"}),
        )
        .await;
    assert_eq!(
        (status, err["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_UNSUPPORTED_ROOM_VERSION"))
    );
}

async fn invite_only_rooms_need_an_invite(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({"preset": "private_chat"}))
        .await;
    let (status, err) = s.join(&bob, &room).await;
    assert_eq!(
        (status, err["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN"))
    );
    let (status, err) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/x"),
            &bob.token,
            json!({}),
        )
        .await;
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::METHOD_NOT_ALLOWED,
        "{status} {err}"
    );
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            &alice.token,
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.join(&bob, &room).await;
    assert_eq!(status, StatusCode::OK);
    let (_, joined) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            &bob.token,
        )
        .await;
    assert_eq!(joined["joined"].as_object().unwrap().len(), 2);
    let (_, rooms) = s.get("/_matrix/client/v3/joined_rooms", &bob.token).await;
    assert_eq!(rooms["joined_rooms"], json!([room]));
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "must leave before forgetting"
    );
}

async fn kick_ban_unban_follow_power_levels(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = s
        .create_room(
            &alice,
            json!({"preset": "public_chat", "room_version": "11"}),
        )
        .await;
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    assert_eq!(s.join(&carol, &room).await.0, StatusCode::OK);
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            &bob.token,
            json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "power level 0 cannot kick");
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            &alice.token,
            json!({"user_id": carol.user_id, "reason": "spam"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.join(&carol, &room).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "banned users cannot join");
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/unban"),
            &alice.token,
            json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.join(&carol, &room).await.0, StatusCode::OK);
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            &alice.token,
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, members) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/members?membership=leave"),
            &alice.token,
        )
        .await;
    let left: Vec<&str> = members["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(left, vec![bob.user_id.as_str()]);
}

async fn send_is_idempotent_per_transaction(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let first = s.send_text(&alice, &room, "txn-1", "once").await;
    let again = s.send_text(&alice, &room, "txn-1", "once").await;
    assert_eq!(first, again);
    let (_, page) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            &alice.token,
        )
        .await;
    let texts = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .count();
    assert_eq!(texts, 1);
    assert_eq!(page["chunk"][0]["unsigned"]["transaction_id"], "txn-1");
    let other_room = s.create_room(&alice, json!({})).await;
    let elsewhere = s.send_text(&alice, &other_room, "txn-1", "once").await;
    assert_ne!(
        elsewhere, first,
        "a transaction id is scoped to its endpoint, room included"
    );
}

async fn history_pagination_and_context(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..25 {
        sent.push(
            s.send_text(&alice, &room, &format!("t{i}"), &format!("m{i}"))
                .await,
        );
    }
    let filter = urlencode(r#"{"types":["m.room.message"]}"#);
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..10 {
        let mut path =
            format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10&filter={filter}");
        if let Some(f) = &from {
            path.push_str(&format!("&from={f}"));
        }
        let (status, page) = s.get(&path, &alice.token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    seen.reverse();
    assert_eq!(
        seen, sent,
        "backwards pagination returns every message once, in order"
    );

    let (_, fwd) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=100&filter={filter}"),
            &alice.token,
        )
        .await;
    let fwd: Vec<&str> = fwd["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(fwd, sent.iter().map(String::as_str).collect::<Vec<_>>());

    let (status, ctx) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/context/{}?limit=4",
                urlencode(&sent[10])
            ),
            &alice.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ctx}");
    assert_eq!(ctx["event"]["event_id"], sent[10]);
    assert_eq!(ctx["events_before"][0]["event_id"], sent[9]);
    assert_eq!(ctx["events_after"][0]["event_id"], sent[11]);
    let (status, ev) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/event/{}",
                urlencode(&sent[3])
            ),
            &alice.token,
        )
        .await;
    assert_eq!(
        (status, ev["content"]["body"].as_str()),
        (StatusCode::OK, Some("m3"))
    );

    let outsider = s.register("mallory").await;
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"),
            &outsider.token,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/event/{}",
                urlencode(&sent[3])
            ),
            &outsider.token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn redaction_strips_content(s: TestServer) {
    let alice = s.register("alice").await;
    for version in ["10", "11", "12"] {
        let room = s
            .create_room(&alice, json!({"room_version": version}))
            .await;
        let target = s.send_text(&alice, &room, "t", "secret").await;
        let (status, res) = s
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{room}/redact/{}/r1",
                    urlencode(&target)
                ),
                &alice.token,
                json!({"reason": "oops"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{res}");
        let (_, ev) = s
            .get(
                &format!(
                    "/_matrix/client/v3/rooms/{room}/event/{}",
                    urlencode(&target)
                ),
                &alice.token,
            )
            .await;
        assert_eq!(ev["content"], json!({}), "v{version}: {ev}");
        assert_eq!(
            ev["unsigned"]["redacted_because"]["event_id"],
            res["event_id"]
        );
    }
}

async fn aliases_and_public_directory(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({"room_alias_name": "lobby", "visibility": "public", "name": "The Lobby", "topic": "chat"}))
        .await;
    let (status, err) = s
        .post(
            "/_matrix/client/v3/createRoom",
            &alice.token,
            json!({"room_alias_name": "lobby"}),
        )
        .await;
    assert_eq!(
        (status, err["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_ROOM_IN_USE"))
    );
    let (_, resolved) = s
        .request(
            Method::GET,
            "/_matrix/client/v3/directory/room/%23lobby:localhost",
            None,
            None,
        )
        .await;
    assert_eq!(resolved["room_id"], room);
    assert_eq!(s.join(&bob, "#lobby:localhost").await.0, StatusCode::OK);

    let (status, _) = s
        .put(
            "/_matrix/client/v3/directory/room/%23hall:localhost",
            &bob.token,
            json!({"room_id": room}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, aliases) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/aliases"),
            &alice.token,
        )
        .await;
    assert_eq!(
        aliases["aliases"],
        json!(["#hall:localhost", "#lobby:localhost"])
    );
    let (status, _) = s
        .request(
            Method::DELETE,
            "/_matrix/client/v3/directory/room/%23lobby:localhost",
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "bob neither made the alias nor may change canonical_alias"
    );
    let (status, _) = s
        .request(
            Method::DELETE,
            "/_matrix/client/v3/directory/room/%23hall:localhost",
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (_, public) = s
        .request(Method::GET, "/_matrix/client/v3/publicRooms", None, None)
        .await;
    assert_eq!(public["chunk"][0]["room_id"], room);
    assert_eq!(public["chunk"][0]["num_joined_members"], 2);
    assert_eq!(public["chunk"][0]["name"], "The Lobby");
    let (_, found) = s
        .post(
            "/_matrix/client/v3/publicRooms",
            &bob.token,
            json!({"filter": {"generic_search_term": "lobby"}}),
        )
        .await;
    assert_eq!(found["chunk"].as_array().unwrap().len(), 1);
    let (_, none) = s
        .post(
            "/_matrix/client/v3/publicRooms",
            &bob.token,
            json!({"filter": {"generic_search_term": "nothing"}}),
        )
        .await;
    assert_eq!(none["chunk"].as_array().unwrap().len(), 0);
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/directory/list/room/{room}"),
            &alice.token,
            json!({"visibility": "private"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, vis) = s
        .request(
            Method::GET,
            &format!("/_matrix/client/v3/directory/list/room/{room}"),
            None,
            None,
        )
        .await;
    assert_eq!(vis["visibility"], "private");
}

async fn state_events_round_trip(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic"),
            &alice.token,
            json!({"topic": "news"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, topic) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
            &bob.token,
        )
        .await;
    assert_eq!(topic["topic"], "news");
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            &bob.token,
            json!({"name": "mine"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "state_default 50 > bob's 0");
    let (_, all) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state"),
            &bob.token,
        )
        .await;
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == "news")
    );
    let (status, bad) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            &alice.token,
            json!({"users": "everyone"}),
        )
        .await;
    assert_eq!(
        (status, bad["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_BAD_JSON")),
        "{bad}"
    );
    let (status, bad) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/x1"),
            &alice.token,
            json!({"msgtype": 5}),
        )
        .await;
    assert_eq!(
        (status, bad["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_BAD_JSON")),
        "{bad}"
    );
    let (status, missing) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            &bob.token,
        )
        .await;
    assert_eq!(
        (status, missing["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
}

async fn knocking_needs_a_knock_room(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let closed = s
        .create_room(&alice, json!({"preset": "private_chat"}))
        .await;
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/knock/{}", urlencode(&closed)),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "join rule invite does not allow knocking"
    );
    let room = s
        .create_room(&alice, json!({"initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]}))
        .await;
    let (status, res) = s
        .post(
            &format!("/_matrix/client/v3/knock/{}", urlencode(&room)),
            &bob.token,
            json!({"reason": "hi"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    let sync = s.sync(&bob, None, 0).await;
    let knock_state = sync["rooms"]["knock"][&room]["knock_state"]["events"]
        .as_array()
        .expect("knock section");
    assert!(knock_state.iter().any(|e| e["type"] == "m.room.join_rules"));
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            &alice.token,
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a knock is answered with an invite");
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
}

async fn v12_creators_hold_infinite_power(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = s
        .create_room(
            &alice,
            json!({"preset": "trusted_private_chat", "invite": [bob.user_id]}),
        )
        .await;
    let (_, create) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/"),
            &alice.token,
        )
        .await;
    assert_eq!(
        create["additional_creators"],
        json!([bob.user_id]),
        "trusted_private_chat invitees become creators"
    );
    assert_eq!(s.join(&bob, &room).await.0, StatusCode::OK);
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            &alice.token,
            json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.join(&carol, &room).await.0, StatusCode::OK);
    let pl = json!({"users": {carol.user_id.clone(): 100}, "state_default": 50, "events": {"m.room.tombstone": 150}});
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            &bob.token,
            pl,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an additional creator may change power levels"
    );
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            &carol.token,
            json!({"user_id": alice.user_id}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "power 100 cannot kick a creator"
    );
    let listed = json!({"users": {alice.user_id.clone(): 100}});
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            &alice.token,
            listed,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "creators may not appear in the users map"
    );
}

async fn alike_rooms_created_together_get_distinct_ids(s: TestServer) {
    let alice = s.register("alice").await;
    let creates = (0..6).map(|_| s.post("/_matrix/client/v3/createRoom", &alice.token, json!({})));
    let mut ids: Vec<String> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, StatusCode::OK, "{body}");
            body["room_id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        6,
        "v12 room ids are create-event hashes; alike rooms must still differ"
    );
}

/// Two server processes on one PostgreSQL database taking turns to send to
/// one room: each event cites the one the other process sent just before,
/// never a head the sending process remembered from its own last write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_extend_one_chain() {
    let Some((first, second)) = TestServer::two_processes_on_postgres().await else {
        return;
    };
    let alice = first.register("alice").await;
    let room = first.create_room(&alice, json!({"name": "turns"})).await;
    let mut sent = Vec::new();
    for turn in 0..4 {
        for (name, server) in [("first", &first), ("second", &second)] {
            let txn = format!("{name}-{turn}");
            sent.push(server.send_text(&alice, &room, &txn, &txn).await);
        }
    }
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&first.config.database_url)
        .await
        .unwrap();
    for pair in sent.windows(2) {
        let cited: Vec<(String,)> =
            sqlx::query_as("SELECT prev_event_id FROM event_edges WHERE event_id = $1")
                .bind(&pair[1])
                .fetch_all(&mut db)
                .await
                .unwrap();
        assert_eq!(cited, [(pair[0].clone(),)], "{} cites", pair[1]);
    }
}

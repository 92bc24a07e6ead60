//! Event relations: replies, edits, reactions, threads and references;
//! `/relations`, `/threads`, and the bundled aggregations in `unsigned`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::{TestServer, User, urlencode};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    replies_round_trip,
    edits_bundle_the_newest_valid_edit,
    reactions_are_listed_and_paginated,
    duplicate_annotations_are_refused,
    threads_are_summarised_and_listed,
    relations_recurse_through_children,
    tokens_from_messages_and_sync_page_relations,
    relations_across_rooms_are_ignored,
    invisible_parents_and_bad_input,
    aggregations_stop_where_the_viewer_left,
    existing_events_are_indexed_by_the_migration,
);

static TXN: AtomicU64 = AtomicU64::new(0);

async fn send(s: &TestServer, user: &User, room: &str, kind: &str, content: Value) -> String {
    let (status, body) = send_raw(s, user, room, kind, content).await;
    assert_eq!(status, StatusCode::OK, "send {kind}: {body}");
    body["event_id"].as_str().unwrap().to_owned()
}

async fn send_raw(
    s: &TestServer,
    user: &User,
    room: &str,
    kind: &str,
    content: Value,
) -> (StatusCode, Value) {
    let txn = TXN.fetch_add(1, Ordering::Relaxed);
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/t{txn}"),
        &user.token,
        content,
    )
    .await
}

async fn text(s: &TestServer, user: &User, room: &str, body: &str) -> String {
    send(
        s,
        user,
        room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": body}),
    )
    .await
}

async fn edit(s: &TestServer, user: &User, room: &str, original: &str, body: &str) -> String {
    // Distinct timestamps, so the newest edit is the last one sent.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    send(
        s,
        user,
        room,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": format!("* {body}"),
            "m.new_content": {"msgtype": "m.text", "body": body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        }),
    )
    .await
}

async fn react(s: &TestServer, user: &User, room: &str, target: &str, key: &str) -> String {
    send(
        s,
        user,
        room,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}),
    )
    .await
}

async fn thread_reply(s: &TestServer, user: &User, room: &str, root: &str, body: &str) -> String {
    send(
        s,
        user,
        room,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": body,
            "m.relates_to": {"rel_type": "m.thread", "event_id": root},
        }),
    )
    .await
}

async fn redact(s: &TestServer, user: &User, room: &str, event: &str) {
    let txn = TXN.fetch_add(1, Ordering::Relaxed);
    let (status, body) = s
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{room}/redact/{}/r{txn}",
                urlencode(event)
            ),
            &user.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "redact: {body}");
}

async fn get_event(s: &TestServer, user: &User, room: &str, event: &str) -> Value {
    let (status, body) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", urlencode(event)),
            &user.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "event: {body}");
    body
}

/// `/relations/{event}{suffix}` (`suffix` holds the rel type, event type and query).
async fn relations(s: &TestServer, user: &User, room: &str, event: &str, suffix: &str) -> Value {
    let (status, body) = relations_raw(s, user, room, event, suffix).await;
    assert_eq!(status, StatusCode::OK, "relations: {body}");
    body
}

async fn relations_raw(
    s: &TestServer,
    user: &User,
    room: &str,
    event: &str,
    suffix: &str,
) -> (StatusCode, Value) {
    s.get(
        &format!(
            "/_matrix/client/v1/rooms/{room}/relations/{}{suffix}",
            urlencode(event)
        ),
        &user.token,
    )
    .await
}

fn ids(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn find<'a>(events: &'a Value, id: &str) -> &'a Value {
    events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {events}"))
}

async fn replies_round_trip(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let question = text(&s, &alice, &room, "question?").await;
    let answer = send(
        &s,
        &alice,
        &room,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": "answer",
            "m.relates_to": {"m.in_reply_to": {"event_id": question}},
        }),
    )
    .await;
    let event = get_event(&s, &alice, &room, &answer).await;
    assert_eq!(
        event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        question
    );
    // Replies have no rel_type: they are not relations the server serves.
    let children = relations(&s, &alice, &room, &question, "").await;
    assert_eq!(children["chunk"], json!([]));
    assert!(children.get("next_batch").is_none());
    let parent = get_event(&s, &alice, &room, &question).await;
    assert!(parent["unsigned"].get("m.relations").is_none(), "{parent}");
}

async fn edits_bundle_the_newest_valid_edit(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    let original = text(&s, &alice, &room, "helo").await;
    let first = edit(&s, &alice, &room, &original, "hello").await;
    let second = edit(&s, &alice, &room, &original, "hello!").await;
    // Newer, but not alice's: not a valid edit of her message.
    let forged = edit(&s, &bob, &room, &original, "pwned").await;

    let event = get_event(&s, &bob, &room, &original).await;
    let bundled = &event["unsigned"]["m.relations"]["m.replace"];
    assert_eq!(bundled["event_id"], second, "{event}");
    assert_eq!(bundled["content"]["m.new_content"]["body"], "hello!");
    assert_eq!(
        event["content"]["body"], "helo",
        "the original content is left intact"
    );

    let (_, history) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=20"),
            &bob.token,
        )
        .await;
    let served = find(&history["chunk"], &original);
    assert_eq!(
        served["unsigned"]["m.relations"]["m.replace"]["event_id"],
        second
    );
    let (_, context) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/context/{}?limit=2",
                urlencode(&original)
            ),
            &bob.token,
        )
        .await;
    assert_eq!(
        context["event"]["unsigned"]["m.relations"]["m.replace"]["event_id"],
        second
    );

    let edits = relations(&s, &alice, &room, &original, "/m.replace").await;
    let listed = ids(&edits["chunk"]);
    assert_eq!(listed.len(), 3, "every m.replace child is listed: {edits}");
    assert_eq!(listed[0], forged, "newest first");

    // Without m.new_content an edit is not valid (m.room.message refuses it at once).
    let note = send(&s, &alice, &room, "org.example.note", json!({"text": "a"})).await;
    send(
        &s,
        &alice,
        &room,
        "org.example.note",
        json!({"text": "b", "m.relates_to": {"rel_type": "m.replace", "event_id": note}}),
    )
    .await;
    let event = get_event(&s, &alice, &room, &note).await;
    assert!(event["unsigned"].get("m.relations").is_none(), "{event}");

    redact(&s, &alice, &room, &second).await;
    let event = get_event(&s, &bob, &room, &original).await;
    assert_eq!(
        event["unsigned"]["m.relations"]["m.replace"]["event_id"], first,
        "a redacted edit is no longer the newest"
    );
    let edits = relations(&s, &alice, &room, &original, "/m.replace").await;
    assert!(!ids(&edits["chunk"]).contains(&second));

    redact(&s, &alice, &room, &original).await;
    let event = get_event(&s, &bob, &room, &original).await;
    assert!(
        event["unsigned"].get("m.relations").is_none(),
        "a redacted original bundles no edit: {event}"
    );
}

async fn reactions_are_listed_and_paginated(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    let message = text(&s, &alice, &room, "react to me").await;
    let mut sent = Vec::new();
    for key in ["👍", "🎉", "❤️", "🚀"] {
        sent.push(react(&s, &alice, &room, &message, key).await);
        sent.push(react(&s, &bob, &room, &message, key).await);
    }
    text(&s, &alice, &room, "unrelated").await;

    // Backwards, newest first, 3 at a time.
    let mut seen = Vec::new();
    let mut from = String::new();
    loop {
        let page = relations(
            &s,
            &bob,
            &room,
            &message,
            &format!("/m.annotation/m.reaction?limit=3{from}"),
        )
        .await;
        seen.extend(ids(&page["chunk"]));
        match page["next_batch"].as_str() {
            Some(next) => from = format!("&from={next}"),
            None => break,
        }
    }
    let mut newest_first = sent.clone();
    newest_first.reverse();
    assert_eq!(
        seen, newest_first,
        "each reaction exactly once, newest first"
    );

    // Forwards, oldest first, and the same with the event type left out.
    for suffix in ["/m.annotation/m.reaction", "/m.annotation", ""] {
        let mut seen = Vec::new();
        let mut from = String::new();
        loop {
            let page = relations(
                &s,
                &bob,
                &room,
                &message,
                &format!("{suffix}?dir=f&limit=5{from}"),
            )
            .await;
            seen.extend(ids(&page["chunk"]));
            match page["next_batch"].as_str() {
                Some(next) => from = format!("&from={next}"),
                None => break,
            }
        }
        assert_eq!(seen, sent, "{suffix}: oldest first");
    }

    // prev_batch read the other way gives the page before.
    let first = relations(&s, &bob, &room, &message, "/m.annotation?limit=3").await;
    let next = first["next_batch"].as_str().unwrap();
    let second = relations(
        &s,
        &bob,
        &room,
        &message,
        &format!("/m.annotation?limit=3&from={next}"),
    )
    .await;
    let back = relations(
        &s,
        &bob,
        &room,
        &message,
        &format!(
            "/m.annotation?limit=3&dir=f&from={}",
            second["prev_batch"].as_str().unwrap()
        ),
    )
    .await;
    let mut expected = ids(&first["chunk"]);
    expected.reverse();
    assert_eq!(ids(&back["chunk"]), expected);

    // Reactions are not bundled (spec v1.7).
    let event = get_event(&s, &bob, &room, &message).await;
    assert!(event["unsigned"].get("m.relations").is_none(), "{event}");

    redact(&s, &bob, &room, &sent[1]).await;
    let all = relations(&s, &bob, &room, &message, "/m.annotation?limit=50").await;
    let listed = ids(&all["chunk"]);
    assert_eq!(listed.len(), sent.len() - 1);
    assert!(!listed.contains(&sent[1]), "a redacted reaction is gone");
}

async fn duplicate_annotations_are_refused(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let message = text(&s, &alice, &room, "hi").await;
    let content =
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": message, "key": "👍"}});
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.reaction/same-txn");
    let (status, first) = s.put(&path, &alice.token, content.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, retry) = s.put(&path, &alice.token, content.clone()).await;
    assert_eq!(
        (status, &retry["event_id"]),
        (StatusCode::OK, &first["event_id"]),
        "a retried transaction is not a duplicate"
    );
    let (status, err) = send_raw(&s, &alice, &room, "m.reaction", content.clone()).await;
    assert_eq!(
        (status, err["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_DUPLICATE_ANNOTATION"))
    );
    redact(&s, &alice, &room, first["event_id"].as_str().unwrap()).await;
    let (status, _) = send_raw(&s, &alice, &room, "m.reaction", content).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a redacted annotation can be sent again"
    );
}

async fn threads_are_summarised_and_listed(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    s.join(&carol, &room).await;
    let root1 = text(&s, &alice, &room, "first topic").await;
    let root2 = text(&s, &carol, &room, "second topic").await;
    thread_reply(&s, &bob, &room, &root1, "one").await;
    thread_reply(&s, &carol, &room, &root2, "other").await;
    let latest = thread_reply(&s, &bob, &room, &root1, "two").await;
    let latest_edit = edit(&s, &bob, &room, &latest, "two!").await;

    // A thread cannot start from an event that has a relation.
    let (status, err) = send_raw(
        &s,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "nested",
               "m.relates_to": {"rel_type": "m.thread", "event_id": latest}}),
    )
    .await;
    assert_eq!(
        (status, err["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_UNKNOWN"))
    );

    // The summary, per viewer, in /messages and in sync.
    for (user, participated) in [(&alice, true), (&bob, true), (&carol, false)] {
        let (_, history) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=30"),
                &user.token,
            )
            .await;
        let sync = s.sync(user, None, 0).await;
        let timeline = &sync["rooms"]["join"][&room]["timeline"]["events"];
        for root in [find(&history["chunk"], &root1), find(timeline, &root1)] {
            let thread = &root["unsigned"]["m.relations"]["m.thread"];
            assert_eq!(thread["count"], 2, "{root}");
            assert_eq!(thread["current_user_participated"], participated);
            assert_eq!(thread["latest_event"]["event_id"], latest);
            assert_eq!(
                thread["latest_event"]["unsigned"]["m.relations"]["m.replace"]["event_id"],
                latest_edit,
                "the latest event carries its own aggregations"
            );
        }
        let in_sync = find(timeline, &root1);
        assert!(
            in_sync["unsigned"]["m.relations"]["m.thread"]["latest_event"]
                .get("room_id")
                .is_none(),
            "sync's format, without room_id"
        );
    }

    let thread = relations(&s, &carol, &room, &root1, "/m.thread").await;
    assert_eq!(ids(&thread["chunk"]).len(), 2);

    let (_, all) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/threads"),
            &carol.token,
        )
        .await;
    assert_eq!(
        ids(&all["chunk"]),
        vec![root1.clone(), root2.clone()],
        "most recently active first"
    );
    assert_eq!(
        all["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"],
        2
    );
    for (user, expected) in [
        (&bob, vec![root1.clone()]),
        (&alice, vec![root1.clone()]),
        (&carol, vec![root2.clone()]),
    ] {
        let (_, mine) = s
            .get(
                &format!("/_matrix/client/v1/rooms/{room}/threads?include=participated"),
                &user.token,
            )
            .await;
        assert_eq!(ids(&mine["chunk"]), expected, "{}", user.user_id);
    }
    let (_, page) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/threads?limit=1"),
            &carol.token,
        )
        .await;
    assert_eq!(ids(&page["chunk"]), vec![root1.clone()]);
    let next = page["next_batch"].as_str().unwrap();
    let (_, page) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/threads?limit=1&from={next}"),
            &carol.token,
        )
        .await;
    assert_eq!(ids(&page["chunk"]), vec![root2.clone()]);
    assert!(page.get("next_batch").is_none(), "{page}");

    // A new reply makes its thread the most recent; redacting it undoes that.
    let newest = thread_reply(&s, &carol, &room, &root2, "bump").await;
    let (_, all) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/threads"),
            &carol.token,
        )
        .await;
    assert_eq!(ids(&all["chunk"]), vec![root2.clone(), root1.clone()]);
    redact(&s, &carol, &room, &newest).await;
    let root = get_event(&s, &carol, &room, &root2).await;
    let summary = &root["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(summary["count"], 1);
    assert_ne!(summary["latest_event"]["event_id"], newest);
}

async fn relations_recurse_through_children(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let root = text(&s, &alice, &room, "root").await;
    let reply = thread_reply(&s, &alice, &room, &root, "in thread").await;
    let reply_edit = edit(&s, &alice, &room, &reply, "in thread, edited").await;
    let reference = send(
        &s,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "see above",
               "m.relates_to": {"rel_type": "m.reference", "event_id": reply_edit}}),
    )
    .await;

    let direct = relations(&s, &alice, &room, &root, "").await;
    assert_eq!(ids(&direct["chunk"]), vec![reply.clone()]);
    assert!(
        direct.get("recursion_depth").is_none(),
        "absent unless asked"
    );
    let deep = relations(&s, &alice, &room, &root, "?recurse=true").await;
    assert_eq!(deep["recursion_depth"], 3);
    assert_eq!(
        ids(&deep["chunk"]),
        vec![reference.clone(), reply_edit.clone(), reply.clone()]
    );
    // Filters apply at every step: the edit hangs off a thread event.
    let threads_only = relations(&s, &alice, &room, &root, "/m.thread?recurse=true").await;
    assert_eq!(ids(&threads_only["chunk"]), vec![reply.clone()]);

    // References are bundled as a chunk of ids.
    let edited = get_event(&s, &alice, &room, &reply_edit).await;
    assert_eq!(
        edited["unsigned"]["m.relations"]["m.reference"],
        json!({"chunk": [{"event_id": reference}]})
    );
}

async fn tokens_from_messages_and_sync_page_relations(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let message = text(&s, &alice, &room, "hi").await;
    let early = react(&s, &alice, &room, &message, "a").await;
    let sync = s.sync(&alice, None, 0).await;
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let late = react(&s, &alice, &room, &message, "b").await;

    let before = relations(&s, &alice, &room, &message, &format!("?from={since}")).await;
    assert_eq!(ids(&before["chunk"]), vec![early.clone()]);
    let after = relations(&s, &alice, &room, &message, &format!("?dir=f&from={since}")).await;
    assert_eq!(ids(&after["chunk"]), vec![late.clone()]);
    let upto = relations(&s, &alice, &room, &message, &format!("?to={since}")).await;
    assert_eq!(
        ids(&upto["chunk"]),
        vec![late.clone()],
        "`to` bounds the page"
    );

    let (_, history) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1"),
            &alice.token,
        )
        .await;
    let end = history["end"].as_str().unwrap();
    let older = relations(&s, &alice, &room, &message, &format!("?from={end}")).await;
    assert_eq!(ids(&older["chunk"]), vec![early]);
}

async fn relations_across_rooms_are_ignored(s: TestServer) {
    let alice = s.register("alice").await;
    let here = s.create_room(&alice, json!({})).await;
    let elsewhere = s.create_room(&alice, json!({})).await;
    let message = text(&s, &alice, &here, "original").await;
    edit(&s, &alice, &elsewhere, &message, "edited from elsewhere").await;
    thread_reply(&s, &alice, &elsewhere, &message, "thread from elsewhere").await;

    let event = get_event(&s, &alice, &here, &message).await;
    assert!(event["unsigned"].get("m.relations").is_none(), "{event}");
    let children = relations(&s, &alice, &here, &message, "").await;
    assert_eq!(children["chunk"], json!([]));
    let (_, threads) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{here}/threads"),
            &alice.token,
        )
        .await;
    assert_eq!(threads["chunk"], json!([]));
}

async fn invisible_parents_and_bad_input(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/"),
            &alice.token,
            json!({"history_visibility": "joined"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let secret = text(&s, &alice, &room, "before bob").await;
    react(&s, &alice, &room, &secret, "🤫").await;

    let not_found = |(status, body): (StatusCode, Value)| {
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")),
            "{body}"
        );
    };
    not_found(relations_raw(&s, &bob, &room, &secret, "").await);
    s.join(&bob, &room).await;
    not_found(relations_raw(&s, &bob, &room, &secret, "/m.annotation").await);
    not_found(relations_raw(&s, &alice, &room, "$unknown", "").await);
    not_found(relations_raw(&s, &alice, "!nowhere:localhost", &secret, "").await);

    let bad_param = |(status, body): (StatusCode, Value)| {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["errcode"].as_str().unwrap().starts_with("M_"),
            "{body}"
        );
    };
    for query in [
        "?from=garbage",
        "?to=s-1",
        "?limit=0",
        "?limit=-3",
        "?dir=x",
    ] {
        bad_param(relations_raw(&s, &alice, &room, &secret, query).await);
    }
    bad_param(relations_raw(&s, &alice, &room, "not-an-event-id", "").await);
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/threads?include=mine"),
            &alice.token,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/threads?from=x"),
            &alice.token,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/threads?limit=0"),
            &alice.token,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let mallory = s.register("mallory").await;
    let private = s.create_room(&alice, json!({})).await;
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{private}/threads"),
            &mallory.token,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn aggregations_stop_where_the_viewer_left(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    let root = text(&s, &alice, &room, "root").await;
    let seen = thread_reply(&s, &bob, &room, &root, "while bob was here").await;
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let unseen = thread_reply(&s, &alice, &room, &root, "after bob left").await;
    edit(&s, &alice, &room, &root, "root, edited after bob left").await;

    let summary = |history: &Value| {
        let root = find(&history["chunk"], &root).clone();
        root["unsigned"]["m.relations"].clone()
    };
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50");
    let (_, history) = s.get(&path, &bob.token).await;
    let bundled = summary(&history);
    assert_eq!(bundled["m.thread"]["count"], 1, "{bundled}");
    assert_eq!(bundled["m.thread"]["latest_event"]["event_id"], seen);
    assert!(bundled.get("m.replace").is_none(), "{bundled}");
    let (_, history) = s.get(&path, &alice.token).await;
    let bundled = summary(&history);
    assert_eq!(bundled["m.thread"]["count"], 2);
    assert_eq!(bundled["m.thread"]["latest_event"]["event_id"], unseen);
    assert!(bundled.get("m.replace").is_some());
}

/// Migration 4 indexes the events stored before it: undone by hand here,
/// it runs again on restart.
async fn existing_events_are_indexed_by_the_migration(mut s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let root = text(&s, &alice, &room, "root").await;
    let reply = thread_reply(&s, &alice, &room, &root, "reply").await;
    let edited = edit(&s, &alice, &room, &root, "root, edited").await;
    let kept = react(&s, &alice, &room, &root, "👍").await;
    let redacted = react(&s, &alice, &room, &root, "👎").await;
    redact(&s, &alice, &room, &redacted).await;

    let undo = if s.config.database_url.starts_with("postgres") {
        "DROP TRIGGER event_relations_added ON events; DROP TRIGGER event_relations_redacted ON events; \
         DROP VIEW event_relations_source; DROP TABLE threads; DROP TABLE event_relations; \
         DROP FUNCTION event_relations_added(), event_relations_redacted(), threads_reply_added(), threads_reply_removed();"
    } else {
        "DROP TRIGGER event_relations_added; DROP TRIGGER event_relations_redacted; \
         DROP VIEW event_relations_source; DROP TABLE threads; DROP TABLE event_relations;"
    };
    let db = corvid::store::Db::connect(&s.config.database_url)
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "{undo} DELETE FROM schema_migrations WHERE version = 4;"
    ))
    .execute(db.pool())
    .await
    .unwrap();
    db.close().await;
    s.restart().await;

    let event = get_event(&s, &alice, &room, &root).await;
    let bundled = &event["unsigned"]["m.relations"];
    assert_eq!(bundled["m.replace"]["event_id"], edited, "{event}");
    assert_eq!(bundled["m.thread"]["latest_event"]["event_id"], reply);
    let reactions = relations(&s, &alice, &room, &root, "/m.annotation").await;
    assert_eq!(ids(&reactions["chunk"]), vec![kept]);
    let (_, threads) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/threads"),
            &alice.token,
        )
        .await;
    assert_eq!(ids(&threads["chunk"]), vec![root]);
}

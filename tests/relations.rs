//! Event relations: replies, edits, reactions, threads and references;
//! `/relations`, `/threads`, and the bundled aggregations in `unsigned`.

mod common;

use common::{TestServer, urlencode};
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

const MESSAGE: &str = "m.room.message";

fn text(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body})
}

fn edit(original: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": format!("* {body}"),
        "m.new_content": {"msgtype": "m.text", "body": body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
    })
}

fn reaction(target: &str, key: &str) -> Value {
    json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}})
}

fn in_thread(root: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": body,
        "m.relates_to": {"rel_type": "m.thread", "event_id": root},
    })
}

/// Edits are ordered by timestamp: this keeps two edits' timestamps apart.
async fn next_millisecond() {
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
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

fn assert_error(response: (StatusCode, Value), status: StatusCode, errcode: &str) {
    let (got, body) = response;
    assert_eq!(
        (got, body["errcode"].as_str()),
        (status, Some(errcode)),
        "{body}"
    );
}

async fn replies_round_trip(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let question = s
        .send_event(&alice, &room, MESSAGE, text("question?"))
        .await;
    let reply = json!({
        "msgtype": "m.text",
        "body": "answer",
        "m.relates_to": {"m.in_reply_to": {"event_id": question}},
    });
    let answer = s.send_event(&alice, &room, MESSAGE, reply).await;
    let event = s.event(&alice, &room, &answer).await;
    assert_eq!(
        event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        question
    );
    // Replies have no rel_type: they are not relations the server serves.
    let children = s.relations(&alice, &room, &question, "").await;
    assert_eq!(children["chunk"], json!([]));
    assert!(children.get("next_batch").is_none());
    let parent = s.event(&alice, &room, &question).await;
    assert!(parent["unsigned"].get("m.relations").is_none(), "{parent}");
}

async fn edits_bundle_the_newest_valid_edit(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    let original = s.send_event(&alice, &room, MESSAGE, text("helo")).await;
    next_millisecond().await;
    let first = s
        .send_event(&alice, &room, MESSAGE, edit(&original, "hello"))
        .await;
    next_millisecond().await;
    let second = s
        .send_event(&alice, &room, MESSAGE, edit(&original, "hello!"))
        .await;
    next_millisecond().await;
    // Newer, but not alice's: not a valid edit of her message.
    let forged = s
        .send_event(&bob, &room, MESSAGE, edit(&original, "pwned"))
        .await;

    let event = s.event(&bob, &room, &original).await;
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

    let edits = s
        .relations_of_type(&alice, &room, &original, "m.replace", "")
        .await;
    let listed = ids(&edits["chunk"]);
    assert_eq!(listed.len(), 3, "every m.replace child is listed: {edits}");
    assert_eq!(listed[0], forged, "newest first");

    // Without m.new_content an edit is not valid (m.room.message refuses it at once).
    let note = s
        .send_event(&alice, &room, "org.example.note", json!({"text": "a"}))
        .await;
    let no_new_content =
        json!({"text": "b", "m.relates_to": {"rel_type": "m.replace", "event_id": note}});
    s.send_event(&alice, &room, "org.example.note", no_new_content)
        .await;
    let event = s.event(&alice, &room, &note).await;
    assert!(event["unsigned"].get("m.relations").is_none(), "{event}");

    s.redact(&alice, &room, &second).await;
    let event = s.event(&bob, &room, &original).await;
    assert_eq!(
        event["unsigned"]["m.relations"]["m.replace"]["event_id"], first,
        "a redacted edit is no longer the newest"
    );
    let edits = s
        .relations_of_type(&alice, &room, &original, "m.replace", "")
        .await;
    assert!(!ids(&edits["chunk"]).contains(&second));

    s.redact(&alice, &room, &original).await;
    let event = s.event(&bob, &room, &original).await;
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
    let message = s.send_event(&alice, &room, MESSAGE, text("react")).await;
    let mut sent = Vec::new();
    for key in ["👍", "🎉", "❤️", "🚀"] {
        for user in [&alice, &bob] {
            let id = s
                .send_event(user, &room, "m.reaction", reaction(&message, key))
                .await;
            sent.push(id);
        }
    }
    s.send_event(&alice, &room, MESSAGE, text("unrelated"))
        .await;
    let types = ("m.annotation", "m.reaction");

    // Backwards, newest first, 3 at a time.
    let mut seen = Vec::new();
    let mut from = String::new();
    loop {
        let query = format!("limit=3{from}");
        let page = s
            .relations_of_types(&bob, &room, &message, types, &query)
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

    // Forwards, oldest first, with both types, the relation type alone, neither.
    for filters in 0..3 {
        let mut seen = Vec::new();
        let mut from = String::new();
        loop {
            let query = format!("dir=f&limit=5{from}");
            let page = match filters {
                0 => {
                    s.relations_of_types(&bob, &room, &message, types, &query)
                        .await
                }
                1 => {
                    s.relations_of_type(&bob, &room, &message, "m.annotation", &query)
                        .await
                }
                _ => s.relations(&bob, &room, &message, &query).await,
            };
            seen.extend(ids(&page["chunk"]));
            match page["next_batch"].as_str() {
                Some(next) => from = format!("&from={next}"),
                None => break,
            }
        }
        assert_eq!(seen, sent, "filters {filters}: oldest first");
    }

    // prev_batch read the other way gives the page before.
    let first = s
        .relations_of_type(&bob, &room, &message, "m.annotation", "limit=3")
        .await;
    let next = first["next_batch"].as_str().unwrap();
    let query = format!("limit=3&from={next}");
    let second = s
        .relations_of_type(&bob, &room, &message, "m.annotation", &query)
        .await;
    let query = format!(
        "limit=3&dir=f&from={}",
        second["prev_batch"].as_str().unwrap()
    );
    let back = s
        .relations_of_type(&bob, &room, &message, "m.annotation", &query)
        .await;
    let mut expected = ids(&first["chunk"]);
    expected.reverse();
    assert_eq!(ids(&back["chunk"]), expected);

    // Reactions are not bundled (spec v1.7).
    let event = s.event(&bob, &room, &message).await;
    assert!(event["unsigned"].get("m.relations").is_none(), "{event}");

    s.redact(&bob, &room, &sent[1]).await;
    let all = s
        .relations_of_type(&bob, &room, &message, "m.annotation", "limit=50")
        .await;
    let listed = ids(&all["chunk"]);
    assert_eq!(listed.len(), sent.len() - 1);
    assert!(!listed.contains(&sent[1]), "a redacted reaction is gone");
}

async fn duplicate_annotations_are_refused(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let message = s.send_event(&alice, &room, MESSAGE, text("hi")).await;
    let thumbs_up = reaction(&message, "👍");
    let send = async |txn: &str| {
        s.put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.reaction/{txn}"),
            &alice.token,
            thumbs_up.clone(),
        )
        .await
    };
    let (status, first) = send("first").await;
    assert_eq!(status, StatusCode::OK);
    let (status, retry) = send("first").await;
    assert_eq!(
        (status, &retry["event_id"]),
        (StatusCode::OK, &first["event_id"]),
        "a retried transaction is not a duplicate"
    );
    assert_error(
        send("second").await,
        StatusCode::BAD_REQUEST,
        "M_DUPLICATE_ANNOTATION",
    );
    s.redact(&alice, &room, first["event_id"].as_str().unwrap())
        .await;
    let (status, _) = send("third").await;
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
    let root1 = s.send_event(&alice, &room, MESSAGE, text("topic 1")).await;
    let root2 = s.send_event(&carol, &room, MESSAGE, text("topic 2")).await;
    s.send_event(&bob, &room, MESSAGE, in_thread(&root1, "one"))
        .await;
    s.send_event(&carol, &room, MESSAGE, in_thread(&root2, "other"))
        .await;
    let latest = s
        .send_event(&bob, &room, MESSAGE, in_thread(&root1, "two"))
        .await;
    let latest_edit = s
        .send_event(&bob, &room, MESSAGE, edit(&latest, "two!"))
        .await;

    // A thread cannot start from an event that has a relation.
    let (status, err) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/{MESSAGE}/nested"),
            &alice.token,
            in_thread(&latest, "nested"),
        )
        .await;
    assert_error((status, err), StatusCode::BAD_REQUEST, "M_UNKNOWN");

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
        let in_sync = &find(timeline, &root1)["unsigned"]["m.relations"]["m.thread"];
        assert!(
            in_sync["latest_event"].get("room_id").is_none(),
            "sync's format, without room_id"
        );
    }

    let thread = s
        .relations_of_type(&carol, &room, &root1, "m.thread", "")
        .await;
    assert_eq!(ids(&thread["chunk"]).len(), 2);

    let all = s.threads(&carol, &room, "").await;
    assert_eq!(
        ids(&all["chunk"]),
        vec![root1.clone(), root2.clone()],
        "most recently active first"
    );
    assert_eq!(
        all["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"],
        2
    );
    for (user, expected) in [(&bob, &root1), (&alice, &root1), (&carol, &root2)] {
        let mine = s.threads(user, &room, "include=participated").await;
        assert_eq!(ids(&mine["chunk"]), vec![expected.clone()], "{user:?}");
    }
    let page = s.threads(&carol, &room, "limit=1").await;
    assert_eq!(ids(&page["chunk"]), vec![root1.clone()]);
    let next = page["next_batch"].as_str().unwrap();
    let page = s
        .threads(&carol, &room, &format!("limit=1&from={next}"))
        .await;
    assert_eq!(ids(&page["chunk"]), vec![root2.clone()]);
    assert!(page.get("next_batch").is_none(), "{page}");

    // A new reply makes its thread the most recent; redacting it undoes that.
    let newest = s
        .send_event(&carol, &room, MESSAGE, in_thread(&root2, "bump"))
        .await;
    let all = s.threads(&carol, &room, "").await;
    assert_eq!(ids(&all["chunk"]), vec![root2.clone(), root1.clone()]);
    s.redact(&carol, &room, &newest).await;
    let root = s.event(&carol, &room, &root2).await;
    let summary = &root["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(summary["count"], 1);
    assert_ne!(summary["latest_event"]["event_id"], newest);
}

async fn relations_recurse_through_children(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let root = s.send_event(&alice, &room, MESSAGE, text("root")).await;
    let reply = s
        .send_event(&alice, &room, MESSAGE, in_thread(&root, "in thread"))
        .await;
    let reply_edit = s
        .send_event(&alice, &room, MESSAGE, edit(&reply, "edited"))
        .await;
    let reference = json!({
        "msgtype": "m.text",
        "body": "see above",
        "m.relates_to": {"rel_type": "m.reference", "event_id": reply_edit},
    });
    let reference = s.send_event(&alice, &room, MESSAGE, reference).await;

    let direct = s.relations(&alice, &room, &root, "").await;
    assert_eq!(ids(&direct["chunk"]), vec![reply.clone()]);
    assert!(
        direct.get("recursion_depth").is_none(),
        "absent unless asked"
    );
    let deep = s.relations(&alice, &room, &root, "recurse=true").await;
    assert_eq!(deep["recursion_depth"], 3);
    assert_eq!(
        ids(&deep["chunk"]),
        vec![reference.clone(), reply_edit.clone(), reply.clone()]
    );
    // Filters apply at every step: the edit hangs off a thread event.
    let threads_only = s
        .relations_of_type(&alice, &room, &root, "m.thread", "recurse=true")
        .await;
    assert_eq!(ids(&threads_only["chunk"]), vec![reply.clone()]);

    // References are bundled as a chunk of ids.
    let edited = s.event(&alice, &room, &reply_edit).await;
    assert_eq!(
        edited["unsigned"]["m.relations"]["m.reference"],
        json!({"chunk": [{"event_id": reference}]})
    );
}

async fn tokens_from_messages_and_sync_page_relations(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let message = s.send_event(&alice, &room, MESSAGE, text("hi")).await;
    let early = s
        .send_event(&alice, &room, "m.reaction", reaction(&message, "a"))
        .await;
    let sync = s.sync(&alice, None, 0).await;
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let late = s
        .send_event(&alice, &room, "m.reaction", reaction(&message, "b"))
        .await;

    let page = async |query: String| s.relations(&alice, &room, &message, &query).await;
    let before = page(format!("from={since}")).await;
    assert_eq!(ids(&before["chunk"]), vec![early.clone()]);
    let after = page(format!("dir=f&from={since}")).await;
    assert_eq!(ids(&after["chunk"]), vec![late.clone()]);
    let upto = page(format!("to={since}")).await;
    assert_eq!(ids(&upto["chunk"]), vec![late], "`to` bounds the page");

    let (_, history) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1"),
            &alice.token,
        )
        .await;
    let end = history["end"].as_str().unwrap();
    let older = page(format!("from={end}")).await;
    assert_eq!(ids(&older["chunk"]), vec![early]);
}

async fn relations_across_rooms_are_ignored(s: TestServer) {
    let alice = s.register("alice").await;
    let here = s.create_room(&alice, json!({})).await;
    let elsewhere = s.create_room(&alice, json!({})).await;
    let message = s.send_event(&alice, &here, MESSAGE, text("original")).await;
    s.send_event(&alice, &elsewhere, MESSAGE, edit(&message, "edited"))
        .await;
    s.send_event(&alice, &elsewhere, MESSAGE, in_thread(&message, "reply"))
        .await;

    let event = s.event(&alice, &here, &message).await;
    assert!(event["unsigned"].get("m.relations").is_none(), "{event}");
    let children = s.relations(&alice, &here, &message, "").await;
    assert_eq!(children["chunk"], json!([]));
    let threads = s.threads(&alice, &here, "").await;
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
    let secret = s.send_event(&alice, &room, MESSAGE, text("secret")).await;
    s.send_event(&alice, &room, "m.reaction", reaction(&secret, "🤫"))
        .await;
    let children_of = async |user: &common::User, room: &str, event: &str, rest: &str| {
        s.get(
            &format!(
                "/_matrix/client/v1/rooms/{room}/relations/{}{rest}",
                urlencode(event)
            ),
            &user.token,
        )
        .await
    };

    let not_found = StatusCode::NOT_FOUND;
    assert_error(
        children_of(&bob, &room, &secret, "").await,
        not_found,
        "M_NOT_FOUND",
    );
    s.join(&bob, &room).await;
    assert_error(
        children_of(&bob, &room, &secret, "/m.annotation").await,
        not_found,
        "M_NOT_FOUND",
    );
    assert_error(
        children_of(&alice, &room, "$unknown", "").await,
        not_found,
        "M_NOT_FOUND",
    );
    assert_error(
        children_of(&alice, "!nowhere:localhost", &secret, "").await,
        not_found,
        "M_NOT_FOUND",
    );

    for query in [
        "?from=garbage",
        "?to=s--1",
        "?limit=0",
        "?limit=-3",
        "?dir=x",
    ] {
        let (status, body) = children_of(&alice, &room, &secret, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    let (status, _) = children_of(&alice, &room, "not-an-event-id", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for query in ["include=mine", "from=x", "limit=0"] {
        let (status, body) = s
            .get(
                &format!("/_matrix/client/v1/rooms/{room}/threads?{query}"),
                &alice.token,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }

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
    let root = s.send_event(&alice, &room, MESSAGE, text("root")).await;
    let seen = s
        .send_event(&bob, &room, MESSAGE, in_thread(&root, "bob is here"))
        .await;
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let unseen = s
        .send_event(&alice, &room, MESSAGE, in_thread(&root, "bob has left"))
        .await;
    s.send_event(&alice, &room, MESSAGE, edit(&root, "edited"))
        .await;

    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50");
    let (_, history) = s.get(&path, &bob.token).await;
    let bundled = &find(&history["chunk"], &root)["unsigned"]["m.relations"];
    assert_eq!(bundled["m.thread"]["count"], 1, "{bundled}");
    assert_eq!(bundled["m.thread"]["latest_event"]["event_id"], seen);
    assert!(bundled.get("m.replace").is_none(), "{bundled}");
    let (_, history) = s.get(&path, &alice.token).await;
    let bundled = &find(&history["chunk"], &root)["unsigned"]["m.relations"];
    assert_eq!(bundled["m.thread"]["count"], 2);
    assert_eq!(bundled["m.thread"]["latest_event"]["event_id"], unseen);
    assert!(bundled.get("m.replace").is_some());
}

/// Migration 4 indexes the events stored before it: undone by hand here,
/// it runs again on restart.
async fn existing_events_are_indexed_by_the_migration(mut s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let root = s.send_event(&alice, &room, MESSAGE, text("root")).await;
    let reply = s
        .send_event(&alice, &room, MESSAGE, in_thread(&root, "reply"))
        .await;
    let edited = s
        .send_event(&alice, &room, MESSAGE, edit(&root, "edited"))
        .await;
    let kept = s
        .send_event(&alice, &room, "m.reaction", reaction(&root, "👍"))
        .await;
    let redacted = s
        .send_event(&alice, &room, "m.reaction", reaction(&root, "👎"))
        .await;
    s.redact(&alice, &room, &redacted).await;

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

    let event = s.event(&alice, &room, &root).await;
    let bundled = &event["unsigned"]["m.relations"];
    assert_eq!(bundled["m.replace"]["event_id"], edited, "{event}");
    assert_eq!(bundled["m.thread"]["latest_event"]["event_id"], reply);
    let reactions = s
        .relations_of_type(&alice, &room, &root, "m.annotation", "")
        .await;
    assert_eq!(ids(&reactions["chunk"]), vec![kept]);
    let threads = s.threads(&alice, &room, "").await;
    assert_eq!(ids(&threads["chunk"]), vec![root]);
}

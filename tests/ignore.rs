//! Ignoring users (`m.ignored_user_list`): their messages leave the
//! timeline and `/messages`, their invites vanish, and they never notify.

mod common;

use common::{TestServer, User};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(ignored_users_are_hidden);

async fn ignore(s: &TestServer, user: &User, whom: &[&User]) {
    let ignored: serde_json::Map<String, Value> = whom
        .iter()
        .map(|u| (u.user_id.clone(), json!({})))
        .collect();
    let (status, _) = s
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
                user.user_id
            ),
            &user.token,
            json!({"ignored_users": ignored}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

fn senders(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["sender"].as_str().unwrap().to_owned())
        .collect()
}

async fn ignored_users_are_hidden(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    s.join(&carol, &room).await;
    ignore(&s, &alice, &[&bob]).await;

    s.send_text(&bob, &room, "b1", "you can't see me").await;
    s.send_text(&carol, &room, "c1", "hello").await;
    let sync = s.sync(&alice, None, 0).await;
    let joined = &sync["rooms"]["join"][&room];
    assert_eq!(
        senders(&joined["timeline"]["events"]),
        std::slice::from_ref(&carol.user_id)
    );
    // Bob stays a member: his state is not hidden.
    let (_, members) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            &alice.token,
        )
        .await;
    assert!(members["joined"][&bob.user_id].is_object());
    // ...and his messages do not count as unread.
    assert_eq!(
        joined["unread_notifications"]["notification_count"], 1,
        "{joined}"
    );

    let (_, page) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            &alice.token,
        )
        .await;
    assert_eq!(
        senders(&page["chunk"]),
        std::slice::from_ref(&carol.user_id)
    );

    // Nor do his reactions among an event's relations.
    let liked = s.send_text(&carol, &room, "c2", "like me").await;
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.reaction/r1"),
            &bob.token,
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": liked, "key": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let relations = format!("/_matrix/client/v1/rooms/{room}/relations/{liked}");
    let (_, seen_by_alice) = s.get(&relations, &alice.token).await;
    assert_eq!(seen_by_alice["chunk"], json!([]));
    let (_, seen_by_carol) = s.get(&relations, &carol.token).await;
    assert_eq!(seen_by_carol["chunk"].as_array().unwrap().len(), 1);

    // Invites from Bob never show.
    let other = s
        .create_room(&bob, json!({"invite": [alice.user_id]}))
        .await;
    let sync = s.sync(&alice, None, 0).await;
    assert!(sync["rooms"]["invite"].get(&other).is_none(), "{sync}");

    // Un-ignoring brings him back.
    ignore(&s, &alice, &[]).await;
    let sync = s.sync(&alice, None, 0).await;
    let timeline = &sync["rooms"]["join"][&room]["timeline"]["events"];
    assert!(senders(timeline).contains(&bob.user_id), "{timeline}");
    assert!(sync["rooms"]["invite"][&other].is_object());
}

//! Reporting content: events, rooms and users.

mod common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::json;

on_both_backends!(reports_are_accepted_only_for_what_the_reporter_can_see);

async fn reports_are_accepted_only_for_what_the_reporter_can_see(s: TestServer) {
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = s
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    s.join(&bob, &room).await;
    let event = s.send_text(&alice, &room, "a1", "spam").await;

    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/report/{event}"),
            &bob.token,
            json!({"reason": "spam"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/report/$missing"),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
    // An event in a private room the reporter never joined: as if missing.
    let private = s
        .create_room(&alice, json!({"preset": "private_chat"}))
        .await;
    let secret = s.send_text(&alice, &private, "a2", "secret").await;
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/report/{secret}"),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/report"),
            &bob.token,
            json!({"reason": "bad room"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .post(
            "/_matrix/client/v3/rooms/!nope:localhost/report",
            &bob.token,
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/users/{}/report", alice.user_id),
            &bob.token,
            json!({"reason": "rude"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .post(
            "/_matrix/client/v3/users/@ghost:localhost/report",
            &bob.token,
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/users/{}/report", alice.user_id),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_BAD_JSON"))
    );
}

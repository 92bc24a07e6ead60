//! Errors at the HTTP boundary: spec errcodes and statuses, never a 500.

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_backends!(
    errors_have_spec_codes,
    malformed_input_never_fails_the_server,
    rate_limits_answer_429,
    cors_headers_are_present
);

async fn errors_have_spec_codes(s: TestServer) {
    let alice = s.register("alice").await;
    let cases = [
        (
            Method::GET,
            "/_matrix/client/v3/nonexistent",
            Some(alice.token.as_str()),
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
        ),
        (
            Method::DELETE,
            "/_matrix/client/v3/createRoom",
            Some(alice.token.as_str()),
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
        ),
        (
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            None,
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
        ),
        (
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            Some("not-a-token"),
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        ),
        (
            Method::GET,
            "/_matrix/client/v3/rooms/!nope:localhost/state",
            Some(alice.token.as_str()),
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
        (
            Method::GET,
            "/_matrix/client/v3/sync?since=garbage",
            Some(alice.token.as_str()),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
    ];
    for (method, path, token, status, errcode) in cases {
        let (got, body) = s.request(method.clone(), path, token, None).await;
        assert_eq!(
            (got, body["errcode"].as_str()),
            (status, Some(errcode)),
            "{method} {path}: {body}"
        );
        assert!(body["error"].is_string());
    }
}

async fn malformed_input_never_fails_the_server(s: TestServer) {
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, json!({})).await;
    let client = reqwest::Client::new();
    let bodies: [&[u8]; 6] = [
        b"{not json",
        b"[]",
        b"\"string\"",
        b"{\"name\": 5}",
        b"\xff\xfe",
        b"{\"room_version\": {}}",
    ];
    for body in bodies {
        let res = client
            .post(format!("{}/_matrix/client/v3/createRoom", s.base))
            .bearer_auth(&alice.token)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert!(
            res.status().is_client_error(),
            "{:?} -> {}",
            String::from_utf8_lossy(body),
            res.status()
        );
        let err: serde_json::Value = res.json().await.unwrap();
        assert!(
            ["M_NOT_JSON", "M_BAD_JSON"].contains(&err["errcode"].as_str().unwrap()),
            "{err}"
        );
    }
    for path in [
        format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
        "/_matrix/client/v3/rooms/not-a-room/send/m.room.message/t1".to_owned(),
        format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
    ] {
        let res = client
            .put(format!("{}{path}", s.base))
            .bearer_auth(&alice.token)
            .body("[1,2]")
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{path} -> {}", res.status());
    }
    let (status, err) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/big"),
            &alice.token,
            json!({"msgtype": "m.text", "body": "x".repeat(70_000)}),
        )
        .await;
    assert_eq!(
        (status, err["errcode"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("M_TOO_LARGE"))
    );
    let (status, _) = s
        .get("/_matrix/client/v3/account/whoami", &alice.token)
        .await;
    assert_eq!(status, StatusCode::OK, "still serving");
}

async fn rate_limits_answer_429(mut s: TestServer) {
    s.config.rate_limit.enabled = true;
    s.config.rate_limit.burst = 3;
    s.config.rate_limit.per_second = 0.5;
    s.restart().await;
    let mut limited = None;
    for i in 0..6 {
        let (status, body) = s
            .request(
                Method::POST,
                "/_matrix/client/v3/login",
                None,
                Some(json!({"type": "m.login.password", "user": format!("u{i}"), "password": "x"})),
            )
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(body);
            break;
        }
    }
    let body = limited.expect("the fourth login in a burst of three is limited");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
}

async fn cors_headers_are_present(s: TestServer) {
    let res = reqwest::Client::new()
        .request(
            Method::OPTIONS,
            format!("{}/_matrix/client/v3/sync", s.base),
        )
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let methods = res.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        methods.contains("PUT") && methods.contains("DELETE"),
        "{methods}"
    );
}

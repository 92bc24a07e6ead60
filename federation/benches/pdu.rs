//! The per-event cost of turning a template into a PDU, and of checking one
//! that arrives: canonical JSON, content hash + ed25519 signature, reference
//! hash (event id), serialisation, and the inbound side (parse + verify).
//!
//! The event is a typical `m.room.message` in a room version 12 room: one
//! prev event, two auth events (power levels and the sender's membership;
//! v12 leaves the create event out), a one-line text body.
//!
//! Run: `cargo bench -p corvid-federation --bench pdu`

use std::{collections::BTreeMap, hint::black_box};

use corvid_federation::{ServerSigningKey, event_id_for, sign_pdu};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue,
    canonical_json::to_canonical_value,
    room_version_rules::RoomVersionRules,
    serde::Base64,
    signatures::{PublicKeyMap, verify_event},
};
use serde_json::{Value, json};

const SERVER: &str = "corvid.example.org";

fn key() -> ServerSigningKey {
    let dir = std::env::temp_dir().join(format!("corvid-bench-pdu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = ServerSigningKey::load_or_generate(&dir.join("signing.key")).expect("signing key");
    std::fs::remove_dir_all(&dir).expect("remove temp key dir");
    key
}

/// What `service::rooms::timeline::pdu_template` builds for a client's message.
fn message_template() -> Value {
    json!({
        "room_id": "!Xq3620DUiqCaoxq-ALUXz3BqNnpsj_gKmtTKGcDFJYk",
        "sender": "@alice:corvid.example.org",
        "type": "m.room.message",
        "origin_server_ts": 1_764_000_000_000u64,
        "depth": 4711,
        "prev_events": ["$Ugd3HO7Y6UzD2ob5VQJQd-tEmqLVK1RMX1bL5mMFNvA"],
        "auth_events": [
            "$k0PZy0Q1kh3lwGzJpbJbvAtgVKRN9G8vFl1d1e2sKpM",
            "$7B1SIQjYqMOYtu1vcDLmJ-XUCcGaXG7ImdTb1sKgXQg",
        ],
        "content": {
            "msgtype": "m.text",
            "body": "Shall we move the stand-up to 10:30 tomorrow? The build is still red.",
        },
    })
}

fn to_object(v: Value) -> CanonicalJsonObject {
    match to_canonical_value(v).expect("canonical JSON") {
        CanonicalJsonValue::Object(o) => o,
        _ => unreachable!("template is an object"),
    }
}

fn benches(c: &mut Criterion) {
    let key = key();
    let rules = RoomVersionRules::V12;
    let template = message_template();
    let object = to_object(template.clone());
    let mut signed = object.clone();
    sign_pdu(&mut signed, SERVER, &key, &rules).expect("sign");
    let signed_json = serde_json::to_string(&signed).expect("serialise");

    let mut keys = BTreeMap::new();
    keys.insert(
        key.key_id(),
        Base64::parse(key.public_key_base64()).expect("public key"),
    );
    let mut public_keys = PublicKeyMap::new();
    public_keys.insert(SERVER.to_owned(), keys);
    verify_event(&public_keys, &signed, &rules).expect("our own signature verifies");

    let mut g = c.benchmark_group("pdu/m.room.message");
    g.bench_function("canonical_json", |b| {
        b.iter_batched(
            || template.clone(),
            |t| to_object(black_box(t)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("hash_and_sign", |b| {
        b.iter_batched(
            || object.clone(),
            |mut o| {
                sign_pdu(&mut o, SERVER, &key, &rules).expect("sign");
                o
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("event_id", |b| {
        b.iter(|| event_id_for(black_box(&signed), &rules).expect("event id"))
    });
    g.bench_function("serialise", |b| {
        b.iter(|| serde_json::to_string(black_box(&signed)).expect("serialise"))
    });
    // The whole local-send step of `timeline::append_in`, template to stored JSON.
    g.bench_function("build_total", |b| {
        b.iter_batched(
            || template.clone(),
            |t| {
                let mut o = to_object(black_box(t));
                sign_pdu(&mut o, SERVER, &key, &rules).expect("sign");
                let id = event_id_for(&o, &rules).expect("event id");
                (id, serde_json::to_string(&o).expect("serialise"))
            },
            BatchSize::SmallInput,
        )
    });
    // Inbound: what a receiving server does first with each PDU.
    g.bench_function("parse", |b| {
        b.iter(|| {
            serde_json::from_str::<CanonicalJsonObject>(black_box(&signed_json)).expect("parse")
        })
    });
    g.bench_function("verify_signature_and_hash", |b| {
        b.iter(|| verify_event(&public_keys, black_box(&signed), &rules).expect("verify"))
    });
    g.finish();
}

criterion_group!(pdu, benches);
criterion_main!(pdu);

//! `/sync` for a user in 500 rooms, through `service::sync::sync` on a real
//! server state (SQLite in a temporary directory, the service layer, no HTTP).
//!
//! Set-up, once per run: alice creates 500 public rooms (`createRoom` with a
//! name: 7 events each), bob joins 50 of them, alice and bob send 4 messages
//! in each of those 50; then bob sends one message in each of 10 rooms.
//! Benchmarked, with timeout 0:
//! - `incremental/nothing_new`: `since` = the latest position;
//! - `incremental/10_rooms_1_new_message`: `since` = the position before bob's 10 messages;
//! - `initial`: no `since` (all 500 rooms, full state, last 10 timeline events).
//!
//! Run: `cargo bench -p corvid --bench sync`

use std::{hint::black_box, sync::Arc, time::Duration};

use corvid::{
    Config, Server,
    api::AuthedUser,
    service::{
        accounts,
        rooms::{
            create::{NewRoom, Preset, create_room},
            membership,
            timeline::{self, Template},
        },
        sync::{SyncRequest, SyncToken, sync},
    },
    store::Db,
};
use corvid_federation::ServerSigningKey;
use criterion::{Criterion, criterion_group, criterion_main};
use ruma::presence::PresenceState;
use ruma::{
    OwnedRoomId, OwnedUserId, RoomVersionId, api::client::filter::FilterDefinition,
    events::TimelineEventType,
};
use serde_json::json;
use tokio::runtime::Runtime;

const ROOMS: usize = 500;
const BUSY_ROOMS: usize = 50;
const MESSAGES_PER_BUSY_ROOM: usize = 4;
const NEW_MESSAGE_ROOMS: usize = 10;

struct Fixture {
    _dir: tempfile::TempDir,
    server: Arc<Server>,
    alice: AuthedUser,
    before_ten: SyncToken,
    latest: SyncToken,
}

fn message(body: String) -> Template {
    Template::message(
        TimelineEventType::RoomMessage,
        json!({"msgtype": "m.text", "body": body}),
    )
}

async fn setup() -> Fixture {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::load(None).expect("default config");
    config.data_dir = dir.path().to_path_buf();
    config.database_url = format!("sqlite://{}", dir.path().join("corvid.db").display());
    config.rate_limit.enabled = false;
    let db = Db::connect(&config.database_url).await.expect("connect");
    db.migrate().await.expect("migrate");
    let key = ServerSigningKey::load_or_generate(&config.signing_key_path()).expect("key");
    let server = Server::new(config, db, key).expect("server");

    let user_id = |name: &str| -> OwnedUserId {
        format!("@{name}:{}", server.server_name())
            .try_into()
            .expect("user id")
    };
    let (alice_id, bob_id) = (user_id("alice"), user_id("bob"));
    for who in [&alice_id, &bob_id] {
        accounts::create_user(&server, who, None, false)
            .await
            .expect("create user");
    }
    let session = accounts::start_session(&server, &alice_id, None, Some("bench"), false)
        .await
        .expect("session");
    let alice = AuthedUser {
        user_id: session.user_id,
        device_id: session.device_id,
        token_hash: accounts::hash_token(&session.access_token),
    };

    let mut rooms: Vec<OwnedRoomId> = Vec::with_capacity(ROOMS);
    for i in 0..ROOMS {
        let room = NewRoom {
            version: RoomVersionId::V12,
            preset: Preset::PublicChat,
            creation_content: Default::default(),
            initial_state: Vec::new(),
            power_level_override: None,
            name: Some(format!("Room {i}")),
            topic: None,
            alias: None,
            invite: Vec::new(),
            is_direct: false,
            publish: false,
        };
        rooms.push(
            create_room(&server, &alice_id, room)
                .await
                .expect("create room"),
        );
    }
    for (i, room) in rooms.iter().take(BUSY_ROOMS).enumerate() {
        membership::join(&server, room, &bob_id, None, &[])
            .await
            .expect("join");
        for m in 0..MESSAGES_PER_BUSY_ROOM {
            let sender = if m % 2 == 0 { &alice_id } else { &bob_id };
            timeline::append(
                &server,
                room,
                sender,
                message(format!("message {m} in room {i}")),
                None,
            )
            .await
            .expect("send");
        }
    }
    let before_ten = SyncToken::at(server.db.stream_position().await.expect("position"));
    for room in rooms.iter().take(NEW_MESSAGE_ROOMS) {
        timeline::append(
            &server,
            room,
            &bob_id,
            message("something new".into()),
            None,
        )
        .await
        .expect("send");
    }
    let latest = SyncToken::at(server.db.stream_position().await.expect("position"));
    eprintln!(
        "sync bench set-up: {ROOMS} rooms, {} stream positions, {:.1} s",
        latest.pos,
        started.elapsed().as_secs_f64()
    );
    Fixture {
        _dir: dir,
        server,
        alice,
        before_ten,
        latest,
    }
}

fn request(since: Option<SyncToken>) -> SyncRequest {
    SyncRequest {
        since,
        full_state: false,
        filter: FilterDefinition::default(),
        timeout: Duration::ZERO,
        // The response's construction is what is measured, not presence.
        set_presence: PresenceState::Offline,
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let f = rt.block_on(setup());
    let run = |rt: &Runtime, since| {
        rt.block_on(sync(&f.server, &f.alice, request(since)))
            .expect("sync")
    };

    let quiet = run(&rt, Some(f.latest));
    assert!(quiet.rooms.is_empty(), "nothing new since the latest token");
    let ten = run(&rt, Some(f.before_ten));
    assert_eq!(ten.rooms.join.len(), NEW_MESSAGE_ROOMS);
    assert!(
        ten.rooms
            .join
            .values()
            .all(|r| r.timeline.events.len() == 1)
    );
    let initial = run(&rt, None);
    assert_eq!(initial.rooms.join.len(), ROOMS);

    let mut g = c.benchmark_group(format!("sync/user in {ROOMS} rooms"));
    g.bench_function("incremental/nothing_new", |b| {
        b.iter(|| run(&rt, black_box(Some(f.latest))))
    });
    g.bench_function("incremental/10_rooms_1_new_message", |b| {
        b.iter(|| run(&rt, black_box(Some(f.before_ten))))
    });
    g.sample_size(10);
    g.bench_function("initial", |b| b.iter(|| run(&rt, black_box(None))));
    g.finish();

    drop(f);
    rt.shutdown_timeout(Duration::from_secs(5));
}

criterion_group!(sync_bench, benches);
criterion_main!(sync_bench);

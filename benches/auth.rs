//! Authorization rules for one local event in a public room version 12 room
//! with 1,000 joined members, through `service::rooms::timeline::authorize`
//! (which parses each state event it is given into a `Pdu`, then runs
//! ruma-state-res's checks).
//!
//! Three inputs per event:
//! - `full_state`: the room's whole current state (1,005 events);
//! - `auth_events`: what `timeline::append_in` actually passes — the event's
//!   auth types plus the create event (3 events for a message);
//! - `checks_only`: the ruma-state-res checks alone against the full state
//!   already parsed and indexed, i.e. the rules' own cost without JSON parsing.
//!
//! Run: `cargo bench -p corvid --bench auth`

mod common;

use std::{collections::HashMap, hint::black_box};

use common::{Branch, Event, Graph, user};
use corvid::{
    service::rooms::{pdu::Pdu, timeline::authorize},
    store::events::StoredEvent,
};
use criterion::{Criterion, criterion_group, criterion_main};
use ruma::{
    events::StateEventType,
    state_res::{self, Event as _},
};
use serde_json::json;

const MEMBERS: usize = 1_000;

/// The state `append_in` reads for `event`: its auth types and the create event.
fn auth_state(graph: &Graph, b: &Branch, event: &Event) -> Vec<StoredEvent> {
    let pdu = &event.pdu;
    let mut wanted: Vec<(String, String)> = state_res::auth_types_for_event(
        pdu.event_type(),
        pdu.sender(),
        pdu.state_key(),
        pdu.content(),
        &graph.rules.authorization,
    )
    .expect("auth types")
    .into_iter()
    .map(|(t, k)| (t.to_string(), k))
    .collect();
    wanted.push((StateEventType::RoomCreate.to_string(), String::new()));
    if let Some(k) = pdu.state_key() {
        wanted.push((pdu.event_type().to_string(), k.to_owned()));
    }
    wanted.sort();
    wanted.dedup();
    wanted
        .iter()
        .filter_map(|key| b.state.get(key))
        .map(|id| graph.stored(id))
        .collect()
}

fn benches(c: &mut Criterion) {
    let mut graph = Graph::new();
    let alice = user("alice");
    let mut room = graph.public_room(&alice);
    for i in 0..MEMBERS {
        graph.join(&mut room, &user(&format!("member{i:04}")));
    }
    let full: Vec<StoredEvent> = room.state.values().map(|id| graph.stored(id)).collect();
    assert_eq!(full.len(), MEMBERS + 5);

    let sender = user("member0500");
    let message = graph.build(
        &room,
        &sender,
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "Shall we move the stand-up to 10:30 tomorrow?"}),
    );
    let newcomer = user("newcomer");
    let join = graph.build(
        &room,
        &newcomer,
        "m.room.member",
        Some(newcomer.as_str()),
        json!({"membership": "join", "displayname": "newcomer"}),
    );

    // The rules alone: state parsed once, outside the loop.
    let parsed: Vec<Pdu> = full
        .iter()
        .map(|e| Pdu::from_stored(e).expect("parse"))
        .collect();
    let by_id: HashMap<&ruma::EventId, &Pdu> =
        parsed.iter().map(|p| (p.event_id.as_ref(), p)).collect();
    let by_key: HashMap<(String, String), &Pdu> = parsed
        .iter()
        .filter_map(|p| Some(((p.kind.to_string(), p.state_key.clone()?), p)))
        .collect();
    let rules = graph.rules.authorization.clone();
    let checks = |pdu: &Pdu| {
        state_res::check_state_independent_auth_rules(&rules, pdu, |id| by_id.get(id).copied())
            .and_then(|()| {
                state_res::check_state_dependent_auth_rules(&rules, pdu, |t, k| {
                    by_key.get(&(t.to_string(), k.to_owned())).copied()
                })
            })
    };

    for (name, event) in [("m.room.message", &message), ("m.room.member join", &join)] {
        let auth = auth_state(&graph, &room, event);
        authorize(&graph.rules, &event.pdu, &full).expect("allowed against full state");
        authorize(&graph.rules, &event.pdu, &auth).expect("allowed against auth events");
        checks(&event.pdu).expect("allowed by the rules");

        let mut g = c.benchmark_group(format!("authorize/{name}"));
        g.bench_function(format!("full_state ({} events)", full.len()), |b| {
            b.iter(|| authorize(&graph.rules, black_box(&event.pdu), black_box(&full)))
        });
        g.bench_function(format!("auth_events ({} events)", auth.len()), |b| {
            b.iter(|| authorize(&graph.rules, black_box(&event.pdu), black_box(&auth)))
        });
        g.bench_function("checks_only (state pre-parsed)", |b| {
            b.iter(|| checks(black_box(&event.pdu)))
        });
        g.finish();
    }
}

criterion_group!(auth, benches);
criterion_main!(auth);

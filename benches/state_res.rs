//! State resolution v2.1 (room version 12) of two forks of 1,000 state
//! events each, with `ruma::state_res::resolve` over Corvid's `Pdu`.
//!
//! - `disjoint_joins`: a public room forks; 1,000 users join on each side
//!   (a netsplit): 2,000 conflicted keys, one event each, no power events.
//! - `same_keys_with_power_change`: a room with 1,000 members forks; on one
//!   side the creator first changes the power levels, then 999 members
//!   change their display name; on the other all 1,000 change it
//!   differently: 1,000 conflicted keys (2,000 events), one power event, so
//!   the power sort and a two-step mainline are exercised.
//!
//! Both sides' full auth chains are computed outside the timed loop (a
//! server reads them from its store); the v12 conflicted state subgraph is
//! computed inside it, through `resolve`'s callback.
//!
//! Run: `cargo bench -p corvid --bench state_res`

mod common;

use std::time::Duration;

use common::{Branch, Graph, power_levels, user};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ruma::{
    OwnedEventId,
    state_res::{self, StateMap},
};
use serde_json::json;

const PER_SIDE: usize = 1_000;

struct Fork {
    graph: Graph,
    sides: [StateMap<OwnedEventId>; 2],
}

fn disjoint_joins() -> Fork {
    let mut graph = Graph::new();
    let alice = user("alice");
    let base = graph.public_room(&alice);
    let mut a = base.clone();
    let mut b = base;
    for i in 0..PER_SIDE {
        graph.join(&mut a, &user(&format!("west{i:04}")));
        graph.join(&mut b, &user(&format!("east{i:04}")));
    }
    let sides = [graph.state_map(&a), graph.state_map(&b)];
    Fork { graph, sides }
}

fn rename(graph: &mut Graph, side: &mut Branch, i: usize, name: &str) {
    let who = user(&format!("member{i:04}"));
    let content = json!({"membership": "join", "displayname": format!("{name} {i}")});
    graph.append(side, &who, "m.room.member", Some(who.as_str()), content);
}

fn same_keys_with_power_change() -> Fork {
    let mut graph = Graph::new();
    let alice = user("alice");
    let mut base = graph.public_room(&alice);
    for i in 0..PER_SIDE {
        graph.join(&mut base, &user(&format!("member{i:04}")));
    }
    let mut a = base.clone();
    let mut b = base;
    let mut promoted = serde_json::Map::new();
    promoted.insert(user("member0000").to_string(), json!(50));
    graph.append(
        &mut a,
        &alice,
        "m.room.power_levels",
        Some(""),
        power_levels(promoted.into()),
    );
    for i in 1..PER_SIDE {
        rename(&mut graph, &mut a, i, "West");
    }
    for i in 0..PER_SIDE {
        rename(&mut graph, &mut b, i, "East");
    }
    let sides = [graph.state_map(&a), graph.state_map(&b)];
    Fork { graph, sides }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("state_res/v12 two forks of 1000");
    g.sample_size(10);
    for (name, fork) in [
        ("disjoint_joins", disjoint_joins()),
        ("same_keys_with_power_change", same_keys_with_power_change()),
    ] {
        let graph = &fork.graph;
        let rules = &graph.rules;
        let v2 = rules.state_res.v2_rules().expect("v2 state res");
        let chains = vec![
            graph.full_auth_chain(&fork.sides[0]),
            graph.full_auth_chain(&fork.sides[1]),
        ];
        let resolve = |chains| {
            state_res::resolve(
                &rules.authorization,
                v2,
                &fork.sides,
                chains,
                |id| graph.get(id),
                |conflicted| graph.conflicted_state_subgraph(conflicted),
            )
            .expect("resolves")
        };
        let resolved = resolve(chains.clone());
        let from = |side: &StateMap<OwnedEventId>| {
            resolved
                .iter()
                .filter(|(k, id)| side.get(k) == Some(id))
                .count()
        };
        eprintln!(
            "{name}: sides of {} and {} state events resolve to {} ({} as on the first side, {} as on the second)",
            fork.sides[0].len(),
            fork.sides[1].len(),
            resolved.len(),
            from(&fork.sides[0]),
            from(&fork.sides[1]),
        );
        g.bench_function(name, |b| {
            b.iter_batched(|| chains.clone(), &resolve, BatchSize::LargeInput)
        });
    }
    g.finish();
}

criterion_group! {
    name = state_res;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(state_res);

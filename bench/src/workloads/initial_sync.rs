//! `initial-sync`: a user in N rooms with M messages each; time of a fresh
//! `/sync` (no `since`). Each trial uses a new user, so no server-side cache
//! of an earlier initial sync (Synapse keeps one for ~2 min) can answer it.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Workload;
use crate::{
    client::{ApiError, ApiResult, User},
    report::Report,
    setup::Ctx,
    stats::{ErrorLog, summarize},
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    #[arg(long, default_value_t = 10)]
    pub messages_per_room: usize,
    /// Fresh users, each joining every room (set-up) and then timing its first /sync.
    #[arg(long, default_value_t = 3)]
    pub trials: usize,
}

/// The filled rooms, and one fresh user per trial who has joined them all.
#[derive(Serialize, Deserialize)]
pub struct Setup {
    rooms: Vec<String>,
    users: Vec<User>,
}

impl Workload for Args {
    type Setup = Setup;

    async fn setup(&self, ctx: &Ctx) -> ApiResult<Setup> {
        let creator = ctx.register("iscreator", 0).await?;
        let rooms = ctx.create_rooms(&creator, self.rooms).await?;
        ctx.fill_rooms(&creator, &rooms, self.messages_per_room)
            .await?;
        let users = ctx.register_many("isuser", self.trials.max(1)).await?;
        ctx.join_all(&users, &rooms).await?;
        Ok(Setup { rooms, users })
    }

    async fn measure(&self, ctx: &Ctx, setup: Setup, report: &mut Report) -> ApiResult<()> {
        report.param("rooms", self.rooms);
        report.param("messages_per_room", self.messages_per_room);
        report.param("trials", setup.users.len());
        first_syncs(ctx, setup, report).await;
        Ok(())
    }
}

async fn first_syncs(ctx: &Ctx, Setup { rooms, users }: Setup, report: &mut Report) {
    let errors = ErrorLog::default();
    let mut times = Vec::new();
    let (mut bytes, mut rooms_seen, mut events_seen) = (0usize, 0usize, 0usize);
    for (trial, user) in users.iter().enumerate() {
        let t = Instant::now();
        match ctx.client.sync(user, None, 0, None).await {
            Ok((v, n, received)) => {
                let d = received - t;
                times.push(d);
                bytes = n;
                let joined = v["rooms"]["join"].as_object();
                rooms_seen = joined.map(|j| j.len()).unwrap_or(0);
                events_seen = joined
                    .map(|j| {
                        j.values()
                            .map(|r| {
                                r["timeline"]["events"]
                                    .as_array()
                                    .map(Vec::len)
                                    .unwrap_or(0)
                            })
                            .sum()
                    })
                    .unwrap_or(0);
                eprintln!(
                    "  trial {trial}: initial /sync {:.1} ms, {} bytes, {rooms_seen} rooms",
                    d.as_secs_f64() * 1000.0,
                    n
                );
                if rooms_seen != rooms.len() {
                    errors.record(incomplete(&v, &user.user_id, rooms.len(), rooms_seen));
                }
            }
            Err(e) => errors.record(e),
        }
    }
    let s = summarize(&times);
    report.figure(
        "initial_sync_median_ms",
        "initial /sync (median of trials)",
        s.p50,
        "ms",
    );
    report.figure(
        "initial_sync_min_ms",
        "initial /sync (best)",
        min_ms(&times),
        "ms",
    );
    report.figure("initial_sync_max_ms", "initial /sync (worst)", s.max, "ms");
    report.count("response_bytes", "response size", bytes as u64);
    report.count("rooms_seen", "rooms in response", rooms_seen as u64);
    report.count(
        "timeline_events_seen",
        "timeline events in response",
        events_seen as u64,
    );
    report.errors = Some(errors);
}

pub fn min_ms(v: &[Duration]) -> f64 {
    v.iter()
        .min()
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn incomplete(v: &Value, user: &str, want: usize, got: usize) -> ApiError {
    let mut text = v.to_string();
    text.truncate(500);
    ApiError {
        method: "GET".into(),
        url: format!("/sync (initial, as {user})"),
        request_body: None,
        status: Some(200),
        response_body: format!("expected {want} joined rooms, got {got}: {text}"),
    }
}

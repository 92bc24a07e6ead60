//! `send`: U users in R rooms, C concurrent senders; throughput and latency
//! of `PUT /rooms/{id}/send`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Workload;
use crate::{
    client::{ApiResult, User},
    report::Report,
    setup::Ctx,
    stats::{ErrorLog, summarize},
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Users (each joins every room).
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// Rooms the messages are spread over.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Concurrent senders (sender i uses user i mod U).
    #[arg(long, default_value_t = 20)]
    pub concurrency: usize,
    /// Stop after this many messages...
    #[arg(long, default_value_t = 2000)]
    pub messages: usize,
    /// ...or after this many seconds, whichever comes first.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
}

/// Every user in every room.
#[derive(Serialize, Deserialize)]
pub struct Setup {
    users: Vec<User>,
    rooms: Vec<String>,
}

impl Workload for Args {
    type Setup = Setup;

    async fn setup(&self, ctx: &Ctx) -> ApiResult<Setup> {
        let users = ctx.register_many("send", self.users.max(1)).await?;
        let rooms = ctx.create_rooms(&users[0], self.rooms.max(1)).await?;
        ctx.join_all(&users[1..], &rooms).await?;
        Ok(Setup { users, rooms })
    }

    async fn measure(&self, ctx: &Ctx, setup: Setup, report: &mut Report) -> ApiResult<()> {
        report.param("users", setup.users.len());
        report.param("rooms", setup.rooms.len());
        report.param("concurrency", self.concurrency.max(1));
        report.param("max_messages", self.messages);
        report.param("max_duration_s", self.duration);
        send_all(ctx, self, setup, report).await;
        Ok(())
    }
}

async fn send_all(ctx: &Ctx, a: &Args, Setup { users, rooms }: Setup, report: &mut Report) {
    let conc = a.concurrency.max(1);
    let users = Arc::new(users);
    let rooms = Arc::new(rooms);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = ErrorLog::default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.duration);
    let mut tasks = Vec::new();
    for i in 0..conc {
        let (users, rooms, next, errors) =
            (users.clone(), rooms.clone(), next.clone(), errors.clone());
        let client = ctx.client.clone();
        let run = ctx.run_id.clone();
        let max = a.messages;
        tasks.push(tokio::spawn(async move {
            let user = &users[i % users.len()];
            let mut lat = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= max || Instant::now() >= deadline {
                    return lat;
                }
                let room = &rooms[n % rooms.len()];
                let content = json!({"msgtype": "m.text", "body": format!("bench message {n}")});
                let t = Instant::now();
                match client
                    .send(user, room, &format!("send-{run}-{n}"), &content)
                    .await
                {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(e) => errors.record(e),
                }
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("sender task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let s = summarize(&lat);
    report.count("sent_ok", "messages sent (ok)", lat.len() as u64);
    report.figure("elapsed_s", "measured for", elapsed, "s");
    report.figure(
        "msgs_per_s",
        "throughput",
        lat.len() as f64 / elapsed,
        "msg/s",
    );
    report.latency("send", "send latency", &s);
    report.errors = Some(errors);
}

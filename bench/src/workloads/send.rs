//! `send`: U users in R rooms, C concurrent senders; throughput and latency
//! of `PUT /rooms/{id}/send`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    client::ApiResult,
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

pub async fn run(ctx: &Ctx, a: &Args, report: &mut Report) -> ApiResult<()> {
    let users = a.users.max(1);
    let rooms_n = a.rooms.max(1);
    let conc = a.concurrency.max(1);
    report.param("users", users);
    report.param("rooms", rooms_n);
    report.param("concurrency", conc);
    report.param("max_messages", a.messages);
    report.param("max_duration_s", a.duration);

    let users = ctx.register_many("send", users).await?;
    let rooms = ctx.create_rooms(&users[0], rooms_n).await?;
    ctx.join_all(&users[1..], &rooms).await?;

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
    Ok(())
}

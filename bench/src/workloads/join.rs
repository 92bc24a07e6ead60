//! `join`: time for a new user to join a room with J members and get its
//! first `/sync`.

use std::time::Instant;

use crate::{
    client::{ApiError, ApiResult},
    report::Report,
    setup::Ctx,
    stats::{ErrorLog, summarize},
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Members of the room before the timed joins (creator included).
    #[arg(long, default_value_t = 500)]
    pub members: usize,
    /// New users timed one after another.
    #[arg(long, default_value_t = 5)]
    pub trials: usize,
}

pub async fn run(ctx: &Ctx, a: &Args, report: &mut Report) -> ApiResult<()> {
    let members = a.members.max(1);
    report.param("members", members);
    report.param("trials", a.trials);

    let users = ctx.register_many("jmember", members).await?;
    let room = ctx.create_rooms(&users[0], 1).await?.remove(0);
    ctx.join_all(&users[1..], std::slice::from_ref(&room))
        .await?;

    let errors = ErrorLog::default();
    let (mut join_t, mut sync_t, mut total_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0usize;
    for trial in 0..a.trials.max(1) {
        let user = ctx.register("jnew", trial).await?;
        let t0 = Instant::now();
        if let Err(e) = ctx.client.join(&user, &room).await {
            errors.record(e);
            continue;
        }
        let t1 = Instant::now();
        match ctx.client.sync(&user, None, 0, None).await {
            Ok((v, n)) => {
                let t2 = Instant::now();
                join_t.push(t1 - t0);
                sync_t.push(t2 - t1);
                total_t.push(t2 - t0);
                bytes = n;
                eprintln!(
                    "  trial {trial}: join {:.1} ms, first /sync {:.1} ms ({n} bytes)",
                    (t1 - t0).as_secs_f64() * 1000.0,
                    (t2 - t1).as_secs_f64() * 1000.0
                );
                if v["rooms"]["join"].get(&room).is_none() {
                    let mut text = v.to_string();
                    text.truncate(500);
                    errors.record(ApiError {
                        method: "GET".into(),
                        url: "/sync (first after join)".into(),
                        request_body: None,
                        status: Some(200),
                        response_body: format!("joined room {room} missing: {text}"),
                    });
                }
            }
            Err(e) => errors.record(e),
        }
    }
    let (j, s, t) = (summarize(&join_t), summarize(&sync_t), summarize(&total_t));
    report.figure("join_median_ms", "join (median)", j.p50, "ms");
    report.figure("first_sync_median_ms", "first /sync (median)", s.p50, "ms");
    report.figure(
        "join_plus_sync_median_ms",
        "join + first /sync (median)",
        t.p50,
        "ms",
    );
    report.figure(
        "join_plus_sync_max_ms",
        "join + first /sync (worst)",
        t.max,
        "ms",
    );
    report.count("first_sync_bytes", "first /sync size", bytes as u64);
    report.errors = Some(errors);
    Ok(())
}

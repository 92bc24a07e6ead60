//! `join`: time for a new user to join a room with J members and get its
//! first `/sync`. With `--joiners-url` the new users belong to a second
//! server, so each join is a federated one: make_join/send_join and the
//! room's whole state and auth chain sent to, checked and stored by that
//! server.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Workload;
use crate::{
    client::{ApiError, ApiResult, Client, User},
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
    /// Register the joining users on this other homeserver (loopback), which
    /// must federate with the one under test. Each leaves after its trial,
    /// so that every trial joins from a server no longer in the room.
    #[arg(long)]
    pub joiners_url: Option<String>,
}

/// Where the timed users live and how they join.
struct Joiners {
    client: Client,
    /// The room's server, for `?via=` (federated joins only).
    via: Option<String>,
}

impl Joiners {
    async fn join(&self, user: &User, room: &str) -> ApiResult<()> {
        match &self.via {
            Some(via) => self.client.join_via(user, room, via).await,
            None => self.client.join(user, room).await,
        }
    }
}

/// The room, its creator first among its members.
#[derive(Serialize, Deserialize)]
pub struct Setup {
    room: String,
    creator: User,
}

impl Workload for Args {
    type Setup = Setup;

    async fn setup(&self, ctx: &Ctx) -> ApiResult<Setup> {
        let users = ctx.register_many("jmember", self.members.max(1)).await?;
        let room = ctx.create_rooms(&users[0], 1).await?.remove(0);
        ctx.join_all(&users[1..], std::slice::from_ref(&room))
            .await?;
        let creator = users.into_iter().next().expect("at least one member");
        Ok(Setup { room, creator })
    }

    async fn measure(&self, ctx: &Ctx, setup: Setup, report: &mut Report) -> ApiResult<()> {
        report.param("members", self.members.max(1));
        report.param("trials", self.trials);
        let joiners = joiners(ctx, self, &setup.creator, report)?;
        time_joins(ctx, self, &joiners, &setup.room, report).await
    }
}

async fn time_joins(
    ctx: &Ctx,
    a: &Args,
    joiners: &Joiners,
    room: &str,
    report: &mut Report,
) -> ApiResult<()> {
    let errors = ErrorLog::default();
    let (mut join_t, mut sync_t, mut total_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0usize;
    for trial in 0..a.trials.max(1) {
        let user = joiners
            .client
            .register(&ctx.username("jnew", trial), &ctx.password)
            .await?;
        let t0 = Instant::now();
        if let Err(e) = joiners.join(&user, room).await {
            errors.record(e);
            continue;
        }
        let t1 = Instant::now();
        match joiners.client.sync(&user, None, 0, None).await {
            Ok((v, n, t2)) => {
                join_t.push(t1 - t0);
                sync_t.push(t2 - t1);
                total_t.push(t2 - t0);
                bytes = n;
                eprintln!(
                    "  trial {trial}: join {:.1} ms, first /sync {:.1} ms ({n} bytes)",
                    (t1 - t0).as_secs_f64() * 1000.0,
                    (t2 - t1).as_secs_f64() * 1000.0
                );
                if v["rooms"]["join"].get(room).is_none() {
                    errors.record(missing_room(room, &v));
                }
            }
            Err(e) => errors.record(e),
        }
        if joiners.via.is_some()
            && let Err(e) = joiners.client.leave(&user, room).await
        {
            errors.record(e);
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

fn joiners(ctx: &Ctx, a: &Args, creator: &User, report: &mut Report) -> ApiResult<Joiners> {
    let Some(url) = &a.joiners_url else {
        return Ok(Joiners {
            client: ctx.client.clone(),
            via: None,
        });
    };
    let client = Client::on_loopback(url)?;
    report.param("joiners_on", url.as_str());
    let via = creator.user_id.split_once(':').map(|(_, s)| s.to_owned());
    Ok(Joiners { client, via })
}

fn missing_room(room: &str, sync: &serde_json::Value) -> ApiError {
    let mut text = sync.to_string();
    text.truncate(500);
    ApiError {
        method: "GET".into(),
        url: "/sync (first after join)".into(),
        request_body: None,
        status: Some(200),
        response_body: format!("joined room {room} missing: {text}"),
    }
}

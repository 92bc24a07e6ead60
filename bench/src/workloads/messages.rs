//! `messages`: `/messages` back-pagination, pages per second, over a room
//! with many messages.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Workload;
use crate::{
    client::{ApiResult, User},
    report::Report,
    setup::Ctx,
    stats::{ErrorLog, summarize},
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Messages in the room.
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    #[arg(long, default_value_t = 100)]
    pub page_size: usize,
    /// Seconds of paginating (whole passes from the newest event back).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// At most this many passes.
    #[arg(long, default_value_t = 1000)]
    pub max_passes: usize,
}

/// One user's room, filled.
#[derive(Serialize, Deserialize)]
pub struct Setup {
    user: User,
    room: String,
}

impl Workload for Args {
    type Setup = Setup;

    async fn setup(&self, ctx: &Ctx) -> ApiResult<Setup> {
        let user = ctx.register("msguser", 0).await?;
        let room = ctx.create_rooms(&user, 1).await?.remove(0);
        ctx.fill_rooms(&user, std::slice::from_ref(&room), self.messages)
            .await?;
        Ok(Setup { user, room })
    }

    async fn measure(&self, ctx: &Ctx, setup: Setup, report: &mut Report) -> ApiResult<()> {
        report.param("messages", self.messages);
        report.param("page_size", self.page_size.max(1));
        report.param("max_duration_s", self.duration);
        paginate(ctx, self, setup, report).await;
        Ok(())
    }
}

async fn paginate(ctx: &Ctx, a: &Args, Setup { user, room }: Setup, report: &mut Report) {
    let page = a.page_size.max(1);
    let errors = ErrorLog::default();
    let mut lat = Vec::new();
    let mut per_pass = Vec::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.duration);
    // A pass can not need more pages than this (the room's state events included).
    let max_pages = a.messages / page + 20;
    'passes: for _ in 0..a.max_passes {
        let mut from: Option<String> = None;
        let mut msgs = 0usize;
        for _ in 0..max_pages {
            if Instant::now() >= deadline {
                break 'passes;
            }
            let t = Instant::now();
            let v = match ctx
                .client
                .messages_back(&user, &room, from.as_deref(), page)
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    errors.record(e);
                    break 'passes;
                }
            };
            lat.push(t.elapsed());
            let chunk = v["chunk"].as_array().cloned().unwrap_or_default();
            msgs += chunk
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .count();
            match v["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
                _ => break,
            }
        }
        per_pass.push(msgs);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let s = summarize(&lat);
    report.count("pages", "pages fetched", lat.len() as u64);
    report.count("passes", "complete passes", per_pass.len() as u64);
    report.figure(
        "pages_per_s",
        "pagination rate",
        lat.len() as f64 / elapsed,
        "pages/s",
    );
    report.latency("page", "page latency", &s);
    let first = per_pass.first().copied().unwrap_or(0);
    report.count(
        "messages_per_pass",
        "messages seen in one pass",
        first as u64,
    );
    if per_pass.iter().any(|&m| m != a.messages) {
        eprintln!(
            "  warning: a pass saw {per_pass:?} messages, expected {}",
            a.messages
        );
        report.count(
            "incomplete_passes",
            "passes missing messages",
            per_pass.iter().filter(|&&m| m != a.messages).count() as u64,
        );
    }
    report.errors = Some(errors);
}

//! `corvid-bench`: load benchmarks against any Matrix homeserver with open
//! registration, on loopback only.
//!
//! Each subcommand registers its own users (names carry a random per-run
//! suffix, so runs can repeat against the same server), sets up rooms, runs
//! one bounded workload, and prints a human table on stdout followed by one
//! JSON line (also appended to `--json-out` when given). Set-up and
//! measurement are both bounded: in count by the workload's parameters, in
//! time by `--max-total-secs`, after which the run stops and reports failure.
//! With `--state`, set-up and measurement can be two runs (see `state`).

mod client;
mod report;
mod setup;
mod state;
mod stats;
mod workloads;

use std::{io::Write, path::PathBuf, process::ExitCode, time::Instant};

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::{
    client::{ApiResult, Client, check_loopback},
    report::{Report, RunInfo, render},
    setup::Ctx,
    state::State,
    stats::RssSampler,
    workloads::{Phase, drive},
};

#[derive(Parser, Debug)]
#[command(
    name = "corvid-bench",
    version,
    about = "Load benchmarks for a Matrix homeserver on loopback"
)]
struct Cli {
    /// Homeserver base URL; the host must be 127.0.0.1, ::1 or localhost.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8008")]
    url: String,
    /// A name for the server under test, copied into the output.
    #[arg(long, global = true, default_value = "server")]
    label: String,
    /// The server's pid: sample its VmRSS and VmHWM from /proc during the run.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// Append the JSON line to this file as well.
    #[arg(long, global = true)]
    json_out: Option<std::path::PathBuf>,
    /// Hard limit on the whole run (set-up included), seconds.
    #[arg(long, global = true, default_value_t = 600)]
    max_total_secs: u64,
    /// Requests in flight during set-up (registration, joins, filler messages).
    #[arg(long, global = true, default_value_t = 8)]
    setup_concurrency: usize,
    /// With --setup-only, where to keep the set-up; without, the kept
    /// set-up to measure from (same workload, arguments and --url).
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    /// Only set up, into --state; measure nothing.
    #[arg(long, global = true, requires = "state")]
    setup_only: bool,
    #[command(subcommand)]
    workload: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// U users in R rooms, C concurrent senders: messages/s and send latency.
    Send(workloads::send::Args),
    /// Receivers long-poll /sync while senders send at a fixed rate:
    /// send → seen-in-sync latency, lost and duplicated messages.
    Latency(workloads::latency::Args),
    /// A user in N rooms with M messages each: time of a fresh /sync.
    InitialSync(workloads::initial_sync::Args),
    /// A new user joins a room with J members: join + first /sync time.
    Join(workloads::join::Args),
    /// /messages back-pagination rate over a room with many messages.
    Messages(workloads::messages::Args),
    /// One large file uploaded and downloaded: MiB/s each way, server RSS.
    Media(workloads::media::Args),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Send(_) => "send",
            Command::Latency(_) => "latency",
            Command::InitialSync(_) => "initial-sync",
            Command::Join(_) => "join",
            Command::Messages(_) => "messages",
            Command::Media(_) => "media",
        }
    }

    async fn run(&self, phase: Phase, ctx: &Ctx, report: &mut Report) -> ApiResult<Option<Value>> {
        match self {
            Command::Send(a) => drive(a, phase, ctx, report).await,
            Command::Latency(a) => drive(a, phase, ctx, report).await,
            Command::InitialSync(a) => drive(a, phase, ctx, report).await,
            Command::Join(a) => drive(a, phase, ctx, report).await,
            Command::Messages(a) => drive(a, phase, ctx, report).await,
            Command::Media(a) => drive(a, phase, ctx, report).await,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let base = match check_loopback(&cli.url) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("corvid-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let sampler = match cli.pid.map(RssSampler::start).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("corvid-bench: --pid: {e}");
            return ExitCode::from(2);
        }
    };
    let mut ctx = Ctx::new(Client::new(&base), cli.setup_concurrency);
    ctx.pid = cli.pid;
    let name = cli.workload.name();
    let args = format!("{:?}", cli.workload);
    let phase = match phase(&cli, name, &args, &mut ctx) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("corvid-bench: --state: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "corvid-bench {name} against {} [{}], run {}",
        cli.url, cli.label, ctx.run_id
    );

    let started = Instant::now();
    let mut report = Report::default();
    let limit = std::time::Duration::from_secs(cli.max_total_secs);
    let outcome = tokio::time::timeout(limit, cli.workload.run(phase, &ctx, &mut report)).await;
    let (kept, setup_error) = match outcome {
        Ok(Ok(kept)) => (kept, None),
        Ok(Err(e)) => {
            eprintln!("corvid-bench: request failed: {e}");
            (None, Some(e.to_json()))
        }
        Err(_) => {
            eprintln!(
                "corvid-bench: stopped after --max-total-secs={}",
                cli.max_total_secs
            );
            (
                None,
                Some(serde_json::json!({"timeout_s": cli.max_total_secs})),
            )
        }
    };
    if cli.setup_only {
        let (Some(setup), Some(path)) = (kept, cli.state.as_deref()) else {
            return ExitCode::FAILURE;
        };
        let state = State {
            workload: name.to_owned(),
            args,
            url: cli.url.clone(),
            run_id: ctx.run_id.clone(),
            password: ctx.password.clone(),
            setup,
        };
        return keep(&state, path, started);
    }
    let rss = match sampler {
        Some(s) => Some(s.finish().await),
        None => None,
    };
    let info = RunInfo {
        workload: name,
        label: &cli.label,
        url: &cli.url,
        run_id: &ctx.run_id,
        elapsed_s: started.elapsed().as_secs_f64(),
        rss,
        setup_error,
    };
    let (table, line) = render(&info, &report);
    print!("{table}");
    println!("{line}");
    if let Some(path) = &cli.json_out {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            eprintln!("corvid-bench: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if info.setup_error.is_some() || rss.is_some_and(|(_, r)| r.vanished) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What this run does, from `--state` and `--setup-only`. Measuring from a
/// kept set-up takes on its run's identity.
fn phase(cli: &Cli, name: &str, args: &str, ctx: &mut Ctx) -> Result<Phase, String> {
    match (&cli.state, cli.setup_only) {
        (None, _) => Ok(Phase::Whole),
        (Some(_), true) => Ok(Phase::SetupOnly),
        (Some(path), false) => {
            let state = State::read(path)?;
            state.check(name, args, &cli.url)?;
            ctx.run_id = state.run_id;
            ctx.password = state.password;
            Ok(Phase::Measure(state.setup))
        }
    }
}

/// Writes the set-up's state to `path`.
fn keep(state: &State, path: &std::path::Path, started: Instant) -> ExitCode {
    match state.write(path) {
        Ok(()) => {
            eprintln!(
                "corvid-bench {}: set up in {:.1} s, kept in {}",
                state.workload,
                started.elapsed().as_secs_f64(),
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("corvid-bench: {e}");
            ExitCode::from(2)
        }
    }
}

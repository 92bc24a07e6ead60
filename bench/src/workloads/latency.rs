//! `latency`: receivers long-poll `/sync` while senders send at a fixed rate;
//! send-start → seen-in-sync latency, and every message must arrive exactly
//! once at every receiver. With `--receivers-url` the receivers are users of
//! a second server that join the room over federation: the latency is then
//! send → federation transaction → seen in the other server's `/sync`.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::Workload;
use crate::{
    client::{ApiError, ApiResult, Client, User},
    report::Report,
    setup::Ctx,
    stats::{ErrorLog, summarize},
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Users long-polling /sync.
    #[arg(long, default_value_t = 4)]
    pub receivers: usize,
    /// Users sending (round-robin).
    #[arg(long, default_value_t = 2)]
    pub senders: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 15.0)]
    pub duration: f64,
    /// Seconds to wait after the last send for stragglers.
    #[arg(long, default_value_t = 10.0)]
    pub grace: f64,
    /// Long-poll timeout of each /sync, ms.
    #[arg(long, default_value_t = 5000)]
    pub sync_timeout_ms: u64,
    /// Register the receivers on this other homeserver (loopback), which
    /// must federate with the one under test.
    #[arg(long)]
    pub receivers_url: Option<String>,
    /// Also write one JSON line per message to this file: when it was sent
    /// (ms into the run), how long its send took and when each receiver saw
    /// it, to place slow messages in time.
    #[arg(long)]
    pub samples: Option<std::path::PathBuf>,
}

/// Per receiver: seq → times it was seen.
type Seen = Arc<Mutex<HashMap<u64, Vec<Instant>>>>;

fn sync_filter() -> Value {
    // A generous timeline limit: a gap must never hide a message from us.
    json!({"room": {"timeline": {"limit": 1000}}})
}

/// The room, with its senders and its receivers joined.
#[derive(Serialize, Deserialize)]
pub struct Setup {
    room: String,
    senders: Vec<User>,
    receivers: Vec<User>,
}

impl Workload for Args {
    type Setup = Setup;

    async fn setup(&self, ctx: &Ctx) -> ApiResult<Setup> {
        let senders = ctx.register_many("lsend", self.senders.max(1)).await?;
        let room = ctx.create_rooms(&senders[0], 1).await?.remove(0);
        ctx.join_all(&senders[1..], std::slice::from_ref(&room))
            .await?;
        let nrecv = self.receivers.max(1);
        let receivers = match &self.receivers_url {
            None => {
                let receivers = ctx.register_many("lrecv", nrecv).await?;
                ctx.join_all(&receivers, std::slice::from_ref(&room))
                    .await?;
                receivers
            }
            Some(url) => {
                let remote = Client::on_loopback(url)?;
                let origin = senders[0].user_id.split_once(':').map_or("", |(_, s)| s);
                let mut receivers = Vec::with_capacity(nrecv);
                for i in 0..nrecv {
                    let user = remote
                        .register(&ctx.username("lrecv", i), &ctx.password)
                        .await?;
                    remote.join_via(&user, &room, origin).await?;
                    receivers.push(user);
                }
                receivers
            }
        };
        Ok(Setup {
            room,
            senders,
            receivers,
        })
    }

    async fn measure(&self, ctx: &Ctx, setup: Setup, report: &mut Report) -> ApiResult<()> {
        let total = (self.rate * self.duration).round().max(1.0) as u64;
        report.param("receivers", setup.receivers.len());
        report.param("senders", setup.senders.len());
        report.param("rate_per_s", self.rate);
        report.param("duration_s", self.duration);
        report.param("messages", total);
        let receiving = match &self.receivers_url {
            None => ctx.client.clone(),
            Some(url) => {
                report.param("receivers_on", url.as_str());
                Client::on_loopback(url)?
            }
        };
        probe(ctx, self, setup, &receiving, total, report).await
    }
}

/// Sends `total` tagged messages at the set rate and follows each receiver's
/// `/sync` until all have arrived or the grace period is over.
async fn probe(
    ctx: &Ctx,
    a: &Args,
    Setup {
        room,
        senders,
        receivers,
    }: Setup,
    receiving: &Client,
    total: u64,
    report: &mut Report,
) -> ApiResult<()> {
    let filter = sync_filter();
    let errors = ErrorLog::default();
    let stop = Arc::new(AtomicBool::new(false));
    let limited = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut seen_maps = Vec::new();
    let mut recv_tasks = Vec::new();
    for r in &receivers {
        // Start from "now": an initial sync gives the token.
        let (v, _, _) = receiving.sync(r, None, 0, Some(&filter)).await?;
        let since = v["next_batch"].as_str().unwrap_or_default().to_owned();
        let seen: Seen = Arc::default();
        seen_maps.push(seen.clone());
        recv_tasks.push(tokio::spawn(receive(
            receiving.clone(),
            r.clone(),
            since,
            ctx.run_id.clone(),
            a.sync_timeout_ms,
            seen,
            stop.clone(),
            limited.clone(),
            errors.clone(),
        )));
    }

    // Send at a fixed rate; each send is its own task so a slow one does not
    // delay the schedule (bounded by the semaphore).
    let starts: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let ok: Arc<Mutex<Vec<u64>>> = Arc::default();
    let send_lat: Arc<Mutex<HashMap<u64, Duration>>> = Arc::default();
    let inflight = Arc::new(Semaphore::new(256));
    let period = Duration::from_secs_f64(1.0 / a.rate.max(0.001));
    let mut tick = tokio::time::interval(period);
    let send_start = Instant::now();
    let send_deadline = send_start + Duration::from_secs_f64(a.duration + 5.0);
    let mut send_tasks = Vec::new();
    for seq in 0..total {
        tick.tick().await;
        if Instant::now() >= send_deadline {
            break;
        }
        let permit = inflight.clone().acquire_owned().await.expect("semaphore");
        let sender = senders[(seq as usize) % senders.len()].clone();
        let (client, room, run) = (ctx.client.clone(), room.clone(), ctx.run_id.clone());
        let (starts, ok, send_lat, errors) =
            (starts.clone(), ok.clone(), send_lat.clone(), errors.clone());
        send_tasks.push(tokio::spawn(async move {
            let content = json!({
                "msgtype": "m.text",
                "body": format!("latency probe {seq}"),
                "corvid_bench": {"run": run, "seq": seq},
            });
            let t = Instant::now();
            starts.lock().expect("lock").insert(seq, t);
            match client
                .send(&sender, &room, &format!("lat-{run}-{seq}"), &content)
                .await
            {
                Ok(_) => {
                    send_lat.lock().expect("lock").insert(seq, t.elapsed());
                    ok.lock().expect("lock").push(seq);
                }
                Err(e) => errors.record(e),
            }
            drop(permit);
        }));
    }
    for t in send_tasks {
        let _ = t.await;
    }
    let sending_s = send_start.elapsed().as_secs_f64();
    let ok: Vec<u64> = ok.lock().expect("lock").clone();
    let send_lat = std::mem::take(&mut *send_lat.lock().expect("lock"));

    // Wait for stragglers, then stop the receivers.
    let grace_end = Instant::now() + Duration::from_secs_f64(a.grace);
    while Instant::now() < grace_end {
        let all = seen_maps.iter().all(|m| {
            let m = m.lock().expect("lock");
            ok.iter().all(|s| m.contains_key(s))
        });
        if all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One more beat so that a duplicate delivered right after the last
    // message can still be counted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in recv_tasks {
        t.abort();
        let _ = t.await;
    }

    let starts = starts.lock().expect("lock").clone();
    let mut lat = Vec::new();
    let mut last_delivery = send_start;
    let (mut lost, mut dup, mut unexpected) = (0u64, 0u64, 0u64);
    for m in &seen_maps {
        let m = m.lock().expect("lock");
        for s in &ok {
            match m.get(s) {
                None => lost += 1,
                Some(times) => {
                    lat.push(times[0].saturating_duration_since(starts[s]));
                    last_delivery = last_delivery.max(times[0]);
                    dup += times.len() as u64 - 1;
                }
            }
        }
        // Seen but never acknowledged as sent (e.g. the send errored after persisting).
        unexpected += m.keys().filter(|s| !ok.contains(s)).count() as u64;
    }
    if let Some(path) = &a.samples {
        let times = SendTimes {
            origin: send_start,
            starts: &starts,
            send_lat: &send_lat,
        };
        write_samples(path, &ok, &times, &seen_maps)
            .map_err(|e| ApiError::local("--samples", format!("{}: {e}", path.display())))?;
    }
    let s = summarize(&lat);
    report.count("sent_ok", "messages sent (ok)", ok.len() as u64);
    report.figure(
        "send_rate_achieved",
        "send rate achieved",
        ok.len() as f64 / sending_s,
        "msg/s",
    );
    // Above the receiving side's capacity this falls behind the send rate.
    report.figure(
        "delivery_rate",
        "delivered to every receiver",
        ok.len() as f64 / (last_delivery - send_start).as_secs_f64().max(1e-3),
        "msg/s",
    );
    report.latency("e2e", "send-start -> seen in /sync", &s);
    report.latency(
        "send",
        "send request latency",
        &summarize(&send_lat.values().copied().collect::<Vec<_>>()),
    );
    report.count("lost", "lost (sent ok, never seen)", lost);
    report.count("duplicated", "duplicated deliveries", dup);
    report.count("seen_not_acked", "seen but send failed", unexpected);
    report.count(
        "limited_syncs",
        "incremental syncs with limited=true",
        limited.load(Ordering::Relaxed),
    );
    report.errors = Some(errors);
    Ok(())
}

/// When the messages were sent, and how long each send took.
struct SendTimes<'a> {
    origin: Instant,
    starts: &'a HashMap<u64, Instant>,
    send_lat: &'a HashMap<u64, Duration>,
}

/// One JSON line per message sent: `seq`, `sent_at_ms` (since the first
/// send), `send_ms`, and `seen_ms` (per receiver, null if never seen).
fn write_samples(
    path: &std::path::Path,
    ok: &[u64],
    times: &SendTimes<'_>,
    seen_maps: &[Seen],
) -> std::io::Result<()> {
    use std::io::Write as _;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for seq in ok {
        let start = times.starts[seq];
        let seen: Vec<Option<f64>> = seen_maps
            .iter()
            .map(|m| {
                let m = m.lock().expect("lock");
                m.get(seq)
                    .map(|t| ms(t[0].saturating_duration_since(start)))
            })
            .collect();
        let line = json!({
            "seq": seq,
            "sent_at_ms": ms(start.saturating_duration_since(times.origin)),
            "send_ms": times.send_lat.get(seq).copied().map(ms),
            "seen_ms": seen,
        });
        writeln!(out, "{line}")?;
    }
    out.flush()
}

#[allow(clippy::too_many_arguments)] // one receiver task's shared counters and settings
async fn receive(
    client: Client,
    user: User,
    mut since: String,
    run: String,
    timeout_ms: u64,
    seen: Seen,
    stop: Arc<AtomicBool>,
    limited: Arc<std::sync::atomic::AtomicU64>,
    errors: ErrorLog,
) {
    let filter = sync_filter();
    // Bounded: stops on the flag (the task is also aborted) and never loops
    // faster than the server answers; after an error it backs off briefly.
    while !stop.load(Ordering::Relaxed) {
        match client
            .sync(&user, Some(&since), timeout_ms, Some(&filter))
            .await
        {
            Ok((v, _, now)) => {
                if let Some(rooms) = v["rooms"]["join"].as_object() {
                    for room in rooms.values() {
                        if room["timeline"]["limited"].as_bool() == Some(true) {
                            limited.fetch_add(1, Ordering::Relaxed);
                        }
                        for ev in room["timeline"]["events"].as_array().into_iter().flatten() {
                            let tag = &ev["content"]["corvid_bench"];
                            if tag["run"].as_str() == Some(run.as_str())
                                && let Some(seq) = tag["seq"].as_u64()
                            {
                                seen.lock().expect("lock").entry(seq).or_default().push(now);
                            }
                        }
                    }
                }
                match v["next_batch"].as_str() {
                    Some(nb) => since = nb.to_owned(),
                    None => {
                        errors.record(ApiError {
                            method: "GET".into(),
                            url: "/sync".into(),
                            request_body: None,
                            status: Some(200),
                            response_body: "no next_batch in /sync response".into(),
                        });
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            Err(e) => {
                errors.record(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_hold_a_line_per_message_with_each_receivers_delay() {
        let origin = Instant::now();
        let at = |ms: u64| origin + Duration::from_millis(ms);
        let starts = HashMap::from([(0, at(0)), (1, at(50))]);
        let send_lat =
            HashMap::from([(0, Duration::from_millis(2)), (1, Duration::from_millis(3))]);
        let first: Seen = Arc::new(Mutex::new(HashMap::from([
            (0, vec![at(4)]),
            (1, vec![at(55), at(60)]),
        ])));
        let second: Seen = Arc::new(Mutex::new(HashMap::from([(0, vec![at(6)])])));
        let path =
            std::env::temp_dir().join(format!("corvid-bench-samples-{}", std::process::id()));
        let times = SendTimes {
            origin,
            starts: &starts,
            send_lat: &send_lat,
        };
        write_samples(&path, &[0, 1], &times, &[first, second]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["seen_ms"], json!([4.0, 6.0]));
        assert_eq!(lines[1]["sent_at_ms"], json!(50.0));
        assert_eq!(lines[1]["send_ms"], json!(3.0));
        // The first sighting counts; a receiver that never saw it is null.
        assert_eq!(lines[1]["seen_ms"], json!([5.0, null]));
    }
}

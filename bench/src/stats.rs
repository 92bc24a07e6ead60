//! Percentiles, error tally, and the server-memory sampler.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};

use crate::client::ApiError;

/// Latency summary in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

pub fn summarize(samples: &[Duration]) -> Summary {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    summarize_ms(&mut ms)
}

pub fn summarize_ms(ms: &mut [f64]) -> Summary {
    if ms.is_empty() {
        return Summary::default();
    }
    ms.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let pick = |p: f64| {
        let rank = ((p / 100.0) * ms.len() as f64).ceil() as usize;
        ms[rank.clamp(1, ms.len()) - 1]
    };
    Summary {
        n: ms.len(),
        p50: pick(50.0),
        p90: pick(90.0),
        p99: pick(99.0),
        max: ms[ms.len() - 1],
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
    }
}

impl Summary {
    /// JSON fields `<prefix>_p50_ms` etc.
    pub fn insert_json(&self, out: &mut serde_json::Map<String, Value>, prefix: &str) {
        for (name, v) in [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("max", self.max),
            ("mean", self.mean),
        ] {
            out.insert(format!("{prefix}_{name}_ms"), json!(round3(v)));
        }
    }
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Errors seen during a measured phase: a count, and the first few verbatim.
#[derive(Clone, Default)]
pub struct ErrorLog(Arc<Mutex<(u64, Vec<ApiError>)>>);

impl ErrorLog {
    pub fn record(&self, e: ApiError) {
        let mut g = self.0.lock().expect("lock");
        g.0 += 1;
        if g.1.len() < 5 {
            eprintln!("error: {e}");
            g.1.push(e);
        }
    }

    pub fn count(&self) -> u64 {
        self.0.lock().expect("lock").0
    }

    pub fn first(&self) -> Vec<ApiError> {
        self.0.lock().expect("lock").1.clone()
    }
}

/// Samples `/proc/<pid>/status` (VmRSS and VmHWM) every 50 ms.
pub struct RssSampler {
    pid: u32,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<RssResult>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RssResult {
    /// Largest VmRSS seen while sampling, KiB.
    pub max_rss_kib: u64,
    /// VmHWM (peak since the process started) at the last sample, KiB.
    pub hwm_kib: u64,
    /// VmRSS at the last sample, KiB.
    pub last_rss_kib: u64,
    pub samples: u64,
    /// CPU seconds the server used while we sampled.
    pub cpu_s: f64,
    /// The process disappeared while we sampled (crash or exit).
    pub vanished: bool,
}

/// CPU time (user + system) of a process so far, seconds; `None` once it is gone.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at
    // field 3; utime and stime are fields 14 and 15 (proc(5)).
    let rest: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux architecture we run on.
    Some(ticks / 100.0)
}

pub fn read_status(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

impl RssSampler {
    pub fn start(pid: u32) -> Result<Self, String> {
        if read_status(pid).is_none() {
            return Err(format!("cannot read VmRSS/VmHWM from /proc/{pid}/status"));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let cpu_start = cpu_seconds(&pid.to_string()).unwrap_or(0.0);
        let task = tokio::spawn(async move {
            let mut r = RssResult::default();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                match read_status(pid) {
                    Some((rss, hwm)) => {
                        r.max_rss_kib = r.max_rss_kib.max(rss);
                        r.hwm_kib = hwm;
                        r.last_rss_kib = rss;
                        r.samples += 1;
                    }
                    None => {
                        r.vanished = true;
                        return r;
                    }
                }
                if let Some(cpu) = cpu_seconds(&pid.to_string()) {
                    r.cpu_s = cpu - cpu_start;
                }
                if flag.load(Ordering::Relaxed) {
                    return r;
                }
            }
        });
        Ok(Self { pid, stop, task })
    }

    pub async fn finish(self) -> (u32, RssResult) {
        self.stop.store(true, Ordering::Relaxed);
        let r = self.task.await.unwrap_or_default();
        (self.pid, r)
    }
}

//! A workload's result: a human table and one JSON line.

use serde_json::{Map, Value, json};

use crate::stats::{ErrorLog, RssResult, Summary, round3};

#[derive(Default)]
pub struct Report {
    pub params: Map<String, Value>,
    pub results: Map<String, Value>,
    /// (figure, value as shown) in display order.
    pub rows: Vec<(String, String)>,
    pub errors: Option<ErrorLog>,
}

impl Report {
    pub fn param(&mut self, k: &str, v: impl Into<Value>) {
        self.params.insert(k.into(), v.into());
    }

    /// A figure both in the table and in the JSON line.
    pub fn figure(&mut self, key: &str, label: &str, v: f64, unit: &str) {
        self.results.insert(key.into(), json!(round3(v)));
        let shown = if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{v:.0}")
        } else if v >= 100.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.3}")
        };
        self.rows
            .push((label.into(), format!("{shown} {unit}").trim().into()));
    }

    pub fn count(&mut self, key: &str, label: &str, v: u64) {
        self.results.insert(key.into(), json!(v));
        self.rows.push((label.into(), v.to_string()));
    }

    /// p50/p90/p99/max rows for one latency distribution.
    pub fn latency(&mut self, key: &str, label: &str, s: &Summary) {
        s.insert_json(&mut self.results, key);
        self.results.insert(format!("{key}_n"), json!(s.n));
        self.rows.push((
            format!("{label} p50 / p90 / p99 / max"),
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2} ms  (n={})",
                s.p50, s.p90, s.p99, s.max, s.n
            ),
        ));
    }
}

pub struct RunInfo<'a> {
    pub workload: &'a str,
    pub label: &'a str,
    pub url: &'a str,
    pub run_id: &'a str,
    pub elapsed_s: f64,
    pub rss: Option<(u32, RssResult)>,
    pub setup_error: Option<Value>,
}

pub fn render(info: &RunInfo, report: &Report) -> (String, String) {
    let mut rows = report.rows.clone();
    if let Some((pid, r)) = info.rss {
        rows.push((
            format!("server RSS (pid {pid}) peak sampled / VmHWM"),
            format!(
                "{:.1} / {:.1} MiB{}",
                r.max_rss_kib as f64 / 1024.0,
                r.hwm_kib as f64 / 1024.0,
                if r.vanished {
                    "  (PROCESS VANISHED)"
                } else {
                    ""
                }
            ),
        ));
        rows.push(("server CPU time".into(), format!("{:.2} s", r.cpu_s)));
    }
    let bench_cpu = crate::stats::cpu_seconds("self").unwrap_or(0.0);
    rows.push((
        "load generator CPU time".into(),
        format!("{bench_cpu:.2} s"),
    ));
    let errors = report.errors.as_ref().map(|e| e.count()).unwrap_or(0);
    rows.push(("errors during measurement".into(), errors.to_string()));
    rows.push(("wall time".into(), format!("{:.1} s", info.elapsed_s)));

    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut table = format!(
        "== {} @ {} [{}] run {}\n",
        info.workload, info.url, info.label, info.run_id
    );
    if !report.params.is_empty() {
        let p: Vec<String> = report
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        table.push_str(&format!("   params: {}\n", p.join(" ")));
    }
    for (k, v) in &rows {
        table.push_str(&format!("   {k:<w$}  {v}\n"));
    }
    if let Some(e) = &info.setup_error {
        table.push_str(&format!("   SETUP FAILED: {e}\n"));
    }

    let mut j = json!({
        "bench": "corvid-bench",
        "workload": info.workload,
        "label": info.label,
        "url": info.url,
        "run_id": info.run_id,
        "params": report.params,
        "results": report.results,
        "errors": errors,
        "first_errors": report.errors.as_ref().map(|e| e.first().iter().map(|x| x.to_json()).collect::<Vec<_>>()).unwrap_or_default(),
        "elapsed_s": round3(info.elapsed_s),
        "bench_cpu_s": round3(bench_cpu),
        "ok": info.setup_error.is_none(),
    });
    if let Some(e) = &info.setup_error {
        j["setup_error"] = e.clone();
    }
    if let Some((pid, r)) = info.rss {
        j["rss"] = json!({
            "pid": pid,
            "max_rss_kib": r.max_rss_kib,
            "hwm_kib": r.hwm_kib,
            "last_rss_kib": r.last_rss_kib,
            "samples": r.samples,
            "cpu_s": round3(r.cpu_s),
            "vanished": r.vanished,
        });
    }
    (table, j.to_string())
}

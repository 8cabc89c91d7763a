//! What the end-to-end sections share: the benchmark plugin's manifest
//! entry, a host on it, arming triggers through the library, and reading
//! the hosts' `dispatch` lines (counts, lateness, rate).

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use symphony_host::repo::TriggerRepo;

use crate::support::{Backend, Host, plugin_entry_with};

/// A manifest entry for the Rust benchmark plugin, serving tenant `bench`.
pub(crate) fn poly_entry(extra: &str) -> String {
    plugin_entry_with(
        "poly",
        "poly",
        &["poly_"],
        &format!("tenants = [\"bench\"]\ncapabilities = [\"generic\"]\n{extra}"),
    )
}

/// Starts a host on the benchmark plugin.
pub(crate) fn start_host(redis: &impl Backend) -> Host {
    let runtime = std::env::var("BENCH_RUNTIME").unwrap_or_default();
    Host::start_with(redis, &poly_entry(""), &runtime)
}

/// Whether `e` is an ok dispatch of a benchmark trigger whose id starts with `run`.
fn is_run(e: &Value, run: &str) -> bool {
    e["event"] == "dispatch"
        && e["outcome"] == "ok"
        && e["id"].as_str().is_some_and(|id| id.starts_with(run))
}

/// Counts ok dispatches of `run` in the hosts' log lines past `scanned`
/// (per host), and moves `scanned` on: the bench stays light while it waits.
fn count_new(hosts: &[Host], run: &str, scanned: &mut [usize]) -> usize {
    let found = Cell::new(0);
    for (h, from) in hosts.iter().zip(scanned.iter_mut()) {
        let index = Cell::new(0);
        h.events(|e| {
            let i = index.get();
            index.set(i + 1);
            if i >= *from && is_run(e, run) {
                found.set(found.get() + 1);
            }
            false
        });
        *from = index.get();
    }
    found.get()
}

/// Waits (bounded) until the hosts logged `n` ok dispatches of `run`.
pub(crate) fn wait_count(hosts: &[Host], run: &str, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut scanned = vec![0; hosts.len()];
    let mut seen = 0;
    loop {
        seen += count_new(hosts, run, &mut scanned);
        if seen >= n {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!("only {seen} of {n} {run} triggers ran within {timeout:?}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lateness and rate of a run, from the dispatch lines.
pub(crate) struct RunFigures {
    /// Ok dispatches seen.
    pub(crate) ran: usize,
    /// Distinct ids among them.
    pub(crate) distinct: usize,
    /// Ids that ran more than once, sorted.
    pub(crate) twice: Vec<String>,
    /// Due time to start (`late_us`), sorted.
    pub(crate) late_ms: Vec<f64>,
    /// The host's time per job (`duration_us`), sorted.
    pub(crate) took_us: Vec<u64>,
    /// First start to last start.
    pub(crate) start_span_ms: f64,
    /// First due time to the last job's end.
    pub(crate) finish_ms: f64,
}

/// The figures of `run` from the hosts' dispatch lines.
pub(crate) fn figures(hosts: &[Host], run: &str) -> RunFigures {
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut late_ms = Vec::new();
    let mut took_us = Vec::new();
    let (mut first_due, mut first_start, mut last_start, mut last_end) =
        (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for h in hosts {
        for e in h.events(|e| is_run(e, run)) {
            *ids.entry(e["id"].as_str().unwrap().to_owned()).or_default() += 1;
            let due = e["due_ms"].as_f64().unwrap();
            let late = e["late_us"].as_f64().unwrap() / 1000.0;
            let took = e["duration_us"].as_f64().unwrap() / 1000.0;
            late_ms.push(late);
            took_us.push(e["duration_us"].as_u64().unwrap());
            first_due = first_due.min(due);
            first_start = first_start.min(due + late);
            last_start = last_start.max(due + late);
            last_end = last_end.max(due + late + took);
        }
    }
    late_ms.sort_by(f64::total_cmp);
    took_us.sort_unstable();
    let mut twice: Vec<String> = ids
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id.clone())
        .collect();
    twice.sort();
    RunFigures {
        twice,
        took_us,
        ran: late_ms.len(),
        distinct: ids.len(),
        late_ms,
        start_span_ms: last_start - first_start,
        finish_ms: last_end - first_due,
    }
}

/// Arms `n` triggers of `run` due evenly over `spread` from `first_due`
/// (an instant of this process), in batches through the library.
pub(crate) async fn arm_spread(
    repo: &TriggerRepo,
    run: &str,
    n: usize,
    first_due: Instant,
    spread: Duration,
) {
    let mut i = 0;
    while i < n {
        let end = (i + 1000).min(n);
        let now = Instant::now();
        let batch: Vec<(&str, String, Duration)> = (i..end)
            .map(|k| {
                let due = first_due + spread.mul_f64(k as f64 / n as f64);
                let ttl = due
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1));
                ("poly_write", format!("{run}{k}"), ttl)
            })
            .collect();
        repo.set_many(&batch).await.unwrap();
        i = end;
    }
}

//! Section 4b, `library`: the burst and both steady loads on
//! symphony-host, each followed by the same workload on the Python library
//! we replace (`mimeiapify` 1.4.3, from the compatibility test's venv,
//! driven by `bench/mimeiapify_bench.py`: `RedisTrigger.set` and
//! `run_expiry_listener`, a handler making the same one write), each on a
//! private redis-server, and the two side by side.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::NamedTempFile;

use crate::common::{Measured, Report, Sizes, quantile};
use crate::measure::redis_cpu_secs;
use crate::support::{RedisServer, root, run_ok};
use crate::{burst, steady};

/// The listener process, killed if the bench stops early.
struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One workload on both: symphony-host's figures and the library's.
struct Comparison {
    /// The workload's name in the table.
    workload: &'static str,
    /// symphony-host's figures.
    ours: Measured,
    /// The library's figures.
    theirs: Measured,
}

/// The venv's python with `mimeiapify==1.4.3` (made once by
/// `scripts/python-venv.sh`, as for the compatibility test).
fn library_python() -> String {
    run_ok(Command::new("bash").arg(root().join("scripts/python-venv.sh")))
        .trim()
        .to_owned()
}

/// Unix time in seconds, by this machine's clock.
fn unix_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The last 30 lines of the listener's log at `path`.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Runs the library's listener (`bench/mimeiapify_bench.py listen`) on
/// `redis`, then `arm` (the script's `burst` or `steady` mode, given the
/// rest of its arguments), and reads what both measured. A burst is due
/// `burst_lead` seconds after the listener is ready (its first due time,
/// Unix s, is appended to `arm`): Redis's CPU is counted from then. (Timed
/// from before the listener started, two Python start-ups once took the
/// whole lead.)
fn library_run(
    python: &str,
    redis: &RedisServer,
    n: usize,
    handler: &str,
    arm: &[String],
    burst_lead: Option<f64>,
) -> Measured {
    let script = root().join("bench/mimeiapify_bench.py");
    // The library logs a traceback for every failed write: kept out of the
    // tables, in a file shown if the listener fails.
    let log = NamedTempFile::new().unwrap();
    let mut listener = start_listener(python, &script, redis, n, handler, &log);
    let mut out = BufReader::new(listener.0.stdout.take().unwrap());
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    assert_eq!(
        ready.trim(),
        "ready",
        "the library's listener did not start:\n{}",
        log_tail(log.path())
    );
    let (armed, redis_before) = arm_library(python, &script, redis, arm, burst_lead);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(
        listener.0.wait().unwrap().success(),
        "the library's listener failed:\n{}",
        log_tail(log.path())
    );
    let redis_cpu_us = (redis_cpu_secs(redis) - redis_before) * 1e6 / n as f64;
    let ran: Value = serde_json::from_str(rest.trim()).unwrap();
    measured_from(n, &armed, &ran, redis_cpu_us)
}

/// Starts the library's listener for `n` triggers with `handler`, its
/// output piped and its log written to `log`.
fn start_listener(
    python: &str,
    script: &Path,
    redis: &RedisServer,
    n: usize,
    handler: &str,
    log: &NamedTempFile,
) -> Listener {
    Listener(
        Command::new(python)
            .arg(script)
            .args(["listen", &redis.url(), &n.to_string(), "10", handler])
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("cannot start the library's listener"),
    )
}

/// Arms the workload with the script's `arm` mode; a burst's first due
/// time (`burst_lead` s from now) is appended, and the bench waits until
/// then. Returns what the script armed and redis-server's CPU seconds
/// when the workload starts (for a steady load, before arming).
fn arm_library(
    python: &str,
    script: &Path,
    redis: &RedisServer,
    arm: &[String],
    burst_lead: Option<f64>,
) -> (Value, f64) {
    let first_due = burst_lead.map(|lead| unix_secs() + lead);
    let mut arm = arm.to_vec();
    arm.extend(first_due.map(|at| format!("{at:.3}")));
    let mut redis_before = redis_cpu_secs(redis);
    let armed: Value =
        serde_json::from_str(&run_ok(Command::new(python).arg(script).args(&arm))).unwrap();
    if let Some(at) = first_due {
        let armed_by = armed["armed_by"].as_f64().unwrap();
        assert!(
            armed_by < at,
            "the library armed the burst {:.1} s after its first due time; raise the margin",
            armed_by - at
        );
        std::thread::sleep(Duration::from_secs_f64((at - unix_secs()).max(0.0)));
        redis_before = redis_cpu_secs(redis);
    }
    (armed, redis_before)
}

/// What the library's run measured, from the script's `armed` (due times)
/// and the listener's `ran` (start times, failed writes, CPU).
fn measured_from(n: usize, armed: &Value, ran: &Value, redis_cpu_us: f64) -> Measured {
    let due = armed["due"].as_object().unwrap();
    let starts = ran["starts"].as_object().unwrap();
    let mut late_ms = Vec::new();
    let (mut first, mut last) = (f64::MAX, f64::MIN);
    for (id, times) in starts {
        let due = due[id].as_f64().unwrap();
        for t in times.as_array().unwrap() {
            let t = t.as_f64().unwrap();
            late_ms.push((t - due) * 1000.0);
            first = first.min(t);
            last = last.max(t);
        }
    }
    late_ms.sort_by(f64::total_cmp);
    let failed_writes = ran["failed"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap() as usize)
        .sum();
    if failed_writes > 0 {
        println!("The library's failed writes, by error: {}\n", ran["failed"]);
    }
    Measured {
        expected: n,
        ran: late_ms.len(),
        distinct: starts.len(),
        rate: late_ms.len() as f64 / (last - first).max(0.001),
        late_ms,
        cpu_us: ran["cpu_secs"].as_f64().unwrap() * 1e6 / n as f64,
        redis_cpu_us,
        failed_writes,
    }
}

/// Section `library`: each workload on symphony-host, then right after on
/// the Python library we replace (`mimeiapify` 1.4.3: `RedisTrigger.set`
/// and `run_expiry_listener`, a handler making the same one write), each on
/// a private redis-server, and the two side by side.
pub(crate) fn run(sizes: Sizes, report: &mut Report) {
    println!("## 4b. Against the Python library (mimeiapify 1.4.3), in the same run\n");
    let python = library_python();
    let n = sizes.burst;
    let ours = burst::run(sizes, 1, report);
    // The library's burst with the same one write, then with a handler that
    // does nothing (what the library costs at best).
    let theirs = library_burst(&python, n, "write");
    let noop = library_burst(&python, n, "noop");
    let ours_rate = ours.rate;
    let mut rows = vec![Comparison {
        workload: "burst",
        ours,
        theirs,
    }];
    for rate in [200, 5000] {
        rows.push(steady_row(sizes, &python, rate, report));
    }
    print_side_by_side(&rows);
    check_against_library(&rows, &noop, ours_rate, report);
}

/// The library's burst of `n` on a redis-server of its own, `handler` in
/// its listener.
fn library_burst(python: &str, n: usize, handler: &str) -> Measured {
    println!("### The library: {n} triggers due within 1 s, handler `{handler}`\n");
    let redis = RedisServer::start();
    // `RedisTrigger.set` (a PING and a SETEX each, 32 at a time) arms
    // about 4000 a second here; the TTL is whole seconds.
    let lead = n as f64 / 2000.0 + 3.0;
    library_run(
        python,
        &redis,
        n,
        handler,
        &["burst".into(), redis.url(), n.to_string()],
        Some(lead),
    )
}

/// The steady load of `rate` a second on symphony-host, then on the
/// library.
fn steady_row(sizes: Sizes, python: &str, rate: usize, report: &mut Report) -> Comparison {
    let ours = steady::run(sizes, rate, report);
    println!("### The library: {rate}/s\n");
    let redis = RedisServer::start();
    let secs = sizes.steady_secs as usize;
    let theirs = library_run(
        python,
        &redis,
        rate * secs,
        "write",
        &[
            "steady".into(),
            redis.url(),
            rate.to_string(),
            secs.to_string(),
        ],
        None,
    );
    Comparison {
        workload: if rate == 200 {
            "steady 200/s"
        } else {
            "steady 5000/s"
        },
        ours,
        theirs,
    }
}

/// `a / b` to two places, or `-` when either is not a number.
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// CPU per job in µs, or `-` when not measured.
fn cpu(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0} µs")
    } else {
        "-".into()
    }
}

/// The side-by-side table of every workload.
fn print_side_by_side(rows: &[Comparison]) {
    println!("### Side by side\n");
    println!(
        "Lateness is due time to handler start. The library's due time is the \
         arming time plus its whole-second TTL; its CPU is its listener \
         process's.\n"
    );
    println!("| workload | figure | symphony-host | mimeiapify 1.4.3 | ratio (ours / theirs) |");
    println!("| --- | --- | --- | --- | --- |");
    for row in rows {
        print_comparison(row);
    }
    println!();
}

/// The side-by-side table's rows of one workload.
fn print_comparison(row: &Comparison) {
    let Comparison {
        workload,
        ours,
        theirs,
    } = row;
    let p = |m: &Measured, q: f64| quantile(&m.late_ms, q);
    println!(
        "| {workload} | ran / distinct / expected | {} / {} / {} | {} / {} / {} | |",
        ours.ran, ours.distinct, ours.expected, theirs.ran, theirs.distinct, theirs.expected
    );
    println!(
        "| {workload} | handlers whose write failed | {} | {} | |",
        ours.failed_writes, theirs.failed_writes
    );
    println!(
        "| {workload} | dispatch rate (first to last start) | {:.0}/s | {:.0}/s | {} |",
        ours.rate,
        theirs.rate,
        ratio(ours.rate, theirs.rate)
    );
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        println!(
            "| {workload} | lateness {name} | {:.3} ms | {:.3} ms | {} |",
            p(ours, q),
            p(theirs, q),
            ratio(p(ours, q), p(theirs, q))
        );
    }
    println!(
        "| {workload} | CPU per job: dispatcher / redis-server | {} / {} | {} / {} | |",
        cpu(ours.cpu_us),
        cpu(ours.redis_cpu_us),
        cpu(theirs.cpu_us),
        cpu(theirs.redis_cpu_us)
    );
}

/// The burst's rate against the library's, with the same write and with
/// a handler that does nothing (`noop`; `ours_rate` is ours).
fn check_against_library(
    rows: &[Comparison],
    noop: &Measured,
    ours_rate: f64,
    report: &mut Report,
) {
    if let Some(Comparison { ours, theirs, .. }) = rows.first() {
        report.check(
            "burst: dispatch rate against the Python library's (same write), same run",
            format!(
                "{:.0}/s vs {:.0}/s ({:.2}x)",
                ours.rate,
                theirs.rate,
                ours.rate / theirs.rate
            ),
            "≥ 2x",
            ours.rate >= 2.0 * theirs.rate,
        );
    }
    let noop_rate = noop.rate;
    println!(
        "The library's burst with a handler that does nothing: {noop_rate:.0}/s, \
         lateness p50 / p99 {:.0} / {:.0} ms, its listener's CPU {:.0} µs per job \
         ({} of {} ran).\n",
        quantile(&noop.late_ms, 0.5),
        quantile(&noop.late_ms, 0.99),
        noop.cpu_us,
        noop.ran,
        noop.expected
    );
    report.check(
        "burst: dispatch rate against the Python library's with a no-op handler, same run",
        format!(
            "{ours_rate:.0}/s vs {noop_rate:.0}/s ({:.2}x)",
            ours_rate / noop_rate
        ),
        "≥ 2x",
        ours_rate >= 2.0 * noop_rate,
    );
}

//! The benchmark suite: how fast symphony-host is, against its targets.
//!
//! ```text
//! scripts/bench.sh            # release build, full sizes, about 4 minutes
//! scripts/bench.sh --smoke    # debug build, small sizes (`--quick` to the suite; CI runs it)
//! scripts/bench.sh --only burst,steady
//! ```
//!
//! Each section starts its own redis-server on a free loopback port (the
//! integration tests' harness, `tests/all/support.rs`), and the end-to-end
//! sections run the real `symphony-host` binary with `--log-format json`,
//! reading its `dispatch` lines. It prints one table per section and a
//! summary against the targets. Sections:
//!
//! 1. `overhead`: in process, through the host library: a fresh instance
//!    (or a warm one), `on-expire`, and one host call that does not reach
//!    Redis; then the same with one Redis write. Per language.
//! 2. `schedule`: triggers set per second through the library's batch path
//!    (`TriggerRepo::set_many`), one at a time, and through the CLI.
//! 3. `burst`: 100 000 triggers due within one second, a Rust plugin making
//!    one repository write each, with 1 and with 3 host processes. Then
//!    (3c) the floor: what Redis spends per job when the claims keep ahead
//!    of the TTL and the writes and finishes go in one pipeline per claim.
//! 4. `steady`: 200/s and 5000/s for 30 s, each due 1 s after it is set.
//!    Lateness comes from `late_us`, to the microsecond.
//!    Section `library` (4b): the burst and both steady loads on
//!    symphony-host, each followed by the same workload on the Python
//!    library we replace (`mimeiapify` 1.4.3, from the compatibility test's
//!    venv, driven by `bench/mimeiapify_bench.py`), and the two side by side.
//! 5. `reload`: a plugin file written to the new version live.
//! 6. `rss`: host RSS idle with 10 plugins loaded (the burst reports its
//!    peak); each language's plugin loaded from the compile cache; 1000
//!    Rust plugins (a tenant each): load time, RSS, routing cost.
//! 7. `admin`: the burst with 1 host, the admin server off, then on with a
//!    client reading `/metrics` and the dashboard's overview every second;
//!    alternated, 5 pairs (1 with `--quick`).
//! 8. `cluster`: the burst on a standalone server and on a 3-primary Redis
//!    Cluster, 1 and 3 hosts (1 with `--quick`), with CPU per job in the
//!    hosts and in each primary, and with every key in one slot.
//!
//! The end-to-end sections run the host on the tests' manifest header
//! (`support::write_manifest`: their compile cache, a 2 s timeout, otherwise
//! the default `[runtime]`, so concurrency 64, 32 per tenant);
//! `BENCH_RUNTIME` adds lines to it, to try settings (for example
//! `BENCH_RUNTIME='concurrency = 256'`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../tests/all/support.rs"]
mod support;

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    Backend, Host, RedisCluster, RedisServer, host_cmd, plugin, plugin_entry_with, root, run_ok,
    write_manifest,
};
use symphony_host::delivery::Delivery;
use symphony_host::manifest::{Manifest, RedisUrl, seed_pool_urls};
use symphony_host::plugins::PluginSet;
use symphony_host::pools::{PoolAlias, Pools};
use symphony_host::repo::TriggerRepo;
use symphony_host::runtime::{Job, Outcome, Runtime};

/// The host binary's allocator, so in-process figures match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sizes of one run: the full suite, or the smoke pass.
#[derive(Clone, Copy)]
struct Sizes {
    quick: bool,
    overhead_rust: usize,
    overhead_other: usize,
    schedule: usize,
    burst: usize,
    steady_secs: u64,
    reloads: usize,
}

const FULL: Sizes = Sizes {
    quick: false,
    overhead_rust: 20_000,
    overhead_other: 300,
    schedule: 100_000,
    burst: 100_000,
    steady_secs: 30,
    reloads: 5,
};

const QUICK: Sizes = Sizes {
    quick: true,
    overhead_rust: 300,
    overhead_other: 10,
    schedule: 5_000,
    burst: 2_000,
    steady_secs: 2,
    reloads: 2,
};

const SECTIONS: [&str; 9] = [
    "overhead", "schedule", "burst", "steady", "library", "reload", "rss", "admin", "cluster",
];

/// One line of the summary: a figure against its target.
struct Verdict {
    what: String,
    figure: String,
    target: String,
    met: bool,
}

#[derive(Default)]
struct Report {
    verdicts: Vec<Verdict>,
    /// Correctness checks that failed (a trigger lost or run twice): these
    /// fail the run, unlike missed speed targets.
    broken: Vec<String>,
}

impl Report {
    fn check(&mut self, what: &str, figure: String, target: &str, met: bool) {
        self.verdicts.push(Verdict {
            what: what.to_owned(),
            figure,
            target: target.to_owned(),
            met,
        });
    }

    /// Records a correctness check; a failure makes the suite exit non-zero.
    fn require(&mut self, what: &str, ok: bool) {
        if !ok {
            self.broken.push(what.to_owned());
        }
    }
}

fn main() {
    let mut sizes = FULL;
    let mut only: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => sizes = QUICK,
            "--only" => {
                let list = args.next().expect("--only needs a list, e.g. burst,steady");
                only = list.split(',').map(str::to_owned).collect();
                for s in &only {
                    assert!(
                        SECTIONS.contains(&s.as_str()),
                        "unknown section {s:?}; sections: {SECTIONS:?}"
                    );
                }
            }
            // `cargo bench` passes `--bench`; nothing else is expected.
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "usage: suite [--quick] [--only {}]\n\nSee the top of bench/suite.rs.",
                    SECTIONS.join(",")
                );
                return;
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    let run = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "# symphony-host benchmarks ({} sizes, {profile} build, {} cores)\n",
        if sizes.quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut report = Report::default();
    if run("overhead") {
        overhead(sizes, &mut report);
    }
    if run("schedule") {
        schedule(sizes, &mut report);
    }
    if run("burst") {
        for hosts in [1, 3] {
            burst(sizes, hosts, &mut report);
        }
        redis_floor(sizes, &mut report);
    }
    if run("steady") {
        for rate in [200, 5000] {
            steady(sizes, rate, &mut report);
        }
    }
    if run("library") {
        library(sizes, &mut report);
    }
    if run("reload") {
        reload(sizes, &mut report);
    }
    if run("rss") {
        rss(&mut report);
        load_from_cache(&mut report);
        many_plugins(sizes, &mut report);
    }
    if run("admin") {
        admin_cost(sizes, &mut report);
    }
    if run("cluster") {
        cluster_section(sizes, &mut report);
    }
    println!("## Against the targets\n");
    if sizes.quick {
        println!(
            "Quick sizes (a smoke pass): the speed figures are not comparable with the targets.\n"
        );
    }
    println!("| measure | figure | target | met |\n| --- | --- | --- | --- |");
    for v in &report.verdicts {
        println!(
            "| {} | {} | {} | {} |",
            v.what,
            v.figure,
            v.target,
            if v.met { "yes" } else { "no" }
        );
    }
    if !report.broken.is_empty() {
        eprintln!(
            "\nbroken (not a speed target): {}",
            report.broken.join("; ")
        );
        std::process::exit(1);
    }
}

/// The `q` quantile (0..=1) of sorted values.
fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The manifest at `file` and a runtime for it, in process, its pools on
/// `redis` (call within a Tokio runtime).
fn manifest_runtime(file: &Path, redis: &RedisServer) -> (Manifest, Arc<Runtime>) {
    let manifest = Manifest::load(file).unwrap();
    let url: RedisUrl = redis.url().parse().unwrap();
    let pools = Pools::new(&manifest.pool_urls(Some(&url))).unwrap();
    let runtime = Runtime::new(&manifest.runtime, false, pools).unwrap();
    (manifest, runtime)
}

fn pools(redis: &RedisServer) -> Pools {
    let url: RedisUrl = redis.url().parse().unwrap();
    Pools::new(&seed_pool_urls(&url)).unwrap()
}

// ---------------------------------------------------------------- overhead

/// Times `n` invocations of `action`; returns sorted µs.
async fn time_invocations(
    runtime: &Runtime,
    set: &PluginSet,
    plugin: &str,
    action: &str,
    n: usize,
) -> Vec<u64> {
    let loaded = set
        .plugins()
        .iter()
        .find(|p| p.name().as_str() == plugin)
        .unwrap()
        .clone();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let id = i.to_string();
        let job = Arc::new(Job {
            tenant: "bench".into(),
            key: symphony_host::keys::trigger_key("bench", action, &id).unwrap(),
            action: action.into(),
            id,
            plugin: loaded.name().clone(),
            generation: 0,
        });
        let start = Instant::now();
        let outcome = runtime.invoke(&loaded, job).await;
        times.push(u64::try_from(start.elapsed().as_micros()).unwrap());
        assert_eq!(outcome, Outcome::Ok, "{plugin} {action} failed");
    }
    times.sort_unstable();
    times
}

fn overhead(sizes: Sizes, report: &mut Report) {
    println!("## 1. Plugin overhead, in process (µs per job)\n");
    println!(
        "A job: a Store and instance (fresh from the `InstancePre`, or warm with \
         `reuse_instances`), `on-expire`, one host call. `one call` asks the host \
         for the tenant (no Redis); `write` sets one generic key in Redis.\n"
    );
    println!(
        "| language | jobs | fresh, one call p50 / p99 | warm, one call p50 / p99 | fresh, write p50 / p99 |"
    );
    println!("| --- | --- | --- | --- | --- |");
    let redis = RedisServer::start();
    let rt = runtime();
    let _enter = rt.enter();
    for (language, wasm) in [
        ("Rust", "poly"),
        ("JavaScript", "poly-js"),
        ("Go", "poly-go"),
    ] {
        let path = plugin(wasm);
        if !Path::new(&path).exists() {
            println!("| {language} | not built ({path}) | | | |");
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let common = "tenants = [\"*\"]\ncapabilities = [\"generic\"]\n";
        let plugins = format!(
            "{}{}",
            plugin_entry_with("fresh", wasm, &["poly_"], common),
            plugin_entry_with(
                "warm",
                wasm,
                &["warm_"],
                &format!("{common}reuse_instances = 1000000\n")
            ),
        );
        let (manifest, runtime) =
            manifest_runtime(&write_manifest(dir.path(), &plugins, ""), &redis);
        let set = PluginSet::load(&runtime, &manifest, 0).unwrap();
        let n = if language == "Rust" {
            sizes.overhead_rust
        } else {
            sizes.overhead_other
        };
        let (fresh, warm, write) = rt.block_on(async {
            // Warm up the code paths (and the pooling allocator's slots).
            time_invocations(&runtime, &set, "fresh", "poly_one", n / 10 + 1).await;
            let fresh = time_invocations(&runtime, &set, "fresh", "poly_one", n).await;
            let warm = time_invocations(&runtime, &set, "warm", "poly_one", n * 5).await;
            let write = time_invocations(&runtime, &set, "fresh", "poly_write", n).await;
            (fresh, warm, write)
        });
        let p = |v: &[u64]| format!("{} / {}", quantile(v, 0.5), quantile(v, 0.99));
        println!(
            "| {language} | {n} | {} | {} | {} |",
            p(&fresh),
            p(&warm),
            p(&write)
        );
        let p50 = quantile(&fresh, 0.5);
        let target = if language == "Rust" { 20 } else { 100 };
        report.check(
            &format!("{language}: fresh instance + on-expire + one host call, p50"),
            format!("{p50} µs"),
            &format!("≤ {target} µs"),
            p50 <= target,
        );
    }
    println!();
}

// ---------------------------------------------------------------- schedule

fn flush(redis: &RedisServer) {
    let _: () = redis::cmd("FLUSHALL").query(&mut redis.conn(0)).unwrap();
}

fn schedule(sizes: Sizes, report: &mut Report) {
    println!("## 2. Scheduling (triggers set per second)\n");
    println!("| path | triggers | seconds | per second |\n| --- | --- | --- | --- |");
    let redis = RedisServer::start();
    let rt = runtime();
    let _enter = rt.enter();
    let n = sizes.schedule;
    let triggers: Vec<(String, String, Duration)> = (0..n)
        .map(|i| ("remind".into(), i.to_string(), Duration::from_secs(3600)))
        .collect();
    let row = |path: &str, n: usize, took: Duration| {
        let rate = n as f64 / took.as_secs_f64();
        println!("| {path} | {n} | {:.3} | {:.0} |", took.as_secs_f64(), rate);
        rate
    };

    let pools = pools(&redis);
    let repo = TriggerRepo::new(&pools, "bench").unwrap();
    let batched = rt.block_on(async {
        repo.set_many(&triggers[..1000]).await.unwrap();
        let start = Instant::now();
        let keys = repo.set_many(&triggers).await.unwrap();
        assert_eq!(keys.len(), n);
        start.elapsed()
    });
    let batched = row("library, batched (`TriggerRepo::set_many`)", n, batched);
    report.check(
        "scheduling, batched",
        format!("{batched:.0}/s"),
        "≥ 100 000/s",
        batched >= 100_000.0,
    );
    flush(&redis);

    let single_n = n / 20;
    let single = rt.block_on(async {
        let start = Instant::now();
        for (action, id, ttl) in &triggers[..single_n] {
            repo.set(action, id, *ttl).await.unwrap();
        }
        start.elapsed()
    });
    row("library, one `set` at a time", single_n, single);
    flush(&redis);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("triggers.txt");
    let mut text = String::new();
    for (action, id, _) in &triggers {
        writeln!(text, "bench {action} {id} 1h").unwrap();
    }
    std::fs::write(&file, text).unwrap();
    let start = Instant::now();
    let out = run_ok(
        host_cmd()
            .args(["trigger", "set-many"])
            .arg(&file)
            .env("SYMPHONY_REDIS_URL", redis.url()),
    );
    let took = start.elapsed();
    assert!(out.contains(&format!("set {n} triggers")), "{out}");
    row("CLI, `trigger set-many FILE` (one process)", n, took);
    flush(&redis);

    let procs = if sizes.quick { 5 } else { 50 };
    let start = Instant::now();
    for i in 0..procs {
        run_ok(
            host_cmd()
                .args([
                    "trigger",
                    "set",
                    "bench",
                    "remind",
                    &i.to_string(),
                    "--ttl",
                    "1h",
                ])
                .env("SYMPHONY_REDIS_URL", redis.url()),
        );
    }
    row(
        "CLI, `trigger set` (a process each)",
        procs,
        start.elapsed(),
    );
    println!();
}

// ---------------------------------------------------------------- end to end

/// A manifest entry for the Rust benchmark plugin, serving tenant `bench`.
fn poly_entry(extra: &str) -> String {
    plugin_entry_with(
        "poly",
        "poly",
        &["poly_"],
        &format!("tenants = [\"bench\"]\ncapabilities = [\"generic\"]\n{extra}"),
    )
}

/// Starts a host on the benchmark plugin.
fn start_host(redis: &impl Backend) -> Host {
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
fn wait_count(hosts: &[Host], run: &str, n: usize, timeout: Duration) -> bool {
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
struct RunFigures {
    ran: usize,
    distinct: usize,
    /// Ids that ran more than once, sorted.
    twice: Vec<String>,
    late_ms: Vec<f64>,
    /// The host's time per job (`duration_us`), sorted.
    took_us: Vec<u64>,
    /// First start to last start.
    start_span_ms: f64,
    /// First due time to the last job's end.
    finish_ms: f64,
}

fn figures(hosts: &[Host], run: &str) -> RunFigures {
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
async fn arm_spread(repo: &TriggerRepo, run: &str, n: usize, first_due: Instant, spread: Duration) {
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

/// CPU seconds (user + system) the process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is 3rd,
    // utime and stime are the 14th and 15th of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// CPU seconds Redis has used so far (`INFO cpu`).
fn redis_cpu_secs(redis: &RedisServer) -> f64 {
    info_field::<f64>(redis, "cpu", "used_cpu_sys")
        + info_field::<f64>(redis, "cpu", "used_cpu_user")
}

/// A numeric field of `INFO section` (zero if absent).
fn info_field<T: std::str::FromStr + Default>(
    redis: &RedisServer,
    section: &str,
    field: &str,
) -> T {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query(&mut redis.conn(0))
        .unwrap();
    info.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == field).then(|| v.trim().parse().ok())?
        })
        .unwrap_or_default()
}

fn rss_mib(host: &Host, field: &str) -> f64 {
    host.proc_status_kib(field) as f64 / 1024.0
}

/// What one run measured, for the table against the Python library.
struct Measured {
    expected: usize,
    ran: usize,
    distinct: usize,
    /// First start to last start.
    rate: f64,
    /// Due time to start, sorted.
    late_ms: Vec<f64>,
    /// CPU per job in the dispatching process(es) and in redis-server (µs);
    /// NaN when not measured.
    cpu_us: f64,
    redis_cpu_us: f64,
    /// Handlers whose one write failed.
    failed_writes: usize,
}

fn burst(sizes: Sizes, hosts: usize, report: &mut Report) -> Measured {
    let n = sizes.burst;
    println!("## 3. Burst: {n} triggers due within 1 s, {hosts} host process(es)\n");
    let redis = RedisServer::start();
    let mut running: Vec<Host> = (0..hosts).map(|_| start_host(&redis)).collect();
    let rt = runtime();
    let _enter = rt.enter();
    let pools = pools(&redis);
    let repo = TriggerRepo::new(&pools, "bench").unwrap();
    // Due from 3 s out, so arming (about 1 s for 100 000) is done first.
    let first_due = Instant::now() + Duration::from_secs(3);
    let armed_at = Instant::now();
    rt.block_on(arm_spread(&repo, "b", n, first_due, Duration::from_secs(1)));
    let arm_took = armed_at.elapsed();
    let host_cpu = |hosts: &[Host]| hosts.iter().map(|h| cpu_secs(h.pid())).sum::<f64>();
    let (cpu_before, redis_before) = (host_cpu(&running), redis_cpu_secs(&redis));
    let bench_before = cpu_secs(std::process::id());
    reset_command_stats(&[&redis]);
    let done = wait_count(&running, "b", n, Duration::from_secs(300));
    let stats = command_stats(&[&redis]);
    let bench_cpu_us = (cpu_secs(std::process::id()) - bench_before) * 1e6 / n as f64;
    let host_cpu_us = (host_cpu(&running) - cpu_before) * 1e6 / n as f64;
    let redis_cpu_us = (redis_cpu_secs(&redis) - redis_before) * 1e6 / n as f64;
    let f = figures(&running, "b");
    let rss_peak: Vec<String> = running
        .iter()
        .map(|h| format!("{:.0}", rss_mib(h, "VmHWM")))
        .collect();
    for h in &mut running {
        h.terminate(Duration::from_secs(30));
    }
    let rate = f.ran as f64 / (f.start_span_ms / 1000.0).max(0.001);
    let p99 = quantile(&f.late_ms, 0.99);
    println!("| figure | value |\n| --- | --- |");
    println!("| armed in | {:.2} s |", arm_took.as_secs_f64());
    println!(
        "| ran / distinct / expected | {} / {} / {n} |",
        f.ran, f.distinct
    );
    println!("| dispatch rate (first to last start) | {rate:.0}/s |");
    println!(
        "| lateness p50 / p99 / max | {:.0} / {:.0} / {:.0} ms |",
        quantile(&f.late_ms, 0.5),
        p99,
        f.late_ms.last().copied().unwrap_or(0.0)
    );
    println!(
        "| time to finish (first due to last job done) | {:.2} s |",
        f.finish_ms / 1000.0
    );
    println!(
        "| time per job in the host (`duration_us`) p50 / p99 | {} / {} µs |",
        quantile(&f.took_us, 0.5),
        quantile(&f.took_us, 0.99)
    );
    println!(
        "| CPU per job: hosts / redis-server (arming excluded) | {host_cpu_us:.0} / {redis_cpu_us:.0} µs |"
    );
    println!("| CPU per job in this bench (reading the hosts' lines) | {bench_cpu_us:.1} µs |");
    println!("| host peak RSS (VmHWM) | {} MiB |\n", rss_peak.join(", "));
    print_command_stats("What Redis spent its time on", &stats, n);
    println!();
    let exact = done && f.ran == n && f.distinct == n;
    let measured = Measured {
        expected: n,
        ran: f.ran,
        distinct: f.distinct,
        rate,
        late_ms: f.late_ms.clone(),
        cpu_us: host_cpu_us,
        redis_cpu_us,
        failed_writes: 0,
    };
    report.require(
        &format!("burst, {hosts} host(s): every trigger ran exactly once"),
        exact,
    );
    report.check(
        &format!("burst, {hosts} host(s): every trigger ran exactly once"),
        format!("{} ran, {} distinct of {n}", f.ran, f.distinct),
        "all, once",
        exact,
    );
    report.check(
        &format!("burst, {hosts} host(s): dispatch rate"),
        format!("{rate:.0}/s"),
        "≥ 50 000/s",
        rate >= 50_000.0,
    );
    report.check(
        &format!("burst, {hosts} host(s): lateness p99"),
        format!("{p99:.0} ms"),
        "≤ 1000 ms",
        p99 <= 1000.0,
    );
    report.check(
        &format!("burst, {hosts} host(s): CPU per job, hosts / redis-server"),
        format!("{host_cpu_us:.0} / {redis_cpu_us:.0} µs"),
        "≤ 20 / ≤ 12 µs",
        host_cpu_us <= 20.0 && redis_cpu_us <= 12.0,
    );
    measured
}

/// The least Redis can spend per job with today's scripts: the burst's
/// triggers claimed ahead of their TTL (so Redis expires none of them),
/// each job's one write sent in one pipeline per claim, and the finishes
/// in one `ZREM` per claim, by one client and no host. What the host adds
/// on top of this (its commands one by one, and the keys it claims after
/// Redis has expired them) is the difference from the burst's figure.
fn redis_floor(sizes: Sizes, report: &mut Report) {
    /// The host's sweeper claims up to 500 at a time.
    const CLAIM: usize = 500;
    let n = sizes.burst;
    println!("## 3c. The floor: Redis per job, claims ahead of the TTL, writes batched, no host\n");
    let redis = RedisServer::start();
    let rt = runtime();
    let _enter = rt.enter();
    let pools = pools(&redis);
    let repo = TriggerRepo::new(&pools, "bench").unwrap();
    let delivery = Delivery::new(&pools).unwrap();
    let writes = pools.get(PoolAlias::Default).unwrap().conn();
    // Due over 2 s from 3 s out: claimed as they come due, 25 ms ahead,
    // every 10 ms (about 500 a claim in the full run), at once while a
    // claim comes back full.
    let first_due = Instant::now() + Duration::from_secs(3);
    rt.block_on(arm_spread(&repo, "f", n, first_due, Duration::from_secs(2)));
    let expired_before: u64 = info_field(&redis, "stats", "expired_keys");
    let cpu_before = redis_cpu_secs(&redis);
    reset_command_stats(&[&redis]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (claims, jobs) = rt.block_on(async {
        let (mut claims, mut jobs) = (0usize, 0usize);
        while jobs < n && Instant::now() < deadline {
            let (_, _, firings) = delivery.claim_due(CLAIM, 30_000, &[]).await.unwrap();
            claims += 1;
            if firings.len() < CLAIM {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if firings.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for f in &firings {
                pipe.cmd("SET")
                    .arg(format!("bench:written:{}", f.key))
                    .arg("1")
                    .ignore();
            }
            let () = writes.pipe(&pipe).await.unwrap();
            let members: Vec<String> = firings.into_iter().map(|f| f.member).collect();
            delivery.done_many(&members).await.unwrap();
            jobs += members.len();
        }
        (claims, jobs)
    });
    let stats = command_stats(&[&redis]);
    let redis_cpu_us = (redis_cpu_secs(&redis) - cpu_before) * 1e6 / n as f64;
    let expired = info_field::<u64>(&redis, "stats", "expired_keys") - expired_before;
    println!("| figure | value |\n| --- | --- |");
    if jobs < n {
        eprintln!("the floor: only {jobs} of {n} triggers were claimed within 120 s");
    }
    report.require("the floor: every trigger claimed", jobs == n);
    println!("| jobs claimed / claims made | {jobs} / {claims} |");
    println!("| trigger keys Redis expired before their claim | {expired} |");
    println!("| redis-server CPU per job | {redis_cpu_us:.1} µs |\n");
    print_command_stats("What Redis spent its time on", &stats, n);
    println!();
}

fn steady(sizes: Sizes, rate: usize, report: &mut Report) -> Measured {
    let secs = sizes.steady_secs;
    let n = rate * secs as usize;
    println!("## 4. Steady load: {rate}/s for {secs} s, each due 1 s after it is set\n");
    let redis = RedisServer::start();
    let mut host = start_host(&redis);
    let rt = runtime();
    let _enter = rt.enter();
    let pools = pools(&redis);
    let repo = TriggerRepo::new(&pools, "bench").unwrap();
    let run = format!("s{rate}-");
    rt.block_on(async {
        let start = Instant::now();
        let mut armed = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while armed < n {
            tick.tick().await;
            let due_now = ((start.elapsed().as_secs_f64() * rate as f64) as usize).min(n);
            let batch: Vec<(&str, String, Duration)> = (armed..due_now)
                .map(|k| ("poly_write", format!("{run}{k}"), Duration::from_secs(1)))
                .collect();
            if !batch.is_empty() {
                repo.set_many(&batch).await.unwrap();
            }
            armed = due_now;
        }
    });
    let done = wait_count(
        std::slice::from_ref(&host),
        &run,
        n,
        Duration::from_secs(60),
    );
    let f = figures(std::slice::from_ref(&host), &run);
    host.terminate(Duration::from_secs(30));
    let (p50, p99) = (quantile(&f.late_ms, 0.5), quantile(&f.late_ms, 0.99));
    println!("| figure | value |\n| --- | --- |");
    println!("| ran / expected | {} / {n} |", f.ran);
    println!(
        "| lateness (due time to start, from `late_us`) p50 / p99 / max | {p50:.3} / {p99:.3} / {:.3} ms |\n",
        f.late_ms.last().copied().unwrap_or(0.0)
    );
    let all = done && f.ran == n && f.distinct == n;
    report.require(
        &format!("steady {rate}/s: every trigger ran exactly once"),
        all,
    );
    let limit = if rate <= 200 { 3.0 } else { 10.0 };
    report.check(
        &format!("steady {rate}/s: lateness p99"),
        format!("{p99:.3} ms ({} of {n} ran)", f.ran),
        &format!("≤ {limit} ms, all run"),
        all && p99 <= limit,
    );
    let span_s = (f.start_span_ms / 1000.0).max(0.001);
    Measured {
        expected: n,
        ran: f.ran,
        distinct: f.distinct,
        rate: f.ran as f64 / span_s,
        late_ms: f.late_ms,
        cpu_us: f64::NAN,
        redis_cpu_us: f64::NAN,
        failed_writes: 0,
    }
}

// ---------------------------------------------------------------- library

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
    use std::io::{BufRead as _, Read as _};
    /// The listener process, killed if the bench stops early.
    struct Listener(std::process::Child);
    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let script = root().join("bench/mimeiapify_bench.py");
    // The library logs a traceback for every failed write: kept out of the
    // tables, in a file shown if the listener fails.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut listener = Listener(
        Command::new(python)
            .arg(&script)
            .args(["listen", &redis.url(), &n.to_string(), "10", handler])
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("cannot start the library's listener"),
    );
    let log_tail = || {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    let mut out = std::io::BufReader::new(listener.0.stdout.take().unwrap());
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    assert_eq!(
        ready.trim(),
        "ready",
        "the library's listener did not start:\n{}",
        log_tail()
    );
    let first_due = burst_lead.map(|lead| unix_secs() + lead);
    let mut arm = arm.to_vec();
    arm.extend(first_due.map(|at| format!("{at:.3}")));
    let mut redis_before = redis_cpu_secs(redis);
    let armed: Value =
        serde_json::from_str(&run_ok(Command::new(python).arg(&script).args(&arm))).unwrap();
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
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(
        listener.0.wait().unwrap().success(),
        "the library's listener failed:\n{}",
        log_tail()
    );
    let redis_cpu_us = (redis_cpu_secs(redis) - redis_before) * 1e6 / n as f64;
    let ran: Value = serde_json::from_str(rest.trim()).unwrap();
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
fn library(sizes: Sizes, report: &mut Report) {
    println!("## 4b. Against the Python library (mimeiapify 1.4.3), in the same run\n");
    let python = library_python();
    let n = sizes.burst;
    let ours = burst(sizes, 1, report);
    // The library's burst with the same one write, then with a handler that
    // does nothing (what the library costs at best).
    let library_burst = |handler: &str| {
        println!("### The library: {n} triggers due within 1 s, handler `{handler}`\n");
        let redis = RedisServer::start();
        // `RedisTrigger.set` (a PING and a SETEX each, 32 at a time) arms
        // about 4000 a second here; the TTL is whole seconds.
        let lead = n as f64 / 2000.0 + 3.0;
        library_run(
            &python,
            &redis,
            n,
            handler,
            &["burst".into(), redis.url(), n.to_string()],
            Some(lead),
        )
    };
    let theirs = library_burst("write");
    let noop = library_burst("noop");
    let noop_rate = noop.rate;
    let ours_rate = ours.rate;
    let mut rows = vec![("burst", ours, theirs)];
    for rate in [200, 5000] {
        let ours = steady(sizes, rate, report);
        println!("### The library: {rate}/s\n");
        let redis = RedisServer::start();
        let secs = sizes.steady_secs as usize;
        let theirs = library_run(
            &python,
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
        rows.push((
            if rate == 200 {
                "steady 200/s"
            } else {
                "steady 5000/s"
            },
            ours,
            theirs,
        ));
    }

    println!("### Side by side\n");
    println!(
        "Lateness is due time to handler start. The library's due time is the \
         arming time plus its whole-second TTL; its CPU is its listener \
         process's.\n"
    );
    println!("| workload | figure | symphony-host | mimeiapify 1.4.3 | ratio (ours / theirs) |");
    println!("| --- | --- | --- | --- | --- |");
    let ratio = |a: f64, b: f64| {
        if b > 0.0 && a.is_finite() && b.is_finite() {
            format!("{:.2}", a / b)
        } else {
            "-".into()
        }
    };
    let cpu = |v: f64| {
        if v.is_finite() {
            format!("{v:.0} µs")
        } else {
            "-".into()
        }
    };
    for (workload, ours, theirs) in &rows {
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
    println!();
    if let Some((_, ours, theirs)) = rows.first() {
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

// ---------------------------------------------------------------- reload, rss

fn reload(sizes: Sizes, report: &mut Report) {
    println!("## 5. Hot reload: plugin file copied over to the new version live\n");
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("plugin.wasm");
    std::fs::copy(plugin("versioned-v1"), &live).unwrap();
    let mut host = Host::start_in(
        dir,
        &redis,
        "[[plugin]]\nname = \"versioned\"\npath = \"plugin.wasm\"\nactions = [\"version\"]\n\
         tenants = [\"*\"]\ncapabilities = [\"generic\"]\n",
        "",
    );
    let mut times = Vec::new();
    let mut builds = Vec::new();
    for k in 1..=sizes.reloads {
        let version = if k % 2 == 1 {
            "versioned-v2"
        } else {
            "versioned-v1"
        };
        let start = Instant::now();
        std::fs::copy(plugin(version), &live).unwrap();
        let e = host.wait_for("the reload", Duration::from_secs(30), |e| {
            e["event"] == "reloaded" && e["generation"] == k
        });
        times.push(start.elapsed().as_millis() as u64);
        builds.push(e["took_ms"].as_u64().unwrap_or(0));
    }
    host.terminate(Duration::from_secs(30));
    println!("| reload | file written to live (ms) | of which building the new set (ms) |");
    println!("| --- | --- | --- |");
    for (k, (t, b)) in times.iter().zip(&builds).enumerate() {
        println!("| {} | {t} | {b} |", k + 1);
    }
    println!(
        "\nThe watcher waits for the file to be quiet for 100 ms (a copy is \
         several writes) before it builds the new set.\n"
    );
    times.sort_unstable();
    report.check(
        "hot reload: file written to new version live, median",
        format!("{} ms", quantile(&times, 0.5)),
        "(none set)",
        true,
    );
}

fn rss(report: &mut Report) {
    println!("## 6. Host RSS idle\n");
    println!("Loaded from the compile cache; RSS read 1 s after the host listens.\n");
    println!("| plugins loaded | RSS idle |\n| --- | --- |");
    let redis = RedisServer::start();
    let rust = [
        "poly",
        "recorder",
        "driver",
        "hostile",
        "versioned-v1",
        "versioned-v2",
    ];
    let examples = root().join("plugins-example/plugins");
    let example = |name: &str| examples.join(format!("{name}.wasm")).display().to_string();
    let mut sets: Vec<(&str, Vec<String>)> = vec![(
        "10 Rust plugins",
        rust.iter()
            .map(|p| plugin(p))
            .chain(["reminder", "audit", "batcher", "reminder"].map(example))
            .collect(),
    )];
    let polyglot = ["welcome-js", "counter-go"].map(example);
    if polyglot.iter().all(|p| Path::new(p).exists()) {
        sets.push((
            "8 Rust, 1 JavaScript, 1 Go",
            rust.iter()
                .map(|p| plugin(p))
                .chain(["reminder", "audit"].map(example))
                .chain(polyglot)
                .collect(),
        ));
    }
    for (label, paths) in sets {
        let mut entries = String::new();
        for (i, path) in paths.iter().enumerate() {
            write!(
                entries,
                "[[plugin]]\nname = \"p{i}\"\npath = {path:?}\nactions = [\"a{i}_\"]\ntenants = [\"*\"]\n\n"
            )
            .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_manifest(dir.path(), &entries, "");
        // Compile into the cache first: a host that compiles at start keeps
        // the compiler's memory in its heap; a restart loads from the cache.
        run_ok(host_cmd().arg("check").arg(&manifest));
        let mut host = Host::spawn(&manifest, &redis, dir);
        host.wait_for("the listener", Duration::from_secs(120), |e| {
            e["event"] == "listening"
        });
        std::thread::sleep(Duration::from_secs(1));
        let rss = rss_mib(&host, "VmRSS");
        host.terminate(Duration::from_secs(30));
        println!("| {label} | {rss:.1} MiB |");
        report.check(
            &format!("RSS idle, {label}"),
            format!("{rss:.1} MiB"),
            "≤ 64 MiB",
            rss <= 64.0,
        );
    }
    println!();
}

/// Loading each language's plugin from the compile cache, in process: what
/// a start or a hot reload pays per plugin once it was compiled.
fn load_from_cache(report: &mut Report) {
    println!("## 6b. Plugin load from the compile cache\n");
    println!(
        "In process: `PluginSet::load` once to fill a fresh cache, then the median of 5 \
         loads (read, hash, map the compiled artifact, link).\n"
    );
    println!("| language | component | first load (compile) | from the cache, p50 |");
    println!("| --- | --- | --- | --- |");
    let redis = RedisServer::start();
    let rt = runtime();
    let _enter = rt.enter();
    let examples = root().join("plugins-example/plugins");
    for (language, path) in [
        ("Rust", plugin("poly")),
        (
            "JavaScript",
            examples.join("welcome-js.wasm").display().to_string(),
        ),
        ("Go", examples.join("counter-go.wasm").display().to_string()),
    ] {
        if !Path::new(&path).exists() {
            println!("| {language} | not built ({path}) | | |");
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let text = format!(
            "[runtime]\ncache_dir = {:?}\n[[plugin]]\nname = \"p\"\npath = {path:?}\nactions = [\"a_\"]\ntenants = [\"*\"]\n",
            cache.display().to_string()
        );
        let file = dir.path().join("manifest.toml");
        std::fs::write(&file, text).unwrap();
        let (manifest, runtime) = manifest_runtime(&file, &redis);
        let load = || {
            let start = Instant::now();
            drop(PluginSet::load(&runtime, &manifest, 0).unwrap());
            start.elapsed().as_secs_f64() * 1000.0
        };
        let first = load();
        let mut cached: Vec<f64> = (0..5).map(|_| load()).collect();
        cached.sort_by(f64::total_cmp);
        let p50 = cached[2];
        let size = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
        println!("| {language} | {size:.1} MB | {first:.0} ms | {p50:.1} ms |");
        if language != "Rust" {
            report.check(
                &format!("{language}: plugin load from the compile cache"),
                format!("{p50:.1} ms"),
                "≤ 20 ms",
                p50 <= 20.0,
            );
        }
    }
    println!();
}

/// A component's bytes with a custom section appended (`name`, `payload`):
/// the same code under another content hash, so it is compiled, cached and
/// mapped as a plugin of its own.
fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
    }
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// 1000 Rust plugins, a tenant and an action prefix each, all different
/// components (the same code with a distinct custom section), as a
/// multi-tenant host would load: the host's load time from the cache and
/// its idle RSS, and what routing one action costs with 10 plugins and with
/// all of them.
fn many_plugins(sizes: Sizes, report: &mut Report) {
    let n = if sizes.quick { 50 } else { 1000 };
    println!("## 6c. {n} Rust plugins, a tenant each\n");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let poly = std::fs::read(plugin("poly")).unwrap();
    let write_set = |count: usize, name: &str| {
        let mut text = format!(
            "[runtime]\ncache_dir = {:?}\ntimeout = \"2s\"\nshutdown_grace = \"10s\"\n\n",
            cache.display().to_string()
        );
        for i in 0..count {
            let path = dir.path().join(format!("p{i}.wasm"));
            if !path.exists() {
                std::fs::write(
                    &path,
                    with_custom_section(&poly, "bench-copy", &i.to_le_bytes()),
                )
                .unwrap();
            }
            write!(
                text,
                "[[plugin]]\nname = \"p{i}\"\npath = {:?}\nactions = [\"t{i}_\"]\ntenants = [\"t{i}\"]\ncapabilities = [\"generic\"]\n\n",
                path.display().to_string()
            )
            .unwrap();
        }
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        file
    };
    let all = write_set(n, "all.toml");
    let ten = write_set(10, "ten.toml");
    let compiled_at = Instant::now();
    run_ok(host_cmd().arg("check").arg(&all));
    let compile = compiled_at.elapsed().as_secs_f64();

    let redis = RedisServer::start();
    let spawned_at = Instant::now();
    let host_dir = tempfile::tempdir().unwrap();
    let mut host = Host::spawn(&all, &redis, host_dir);
    host.wait_for("the listener", Duration::from_secs(300), |e| {
        e["event"] == "listening"
    });
    let load = spawned_at.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_mib(&host, "VmRSS");
    let anon = rss_mib(&host, "RssAnon");
    host.terminate(Duration::from_secs(30));

    // Routing, in process: the last plugin's action among 10 and among all.
    let rt = runtime();
    let _enter = rt.enter();
    let route_ns = |file: &Path, action: &str| {
        let (manifest, runtime) = manifest_runtime(file, &redis);
        let set = PluginSet::load(&runtime, &manifest, 0).unwrap();
        let rounds = 1_000_000;
        let start = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(set.route(std::hint::black_box(action)));
        }
        start.elapsed().as_secs_f64() * 1e9 / f64::from(rounds)
    };
    let ten_ns = route_ns(&ten, "t9_write");
    let all_ns = route_ns(&all, &format!("t{}_write", n - 1));

    println!("| figure | value |\n| --- | --- |");
    println!("| first compile of all ({n} components, `symphony-host check`) | {compile:.1} s |");
    println!("| host start to listening, loaded from the cache | {load:.2} s |");
    println!("| host RSS idle (of which anonymous) | {rss:.1} MiB ({anon:.1} MiB) |");
    println!("| routing an action, 10 / {n} plugins | {ten_ns:.0} / {all_ns:.0} ns |\n");
    report.check(
        &format!("{n} Rust plugins: RSS idle"),
        format!("{rss:.1} MiB"),
        "≤ 512 MiB",
        rss <= 512.0,
    );
    report.check(
        &format!("{n} Rust plugins: host start to listening, from the cache"),
        format!("{load:.2} s"),
        "≤ 5 s",
        load <= 5.0,
    );
    report.check(
        &format!("routing one action, 10 against {n} plugins"),
        format!("{ten_ns:.0} / {all_ns:.0} ns"),
        "independent of the count (within 1.5x)",
        all_ns <= ten_ns * 1.5,
    );
}

/// One burst of `sizes.burst` on one host, the admin server off or on (and
/// read every second, as an open dashboard and a Prometheus scrape would):
/// the dispatch rate, the host's CPU per job (µs), and whether every
/// trigger ran once.
fn admin_burst(sizes: Sizes, admin: bool) -> (f64, f64, bool) {
    let n = sizes.burst;
    let redis = RedisServer::start();
    let runtime_lines = std::env::var("BENCH_RUNTIME").unwrap_or_default();
    let args: &[&str] = if admin {
        &[]
    } else {
        &["--admin-listen", "off"]
    };
    let mut host = Host::start_with_args(&redis, &poly_entry(""), &runtime_lines, args);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = admin.then(|| {
        let base = host.admin_url();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for path in ["metrics", "api/overview"] {
                    if let Ok(mut r) = agent.get(&format!("{base}{path}")).call() {
                        let _ = r.body_mut().read_to_string();
                        reads += 1;
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            reads
        })
    });
    let rt = runtime();
    let _enter = rt.enter();
    let pools = pools(&redis);
    let repo = TriggerRepo::new(&pools, "bench").unwrap();
    let first_due = Instant::now() + Duration::from_secs(3);
    rt.block_on(arm_spread(&repo, "b", n, first_due, Duration::from_secs(1)));
    let cpu_before = cpu_secs(host.pid());
    let done = wait_count(
        std::slice::from_ref(&host),
        "b",
        n,
        Duration::from_secs(300),
    );
    let cpu_us = (cpu_secs(host.pid()) - cpu_before) * 1e6 / n as f64;
    let f = figures(std::slice::from_ref(&host), "b");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(s) = scraper {
        let reads = s.join().unwrap();
        assert!(reads > 0, "the admin server answered no read");
    }
    host.terminate(Duration::from_secs(30));
    let rate = f.ran as f64 / (f.start_span_ms / 1000.0).max(0.001);
    (rate, cpu_us, done && f.ran == n && f.distinct == n)
}

fn admin_cost(sizes: Sizes, report: &mut Report) {
    let pairs = if sizes.quick { 1 } else { 5 };
    println!(
        "## 7. What the admin server costs: burst of {}, 1 host, off vs on (read every second), {pairs} alternated pair(s)\n",
        sizes.burst
    );
    println!(
        "| pair | admin off: rate, host CPU per job | admin on: rate, host CPU per job |\n| --- | --- | --- |"
    );
    let (mut off, mut on, mut cpu_off, mut cpu_on) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut exact = true;
    for pair in 1..=pairs {
        let (a, ca, ok_a) = admin_burst(sizes, false);
        let (b, cb, ok_b) = admin_burst(sizes, true);
        exact &= ok_a && ok_b;
        println!("| {pair} | {a:.0}/s, {ca:.0} µs | {b:.0}/s, {cb:.0} µs |");
        off.push(a);
        on.push(b);
        cpu_off.push(ca);
        cpu_on.push(cb);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let ratio = mean(&on) / mean(&off).max(1.0);
    println!(
        "| mean | {:.0}/s, {:.0} µs | {:.0}/s ({:+.1} %), {:.0} µs |\n",
        mean(&off),
        mean(&cpu_off),
        mean(&on),
        (ratio - 1.0) * 100.0,
        mean(&cpu_on)
    );
    report.require("admin on/off bursts: every trigger ran exactly once", exact);
    report.check(
        "burst rate with the admin server on and read, against off",
        format!("{:.1} %", ratio * 100.0),
        "≥ 98 %",
        ratio >= 0.98,
    );
}

/// Resets `INFO commandstats` on `nodes`.
fn reset_command_stats(nodes: &[&RedisServer]) {
    for node in nodes {
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut node.conn(0))
            .unwrap();
    }
}

/// Calls and µs of each command on `nodes` since the last reset (`INFO
/// commandstats`), summed over the nodes.
fn command_stats(nodes: &[&RedisServer]) -> HashMap<String, (u64, u64)> {
    let mut stats: HashMap<String, (u64, u64)> = HashMap::new();
    for node in nodes {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut node.conn(0))
            .unwrap();
        for line in info.lines() {
            let Some((name, fields)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |k: &str| -> u64 {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
                    .unwrap_or(0)
            };
            let e = stats.entry(name.to_owned()).or_default();
            e.0 += field("calls");
            e.1 += field("usec");
        }
    }
    stats
}

/// The commands that cost `nodes` most, per job: where Redis's time goes.
fn print_command_stats(label: &str, stats: &HashMap<String, (u64, u64)>, jobs: usize) {
    let mut top: Vec<_> = stats.iter().collect();
    top.sort_by_key(|(_, (_, usec))| std::cmp::Reverse(*usec));
    let jobs = jobs.max(1) as f64;
    let line: Vec<String> = top
        .iter()
        .take(8)
        .map(|(name, (calls, usec))| {
            format!(
                "{name} {:.2} calls, {:.1} µs",
                *calls as f64 / jobs,
                *usec as f64 / jobs
            )
        })
        .collect();
    println!(
        "- {label}, per job (commands inside scripts counted apart too): {}",
        line.join("; ")
    );
}

/// What one burst on a backend measured.
struct ClusterRun {
    rate: f64,
    p99_ms: f64,
    host_cpu_us: f64,
    /// CPU per job in each primary (one entry standalone).
    node_cpu_us: Vec<f64>,
    exact: bool,
}

/// A burst of `n` due within 1 s on `redis` with `hosts` hosts; `nodes`
/// are the servers whose CPU is counted (the primaries). `tag` puts every
/// trigger key in the slot of that hash tag (`None`: spread over all).
fn burst_on(
    redis: &impl Backend,
    nodes: &[&RedisServer],
    hosts: usize,
    n: usize,
    run: &str,
    tag: Option<&str>,
) -> ClusterRun {
    let mut running: Vec<Host> = (0..hosts).map(|_| start_host(redis)).collect();
    let rt = runtime();
    let _enter = rt.enter();
    let pools = Pools::connect(&redis.target()).unwrap();
    let repo = TriggerRepo::new(&pools, "bench").unwrap();
    let run = match tag {
        Some(tag) => format!("{run}{{{tag}}}"),
        None => run.to_owned(),
    };
    let first_due = Instant::now() + Duration::from_secs(3);
    rt.block_on(arm_spread(
        &repo,
        &run,
        n,
        first_due,
        Duration::from_secs(1),
    ));
    let host_cpu = |hosts: &[Host]| hosts.iter().map(|h| cpu_secs(h.pid())).sum::<f64>();
    let node_cpu = || -> Vec<f64> { nodes.iter().map(|node| redis_cpu_secs(node)).collect() };
    let (cpu_before, nodes_before) = (host_cpu(&running), node_cpu());
    reset_command_stats(nodes);
    let done = wait_count(&running, &run, n, Duration::from_secs(300));
    print_command_stats(&format!("{run}: {hosts} host(s)"), &command_stats(nodes), n);
    let host_cpu_us = (host_cpu(&running) - cpu_before) * 1e6 / n as f64;
    let node_cpu_us = node_cpu()
        .iter()
        .zip(&nodes_before)
        .map(|(after, before)| (after - before) * 1e6 / n as f64)
        .collect();
    let f = figures(&running, &run);
    // The counts behind `exact`, so a run that is not exactly once says how.
    println!(
        "- ran / distinct / expected: {} / {} / {n}; every firing settled: {done}",
        f.ran, f.distinct
    );
    if !f.twice.is_empty() {
        print_twice_run(&running, &f.twice);
    }
    for h in &mut running {
        h.terminate(Duration::from_secs(30));
    }
    ClusterRun {
        rate: f.ran as f64 / (f.start_span_ms / 1000.0).max(0.001),
        p99_ms: quantile(&f.late_ms, 0.99),
        host_cpu_us,
        node_cpu_us,
        exact: done && f.ran == n && f.distinct == n,
    }
}

/// Section 8, `cluster`: the burst on a standalone server and on a
/// 3-primary cluster (3 replicas), with 1 and 3 hosts, in the same run; CPU
/// per job in the hosts and in each primary; and on the cluster with every
/// key in one slot against keys over all 16 384, to show the hosts' cost
/// per job does not follow the number of slots.
fn cluster_section(sizes: Sizes, report: &mut Report) {
    let n = sizes.burst;
    println!(
        "## 8. Cluster: the burst ({n} due within 1 s) on a standalone server and on a 3-primary cluster\n"
    );
    let host_counts: &[usize] = if sizes.quick { &[1] } else { &[1, 3] };
    let mut rows = Vec::new();
    for &hosts in host_counts {
        let redis = RedisServer::start();
        let r = burst_on(&redis, &[&redis], hosts, n, &format!("sa{hosts}-"), None);
        rows.push(("standalone", hosts, "1 server", r));
        let cluster = RedisCluster::start();
        let primaries: Vec<&RedisServer> = cluster
            .primaries()
            .into_iter()
            .map(|(i, _)| &cluster.nodes[i])
            .collect();
        let r = burst_on(&cluster, &primaries, hosts, n, &format!("cl{hosts}-"), None);
        rows.push(("cluster, 3 primaries", hosts, "16 384 slots", r));
        if hosts == 1 {
            let r = burst_on(&cluster, &primaries, hosts, n, "one-", Some("b"));
            rows.push(("cluster, 3 primaries", hosts, "1 slot", r));
        }
    }
    arming_cost(sizes);
    println!(
        "| backend | hosts | keys over | dispatch rate | lateness p99 | host CPU per job | redis CPU per job, each primary | redis CPU per job, all |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (backend, hosts, over, r) in &rows {
        let each: Vec<String> = r.node_cpu_us.iter().map(|c| format!("{c:.1}")).collect();
        println!(
            "| {backend} | {hosts} | {over} | {:.0}/s | {:.0} ms | {:.0} µs | {} µs | {:.1} µs |",
            r.rate,
            r.p99_ms,
            r.host_cpu_us,
            each.join(" / "),
            r.node_cpu_us.iter().sum::<f64>()
        );
        report.require(
            &format!("cluster section, {backend}, {hosts} host(s), keys over {over}: every trigger ran exactly once"),
            r.exact,
        );
    }
    println!();
    let busiest = |r: &ClusterRun| r.node_cpu_us.iter().copied().fold(0.0, f64::max);
    if let (Some(sa), Some(cl)) = (
        rows.iter().find(|r| r.0 == "standalone" && r.1 == 1),
        rows.iter()
            .find(|r| r.0 != "standalone" && r.1 == 1 && r.2 != "1 slot"),
    ) {
        report.check(
            "cluster: redis CPU per job on the busiest primary, against standalone's server",
            format!("{:.1} vs {:.1} µs", busiest(&cl.3), busiest(&sa.3)),
            "lower",
            busiest(&cl.3) < busiest(&sa.3),
        );
    }
    // The hosts' cost per job must not follow the number of slots the keys
    // spread over: all 16 384 against one, within a quarter (a constant
    // for the grouping and hints of many pairs; per-slot work would be
    // many times).
    if let (Some(spread), Some(one)) = (
        rows.iter()
            .find(|r| r.0 != "standalone" && r.1 == 1 && r.2 != "1 slot"),
        rows.iter().find(|r| r.2 == "1 slot"),
    ) {
        let ratio = spread.3.host_cpu_us / one.3.host_cpu_us.max(f64::EPSILON);
        report.check(
            "cluster: host CPU per job, keys over 16 384 slots against one slot",
            format!(
                "{:.0} vs {:.0} µs ({ratio:.2}x)",
                spread.3.host_cpu_us, one.3.host_cpu_us
            ),
            "≤ 1.25x",
            ratio <= 1.25,
        );
    }
}

/// µs per trigger armed one at a time through the library (`TriggerRepo::set`)
/// on `redis`, with `wait` replicas acknowledging each.
fn arm_one_by_one(redis: &impl Backend, wait: u32, n: usize) -> f64 {
    let rt = runtime();
    rt.block_on(async {
        let pools = Pools::connect(&redis.target())
            .unwrap()
            .with_wait_replicas(wait);
        let repo = TriggerRepo::new(&pools, "bench").unwrap();
        let started = Instant::now();
        for i in 0..n {
            repo.set(
                "poly_write",
                &format!("arm{wait}-{i}"),
                Duration::from_secs(600),
            )
            .await
            .unwrap();
        }
        started.elapsed().as_secs_f64() * 1e6 / n as f64
    })
}

/// What `[redis] wait_replicas = 1` costs an arming, against no wait and
/// against a standalone server (one client arming one at a time).
fn arming_cost(sizes: Sizes) {
    let n = if sizes.quick { 200 } else { 5000 };
    let redis = RedisServer::start();
    let standalone = arm_one_by_one(&redis, 0, n);
    let cluster = RedisCluster::start();
    let no_wait = arm_one_by_one(&cluster, 0, n);
    let wait = arm_one_by_one(&cluster, 1, n);
    println!(
        "Arming one trigger at a time through the library ({n} each): standalone {standalone:.0} µs, \
         cluster {no_wait:.0} µs, cluster with `wait_replicas = 1` {wait:.0} µs per arming.\n"
    );
}

/// Prints the log lines of up to five of the triggers in `twice` (ids that
/// ran more than once), and the hosts' warnings: what a failed
/// exactly-once check needs.
fn print_twice_run(hosts: &[Host], twice: &[String]) {
    for (i, h) in hosts.iter().enumerate() {
        for id in twice.iter().take(5) {
            for e in h.events(|e| e["id"].as_str() == Some(id.as_str())) {
                println!("  host {i}, ran twice: {e}");
            }
        }
        for e in h.events(|e| e["level"] == "WARN" || e["level"] == "ERROR") {
            println!("  host {i}, warning: {e}");
        }
    }
}

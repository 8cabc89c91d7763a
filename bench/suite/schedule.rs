//! Section 2, `schedule`: triggers set per second through the library's
//! batch path (`TriggerRepo::set_many`), one at a time, and through the
//! CLI (one process for a file of them, and a process each).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use symphony_host::repo::TriggerRepo;

use crate::common::{Report, Sizes, pools, runtime};
use crate::support::{RedisServer, host_cmd, run_ok};

/// The triggers set: action, id and TTL.
type Triggers = [(String, String, Duration)];

/// Empties `redis` between two paths.
fn flush(redis: &RedisServer) {
    let _: () = redis::cmd("FLUSHALL").query(&mut redis.conn(0)).unwrap();
}

/// Prints one row of the table; returns the rate (per second).
fn row(path: &str, n: usize, took: Duration) -> f64 {
    let rate = n as f64 / took.as_secs_f64();
    println!("| {path} | {n} | {:.3} | {:.0} |", took.as_secs_f64(), rate);
    rate
}

/// Section 2: each path on one redis-server, emptied between them.
pub(crate) fn run(sizes: Sizes, report: &mut Report) {
    println!("## 2. Scheduling (triggers set per second)\n");
    println!("| path | triggers | seconds | per second |\n| --- | --- | --- | --- |");
    let redis = RedisServer::start();
    let rt = runtime();
    let _enter = rt.enter();
    let n = sizes.schedule;
    let triggers: Vec<(String, String, Duration)> = (0..n)
        .map(|i| ("remind".into(), i.to_string(), Duration::from_secs(3600)))
        .collect();

    let pools = pools(&redis);
    let repo = TriggerRepo::new(&pools, "bench").unwrap();
    library_paths(&rt, &repo, &redis, &triggers, report);
    cli_file(&redis, &triggers);
    flush(&redis);
    cli_process_each(&redis, sizes);
    println!();
}

/// The library's batch path (against its target), then one `set` at a
/// time (a twentieth of the triggers); `redis` is emptied after each.
fn library_paths(
    rt: &tokio::runtime::Runtime,
    repo: &TriggerRepo,
    redis: &RedisServer,
    triggers: &Triggers,
    report: &mut Report,
) {
    let n = triggers.len();
    let batched = rt.block_on(async {
        repo.set_many(&triggers[..1000]).await.unwrap();
        let start = Instant::now();
        let keys = repo.set_many(triggers).await.unwrap();
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
    flush(redis);

    let single_n = n / 20;
    let single = rt.block_on(async {
        let start = Instant::now();
        for (action, id, ttl) in &triggers[..single_n] {
            repo.set(action, id, *ttl).await.unwrap();
        }
        start.elapsed()
    });
    row("library, one `set` at a time", single_n, single);
    flush(redis);
}

/// The CLI's `trigger set-many FILE`, all the triggers in one process.
fn cli_file(redis: &RedisServer, triggers: &Triggers) {
    let n = triggers.len();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("triggers.txt");
    let mut text = String::new();
    for (action, id, _) in triggers {
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
}

/// The CLI's `trigger set`, a process each (5 with `--quick`, else 50).
fn cli_process_each(redis: &RedisServer, sizes: Sizes) {
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
}

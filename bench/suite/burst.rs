//! Section 3, `burst`: 100 000 triggers due within one second, a Rust
//! plugin making one repository write each, with 1 and with 3 host
//! processes. Then (3c) the floor: what Redis spends per job when the
//! claims keep ahead of the TTL and the writes and finishes go in one
//! pipeline per claim.

use std::time::{Duration, Instant};

use symphony_host::backend::RedisConn;
use symphony_host::delivery::Delivery;
use symphony_host::pools::PoolAlias;
use symphony_host::repo::TriggerRepo;

use crate::common::{Measured, Report, Sizes, pools, quantile, runtime};
use crate::e2e::{RunFigures, arm_spread, figures, start_host, wait_count};
use crate::measure::{
    CommandStats, command_stats, cpu_secs, info_field, print_command_stats, redis_cpu_secs,
    reset_command_stats, rss_mib,
};
use crate::support::{Host, RedisServer};

/// The host's sweeper claims up to 500 at a time.
const CLAIM: usize = 500;

/// What one burst measured, before it is printed and checked.
struct BurstRun {
    /// Triggers armed.
    n: usize,
    /// Time to arm them all.
    arm_took: Duration,
    /// Whether the hosts ran them all within the wait.
    done: bool,
    /// From the hosts' dispatch lines.
    figures: RunFigures,
    /// Redis's commands while the burst ran.
    stats: CommandStats,
    /// CPU per job in this bench (reading the hosts' lines), µs.
    bench_cpu_us: f64,
    /// CPU per job in the hosts, µs.
    host_cpu_us: f64,
    /// CPU per job in redis-server, µs.
    redis_cpu_us: f64,
    /// Each host's peak RSS (`VmHWM`), MiB, as printed.
    rss_peak: Vec<String>,
}

impl BurstRun {
    /// Dispatches per second, first start to last start.
    fn rate(&self) -> f64 {
        self.figures.ran as f64 / (self.figures.start_span_ms / 1000.0).max(0.001)
    }

    /// Lateness p99, ms.
    fn p99(&self) -> f64 {
        quantile(&self.figures.late_ms, 0.99)
    }

    /// Whether every trigger ran exactly once.
    fn exact(&self) -> bool {
        self.done && self.figures.ran == self.n && self.figures.distinct == self.n
    }
}

/// Section 3: a burst of `sizes.burst` on `hosts` host processes; prints
/// its table and returns what it measured (for section `library`).
pub(crate) fn run(sizes: Sizes, hosts: usize, report: &mut Report) -> Measured {
    let n = sizes.burst;
    println!("## 3. Burst: {n} triggers due within 1 s, {hosts} host process(es)\n");
    let b = measure_burst(n, hosts);
    print_burst(&b);
    let measured = Measured {
        expected: n,
        ran: b.figures.ran,
        distinct: b.figures.distinct,
        rate: b.rate(),
        late_ms: b.figures.late_ms.clone(),
        cpu_us: b.host_cpu_us,
        redis_cpu_us: b.redis_cpu_us,
        failed_writes: 0,
    };
    check_burst(&b, hosts, report);
    measured
}

/// Runs the burst: a redis-server, `hosts` hosts, `n` triggers armed due
/// from 3 s out over 1 s; waits for them all, then stops the hosts.
fn measure_burst(n: usize, hosts: usize) -> BurstRun {
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
    BurstRun {
        n,
        arm_took,
        done,
        figures: f,
        stats,
        bench_cpu_us,
        host_cpu_us,
        redis_cpu_us,
        rss_peak,
    }
}

/// The burst's table and where Redis spent its time.
fn print_burst(b: &BurstRun) {
    let (n, f, arm_took) = (b.n, &b.figures, b.arm_took);
    let (rate, p99) = (b.rate(), b.p99());
    let (host_cpu_us, redis_cpu_us, bench_cpu_us) = (b.host_cpu_us, b.redis_cpu_us, b.bench_cpu_us);
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
    println!(
        "| host peak RSS (VmHWM) | {} MiB |\n",
        b.rss_peak.join(", ")
    );
    print_command_stats("What Redis spent its time on", &b.stats, n);
    println!();
}

/// The burst's figures against their targets, and the exactly-once check.
fn check_burst(b: &BurstRun, hosts: usize, report: &mut Report) {
    let (n, f) = (b.n, &b.figures);
    let (rate, p99, exact) = (b.rate(), b.p99(), b.exact());
    let (host_cpu_us, redis_cpu_us) = (b.host_cpu_us, b.redis_cpu_us);
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
}

/// The least Redis can spend per job with today's scripts: the burst's
/// triggers claimed ahead of their TTL (so Redis expires none of them),
/// each job's one write sent in one pipeline per claim, and the finishes
/// in one `ZREM` per claim, by one client and no host. What the host adds
/// on top of this (its commands one by one, and the keys it claims after
/// Redis has expired them) is the difference from the burst's figure.
pub(crate) fn redis_floor(sizes: Sizes, report: &mut Report) {
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
    let (claims, jobs) = rt.block_on(claim_and_finish(&delivery, &writes, n, deadline));
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

/// Claims the floor's `n` triggers as they come due (until `deadline`),
/// makes each one's write in one pipeline per claim on `writes`, and
/// finishes each claim at once; returns the claims made and the jobs done.
async fn claim_and_finish(
    delivery: &Delivery,
    writes: &RedisConn,
    n: usize,
    deadline: Instant,
) -> (usize, usize) {
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
}

//! Section 4, `steady`: a steady load (200/s and 5000/s, for 30 s), each
//! trigger due 1 s after it is set. Lateness comes from `late_us`, to the
//! microsecond.

use std::time::{Duration, Instant};

use symphony_host::repo::TriggerRepo;

use crate::common::{Measured, Report, Sizes, pools, quantile, runtime};
use crate::e2e::{RunFigures, figures, start_host, wait_count};
use crate::support::RedisServer;

/// Section 4: `rate` triggers a second for `sizes.steady_secs` on one
/// host; prints its table and returns what it measured (for section
/// `library`).
pub(crate) fn run(sizes: Sizes, rate: usize, report: &mut Report) -> Measured {
    let secs = sizes.steady_secs;
    let n = rate * secs as usize;
    println!("## 4. Steady load: {rate}/s for {secs} s, each due 1 s after it is set\n");
    let redis = RedisServer::start();
    let mut host = start_host(&redis);
    let rt = runtime();
    let _enter = rt.enter();
    let pools = pools(&redis);
    let repo = TriggerRepo::new(&pools, "bench").unwrap();
    let prefix = format!("s{rate}-");
    rt.block_on(arm_at_rate(&repo, &prefix, rate, n));
    let done = wait_count(
        std::slice::from_ref(&host),
        &prefix,
        n,
        Duration::from_secs(60),
    );
    let f = figures(std::slice::from_ref(&host), &prefix);
    host.terminate(Duration::from_secs(30));
    report_steady(&f, rate, n, done, report);
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

/// Arms `n` triggers of `prefix`, `rate` a second (a batch every 10 ms),
/// each due 1 s after it is set.
async fn arm_at_rate(repo: &TriggerRepo, prefix: &str, rate: usize, n: usize) {
    let start = Instant::now();
    let mut armed = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while armed < n {
        tick.tick().await;
        let due_now = ((start.elapsed().as_secs_f64() * rate as f64) as usize).min(n);
        let batch: Vec<(&str, String, Duration)> = (armed..due_now)
            .map(|k| ("poly_write", format!("{prefix}{k}"), Duration::from_secs(1)))
            .collect();
        if !batch.is_empty() {
            repo.set_many(&batch).await.unwrap();
        }
        armed = due_now;
    }
}

/// The load's table, its lateness against the target, and the
/// exactly-once check (`done`: every trigger ran within the wait).
fn report_steady(f: &RunFigures, rate: usize, n: usize, done: bool, report: &mut Report) {
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
}

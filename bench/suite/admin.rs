//! Section 7, `admin`: what the admin server costs. The burst with 1 host,
//! the admin server off, then on with a client reading `/metrics` and the
//! dashboard's overview every second; alternated, 5 pairs (1 with
//! `--quick`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use symphony_host::repo::TriggerRepo;

use crate::common::{Report, Sizes, pools, runtime};
use crate::e2e::{arm_spread, figures, poly_entry, wait_count};
use crate::measure::cpu_secs;
use crate::support::{Host, RedisServer};

/// What one burst with the admin server off or on measured.
struct AdminRun {
    /// Dispatches per second, first start to last start.
    rate: f64,
    /// The host's CPU per job, µs.
    cpu_us: f64,
    /// Whether every trigger ran exactly once.
    exact: bool,
}

/// Section 7: alternated pairs of bursts, the admin server off then on.
pub(crate) fn run(sizes: Sizes, report: &mut Report) {
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
        let without = admin_burst(sizes, false);
        let with = admin_burst(sizes, true);
        exact &= without.exact && with.exact;
        let (a, ca, b, cb) = (without.rate, without.cpu_us, with.rate, with.cpu_us);
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

/// One burst of `sizes.burst` on one host, the admin server off or on (and
/// read every second, as an open dashboard and a Prometheus scrape would):
/// the dispatch rate, the host's CPU per job (µs), and whether every
/// trigger ran once.
fn admin_burst(sizes: Sizes, admin: bool) -> AdminRun {
    let n = sizes.burst;
    let redis = RedisServer::start();
    let runtime_lines = std::env::var("BENCH_RUNTIME").unwrap_or_default();
    let args: &[&str] = if admin {
        &[]
    } else {
        &["--admin-listen", "off"]
    };
    let mut host = Host::start_with_args(&redis, &poly_entry(""), &runtime_lines, args);
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = admin.then(|| spawn_scraper(host.admin_url(), stop.clone()));
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
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = scraper {
        let reads = s.join().unwrap();
        assert!(reads > 0, "the admin server answered no read");
    }
    host.terminate(Duration::from_secs(30));
    AdminRun {
        rate: f.ran as f64 / (f.start_span_ms / 1000.0).max(0.001),
        cpu_us,
        exact: done && f.ran == n && f.distinct == n,
    }
}

/// A thread reading `/metrics` and the dashboard's overview from the admin
/// server at `base` every second until `stop`; it returns the reads made.
fn spawn_scraper(base: String, stop: Arc<AtomicBool>) -> JoinHandle<u32> {
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut reads = 0u32;
        while !stop.load(Ordering::Relaxed) {
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
}

//! Section 8, `cluster`: the burst on a standalone server and on a
//! 3-primary Redis Cluster, 1 and 3 hosts (1 with `--quick`), with CPU per
//! job in the hosts and in each primary, and with every key in one slot;
//! and what arming one trigger at a time costs there.

use std::time::{Duration, Instant};

use symphony_host::pools::Pools;
use symphony_host::repo::TriggerRepo;

use crate::common::{Report, Sizes, quantile, runtime};
use crate::e2e::{arm_spread, figures, start_host, wait_count};
use crate::measure::{
    command_stats, cpu_secs, print_command_stats, redis_cpu_secs, reset_command_stats,
};
use crate::support::{Backend, Host, RedisCluster, RedisServer};

/// What one burst on a backend measured.
struct ClusterRun {
    /// Dispatches per second, first start to last start.
    rate: f64,
    /// Lateness p99, ms.
    p99_ms: f64,
    /// CPU per job in the hosts, µs.
    host_cpu_us: f64,
    /// CPU per job in each primary (one entry standalone).
    node_cpu_us: Vec<f64>,
    /// Whether every trigger ran exactly once.
    exact: bool,
}

/// One row of the section's table.
struct Row {
    /// `standalone` or `cluster, 3 primaries`.
    backend: &'static str,
    /// Host processes.
    hosts: usize,
    /// The slots the keys spread over: `1 server`, `16 384 slots` or `1 slot`.
    over: &'static str,
    /// What the burst measured.
    run: ClusterRun,
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
pub(crate) fn run(sizes: Sizes, report: &mut Report) {
    let n = sizes.burst;
    println!(
        "## 8. Cluster: the burst ({n} due within 1 s) on a standalone server and on a 3-primary cluster\n"
    );
    let host_counts: &[usize] = if sizes.quick { &[1] } else { &[1, 3] };
    let mut rows = Vec::new();
    for &hosts in host_counts {
        bursts_with(hosts, n, &mut rows);
    }
    arming_cost(sizes);
    print_rows(&rows, report);
    check_rows(&rows, report);
}

/// The bursts with `hosts` hosts: on a standalone server, on a cluster,
/// and (1 host) on the cluster with every key in one slot.
fn bursts_with(hosts: usize, n: usize, rows: &mut Vec<Row>) {
    let redis = RedisServer::start();
    let r = burst_on(&redis, &[&redis], hosts, n, &format!("sa{hosts}-"), None);
    rows.push(Row {
        backend: "standalone",
        hosts,
        over: "1 server",
        run: r,
    });
    let cluster = RedisCluster::start();
    let primaries: Vec<&RedisServer> = cluster
        .primaries()
        .into_iter()
        .map(|(i, _)| &cluster.nodes[i])
        .collect();
    let r = burst_on(&cluster, &primaries, hosts, n, &format!("cl{hosts}-"), None);
    rows.push(Row {
        backend: "cluster, 3 primaries",
        hosts,
        over: "16 384 slots",
        run: r,
    });
    if hosts == 1 {
        let r = burst_on(&cluster, &primaries, hosts, n, "one-", Some("b"));
        rows.push(Row {
            backend: "cluster, 3 primaries",
            hosts,
            over: "1 slot",
            run: r,
        });
    }
}

/// The section's table, and each row's exactly-once check.
fn print_rows(rows: &[Row], report: &mut Report) {
    println!(
        "| backend | hosts | keys over | dispatch rate | lateness p99 | host CPU per job | redis CPU per job, each primary | redis CPU per job, all |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for Row {
        backend,
        hosts,
        over,
        run: r,
    } in rows
    {
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
}

/// The cluster's figures against standalone's, and the hosts' cost per job
/// with keys over all slots against one.
fn check_rows(rows: &[Row], report: &mut Report) {
    let busiest = |r: &ClusterRun| r.node_cpu_us.iter().copied().fold(0.0, f64::max);
    if let (Some(sa), Some(cl)) = (
        rows.iter()
            .find(|r| r.backend == "standalone" && r.hosts == 1),
        rows.iter()
            .find(|r| r.backend != "standalone" && r.hosts == 1 && r.over != "1 slot"),
    ) {
        report.check(
            "cluster: redis CPU per job on the busiest primary, against standalone's server",
            format!("{:.1} vs {:.1} µs", busiest(&cl.run), busiest(&sa.run)),
            "lower",
            busiest(&cl.run) < busiest(&sa.run),
        );
    }
    // The hosts' cost per job must not follow the number of slots the keys
    // spread over: all 16 384 against one, within a quarter (a constant
    // for the grouping and hints of many pairs; per-slot work would be
    // many times).
    if let (Some(spread), Some(one)) = (
        rows.iter()
            .find(|r| r.backend != "standalone" && r.hosts == 1 && r.over != "1 slot"),
        rows.iter().find(|r| r.over == "1 slot"),
    ) {
        let ratio = spread.run.host_cpu_us / one.run.host_cpu_us.max(f64::EPSILON);
        report.check(
            "cluster: host CPU per job, keys over 16 384 slots against one slot",
            format!(
                "{:.0} vs {:.0} µs ({ratio:.2}x)",
                spread.run.host_cpu_us, one.run.host_cpu_us
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

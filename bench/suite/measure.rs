//! What the sections read from the processes they run: CPU time of a
//! process and of redis-server, a host's RSS, `INFO` fields and
//! `INFO commandstats` (where Redis's time goes).

use std::collections::HashMap;

use crate::support::{Host, RedisServer};

/// Calls and µs of each command (`INFO commandstats`), by command name.
pub(crate) type CommandStats = HashMap<String, (u64, u64)>;

/// CPU seconds (user + system) the process has used so far.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
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
pub(crate) fn redis_cpu_secs(redis: &RedisServer) -> f64 {
    info_field::<f64>(redis, "cpu", "used_cpu_sys")
        + info_field::<f64>(redis, "cpu", "used_cpu_user")
}

/// A numeric field of `INFO section` (zero if absent).
pub(crate) fn info_field<T: std::str::FromStr + Default>(
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

/// A memory field of the host's `/proc/PID/status` (`VmRSS`, `VmHWM`,
/// `RssAnon`), in MiB.
pub(crate) fn rss_mib(host: &Host, field: &str) -> f64 {
    host.proc_status_kib(field) as f64 / 1024.0
}

/// Resets `INFO commandstats` on `nodes`.
pub(crate) fn reset_command_stats(nodes: &[&RedisServer]) {
    for node in nodes {
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut node.conn(0))
            .unwrap();
    }
}

/// Calls and µs of each command on `nodes` since the last reset (`INFO
/// commandstats`), summed over the nodes.
pub(crate) fn command_stats(nodes: &[&RedisServer]) -> CommandStats {
    let mut stats = CommandStats::new();
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
pub(crate) fn print_command_stats(label: &str, stats: &CommandStats, jobs: usize) {
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

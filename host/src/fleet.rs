//! Every host on one Redis, by heartbeat. Each host writes its record into
//! the hash [`HOSTS`] (in the expiry pool's DB) every [`HEARTBEAT`], and
//! removes it when it stops; a reader sees a host as alive while its last
//! beat is recent, so whichever host serves the admin API shows the whole
//! fleet. Records of hosts silent for [`FORGET_AFTER`] (killed, not
//! stopped) are removed by the next beat of any host.
//!
//! Each record also carries the jobs the host finished in the last minute,
//! so any host can show the fleet's dispatch rate.
//!
//! Times are each host's own clock (Unix ms): hosts whose clocks differ by
//! more than [`ALIVE_WITHIN`] show each other as gone.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::backend::RedisConn;
use crate::context::HostContext;
use crate::error::RepoError;
use crate::pools::PoolAlias;
use crate::throttle::Throttle;

/// The hash of host records: host id → JSON [`HostRecord`].
pub const HOSTS: &str = "symphony:hosts";
/// How often a host writes its record.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A host whose last beat is older than this is shown as gone.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(10);
/// Running jobs a host lists in its record (the oldest first).
pub const RUNNING_LISTED: usize = 200;
/// A record older than this is removed.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// What a host says about itself in each beat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// `hostname:pid:random`, unique per process.
    pub id: String,
    /// The machine's name.
    pub hostname: String,
    /// The process id.
    pub pid: u32,
    /// The symphony-host version.
    pub version: String,
    /// When it started (Unix ms).
    pub started_ms: i64,
    /// Its last beat (Unix ms).
    pub last_seen_ms: i64,
    /// Jobs it was running at its last beat.
    pub in_flight: usize,
    /// The oldest of them (at most [`RUNNING_LISTED`]): index member and
    /// start time (Unix ms).
    #[serde(default)]
    pub running: Vec<(String, i64)>,
    /// Jobs it finished in the last minute (by its beats), all outcomes.
    #[serde(default)]
    pub minute_dispatches: u64,
    /// Of those, the ones that did not return ok.
    #[serde(default)]
    pub minute_failed: u64,
    /// Its admin server, if any.
    pub admin_url: Option<String>,
}

/// A record as read, with whether the host is alive now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostView {
    /// The record.
    #[serde(flatten)]
    pub record: HostRecord,
    /// Its last beat is within [`ALIVE_WITHIN`].
    pub alive: bool,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

impl HostRecord {
    /// The record of this process, started now.
    pub fn this_process(admin_url: Option<String>) -> Self {
        let hostname = hostname();
        let pid = std::process::id();
        let now = crate::unix_ms();
        Self {
            id: format!("{hostname}:{pid}:{:08x}", fastrand::u32(..)),
            hostname,
            pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_ms: now,
            last_seen_ms: now,
            in_flight: 0,
            running: Vec::new(),
            minute_dispatches: 0,
            minute_failed: 0,
            admin_url,
        }
    }
}

/// Every host record, newest beat first, with whether each is alive.
/// Entries that are not records are skipped.
///
/// # Errors
/// Redis failing.
pub async fn list(conn: &RedisConn) -> Result<Vec<HostView>, RepoError> {
    let all: Vec<(String, String)> = conn.query(redis::cmd("HGETALL").arg(HOSTS)).await?;
    let now = crate::unix_ms();
    let alive_ms = i64::try_from(ALIVE_WITHIN.as_millis()).unwrap_or(i64::MAX);
    let mut hosts: Vec<HostView> = all
        .into_iter()
        .filter_map(|(_, json)| serde_json::from_str::<HostRecord>(&json).ok())
        .map(|record| HostView {
            alive: now.saturating_sub(record.last_seen_ms) <= alive_ms,
            record,
        })
        .collect();
    hosts.sort_by_key(|h| std::cmp::Reverse(h.record.last_seen_ms));
    Ok(hosts)
}

/// Writes `record` (its `last_seen_ms` set to now) and removes records
/// silent for [`FORGET_AFTER`].
async fn beat(conn: &RedisConn, record: &mut HostRecord) -> Result<(), RepoError> {
    record.last_seen_ms = crate::unix_ms();
    let json = serde_json::to_string(record)
        .map_err(|e| RepoError::InvalidInput(format!("cannot encode the host record: {e}")))?;
    let _: () = conn
        .query(redis::cmd("HSET").arg(HOSTS).arg(&record.id).arg(json))
        .await?;
    let forget_ms = i64::try_from(FORGET_AFTER.as_millis()).unwrap_or(i64::MAX);
    let stale: Vec<String> = list(conn)
        .await?
        .into_iter()
        .filter(|h| record.last_seen_ms.saturating_sub(h.record.last_seen_ms) > forget_ms)
        .map(|h| h.record.id)
        .collect();
    if !stale.is_empty() {
        let _: () = conn
            .query(redis::cmd("HDEL").arg(HOSTS).arg(&stale))
            .await?;
    }
    Ok(())
}

/// The heartbeat service: beats until `cancel`, then removes the record.
///
/// # Errors
/// The expiry pool is not configured. Redis failing is logged (at most
/// once a minute) and retried at the next beat.
pub async fn heartbeat(
    ctx: HostContext,
    mut record: HostRecord,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let conn = ctx.pools().get(PoolAlias::Expiry)?.conn();
    let errors = Throttle::new(Duration::from_secs(60));
    let mut tick = tokio::time::interval(HEARTBEAT);
    // (finished, failed) at each of the last minute's beats, oldest first.
    let beats_per_minute = (60 / HEARTBEAT.as_secs().max(1)) as usize;
    let mut past: std::collections::VecDeque<(u64, u64)> =
        std::collections::VecDeque::with_capacity(beats_per_minute + 1);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let mut running: Vec<(String, i64)> = ctx.in_flight().lock().map_or_else(
            |_| Vec::new(),
            |s| s.iter().map(|(m, r)| (m.clone(), r.since_ms)).collect(),
        );
        record.in_flight = running.len();
        running.sort_by_key(|(_, since)| *since);
        running.truncate(RUNNING_LISTED);
        record.running = running;
        let now = ctx.stats().finished();
        past.push_back(now);
        if past.len() > beats_per_minute + 1 {
            past.pop_front();
        }
        let then = past.front().copied().unwrap_or(now);
        record.minute_dispatches = now.0.saturating_sub(then.0);
        record.minute_failed = now.1.saturating_sub(then.1);
        if let Err(e) = beat(&conn, &mut record).await
            && let Some(suppressed) = errors.allow()
        {
            warn!(event = "heartbeat_failed", error = %e, suppressed, "cannot write this host's heartbeat; retrying");
        }
    }
    let removed: Result<(), _> = conn
        .query(redis::cmd("HDEL").arg(HOSTS).arg(&record.id))
        .await;
    if let Err(e) = removed {
        warn!(event = "heartbeat_failed", error = %e, "cannot remove this host's record; it shows as gone after 10 s");
    }
    Ok(())
}

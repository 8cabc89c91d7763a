//! Per-tenant quotas (`[tenants."name"]`, `[tenants."*"]` for the
//! default): dispatches per second, Redis calls per second, and triggers
//! pending.
//!
//! At a rate quota the work is **deferred**, never dropped or refused: a
//! tenant's next job waits in its queue until its bucket refills (its lease
//! is renewed meanwhile, so nothing runs twice), and a host call waits for
//! its token (the wait counts against the job's timeout). Buckets hold one
//! second's worth of tokens, so a tenant may burst to its rate and then
//! runs at it.
//!
//! At the pending-trigger quota a plugin's `trigger.set` is **refused**
//! with `denied("quota: ...")`, and sets nothing: deferring it would hold
//! the job until some other trigger fires. The count is the tenant's due
//! index (`symphony:due:{tenant}`), checked in the arming script, so it
//! holds across hosts. Each deferral and refusal is counted and logged
//! (throttled), with the tenant.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::budget::Usage;
use crate::error::RepoError;
use crate::throttle::Throttle;

/// `[tenants."name"]`: one tenant's quotas (unset: no limit, or the `"*"`
/// entry's value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TenantQuota {
    /// Jobs of this tenant started per second, over all its plugins.
    pub dispatches_per_second: Option<NonZeroU32>,
    /// Repository and pub/sub calls of this tenant's jobs per second.
    pub redis_calls_per_second: Option<NonZeroU32>,
    /// Triggers this tenant may have pending in the due index; a plugin's
    /// `trigger.set` of a new one beyond it is refused.
    pub max_pending_triggers: Option<NonZeroU32>,
    /// KiB of Redis memory this tenant's keys may take; a plugin's write
    /// beyond it is refused (`crate::budget`).
    pub max_memory_kib: Option<NonZeroU32>,
}

impl TenantQuota {
    /// This entry, its unset fields taken from `default`.
    fn or(self, default: TenantQuota) -> TenantQuota {
        TenantQuota {
            dispatches_per_second: self.dispatches_per_second.or(default.dispatches_per_second),
            redis_calls_per_second: self
                .redis_calls_per_second
                .or(default.redis_calls_per_second),
            max_pending_triggers: self.max_pending_triggers.or(default.max_pending_triggers),
            max_memory_kib: self.max_memory_kib.or(default.max_memory_kib),
        }
    }
}

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Dispatch,
    RedisCall,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Dispatch => "dispatches_per_second",
            Kind::RedisCall => "redis_calls_per_second",
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The quotas of every tenant and their buckets.
#[derive(Debug)]
pub struct Quotas {
    entries: BTreeMap<String, TenantQuota>,
    default: TenantQuota,
    buckets: Mutex<HashMap<(String, Kind), Bucket>>,
    deferred_dispatches: AtomicU64,
    delayed_calls: AtomicU64,
    refused_triggers: AtomicU64,
    /// One log throttle per kind of quota.
    logs: [Throttle; 4],
    /// What each tenant's keys take in Redis (`max_memory_kib`).
    usage: Arc<Usage>,
    refused_writes: AtomicU64,
    /// On a Redis Cluster: each tenant's pending triggers as last counted
    /// (and when), plus those this host armed since.
    pending: Mutex<HashMap<String, Arc<tokio::sync::Mutex<PendingCount>>>>,
}

/// One tenant's pending count on a Cluster: when it was counted, and the
/// count since then. Admissions of a tenant hold its lock, so concurrent
/// jobs neither count at once nor lose each other's additions.
#[derive(Debug, Default)]
struct PendingCount {
    at: Option<Instant>,
    n: u64,
}

/// How long a tenant's pending count on a Cluster is used before it is
/// counted again.
pub const PENDING_COUNT_FOR: Duration = Duration::from_secs(1);

impl Default for Quotas {
    fn default() -> Self {
        Quotas::new(&BTreeMap::new())
    }
}

impl Quotas {
    /// Quotas from the manifest's `[tenants]` table (`"*"` is the default).
    pub fn new(table: &BTreeMap<String, TenantQuota>) -> Quotas {
        let default = table.get("*").copied().unwrap_or_default();
        Quotas {
            entries: table
                .iter()
                .filter(|(name, _)| name.as_str() != "*")
                .map(|(name, q)| (name.clone(), q.or(default)))
                .collect(),
            default,
            buckets: Mutex::default(),
            deferred_dispatches: AtomicU64::new(0),
            delayed_calls: AtomicU64::new(0),
            refused_triggers: AtomicU64::new(0),
            logs: [
                Throttle::new(Duration::from_secs(10)),
                Throttle::new(Duration::from_secs(10)),
                Throttle::new(Duration::from_secs(10)),
                Throttle::new(Duration::from_secs(10)),
            ],
            usage: Arc::default(),
            refused_writes: AtomicU64::new(0),
            pending: Mutex::default(),
        }
    }

    /// The quota in force for `tenant`.
    pub fn of(&self, tenant: &str) -> TenantQuota {
        self.entries.get(tenant).copied().unwrap_or(self.default)
    }

    /// Whether any quota is set (none: every check is skipped).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.default == TenantQuota::default()
    }

    /// Takes a token for `tenant`, or says how long until one is there.
    fn take(&self, tenant: &str, kind: Kind, rate: Option<NonZeroU32>) -> Result<(), Duration> {
        let Some(rate) = rate.map(|r| f64::from(r.get())) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.entry((tenant.to_owned(), kind)).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let elapsed = now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    fn note(&self, tenant: &str, kind: Kind, wait: Duration) {
        let [dispatch_log, call_log, ..] = &self.logs;
        let (counter, log) = match kind {
            Kind::Dispatch => (&self.deferred_dispatches, dispatch_log),
            Kind::RedisCall => (&self.delayed_calls, call_log),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = log.allow() {
            tracing::warn!(
                event = "quota_deferred",
                tenant,
                quota = kind.as_str(),
                wait_ms = crate::millis(wait),
                suppressed,
                "tenant at its quota; its work is deferred"
            );
        }
    }

    /// May `tenant` start a job now? If not, how long until it may (the
    /// deferral is counted and logged).
    pub fn try_dispatch(&self, tenant: &str) -> Result<(), Duration> {
        if self.is_empty() {
            return Ok(());
        }
        let rate = self.of(tenant).dispatches_per_second;
        self.take(tenant, Kind::Dispatch, rate)
            .inspect_err(|wait| self.note(tenant, Kind::Dispatch, *wait))
    }

    /// Waits until `tenant` may make a Redis call (at once when under its quota).
    pub async fn redis_call(&self, tenant: &str) {
        if self.is_empty() {
            return;
        }
        let rate = self.of(tenant).redis_calls_per_second;
        let mut noted = false;
        while let Err(wait) = self.take(tenant, Kind::RedisCall, rate) {
            if !noted {
                self.note(tenant, Kind::RedisCall, wait);
                noted = true;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Counts and logs (throttled) a trigger refused at the tenant's
    /// pending-trigger quota; other errors are not this module's.
    pub fn note_refused(&self, tenant: &str, error: &crate::error::RepoError) {
        let crate::error::RepoError::Denied(why) = error else {
            return;
        };
        if !why.starts_with("quota:") {
            return;
        }
        self.refused_triggers.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.logs[2].allow() {
            tracing::warn!(
                event = "quota_refused",
                tenant,
                quota = "max_pending_triggers",
                limit = self
                    .of(tenant)
                    .max_pending_triggers
                    .map_or(0, NonZeroU32::get),
                suppressed,
                "tenant at its quota; a new trigger was refused"
            );
        }
    }

    /// On a Redis Cluster, where no script can count a tenant's index
    /// (it is split over the slots): admits one new trigger of `tenant`
    /// under `cap`. The count (`count`) is taken again when older than
    /// [`PENDING_COUNT_FOR`], and each trigger admitted since is added to
    /// it, so this host alone never passes the cap; other hosts' arms of
    /// the last second are seen at the next count. At the cap, a trigger
    /// already pending (`pending`) is admitted: arming it again adds none.
    ///
    /// # Errors
    /// [`RepoError::Denied`] (`quota: ...`) at the cap; Redis failing.
    pub async fn admit_pending<C, P>(
        &self,
        tenant: &str,
        cap: NonZeroU32,
        count: impl FnOnce() -> C,
        pending: impl FnOnce() -> P,
    ) -> Result<(), RepoError>
    where
        C: std::future::Future<Output = Result<u64, RepoError>>,
        P: std::future::Future<Output = Result<bool, RepoError>>,
    {
        let entry = self.pending_count(tenant);
        let mut tally = entry.lock().await;
        if tally.at.is_none_or(|at| at.elapsed() >= PENDING_COUNT_FOR) {
            tally.n = count().await?;
            tally.at = Some(Instant::now());
        }
        if tally.n >= u64::from(cap.get()) {
            if pending().await? {
                return Ok(());
            }
            return Err(RepoError::pending_quota(tenant, cap));
        }
        tally.n += 1;
        Ok(())
    }

    fn pending_count(&self, tenant: &str) -> Arc<tokio::sync::Mutex<PendingCount>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(tenant.to_owned())
            .or_default()
            .clone()
    }

    /// A plugin cancelled one of `tenant`'s pending triggers: one fewer in
    /// the count [`admit_pending`](Self::admit_pending) keeps.
    /// A tenant never counted has nothing to take one from.
    pub async fn note_cancelled(&self, tenant: &str) {
        let entry = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tenant)
            .cloned();
        if let Some(entry) = entry {
            let mut tally = entry.lock().await;
            tally.n = tally.n.saturating_sub(1);
        }
    }

    /// Whether any tenant has a memory budget (then the keyspace is
    /// measured, [`crate::budget::measure`]).
    pub fn has_memory_budgets(&self) -> bool {
        self.default.max_memory_kib.is_some()
            || self.entries.values().any(|q| q.max_memory_kib.is_some())
    }

    /// The memory budget of `tenant` in bytes, if it has one.
    pub fn memory_budget(&self, tenant: &str) -> Option<u64> {
        self.of(tenant)
            .max_memory_kib
            .map(|kib| u64::from(kib.get()) * 1024)
    }

    /// What each tenant's keys take in Redis, as this host knows it.
    pub fn usage(&self) -> &Arc<Usage> {
        &self.usage
    }

    /// Admits a plugin's write for `tenant` under its memory budget, at
    /// `cost()` bytes (what Redis may take for it: see
    /// [`crate::budget::write_cost`]; computed only for a budgeted tenant).
    ///
    /// # Errors
    /// [`RepoError::Denied`] (`quota: ...`) when it would take the tenant
    /// past its `max_memory_kib`; nothing is charged.
    pub fn store(&self, tenant: &str, cost: impl FnOnce() -> u64) -> Result<(), RepoError> {
        let Some(budget) = self.memory_budget(tenant) else {
            return Ok(());
        };
        let bytes = cost();
        let Err(used) = self.usage.charge(tenant, bytes, budget) else {
            return Ok(());
        };
        self.refused_writes.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.logs[3].allow() {
            tracing::warn!(
                event = "quota_refused",
                tenant,
                quota = "max_memory_kib",
                used_kib = used / 1024,
                limit_kib = budget / 1024,
                suppressed,
                "tenant at its memory budget; a write was refused"
            );
        }
        Err(RepoError::Denied(format!(
            "quota: tenant {tenant:?} takes about {} KiB of Redis memory; its \
             max_memory_kib is {}, and this write of {bytes} bytes was refused \
             (deleting keys frees space)",
            used / 1024,
            budget / 1024
        )))
    }

    /// Plugin writes refused at a tenant's memory budget, since start.
    pub fn refused_writes(&self) -> u64 {
        self.refused_writes.load(Ordering::Relaxed)
    }

    /// Jobs deferred, host calls delayed and triggers refused by a quota,
    /// since start.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.deferred_dispatches.load(Ordering::Relaxed),
            self.delayed_calls.load(Ordering::Relaxed),
            self.refused_triggers.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(d: u32, r: u32) -> TenantQuota {
        TenantQuota {
            dispatches_per_second: NonZeroU32::new(d),
            redis_calls_per_second: NonZeroU32::new(r),
            max_pending_triggers: None,
            max_memory_kib: None,
        }
    }

    /// Jobs of one tenant admitting triggers at once on a Cluster, each
    /// finding the count stale: exactly the cap is admitted (counting at
    /// once and writing over each other's count once let 25 of 20 pass).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_admissions_never_pass_the_cap() {
        let q = Arc::new(Quotas::default());
        let cap = NonZeroU32::new(20).unwrap();
        let jobs = (0..8).map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut admitted = 0;
                for _ in 0..20 {
                    let count = || async {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        Ok(0)
                    };
                    let pending = || async { Ok(false) };
                    if q.admit_pending("t", cap, count, pending).await.is_ok() {
                        admitted += 1;
                    }
                }
                admitted
            })
        });
        let mut total = 0;
        for job in jobs {
            total += job.await.unwrap();
        }
        assert_eq!(total, 20);
    }

    #[test]
    fn entries_fall_back_to_the_default_and_buckets_refill() {
        let table = BTreeMap::from([
            ("*".to_owned(), quota(2, 0)),
            ("acme".to_owned(), quota(0, 5)),
        ]);
        let q = Quotas::new(&table);
        assert_eq!(q.of("acme"), quota(2, 5));
        assert_eq!(q.of("other"), quota(2, 0));
        // A burst of the rate, then a wait of about 1 / rate.
        assert!(q.try_dispatch("other").is_ok());
        assert!(q.try_dispatch("other").is_ok());
        let wait = q.try_dispatch("other").unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(q.counts(), (1, 0, 0));
        assert!(Quotas::new(&BTreeMap::new()).is_empty());
    }
}

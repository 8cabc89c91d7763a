//! Prometheus metrics of one host (`GET /metrics` on the admin server).
//!
//! Counters and histograms are updated where things happen (a dispatch, a
//! reload, a listener's reconnect, a Redis error); the gauges of shared
//! state (triggers pending, leases, dead letters, retries) are read from
//! Redis when scraped, a few commands per scrape, never per job.
//!
//! Labels stay bounded: `plugin`, `outcome`, `pool`, `result`, `reason`.
//! A `tenant` label on the dispatch counter is opt-in
//! (`[admin] metrics_tenant_label = true`): a host serving many tenants
//! would otherwise grow a series per tenant, plugin and outcome.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::pools::PoolAlias;
use crate::runtime::Outcome;

type Labels = Vec<(&'static str, String)>;

/// Buckets from 100 µs to about 26 s, doubling.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 19))
}

/// Every metric of the host, registered once.
pub struct Metrics {
    registry: Registry,
    tenant_label: bool,
    dispatches: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    lateness: Family<Labels, Histogram, fn() -> Histogram>,
    queue_wait: Family<Labels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    // Read from Redis when scraped.
    pending: Gauge,
    leases: Gauge,
    dead_letters: Gauge,
    retries: Gauge,
    plugins_loaded: Gauge,
    plugin_info: Family<Labels, Gauge>,
    generation: Gauge,
    listener_connected: Family<Labels, Gauge>,
    listener_reconnects: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
    redis_errors: Counter<u64, AtomicU64>,
    ignored: Family<Labels, Counter<u64, AtomicU64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("tenant_label", &self.tenant_label)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Metrics {
    /// The host's metrics; `tenant_label` adds `tenant` to the dispatch
    /// counter.
    pub fn new(tenant_label: bool) -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("symphony"),
            tenant_label,
            dispatches: Family::default(),
            duration: Family::new_with_constructor(seconds_histogram),
            lateness: Family::new_with_constructor(seconds_histogram),
            queue_wait: Family::new_with_constructor(seconds_histogram),
            in_flight: Gauge::default(),
            pending: Gauge::default(),
            leases: Gauge::default(),
            dead_letters: Gauge::default(),
            retries: Gauge::default(),
            plugins_loaded: Gauge::default(),
            plugin_info: Family::default(),
            generation: Gauge::default(),
            listener_connected: Family::default(),
            listener_reconnects: Family::default(),
            reloads: Family::default(),
            redis_errors: Counter::default(),
            ignored: Family::default(),
        };
        let mut registry = std::mem::take(&mut m.registry);
        m.register_jobs(&mut registry);
        m.register_state(&mut registry);
        m.registry = registry;
        m
    }

    /// Registers the metrics of jobs: counts, durations, lateness.
    fn register_jobs(&self, r: &mut Registry) {
        let m = self;
        r.register(
            "dispatches",
            "Jobs run, by plugin and outcome (ok, error, denied, trap, timeout, memory, fuel, limit)",
            m.dispatches.clone(),
        );
        r.register_with_unit(
            "dispatch_duration",
            "How long a job ran, from its start to its outcome",
            Unit::Seconds,
            m.duration.clone(),
        );
        r.register_with_unit(
            "dispatch_lateness",
            "From a trigger's due time to its job's start",
            Unit::Seconds,
            m.lateness.clone(),
        );
        r.register_with_unit(
            "dispatch_queue_wait",
            "From a claimed firing reaching the dispatcher to its job's start",
            Unit::Seconds,
            m.queue_wait.clone(),
        );
        r.register(
            "jobs_in_flight",
            "Jobs running on this host now",
            m.in_flight.clone(),
        );
    }

    /// Registers the metrics of the shared state, the plugins, the
    /// listeners and Redis.
    fn register_state(&self, r: &mut Registry) {
        let m = self;
        r.register(
            "triggers_pending",
            "Triggers in the due indexes of the expiry pool, every tenant (read from Redis when scraped)",
            m.pending.clone(),
        );
        r.register(
            "leases_held",
            "Firings claimed and not finished, by every host (read from Redis when scraped)",
            m.leases.clone(),
        );
        r.register(
            "dead_letters",
            "Entries of the dead-letter list (read from Redis when scraped)",
            m.dead_letters.clone(),
        );
        r.register(
            "retries_pending",
            "Failed firings waiting for their next attempt (read from Redis when scraped)",
            m.retries.clone(),
        );
        r.register(
            "plugins_loaded",
            "Plugins in the live plugin set",
            m.plugins_loaded.clone(),
        );
        r.register(
            "plugin_info",
            "1 for each live plugin, with its version (first 12 hex digits of its file's SHA-256)",
            m.plugin_info.clone(),
        );
        r.register(
            "plugin_set_generation",
            "Generation of the live plugin set: 0 at start, +1 per reload",
            m.generation.clone(),
        );
        r.register(
            "listener_connected",
            "1 while the pool's keyevent listener is subscribed",
            m.listener_connected.clone(),
        );
        r.register(
            "listener_reconnects",
            "Times the pool's listener subscribed again after losing its connection",
            m.listener_reconnects.clone(),
        );
        r.register(
            "reloads",
            "Plugin-set reloads, by result (ok, failed)",
            m.reloads.clone(),
        );
        r.register(
            "redis_errors",
            "Redis calls that failed (unreachable, or an error reply)",
            m.redis_errors.clone(),
        );
        r.register(
            "keys_ignored",
            "Expired keys not run, by reason (not_trigger, unrouted, tenant_not_served)",
            m.ignored.clone(),
        );
    }

    /// Records a finished job.
    pub fn dispatched(
        &self,
        tenant: &str,
        plugin: &str,
        outcome: &Outcome,
        duration_s: f64,
        late_s: Option<f64>,
        queued_s: f64,
    ) {
        let by_plugin: Labels = vec![("plugin", plugin.to_owned())];
        let mut labels = by_plugin.clone();
        labels.push(("outcome", outcome.as_str().to_owned()));
        if self.tenant_label {
            labels.push(("tenant", tenant.to_owned()));
        }
        self.dispatches.get_or_create(&labels).inc();
        self.duration.get_or_create(&by_plugin).observe(duration_s);
        // A firing whose due time is unknown is not counted as on time.
        if let Some(late_s) = late_s {
            self.lateness
                .get_or_create(&by_plugin)
                .observe(late_s.max(0.0));
        }
        self.queue_wait.get_or_create(&by_plugin).observe(queued_s);
    }

    /// Jobs running on this host now.
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The shared delivery state, read from Redis.
    pub fn set_delivery(&self, g: &crate::delivery::Gauges) {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.pending.set(n(g.pending));
        self.leases.set(n(g.leases));
        self.dead_letters.set(n(g.dead_letters));
        self.retries.set(n(g.retries));
    }

    /// The live plugin set: its generation and `(name, version)` of each plugin.
    pub fn plugin_set<'a>(
        &self,
        generation: u64,
        plugins: impl Iterator<Item = (&'a str, &'a str)>,
    ) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.plugin_info.clear();
        let mut n = 0;
        for (name, version) in plugins {
            self.plugin_info
                .get_or_create(&vec![
                    ("plugin", name.to_owned()),
                    ("version", version.to_owned()),
                ])
                .set(1);
            n += 1;
        }
        self.plugins_loaded.set(n);
    }

    /// A reload's result.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    /// The listener of `pool` subscribed; `again` after losing its connection.
    pub fn listener_subscribed(&self, pool: PoolAlias, again: bool) {
        let labels = vec![("pool", pool.to_string())];
        // One subscription per server: on a cluster, one per node.
        self.listener_connected.get_or_create(&labels).inc();
        let reconnects = self.listener_reconnects.get_or_create(&labels);
        if again {
            reconnects.inc();
        }
    }

    /// The listener of `pool` lost its subscription.
    pub fn listener_lost(&self, pool: PoolAlias) {
        let gauge = self
            .listener_connected
            .get_or_create(&vec![("pool", pool.to_string())]);
        if gauge.dec() <= 0 {
            gauge.set(0);
        }
    }

    /// Whether the listener of `pool` is subscribed now.
    pub fn listener_up(&self, pool: PoolAlias) -> bool {
        self.listener_connected
            .get(&vec![("pool", pool.to_string())])
            .is_some_and(|g| g.get() >= 1)
    }

    /// Sets the count of expired keys not run for `reason` (kept by
    /// `stats::Stats`, which holds these metrics).
    pub(crate) fn set_ignored(&self, reason: &'static str, n: u64) {
        self.ignored
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inner()
            .store(n, Ordering::Relaxed);
    }

    /// The OpenMetrics text of every metric.
    ///
    /// # Errors
    /// Never in practice (writing to a `String`).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        self.redis_errors
            .inner()
            .store(crate::backend::redis_errors(), Ordering::Relaxed);
        let mut out = String::with_capacity(8 * 1024);
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

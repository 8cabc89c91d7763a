//! Counters of what the host heard and did, and its Prometheus
//! [`Metrics`].

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::Metrics;
use crate::recent::Recent;
use crate::runtime::{Job, Outcome};

/// Counters since start.
#[derive(Debug, Default)]
pub struct Stats {
    /// Firings this host claimed and took (each trigger is taken by one host).
    pub heard: AtomicU64,
    /// Expired keys heard that are not trigger keys (or not UTF-8).
    pub not_trigger: AtomicU64,
    /// Trigger keys whose action no plugin owns.
    pub unrouted: AtomicU64,
    /// Triggers of a tenant that the owning plugin may not serve.
    pub tenant_denied: AtomicU64,
    /// Invocations that returned ok.
    pub ok: AtomicU64,
    /// Invocations that returned an error.
    pub error: AtomicU64,
    /// Invocations that trapped.
    pub trap: AtomicU64,
    /// Invocations interrupted by the timeout.
    pub timeout: AtomicU64,
    /// Invocations that failed after a denied host call.
    pub denied: AtomicU64,
    /// Invocations stopped at their memory limit.
    pub memory: AtomicU64,
    /// Invocations out of fuel.
    pub fuel: AtomicU64,
    /// Invocations over their host-call budget.
    pub limit: AtomicU64,
    /// Claimed firings not started because their lease was lost first.
    pub lease_lost: AtomicU64,
    /// Old dead letters trimmed to keep `[delivery] max_dead_letters`.
    pub dead_trimmed: AtomicU64,
    /// Labelled counters, histograms and gauges, for `GET /metrics`.
    pub metrics: Metrics,
    /// Why the last reload was rejected; `None` after one that succeeded.
    pub last_reload_error: std::sync::Mutex<Option<String>>,
    /// The last dispatches and the minute and hour windows (dashboard).
    pub recent: Recent,
    /// Whether an admin server reads `metrics` and `recent`: without one,
    /// dispatches are not recorded in them (the counters here still are).
    pub observed: bool,
}

impl Stats {
    /// Counters at zero; `tenant_label` as `[admin] metrics_tenant_label`;
    /// `observed`: an admin server will read the metrics.
    pub fn new(tenant_label: bool, observed: bool) -> Self {
        Self {
            metrics: Metrics::new(tenant_label),
            observed,
            ..Self::default()
        }
    }

    /// The metrics page, with the counters kept here copied in.
    ///
    /// # Errors
    /// Never in practice (formatting into a `String`).
    pub fn render_metrics(&self) -> Result<String, std::fmt::Error> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.metrics
            .set_ignored("not_trigger", get(&self.not_trigger));
        self.metrics.set_ignored("unrouted", get(&self.unrouted));
        self.metrics
            .set_ignored("tenant_not_served", get(&self.tenant_denied));
        self.metrics.encode()
    }

    /// Invocations finished since start, and how many of them did not
    /// return ok.
    pub fn finished(&self) -> (u64, u64) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let failed = [
            &self.error,
            &self.trap,
            &self.timeout,
            &self.denied,
            &self.memory,
            &self.fuel,
            &self.limit,
        ]
        .into_iter()
        .map(get)
        .sum::<u64>();
        (get(&self.ok) + failed, failed)
    }

    /// The one observer of a finished job: counts its outcome and, when
    /// an admin server observes, feeds the metrics and the recent
    /// dispatches.
    pub fn job_finished(&self, end: &JobEnd<'_>) {
        self.record(end.outcome);
        if !self.observed {
            return;
        }
        let (job, outcome) = (end.job, end.outcome);
        self.metrics.dispatched(
            &job.tenant,
            job.plugin.as_str(),
            outcome,
            end.duration_us as f64 / 1e6,
            end.late_us.map(|l| l as f64 / 1e6),
            end.queued_us as f64 / 1e6,
        );
        self.recent.record(crate::recent::Dispatch {
            at_ms: crate::unix_ms(),
            tenant: job.tenant.clone(),
            action: job.action.clone(),
            id: job.id.clone(),
            plugin: job.plugin.to_string(),
            attempt: end.attempt,
            outcome: outcome.as_str(),
            error: outcome.detail(),
            duration_us: end.duration_us,
            late_us: end.late_us,
        });
    }

    /// Counts an invocation's outcome.
    fn record(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Ok => &self.ok,
            Outcome::Error(_) => &self.error,
            Outcome::Trap(_) => &self.trap,
            Outcome::Timeout(_) => &self.timeout,
            Outcome::Denied(_) => &self.denied,
            Outcome::Memory(_) => &self.memory,
            Outcome::Fuel => &self.fuel,
            Outcome::Limit(_) => &self.limit,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Logs every counter as one event.
    pub fn log_summary(&self) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        tracing::info!(
            event = "dispatch_totals",
            heard = get(&self.heard),
            not_trigger = get(&self.not_trigger),
            unrouted = get(&self.unrouted),
            tenant_denied = get(&self.tenant_denied),
            ok = get(&self.ok),
            error = get(&self.error),
            trap = get(&self.trap),
            timeout = get(&self.timeout),
            denied = get(&self.denied),
            memory = get(&self.memory),
            fuel = get(&self.fuel),
            limit = get(&self.limit),
            lease_lost = get(&self.lease_lost),
            dead_trimmed = get(&self.dead_trimmed),
            "dispatch totals"
        );
    }
}

/// A finished job, as [`Stats::job_finished`] receives it.
pub struct JobEnd<'a> {
    /// The job.
    pub job: &'a Job,
    /// Its attempt (1 for the first).
    pub attempt: u32,
    /// How it ended.
    pub outcome: &'a Outcome,
    /// How long the handler ran (µs).
    pub duration_us: u64,
    /// From hearing the key to the start (µs).
    pub queued_us: u64,
    /// From the due time to the start (µs); `None` when unknown.
    pub late_us: Option<i64>,
}

//! The dispatcher: turns claimed firings into plugin invocations, fairly.
//!
//! Each [`Firing`] comes claimed from the durable index (see
//! [`crate::delivery`]): this host, and only this host, runs it. The
//! dispatcher checks that some plugin owns the action (longest prefix) and
//! serves the tenant, and queues the firing under its tenant. A scheduler
//! then starts jobs round-robin across tenants while three limits hold:
//! `runtime.concurrency` jobs in all, `runtime.per_tenant_concurrency` per
//! tenant, and the plugin's `max_instances`. So a flood from one tenant waits
//! in its own queue while other tenants' triggers start as soon as a slot
//! frees. The queues are bounded in total; when full, the dispatcher stops
//! taking firings, and the back-pressure reaches the sweeper.
//!
//! A job is routed again when it starts, in the plugin set live then: after a
//! hot reload, queued triggers run on the new version, and in-flight ones
//! finish on the version they started with (they hold its `Arc`).
//!
//! When a job ends, its firing is finished in Redis: done, retried after a
//! backoff (up to the plugin's `retry.max_attempts`), or dead-lettered.
//!
//! Each job runs in one span (target `symphony::job`) holding its tenant,
//! action, id, plugin, version, generation and attempt: every event of the
//! job carries them. It ends in one `symphony::dispatch` event (`event` =
//! `dispatch`) with outcome, duration_us, queued_us, late_us (from the due
//! time to the start), due_ms and, unless ok, error.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, error, info, warn};

use crate::delivery::{Delivery, Finisher, Firing, Settled};
pub use crate::fair::Concurrency;
use crate::fair::{FairQueue, Running as Slots, Verdict};
use crate::keys::parse_trigger;
use crate::plugins::PluginSet;
use crate::policy::serves;
use crate::pools::PoolAlias;
use crate::runtime::{Job, LoadedPlugin, Outcome, Runtime};
use crate::stats::{JobEnd, Stats};
use crate::throttle::Throttle;

/// How often an ignored-key line may repeat.
const IGNORED_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Most jobs waiting for a slot, over all tenants.
const MAX_QUEUED: usize = 100_000;

struct Queued {
    tenant: String,
    action: String,
    id: String,
    firing: Firing,
    heard_at: Instant,
}

/// The firings this host is running, by lease (given back on shutdown,
/// shown by the admin API).
pub type InFlight = Arc<std::sync::Mutex<HashMap<String, Running>>>;

/// A firing this host is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    /// The pool whose delivery holds it.
    pub pool: PoolAlias,
    /// When its job started (Unix ms, this host's clock).
    pub since_ms: i64,
}

/// A finished job, reported back to the scheduler.
struct Done {
    tenant: String,
    plugin: String,
}

/// Routes events to plugins and runs them, bounded and fair across tenants.
pub struct Dispatcher {
    runtime: Arc<Runtime>,
    deliveries: Arc<BTreeMap<PoolAlias, Delivery>>,
    finishers: Arc<BTreeMap<PoolAlias, Finisher>>,
    in_flight: InFlight,
    plugins: Arc<ArcSwap<PluginSet>>,
    limits: Concurrency,
    tracker: TaskTracker,
    stats: Arc<Stats>,
    unrouted_log: Throttle,
    tenant_log: Throttle,
    /// Jobs waiting for a slot, per tenant, and the jobs running.
    fair: FairQueue<Queued>,
    /// When a tenant deferred by its quota may start its next job.
    wake_at: Option<Instant>,
}

impl Dispatcher {
    /// A dispatcher with these limits. Call it within the Tokio runtime: it
    /// starts a [`Finisher`] per pool on its task tracker.
    pub fn new(
        runtime: Arc<Runtime>,
        deliveries: Arc<BTreeMap<PoolAlias, Delivery>>,
        plugins: Arc<ArcSwap<PluginSet>>,
        limits: Concurrency,
        stats: Arc<Stats>,
    ) -> Self {
        let tracker = TaskTracker::new();
        Self {
            runtime,
            finishers: Arc::new(
                deliveries
                    .iter()
                    .map(|(pool, d)| (*pool, Finisher::spawn(d.clone(), &tracker)))
                    .collect(),
            ),
            deliveries,
            in_flight: InFlight::default(),
            plugins,
            limits,
            tracker,
            stats,
            unrouted_log: Throttle::new(IGNORED_LOG_INTERVAL),
            tenant_log: Throttle::new(IGNORED_LOG_INTERVAL),
            fair: FairQueue::new(limits),
            wake_at: None,
        }
    }

    /// The tracker of in-flight jobs (close it and wait on it to drain).
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// The leases of the firings running now.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.clone()
    }

    /// Takes events and runs jobs until `cancel`, or until every sender is
    /// gone and nothing is queued.
    pub async fn run(mut self, mut events: mpsc::Receiver<Firing>, cancel: CancellationToken) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut events_open = true;
        loop {
            self.wake_at = None;
            if events_open {
                events_open = self.accept_arrived(&mut events);
            }
            self.start_ready(&done_tx);
            if !events_open && self.fair.queued() == 0 {
                break;
            }
            let wake_at = self.wake_at;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(done) = done_rx.recv() => self.finished(done),
                // A tenant's quota refilled.
                _ = sleep_until_opt(wake_at), if wake_at.is_some() => {}
                event = events.recv(), if events_open && self.fair.queued() < MAX_QUEUED => match event {
                    Some(event) => self.accept(event),
                    None => events_open = false,
                },
            }
        }
        // Give back what was claimed but not started, for another host.
        events.close();
        let mut released = 0;
        let mut unstarted: Vec<Firing> = Vec::new();
        while let Ok(firing) = events.try_recv() {
            unstarted.push(firing);
        }
        unstarted.extend(self.fair.drain().map(|q| q.firing));
        for (pool, delivery) in self.deliveries.iter() {
            let (of_pool, others): (Vec<Firing>, Vec<Firing>) =
                unstarted.into_iter().partition(|f| f.pool == *pool);
            unstarted = others;
            released += delivery
                .release_all(of_pool.into_iter().map(|f| f.lease))
                .await;
        }
        if released > 0 {
            info!(
                event = "released_on_shutdown",
                released, "shutting down: gave back claimed triggers that had not started"
            );
        }
    }

    /// Queues every firing that has arrived, under its tenant, before a
    /// slot is given (under load a job finishes all the time, and a firing
    /// left in the channel meanwhile, another tenant's among them, waited
    /// behind every queued job). Whether `events` is still open.
    fn accept_arrived(&mut self, events: &mut mpsc::Receiver<Firing>) -> bool {
        while self.fair.queued() < MAX_QUEUED {
            match events.try_recv() {
                Ok(event) => self.accept(event),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    fn accept(&mut self, firing: Firing) {
        self.stats.heard.fetch_add(1, Ordering::Relaxed);
        let Some(trigger) = parse_trigger(&firing.key) else {
            // The index only holds trigger keys; finish anything else.
            self.finish_unrun(firing);
            return;
        };
        let (tenant, action, id) = (
            trigger.tenant.to_owned(),
            trigger.action.to_owned(),
            trigger.id.to_owned(),
        );
        if self.route(&tenant, &action, &id).is_none() {
            self.finish_unrun(firing);
            return;
        }
        let queued = Queued {
            tenant,
            action,
            id,
            firing,
            heard_at: Instant::now(),
        };
        self.fair.push(queued.tenant.clone(), queued);
    }

    /// Finishes a firing that will not run (no plugin, tenant not served).
    fn finish_unrun(&self, firing: Firing) {
        if let Some(finisher) = self.finishers.get(&firing.pool) {
            finisher.done(firing.lease);
        }
    }

    /// The plugin that owns `action` in the live set and serves `tenant`,
    /// with the set's generation; `None` (counted and logged) otherwise.
    fn route(&self, tenant: &str, action: &str, id: &str) -> Option<(Arc<LoadedPlugin>, u64)> {
        let set = self.plugins.load();
        let Some(plugin) = set.route(action) else {
            self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.unrouted_log.allow() {
                warn!(
                    event = "unrouted",
                    tenant, action, id, suppressed, "no plugin owns this action; trigger ignored"
                );
            }
            return None;
        };
        if !serves(&plugin.policy().tenants, tenant) {
            self.stats.tenant_denied.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.tenant_log.allow() {
                warn!(event = "tenant_not_served", tenant, action, id, plugin = %plugin.name(), suppressed, "the plugin owning this action may not serve this tenant; trigger not dispatched");
            }
            return None;
        }
        Some((plugin.clone(), set.generation()))
    }

    /// Starts queued jobs round-robin across tenants while the limits
    /// allow ([`FairQueue`] keeps the order and the counts).
    fn start_ready(&mut self, done: &mpsc::UnboundedSender<Done>) {
        let mut fair = std::mem::replace(&mut self.fair, FairQueue::new(self.limits));
        fair.start_ready(|tenant, next, running| self.decide(tenant, next, running, done));
        self.fair = fair;
    }

    /// Starts `next`, or says why it waits or is dropped.
    fn decide(
        &mut self,
        tenant: &str,
        next: Queued,
        running: &Slots,
        done: &mpsc::UnboundedSender<Done>,
    ) -> Verdict<Queued> {
        // Its lease was lost while it waited: the reaper has given it back
        // for another host, so it must not run here.
        if !self.still_held(&next) {
            return Verdict::Dropped;
        }
        // Gone since it was queued (a reload): dropped, logged by `route`.
        let Some((plugin, generation)) = self.route(&next.tenant, &next.action, &next.id) else {
            self.finish_unrun(next.firing);
            return Verdict::Dropped;
        };
        let name = plugin.name().as_str().to_owned();
        let busy = running.of_plugin(&name) >= plugin.policy().limits.max_instances.get();
        // Wait for the plugin, or for the tenant's quota to refill, in
        // place; other tenants go on meanwhile.
        if busy || self.over_quota(tenant) {
            return Verdict::Wait(next);
        }
        self.start(next, plugin, generation, done);
        Verdict::Started(name)
    }

    /// Whether `tenant` is at its dispatch quota (then the scheduler is woken
    /// again when it refills).
    fn over_quota(&mut self, tenant: &str) -> bool {
        match self.runtime.quotas().try_dispatch(tenant) {
            Ok(()) => false,
            Err(wait) => {
                let at = Instant::now() + wait;
                self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
                true
            }
        }
    }

    /// Whether this host still holds the queued firing's lease (see
    /// [`crate::delivery::Held`]); logs and counts it when not.
    fn still_held(&self, queued: &Queued) -> bool {
        let held = self
            .deliveries
            .get(&queued.firing.pool)
            .is_none_or(|d| d.held().may_start(&queued.firing));
        if !held {
            self.stats.lease_lost.fetch_add(1, Ordering::Relaxed);
            warn!(
                event = "lease_lost",
                tenant = %queued.tenant, action = %queued.action, id = %queued.id,
                "the lease of a queued trigger was lost (Redis unreachable for a whole lease?); \
                 not started here, it runs on whichever host claims it again"
            );
        }
        held
    }

    fn start(
        &self,
        queued: Queued,
        plugin: Arc<LoadedPlugin>,
        generation: u64,
        done: &mpsc::UnboundedSender<Done>,
    ) {
        let heard_at = queued.heard_at;
        let firing = queued.firing;
        let job = Arc::new(Job {
            tenant: queued.tenant,
            action: queued.action,
            id: queued.id,
            key: firing.key.clone(),
            plugin: plugin.name().clone(),
            generation,
        });
        if let Ok(mut set) = self.in_flight.lock() {
            set.insert(
                firing.lease.clone(),
                Running {
                    pool: firing.pool,
                    since_ms: crate::unix_ms(),
                },
            );
        }
        let runtime = self.runtime.clone();
        let stats = self.stats.clone();
        let done = done.clone();
        let deliveries = self.deliveries.clone();
        let finishers = self.finishers.clone();
        let in_flight = self.in_flight.clone();
        let guests = self.runtime.guest_handle().cloned();
        let span = job_span(&job, &plugin, firing.meta.attempts + 1);
        let task = async move {
            // The job starts here and moves to the guest threads at its
            // guest's first epoch tick, so guest code never holds a thread
            // the control plane (this runtime) needs for longer than a tick;
            // its outcome is recorded here.
            let run = {
                let (runtime, plugin, job, firing, stats) = (
                    runtime.clone(),
                    plugin.clone(),
                    job.clone(),
                    firing.clone(),
                    stats.clone(),
                );
                async move { run_job(&runtime, &plugin, job, &firing, &stats, heard_at).await }
            };
            let outcome = match guests {
                Some(guests) => crate::runtime::run_job_task(run, guests)
                    .await
                    .unwrap_or_else(|e| Outcome::Trap(format!("the job's task failed: {e}"))),
                // The runtime is being dropped: no guest threads to move to.
                None => run.await,
            };
            if let (Some(delivery), Some(finisher)) =
                (deliveries.get(&firing.pool), finishers.get(&firing.pool))
            {
                settle(delivery, finisher, &stats, &plugin, &firing, &outcome).await;
            }
            if let Ok(mut set) = in_flight.lock() {
                set.remove(&firing.lease);
            }
            let _ = done.send(Done {
                tenant: job.tenant.clone(),
                plugin: plugin.name().as_str().to_owned(),
            });
        };
        self.tracker.spawn(task.instrument(span));
    }

    fn finished(&mut self, done: Done) {
        self.fair.finished(&done.tenant, &done.plugin);
    }
}

/// Sleeps until `at` (for ever when `None`; the caller guards that branch).
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Records the outcome in Redis ([`Delivery::settle`]), and logs what
/// became of the firing.
async fn settle(
    delivery: &Delivery,
    finisher: &Finisher,
    stats: &Stats,
    plugin: &LoadedPlugin,
    firing: &Firing,
    outcome: &Outcome,
) {
    let retry = &plugin.policy().retry;
    match delivery
        .settle(finisher, firing, outcome.detail(), retry)
        .await
    {
        Ok(Settled::Done) => {}
        // Logged once Redis holds it, so a reader of the log finds it there.
        Ok(Settled::Retried {
            delay,
            max_attempts,
        }) => warn!(
            event = "retry_scheduled",
            max_attempts,
            retry_in_ms = crate::millis(delay),
            "dispatch failed; retrying"
        ),
        Ok(Settled::DeadLettered { trimmed }) => {
            error!(
                event = "dead_lettered",
                "dispatch failed for the last time; moved to the dead-letter list"
            );
            if trimmed > 0 {
                stats.dead_trimmed.fetch_add(trimmed, Ordering::Relaxed);
                warn!(
                    event = "dead_letters_trimmed",
                    trimmed,
                    "the tenant's dead-letter list is at [delivery] max_dead_letters; trimmed its oldest"
                );
            }
        }
        Ok(Settled::LeaseGone) => lease_gone(),
        Err(e) => error!(
            event = "outcome_unrecorded",
            error = %e,
            "cannot record the outcome in Redis; the lease will run this firing again"
        ),
    }
}

/// A failed firing's lease ended before its outcome was written: the
/// reaper put it back, and it runs again; no retry or dead letter is added.
fn lease_gone() {
    warn!(
        event = "lease_lost",
        "dispatch failed, but the lease ended first; the firing runs again, as it is"
    );
}

/// The span of one job: every event of the job (its dispatch line, the
/// plugin's log and output lines, a retry or dead letter) carries these
/// fields, written once here. It is at ERROR level so that its fields reach
/// every event the filter lets through, whatever level the filter sets.
fn job_span(job: &Job, plugin: &LoadedPlugin, attempt: u32) -> tracing::Span {
    tracing::error_span!(
        target: "symphony::job",
        "job",
        tenant = %job.tenant,
        action = %job.action,
        id = %job.id,
        plugin = %job.plugin,
        version = plugin.digest(),
        generation = job.generation,
        attempt,
    )
}

async fn run_job(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    job: Arc<Job>,
    firing: &Firing,
    stats: &Stats,
    heard_at: Instant,
) -> Outcome {
    let start = Instant::now();
    let late_us = firing.late_us();
    let queued_us = u64::try_from(start.duration_since(heard_at).as_micros()).unwrap_or(u64::MAX);
    let outcome = runtime.invoke(plugin, job.clone()).await;
    let duration_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    stats.job_finished(&JobEnd {
        job: &job,
        attempt: firing.meta.attempts + 1,
        outcome: &outcome,
        duration_us,
        queued_us,
        late_us,
    });
    let detail = outcome.detail();
    // The job's fields come from its span; the error only when there is one.
    macro_rules! dispatch_event {
        ($level:ident) => {
            tracing::$level!(
                target: "symphony::dispatch",
                event = "dispatch",
                outcome = outcome.as_str(),
                duration_us,
                queued_us,
                late_us,
                late_unknown = late_us.is_none().then_some(true),
                due_ms = firing.due_ms,
                error = detail.as_deref(),
                "dispatch"
            )
        };
    }
    match &outcome {
        Outcome::Ok => dispatch_event!(info),
        _ if detail.is_none() => dispatch_event!(info),
        Outcome::Error(_) | Outcome::Denied(_) => dispatch_event!(warn),
        _ => dispatch_event!(error),
    }
    outcome
}

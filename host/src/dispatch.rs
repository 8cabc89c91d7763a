//! The dispatcher: turns expired keys into plugin invocations, fairly.
//!
//! For each [`Expired`] event it parses the key, checks that some plugin
//! owns the action (longest prefix) and serves the tenant, and queues the
//! trigger under its tenant. A scheduler then starts jobs
//! round-robin across tenants while three limits hold: `runtime.concurrency`
//! jobs in all, `runtime.per_tenant_concurrency` per tenant, and the plugin's
//! `max_instances`. So a flood from one tenant waits in its own queue while
//! other tenants' triggers start as soon as a slot frees. The queues are
//! bounded in total; when full, the dispatcher stops reading events, and the
//! back-pressure reaches the listener.
//!
//! A job is routed again when it starts, in the plugin set live then: after a
//! hot reload, queued triggers run on the new version, and in-flight ones
//! finish on the version they started with (they hold its `Arc`).
//!
//! Every invocation ends in one `symphony::dispatch` event with tenant,
//! action, id, plugin, outcome and duration_us.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::keys::parse_trigger;
use crate::listener::Expired;
use crate::plugins::PluginSet;
use crate::policy::serves;
use crate::runtime::{Job, LoadedPlugin, Outcome, Runtime};
use crate::stats::{Stats, Throttle};

/// How often an ignored-key line may repeat.
const IGNORED_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Most jobs waiting for a slot, over all tenants.
const MAX_QUEUED: usize = 100_000;

/// Limits of the scheduler.
#[derive(Debug, Clone, Copy)]
pub struct Concurrency {
    /// Jobs running at once.
    pub total: usize,
    /// Jobs of one tenant running at once.
    pub per_tenant: usize,
}

struct Queued {
    tenant: String,
    action: String,
    id: String,
    key: String,
    heard_at: Instant,
}

/// A finished job, reported back to the scheduler.
struct Done {
    tenant: String,
    plugin: String,
}

/// Routes events to plugins and runs them, bounded and fair across tenants.
pub struct Dispatcher {
    runtime: Arc<Runtime>,
    plugins: Arc<ArcSwap<PluginSet>>,
    limits: Concurrency,
    tracker: TaskTracker,
    stats: Arc<Stats>,
    not_trigger_log: Throttle,
    unrouted_log: Throttle,
    tenant_log: Throttle,
    queues: HashMap<String, VecDeque<Queued>>,
    /// Tenants with queued jobs, in round-robin order.
    order: VecDeque<String>,
    queued: usize,
    running: usize,
    tenant_running: HashMap<String, usize>,
    plugin_running: HashMap<String, usize>,
}

impl Dispatcher {
    /// A dispatcher with these limits.
    pub fn new(
        runtime: Arc<Runtime>,
        plugins: Arc<ArcSwap<PluginSet>>,
        limits: Concurrency,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            runtime,
            plugins,
            limits,
            tracker: TaskTracker::new(),
            stats,
            not_trigger_log: Throttle::new(IGNORED_LOG_INTERVAL),
            unrouted_log: Throttle::new(IGNORED_LOG_INTERVAL),
            tenant_log: Throttle::new(IGNORED_LOG_INTERVAL),
            queues: HashMap::new(),
            order: VecDeque::new(),
            queued: 0,
            running: 0,
            tenant_running: HashMap::new(),
            plugin_running: HashMap::new(),
        }
    }

    /// The tracker of in-flight jobs (close it and wait on it to drain).
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// Takes events and runs jobs until `cancel`, or until every sender is
    /// gone and nothing is queued.
    pub async fn run(mut self, mut events: mpsc::Receiver<Expired>, cancel: CancellationToken) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut events_open = true;
        loop {
            self.start_ready(&done_tx);
            if !events_open && self.queued == 0 {
                break;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(done) = done_rx.recv() => self.finished(done),
                event = events.recv(), if events_open && self.queued < MAX_QUEUED => match event {
                    Some(event) => self.accept(event),
                    None => events_open = false,
                },
            }
        }
        if self.queued > 0 {
            warn!(
                queued = self.queued,
                "shutting down with triggers queued that were not dispatched"
            );
        }
    }

    fn accept(&mut self, event: Expired) {
        self.stats.heard.fetch_add(1, Ordering::Relaxed);
        let key = match event.key {
            Ok(key) => key,
            Err(raw) => {
                self.stats.not_trigger.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.not_trigger_log.allow() {
                    info!(pool = %event.pool, key = %String::from_utf8_lossy(&raw), suppressed, "ignored an expired key that is not UTF-8");
                }
                return;
            }
        };
        let Some(trigger) = parse_trigger(&key) else {
            self.stats.not_trigger.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.not_trigger_log.allow() {
                info!(pool = %event.pool, %key, suppressed, "ignored an expired key that is not a trigger ({{tenant}}:EXPTRIGGER:{{action}}:{{id}})");
            }
            return;
        };
        if self
            .route(trigger.tenant, trigger.action, trigger.id)
            .is_none()
        {
            return;
        }
        let queued = Queued {
            tenant: trigger.tenant.to_owned(),
            action: trigger.action.to_owned(),
            id: trigger.id.to_owned(),
            key: key.clone(),
            heard_at: event.heard_at,
        };
        let queue = self.queues.entry(queued.tenant.clone()).or_default();
        if queue.is_empty() {
            self.order.push_back(queued.tenant.clone());
        }
        queue.push_back(queued);
        self.queued += 1;
    }

    /// The plugin that owns `action` in the live set and serves `tenant`,
    /// with the set's generation; `None` (counted and logged) otherwise.
    fn route(&self, tenant: &str, action: &str, id: &str) -> Option<(Arc<LoadedPlugin>, u64)> {
        let set = self.plugins.load();
        let Some(plugin) = set.route(action) else {
            self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.unrouted_log.allow() {
                warn!(
                    tenant,
                    action, id, suppressed, "no plugin owns this action; trigger ignored"
                );
            }
            return None;
        };
        if !serves(&plugin.policy().tenants, tenant) {
            self.stats.tenant_denied.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.tenant_log.allow() {
                warn!(tenant, action, id, plugin = %plugin.name(), suppressed, "the plugin owning this action may not serve this tenant; trigger not dispatched");
            }
            return None;
        }
        Some((plugin.clone(), set.generation()))
    }

    /// Starts queued jobs round-robin across tenants while the limits allow.
    fn start_ready(&mut self, done: &mpsc::UnboundedSender<Done>) {
        while self.running < self.limits.total && !self.order.is_empty() {
            let mut started = false;
            for _ in 0..self.order.len() {
                if self.running >= self.limits.total {
                    break;
                }
                let Some(tenant) = self.order.pop_front() else {
                    break;
                };
                let Some(queue) = self.queues.get_mut(&tenant) else {
                    continue;
                };
                let tenant_busy = self.tenant_running.get(&tenant).copied().unwrap_or(0)
                    >= self.limits.per_tenant;
                if !tenant_busy && let Some(next) = queue.pop_front() {
                    let empty = queue.is_empty();
                    match self.route(&next.tenant, &next.action, &next.id) {
                        // Gone since it was queued (a reload): dropped, logged by `route`.
                        None => {
                            self.queued -= 1;
                            started = true;
                        }
                        Some((plugin, generation)) => {
                            let busy = self
                                .plugin_running
                                .get(plugin.name().as_str())
                                .copied()
                                .unwrap_or(0)
                                >= plugin.policy().limits.max_instances.get();
                            if busy {
                                // Wait for the plugin; other tenants go on meanwhile.
                                if let Some(queue) = self.queues.get_mut(&tenant) {
                                    queue.push_front(next);
                                }
                                self.order.push_back(tenant);
                                continue;
                            }
                            self.queued -= 1;
                            started = true;
                            self.start(next, plugin, generation, done);
                        }
                    }
                    if empty {
                        self.queues.remove(&tenant);
                        continue;
                    }
                }
                self.order.push_back(tenant);
            }
            if !started {
                break;
            }
        }
    }

    fn start(
        &mut self,
        queued: Queued,
        plugin: Arc<LoadedPlugin>,
        generation: u64,
        done: &mpsc::UnboundedSender<Done>,
    ) {
        let heard_at = queued.heard_at;
        let job = Arc::new(Job {
            tenant: queued.tenant,
            action: queued.action,
            id: queued.id,
            key: queued.key,
            plugin: plugin.name().clone(),
            generation,
        });
        self.running += 1;
        *self.tenant_running.entry(job.tenant.clone()).or_default() += 1;
        *self
            .plugin_running
            .entry(plugin.name().as_str().to_owned())
            .or_default() += 1;
        let runtime = self.runtime.clone();
        let stats = self.stats.clone();
        let done = done.clone();
        self.tracker.spawn(async move {
            run_job(&runtime, &plugin, job.clone(), &stats, heard_at).await;
            let _ = done.send(Done {
                tenant: job.tenant.clone(),
                plugin: plugin.name().as_str().to_owned(),
            });
        });
    }

    fn finished(&mut self, done: Done) {
        self.running = self.running.saturating_sub(1);
        decrement(&mut self.tenant_running, &done.tenant);
        decrement(&mut self.plugin_running, &done.plugin);
    }
}

fn decrement(counts: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

async fn run_job(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    job: Arc<Job>,
    stats: &Stats,
    heard_at: Instant,
) {
    let start = Instant::now();
    let queued_us = u64::try_from(start.duration_since(heard_at).as_micros()).unwrap_or(u64::MAX);
    let outcome = runtime.invoke(plugin, job.clone()).await;
    let duration_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    stats.record(&outcome);
    let j = &*job;
    let version = plugin.digest();
    let outcome_name = outcome.as_str();
    match (&outcome, outcome.detail()) {
        (Outcome::Ok, _) | (_, None) => info!(
            target: "symphony::dispatch",
            tenant = %j.tenant, action = %j.action, id = %j.id, plugin = %j.plugin, version,
            generation = j.generation, outcome = outcome_name, duration_us, queued_us, "dispatch"
        ),
        (Outcome::Error(_) | Outcome::Denied(_), Some(detail)) => warn!(
            target: "symphony::dispatch",
            tenant = %j.tenant, action = %j.action, id = %j.id, plugin = %j.plugin, version,
            generation = j.generation, outcome = outcome_name, duration_us, queued_us, error = %detail, "dispatch"
        ),
        (_, Some(detail)) => error!(
            target: "symphony::dispatch",
            tenant = %j.tenant, action = %j.action, id = %j.id, plugin = %j.plugin, version,
            generation = j.generation, outcome = outcome_name, duration_us, queued_us, error = %detail, "dispatch"
        ),
    }
}

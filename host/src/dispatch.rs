//! The dispatcher: turns expired keys into plugin invocations.
//!
//! For each [`Expired`] event it parses the key, routes the action to the
//! plugin with the longest matching prefix, waits for a concurrency permit
//! (back-pressure reaches the listener through the bounded channel) and runs
//! the job on a tracked task, so shutdown can drain what is in flight. Every
//! invocation ends in one `symphony::dispatch` event with tenant, action, id,
//! plugin, outcome and duration_us.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::keys::parse_trigger;
use crate::listener::Expired;
use crate::plugins::PluginSet;
use crate::runtime::{Job, LoadedPlugin, Outcome, Runtime};
use crate::stats::{Stats, Throttle};

/// How often an ignored-key line may repeat.
const IGNORED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Routes events to plugins and runs them, bounded.
pub struct Dispatcher {
    runtime: Arc<Runtime>,
    plugins: Arc<ArcSwap<PluginSet>>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    stats: Arc<Stats>,
    not_trigger_log: Throttle,
    unrouted_log: Throttle,
}

impl Dispatcher {
    /// A dispatcher running at most `concurrency` invocations at once.
    pub fn new(
        runtime: Arc<Runtime>,
        plugins: Arc<ArcSwap<PluginSet>>,
        concurrency: usize,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            runtime,
            plugins,
            permits: Arc::new(Semaphore::new(concurrency)),
            tracker: TaskTracker::new(),
            stats,
            not_trigger_log: Throttle::new(IGNORED_LOG_INTERVAL),
            unrouted_log: Throttle::new(IGNORED_LOG_INTERVAL),
        }
    }

    /// The tracker of in-flight jobs (close it and wait on it to drain).
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// Takes events until `cancel` or until every sender is gone.
    pub async fn run(self, mut events: mpsc::Receiver<Expired>, cancel: CancellationToken) {
        loop {
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                event = events.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
            };
            self.handle(event, &cancel).await;
        }
    }

    async fn handle(&self, event: Expired, cancel: &CancellationToken) {
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
        let set = self.plugins.load_full();
        let Some(plugin) = set.route(trigger.action) else {
            self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.unrouted_log.allow() {
                warn!(
                    tenant = trigger.tenant,
                    action = trigger.action,
                    id = trigger.id,
                    suppressed,
                    "no plugin owns this action; trigger ignored"
                );
            }
            return;
        };
        let plugin = plugin.clone();
        let job = Arc::new(Job {
            tenant: trigger.tenant.to_owned(),
            action: trigger.action.to_owned(),
            id: trigger.id.to_owned(),
            key: key.clone(),
            plugin: plugin.name().clone(),
        });
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                warn!(tenant = %job.tenant, action = %job.action, id = %job.id, plugin = %job.plugin, "shutting down before this trigger could be dispatched");
                return;
            }
            permit = self.permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let runtime = self.runtime.clone();
        let stats = self.stats.clone();
        let heard_at = event.heard_at;
        self.tracker.spawn(async move {
            let _permit = permit;
            run_job(&runtime, &plugin, job, &stats, heard_at).await;
        });
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
    match &outcome {
        Outcome::Ok => info!(
            target: "symphony::dispatch",
            tenant = %j.tenant, action = %j.action, id = %j.id, plugin = %j.plugin, version,
            outcome = outcome_name, duration_us, queued_us, "dispatch"
        ),
        Outcome::Error(message) => warn!(
            target: "symphony::dispatch",
            tenant = %j.tenant, action = %j.action, id = %j.id, plugin = %j.plugin, version,
            outcome = outcome_name, duration_us, queued_us, error = %message, "dispatch"
        ),
        Outcome::Trap(message) => error!(
            target: "symphony::dispatch",
            tenant = %j.tenant, action = %j.action, id = %j.id, plugin = %j.plugin, version,
            outcome = outcome_name, duration_us, queued_us, error = %message, "dispatch"
        ),
        Outcome::Timeout(limit) => error!(
            target: "symphony::dispatch",
            tenant = %j.tenant, action = %j.action, id = %j.id, plugin = %j.plugin, version,
            outcome = outcome_name, duration_us, queued_us,
            error = %format!("interrupted after the {limit:?} timeout"), "dispatch"
        ),
    }
}

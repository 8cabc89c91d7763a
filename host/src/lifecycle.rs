//! The host's lifecycle: named stages started in order, and stopped in
//! reverse.
//!
//! [`Host::start`] runs the start-up stages ([`Stage`]): the manifest, the
//! admin server's socket, the Redis pools, the runtime and the plugin set,
//! the reloader, delivery (one [`Delivery`] per listened pool, with lease
//! renewal), the listeners, the sweepers and pumps, and the dispatcher.
//! Services mount with [`Host::mount`] and get a [`HostContext`]: the host
//! mounts the admin server and the heartbeat ([`fleet`]) itself.
//! [`Host::serve`] runs until the shutdown future resolves, a listener
//! cannot start, or a service fails; then it stops the stages in reverse:
//! services and sources first, then the dispatcher, which drains in-flight
//! jobs for up to `runtime.shutdown_grace`, then lease renewal, the
//! listeners and the reloader.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::{Notify, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::admin::{AdminListen, AdminServer, Token};
use crate::context::HostContext;
use crate::delivery::{Delivery, Firing};
use crate::dispatch::{Concurrency, Dispatcher, InFlight};
use crate::listener::{NotifyError, PoolListener};
use crate::manifest::Manifest;
use crate::pools::{PoolAlias, Pools};
use crate::reload::{self, Reloader};
use crate::stats::Stats;
use crate::{RunOptions, fleet, millis, pump, sweeper};

/// Capacity of the channels between listeners, pumps, sweepers and the
/// dispatcher.
const EVENT_QUEUE: usize = 4096;

/// The start-up stages, in order (logged at debug level as each is done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The manifest, parsed and validated.
    Manifest,
    /// The admin server's socket, bound before anything is claimed (a port
    /// in use fails the start); the server mounts when the host is up.
    Admin,
    /// One reconnecting connection set per pool alias.
    Pools,
    /// The engine, the quotas and the plugin set.
    Plugins,
    /// The pid file and the watcher that hot-reloads the plugin set.
    Reloader,
    /// The durable index of each listened pool, and lease renewal.
    Delivery,
    /// One keyevent subscription per listened pool.
    Listeners,
    /// Per pool, the sweeper (claims due firings) and the pump (applies
    /// keyevents).
    Sweepers,
    /// The dispatcher: fair queues, limits, jobs.
    Dispatcher,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Stage::Manifest => "manifest",
            Stage::Admin => "admin",
            Stage::Pools => "pools",
            Stage::Plugins => "plugins",
            Stage::Reloader => "reloader",
            Stage::Delivery => "delivery",
            Stage::Listeners => "listeners",
            Stage::Sweepers => "sweepers",
            Stage::Dispatcher => "dispatcher",
        };
        f.write_str(name)
    }
}

/// A started host. Dropping it without [`serve`](Self::serve) cancels and
/// aborts its tasks without draining (the firings it holds go back to the
/// index when their leases end).
pub struct Host {
    context: HostContext,
    pid_file: PathBuf,
    pid: String,
    cancel: CancellationToken,
    reloading: JoinHandle<()>,
    renewal: CancellationToken,
    renewing: JoinSet<()>,
    listeners: JoinSet<Result<(), NotifyError>>,
    sources: JoinSet<()>,
    dispatching: JoinHandle<()>,
    tracker: TaskTracker,
    services: JoinSet<(&'static str, anyhow::Result<()>)>,
}

impl Drop for Host {
    fn drop(&mut self) {
        // After `stop` these are no-ops; without it, nothing outlives the host.
        self.cancel.cancel();
        self.renewal.cancel();
        self.reloading.abort();
        self.dispatching.abort();
    }
}

/// Binds the admin server's socket, unless `[admin] listen` (or the
/// option) is `off`; a port in use fails the start here.
async fn bind_admin(
    manifest: &Manifest,
    options: &RunOptions,
) -> anyhow::Result<Option<AdminServer>> {
    let AdminListen::On(addr) = options.admin_listen.unwrap_or(manifest.admin.listen) else {
        return Ok(None);
    };
    let token = Token::resolve(
        std::env::var("SYMPHONY_ADMIN_TOKEN").ok(),
        manifest.admin.token_file.as_deref(),
        manifest.base_dir(),
    )?;
    Ok(Some(
        AdminServer::bind(addr, token)
            .await?
            .with_host_names(manifest.admin.host_names.clone()),
    ))
}

/// Logs each plugin of a freshly loaded set.
fn log_loaded(set: &crate::plugins::PluginSet) {
    for plugin in set.plugins() {
        info!(
            event = "plugin_loaded",
            plugin = %plugin.name(),
            path = %plugin.path().display(),
            version = plugin.digest(),
            load_ms = millis(plugin.compile_time()),
            actions = ?set.prefixes_of(plugin),
            "plugin loaded"
        );
    }
}

/// Runs one synchronous start-up stage, and logs it done.
fn stage<T>(stage: Stage, run: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = run();
    done(stage, t);
    out
}

/// Logs a finished start-up stage.
fn done(stage: Stage, since: Instant) {
    debug!(event = "stage_started", %stage, took_ms = millis(since.elapsed()), "start-up stage done");
}

impl Host {
    /// Runs the start-up stages in order.
    ///
    /// # Errors
    /// An invalid manifest, a pool URL that does not parse, an engine that
    /// cannot start or a plugin that does not load. Redis being unreachable
    /// is not an error: listeners and sweepers keep retrying.
    pub async fn start(manifest_path: &Path, options: RunOptions) -> anyhow::Result<Host> {
        let manifest = stage(Stage::Manifest, || {
            Manifest::load(manifest_path).map(Arc::new)
        })?;
        let t = Instant::now();
        let admin = bind_admin(&manifest, &options).await?;
        // Per-dispatch metrics and the recent dispatches are kept only for
        // an admin server to read.
        let stats = Arc::new(Stats::new(
            manifest.admin.metrics_tenant_label,
            admin.is_some(),
        ));
        done(Stage::Admin, t);
        let pools = stage(Stage::Pools, || {
            Pools::connect(&manifest.redis_target(options.redis.as_ref()))
                .map(|p| p.with_wait_replicas(manifest.redis.wait_replicas))
        })?;
        let started = stage(Stage::Plugins, || {
            crate::plugins::start(&manifest, pools.clone())
                .with_context(|| format!("cannot load the plugins of {}", manifest_path.display()))
        })?;
        log_loaded(&started.set);
        let plugins = Arc::new(ArcSwap::from_pointee(started.set));
        let context = HostContext {
            manifest,
            pools,
            runtime: started.runtime,
            plugins,
            stats,
            quotas: started.quotas,
            deliveries: Arc::default(),
            in_flight: InFlight::default(),
            // Replaced by the reloader's stage.
            reload_requests: tokio::sync::mpsc::channel(1).0,
        };
        let mut host = stage(Stage::Reloader, || {
            Host::with_reloader(context, manifest_path, options.redis.clone())
        });
        // A failure from here drops `host`, which stops what has started,
        // and removes the pid file it wrote.
        if let Err(e) = host.start_pipeline(admin) {
            host.remove_pid_file();
            return Err(e);
        }
        Ok(host)
    }

    /// The host, with its pid file written and the reloader watching the
    /// manifest; the pipeline not started yet.
    fn with_reloader(
        mut context: HostContext,
        manifest_path: &Path,
        redis: Option<crate::manifest::RedisOverride>,
    ) -> Host {
        let cancel = CancellationToken::new();
        let pid_file = reload::pid_file(manifest_path);
        let pid = std::process::id().to_string();
        if let Err(e) = std::fs::write(&pid_file, &pid) {
            warn!(event = "pid_file_failed", path = %pid_file.display(), error = %e, "cannot write the pid file; `symphony-host reload` will not find this host");
        }
        let reloader = Reloader::new(
            (*context.manifest).clone(),
            redis,
            context.runtime.clone(),
            context.plugins.clone(),
            context.stats.clone(),
        );
        let (reload_requests, requests) = tokio::sync::mpsc::channel(8);
        context.reload_requests = reload_requests;
        let reloading = tokio::spawn(reload::watch(reloader, requests, cancel.child_token()));
        Host {
            context,
            pid_file,
            pid,
            cancel,
            reloading,
            renewal: CancellationToken::new(),
            renewing: JoinSet::new(),
            listeners: JoinSet::new(),
            sources: JoinSet::new(),
            dispatching: tokio::spawn(async {}),
            tracker: TaskTracker::new(),
            services: JoinSet::new(),
        }
    }

    /// The stages after the reloader: delivery, the listeners, the
    /// sweepers and pumps, the dispatcher; then the services.
    fn start_pipeline(&mut self, admin: Option<AdminServer>) -> anyhow::Result<()> {
        let ctx = &self.context;
        let t = Instant::now();
        let aliases = ctx.pools.listened(&ctx.manifest.listener.pools);
        let deliveries = Arc::new(self.start_deliveries(&aliases)?);
        done(Stage::Delivery, t);

        let t = Instant::now();
        let keyevents = self.start_listeners(&aliases)?;
        done(Stage::Listeners, t);

        // All firings, swept or heard, go to the one dispatcher.
        let t = Instant::now();
        let (firing_tx, firing_rx) = mpsc::channel(EVENT_QUEUE);
        self.start_sources(keyevents, &deliveries, firing_tx);
        done(Stage::Sweepers, t);

        let t = Instant::now();
        let ctx = &self.context;
        let dispatcher = Dispatcher::new(
            ctx.runtime.clone(),
            deliveries.clone(),
            ctx.plugins.clone(),
            Concurrency {
                total: ctx.manifest.runtime.concurrency.get(),
                per_tenant: ctx.manifest.runtime.tenant_concurrency(),
            },
            ctx.stats.clone(),
        );
        self.context.in_flight = dispatcher.in_flight();
        self.context.deliveries = deliveries;
        self.tracker = dispatcher.tracker();
        self.dispatching = tokio::spawn(dispatcher.run(firing_rx, self.cancel.child_token()));
        done(Stage::Dispatcher, t);
        self.mount_services(admin)
    }

    /// One [`Delivery`] per listened pool, each with its lease renewal,
    /// which outlives `cancel`: in-flight jobs keep their leases while
    /// shutdown drains them.
    fn start_deliveries(
        &mut self,
        aliases: &[PoolAlias],
    ) -> anyhow::Result<BTreeMap<PoolAlias, Delivery>> {
        let ctx = &self.context;
        let lease = ctx.manifest.delivery.lease.0;
        let mut deliveries = BTreeMap::new();
        for alias in aliases {
            let q = ctx.quotas.clone();
            let delivery = Delivery::for_pool(&ctx.pools, *alias)?
                .with_dead_letter_cap(ctx.manifest.delivery.max_dead_letters.get())
                .with_dead_letter_bytes(Arc::new(move |tenant: &str| q.memory_budget(tenant)));
            self.renewing.spawn(sweeper::renew(
                delivery.clone(),
                lease,
                self.renewal.clone(),
            ));
            deliveries.insert(*alias, delivery);
        }
        Ok(deliveries)
    }

    /// A listener per listened pool (on a cluster, of every node); their
    /// keyevents, by pool.
    fn start_listeners(
        &mut self,
        aliases: &[PoolAlias],
    ) -> anyhow::Result<Vec<(PoolAlias, mpsc::Receiver<crate::listener::KeyEvent>)>> {
        let ctx = &self.context;
        let mut keyevents = Vec::new();
        for alias in aliases {
            let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
            let (pool, mode) = (
                ctx.pools.get(*alias)?,
                ctx.manifest.listener.notify_keyspace_events,
            );
            let cancel = self.cancel.child_token();
            let listener = PoolListener::new(*alias, pool, mode, ctx.stats.clone());
            self.listeners.spawn(listener.run(event_tx, cancel));
            keyevents.push((*alias, event_rx));
        }
        Ok(keyevents)
    }

    /// A pump and a sweeper per listened pool, sending to `firings`; and
    /// the walk of the tenants' memory budgets, if any.
    fn start_sources(
        &mut self,
        keyevents: Vec<(PoolAlias, mpsc::Receiver<crate::listener::KeyEvent>)>,
        deliveries: &BTreeMap<PoolAlias, Delivery>,
        firings: mpsc::Sender<Firing>,
    ) {
        let ctx = &self.context;
        let lease = ctx.manifest.delivery.lease.0;
        for (alias, event_rx) in keyevents {
            let Some(delivery) = deliveries.get(&alias).cloned() else {
                continue;
            };
            let wake = Arc::new(Notify::new());
            self.sources.spawn(pump::pump(
                delivery.clone(),
                event_rx,
                firings.clone(),
                wake.clone(),
                lease,
                ctx.stats.clone(),
                self.cancel.child_token(),
            ));
            self.sources.spawn(sweeper::sweep(
                delivery,
                firings.clone(),
                wake,
                lease,
                self.cancel.child_token(),
            ));
        }
        if ctx.quotas.has_memory_budgets() {
            let q = ctx.quotas.clone();
            self.sources.spawn(crate::budget::measure(
                ctx.pools.clone(),
                ctx.quotas.usage().clone(),
                Arc::new(move |tenant: &str| q.memory_budget(tenant).is_some()),
                self.cancel.child_token(),
            ));
        }
    }

    /// Mounts the admin server (if bound) and the heartbeat.
    fn mount_services(&mut self, admin: Option<AdminServer>) -> anyhow::Result<()> {
        let mut admin_url = None;
        if let Some(admin) = admin {
            let addr = admin
                .local_addr()
                .context("cannot read the admin server's address")?;
            let url = format!("http://{addr}/");
            info!(event = "admin_listening", url = %url, "admin server listening");
            admin_url = Some(url);
            self.mount("admin", |ctx, cancel| admin.serve(ctx, cancel));
        }
        let record = fleet::HostRecord::this_process(admin_url);
        self.mount("heartbeat", |ctx, cancel| {
            fleet::heartbeat(ctx, record, cancel)
        });
        Ok(())
    }

    /// Removes the pid file, if it is still this process's.
    fn remove_pid_file(&self) {
        if std::fs::read_to_string(&self.pid_file).is_ok_and(|p| p == self.pid) {
            let _ = std::fs::remove_file(&self.pid_file);
        }
    }

    /// What services see of the host.
    pub fn context(&self) -> &HostContext {
        &self.context
    }

    /// Mounts a further service (an HTTP server, say): `service` is called
    /// with the host's context and a token cancelled at shutdown, and its
    /// future runs on the host's runtime until then. A service that ends
    /// with an error stops the host with that error.
    pub fn mount<F, Fut>(&mut self, name: &'static str, service: F)
    where
        F: FnOnce(HostContext, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let run = service(self.context.clone(), self.cancel.child_token());
        self.services.spawn(async move { (name, run.await) });
    }

    /// Runs until `shutdown` resolves (or a listener cannot start, or a
    /// service fails), then stops the stages in reverse: no new firings,
    /// in-flight jobs drained for up to `runtime.shutdown_grace` (the
    /// unfinished ones given back for another host), then lease renewal,
    /// the listeners and the reloader.
    ///
    /// # Errors
    /// A listener that cannot start (Redis refusing keyevent
    /// notifications), or a service's error.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let result = tokio::select! {
            _ = shutdown => {
                info!(event = "shutdown_requested", "shutdown requested: no new dispatches, draining in-flight ones");
                Ok(())
            }
            Some(ended) = self.listeners.join_next() => match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("the expiry listener cannot start")),
                Err(e) => Err(anyhow::Error::new(e).context("the expiry listener failed")),
            },
            Some(ended) = self.services.join_next() => match ended {
                Ok((_, Ok(()))) => Ok(()),
                Ok((name, Err(e))) => Err(e.context(format!("the {name} service failed"))),
                Err(e) => Err(anyhow::Error::new(e).context("a service failed")),
            },
        };
        self.stop().await;
        result
    }

    /// The shutdown stages, in reverse order of start-up.
    async fn stop(mut self) {
        self.cancel.cancel();
        while self.services.join_next().await.is_some() {}
        while self.sources.join_next().await.is_some() {}
        if let Err(e) = (&mut self.dispatching).await {
            warn!(event = "task_failed", error = %e, "the dispatcher's task failed");
        }
        self.drain().await;
        self.renewal.cancel();
        while self.renewing.join_next().await.is_some() {}
        self.listeners.shutdown().await;
        if let Err(e) = (&mut self.reloading).await {
            warn!(event = "task_failed", error = %e, "the reloader's task failed");
        }
        self.remove_pid_file();
        self.context.stats.log_summary();
        let (deferred_dispatches, delayed_calls, refused_triggers) = self.context.quotas.counts();
        let refused_writes = self.context.quotas.refused_writes();
        if deferred_dispatches + delayed_calls + refused_triggers + refused_writes > 0 {
            info!(
                event = "quota_totals",
                deferred_dispatches,
                delayed_calls,
                refused_triggers,
                refused_writes,
                "quota totals (jobs deferred, host calls delayed, triggers and writes refused)"
            );
        }
    }

    /// Waits for in-flight jobs for up to the grace; gives the unfinished
    /// ones back for another host.
    async fn drain(&self) {
        self.tracker.close();
        let grace = self.context.manifest.runtime.shutdown_grace.0;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return;
        }
        let unfinished: Vec<(String, PoolAlias)> = self
            .context
            .in_flight
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.pool)).collect())
            .unwrap_or_default();
        for (pool, delivery) in self.context.deliveries.iter() {
            let of_pool = unfinished.iter().filter(|(_, p)| p == pool);
            delivery
                .release_all(of_pool.map(|(m, _)| m.clone()).collect::<Vec<_>>())
                .await;
        }
        warn!(
            event = "shutdown_grace_elapsed",
            in_flight = unfinished.len(),
            grace_ms = millis(grace),
            "shutdown grace elapsed; gave the unfinished dispatches back for another host"
        );
    }
}

//! # symphony-host
//!
//! Turns Redis key expiry into sandboxed background jobs. An application
//! writes a trigger key `{tenant}:EXPTRIGGER:{action}:{id}` with a TTL; when
//! it expires, the host hears the keyspace `expired` event, finds the plugin
//! that owns the action (longest prefix from the manifest) and calls that
//! WebAssembly component's `on-expire(action, id, key)` in a fresh sandbox
//! scoped to the tenant.
//!
//! # Layout
//! - [`manifest`]: the TOML manifest, validated by types, errors with line:column.
//! - [`keys`]: the trigger key format, byte-compatible with `mimeiapify`.
//! - [`pools`]: one reconnecting Redis connection per pool alias.
//! - [`repo`]: tenant-scoped repositories (the host functions' backends).
//! - [`runtime`]: the wasmtime engine, plugin loading and invocation.
//! - [`plugins`]: the loaded plugin set and its routing table.
//! - [`policy`]: capabilities, tenants and limits of each plugin.
//! - [`quota`]: per-tenant dispatch and Redis-call rates.
//! - [`listener`]: keyevent subscription with reconnect and config checks.
//! - [`dispatch`]: from expired key to invocation, bounded, fair, drained on shutdown.
//! - [`reload`]: hot reload of the manifest and plugins.
//! - [`text`]: caps and escapes plugin-controlled text for logs and Redis.
//! - [`run`] / [`check`]: the orchestration behind the CLI.

pub mod bindings;
pub mod delivery;
pub mod dispatch;
pub mod keys;
pub mod listener;
pub mod manifest;
pub mod plugins;
pub mod policy;
pub mod pools;
pub mod quota;
pub mod reload;
pub mod repo;
pub mod runtime;
pub mod stats;
pub mod sweeper;
pub mod text;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::delivery::Delivery;
use crate::dispatch::{Concurrency, Dispatcher};
use crate::listener::Listener;
use crate::manifest::{Manifest, RedisUrl, RuntimeConfig};
use crate::plugins::PluginSet;
use crate::pools::PoolAlias;
use crate::pools::Pools;
use crate::reload::Reloader;
use crate::runtime::Runtime;
use crate::stats::Stats;

/// A duration in whole milliseconds, for log fields (JSON numbers, unlike `u128`).
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Capacity of the channel between listeners and the dispatcher.
const EVENT_QUEUE: usize = 4096;

/// Options that override the manifest.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// Replaces every pool's URL (each alias keeps its seed DB).
    pub redis_url: Option<RedisUrl>,
}

impl RunOptions {
    /// Options with a Redis URL override.
    pub fn with_redis_url(mut self, url: Option<RedisUrl>) -> Self {
        self.redis_url = url;
        self
    }
}

/// One checked plugin, as reported by [`check`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckedPlugin {
    /// Plugin name.
    pub name: String,
    /// Resolved file path.
    pub path: std::path::PathBuf,
    /// Content digest (version).
    pub digest: String,
    /// Load time, compile included (short when cached).
    pub load_time: std::time::Duration,
    /// Action prefixes routed to it.
    pub actions: Vec<String>,
}

/// Parses and validates a manifest and compiles every plugin, without
/// connecting to Redis.
///
/// # Errors
/// The manifest error (with file:line:column) or every plugin load error.
pub async fn check(manifest_path: &Path) -> anyhow::Result<Vec<CheckedPlugin>> {
    let manifest = Manifest::load(manifest_path)?;
    let pools = Pools::new(&manifest.pool_urls(None))?;
    let runtime = Runtime::new(
        &manifest.runtime,
        RuntimeConfig::fuel_needed(&manifest.plugins),
        pools,
    )?;
    let set = PluginSet::load(&runtime, &manifest, 0)?;
    Ok(set
        .plugins()
        .iter()
        .map(|p| CheckedPlugin {
            name: p.name().to_string(),
            path: p.path().to_owned(),
            digest: p.digest().to_owned(),
            load_time: p.compile_time(),
            actions: set.prefixes_of(p).into_iter().map(str::to_owned).collect(),
        })
        .collect())
}

/// Runs the host until `shutdown` resolves: loads the manifest and plugins,
/// listens for expiries and dispatches them, and reloads the plugins when
/// their files or the manifest change (or on SIGHUP). On shutdown it stops taking
/// events, lets in-flight invocations finish for up to
/// `runtime.shutdown_grace`, and returns.
///
/// # Errors
/// An invalid manifest, a plugin that does not load, an engine that cannot
/// start, or a Redis server that refuses keyevent notifications at startup.
/// Redis being unreachable is not an error: the listener keeps retrying.
pub async fn run(
    manifest_path: &Path,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let manifest = Manifest::load(manifest_path)?;
    let urls = manifest.pool_urls(options.redis_url.as_ref());
    let pools = Pools::new(&urls)?;
    let runtime = Runtime::new(
        &manifest.runtime,
        RuntimeConfig::fuel_needed(&manifest.plugins),
        pools.clone(),
    )?;
    let quotas = Arc::new(crate::quota::Quotas::new(&manifest.tenants));
    runtime.set_quotas(quotas.clone());
    let set = PluginSet::load(&runtime, &manifest, 0)
        .with_context(|| format!("cannot load the plugins of {}", manifest_path.display()))?;
    for plugin in set.plugins() {
        info!(
            plugin = %plugin.name(),
            path = %plugin.path().display(),
            version = plugin.digest(),
            load_ms = millis(plugin.compile_time()),
            actions = ?set.prefixes_of(plugin),
            "plugin loaded"
        );
    }
    let plugins = Arc::new(ArcSwap::from_pointee(set));
    let stats = Arc::new(Stats::default());
    let cancel = CancellationToken::new();

    let pid_file = reload::pid_file(manifest_path);
    let pid = std::process::id().to_string();
    if let Err(e) = std::fs::write(&pid_file, &pid) {
        warn!(path = %pid_file.display(), error = %e, "cannot write the pid file; `symphony-host reload` will not find this host");
    }
    let reloader = Reloader::new(
        manifest.clone(),
        options.redis_url.clone(),
        runtime.clone(),
        plugins.clone(),
    );
    let reloading = tokio::spawn(reload::watch(reloader, cancel.child_token()));

    // Per listened pool: a listener, the pump of its keyevents into the
    // durable index, and a sweeper claiming due firings; all firings go to
    // the one dispatcher.
    let (firing_tx, firing_rx) = mpsc::channel(EVENT_QUEUE);
    let mut listeners = JoinSet::new();
    let mut background = JoinSet::new();
    let mut deliveries = BTreeMap::new();
    let lease = manifest.delivery.lease.0;
    // Lease renewal outlives `cancel`: in-flight jobs keep their leases
    // while shutdown drains them.
    let renewal = CancellationToken::new();
    let mut renewing = JoinSet::new();
    let mut aliases = manifest.listener.pools.clone();
    aliases.sort();
    aliases.dedup();
    for alias in aliases {
        let pool = pools.get(alias)?;
        let delivery = Delivery::for_pool(&pools, alias)?
            .with_dead_letter_cap(manifest.delivery.max_dead_letters.get());
        deliveries.insert(alias, delivery.clone());
        renewing.spawn(sweeper::renew(delivery.clone(), lease, renewal.clone()));
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let wake = Arc::new(Notify::new());
        let listener = Listener::new(alias, pool, manifest.listener.notify_keyspace_events);
        listeners.spawn(listener.run(event_tx, cancel.child_token()));
        background.spawn(sweeper::pump(
            delivery.clone(),
            event_rx,
            firing_tx.clone(),
            wake.clone(),
            lease,
            stats.clone(),
            cancel.child_token(),
        ));
        background.spawn(sweeper::sweep(
            delivery,
            firing_tx.clone(),
            wake,
            lease,
            cancel.child_token(),
        ));
    }
    drop(firing_tx);
    let deliveries = Arc::new(deliveries);

    let dispatcher = Dispatcher::new(
        runtime.clone(),
        deliveries.clone(),
        plugins.clone(),
        Concurrency {
            total: manifest.runtime.concurrency.get(),
            per_tenant: manifest.runtime.tenant_concurrency(),
        },
        stats.clone(),
    );
    let in_flight = dispatcher.in_flight();
    let tracker = dispatcher.tracker();
    let dispatching = tokio::spawn(dispatcher.run(firing_rx, cancel.child_token()));

    let result = tokio::select! {
        _ = shutdown => {
            info!("shutdown requested: no new dispatches, draining in-flight ones");
            Ok(())
        }
        Some(ended) = listeners.join_next() => match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the expiry listener cannot start")),
            Err(e) => Err(anyhow::Error::new(e).context("the expiry listener failed")),
        },
    };
    cancel.cancel();
    while background.join_next().await.is_some() {}
    let _ = dispatching.await;
    tracker.close();
    let grace = manifest.runtime.shutdown_grace.0;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        // Leave the unfinished ones for another host, at once.
        let unfinished: Vec<(String, PoolAlias)> = in_flight
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        for (member, pool) in &unfinished {
            if let Some(d) = deliveries.get(pool) {
                let _ = d.release(member).await;
            }
        }
        warn!(
            in_flight = unfinished.len(),
            grace_ms = millis(grace),
            "shutdown grace elapsed; gave the unfinished dispatches back for another host"
        );
    }
    renewal.cancel();
    while renewing.join_next().await.is_some() {}
    listeners.shutdown().await;
    let _ = reloading.await;
    if std::fs::read_to_string(&pid_file).is_ok_and(|p| p == pid) {
        let _ = std::fs::remove_file(&pid_file);
    }
    stats.log_summary();
    let (deferred_dispatches, delayed_calls, refused_triggers) = quotas.counts();
    if deferred_dispatches + delayed_calls + refused_triggers > 0 {
        info!(
            deferred_dispatches,
            delayed_calls,
            refused_triggers,
            "quota totals (jobs deferred, host calls delayed, triggers refused)"
        );
    }
    result
}

//! [`HostContext`]: what a service mounted on the host (the admin server,
//! the heartbeat, an embedding application's own) can see and use. The
//! host's lifecycle makes it; services depend on it, not on the lifecycle.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::delivery::Delivery;
use crate::dispatch::InFlight;
use crate::manifest::Manifest;
use crate::plugins::PluginSet;
use crate::pools::{PoolAlias, Pools};
use crate::quota::Quotas;
use crate::reload;
use crate::runtime::Runtime;
use crate::stats::Stats;

/// What a service mounted on the host can see and use; cheap to clone.
#[derive(Clone)]
pub struct HostContext {
    pub(crate) manifest: Arc<Manifest>,
    pub(crate) pools: Pools,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) plugins: Arc<ArcSwap<PluginSet>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) quotas: Arc<Quotas>,
    pub(crate) deliveries: Arc<BTreeMap<PoolAlias, Delivery>>,
    pub(crate) in_flight: InFlight,
    pub(crate) reload_requests: tokio::sync::mpsc::Sender<reload::ReloadRequest>,
}

impl HostContext {
    /// The manifest the host started with (reloads swap the plugin set,
    /// not this).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The Redis pools.
    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    /// The engine and its settings.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The live plugin set (swapped by each reload).
    pub fn plugins(&self) -> Arc<PluginSet> {
        self.plugins.load_full()
    }

    /// Counters since start.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Per-tenant quotas and their counts.
    pub fn quotas(&self) -> &Arc<Quotas> {
        &self.quotas
    }

    /// The delivery state of each listened pool.
    pub fn deliveries(&self) -> &BTreeMap<PoolAlias, Delivery> {
        &self.deliveries
    }

    /// The firings this host is running now, by lease.
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// Reloads the manifest and plugins now, as a file change would;
    /// returns the new generation.
    ///
    /// # Errors
    /// Why the reload was rejected (the live set is then unchanged), or
    /// that the reloader has stopped.
    pub async fn reload(&self) -> Result<u64, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.reload_requests
            .send(reply)
            .await
            .map_err(|_| "the reloader has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the reloader has stopped".to_owned())?
    }

    /// Sets the gauges of `stats().metrics` that are read, not counted:
    /// the live plugin set and jobs in flight from this host, and the
    /// shared delivery state from Redis (left as they were when Redis does
    /// not answer; the failure counts as a Redis error).
    pub async fn refresh_gauges(&self) {
        let metrics = &self.stats.metrics;
        let set = self.plugins();
        metrics.plugin_set(
            set.generation(),
            set.plugins()
                .iter()
                .map(|p| (p.name().as_str(), p.digest())),
        );
        let running = self.in_flight.lock().map_or(0, |s| s.len());
        metrics.set_in_flight(running);
        let mut sum = crate::delivery::Gauges::default();
        for delivery in self.deliveries.values() {
            match delivery.gauges().await {
                Ok(g) => sum += g,
                Err(_) => return,
            }
        }
        metrics.set_delivery(&sum);
    }
}

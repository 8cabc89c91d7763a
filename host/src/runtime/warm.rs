//! Warm instances (a plugin's `reuse_instances`): an idle instance kept
//! for the next job of the same tenant, each holding one of a few pooling
//! slots set aside for them.

use std::sync::Arc;

use wasmtime::Store;

use super::output::GuestOutput;
use super::{JobState, LoadedPlugin};
use crate::bindings::Plugin;

/// A warm instance kept for the next job of the same tenant.
pub(super) struct Warm {
    pub(super) store: Store<JobState>,
    pub(super) instance: Plugin,
    pub(super) stdout: GuestOutput,
    pub(super) stderr: GuestOutput,
    pub(super) uses: u32,
    /// Its share of [`WARM_SLOTS`], given back when it leaves the pool.
    pub(super) _slot: WarmSlot,
}

/// One of the [`WARM_SLOTS`] pooling slots set aside for idle warm
/// instances, over all plugins; released on drop.
pub(super) struct WarmSlot(Arc<std::sync::atomic::AtomicU32>);

impl WarmSlot {
    pub(super) fn acquire(idle: &Arc<std::sync::atomic::AtomicU32>) -> Option<WarmSlot> {
        use std::sync::atomic::Ordering;
        idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < WARM_SLOTS).then_some(n + 1)
        })
        .ok()
        .map(|_| WarmSlot(idle.clone()))
    }
}

impl Drop for WarmSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Most idle warm instances one plugin keeps (each holds a pooling slot).
const MAX_WARM_PER_PLUGIN: usize = 8;
/// Pooling slots set aside for idle warm instances.
pub(super) const WARM_SLOTS: u32 = 64;

impl LoadedPlugin {
    pub(super) fn take_warm(&self, tenant: &str) -> Option<Warm> {
        self.warm.lock().ok()?.get_mut(tenant)?.pop()
    }

    pub(super) fn put_warm(&self, tenant: &str, warm: Warm) {
        if let Ok(mut pool) = self.warm.lock() {
            let idle: usize = pool.values().map(Vec::len).sum();
            if idle < MAX_WARM_PER_PLUGIN {
                pool.entry(tenant.to_owned()).or_default().push(warm);
            }
        }
    }
}

//! What this host holds: the firings it claimed and has not finished.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Firing, tenant_of};

/// The firings this host has claimed and not yet finished, per lease (a
/// member and its claim token, see `lease.rs`): whether the lease was lost.
/// Two claims of one member (a key armed again while its firing runs) are
/// two entries.
///
/// A claimed firing may wait in this host's queues for longer than the
/// lease (a backlog), and a job may run longer than the lease. So the host
/// renews the lease of every firing it holds ([`Delivery::renew`](super::Delivery::renew)), from
/// the claim to the finish, and a firing whose lease was lost anyway (Redis
/// unreachable for a whole lease, say) is not started: the reaper has put
/// it back in the index for another host.
#[derive(Debug, Default)]
pub struct Held {
    state: Mutex<HeldState>,
}

#[derive(Debug, Default)]
struct HeldState {
    /// Lease → lost.
    members: HashMap<String, bool>,
    /// Tenant → members held.
    tenants: HashMap<String, usize>,
}

impl HeldState {
    fn remove(&mut self, member: &str) {
        if self.members.remove(member).is_some() {
            let tenant = tenant_of(member);
            if let Some(n) = self.tenants.get_mut(tenant) {
                *n -= 1;
                if *n == 0 {
                    self.tenants.remove(tenant);
                }
            }
        }
    }
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HeldState> {
        // A panic while holding this lock leaves a state that is still valid.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a claimed firing by its lease.
    pub(super) fn hold(&self, lease: &str) {
        let mut state = self.lock();
        if state.members.insert(lease.to_owned(), false).is_none() {
            *state
                .tenants
                .entry(tenant_of(lease).to_owned())
                .or_default() += 1;
        }
    }

    /// The firing of `lease` is finished, retried, dead or given back.
    pub fn forget(&self, lease: &str) {
        self.lock().remove(lease);
    }

    /// Every lease held, for renewal.
    pub(super) fn members(&self) -> Vec<String> {
        self.lock().members.keys().cloned().collect()
    }

    /// The tenants of which this host holds at least `at_least` firings.
    pub fn tenants_holding(&self, at_least: usize) -> Vec<String> {
        self.lock()
            .tenants
            .iter()
            .filter(|(_, n)| **n >= at_least)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Marks leases that were lost; returns how many were still held.
    pub(super) fn lose(&self, leases: &[String]) -> usize {
        let mut state = self.lock();
        let mut n = 0;
        for l in leases {
            if let Some(lost) = state.members.get_mut(l) {
                *lost = true;
                n += 1;
            }
        }
        n
    }

    /// Whether `firing` may start: this host still holds its lease and
    /// the lease was not lost. A lost one is forgotten.
    pub fn may_start(&self, firing: &Firing) -> bool {
        let mut state = self.lock();
        match state.members.get(&firing.lease) {
            Some(false) => true,
            Some(true) => {
                state.remove(&firing.lease);
                false
            }
            None => false,
        }
    }

    /// How many members are held.
    pub fn len(&self) -> usize {
        self.lock().members.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

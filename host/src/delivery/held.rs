//! What this host holds: the firings it claimed and has not finished.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Firing, tenant_of};

/// The firings this host has claimed and not yet finished, per member: the
/// claim that took it and whether its lease was lost.
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
    next_claim: AtomicU64,
}

#[derive(Debug, Default)]
struct HeldState {
    /// Member → (claim number, lease lost).
    members: HashMap<String, (u64, bool)>,
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

    /// Records a claimed member; returns its claim number.
    pub(super) fn hold(&self, member: &str) -> u64 {
        let claim = self.next_claim.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        if state
            .members
            .insert(member.to_owned(), (claim, false))
            .is_none()
        {
            *state
                .tenants
                .entry(tenant_of(member).to_owned())
                .or_default() += 1;
        }
        claim
    }

    /// The member is finished, retried, dead or given back.
    pub fn forget(&self, member: &str) {
        self.lock().remove(member);
    }

    /// Every member held, for renewal.
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

    /// Marks members whose lease was lost; returns how many were still held.
    pub(super) fn lose(&self, members: &[String]) -> usize {
        let mut state = self.lock();
        let mut n = 0;
        for m in members {
            if let Some(entry) = state.members.get_mut(m) {
                entry.1 = true;
                n += 1;
            }
        }
        n
    }

    /// Whether `firing` may start: this host still holds it under the same
    /// claim and its lease was not lost. A lost one is forgotten.
    pub fn may_start(&self, firing: &Firing) -> bool {
        let mut state = self.lock();
        match state.members.get(&firing.member) {
            Some((claim, false)) if *claim == firing.claim => true,
            Some((claim, true)) if *claim == firing.claim => {
                state.remove(&firing.member);
                false
            }
            _ => false,
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

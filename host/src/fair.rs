//! The fair queue: jobs waiting for a slot, queued per tenant and started
//! round-robin across tenants under three limits (jobs in all, jobs of one
//! tenant, instances of one plugin). Pure: no I/O, no clock; the dispatcher
//! decides, item by item, whether a job starts, waits or is dropped.
//!
//! The rules, each unit-tested below:
//! - Tenants are served in turn, the one served longest ago first; a tenant
//!   whose job starts goes to the back of the line.
//! - At most `total` jobs run, and at most `per_tenant` of one tenant.
//! - A tenant that must wait (its own limit, its plugin's instances, its
//!   quota) keeps its place, with its job at the front of its queue, so it
//!   is first in line when the slot it waits for frees. (Moving waiting
//!   tenants to the back too left the order as it was after a pass that
//!   started nothing, and a slot freed by a flood's job went back to the
//!   flood, ahead of another tenant waiting for the same plugin.)
//! - A dropped job frees nothing and costs its tenant no turn.
//! - Within a tenant, jobs start in the order they were queued.

use std::collections::{HashMap, VecDeque};

/// Limits of the scheduler.
#[derive(Debug, Clone, Copy)]
pub struct Concurrency {
    /// Jobs running at once.
    pub total: usize,
    /// Jobs of one tenant running at once.
    pub per_tenant: usize,
}

/// What the dispatcher decided for the job at the head of a tenant's queue.
pub enum Verdict<T> {
    /// It started, as a job of this plugin (counted until [`FairQueue::finished`]).
    Started(String),
    /// It will not run (gone, or no longer this host's): nothing is counted.
    Dropped,
    /// It must wait: back to the front of its queue, its tenant in place.
    Wait(T),
}

/// Jobs running, by tenant and by plugin.
#[derive(Debug, Default)]
pub struct Running {
    total: usize,
    by_tenant: HashMap<String, usize>,
    by_plugin: HashMap<String, usize>,
}

impl Running {
    /// Jobs of `plugin` running.
    pub fn of_plugin(&self, plugin: &str) -> usize {
        self.by_plugin.get(plugin).copied().unwrap_or(0)
    }

    fn of_tenant(&self, tenant: &str) -> usize {
        self.by_tenant.get(tenant).copied().unwrap_or(0)
    }

    fn add(&mut self, tenant: &str, plugin: String) {
        self.total += 1;
        increment(&mut self.by_tenant, tenant);
        increment(&mut self.by_plugin, &plugin);
    }
}

/// Jobs queued per tenant, and the jobs running.
pub struct FairQueue<T> {
    limits: Concurrency,
    queues: HashMap<String, VecDeque<T>>,
    /// Tenants with queued jobs, the one served longest ago first.
    order: VecDeque<String>,
    queued: usize,
    running: Running,
}

impl<T> FairQueue<T> {
    /// An empty queue under `limits`.
    pub fn new(limits: Concurrency) -> Self {
        Self {
            limits,
            queues: HashMap::new(),
            order: VecDeque::new(),
            queued: 0,
            running: Running::default(),
        }
    }

    /// Jobs queued, over all tenants.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Queues `item` at the back of `tenant`'s queue.
    pub fn push(&mut self, tenant: String, item: T) {
        self.queued += 1;
        match self.queues.get_mut(&tenant) {
            Some(queue) => {
                if queue.is_empty() {
                    self.order.push_back(tenant);
                }
                queue.push_back(item);
            }
            None => {
                self.order.push_back(tenant.clone());
                self.queues.insert(tenant, VecDeque::from([item]));
            }
        }
    }

    /// A job of `tenant` and `plugin` ended: its slots free.
    pub fn finished(&mut self, tenant: &str, plugin: &str) {
        self.running.total = self.running.total.saturating_sub(1);
        decrement(&mut self.running.by_tenant, tenant);
        decrement(&mut self.running.by_plugin, plugin);
    }

    /// Every queued job, emptying the queue (at shutdown).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.order.clear();
        self.queued = 0;
        self.queues.drain().flat_map(|(_, queue)| queue)
    }

    /// One pass down the line of tenants: offers each tenant's next job to
    /// `decide` (with the jobs running now) while slots are free, by the
    /// rules in the module's documentation.
    pub fn start_ready(&mut self, mut decide: impl FnMut(&str, T, &Running) -> Verdict<T>) {
        let mut i = 0;
        while self.running.total < self.limits.total && i < self.order.len() {
            let Some(tenant) = self.order.get(i).cloned() else {
                break;
            };
            if self.running.of_tenant(&tenant) >= self.limits.per_tenant {
                i += 1;
                continue;
            }
            let Some(next) = self.queues.get_mut(&tenant).and_then(VecDeque::pop_front) else {
                self.forget(&tenant);
                continue;
            };
            match decide(&tenant, next, &self.running) {
                Verdict::Dropped => self.queued -= 1,
                Verdict::Wait(item) => {
                    if let Some(queue) = self.queues.get_mut(&tenant) {
                        queue.push_front(item);
                    }
                    i += 1;
                    continue;
                }
                Verdict::Started(plugin) => {
                    self.queued -= 1;
                    self.running.add(&tenant, plugin);
                    self.order.remove(i);
                    self.order.push_back(tenant.clone());
                }
            }
            if self.queues.get(&tenant).is_some_and(VecDeque::is_empty) {
                self.forget(&tenant);
            }
        }
    }

    /// Drops `tenant`'s empty queue and its place in line.
    fn forget(&mut self, tenant: &str) {
        self.queues.remove(tenant);
        if let Some(at) = self.order.iter().position(|t| t == tenant) {
            self.order.remove(at);
        }
    }
}

/// Adds one to `key`'s count (its key is allocated only the first time).
fn increment(counts: &mut HashMap<String, usize>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_owned(), 1);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A job: its tenant, its number, its plugin.
    type Job = (&'static str, u32, &'static str);

    fn queue(total: usize, per_tenant: usize, jobs: &[Job]) -> FairQueue<Job> {
        let mut q = FairQueue::new(Concurrency { total, per_tenant });
        for job in jobs {
            q.push(job.0.to_owned(), *job);
        }
        q
    }

    /// One pass that starts every job offered; returns them in order.
    fn pass(q: &mut FairQueue<Job>) -> Vec<Job> {
        let mut started = Vec::new();
        q.start_ready(|_, job, _| {
            started.push(job);
            Verdict::Started(job.2.to_owned())
        });
        started
    }

    #[test]
    fn tenants_are_served_in_turn_and_a_tenants_jobs_in_order() {
        let mut q = queue(
            10,
            10,
            &[
                ("a", 1, "p"),
                ("a", 2, "p"),
                ("a", 3, "p"),
                ("b", 1, "p"),
                ("c", 1, "p"),
            ],
        );
        let tenants: Vec<_> = pass(&mut q).iter().map(|j| (j.0, j.1)).collect();
        assert_eq!(tenants, [("a", 1), ("b", 1), ("c", 1), ("a", 2), ("a", 3)]);
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn at_most_total_jobs_run_and_a_finished_one_frees_a_slot() {
        let mut q = queue(2, 10, &[("a", 1, "p"), ("b", 1, "p"), ("c", 1, "p")]);
        assert_eq!(pass(&mut q).len(), 2);
        assert!(pass(&mut q).is_empty(), "no slot is free");
        q.finished("a", "p");
        assert_eq!(pass(&mut q), [("c", 1, "p")]);
    }

    #[test]
    fn a_tenant_at_its_own_limit_waits_while_others_start() {
        let mut q = queue(
            10,
            1,
            &[("a", 1, "p"), ("a", 2, "p"), ("b", 1, "p"), ("b", 2, "p")],
        );
        assert_eq!(pass(&mut q), [("a", 1, "p"), ("b", 1, "p")]);
        q.finished("b", "p");
        assert_eq!(pass(&mut q), [("b", 2, "p")]);
        assert_eq!(q.queued(), 1);
    }

    #[test]
    fn a_waiting_tenant_keeps_its_place_and_its_job_the_front() {
        // The plugin has one instance. The flood's first job takes it, and
        // the flood goes to the back of the line, behind the victim.
        let mut q = queue(
            10,
            10,
            &[
                ("flood", 1, "p"),
                ("flood", 2, "p"),
                ("flood", 3, "p"),
                ("victim", 1, "p"),
            ],
        );
        let mut started = Vec::new();
        let mut one_instance = |_: &str, job: Job, running: &Running| match running.of_plugin(job.2)
        {
            0 => {
                started.push(job);
                Verdict::Started(job.2.to_owned())
            }
            _ => Verdict::Wait(job),
        };
        q.start_ready(&mut one_instance);
        // Passes that start nothing leave the line as it is.
        q.start_ready(&mut one_instance);
        q.start_ready(&mut one_instance);
        assert_eq!(
            q.queued(),
            3,
            "nothing more starts while the instance is busy"
        );
        // The flood's job ends: the slot goes to the victim, first in line,
        // not back to the flood.
        q.finished("flood", "p");
        q.start_ready(&mut one_instance);
        q.finished("victim", "p");
        q.start_ready(&mut one_instance);
        assert_eq!(
            started,
            [("flood", 1, "p"), ("victim", 1, "p"), ("flood", 2, "p")],
            "the flood's waiting job stayed at the front of its queue"
        );
    }

    #[test]
    fn a_dropped_job_costs_its_tenant_no_turn_and_frees_nothing() {
        let mut q = queue(1, 1, &[("a", 1, "p"), ("a", 2, "p"), ("b", 1, "p")]);
        let mut offered = Vec::new();
        q.start_ready(|_, job, _| {
            offered.push(job);
            match job.1 {
                1 if job.0 == "a" => Verdict::Dropped,
                _ => Verdict::Started(job.2.to_owned()),
            }
        });
        assert_eq!(offered, [("a", 1, "p"), ("a", 2, "p")]);
        assert_eq!(q.queued(), 1);
        assert!(pass(&mut q).is_empty(), "the one slot is a:2's");
    }

    #[test]
    fn plugin_counts_follow_starts_and_finishes() {
        let mut q = queue(10, 10, &[("a", 1, "p"), ("b", 1, "p"), ("c", 1, "q")]);
        pass(&mut q);
        let mut seen = None;
        q.push("d".into(), ("d", 1, "p"));
        q.start_ready(|_, job, running| {
            seen = Some((running.of_plugin("p"), running.of_plugin("q")));
            Verdict::Wait(job)
        });
        assert_eq!(seen, Some((2, 1)));
        q.finished("a", "p");
        q.finished("c", "q");
        q.start_ready(|_, job, running| {
            seen = Some((running.of_plugin("p"), running.of_plugin("q")));
            Verdict::Wait(job)
        });
        assert_eq!(seen, Some((1, 0)));
    }

    #[test]
    fn drain_empties_every_queue() {
        let mut q = queue(0, 1, &[("a", 1, "p"), ("a", 2, "p"), ("b", 1, "p")]);
        assert_eq!(q.drain().count(), 3);
        assert_eq!(q.queued(), 0);
        assert!(pass(&mut q).is_empty());
    }
}

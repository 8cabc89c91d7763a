//! The two sources of firings: the sweeper, which claims due entries of the
//! durable index and hands each over at its due time, and the pump, which
//! turns the listener's keyevents into index updates and fallback claims.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::delivery::{CLAIM_AHEAD, Delivery, Firing, INTERNAL_PREFIX, LEAD_MS};
use crate::keys::parse_trigger;
use crate::listener::{EventKind, KeyEvent};
use crate::stats::{Stats, Throttle};

/// Firings claimed per script call.
const BATCH: usize = 500;
/// Longest sleep between sweeps when nothing is due sooner (a safety net
/// for wake-ups missed while the listener was away).
const MAX_IDLE: Duration = Duration::from_millis(200);
/// How often expired leases are looked for.
const REAP_EVERY: Duration = Duration::from_millis(500);
/// How often the sweeper looks again while it skips a tenant of which it
/// holds [`CLAIM_AHEAD`] firings (they are worked off meanwhile).
const BUSY_POLL: Duration = Duration::from_millis(5);

/// Claims due firings until `cancel`, sending each at its due time.
pub async fn sweep(
    delivery: Delivery,
    firings: mpsc::Sender<Firing>,
    wake: Arc<Notify>,
    lease: Duration,
    cancel: CancellationToken,
) {
    let lease_ms = crate::millis(lease);
    let errors = Throttle::new(Duration::from_secs(10));
    let mut last_reap: Option<Instant> = None;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        if last_reap.is_none_or(|t| t.elapsed() >= REAP_EVERY) {
            match delivery.reap().await {
                Ok(n) if n > 0 => {
                    warn!(
                        firings = n,
                        "leases ended without an answer (a host died?); those firings run again"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    if errors.allow().is_some() {
                        warn!(error = %e, "cannot check leases");
                    }
                }
            }
            last_reap = Some(Instant::now());
        }
        // Not raced against `cancel`: a claim Redis has made must come back
        // so it can be handed over or given back.
        let skip = delivery.held().tenants_holding(CLAIM_AHEAD);
        let claimed = delivery.claim_due(BATCH, lease_ms, &skip).await;
        let (server_now, next, mut batch) = match claimed {
            Ok(c) if cancel.is_cancelled() => {
                for f in c.2 {
                    let _ = delivery.release(&f.member).await;
                }
                return;
            }
            Ok(c) => c,
            Err(e) => {
                if let Some(suppressed) = errors.allow() {
                    warn!(error = %e, suppressed, "cannot claim due triggers; retrying");
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            }
        };
        let claimed_at = Instant::now();
        let full = batch.len() == BATCH;
        batch.sort_by_key(|f| f.due_ms);
        let mut pending = batch.into_iter();
        while let Some(firing) = pending.next() {
            let wait =
                Duration::from_millis(u64::try_from(firing.due_ms - server_now).unwrap_or(0));
            let sent = tokio::select! {
                _ = cancel.cancelled() => false,
                sent = async {
                    let at = claimed_at + wait;
                    // Under load most firings are due already: no timer for those.
                    if at > Instant::now() {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    firings.send(firing.clone()).await.is_ok()
                } => sent,
            };
            if !sent {
                // Shutting down: give back what this host claimed but did not start.
                for f in std::iter::once(firing).chain(pending) {
                    let _ = delivery.release(&f.member).await;
                }
                return;
            }
        }
        if full {
            continue;
        }
        let idle = next
            .map(|n| {
                let now = server_now + crate::millis(claimed_at.elapsed()) as i64;
                Duration::from_millis(u64::try_from(n - LEAD_MS - now).unwrap_or(0))
            })
            .unwrap_or(MAX_IDLE)
            .min(if skip.is_empty() { MAX_IDLE } else { BUSY_POLL });
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(idle) => {}
            _ = wake.notified() => {}
        }
    }
}

/// Renews the lease of every firing this host holds in `delivery`'s pool
/// every quarter lease, until `cancel`. A firing can wait in this host's
/// queues (a backlog) or run for longer than the lease; renewing from the
/// claim to the finish keeps the reaper from handing it to another host
/// meanwhile. Firings whose lease was lost anyway are marked, and the
/// dispatcher does not start them.
pub async fn renew(delivery: Delivery, lease: Duration, cancel: CancellationToken) {
    let lease_ms = crate::millis(lease);
    let every = (lease / 4).max(Duration::from_millis(50));
    let errors = Throttle::new(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if delivery.held().is_empty() {
            continue;
        }
        match delivery.renew(lease_ms).await {
            Ok((_, 0)) => {}
            Ok((renewed, lost)) => warn!(
                pool = %delivery.pool(), renewed, lost,
                "leases were lost before renewal (Redis unreachable for a whole lease?); \
                 those firings are not started here"
            ),
            Err(e) => {
                if let Some(suppressed) = errors.allow() {
                    warn!(pool = %delivery.pool(), error = %e, suppressed, "cannot renew leases; retrying");
                }
            }
        }
    }
}

/// Keyevents applied per batch.
const PUMP_BATCH: usize = 1000;

/// Applies the listener's keyevents until `cancel`: `expire` indexes a
/// trigger another client armed, `del` drops a cancelled one, `expired`
/// claims a firing no host claimed in time, and a (re)subscription indexes
/// everything (events may have been missed).
///
/// Events come in bursts (every trigger armed or claimed makes one), so the
/// pump takes what is waiting, up to `PUMP_BATCH` (1000), and applies each run of
/// events of one kind in one script call, in order.
pub async fn pump(
    delivery: Delivery,
    mut events: mpsc::Receiver<KeyEvent>,
    firings: mpsc::Sender<Firing>,
    wake: Arc<Notify>,
    lease: Duration,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) {
    let pump = Pump {
        delivery,
        firings,
        wake,
        lease_ms: crate::millis(lease),
        stats,
        not_trigger_log: Throttle::new(Duration::from_secs(10)),
        errors: Throttle::new(Duration::from_secs(10)),
    };
    let mut batch = Vec::with_capacity(PUMP_BATCH);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            n = events.recv_many(&mut batch, PUMP_BATCH) => if n == 0 { return },
        }
        // Group the batch into steps, in order: a run of events of one kind
        // is one step (one script call).
        let mut steps: Vec<Step> = Vec::new();
        for event in batch.drain(..) {
            match event {
                KeyEvent::Subscribed { pool } => steps.push(Step::IndexAll(pool)),
                KeyEvent::Key {
                    pool, kind, key, ..
                } => {
                    let Some(key) = pump.trigger(pool, kind, key) else {
                        continue;
                    };
                    match steps.last_mut() {
                        Some(Step::Run(k, keys)) if *k == kind => keys.push(key),
                        _ => steps.push(Step::Run(kind, vec![key])),
                    }
                }
            }
        }
        for step in steps {
            match step {
                Step::IndexAll(pool) => match pump.delivery.index_all().await {
                    Ok(n) => {
                        info!(%pool, indexed = n, "indexed the trigger keys present");
                        pump.wake.notify_one();
                    }
                    Err(e) => pump.failed(&e),
                },
                Step::Run(kind, keys) => {
                    if !pump.apply(kind, keys).await {
                        return;
                    }
                }
            }
        }
    }
}

/// One step of a pump batch.
enum Step {
    /// The listener (re)subscribed: index every trigger key present.
    IndexAll(crate::pools::PoolAlias),
    /// Consecutive keyevents of one kind.
    Run(EventKind, Vec<String>),
}

struct Pump {
    delivery: Delivery,
    firings: mpsc::Sender<Firing>,
    wake: Arc<Notify>,
    lease_ms: u64,
    stats: Arc<Stats>,
    not_trigger_log: Throttle,
    errors: Throttle,
}

impl Pump {
    /// The trigger key of an event, or `None` (internal keys, and keys that
    /// are not triggers: those that expired are counted and logged).
    fn trigger(
        &self,
        pool: crate::pools::PoolAlias,
        kind: EventKind,
        key: Result<String, Vec<u8>>,
    ) -> Option<String> {
        match key {
            Ok(k) if k.starts_with(INTERNAL_PREFIX) => None,
            Ok(k) if parse_trigger(&k).is_some() => Some(k),
            other => {
                if kind == EventKind::Expired {
                    self.stats.not_trigger.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = self.not_trigger_log.allow() {
                        let key = match other {
                            Ok(k) => k,
                            Err(raw) => String::from_utf8_lossy(&raw).into_owned(),
                        };
                        info!(%pool, %key, suppressed, "ignored an expired key that is not a trigger ({{tenant}}:EXPTRIGGER:{{action}}:{{id}})");
                    }
                }
                None
            }
        }
    }

    /// Applies a run of one kind of event; false when shutting down.
    async fn apply(&self, kind: EventKind, keys: Vec<String>) -> bool {
        let result = match kind {
            EventKind::Expire => self
                .delivery
                .index(&keys)
                .await
                .map(|_| self.wake.notify_one()),
            EventKind::Del => self.delivery.unindex(&keys).await.map(drop),
            EventKind::Expired => match self.delivery.claim_expired(&keys, self.lease_ms).await {
                Ok(claimed) => {
                    // Indexed keys are left to the sweep, maybe made due now.
                    self.wake.notify_one();
                    let mut claimed = claimed.into_iter();
                    while let Some(firing) = claimed.next() {
                        if let Err(unsent) = self.firings.send(firing).await {
                            // Shutting down: give them back for another host.
                            for f in std::iter::once(unsent.0).chain(claimed) {
                                let _ = self.delivery.release(&f.member).await;
                            }
                            return false;
                        }
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = result {
            self.failed(&e);
        }
        true
    }

    fn failed(&self, e: &crate::repo::RepoError) {
        if let Some(suppressed) = self.errors.allow() {
            warn!(error = %e, suppressed, "cannot apply keyevents to the trigger index");
        }
    }
}

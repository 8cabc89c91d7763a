//! The pump: the listener's keyevents turned into index updates, and the
//! fallback claims of `expired` keys no host indexed (the second source of
//! firings, beside the sweeper, `sweeper`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::delivery::{Delivery, Firing, INTERNAL_PREFIX};
use crate::keys::check_trigger;
use crate::listener::{EventKind, KeyEvent};
use crate::pools::PoolAlias;
use crate::stats::Stats;
use crate::throttle::Throttle;

/// Keyevents applied per batch.
const PUMP_BATCH: usize = 1000;
/// Most bytes of a key that is not run kept in its log line.
const LOGGED_KEY: usize = 256;

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
        cancel: cancel.clone(),
    };
    let mut batch = Vec::with_capacity(PUMP_BATCH);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            n = events.recv_many(&mut batch, PUMP_BATCH) => if n == 0 { return },
        }
        let steps = steps_of(batch.drain(..), |pool, kind, key| {
            pump.trigger(pool, kind, key)
        });
        for step in steps {
            match step {
                Step::IndexAll(pool, node) => {
                    match pump.delivery.index_present(node.as_ref()).await {
                        Ok(n) => {
                            let node = node.map(|n| n.to_string()).unwrap_or_default();
                            info!(event = "triggers_indexed", %pool, node, indexed = n, "indexed the trigger keys present");
                            pump.wake.notify_one();
                        }
                        Err(e) => pump.failed(&e),
                    }
                }
                Step::Run(kind, keys) => {
                    if !pump.apply(kind, keys).await {
                        return;
                    }
                }
            }
        }
    }
}

/// How long a batch of keyevents is tried again while Redis fails (a
/// restart, a failover, a cluster connection being replaced).
const RETRY_FOR: Duration = Duration::from_secs(30);

/// A batch of keyevents as steps, in order: a run of events of one kind
/// is one step (one script call), and a (re)subscription a step of its
/// own. `trigger` gives an event's trigger key, or `None` to leave it out
/// (it does not break a run).
fn steps_of(
    batch: impl IntoIterator<Item = KeyEvent>,
    mut trigger: impl FnMut(PoolAlias, EventKind, Result<String, Vec<u8>>) -> Option<String>,
) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for event in batch {
        match event {
            KeyEvent::Subscribed { pool, node } => steps.push(Step::IndexAll(pool, node)),
            KeyEvent::Key {
                pool, kind, key, ..
            } => {
                let Some(key) = trigger(pool, kind, key) else {
                    continue;
                };
                match steps.last_mut() {
                    Some(Step::Run(k, keys)) if *k == kind => keys.push(key),
                    _ => steps.push(Step::Run(kind, vec![key])),
                }
            }
        }
    }
    steps
}

/// One step of a pump batch.
#[derive(Debug, PartialEq)]
enum Step {
    /// The listener (re)subscribed: index every trigger key present (on
    /// a cluster, the node's).
    IndexAll(PoolAlias, Option<crate::backend::Node>),
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
    cancel: CancellationToken,
}

impl Pump {
    /// The trigger key of an event, or `None` (internal keys, and keys that
    /// are not triggers: those that expired are counted and logged).
    fn trigger(
        &self,
        pool: PoolAlias,
        kind: EventKind,
        key: Result<String, Vec<u8>>,
    ) -> Option<String> {
        let why = match &key {
            Ok(k) if k.starts_with(INTERNAL_PREFIX) => return None,
            Ok(k) => match check_trigger(k) {
                Ok(_) => return key.ok(),
                Err(why) => why.to_string(),
            },
            Err(_) => "not UTF-8".to_owned(),
        };
        if kind == EventKind::Expired {
            self.stats.not_trigger.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.not_trigger_log.allow() {
                let key = match key {
                    Ok(k) => k,
                    Err(raw) => String::from_utf8_lossy(&raw).into_owned(),
                };
                // Cut: a heard key may be as long as Redis allows.
                let key = crate::text::cap_at(key, LOGGED_KEY);
                info!(event = "not_trigger", %pool, %key, reason = %why, suppressed, "ignored an expired key that is not a trigger this host runs");
            }
        }
        None
    }

    /// Applies a run of one kind of event, trying again with backoff while
    /// Redis fails (every step is idempotent), for up to [`RETRY_FOR`];
    /// false when shutting down.
    async fn apply(&self, kind: EventKind, keys: Vec<String>) -> bool {
        let started = Instant::now();
        let mut wait = Duration::from_millis(50);
        loop {
            match self.apply_once(kind, &keys).await {
                Some(Ok(())) => return true,
                None => return false,
                Some(Err(e)) => {
                    self.failed(&e);
                    if started.elapsed() + wait > RETRY_FOR {
                        return true;
                    }
                    tokio::select! {
                        _ = self.cancel.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// One try of [`apply`](Self::apply); `None` when shutting down.
    async fn apply_once(
        &self,
        kind: EventKind,
        keys: &[String],
    ) -> Option<Result<(), crate::repo::RepoError>> {
        let keys = keys.to_vec();
        let result = match kind {
            EventKind::Expire => self
                .delivery
                .index(&keys)
                .await
                .map(|_| self.wake.notify_one()),
            EventKind::Del => self.delivery.unindex(&keys).await.map(drop),
            EventKind::Expired => {
                let (claimed, failed) = self.delivery.claim_expired(&keys, self.lease_ms).await;
                // Indexed keys are left to the sweep, maybe made due now.
                self.wake.notify_one();
                let mut claimed = claimed.into_iter();
                while let Some(firing) = claimed.next() {
                    if let Err(unsent) = self.firings.send(firing).await {
                        // Shutting down: give them back for another host.
                        let unsent = std::iter::once(unsent.0).chain(claimed);
                        self.delivery.release_all(unsent.map(|f| f.lease)).await;
                        return None;
                    }
                }
                failed.map_or(Ok(()), Err)
            }
        };
        Some(result)
    }

    fn failed(&self, e: &crate::repo::RepoError) {
        if let Some(suppressed) = self.errors.allow() {
            warn!(event = "index_update_failed", error = %e, suppressed, "cannot apply keyevents to the trigger index");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: EventKind, key: &str) -> KeyEvent {
        KeyEvent::Key {
            pool: PoolAlias::Expiry,
            kind,
            key: Ok(key.to_owned()),
            heard_at: Instant::now(),
        }
    }

    fn subscribed() -> KeyEvent {
        KeyEvent::Subscribed {
            pool: PoolAlias::Expiry,
            node: None,
        }
    }

    fn keep_all(_: PoolAlias, _: EventKind, key: Result<String, Vec<u8>>) -> Option<String> {
        key.ok()
    }

    fn run(kind: EventKind, keys: &[&str]) -> Step {
        Step::Run(kind, keys.iter().map(|k| (*k).to_owned()).collect())
    }

    #[test]
    fn a_run_of_one_kind_is_one_step_and_the_order_is_kept() {
        use EventKind::*;
        let batch = [
            key(Expire, "a"),
            key(Expire, "b"),
            key(Del, "a"),
            key(Expire, "a"),
            key(Expired, "b"),
            key(Expired, "c"),
        ];
        assert_eq!(
            steps_of(batch, keep_all),
            [
                run(Expire, &["a", "b"]),
                run(Del, &["a"]),
                run(Expire, &["a"]),
                run(Expired, &["b", "c"]),
            ]
        );
    }

    #[test]
    fn a_subscription_is_a_step_of_its_own_between_runs() {
        use EventKind::*;
        let batch = [key(Expire, "a"), subscribed(), key(Expire, "b")];
        assert_eq!(
            steps_of(batch, keep_all),
            [
                run(Expire, &["a"]),
                Step::IndexAll(PoolAlias::Expiry, None),
                run(Expire, &["b"]),
            ]
        );
    }

    #[test]
    fn keys_left_out_do_not_break_a_run() {
        use EventKind::*;
        let batch = [
            key(Expired, "t:EXPTRIGGER:a:1"),
            key(Expired, "symphony:due:t"),
            key(Expired, "t:EXPTRIGGER:a:2"),
        ];
        let steps = steps_of(batch, |_, _, k| {
            k.ok().filter(|k| !k.starts_with("symphony:"))
        });
        assert_eq!(
            steps,
            [run(Expired, &["t:EXPTRIGGER:a:1", "t:EXPTRIGGER:a:2"])]
        );
    }
}

//! The sweeper, the main source of firings: it claims due entries of the
//! durable index and hands each over at its due time; and lease renewal for
//! the firings this host holds. (The other source is the [`pump`](crate::pump).)

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::delivery::{CLAIM_AHEAD, Delivery, Firing, LEAD_MS};
use crate::throttle::Throttle;

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
            reap(&delivery, &errors).await;
            last_reap = Some(Instant::now());
        }
        // Not raced against `cancel`: a claim Redis has made must come back
        // so it can be handed over or given back.
        let skip = delivery.held().tenants_holding(CLAIM_AHEAD);
        let claimed = delivery.claim_due(BATCH, lease_ms, &skip).await;
        let (server_now, next, batch) = match claimed {
            Ok(c) if cancel.is_cancelled() => {
                delivery.release_all(c.2.into_iter().map(|f| f.lease)).await;
                return;
            }
            Ok(c) => c,
            Err(e) => {
                if let Some(suppressed) = errors.allow() {
                    warn!(event = "claim_failed", error = %e, suppressed, "cannot claim due triggers; retrying");
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
        if !hand_over(&delivery, batch, server_now, claimed_at, &firings, &cancel).await {
            return;
        }
        if full {
            continue;
        }
        let now = server_now + crate::millis(claimed_at.elapsed()) as i64;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(idle_for(next, now, !skip.is_empty())) => {}
            _ = wake.notified() => {}
        }
    }
}

/// Puts firings whose lease ended back, and gives back the leases of
/// claims whose reply was lost (held by no host) now rather than at their
/// end; failures are logged, throttled.
async fn reap(delivery: &Delivery, errors: &Throttle) {
    match delivery.reap().await {
        Ok(n) if n > 0 => {
            warn!(
                event = "leases_expired",
                firings = n,
                "leases ended without an answer (a host died?); those firings run again"
            )
        }
        Ok(_) => {}
        Err(e) => {
            if errors.allow().is_some() {
                warn!(event = "reap_failed", error = %e, "cannot check leases");
            }
        }
    }
    if let Err(e) = delivery.settle_doubts().await
        && errors.allow().is_some()
    {
        warn!(event = "doubts_unsettled", error = %e, "cannot look for the leases of lost claims; retrying");
    }
}

/// Sends each firing of `batch` to `firings` at its due time (the server's
/// `server_now` was read at `claimed_at`), in due order. When shutting
/// down, gives back what was not sent and returns false.
async fn hand_over(
    delivery: &Delivery,
    mut batch: Vec<Firing>,
    server_now: i64,
    claimed_at: Instant,
    firings: &mpsc::Sender<Firing>,
    cancel: &CancellationToken,
) -> bool {
    batch.sort_by_key(|f| f.due_ms);
    let mut pending = batch.into_iter();
    while let Some(firing) = pending.next() {
        let wait = Duration::from_millis(u64::try_from(firing.due_ms - server_now).unwrap_or(0));
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
            let unsent = std::iter::once(firing).chain(pending);
            delivery.release_all(unsent.map(|f| f.lease)).await;
            return false;
        }
    }
    true
}

/// How long the sweeper may sleep after a batch that was not full: until
/// the lead before the `next` due time (server ms; `now` is the server's
/// time now), at most [`MAX_IDLE`], and at most [`BUSY_POLL`] while it
/// skips a tenant whose firings it holds. A keyevent wakes it sooner.
fn idle_for(next: Option<i64>, now: i64, skipping: bool) -> Duration {
    let until_next = next
        .map(|n| Duration::from_millis(u64::try_from(n - LEAD_MS - now).unwrap_or(0)))
        .unwrap_or(MAX_IDLE);
    until_next.min(if skipping { BUSY_POLL } else { MAX_IDLE })
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
                event = "leases_lost",
                pool = %delivery.pool(), renewed, lost,
                "leases were lost before renewal (Redis unreachable for a whole lease?); \
                 those firings are not started here"
            ),
            Err(e) => {
                if let Some(suppressed) = errors.allow() {
                    warn!(event = "renew_failed", pool = %delivery.pool(), error = %e, suppressed, "cannot renew leases; retrying");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweeper_sleeps_until_the_lead_before_the_next_due_time() {
        let now = 1_000_000;
        let next = now + LEAD_MS + 120;
        assert_eq!(idle_for(Some(next), now, false), Duration::from_millis(120));
    }

    #[test]
    fn its_sleep_is_bounded_and_never_negative() {
        let now = 1_000_000;
        assert_eq!(
            idle_for(None, now, false),
            MAX_IDLE,
            "nothing due: the longest sleep"
        );
        assert_eq!(idle_for(Some(now + 60_000), now, false), MAX_IDLE);
        assert_eq!(
            idle_for(Some(now - 5), now, false),
            Duration::ZERO,
            "already due"
        );
        assert_eq!(idle_for(Some(now + LEAD_MS), now, false), Duration::ZERO);
    }

    #[test]
    fn while_it_skips_a_busy_tenant_it_looks_again_soon() {
        let now = 1_000_000;
        assert_eq!(idle_for(None, now, true), BUSY_POLL);
        assert_eq!(idle_for(Some(now + 60_000), now, true), BUSY_POLL);
        assert_eq!(
            idle_for(Some(now + LEAD_MS + 1), now, true),
            Duration::from_millis(1)
        );
    }
}

//! The finisher: finished firings recorded in Redis in batches.

use std::sync::Arc;

use super::{Delivery, Held, KEYS_PER_CALL};

/// How long a batch of finished firings is retried before its leases are
/// left to end (and the reaper to run those firings again): half the
/// default lease. A failover takes a few seconds; a lease that ends
/// meanwhile is reaped as it would be without the retry.
const FINISH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Records finished firings in batches: the jobs that end while one batch
/// is written share the next one (a `ZREM` of many members), so a burst
/// costs Redis one command per batch rather than one per job.
#[derive(Clone)]
pub struct Finisher {
    tx: tokio::sync::mpsc::UnboundedSender<String>,
    held: Arc<Held>,
}

impl Finisher {
    /// A finisher over `delivery`, its task spawned on `tracker` (it ends,
    /// having written everything, when the last `Finisher` clone is dropped).
    pub fn spawn(delivery: Delivery, tracker: &tokio_util::task::TaskTracker) -> Finisher {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let held = delivery.held.clone();
        tracker.spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, KEYS_PER_CALL).await > 0 {
                // `done_many` is idempotent: a batch that fails (Redis
                // restarting, a cluster primary failing over) is written
                // again, with backoff, for up to `FINISH_PATIENCE`.
                let started = std::time::Instant::now();
                let mut wait = std::time::Duration::from_millis(50);
                while let Err(e) = delivery.done_many(&batch).await {
                    if started.elapsed() + wait > FINISH_PATIENCE {
                        tracing::error!(
                            event = "finish_failed",
                            firings = batch.len(), error = %e,
                            "cannot record finished firings in Redis; their leases will run them again"
                        );
                        break;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(1));
                }
                batch.clear();
            }
        });
        Finisher { tx, held }
    }

    /// The firing `member` is done; it is written with the next batch.
    pub fn done(&self, member: String) {
        self.held.forget(&member);
        // The task lives as long as any sender: sending cannot fail.
        let _ = self.tx.send(member);
    }
}

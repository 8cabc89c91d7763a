//! SCAN pages charged like host calls.
//!
//! A repository call that walks the keyspace (`find-by-field`,
//! `list-states`, `clear-all-states`, `delete-all-by-pkid`,
//! `delete-all-by-identifier`) sends one SCAN per page, and a page costs
//! Redis about what any other call does. Counting only the host call let a
//! plugin at a quota of 10 calls/s send 79,700 SCANs. So while a meter is
//! in force (set around each host call with [`with_meter`]), every page
//! after a call's first is charged as one more host call: it waits for the
//! tenant's Redis-call quota, and counts against the plugin's
//! `max_host_calls`; past that budget the call stops with `denied`, and the
//! invocation ends with outcome `limit`. Without a meter (the library used
//! directly) pages are free.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::RepoError;
use crate::quota::Quotas;

tokio::task_local! {
    static METER: Arc<Meter>;
}

/// What one host call may still spend on SCAN pages, and what it spent.
#[derive(Debug)]
pub struct Meter {
    quotas: Arc<Quotas>,
    tenant: String,
    left: AtomicU64,
    used: AtomicU64,
}

impl Meter {
    /// A meter for a call of `tenant` with `left` host calls left in its
    /// invocation's budget.
    pub fn new(quotas: Arc<Quotas>, tenant: String, left: u64) -> Arc<Meter> {
        Arc::new(Meter {
            quotas,
            tenant,
            left: AtomicU64::new(left),
            used: AtomicU64::new(0),
        })
    }

    /// The pages charged so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Runs `f` with its SCAN pages charged to `meter`.
pub async fn with_meter<F: Future>(meter: Arc<Meter>, f: F) -> F::Output {
    METER.scope(meter, f).await
}

/// Charges one SCAN page (call it before every page but a walk's first).
///
/// # Errors
/// [`RepoError::Denied`] when the invocation's `max_host_calls` is spent.
pub(crate) async fn page() -> Result<(), RepoError> {
    let Ok(meter) = METER.try_with(Arc::clone) else {
        return Ok(());
    };
    let spent = meter
        .left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1));
    meter.used.fetch_add(1, Ordering::Relaxed);
    if spent.is_err() {
        return Err(RepoError::Denied(
            "max_host_calls: this call's SCAN pages (each charged as a host call) \
             spent the invocation's budget"
                .into(),
        ));
    }
    meter.quotas.redis_call(&meter.tenant).await;
    Ok(())
}

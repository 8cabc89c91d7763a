//! Settling a finished job's firing: done, a retry after a backoff, or a
//! dead letter, by the plugin's retry policy.

use std::time::Duration;

use super::{DeadLetter, Delivery, Finisher, Firing, Meta};
use crate::error::RepoError;
use crate::keys::parse_trigger;
use crate::policy::{AfterFailure, RetryConfig};

/// What became of a finished job's firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// It succeeded; the finisher removes its lease.
    Done,
    /// It failed, and runs again after `delay`.
    Retried {
        /// The backoff before the next attempt.
        delay: Duration,
        /// Attempts in all, the first included.
        max_attempts: u32,
    },
    /// It failed for the last time and is a dead letter now; `trimmed` of
    /// its tenant's oldest letters made room for it.
    DeadLettered {
        /// Letters trimmed.
        trimmed: u64,
    },
    /// It failed, but its lease ended first: the reaper put it back, and it
    /// runs again as it is (no retry or dead letter is added).
    LeaseGone,
}

impl Delivery {
    /// Settles `firing`, whose job ended with `error` (`None`: it
    /// succeeded), by `retry`.
    ///
    /// # Errors
    /// Redis failing: the outcome is not recorded, and the lease runs the
    /// firing again.
    pub async fn settle(
        &self,
        finisher: &Finisher,
        firing: &Firing,
        error: Option<String>,
        retry: &RetryConfig,
    ) -> Result<Settled, RepoError> {
        let Some(error) = error else {
            finisher.done(firing.lease.clone());
            return Ok(Settled::Done);
        };
        let attempts = firing.meta.attempts + 1;
        let first_due_ms = match firing.meta.attempts {
            0 => firing.due_ms,
            _ => firing.meta.first_due_ms,
        };
        let (tenant, action, id) =
            parse_trigger(&firing.key).map_or(("", "", ""), |t| (t.tenant, t.action, t.id));
        if let AfterFailure::Retry {
            delay,
            max_attempts,
        } = retry.after_failure(action, attempts)
        {
            let meta = Meta {
                attempts,
                first_due_ms,
                last_error: error,
            };
            return Ok(match self.retry(firing, delay, &meta).await? {
                Some(_) => Settled::Retried {
                    delay,
                    max_attempts,
                },
                None => Settled::LeaseGone,
            });
        }
        let letter = DeadLetter {
            tenant: tenant.to_owned(),
            action: action.to_owned(),
            id: id.to_owned(),
            key: firing.key.clone(),
            attempts,
            last_error: error,
            first_due_ms,
            failed_at_ms: crate::unix_ms(),
        };
        Ok(match self.dead(firing, &letter).await? {
            Some(trimmed) => Settled::DeadLettered { trimmed },
            None => Settled::LeaseGone,
        })
    }
}

//! Trigger repository (`RedisTrigger` in mimeiapify): pool `expiry`.
//!
//! Setting a trigger also indexes it by due time and cancelling removes it
//! from the index, each in one script (see [`crate::delivery`]), so triggers
//! set here are dispatched even if no host was listening when they expired.

use std::time::Duration;

use crate::backend::{RedisConn, ScanCursor};

use super::hash::SCAN_COUNT;
use super::{RepoError, utc_now_iso};
use crate::delivery::Delivery;
use crate::keys::{trigger_id_pattern, trigger_key, validate_tenant};
use crate::pools::{PoolAlias, Pools};

/// The longest trigger TTL accepted: 100 years, in ms. Redis refuses an
/// expiry past `i64::MAX` ms, and the due index scores are doubles, exact
/// to 2^53 ms; this bound stays well inside both.
pub const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// A TTL in ms, checked against the accepted range (1 ms to [`MAX_TTL_MS`]).
///
/// # Errors
/// [`RepoError::InvalidInput`] naming the range.
pub fn ttl_ms(ttl: Duration) -> Result<u64, RepoError> {
    let ms = ttl.as_millis();
    if ms == 0 || ms > u128::from(MAX_TTL_MS) {
        return Err(RepoError::InvalidInput(format!(
            "ttl {ms} ms is out of range: a trigger's ttl must be from 1 ms to {MAX_TTL_MS} ms (100 years)"
        )));
    }
    Ok(u64::try_from(ms).unwrap_or(MAX_TTL_MS))
}

/// Schedules and cancels `{tenant}:EXPTRIGGER:{action}:{id}` keys of one tenant.
#[derive(Clone)]
pub struct TriggerRepo {
    conn: RedisConn,
    delivery: Delivery,
    tenant: String,
}

impl TriggerRepo {
    /// The trigger repository of `tenant`.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for an empty tenant or one containing `:`.
    pub fn new(pools: &Pools, tenant: &str) -> Result<Self, RepoError> {
        validate_tenant(tenant)?;
        Ok(Self {
            conn: pools.conn_for(PoolAlias::Expiry, tenant)?,
            delivery: Delivery::for_tenant(pools, tenant)?,
            tenant: tenant.to_owned(),
        })
    }

    /// Refuses a new trigger, with [`RepoError::Denied`], while the tenant
    /// has `cap` pending in the due index (`[tenants]
    /// max_pending_triggers`); `None`: no cap.
    #[must_use]
    pub fn with_pending_cap(mut self, cap: Option<std::num::NonZeroU32>) -> Self {
        self.delivery = self.delivery.with_pending_cap(cap);
        self
    }

    /// Whether arming counts the tenant's pending triggers against the
    /// cap itself; where not (a Redis Cluster's slots), the caller counts
    /// (`Quotas::admit_pending`).
    pub fn enforces_pending_cap(&self) -> bool {
        self.delivery.enforces_pending_cap()
    }

    /// How many triggers the tenant has pending in its due index.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] when Redis fails.
    pub async fn pending(&self) -> Result<u64, RepoError> {
        self.delivery.pending_of(&self.tenant).await
    }

    /// Whether the trigger `action`/`id` is pending (setting it again adds
    /// none).
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for a bad action or id,
    /// [`RepoError::Unavailable`] when Redis fails.
    pub async fn is_pending(&self, action: &str, id: &str) -> Result<bool, RepoError> {
        let key = trigger_key(&self.tenant, action, id)?;
        self.delivery.is_indexed(&key).await
    }

    /// The tenant this repository is scoped to.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Sets the trigger to fire after `ttl`, replacing a pending one. The
    /// stored value is `trigger:{utc iso time}`, as mimeiapify writes it.
    /// Returns the key.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for an empty action, a control character in
    /// the action or id, or a TTL outside 1 ms to [`MAX_TTL_MS`],
    /// [`RepoError::Unavailable`] when Redis fails.
    pub async fn set(&self, action: &str, id: &str, ttl: Duration) -> Result<String, RepoError> {
        let ms = ttl_ms(ttl)?;
        let key = trigger_key(&self.tenant, action, id)?;
        let value = format!("trigger:{}", utc_now_iso());
        // SET PX and the due-time index entry, in one script.
        self.delivery.arm(&key, &value, ms).await?;
        Ok(key)
    }

    /// Sets many triggers at once: `(action, id, ttl)` each, indexed like
    /// [`set`](Self::set), in batches of
    /// [`KEYS_PER_CALL`](crate::delivery::KEYS_PER_CALL) keys per script call.
    /// Every trigger is checked before any is written, so bad input sets
    /// nothing. Returns the keys, in order.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] naming the first bad trigger (its index,
    /// an empty action, a control character or a TTL out of range),
    /// [`RepoError::Unavailable`] when
    /// Redis fails (earlier batches stay set).
    pub async fn set_many<A, I>(
        &self,
        triggers: &[(A, I, Duration)],
    ) -> Result<Vec<String>, RepoError>
    where
        A: AsRef<str>,
        I: AsRef<str>,
    {
        let mut keys = Vec::with_capacity(triggers.len());
        for (n, (action, id, ttl)) in triggers.iter().enumerate() {
            let bad = |why: String| RepoError::InvalidInput(format!("trigger {n}: {why}"));
            let ms = ttl_ms(*ttl).map_err(|e| match e {
                RepoError::InvalidInput(why) => bad(why),
                other => other,
            })?;
            let key = trigger_key(&self.tenant, action.as_ref(), id.as_ref())
                .map_err(|e| bad(e.to_string()))?;
            keys.push((key, ms));
        }
        let value = format!("trigger:{}", utc_now_iso());
        self.delivery.arm_many(&keys, &value).await?;
        Ok(keys.into_iter().map(|(k, _)| k).collect())
    }

    /// Deletes the trigger; returns whether it was pending.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for an empty action, [`RepoError::Unavailable`]
    /// when Redis fails.
    pub async fn delete(&self, action: &str, id: &str) -> Result<bool, RepoError> {
        let key = trigger_key(&self.tenant, action, id)?;
        self.delivery.cancel(&key).await
    }

    /// Deletes every pending trigger of `id`, whatever its action (SCAN, then
    /// DEL); returns how many.
    ///
    /// # Errors
    /// An empty id, or Redis failing.
    pub async fn delete_all_by_identifier(&self, id: &str) -> Result<u32, RepoError> {
        let pattern = trigger_id_pattern(&self.tenant, id)?;
        let mut n = 0u32;
        let mut cursor = Some(ScanCursor::START);
        // Page by page: the keys are never all held at once.
        while let Some(at) = cursor {
            if !at.is_start() {
                super::meter::page().await?;
            }
            let (next, keys) = self.conn.scan_page(&pattern, at, SCAN_COUNT).await?;
            for key in keys {
                if self.delivery.cancel(&key).await? {
                    n = n.saturating_add(1);
                }
            }
            cursor = next;
        }
        Ok(n)
    }
}

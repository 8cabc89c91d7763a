//! Trigger repository (`RedisTrigger` in the seed): pool `expiry`.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::hash::delete_matching;
use super::{RepoError, connection, query, utc_now_iso};
use crate::keys::{trigger_id_pattern, trigger_key, validate_tenant};
use crate::pools::{PoolAlias, Pools};

/// Schedules and cancels `{tenant}:EXPTRIGGER:{action}:{id}` keys of one tenant.
#[derive(Clone)]
pub struct TriggerRepo {
    conn: ConnectionManager,
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
            conn: connection(pools, PoolAlias::Expiry)?,
            tenant: tenant.to_owned(),
        })
    }

    /// The tenant this repository is scoped to.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Sets the trigger to fire after `ttl`, replacing a pending one. The
    /// stored value is `trigger:{utc iso time}`, as the seed writes it.
    /// Returns the key.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for an empty action or a TTL under 1 ms,
    /// [`RepoError::Unavailable`] when Redis fails.
    pub async fn set(&self, action: &str, id: &str, ttl: Duration) -> Result<String, RepoError> {
        let ms = crate::millis(ttl);
        if ms == 0 {
            return Err(RepoError::InvalidInput(
                "ttl must be at least 1 ms".to_owned(),
            ));
        }
        let key = trigger_key(&self.tenant, action, id)?;
        let value = format!("trigger:{}", utc_now_iso());
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg(value).arg("PX").arg(ms);
        query::<()>(&self.conn, &cmd).await?;
        Ok(key)
    }

    /// Deletes the trigger; returns whether it was pending.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for an empty action, [`RepoError::Unavailable`]
    /// when Redis fails.
    pub async fn delete(&self, action: &str, id: &str) -> Result<bool, RepoError> {
        let key = trigger_key(&self.tenant, action, id)?;
        let removed: u64 = query(&self.conn, redis::cmd("DEL").arg(&key)).await?;
        Ok(removed > 0)
    }

    /// Deletes every pending trigger of `id`, whatever its action (SCAN, then
    /// DEL); returns how many.
    ///
    /// # Errors
    /// An empty id, or Redis failing.
    pub async fn delete_all_by_identifier(&self, id: &str) -> Result<u32, RepoError> {
        delete_matching(&self.conn, &trigger_id_pattern(&self.tenant, id)?).await
    }
}

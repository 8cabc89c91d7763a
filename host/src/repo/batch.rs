//! Batch repository (`RedisBatch`): lists `{t}:batch:{service}:{entity}:{action}`
//! and the set `pending_batches:{service}` of tenants with work, in pool `handlers`.

use crate::backend::RedisConn;
use serde_json::Value;

use super::RepoError;
use super::codec::{dumps, loads};
use super::hash::DEFAULT_TTL_SECS;
use crate::keys::{self, batch_key, pending_key};
use crate::pools::{PoolAlias, Pools};

/// A tenant's batches.
#[derive(Clone)]
pub struct BatchRepo {
    conn: RedisConn,
    tenant: String,
}

impl BatchRepo {
    /// The batch repository of `tenant`.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for an invalid tenant.
    pub fn new(pools: &Pools, tenant: &str) -> Result<Self, RepoError> {
        keys::validate_tenant(tenant)?;
        Ok(Self {
            conn: pools.conn_for(PoolAlias::Handlers, tenant)?,
            tenant: tenant.to_owned(),
        })
    }

    /// Appends `data` to the batch and marks the tenant pending for `service`,
    /// in one transaction (on a Redis Cluster, where the two keys are in
    /// different slots, one transaction for the list, then the mark). Unlike mimeiapify, the list gets a TTL (renewed on
    /// every enqueue) so an abandoned batch does not stay for ever. Returns
    /// the new length.
    ///
    /// # Errors
    /// Invalid key parts, or Redis failing.
    pub async fn enqueue(
        &self,
        service: &str,
        entity: &str,
        action: &str,
        data: &Value,
    ) -> Result<u64, RepoError> {
        let key = batch_key(&self.tenant, service, entity, action)?;
        let pending = pending_key(service)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .rpush(&key, dumps(data))
            .expire(&key, i64::from(DEFAULT_TTL_SECS))
            .ignore();
        if !self.conn.in_one_transaction(&[&key, &pending]) {
            // The list and the pending set are in different slots: the
            // item is pushed (with its TTL) atomically, then the tenant
            // marked pending. A failure between leaves the item pushed and
            // the call failed; enqueuing again marks it.
            let (len,): (u64,) = self.conn.pipe_once(&pipe).await?;
            let _: u64 = self
                .conn
                .query(redis::cmd("SADD").arg(&pending).arg(&self.tenant))
                .await?;
            return Ok(len);
        }
        pipe.sadd(&pending, &self.tenant).ignore();
        let (len,): (u64,) = self.conn.pipe_once(&pipe).await?;
        Ok(len)
    }

    /// Items `start..=stop` (negative from the end), decoded.
    ///
    /// # Errors
    /// Invalid key parts, or Redis failing.
    pub async fn get_chunk(
        &self,
        service: &str,
        entity: &str,
        action: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<Value>, RepoError> {
        let key = batch_key(&self.tenant, service, entity, action)?;
        let raw = super::capped::lrange(&self.conn, &key, start, stop).await?;
        Ok(raw.iter().map(|r| loads(r)).collect())
    }

    /// Keeps only items `start..=stop`.
    ///
    /// # Errors
    /// Invalid key parts, or Redis failing.
    pub async fn trim(
        &self,
        service: &str,
        entity: &str,
        action: &str,
        start: i64,
        stop: i64,
    ) -> Result<(), RepoError> {
        let key = batch_key(&self.tenant, service, entity, action)?;
        // Not retried: LTRIM twice would cut twice.
        self.conn
            .query_once::<()>(redis::cmd("LTRIM").arg(key).arg(start).arg(stop))
            .await
            .map_err(RepoError::from)
    }

    /// Number of items.
    ///
    /// # Errors
    /// Invalid key parts, or Redis failing.
    pub async fn length(
        &self,
        service: &str,
        entity: &str,
        action: &str,
    ) -> Result<u64, RepoError> {
        let key = batch_key(&self.tenant, service, entity, action)?;
        self.conn
            .query(redis::cmd("LLEN").arg(key))
            .await
            .map_err(RepoError::from)
    }

    /// Whether this tenant is marked pending for `service`.
    ///
    /// # Errors
    /// An empty service, or Redis failing.
    pub async fn is_pending(&self, service: &str) -> Result<bool, RepoError> {
        let n: u64 = self
            .conn
            .query(
                redis::cmd("SISMEMBER")
                    .arg(pending_key(service)?)
                    .arg(&self.tenant),
            )
            .await?;
        Ok(n > 0)
    }

    /// Unmarks this tenant for `service`; returns whether it was marked.
    ///
    /// # Errors
    /// An empty service, or Redis failing.
    pub async fn remove_from_pending(&self, service: &str) -> Result<bool, RepoError> {
        let n: u64 = self
            .conn
            .query(
                redis::cmd("SREM")
                    .arg(pending_key(service)?)
                    .arg(&self.tenant),
            )
            .await?;
        Ok(n > 0)
    }

    /// Every tenant marked pending for `service` (mimeiapify's
    /// `get_pending_tenants`). Crosses tenants, so it is for the embedding
    /// application only and is not a plugin import.
    ///
    /// # Errors
    /// An empty service, or Redis failing.
    pub async fn pending_tenants(pools: &Pools, service: &str) -> Result<Vec<String>, RepoError> {
        let conn = pools.conn_for(PoolAlias::Handlers, service)?;
        let mut tenants: Vec<String> = conn
            .query(redis::cmd("SMEMBERS").arg(pending_key(service)?))
            .await?;
        tenants.sort();
        Ok(tenants)
    }
}

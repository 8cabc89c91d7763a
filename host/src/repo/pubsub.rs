//! Publishing (mimeiapify's `publish_json`), confined to the tenant's channels.

use crate::backend::RedisConn;
use serde_json::Value;

use super::RepoError;
use super::codec::dumps;
use crate::keys::{self, channel_name};
use crate::pools::{PoolAlias, Pools};

/// Publishes on `{tenant}:{channel}` in pool `pubsub`.
#[derive(Clone)]
pub struct Publisher {
    conn: RedisConn,
    tenant: String,
}

impl Publisher {
    /// The publisher of `tenant`.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for an invalid tenant.
    pub fn new(pools: &Pools, tenant: &str) -> Result<Self, RepoError> {
        keys::validate_tenant(tenant)?;
        Ok(Self {
            conn: pools.conn_for(PoolAlias::Pubsub, tenant)?,
            tenant: tenant.to_owned(),
        })
    }

    /// `PUBLISH {tenant}:{channel} dumps(message)`; returns the receiver count.
    ///
    /// # Errors
    /// An empty channel, or Redis failing.
    pub async fn publish(&self, channel: &str, message: &Value) -> Result<u32, RepoError> {
        let channel = channel_name(&self.tenant, channel)?;
        self.conn
            .query_once(redis::cmd("PUBLISH").arg(channel).arg(dumps(message)))
            .await
            .map_err(RepoError::from)
    }
}
